//! The exec and attach WebSockets (contract items 9 and 10), on the same TLS
//! port as ARM: `wss://127.0.0.1:PORT/exec/{id}` and `/attach/{id}`.
//!
//! Exec: the first client message must be the password (text), then stdin
//! follows as binary or text messages; output (stdout and stderr merged, as
//! in ACI) goes out as binary messages and the socket closes when the command
//! ends. `command` is split on whitespace, as ACI does, and run in the toy
//! shell of `skylet-toysh` (the one the containers' programs speak; see
//! `skylet_toysh::exec`): `echo`, `env`/`printenv`, `cat` (stdin to output
//! until the client closes; no files), `exit N`, `true`, `false`, `sleep`,
//! `printf` (and `$?`, which skylet's exit-code wrapper uses),
//! `sh`/`/bin/sh`/`bash` (reads stdin lines, splits them with POSIX quoting,
//! runs them; `exec CMD...` runs CMD and ends the session, `exit` ends it;
//! `sh -c SCRIPT` runs SCRIPT's statements), plus the emulator's own
//! `hostname`, `ls` and `pwd`. Anything else prints `<cmd>: command not
//! found`. With a terminal (`terminalSize` given) line ends are `\r\n`; no
//! prompt and no echo of input.
//!
//! Attach: the password comes in the `Authorization` header; the container's
//! new log lines stream out until it ends.
//!
//! A wrong password closes the socket with 1008 (policy violation) and no
//! output. Sessions are single-use and expire after [`SESSION_TTL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use skylet_toysh::{Input, Sandbox, Shell};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};
use tracing::Instrument;

use crate::App;
use crate::state::{Key, Output};

/// How long an unused session stays valid.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(300);
/// How long the client has to send the exec password.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a session does.
#[derive(Clone)]
pub(crate) enum SessionKind {
    /// Runs `command`.
    Exec { command: String, terminal: bool },
    /// Streams output.
    Attach,
}

/// A pending exec or attach session.
pub(crate) struct Session {
    key: Key,
    container: String,
    kind: SessionKind,
    password: String,
    created: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(key: Key, container: String, kind: SessionKind, password: String) -> Self {
        Self {
            key,
            container,
            kind,
            password,
            created: Instant::now(),
        }
    }
}

/// Stores a session under `id`, dropping expired ones.
pub(crate) fn insert(app: &App, id: String, session: Session) {
    let mut sessions = app
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
    sessions.insert(id, session);
}

fn take(app: &App, id: &str, exec: bool) -> Option<Session> {
    let mut sessions = app
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let matches = sessions
        .get(id)
        .is_some_and(|s| matches!(s.kind, SessionKind::Exec { .. }) == exec);
    if !matches {
        return None;
    }
    sessions
        .remove(id)
        .filter(|s| s.created.elapsed() < SESSION_TTL)
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// `GET /exec/{id}`.
pub(crate) async fn exec(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    app.count("WebSocket_Exec");
    let Some(session) = take(&app, &id, true) else {
        return unknown_session(&app);
    };
    let ctx = {
        let store = app.lock_store();
        store.groups.get(&session.key).and_then(|g| {
            let c = g.container(&session.container)?;
            Some(ExecCtx {
                host: g.name.clone(),
                sandbox: crate::state::sandbox(&g.name, &c.env),
            })
        })
    };
    let Some(ctx) = ctx else {
        return unknown_session(&app);
    };
    let span = tracing::info_span!("exec", group = %session.key.1, container = %session.container);
    upgrade(&app, req, span, move |ws, shutdown| async move {
        let SessionKind::Exec { command, terminal } = session.kind else {
            return;
        };
        let mut ws = ws;
        let first = tokio::time::timeout(PASSWORD_TIMEOUT, next_data(&mut ws)).await;
        let ok = matches!(&first, Ok(Some(Message::Text(t))) if crate::token::same_secret(t.as_str(), &session.password));
        if !ok {
            tracing::debug!("exec: wrong or missing password");
            close(&mut ws, CloseCode::Policy, "invalid password").await;
            return;
        }
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        let mut io = Io {
            ws,
            crlf: terminal,
            stdin: Vec::new(),
            eof: false,
            broken: false,
            host: ctx.host,
        };
        {
            let mut shell = Shell::new(&mut io, &ctx.sandbox);
            tokio::select! {
                _ = shell.run(&argv) => {}
                () = shutdown.cancelled() => {}
            }
        }
        close(&mut io.ws, CloseCode::Normal, "").await;
    })
}

/// `GET /attach/{id}`.
pub(crate) async fn attach(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    app.count("WebSocket_Attach");
    let Some(session) = take(&app, &id, false) else {
        return unknown_session(&app);
    };
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::token::same_secret(v, &session.password));
    let rx = {
        let store = app.lock_store();
        store
            .groups
            .get(&session.key)
            .and_then(|g| g.container(&session.container))
            .map(|c| (c.output.subscribe(), c.running()))
    };
    let Some((mut rx, running)) = rx else {
        return unknown_session(&app);
    };
    let span =
        tracing::info_span!("attach", group = %session.key.1, container = %session.container);
    upgrade(&app, req, span, move |mut ws, shutdown| async move {
        if !authorized {
            tracing::debug!("attach: wrong or missing password");
            close(&mut ws, CloseCode::Policy, "invalid password").await;
            return;
        }
        if !running {
            close(&mut ws, CloseCode::Normal, "").await;
            return;
        }
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Ok(Output::Line(line)) => {
                        if ws.send(Message::Binary(format!("{line}\n").into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(Output::Ended) | Err(broadcast::error::RecvError::Closed) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                },
                incoming = ws.next() => match incoming {
                    None | Some(Err(_) | Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                },
                () = shutdown.cancelled() => break,
            }
        }
        close(&mut ws, CloseCode::Normal, "").await;
    })
}

fn unknown_session(app: &App) -> Response {
    app.count_rejected();
    (StatusCode::NOT_FOUND, "unknown or expired session\n").into_response()
}

/// Answers the handshake (101) and runs `f` on the upgraded socket.
fn upgrade<F, Fut>(app: &Arc<App>, mut req: Request, span: tracing::Span, f: F) -> Response
where
    F: FnOnce(Ws, tokio_util::sync::CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let upgrade_ok = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| !k.is_empty());
    let (true, true, Some(key)) = (version_ok, upgrade_ok, key) else {
        app.count_rejected();
        return (
            StatusCode::BAD_REQUEST,
            "not a WebSocket version 13 handshake\n",
        )
            .into_response();
    };
    let accept = derive_accept_key(key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shutdown = app.shutdown.clone();
    app.tasks.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    f(ws, shutdown).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The next data (or close) message, skipping pings and pongs.
async fn next_data(ws: &mut Ws) -> Option<Message> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

/// Ends the WebSocket: a close frame (or the reply to the client's), a
/// short wait for the client's, then TLS `close_notify`.
async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = ws.close(Some(frame)).await;
    let _ = ws.flush().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let _ = ws.get_mut().shutdown().await;
}

/// What exec needs of its container.
struct ExecCtx {
    host: String,
    sandbox: Sandbox,
}

/// The session's stdin/stdout.
struct Io {
    ws: Ws,
    crlf: bool,
    stdin: Vec<u8>,
    eof: bool,
    /// Sending failed: the client is gone.
    broken: bool,
    /// The group's name (`hostname`).
    host: String,
}

const LS: &str =
    "bin\ndev\netc\nhome\nlib\nmedia\nmnt\nopt\nproc\nroot\nrun\nsbin\nsrv\nsys\ntmp\nusr\nvar\n";

impl Io {
    async fn send(&mut self, bytes: Vec<u8>) {
        if self.broken {
            return;
        }
        if let Err(e) = self.ws.send(Message::Binary(bytes.into())).await {
            tracing::debug!(error = %e, "exec ended");
            self.broken = true;
        }
    }

    async fn text(&mut self, text: &str) {
        let text = if self.crlf {
            text.replace('\n', "\r\n")
        } else {
            text.to_owned()
        };
        self.send(text.into_bytes()).await;
    }

    /// Reads one more message into `stdin`; false at end of input.
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        match next_data(&mut self.ws).await {
            Some(Message::Binary(b)) => self.stdin.extend_from_slice(&b),
            Some(Message::Text(t)) => self.stdin.extend_from_slice(t.as_bytes()),
            _ => self.eof = true,
        }
        !self.eof
    }
}

/// ACI's exec: stdout and stderr are one stream, no prompt, no echo.
impl skylet_toysh::Session for Io {
    async fn out(&mut self, bytes: &[u8]) {
        self.text(&String::from_utf8_lossy(bytes)).await;
    }

    async fn err(&mut self, text: &str) {
        self.text(text).await;
    }

    /// The next stdin line (without its `\n`/`\r\n`).
    async fn read_line(&mut self) -> Input {
        loop {
            if let Some(pos) = self.stdin.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.stdin.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Input::Line(String::from_utf8_lossy(&line).into_owned());
            }
            if !self.fill().await {
                if self.stdin.is_empty() {
                    return Input::Eof;
                }
                let rest = std::mem::take(&mut self.stdin);
                return Input::Line(
                    String::from_utf8_lossy(&rest)
                        .trim_end_matches('\r')
                        .to_owned(),
                );
            }
        }
    }

    /// Stdin back as it came, until the client closes.
    async fn cat(&mut self) -> i32 {
        while !self.broken {
            if !self.stdin.is_empty() {
                let bytes = std::mem::take(&mut self.stdin);
                self.send(bytes).await;
            } else if !self.fill().await {
                break;
            }
        }
        0
    }

    fn broken(&self) -> bool {
        self.broken
    }

    fn not_found(&self, command: &str) -> String {
        format!("{command}: command not found\n")
    }

    async fn command(&mut self, name: &str, _: &[String]) -> Option<i32> {
        let text = match name {
            "hostname" => format!("{}\n", self.host),
            "pwd" => "/\n".to_owned(),
            "ls" => LS.to_owned(),
            _ => return None,
        };
        self.text(&text).await;
        Some(0)
    }
}
