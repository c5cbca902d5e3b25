//! The kubelet streaming API: `kubectl exec`, `kubectl attach` and
//! `kubectl port-forward`, which kube-apiserver proxies to the node.
//!
//! | route | |
//! |---|---|
//! | `GET/POST /exec/{ns}/{pod}[/{uid}]/{container}?command=…&input=1&output=1&error=1&tty=1` | run a command in a container |
//! | `GET/POST /attach/{ns}/{pod}[/{uid}]/{container}?input=1&output=1&error=1&tty=1` | attach to its main process |
//! | `GET/POST /portForward/{ns}/{pod}[/{uid}][?port=80,443]` | forward TCP connections to the pod's ports |
//!
//! # Protocols
//!
//! Each request is an HTTP/1.1 upgrade, answered with `101 Switching
//! Protocols` (see [`upgrade`] for the negotiation):
//!
//! * **SPDY/3.1** (`skylet-spdy`): what kube-apiserver speaks to kubelets,
//!   and what it translates WebSocket clients into when the Node does not
//!   declare `ExtendWebSocketsToKubelet`. exec/attach offer
//!   `v5.channel.k8s.io` (treated as v4), `v4`, `v3`, `v2` and
//!   `channel.k8s.io`: the client opens one stream per standard stream
//!   (`streamtype` = `error`, `stdin`, `stdout`, `stderr`, `resize` with a
//!   terminal from v3 on), skylet waits up to 30 s for those it asked for.
//!   Port-forward speaks `portforward.k8s.io` ([`portforward`]).
//! * **WebSocket** channel protocols ([`websocket`]): `v5.channel.k8s.io`
//!   (with the close signal, so `kubectl exec -i` can end stdin),
//!   `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`,
//!   `base64.channel.k8s.io`, `channel.k8s.io`: channel 0 stdin, 1 stdout,
//!   2 stderr, 3 error, 4 resize. kube-apiserver 1.36 sends kubectl's
//!   WebSocket requests here untranslated when the Node lists
//!   `ExtendWebSocketsToKubelet` in `status.declaredFeatures` (skylet does,
//!   see [`crate::node`]); older WebSocket clients (kube-rs, v4) always
//!   arrive this way. Port-forward takes `v4.channel.k8s.io` with `?port=`,
//!   and SPDY tunnelled through a WebSocket, `SPDY/3.1+portforward.k8s.io`.
//!
//! The session itself does not depend on the transport: the backend gets
//! in-memory pipes ([`skylet_provider::ExecIo`]) and [`remotecommand`] copies
//! between them and the client's streams, then writes the exit status to
//! the error stream.
//!
//! # Errors
//!
//! Before the upgrade, as plain-text HTTP errors: a malformed path or a pod
//! not bound to this node (or with another UID) or an unknown container is
//! 404; a malformed query, no requested stream, an exec without a command,
//! or a request that is not an upgrade is 400; no common sub-protocol is
//! 403 (with `X-Accepted-Stream-Protocol-Versions` for SPDY). The backend's
//! exec/attach future is polled once before the upgrade, so what it fails
//! at once maps through [`ApiError`]: `NotFound` 404, `Unsupported` 501.
//! Later failures reach the client on the error stream.
//!
//! # Limits
//!
//! A session ends when no byte went either way for
//! [`Limits::stream_idle_timeout`](crate::server::Limits) or when it lasted
//! [`Limits::stream_max_duration`](crate::server::Limits) ([`watchdog`]), as
//! if the client had left: the backend's call is dropped, SPDY sends
//! GOAWAY, WebSocket a close frame. SPDY connections refuse streams beyond
//! their count and rate limits (`Limits::spdy_remote_command`,
//! `Limits::spdy_port_forward`).
//!
//! # Caveats
//!
//! Sessions run in tasks of their own once upgraded; a skylet shutdown ends
//! them with the process. A backend that keeps its output writers alive
//! after it returned has its remaining output cut after 10 s.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, Request, State as AxState},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use skylet_provider::{PodRef, Provider};
use tracing::Instrument;

use super::{State, error::ApiError};

mod portforward;
mod remotecommand;
pub(crate) mod upgrade;
mod watchdog;
mod websocket;

use remotecommand::Client;
use upgrade::Refusal;
use watchdog::{Cutoff, Tracked};

/// Resolves when the client left (`closed`) or the session must end.
async fn ended(closed: impl Future<Output = ()>, cutoff: Cutoff) {
    tokio::select! {
        () = closed => {}
        reason = cutoff.wait() => tracing::info!(%reason, "closing the session"),
    }
}

/// exec or attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Run a new command.
    Exec,
    /// Attach to the main process.
    Attach,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Attach => "attach",
        }
    }
}

/// Which pod (and container) a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) uid: Option<String>,
    /// `None` for port-forward.
    pub(crate) container: Option<String>,
}

/// Parses `{ns}/{pod}[/{uid}]/{container}` (or without the container).
pub(crate) fn parse_target(rest: &str, with_container: bool) -> Result<Target, ApiError> {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let bad = || {
        ApiError::not_found(format!(
            "/{rest} is not a valid path: want namespace/pod[/uid]{}",
            if with_container { "/container" } else { "" }
        ))
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let s = |v: &&str| (*v).to_owned();
    match (with_container, parts.as_slice()) {
        (true, [ns, pod, c]) => Ok(Target {
            namespace: s(ns),
            pod: s(pod),
            uid: None,
            container: Some(s(c)),
        }),
        (true, [ns, pod, uid, c]) => Ok(Target {
            namespace: s(ns),
            pod: s(pod),
            uid: Some(s(uid)),
            container: Some(s(c)),
        }),
        (false, [ns, pod]) => Ok(Target {
            namespace: s(ns),
            pod: s(pod),
            uid: None,
            container: None,
        }),
        (false, [ns, pod, uid]) => Ok(Target {
            namespace: s(ns),
            pod: s(pod),
            uid: Some(s(uid)),
            container: None,
        }),
        _ => Err(bad()),
    }
}

/// The streams and command a client asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    /// Always false with `tty` (a terminal merges stderr into stdout).
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
    pub(crate) command: Vec<String>,
}

fn flag(query: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    let mut value = false;
    for (_, v) in query.iter().filter(|(k, _)| k == name) {
        value = match v.as_str() {
            "1" | "true" | "True" => true,
            "" | "0" | "false" | "False" => false,
            other => {
                return Err(ApiError::bad_request(format!(
                    "{name}={other:?} is not a boolean"
                )));
            }
        };
    }
    Ok(value)
}

/// Parses the query of exec and attach, as the kubelet does
/// (`remotecommand.NewOptions`): `tty` drops stderr, at least one stream is
/// required, and exec needs a command.
pub(crate) fn parse_options(query: &[(String, String)], kind: Kind) -> Result<Options, ApiError> {
    let tty = flag(query, "tty")?;
    let opts = Options {
        stdin: flag(query, "input")?,
        stdout: flag(query, "output")?,
        stderr: flag(query, "error")? && !tty,
        tty,
        command: query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if kind == Kind::Exec && opts.command.is_empty() {
        return Err(ApiError::bad_request(
            "exec needs a command (query parameter \"command\")",
        ));
    }
    Ok(opts)
}

/// The pod of `target` if it is bound to this node (and has its UID).
fn find_pod<P: Provider>(state: &State<P>, target: &Target) -> Result<Arc<Pod>, ApiError> {
    let (ns, name) = (&target.namespace, &target.pod);
    let pod = state
        .pod(ns, name)
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{name} is not on this node")))?;
    if let Some(uid) = &target.uid
        && pod.metadata.uid.as_deref() != Some(uid.as_str())
    {
        return Err(ApiError::not_found(format!(
            "pod {ns}/{name} with UID {uid} is not on this node"
        )));
    }
    if let Some(container) = &target.container {
        let known = pod.spec.as_ref().is_some_and(|s| {
            let names = s.containers.iter().map(|c| &c.name);
            let init = s.init_containers.iter().flatten().map(|c| &c.name);
            let ephemeral = s.ephemeral_containers.iter().flatten().map(|c| &c.name);
            names.chain(init).chain(ephemeral).any(|n| n == container)
        });
        if !known {
            return Err(ApiError::not_found(format!(
                "container {container:?} is not in pod {ns}/{name}"
            )));
        }
    }
    Ok(pod)
}

/// The transport a request asked for.
enum Transport {
    Spdy(&'static str),
    WebSocket(upgrade::WebSocket),
}

impl Transport {
    fn negotiate(
        req: &Request,
        spdy: &'static [&'static str],
        ws: &[&'static str],
    ) -> Result<Self, Refusal> {
        let headers = req.headers();
        if upgrade::is_websocket(headers) {
            Ok(Self::WebSocket(upgrade::websocket(headers, ws)?))
        } else if upgrade::is_spdy(headers) {
            upgrade::spdy_protocol(headers, spdy).map(Self::Spdy)
        } else {
            Err(ApiError::bad_request(
                "Upgrade request required: exec, attach and port-forward need a SPDY/3.1 or WebSocket upgrade",
            )
            .into())
        }
    }

    /// `spdy` or `websocket`, and the sub-protocol, for logs.
    fn describe(&self) -> (&'static str, &'static str) {
        match self {
            Self::Spdy(p) => ("spdy", p),
            Self::WebSocket(ws) => ("websocket", ws.protocol),
        }
    }

    fn switching(&self) -> Response {
        match self {
            Self::Spdy(p) => upgrade::spdy_switching(p),
            Self::WebSocket(ws) => upgrade::websocket_switching(ws),
        }
    }
}

/// Takes the request's pending upgrade (only HTTP/1.1 connections have one).
fn on_upgrade(req: &mut Request) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    req.extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| {
            ApiError::bad_request("this connection cannot be upgraded (HTTP/1.1 is required)")
        })
}

/// `/exec/{ns}/{pod}[/{uid}]/{container}`
pub(crate) async fn exec<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
    Path(rest): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    remote_command(state, Kind::Exec, &rest, &query, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/attach/{ns}/{pod}[/{uid}]/{container}`
pub(crate) async fn attach<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
    Path(rest): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    remote_command(state, Kind::Attach, &rest, &query, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn remote_command<P: Provider>(
    state: Arc<State<P>>,
    kind: Kind,
    rest: &str,
    query: &[(String, String)],
    mut req: Request,
) -> Result<Response, Refusal> {
    let target = parse_target(rest, true)?;
    let opts = parse_options(query, kind)?;
    let pod = find_pod(&state, &target)?;
    let transport = Transport::negotiate(
        &req,
        remotecommand::SPDY_PROTOCOLS,
        remotecommand::WS_PROTOCOLS,
    )?;
    let upgrade = on_upgrade(&mut req)?;
    let pod = PodRef::of(&pod);
    let container = target.container.unwrap_or_default();
    let (transport_name, protocol) = transport.describe();
    let span = tracing::info_span!(
        "session",
        kind = kind.name(),
        transport = transport_name,
        protocol,
        pod.namespace = %pod.namespace,
        pod.name = %pod.name,
        container = %container,
        tty = opts.tty,
    );
    let started = remotecommand::start(&state, kind, pod, container, &opts)
        .instrument(span.clone())
        .await
        .map_err(ApiError::from)?;
    let response = transport.switching();
    let limits = Arc::clone(&state.limits);
    tokio::spawn(
        async move {
            let io = match upgrade.await {
                Ok(io) => Tracked::new(TokioIo::new(io)),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let cutoff = Cutoff::new(io.activity(), &limits);
            let begun = std::time::Instant::now();
            let outcome = match transport {
                Transport::Spdy(protocol) => {
                    let config = limits.spdy_remote_command.clone();
                    serve_spdy(io, protocol, started, opts, config, cutoff).await
                }
                Transport::WebSocket(ws) => {
                    serve_websocket(io, ws.protocol, started, opts, cutoff).await
                }
            };
            match outcome {
                Some(Ok(status)) => {
                    tracing::info!(?status, elapsed = ?begun.elapsed(), "session ended")
                }
                Some(Err(e)) => tracing::info!(error = %e, "session failed"),
                None => tracing::info!(elapsed = ?begun.elapsed(), "session ended by the client"),
            }
        }
        .instrument(span),
    );
    Ok(response)
}

type Outcome = Option<Result<skylet_provider::ExitStatus, skylet_provider::ProviderError>>;

/// exec/attach over SPDY: waits for the client's streams, runs the session,
/// closes the connection.
async fn serve_spdy<T>(
    io: T,
    protocol: &'static str,
    started: remotecommand::Started,
    opts: Options,
    config: skylet_spdy::Config,
    cutoff: Cutoff,
) -> Outcome
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use skylet_spdy::HEADER_STREAM_TYPE;
    let mut conn = skylet_spdy::Connection::with_config(io, config);
    let (format, resize) = remotecommand::spdy_behaviour(protocol);
    let mut wanted: Vec<(&'static str, Option<skylet_spdy::Stream>)> = vec![("error", None)];
    for (name, on) in [
        ("stdin", opts.stdin),
        ("stdout", opts.stdout),
        ("stderr", opts.stderr),
        ("resize", opts.tty && resize),
    ] {
        if on {
            wanted.push((name, None));
        }
    }
    let collect = async {
        while wanted.iter().any(|(_, s)| s.is_none()) {
            let stream = conn.accept().await?;
            let kind = stream
                .header(HEADER_STREAM_TYPE)
                .unwrap_or_default()
                .to_owned();
            match wanted.iter_mut().find(|(name, _)| *name == kind) {
                Some((_, slot @ None)) => *slot = Some(stream),
                _ => tracing::debug!(stream_type = %kind, "unexpected stream ignored"),
            }
        }
        Some(())
    };
    match tokio::time::timeout(remotecommand::STREAM_CREATION_TIMEOUT, collect).await {
        Ok(Some(())) => {}
        Ok(None) => {
            tracing::debug!("connection closed before the client opened its streams");
            return None;
        }
        Err(_) => {
            tracing::info!("timed out waiting for the client to create streams");
            let _ = conn.close().await;
            return None;
        }
    }
    let mut take = |name: &str| {
        wanted
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, s)| s.take())
            .map(skylet_spdy::Stream::into_split)
    };
    // The send halves of stdin and resize stay open until the end: a FIN on
    // stdin makes client-go close its stdin.
    let mut keep = Vec::new();
    let mut read_half = |name: &str| {
        take(name).map(|(rx, tx)| {
            keep.push(tx);
            Box::new(rx) as remotecommand::ClientRead
        })
    };
    let stdin = read_half("stdin");
    let resize = read_half("resize");
    let mut write_half =
        |name: &str| take(name).map(|(_, tx)| Box::new(tx) as remotecommand::ClientWrite);
    let stdout = write_half("stdout");
    let stderr = write_half("stderr");
    let error = write_half("error")?;
    let client = Client {
        stdin,
        stdout,
        stderr,
        resize,
        error,
        format,
    };
    let outcome =
        remotecommand::run(started, client, &opts.command, ended(conn.closed(), cutoff)).await;
    drop(keep);
    let _ = conn.close().await;
    outcome
}

/// exec/attach over WebSocket channels.
async fn serve_websocket<S>(
    io: S,
    protocol: &'static str,
    started: remotecommand::Started,
    opts: Options,
    cutoff: Cutoff,
) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let ws = websocket::accept(io).await;
    let (framing, format) = remotecommand::ws_behaviour(protocol);
    let (resize_in, resize_out) = if opts.tty {
        let (w, r) = tokio::io::duplex(4096);
        (
            Some(Box::new(w) as websocket::Input),
            Some(Box::new(r) as remotecommand::ClientRead),
        )
    } else {
        (None, None)
    };
    // Stdin goes through the session (not straight into the backend's
    // pipe) so that it waits for a terminal's first size.
    let (stdin_in, stdin_out) = if opts.stdin {
        let (w, r) = tokio::io::duplex(remotecommand::PIPE);
        (
            Some(Box::new(w) as websocket::Input),
            Some(Box::new(r) as remotecommand::ClientRead),
        )
    } else {
        (None, None)
    };
    let mux = websocket::Mux::new(ws, framing, vec![stdin_in, None, None, None, resize_in]);
    // Tell the client the connection is ready: an empty message on the
    // lowest channel it will read, as the kubelet does.
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    mux.send(first, &[]).await;
    let writer = |on: bool, channel: u8| {
        on.then(|| Box::new(mux.writer(channel)) as remotecommand::ClientWrite)
    };
    let client = Client {
        stdin: stdin_out,
        stdout: writer(opts.stdout, 1),
        stderr: writer(opts.stderr, 2),
        resize: resize_out,
        error: Box::new(mux.writer(3)),
        format,
    };
    let outcome =
        remotecommand::run(started, client, &opts.command, ended(mux.closed(), cutoff)).await;
    mux.close().await;
    outcome
}

/// `/portForward/{ns}/{pod}[/{uid}]`
pub(crate) async fn port_forward<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
    Path(rest): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    mut req: Request,
) -> Response {
    let result = async {
        let target = parse_target(&rest, false)?;
        let pod = find_pod(&state, &target)?;
        let transport =
            Transport::negotiate(&req, portforward::SPDY_PROTOCOLS, portforward::WS_PROTOCOLS)?;
        let ports = match &transport {
            Transport::WebSocket(ws) if ws.protocol != portforward::TUNNEL_PROTOCOL => {
                let ports = portforward::parse_ports(
                    query
                        .iter()
                        .filter(|(k, _)| k == "port")
                        .map(|(_, v)| v.as_str()),
                )
                .map_err(ApiError::bad_request)?;
                if ports.is_empty() || ports.len() > portforward::MAX_WS_PORTS {
                    let msg = format!(
                        "query parameter \"port\" must list 1 to {} ports",
                        portforward::MAX_WS_PORTS
                    );
                    return Err(ApiError::bad_request(msg).into());
                }
                ports
            }
            _ => Vec::new(),
        };
        let upgrade = on_upgrade(&mut req)?;
        Ok::<_, Refusal>((PodRef::of(&pod), transport, ports, upgrade))
    }
    .await;
    let (pod, transport, ports, upgrade) = match result {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    let (transport_name, protocol) = transport.describe();
    let span = tracing::info_span!(
        "port_forward",
        transport = transport_name,
        protocol,
        pod.namespace = %pod.namespace,
        pod.name = %pod.name,
    );
    let response = transport.switching();
    tokio::spawn(
        async move {
            let io = match upgrade.await {
                Ok(io) => Tracked::new(TokioIo::new(io)),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let cutoff = Cutoff::new(io.activity(), &state.limits);
            match transport {
                Transport::Spdy(_) => portforward::serve_spdy(state, pod, io, cutoff).await,
                Transport::WebSocket(ws) if ws.protocol == portforward::TUNNEL_PROTOCOL => {
                    let tunnel = websocket::WsBytes::new(websocket::accept(io).await);
                    portforward::serve_spdy(state, pod, tunnel, cutoff).await;
                }
                Transport::WebSocket(ws) => {
                    portforward::serve_websocket(state, pod, io, ws.protocol, ports, cutoff).await
                }
            }
            tracing::info!("port-forward connection ended");
        }
        .instrument(span),
    );
    response
}

#[cfg(test)]
mod tests;
