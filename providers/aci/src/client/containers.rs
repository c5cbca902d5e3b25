//! A group's containers: their logs (Containers_ListLogs), exec and attach
//! (a WebSocket [`Session`] each, whose password `Debug` never shows).

use std::fmt;

use azure_core::http::Method;
use serde::{Deserialize, Serialize};

use super::{
    ArmClient, ArmError, Op,
    ops::{ATTACH, EXEC, LIST_LOGS},
    send::{Answer, json_body},
};

/// `Logs`: the answer of Containers_ListLogs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Logs {
    /// The log text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `ContainerExecRequestTerminalSize`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct TerminalSize {
    /// Rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i32>,
    /// Columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<i32>,
}

/// `ContainerExecRequest`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExecRequest {
    /// The command (ACI splits it on whitespace; no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The terminal size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_size: Option<TerminalSize>,
}

/// `ContainerExecResponse` and `ContainerAttachResponse`: the spec defines
/// both as a WebSocket URI and its password (sent first on exec, as the
/// `Authorization` header on attach); secret, so `Debug` hides it.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SocketResponse {
    /// The WebSocket to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_socket_uri: Option<String>,
    /// Its password (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for SocketResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketResponse")
            .field("web_socket_uri", &self.web_socket_uri)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `ContainerExecResponse`.
pub type ContainerExecResponse = SocketResponse;
/// `ContainerAttachResponse`.
pub type ContainerAttachResponse = SocketResponse;

/// An exec or attach WebSocket and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The `wss://` URI.
    pub uri: String,
    /// Exec: the first message to send. Attach: the `Authorization` header.
    pub password: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.uri)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ArmClient {
    /// the last `tail` lines if set, each prefixed with its RFC 3339
    /// timestamp if `timestamps`.
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn logs(
        &self,
        rg: &str,
        group: &str,
        container: &str,
        tail: Option<u64>,
        timestamps: bool,
    ) -> Result<String, ArmError> {
        let op = LIST_LOGS;
        let result = async {
            let mut query = Vec::new();
            if let Some(n) = tail {
                // the spec's `tail` is an int32
                query.push(("tail", n.min(i32::MAX as u64).to_string()));
            }
            query.push(("timestamps", timestamps.to_string()));
            let url = self.group_url(rg, group, &["containers", container, "logs"], &query);
            let answer = self.send(op, Method::Get, &url, None).await?;
            match answer.status {
                200 => Ok(answer.json::<Logs>(op)?.content.unwrap_or_default()),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// Containers_ExecuteCommand: a WebSocket running `command` (split on
    /// whitespace by ACI, no shell), with a terminal of `size` (rows, cols).
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn exec(
        &self,
        rg: &str,
        group: &str,
        container: &str,
        command: &str,
        size: Option<(u16, u16)>,
    ) -> Result<Session, ArmError> {
        let op = EXEC;
        let result = async {
            let request = ContainerExecRequest {
                command: Some(command.to_owned()),
                terminal_size: size.map(|(rows, cols)| TerminalSize {
                    rows: Some(rows.into()),
                    cols: Some(cols.into()),
                }),
            };
            let json = json_body(op, &request)?;
            let url = self.group_url(rg, group, &["containers", container, "exec"], &[]);
            let answer = self.send(op, Method::Post, &url, Some(json)).await?;
            session(op, &answer)
        }
        .await;
        self.counted(op, result)
    }

    /// Containers_Attach: a WebSocket with the container's output from now on.
    ///
    /// # Errors
    /// [`ArmError`] (404: no such group or container).
    pub async fn attach(
        &self,
        rg: &str,
        group: &str,
        container: &str,
    ) -> Result<Session, ArmError> {
        let op = ATTACH;
        let result = async {
            let url = self.group_url(rg, group, &["containers", container, "attach"], &[]);
            let answer = self.send(op, Method::Post, &url, None).await?;
            session(op, &answer)
        }
        .await;
        self.counted(op, result)
    }
}

/// The WebSocket session of an exec or attach answer
/// ([`ContainerExecResponse`], [`ContainerAttachResponse`]).
fn session(op: Op, answer: &Answer) -> Result<Session, ArmError> {
    if answer.status != 200 {
        return Err(answer.error(op));
    }
    let rsp: SocketResponse = answer.json(op)?;
    match rsp
        .web_socket_uri
        .filter(|u| u.starts_with("wss://") || u.starts_with("ws://"))
    {
        Some(uri) => Ok(Session {
            uri,
            password: rsp.password.unwrap_or_default(),
        }),
        None => Err(ArmError::Protocol {
            operation: op.name,
            message: "no webSocketUri in the answer".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_shape() {
        let r = ContainerExecRequest {
            command: Some("ls -l".into()),
            terminal_size: Some(TerminalSize {
                rows: Some(24),
                cols: Some(80),
            }),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"command":"ls -l","terminalSize":{"rows":24,"cols":80}})
        );
    }
}
