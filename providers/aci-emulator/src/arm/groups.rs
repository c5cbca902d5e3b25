//! Container groups: create or update (PUT), tag updates (PATCH), LIST
//! with paging, DELETE, stop, start and restart.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{Value, json};

use super::operations::lro_headers;
use super::reply::{ArmError, ArmResult, Reply};
use super::{PROVIDER, Req, quota};
use crate::limits::Covers;
use crate::state::{self, Group, OpKind};
use crate::{App, rules};

pub(super) fn not_found(rg: &str, name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{PROVIDER}/containerGroups/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

pub(super) fn with_group<T>(
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

pub(super) fn put_group(app: &Arc<App>, rg: &str, name: &str, body: Value) -> ArmResult {
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
        app.take_limit(Covers::GroupCreates)
            .map_err(super::checks::too_many_requests)?;
        quota::admit(app, &store, &body)?;
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

/// The resource group's name as configured (ARM keeps the original case).
fn rg_name<'a>(app: &'a App, rg: &'a str) -> &'a str {
    app.config
        .resource_groups
        .iter()
        .find(|g| g.eq_ignore_ascii_case(rg))
        .map_or(rg, String::as_str)
}

pub(super) fn patch_group(app: &Arc<App>, rg: &str, name: &str, body: Option<&Value>) -> ArmResult {
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

pub(super) fn list(app: &Arc<App>, rg: Option<&str>, r: &Req) -> ArmResult {
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

pub(super) fn delete_group(app: &Arc<App>, rg: &str, name: &str) -> ArmResult {
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
    app.take_limit(Covers::GroupDeletes)
        .map_err(super::checks::too_many_requests)?;
    let Some(group) = store.groups.get_mut(&key) else {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    };
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

pub(super) fn stop_group(app: &Arc<App>, rg: &str, name: &str) -> ArmResult {
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

pub(super) fn start_group(app: &Arc<App>, rg: &str, name: &str, restart: bool) -> ArmResult {
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
