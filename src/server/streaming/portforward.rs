//! `portForward`: TCP connections to a pod's ports, over SPDY, over
//! WebSocket channels, or over SPDY tunnelled through a WebSocket.
//!
//! # SPDY (`portforward.k8s.io`)
//!
//! One connection carries any number of forwarded TCP connections. For
//! each, the client opens a `streamtype=error` and a `streamtype=data`
//! stream with the same `port` and `requestid` headers (clients without
//! `requestid` get one derived from the stream id, as the kubelet does).
//! Once both are there, [`Provider::port_forward`] opens the connection and
//! bytes are copied both ways; errors are written as plain text to the error
//! stream (`error forwarding port 80 to pod web, uid …: …`), which is then
//! closed. A pair not completed within 30 s gets `timed out waiting for
//! streams` on its error stream. Streams with a missing or invalid `port` or
//! `streamtype` are reset.
//!
//! # WebSocket channels (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, none)
//!
//! The ports come from the `port` query parameter (repeated or
//! comma-separated). Port `i` uses channel `2i` for data (both ways) and
//! `2i+1` for errors; skylet first sends the port number, a little-endian
//! `u16`, on both. One TCP connection per port; the WebSocket closes when
//! all of them ended.
//!
//! # SPDY in a WebSocket (`SPDY/3.1+portforward.k8s.io`)
//!
//! What kube-apiserver 1.36 passes through when the Node declares
//! `ExtendWebSocketsToKubelet` (kubectl's default since 1.31): the binary
//! messages of the WebSocket carry the bytes of a SPDY connection, served as
//! above.

use std::{collections::HashMap, sync::Arc};

use skylet_provider::{PodRef, Provider};
use skylet_spdy::{
    Connection, HEADER_PORT, HEADER_REQUEST_ID, HEADER_STREAM_TYPE, Stream, frame::RstStatus,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    task::JoinSet,
    time::Instant,
};

use super::{remotecommand::STREAM_CREATION_TIMEOUT, watchdog::Cutoff, websocket};
use crate::{metrics::timed, server::State};

/// The SPDY sub-protocol of port-forward.
pub(super) const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// SPDY tunnelled through a WebSocket.
pub(super) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// WebSocket sub-protocols of port-forward (`""`: the client named none).
pub(super) const WS_PROTOCOLS: &[&str] = &[
    TUNNEL_PROTOCOL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "",
];
/// Most ports one WebSocket request may forward (two channels each).
pub(super) const MAX_WS_PORTS: usize = 64;
/// Stream pairs waiting for their second stream, per connection.
const MAX_PENDING_PAIRS: usize = 256;
/// Buffer of a WebSocket data channel's input.
const PIPE: usize = 64 << 10;

/// Parses the `port` query values: comma-separated ports in 1..=65535.
pub(super) fn parse_ports<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            match p.trim().parse::<u16>() {
                Ok(0) => return Err(format!("port {p:?} must be > 0")),
                Ok(n) => ports.push(n),
                Err(_) => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    Ok(ports)
}

/// The two streams of one forwarded connection, as they arrive.
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    deadline: Instant,
}

/// Serves port-forward over a SPDY connection on `io` until it closes or
/// `cutoff` ends it.
pub(super) async fn serve_spdy<P, T>(state: Arc<State<P>>, pod: PodRef, io: T, cutoff: Cutoff)
where
    P: Provider,
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut conn = Connection::with_config(io, state.limits.spdy_port_forward.clone());
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let cutoff = cutoff.wait();
    tokio::pin!(cutoff);
    loop {
        let deadline = pairs.values().map(|p| p.deadline).min();
        let expiry = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            stream = conn.accept() => match stream {
                Some(stream) => {
                    if let Some((port, data, error)) = pair_up(&mut pairs, stream) {
                        forwards.spawn(tracing::Instrument::in_current_span(forward(Arc::clone(&state), pod.clone(), port, data, error)));
                    }
                }
                None => break,
            },
            () = expiry => {
                let now = Instant::now();
                let expired: Vec<String> = pairs.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| id.clone()).collect();
                for id in expired {
                    if let Some(Pair { error: Some(error), .. }) = pairs.remove(&id) {
                        tracing::debug!(request = %id, "timed out waiting for the second stream of a pair");
                        fail(error, &format!("timed out waiting for streams of request {id}")).await;
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            reason = &mut cutoff => {
                tracing::info!(%reason, "closing the port-forward connection");
                forwards.abort_all();
                break;
            }
        }
    }
    // The client sent GOAWAY or left: let the forwards in flight finish.
    while forwards.join_next().await.is_some() {}
    let _ = conn.close().await;
}

/// Files a new stream into its pair; returns the port and both streams once
/// the pair is complete.
fn pair_up(pairs: &mut HashMap<String, Pair>, mut stream: Stream) -> Option<(u16, Stream, Stream)> {
    let port = stream
        .header(HEADER_PORT)
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let kind = stream
        .header(HEADER_STREAM_TYPE)
        .filter(|t| *t == "data" || *t == "error")
        .map(str::to_owned);
    let (Some(port), Some(kind)) = (port, kind) else {
        tracing::debug!(headers = ?stream.headers(), "port-forward stream without a valid port or stream type, reset");
        stream.reset(RstStatus::PROTOCOL_ERROR);
        return None;
    };
    let id = match stream.header(HEADER_REQUEST_ID) {
        Some(id) if !id.is_empty() => id.to_owned(),
        // Clients older than request ids open error then data streams with
        // consecutive odd ids.
        _ if kind == "error" => stream.id().to_string(),
        _ => stream.id().saturating_sub(2).to_string(),
    };
    if !pairs.contains_key(&id) && pairs.len() >= MAX_PENDING_PAIRS {
        tracing::debug!(request = %id, "too many incomplete port-forward requests, stream refused");
        stream.reset(RstStatus::REFUSED_STREAM);
        return None;
    }
    let pair = pairs.entry(id.clone()).or_insert_with(|| Pair {
        data: None,
        error: None,
        deadline: Instant::now() + STREAM_CREATION_TIMEOUT,
    });
    let slot = if kind == "data" {
        &mut pair.data
    } else {
        &mut pair.error
    };
    if slot.is_some() {
        tracing::debug!(request = %id, kind, "duplicate port-forward stream, reset");
        stream.reset(RstStatus::PROTOCOL_ERROR);
        return None;
    }
    *slot = Some(stream);
    if pair.data.is_some() && pair.error.is_some() {
        let Pair {
            data: Some(data),
            error: Some(error),
            ..
        } = pairs.remove(&id)?
        else {
            return None;
        };
        let port = data
            .header(HEADER_PORT)
            .and_then(|p| p.parse().ok())
            .unwrap_or(port);
        return Some((port, data, error));
    }
    None
}

/// Writes `message` to an error stream and ends it.
async fn fail(error: Stream, message: &str) {
    let (_, mut tx) = error.into_split();
    let _ = tx.write_all(message.as_bytes()).await;
    let _ = tx.shutdown().await;
}

/// One forwarded connection over a SPDY stream pair.
async fn forward<P: Provider>(
    state: Arc<State<P>>,
    pod: PodRef,
    port: u16,
    mut data: Stream,
    error: Stream,
) {
    let conn = match timed(
        &state.metrics,
        "port_forward",
        state.provider.port_forward(&pod, port),
    )
    .await
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(port, error = %e, "port-forward failed");
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name, pod.uid
            );
            data.reset(RstStatus::CANCEL);
            fail(error, &message).await;
            return;
        }
    };
    tracing::info!(port, "port-forward connection open");
    let (mut rx, mut tx) = data.into_split();
    let (mut tcp_r, mut tcp_w) = tokio::io::split(conn);
    let up = async {
        let _ = tokio::io::copy(&mut rx, &mut tcp_w).await;
        let _ = tcp_w.shutdown().await;
        rx.is_reset()
    };
    let down = async {
        let _ = tokio::io::copy(&mut tcp_r, &mut tx).await;
        let _ = tx.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut down => {}
        reset = &mut up => {
            // A reset means the client gave up on the connection; a FIN is a
            // half-close and the pod may still answer.
            if !reset {
                down.await;
            }
        }
    }
    tracing::debug!(port, "port-forward connection closed");
    let (_, mut error_tx) = error.into_split();
    let _ = error_tx.shutdown().await;
}

/// Serves port-forward over WebSocket channels, one TCP connection per port.
pub(super) async fn serve_websocket<P, S>(
    state: Arc<State<P>>,
    pod: PodRef,
    io: S,
    protocol: &'static str,
    ports: Vec<u16>,
    cutoff: Cutoff,
) where
    P: Provider,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ws = websocket::accept(io).await;
    let framing = websocket::Framing {
        base64: protocol.contains("base64"),
        close_signal: false,
    };
    let mut inputs: Vec<Option<websocket::Input>> = Vec::with_capacity(ports.len() * 2);
    let mut readers = Vec::with_capacity(ports.len());
    for _ in &ports {
        let (w, r) = tokio::io::duplex(PIPE);
        inputs.push(Some(Box::new(w)));
        inputs.push(None);
        readers.push(r);
    }
    let mux = websocket::Mux::new(ws, framing, inputs);
    let mut forwards = JoinSet::new();
    for (i, (port, reader)) in ports.into_iter().zip(readers).enumerate() {
        let (Ok(data), Ok(err)) = (u8::try_from(2 * i), u8::try_from(2 * i + 1)) else {
            break;
        };
        let le = port.to_le_bytes();
        if !mux.send(data, &le).await || !mux.send(err, &le).await {
            break;
        }
        let (data_w, err_w) = (mux.writer(data), mux.writer(err));
        forwards.spawn(tracing::Instrument::in_current_span(forward_ws(
            Arc::clone(&state),
            pod.clone(),
            port,
            reader,
            data_w,
            err_w,
        )));
    }
    let closed = mux.closed();
    tokio::select! {
        () = async { while forwards.join_next().await.is_some() {} } => {}
        () = closed => forwards.abort_all(),
        reason = cutoff.wait() => {
            tracing::info!(%reason, "closing the port-forward connection");
            forwards.abort_all();
        }
    }
    mux.close().await;
}

/// One forwarded connection over a pair of WebSocket channels.
async fn forward_ws<P: Provider>(
    state: Arc<State<P>>,
    pod: PodRef,
    port: u16,
    mut input: tokio::io::DuplexStream,
    mut data: websocket::ChannelWriter,
    mut error: websocket::ChannelWriter,
) {
    let conn = match timed(
        &state.metrics,
        "port_forward",
        state.provider.port_forward(&pod, port),
    )
    .await
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(port, error = %e, "port-forward failed");
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name, pod.uid
            );
            let _ = error.write_all(message.as_bytes()).await;
            return;
        }
    };
    tracing::info!(port, "port-forward connection open");
    let (mut tcp_r, mut tcp_w) = tokio::io::split(conn);
    let up = async {
        let _ = tokio::io::copy(&mut input, &mut tcp_w).await;
        let _ = tcp_w.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut tcp_r, &mut data).await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut down => {}
        () = &mut up => down.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_the_kubelets() {
        assert_eq!(parse_ports(["80", "81,8080"]).unwrap(), vec![80, 81, 8080]);
        assert!(parse_ports(["0"]).is_err());
        assert!(parse_ports(["http"]).is_err());
        assert!(parse_ports(["70000"]).is_err());
        assert!(parse_ports([""]).is_err());
    }
}
