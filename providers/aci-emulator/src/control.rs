//! Test controls over HTTP, under `/_emulator/` on the same port (JSON, no
//! auth; for the demo and tests in other processes):
//!
//! | Request | Does |
//! |---|---|
//! | `GET /_emulator/stats` | [`crate::Stats`] (with the rate limits' buckets) |
//! | `POST /_emulator/throttle` `{"requests": N, "retryAfterSeconds": S}` | [`crate::Emulator::throttle`] |
//! | `POST /_emulator/capacity` `{"available": false}` | [`crate::Emulator::set_capacity_available`] |
//! | `GET /_emulator/requests/{operationId}` | [`crate::Emulator::requests`] |
//! | `GET /_emulator/groups` | [`crate::Emulator::groups`] (write-only values included) |
//! | `POST /_emulator/exit` `{"resourceGroup", "containerGroup", "container", "exitCode"}` | [`crate::Emulator::set_container_exit`] |
//! | `GET /_emulator/ca` | the CA certificate (PEM) |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::App;

/// `POST /_emulator/throttle`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleRequest {
    /// How many ARM calls get 429.
    pub requests: u32,
    /// Their `Retry-After`, in seconds.
    #[serde(default = "one")]
    pub retry_after_seconds: f64,
}

fn one() -> f64 {
    1.0
}

/// `POST /_emulator/capacity`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityRequest {
    /// Whether the location has room for new groups.
    pub available: bool,
}

/// `POST /_emulator/exit`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitRequest {
    /// The resource group.
    pub resource_group: String,
    /// The container group.
    pub container_group: String,
    /// The container.
    pub container: String,
    /// The exit code.
    pub exit_code: i32,
}

pub(crate) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/throttle", post(throttle))
        .route("/capacity", post(capacity))
        .route("/requests/{operation_id}", get(requests))
        .route("/groups", get(groups))
        .route("/exit", post(exit))
        .route("/ca", get(ca))
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    Json(app.stats()).into_response()
}

async fn throttle(State(app): State<Arc<App>>, Json(req): Json<ThrottleRequest>) -> Response {
    match Duration::try_from_secs_f64(req.retry_after_seconds) {
        Ok(d) => {
            app.set_throttle(req.requests, d);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "retryAfterSeconds must be a non-negative number"})),
        )
            .into_response(),
    }
}

async fn capacity(State(app): State<Arc<App>>, Json(req): Json<CapacityRequest>) -> Response {
    app.set_capacity_available(req.available);
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(State(app): State<Arc<App>>, Path(operation_id): Path<String>) -> Response {
    Json(app.requests(&operation_id)).into_response()
}

async fn groups(State(app): State<Arc<App>>) -> Response {
    Json(app.groups()).into_response()
}

async fn exit(State(app): State<Arc<App>>, Json(req): Json<ExitRequest>) -> Response {
    if app.set_container_exit(
        &req.resource_group,
        &req.container_group,
        &req.container,
        req.exit_code,
    ) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such running container"})),
        )
            .into_response()
    }
}

async fn ca(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        app.ca_pem.clone(),
    )
        .into_response()
}
