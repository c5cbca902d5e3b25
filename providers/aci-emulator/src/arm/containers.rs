//! A group's containers: their logs (`Containers_ListLogs`) and the exec
//! and attach sessions (`Containers_ExecuteCommand`, `Containers_Attach`)
//! whose WebSockets [`crate::ws`] serves.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Req;
use super::groups::with_group;
use super::reply::{ArmError, ArmResult, Reply};
use crate::App;
use crate::state;
use crate::ws::{Session, SessionKind};

fn container_not_found(name: &str, container: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        format!("The container '{container}' is not found in container group '{name}'."),
    )
}

pub(super) fn logs(app: &Arc<App>, rg: &str, name: &str, r: &Req) -> ArmResult {
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

pub(super) fn session(app: &Arc<App>, rg: &str, name: &str, r: &Req, exec: bool) -> ArmResult {
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
