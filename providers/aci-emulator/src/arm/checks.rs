//! The checks every ARM call passes before its operation, in ARM's order:
//! bearer token, throttling, api-version, subscription, parameters,
//! resource group, body.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use serde_json::Value;

use super::reply::{ArmError, ArmResult};
use super::{Req, Target, operation, operations};
use crate::App;
use crate::limits::Covers;
use crate::spec::{Operation, ParamIn};
/// The checks every ARM call passes, then the operation.
pub(super) fn checked(app: &Arc<App>, target: Target<'_>, r: &mut Req, bytes: &[u8]) -> ArmResult {
    authenticated(app, r)?;
    not_throttled(app, r)?;
    api_version(app, r)?;
    subscription(app, target, r)?;
    let op = match target {
        Target::Spec(op) => op,
        Target::OperationStatus => return operations::operation_status(app, r),
        Target::Unrouted => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                "No route.",
            ));
        }
    };
    parameters(app, op, r)?;
    resource_group(app, r)?;
    r.body = body(app, op, bytes)?;
    operation(app, op, r)
}

/// A valid bearer token (401 `AuthenticationFailed`).
fn authenticated(app: &App, r: &Req) -> Result<(), ArmError> {
    if app.tokens.check(&r.headers) {
        return Ok(());
    }
    let mut e = ArmError::new(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFailed",
        if r.headers.contains_key(header::AUTHORIZATION) {
            "Authentication failed. The 'Authorization' header is missing a valid bearer token."
        } else {
            "Authentication failed. The 'Authorization' header is missing."
        },
    );
    e.headers.push((
        header::WWW_AUTHENTICATE,
        format!(
            "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"The authentication failed\"",
            app.base_url, app.config.tenant_id
        ),
    ));
    Err(e)
}

/// No throttling ordered by the test, and a token of the subscription's
/// bucket for the request's kind (GET: reads, DELETE: deletes, the rest:
/// writes; [`crate::limits`]): else 429 `TooManyRequests`.
fn not_throttled(app: &App, r: &Req) -> Result<(), ArmError> {
    if let Some(after) = app.take_throttle() {
        return Err(too_many_requests(after));
    }
    let kind = match r.method {
        Method::GET | Method::HEAD => Covers::Reads,
        Method::DELETE => Covers::Deletes,
        _ => Covers::Writes,
    };
    app.take_limit(kind).map_err(too_many_requests)
}

/// ARM's 429 `TooManyRequests`, `Retry-After` in whole seconds (at least 1).
pub(super) fn too_many_requests(after: Duration) -> ArmError {
    let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
    let mut e = ArmError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        format!("The request is being throttled. Please retry after {secs} seconds."),
    );
    e.headers.push((header::RETRY_AFTER, secs.to_string()));
    e
}

/// The spec's api-version (400 `MissingApiVersionParameter` /
/// `InvalidApiVersionParameter`).
fn api_version(app: &App, r: &Req) -> Result<(), ArmError> {
    match r.query("api-version") {
        None => Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if v != app.spec.api_version() => Err(ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                app.spec.api_version()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The one subscription (400 `InvalidSubscriptionId` when malformed, else
/// 404 `SubscriptionNotFound`).
fn subscription(app: &App, target: Target<'_>, r: &Req) -> Result<(), ArmError> {
    let sub = r.param("subscriptionId");
    if sub.is_empty() || sub.eq_ignore_ascii_case(&app.config.subscription_id) {
        return Ok(());
    }
    if let Target::Spec(op) = target
        && let Some(p) = op.params.iter().find(|p| p.name == "subscriptionId")
        && let Err(v) = app.spec.check_param(p, sub)
    {
        return Err(ArmError::bad_request(
            "InvalidSubscriptionId",
            format!("The provided subscription identifier '{sub}' is malformed or invalid: {v}."),
        ));
    }
    Err(ArmError::new(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        format!("The subscription '{sub}' could not be found."),
    ))
}

/// The operation's path, query and header parameters, as the spec
/// declares them (400 `MissingRequiredParameter`, `InvalidParameter`,
/// `InvalidQueryParameterValue`).
fn parameters(app: &App, op: &Operation, r: &Req) -> Result<(), ArmError> {
    for p in &op.params {
        let value = match p.location {
            ParamIn::Path => r.params.get(&p.name).map(String::as_str),
            ParamIn::Query => r.query(&p.name),
            ParamIn::Header => r.headers.get(p.name.as_str()).and_then(|v| v.to_str().ok()),
        };
        match value {
            None if p.required => {
                return Err(ArmError::bad_request(
                    "MissingRequiredParameter",
                    format!("The parameter '{}' is required.", p.name),
                ));
            }
            None => {}
            Some(v) => {
                if let Err(violation) = app.spec.check_param(p, v) {
                    let code = if p.location == ParamIn::Query {
                        "InvalidQueryParameterValue"
                    } else {
                        "InvalidParameter"
                    };
                    return Err(ArmError::bad_request(code, violation.to_string()));
                }
            }
        }
    }
    Ok(())
}

/// A resource group that exists (404 `ResourceGroupNotFound`).
fn resource_group(app: &App, r: &Req) -> Result<(), ArmError> {
    let rg = r.param("resourceGroupName");
    if rg.is_empty()
        || app
            .config
            .resource_groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case(rg))
    {
        return Ok(());
    }
    Err(ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
    ))
}

/// The body: JSON, valid for the operation, `readOnly` properties dropped
/// (400 `InvalidRequestContent`, `MissingRequiredProperty`). Operations
/// without a body parameter ignore a stray body (as ARM does).
fn body(app: &App, op: &Operation, bytes: &[u8]) -> Result<Option<Value>, ArmError> {
    let body = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                return Err(ArmError::bad_request(
                    "InvalidRequestContent",
                    format!("The request content was invalid and could not be deserialized: {e}."),
                ));
            }
        }
    };
    let body = if op.takes_body() { body } else { None };
    app.spec
        .validate_request(op, body.as_ref())
        .map_err(|v| ArmError::violations(&v))
}
