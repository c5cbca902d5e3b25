//! Long-running operations: the `Azure-AsyncOperation` and `Location`
//! headers of an accepted call, and the operation status resource they
//! point to (not in the spec: it answers ARM's common
//! `OperationStatusResult`).

use std::sync::Arc;

use axum::http::{HeaderName, StatusCode, header};
use serde_json::{Value, json};

use super::reply::{ArmError, ArmResult, Reply};
use super::{PROVIDER, Req};
use crate::state::OpKind;
use crate::{App, rules};

pub(super) fn operation_url(app: &App, id: &str) -> String {
    format!(
        "{}/subscriptions/{}/providers/{PROVIDER}/locations/{}/operations/{id}?api-version={}",
        app.base_url,
        app.config.subscription_id,
        app.config.location,
        app.spec.api_version()
    )
}

pub(super) fn lro_headers(app: &App, reply: Reply, op: &str) -> Reply {
    let url = operation_url(app, op);
    reply
        .header(HeaderName::from_static("azure-asyncoperation"), url.clone())
        .header(header::LOCATION, url)
        .header(header::RETRY_AFTER, "1")
}

pub(super) fn operation_status(app: &Arc<App>, r: &Req) -> ArmResult {
    let id = r.param("operationId");
    let location = r.param("location");
    let not_found = || {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{id}' could not be found."),
        )
    };
    if !rules::same_location(location, &app.config.location) {
        return Err(not_found());
    }
    let Some(op) = app.lock_store().operations.get(id).cloned() else {
        return Err(not_found());
    };
    let mut body = json!({
        "id": format!("/subscriptions/{}/providers/{PROVIDER}/locations/{location}/operations/{id}", app.config.subscription_id),
        "name": id,
        "status": op.status,
        "startTime": op.started.to_string(),
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(end) = op.ended {
            obj.insert("endTime".into(), Value::String(end.to_string()));
        }
        if let Some((code, message)) = &op.error {
            obj.insert("error".into(), json!({"code": code, "message": message}));
        }
    }
    // Delete and start answer 202 with Location: polling that URL answers
    // 202 while in progress and 200 when done (contract item 7).
    let accepted = op.status == "InProgress" && matches!(op.kind, OpKind::Delete | OpKind::Start);
    let reply = if accepted {
        Reply::json(StatusCode::ACCEPTED, body)
            .header(header::LOCATION, operation_url(app, id))
            .header(header::RETRY_AFTER, "1")
    } else {
        Reply::json(StatusCode::OK, body)
    };
    Ok(reply)
}
