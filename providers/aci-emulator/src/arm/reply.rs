//! Answers: a successful [`Reply`], an [`ArmError`] (ARM's `CloudError`),
//! and [`respond`], which validates every answer against the spec before it
//! leaves (500 `EmulatorResponseInvalid` if it breaks it) and adds ARM's
//! headers.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Req, Target};
use crate::App;
use crate::spec::{Mode, Violation};

/// A successful answer.
pub(super) struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Option<Value>,
}

impl Reply {
    pub(super) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub(super) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub(super) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An ARM error answer (`CloudError`).
#[derive(Debug)]
pub(super) struct ArmError {
    status: StatusCode,
    code: String,
    message: String,
    details: Vec<Value>,
    pub(super) headers: Vec<(HeaderName, String)>,
}

impl ArmError {
    pub(super) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(super) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn violations(violations: &[Violation]) -> Self {
        let first = violations.first();
        let mut e = Self::bad_request(
            first.map_or("InvalidRequestContent", Violation::code),
            first.map_or_else(
                || "The request content is invalid.".to_owned(),
                ToString::to_string,
            ),
        );
        e.details = violations
            .iter()
            .map(|v| json!({"code": v.code(), "message": v.to_string(), "target": v.path}))
            .collect();
        e
    }

    pub(super) fn into_reply(self) -> Reply {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_empty()
            && let Some(obj) = error.as_object_mut()
        {
            obj.insert("details".into(), Value::Array(self.details));
        }
        Reply {
            status: self.status,
            headers: self.headers,
            body: Some(json!({ "error": error })),
        }
    }
}

pub(super) type ArmResult = Result<Reply, ArmError>;

/// Validates the answer, adds ARM's headers and builds the response.
pub(super) fn respond(
    app: &App,
    target: Target<'_>,
    r: &Req,
    reply: Reply,
    correlation: &str,
) -> Response {
    let reply = match check(app, target, &reply) {
        Ok(()) => reply,
        Err(violations) => invalid(app, target, &reply, &violations),
    };
    if reply.status.is_client_error() {
        app.count_rejected();
    }
    tracing::debug!(method = %r.method, path = %r.path, status = reply.status.as_u16(), "ARM call");
    let mut response = Response::new(match &reply.body {
        Some(b) => Body::from(b.to_string()),
        None => Body::empty(),
    });
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    if reply.body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(name, v);
        }
    }
    arm_headers(app, r, correlation, headers);
    response
}

/// Checks an answer against the spec: the operation's responses, the
/// common `OperationStatusResult`, or a `CloudError`.
fn check(app: &App, target: Target<'_>, reply: &Reply) -> Result<(), Vec<Violation>> {
    let definition = match (target, &reply.body) {
        (Target::Spec(op), body) => {
            return app
                .spec
                .validate_response(op, reply.status.as_u16(), body.as_ref());
        }
        (_, None) => return Ok(()),
        (Target::OperationStatus, Some(_)) if reply.status.is_success() => {
            "common:OperationStatusResult"
        }
        (Target::OperationStatus | Target::Unrouted, Some(_)) => "CloudError",
    };
    let body = reply.body.as_ref().unwrap_or(&Value::Null);
    app.spec
        .validate_definition(definition, body, Mode::Response)
        .map(drop)
}

/// The 500 `EmulatorResponseInvalid` that replaces an answer breaking the
/// spec (an emulator bug: logged and counted).
fn invalid(app: &App, target: Target<'_>, reply: &Reply, violations: &[Violation]) -> Reply {
    let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
    let op = match target {
        Target::Spec(op) => op.id.as_str(),
        Target::OperationStatus => "OperationStatus",
        Target::Unrouted => "-",
    };
    tracing::error!(operation = op, status = reply.status.as_u16(), violations = ?messages, "emulator response breaks the spec");
    app.count_invalid_response();
    ArmError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "EmulatorResponseInvalid",
        format!(
            "The emulator's {} answer to {op} breaks the spec: {}",
            reply.status.as_u16(),
            messages.join("; ")
        ),
    )
    .into_reply()
}

/// The headers ARM puts on every answer: request ids and the hour's
/// remaining read or write budget.
fn arm_headers(app: &App, r: &Req, correlation: &str, headers: &mut HeaderMap) {
    let request_id = crate::token::uuid();
    for (name, value) in [
        ("x-ms-request-id", request_id.as_str()),
        ("x-ms-correlation-request-id", correlation),
        ("x-ms-routing-request-id", "WESTEUROPE:EMULATOR"),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let (name, remaining) = app.ratelimit(r.method == Method::GET);
    headers.insert(HeaderName::from_static(name), HeaderValue::from(remaining));
}
