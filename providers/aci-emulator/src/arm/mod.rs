//! The ARM endpoint: every request not served elsewhere lands in [`handle`],
//! which routes it by the spec to its `operationId` and then checks, in
//! ARM's order: bearer token (401 `AuthenticationFailed`), throttling (429
//! `TooManyRequests`), api-version (400 `MissingApiVersionParameter` /
//! `InvalidApiVersionParameter`), path and query parameters, the
//! subscription (404 `SubscriptionNotFound`) and resource group (404
//! `ResourceGroupNotFound`), the body (400, see [`crate::spec`] and
//! [`crate::rules`]). Every answer is validated against the operation's
//! response schema before it leaves (500 `EmulatorResponseInvalid` if not).
//!
//! The operation status resource (contract item 4),
//! `/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/operations/{id}`,
//! is not in the spec; it answers ARM's common `OperationStatusResult`.
//!
//! Here: parsing, routing and the operation table; the checks in
//! [`checks`], the operations in [`groups`], [`containers`], [`quota`] and
//! [`operations`], the answers in [`reply`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::App;
use crate::spec::{Operation, Route};

mod checks;
mod containers;
mod groups;
mod operations;
mod quota;
mod reply;

use reply::{ArmError, ArmResult, Reply, respond};

/// Largest request body read.
const MAX_BODY: usize = 4 << 20;
const PROVIDER: &str = "Microsoft.ContainerInstance";

/// What the answer is validated against.
#[derive(Clone, Copy)]
enum Target<'a> {
    Spec(&'a Operation),
    OperationStatus,
    Unrouted,
}

/// One parsed request.
struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    params: HashMap<String, String>,
    body: Option<Value>,
}

impl Req {
    fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The fallback handler: every ARM call.
pub(crate) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut r = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
        params: HashMap::new(),
        body: None,
    };
    let correlation = r
        .headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(crate::token::uuid, str::to_owned);
    let (target, result) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => dispatch(&app, &mut r, &bytes),
        Err(_) => (
            Target::Unrouted,
            Err(ArmError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "The request body is too large.",
            )),
        ),
    };
    let reply = result.unwrap_or_else(ArmError::into_reply);
    respond(&app, target, &r, reply, &correlation)
}

fn dispatch<'a>(app: &'a Arc<App>, r: &mut Req, bytes: &[u8]) -> (Target<'a>, ArmResult) {
    let segments: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let target = match segments.as_slice() {
        [
            "subscriptions",
            sub,
            "providers",
            provider,
            "locations",
            loc,
            "operations",
            id,
        ] if provider.eq_ignore_ascii_case(PROVIDER) && r.method == Method::GET => {
            r.params = HashMap::from([
                ("subscriptionId".to_owned(), (*sub).to_owned()),
                ("location".to_owned(), (*loc).to_owned()),
                ("operationId".to_owned(), (*id).to_owned()),
            ]);
            Target::OperationStatus
        }
        _ => match app.spec.route(&r.method, &r.path) {
            Route::Found(op, params) => {
                r.params = params;
                Target::Spec(op)
            }
            Route::MethodNotAllowed => {
                let e = ArmError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!(
                        "The HTTP method '{}' is not supported for '{}'.",
                        r.method, r.path
                    ),
                );
                return (Target::Unrouted, Err(e));
            }
            Route::NotFound => {
                let e = ArmError::new(
                    StatusCode::NOT_FOUND,
                    "InvalidResourceType",
                    format!(
                        "No route matches '{} {}' in the {PROVIDER} API.",
                        r.method, r.path
                    ),
                );
                return (Target::Unrouted, Err(e));
            }
        },
    };
    let name = match target {
        Target::Spec(op) => op.id.as_str(),
        _ => "OperationStatus",
    };
    app.count(name);
    if !bytes.is_empty() {
        let raw = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        app.record_request(name, raw);
    }
    (target, checks::checked(app, target, r, bytes))
}

/// Runs the operation the request was routed to.
fn operation(app: &Arc<App>, op: &Operation, r: &Req) -> ArmResult {
    let rg = r.param("resourceGroupName");
    let name = r.param("containerGroupName");
    match op.id.as_str() {
        "ContainerGroups_CreateOrUpdate" => {
            groups::put_group(app, rg, name, r.body.clone().unwrap_or(Value::Null))
        }
        "ContainerGroups_Get" => groups::with_group(app, rg, name, |g| {
            Ok(Reply::json(StatusCode::OK, g.render(app, false)))
        }),
        "ContainerGroups_Update" => groups::patch_group(app, rg, name, r.body.as_ref()),
        "ContainerGroups_ListByResourceGroup" => groups::list(app, Some(rg), r),
        "ContainerGroups_List" => groups::list(app, None, r),
        "ContainerGroups_Delete" => groups::delete_group(app, rg, name),
        "ContainerGroups_Stop" => groups::stop_group(app, rg, name),
        "ContainerGroups_Start" => groups::start_group(app, rg, name, false),
        "ContainerGroups_Restart" => groups::start_group(app, rg, name, true),
        "Containers_ListLogs" => containers::logs(app, rg, name, r),
        "Containers_ExecuteCommand" => containers::session(app, rg, name, r, true),
        "Containers_Attach" => containers::session(app, rg, name, r, false),
        "Location_ListUsage" => quota::usages(app, r),
        "Location_ListCapabilities" | "Location_ListCachedImages" | "Operations_List" => {
            Ok(Reply::json(StatusCode::OK, json!({"value": []})))
        }
        other => Err(ArmError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("The emulator does not implement {other}."),
        )),
    }
}
