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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::spec::{Operation, ParamIn, Route, Violation};
use crate::state::{self, Group, OpKind};
use crate::ws::{Session, SessionKind};
use crate::{App, rules};

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

/// A successful answer.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Option<Value>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An ARM error answer (`CloudError`).
#[derive(Debug)]
struct ArmError {
    status: StatusCode,
    code: String,
    message: String,
    details: Vec<Value>,
    headers: Vec<(HeaderName, String)>,
}

impl ArmError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn violations(violations: &[Violation]) -> Self {
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

    fn into_reply(self) -> Reply {
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

type ArmResult = Result<Reply, ArmError>;

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
    (target, checked(app, target, r, bytes))
}

/// The checks every ARM call passes, then the operation.
fn checked(app: &Arc<App>, target: Target<'_>, r: &mut Req, bytes: &[u8]) -> ArmResult {
    if !app.tokens.check(&r.headers) {
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
        return Err(e);
    }
    if let Some(after) = app.take_throttle() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        let mut e = ArmError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("The request is being throttled. Please retry after {secs} seconds."),
        );
        e.headers.push((header::RETRY_AFTER, secs.to_string()));
        return Err(e);
    }
    match r.query("api-version") {
        None => {
            return Err(ArmError::bad_request(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        Some(v) if v != app.spec.api_version() => {
            return Err(ArmError::bad_request(
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    app.spec.api_version()
                ),
            ));
        }
        Some(_) => {}
    }
    let sub = r.param("subscriptionId").to_owned();
    if !sub.is_empty() && !sub.eq_ignore_ascii_case(&app.config.subscription_id) {
        if let Target::Spec(op) = target
            && let Some(p) = op.params.iter().find(|p| p.name == "subscriptionId")
            && let Err(v) = app.spec.check_param(p, &sub)
        {
            return Err(ArmError::bad_request(
                "InvalidSubscriptionId",
                format!(
                    "The provided subscription identifier '{sub}' is malformed or invalid: {v}."
                ),
            ));
        }
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        ));
    }
    let op = match target {
        Target::Spec(op) => op,
        Target::OperationStatus => return operation_status(app, r),
        Target::Unrouted => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                "No route.",
            ));
        }
    };
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
    let rg = r.param("resourceGroupName").to_owned();
    if !rg.is_empty()
        && !app
            .config
            .resource_groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&rg))
    {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        ));
    }
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
    // Operations without a body parameter ignore a stray body (as ARM does).
    let body = if op.takes_body() { body } else { None };
    r.body = app
        .spec
        .validate_request(op, body.as_ref())
        .map_err(|v| ArmError::violations(&v))?;
    operation(app, op, r)
}

fn operation(app: &Arc<App>, op: &Operation, r: &Req) -> ArmResult {
    let rg = r.param("resourceGroupName");
    let name = r.param("containerGroupName");
    match op.id.as_str() {
        "ContainerGroups_CreateOrUpdate" => {
            put_group(app, rg, name, r.body.clone().unwrap_or(Value::Null))
        }
        "ContainerGroups_Get" => with_group(app, rg, name, |g| {
            Ok(Reply::json(StatusCode::OK, g.render(app, false)))
        }),
        "ContainerGroups_Update" => patch_group(app, rg, name, r.body.as_ref()),
        "ContainerGroups_ListByResourceGroup" => list(app, Some(rg), r),
        "ContainerGroups_List" => list(app, None, r),
        "ContainerGroups_Delete" => delete_group(app, rg, name),
        "ContainerGroups_Stop" => stop_group(app, rg, name),
        "ContainerGroups_Start" => start_group(app, rg, name, false),
        "ContainerGroups_Restart" => start_group(app, rg, name, true),
        "Containers_ListLogs" => logs(app, rg, name, r),
        "Containers_ExecuteCommand" => session(app, rg, name, r, true),
        "Containers_Attach" => session(app, rg, name, r, false),
        "Location_ListUsage" => usages(app, r),
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

fn not_found(rg: &str, name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{PROVIDER}/containerGroups/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn with_group<T>(
    app: &App,
    rg: &str,
    name: &str,
    f: impl FnOnce(&Group) -> Result<T, ArmError>,
) -> Result<T, ArmError> {
    let store = app.lock_store();
    match store.groups.get(&state::key(rg, name)) {
        Some(g) => f(g),
        None => Err(not_found(rg, name)),
    }
}

fn operation_url(app: &App, id: &str) -> String {
    format!(
        "{}/subscriptions/{}/providers/{PROVIDER}/locations/{}/operations/{id}?api-version={}",
        app.base_url,
        app.config.subscription_id,
        app.config.location,
        app.spec.api_version()
    )
}

fn lro_headers(app: &App, reply: Reply, op: &str) -> Reply {
    let url = operation_url(app, op);
    reply
        .header(HeaderName::from_static("azure-asyncoperation"), url.clone())
        .header(header::LOCATION, url)
        .header(header::RETRY_AFTER, "1")
}

fn put_group(app: &Arc<App>, rg: &str, name: &str, body: Value) -> ArmResult {
    rules::check_group(name, &body, &app.config.location)
        .map_err(|r| ArmError::bad_request(r.code, r.message))?;
    let key = state::key(rg, name);
    let mut store = app.lock_store();
    let (status, op) = if store.groups.contains_key(&key) {
        let existing = store
            .groups
            .get(&key)
            .map(|g| (g.provisioning, g.body == body, g.pending_op.clone()));
        match existing {
            Some(("Deleting", _, _)) => {
                return Err(ArmError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "The container group '{name}' is being deleted; retry when the deletion has finished."
                    ),
                ));
            }
            Some((_, true, Some(pending))) => (StatusCode::OK, pending),
            Some((_, true, None)) => (StatusCode::OK, store.new_operation(OpKind::Create, true)),
            _ => {
                let op = store.new_operation(OpKind::Create, false);
                let need_ip = store.groups.get(&key).is_some_and(|g| g.ip.is_none());
                let ip = match Group::wants_ip(&body) {
                    Some(private) if need_ip => Some(store.next_ip(private)),
                    _ => None,
                };
                let Some(group) = store.groups.get_mut(&key) else {
                    return Err(not_found(rg, name));
                };
                let old = group.pending_op.replace(op.clone());
                group.replace_body(body);
                if ip.is_some() {
                    group.ip = ip;
                }
                group.provisioning = "Updating";
                let token = group.new_generation();
                if let Some(old) = old {
                    store.finish_operation(&old, "Canceled", None);
                }
                state::simulate(app, key.clone(), token, app.config.create_delay);
                (StatusCode::OK, op)
            }
        }
    } else {
        admit(app, &store, &body)?;
        let ip = Group::wants_ip(&body).map(|private| store.next_ip(private));
        let mut group = Group::new(rg_name(app, rg), name, body, ip);
        let op = store.new_operation(OpKind::Create, false);
        group.pending_op = Some(op.clone());
        let token = group.generation.clone();
        store.groups.insert(key.clone(), group);
        state::simulate(app, key.clone(), token, app.config.create_delay);
        (StatusCode::CREATED, op)
    };
    let body = store
        .groups
        .get(&key)
        .map(|g| g.render(app, false))
        .unwrap_or(Value::Null);
    drop(store);
    Ok(lro_headers(app, Reply::json(status, body), &op))
}

/// Whether a new group fits, as ARM decides before it accepts a create:
/// 409 `ServiceUnavailable` while the location has no room
/// ([`crate::Emulator::set_capacity_available`]), 409
/// `ContainerGroupQuotaReached` naming the quota the group would exceed
/// (`ContainerGroups`, then `StandardCores` or, for a Spot group,
/// `StandardSpotCores`), with ARM's wording.
fn admit(app: &App, store: &state::Store, body: &Value) -> Result<(), ArmError> {
    let location = &app.config.location;
    let cpu = state::requested_cpu(body);
    if !app.capacity_available() {
        let memory: f64 = body
            .pointer("/properties/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        c.pointer("/properties/resources/requests/memoryInGB")?
                            .as_f64()
                    })
                    .sum()
            })
            .unwrap_or(0.0);
        let os = body
            .pointer("/properties/osType")
            .and_then(Value::as_str)
            .unwrap_or("Linux");
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "ServiceUnavailable",
            format!(
                "The requested resource is not available in the location '{location}' at this moment. Please retry with a different resource request or in another location. Resource requested: '{cpu}' CPU '{memory}' GB memory '{os}' OS"
            ),
        ));
    }
    let exceeded = |quota: &str, limit: u32, usage: f64, requested: f64| {
        #[allow(clippy::cast_possible_truncation)] // counts within a quota's magnitude
        let whole = |v: f64| v.ceil().min(f64::from(u32::MAX)) as u64;
        ArmError::new(
            StatusCode::CONFLICT,
            "ContainerGroupQuotaReached",
            format!(
                "Resource type '{PROVIDER}/containerGroups' container group quota '{quota}' exceeded in region '{location}'. Limit: '{limit}', Usage: '{}', Requested: '{}'.",
                whole(usage),
                whole(requested)
            ),
        )
    };
    let groups = store.groups.len();
    if groups >= app.config.container_group_quota as usize {
        #[allow(clippy::cast_precision_loss)] // a count of groups
        return Err(exceeded(
            "ContainerGroups",
            app.config.container_group_quota,
            groups as f64,
            1.0,
        ));
    }
    let spot = state::is_spot(body);
    let (quota, limit) = if spot {
        ("StandardSpotCores", app.config.spot_core_quota)
    } else {
        ("StandardCores", app.config.core_quota)
    };
    let used: f64 = store
        .groups
        .values()
        .filter(|g| state::is_spot(&g.body) == spot)
        .map(Group::cpu)
        .sum();
    // a small epsilon: requests are in hundredths of a core
    if used + cpu > f64::from(limit) + 1e-6 {
        return Err(exceeded(quota, limit, used, cpu));
    }
    Ok(())
}

/// The resource group's name as configured (ARM keeps the original case).
fn rg_name<'a>(app: &'a App, rg: &'a str) -> &'a str {
    app.config
        .resource_groups
        .iter()
        .find(|g| g.eq_ignore_ascii_case(rg))
        .map_or(rg, String::as_str)
}

fn patch_group(app: &Arc<App>, rg: &str, name: &str, body: Option<&Value>) -> ArmResult {
    let mut store = app.lock_store();
    let Some(group) = store.groups.get_mut(&state::key(rg, name)) else {
        return Err(not_found(rg, name));
    };
    if let Some(tags) = body.and_then(|b| b.get("tags")) {
        let mut probe = group.body.clone();
        if let Some(obj) = probe.as_object_mut() {
            obj.insert("tags".into(), tags.clone());
        }
        rules::check_group(&group.name, &probe, &app.config.location)
            .map_err(|r| ArmError::bad_request(r.code, r.message))?;
        group.body = probe;
    }
    Ok(Reply::json(StatusCode::OK, group.render(app, false)))
}

fn list(app: &Arc<App>, rg: Option<&str>, r: &Req) -> ArmResult {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let skip = match r.query("$skipToken") {
        None => None,
        Some(t) => {
            let decoded = engine
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((g, n)) = decoded.as_deref().and_then(|d| d.split_once('/')) else {
                return Err(ArmError::bad_request(
                    "InvalidSkipToken",
                    "The $skipToken is invalid.",
                ));
            };
            Some((g.to_owned(), n.to_owned()))
        }
    };
    let store = app.lock_store();
    let matching = store
        .groups
        .iter()
        .filter(|((g, _), _)| rg.is_none_or(|rg| g.eq_ignore_ascii_case(rg)))
        .filter(|(k, _)| skip.as_ref().is_none_or(|s| *k >= s));
    let mut page: Vec<Value> = Vec::new();
    let mut next = None;
    for (k, g) in matching {
        if page.len() == app.config.page_size {
            next = Some(engine.encode(format!("{}/{}", k.0, k.1)));
            break;
        }
        page.push(g.render(app, true));
    }
    drop(store);
    let mut body = json!({ "value": page });
    if let (Some(token), Some(obj)) = (next, body.as_object_mut()) {
        let link = format!(
            "{}{}?api-version={}&$skipToken={token}",
            app.base_url,
            r.path,
            app.spec.api_version()
        );
        obj.insert("nextLink".into(), Value::String(link));
    }
    Ok(Reply::json(StatusCode::OK, body))
}

fn delete_group(app: &Arc<App>, rg: &str, name: &str) -> ArmResult {
    let key = state::key(rg, name);
    let mut store = app.lock_store();
    let Some(group) = store.groups.get_mut(&key) else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
    if group.provisioning == "Deleting"
        && let Some(op) = group.pending_op.clone()
    {
        return Ok(lro_headers(app, Reply::empty(StatusCode::ACCEPTED), &op));
    }
    group.stop();
    group.provisioning = "Deleting";
    let old = group.pending_op.take();
    if let Some(old) = old {
        store.finish_operation(&old, "Canceled", None);
    }
    let op = store.new_operation(OpKind::Delete, false);
    if let Some(g) = store.groups.get_mut(&key) {
        g.pending_op = Some(op.clone());
    }
    drop(store);
    let (app2, op2, delay, shutdown) = (
        app.clone(),
        op.clone(),
        app.config.delete_delay,
        app.shutdown.clone(),
    );
    app.tasks.spawn(async move {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {
                let mut store = app2.lock_store();
                store.groups.remove(&key);
                store.finish_operation(&op2, "Succeeded", None);
            }
        }
    });
    Ok(lro_headers(app, Reply::empty(StatusCode::ACCEPTED), &op))
}

fn stop_group(app: &Arc<App>, rg: &str, name: &str) -> ArmResult {
    let mut store = app.lock_store();
    let Some(group) = store.groups.get_mut(&state::key(rg, name)) else {
        return Err(not_found(rg, name));
    };
    if group.provisioning == "Deleting" {
        return Err(not_found(rg, name));
    }
    group.stop();
    let pending = if group.provisioning == "Succeeded" {
        None
    } else {
        group.provisioning = "Succeeded";
        group.pending_op.take()
    };
    if let Some(op) = pending {
        store.finish_operation(&op, "Succeeded", None);
    }
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

fn start_group(app: &Arc<App>, rg: &str, name: &str, restart: bool) -> ArmResult {
    let key = state::key(rg, name);
    let mut store = app.lock_store();
    let Some(group) = store.groups.get(&key) else {
        return Err(not_found(rg, name));
    };
    if group.provisioning == "Deleting" {
        return Err(not_found(rg, name));
    }
    let op = if restart {
        None
    } else {
        Some(store.new_operation(OpKind::Start, false))
    };
    let Some(group) = store.groups.get_mut(&key) else {
        return Err(not_found(rg, name));
    };
    let old = if restart {
        None
    } else {
        std::mem::replace(&mut group.pending_op, op.clone())
    };
    group.reset_containers(restart);
    let delay = if restart {
        Duration::ZERO
    } else {
        group.provisioning = "Pending";
        app.config.create_delay
    };
    let token = group.new_generation();
    if let Some(old) = old {
        store.finish_operation(&old, "Canceled", None);
    }
    drop(store);
    state::simulate(app, key, token, delay);
    Ok(match op {
        Some(op) => lro_headers(app, Reply::empty(StatusCode::ACCEPTED), &op),
        None => Reply::empty(StatusCode::NO_CONTENT),
    })
}

fn container_not_found(name: &str, container: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        format!("The container '{container}' is not found in container group '{name}'."),
    )
}

fn logs(app: &Arc<App>, rg: &str, name: &str, r: &Req) -> ArmResult {
    let container = r.param("containerName");
    let tail = r.query("tail").and_then(|t| t.parse::<i64>().ok());
    let timestamps = r
        .query("timestamps")
        .is_some_and(|t| t.eq_ignore_ascii_case("true"));
    with_group(app, rg, name, |g| {
        let ctr = g
            .container(container)
            .ok_or_else(|| container_not_found(name, container))?;
        let skip = match tail {
            Some(n) => ctr
                .logs
                .len()
                .saturating_sub(usize::try_from(n.max(0)).unwrap_or(usize::MAX)),
            None => 0,
        };
        let content: String = ctr.logs[skip..]
            .iter()
            .map(|(ts, line)| {
                if timestamps {
                    format!("{ts:.9} {line}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        Ok(Reply::json(StatusCode::OK, json!({ "content": content })))
    })
}

fn session(app: &Arc<App>, rg: &str, name: &str, r: &Req, exec: bool) -> ArmResult {
    let container = r.param("containerName").to_owned();
    let kind = if exec {
        let body = r.body.as_ref();
        let Some(command) = body
            .and_then(|b| b.get("command"))
            .and_then(Value::as_str)
            .filter(|c| !c.trim().is_empty())
        else {
            return Err(ArmError::bad_request(
                "MissingRequiredProperty",
                "$.command: required property is missing",
            ));
        };
        let terminal = body.and_then(|b| b.get("terminalSize")).is_some();
        SessionKind::Exec {
            command: command.to_owned(),
            terminal,
        }
    } else {
        SessionKind::Attach
    };
    with_group(app, rg, name, |g| {
        let ctr = g
            .container(&container)
            .ok_or_else(|| container_not_found(name, &container))?;
        if !ctr.running() {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "ContainerNotRunning",
                format!("The container '{container}' in container group '{name}' is not running."),
            ));
        }
        Ok(())
    })?;
    let id = crate::token::uuid();
    let password = crate::token::secret();
    let path = if exec { "exec" } else { "attach" };
    let uri = format!(
        "{}/{path}/{id}",
        app.base_url.replacen("https://", "wss://", 1)
    );
    let session = Session::new(state::key(rg, name), container, kind, password.clone());
    crate::ws::insert(app, id, session);
    Ok(Reply::json(
        StatusCode::OK,
        json!({ "webSocketUri": uri, "password": password }),
    ))
}

fn usages(app: &Arc<App>, r: &Req) -> ArmResult {
    let location = r.param("location");
    if !rules::same_location(location, &app.config.location) {
        return Err(ArmError::bad_request(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{location}' is not available for resource type '{PROVIDER}/containerGroups'."
            ),
        ));
    }
    let store = app.lock_store();
    let groups = i32::try_from(store.groups.len()).unwrap_or(i32::MAX);
    let cores = |spot: bool| -> f64 {
        store
            .groups
            .values()
            .filter(|g| state::is_spot(&g.body) == spot)
            .map(Group::cpu)
            .sum()
    };
    let (regular, spot) = (cores(false), cores(true));
    drop(store);
    #[allow(clippy::cast_possible_truncation)] // at most the quota's magnitude
    let whole = |c: f64| c.ceil().min(f64::from(i32::MAX)) as i32;
    let base = format!(
        "/subscriptions/{}/providers/{PROVIDER}/locations/{}/usages",
        app.config.subscription_id, app.config.location
    );
    let usage = |name: &str, localized: &str, current: i32, limit: u32| {
        json!({
            "id": format!("{base}/{name}"),
            "unit": "Count",
            "currentValue": current,
            "limit": i32::try_from(limit).unwrap_or(i32::MAX),
            "name": {"value": name, "localizedValue": localized},
        })
    };
    Ok(Reply::json(
        StatusCode::OK,
        json!({"value": [
            usage("ContainerGroups", "Container Groups", groups, app.config.container_group_quota),
            usage("StandardCores", "Standard Cores", whole(regular), app.config.core_quota),
            usage("StandardSpotCores", "Standard Spot Cores", whole(spot), app.config.spot_core_quota),
        ]}),
    ))
}

fn operation_status(app: &Arc<App>, r: &Req) -> ArmResult {
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

/// Validates the answer, adds ARM's headers and builds the response.
fn respond(
    app: &App,
    target: Target<'_>,
    r: &Req,
    mut reply: Reply,
    correlation: &str,
) -> Response {
    let check = match target {
        Target::Spec(op) => {
            app.spec
                .validate_response(op, reply.status.as_u16(), reply.body.as_ref())
        }
        Target::OperationStatus => match &reply.body {
            Some(body) if reply.status.is_success() => app
                .spec
                .validate_definition(
                    "common:OperationStatusResult",
                    body,
                    crate::spec::Mode::Response,
                )
                .map(drop),
            Some(body) => app
                .spec
                .validate_definition("CloudError", body, crate::spec::Mode::Response)
                .map(drop),
            None => Ok(()),
        },
        Target::Unrouted => match &reply.body {
            Some(body) => app
                .spec
                .validate_definition("CloudError", body, crate::spec::Mode::Response)
                .map(drop),
            None => Ok(()),
        },
    };
    if let Err(violations) = check {
        let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
        let op = match target {
            Target::Spec(op) => op.id.as_str(),
            Target::OperationStatus => "OperationStatus",
            Target::Unrouted => "-",
        };
        tracing::error!(operation = op, status = reply.status.as_u16(), violations = ?messages, "emulator response breaks the spec");
        app.count_invalid_response();
        reply = ArmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "EmulatorResponseInvalid",
            format!(
                "The emulator's {} answer to {op} breaks the spec: {}",
                reply.status.as_u16(),
                messages.join("; ")
            ),
        )
        .into_reply();
    }
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
    response
}
