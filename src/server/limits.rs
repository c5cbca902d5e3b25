//! What one client may make the kubelet API hold, and for how long: every
//! limit and timeout of the server in one place, with the kubelet's own
//! behaviour for comparison (pkg/kubelet/server/server.go: `MaxHeaderBytes`
//! 1 MiB, `ReadTimeout` and `WriteTimeout` 4 h, `IdleTimeout` 90 s; Go's
//! HTTP/2 server: 250 streams; `streamingConnectionIdleTimeout` 4 h).
//!
//! # Limits
//!
//! | limit | default | the kubelet | a client over it gets |
//! |---|---|---|---|
//! | request line and headers (HTTP/1.1), header list (HTTP/2) | 64 KiB | 1 MiB | 431 |
//! | headers per request (HTTP/1.1) | 100 | no limit | 431 |
//! | request body | 1 MiB | no limit | 413 |
//! | connections open at once, upgraded sessions included | 1024 | no limit | the connection accepted and closed at once |
//! | HTTP/2 streams per connection | 250 | 250 | `REFUSED_STREAM` (advertised in SETTINGS) |
//! | SPDY streams per exec/attach connection (5 are used) | 16 | no limit | `RST_STREAM` `REFUSED_STREAM` |
//! | SPDY streams per port-forward connection (2 per forwarded connection) | 512 | no limit | `REFUSED_STREAM` |
//! | new SPDY streams, exec/attach | 16 at once, then 4/s | no limit | `REFUSED_STREAM` |
//! | new SPDY streams, port-forward | 200 at once, then 100/s | no limit | `REFUSED_STREAM` |
//! | SPDY DATA frame | 1 MiB (client-go writes 32 KiB) | 16 MiB | GOAWAY `PROTOCOL_ERROR` |
//! | SPDY receive buffers | 256 KiB per stream, 1 MiB (exec) or 4 MiB (port-forward) per connection | unbuffered | TCP back-pressure |
//! | WebSocket message | 1 MiB | 32 MiB | the connection closed |
//!
//! The kubelet's header limit is 16 times larger than skylet's: the
//! requests kube-apiserver, metrics-server and Prometheus send carry a few
//! KiB of headers (a bearer token, `X-Forwarded-For`), and the limit times
//! the connection limit bounds what unauthenticated clients can make skylet
//! buffer (64 MiB). No kubelet API endpoint reads a request body: one that
//! declares a larger `Content-Length` is refused before authentication; one
//! sent chunked is only limited when read (an unread body is not drained,
//! the connection is closed after the response instead).
//!
//! Memory of one SPDY connection is bounded by its receive budget, one
//! frame being decoded and its 256 KiB write buffer; of one WebSocket by its
//! message limit and bounded queues ([`super::streaming`]).
//!
//! # Timeouts
//!
//! | timeout | default | the kubelet | then |
//! |---|---|---|---|
//! | TLS handshake | 10 s | none (`ReadTimeout`, 4 h) | connection closed |
//! | request line and headers, from the first byte expected (slowloris; also an idle HTTP/1.1 keep-alive connection) | 30 s | `ReadTimeout` 4 h | connection closed |
//! | connection without a request in flight (HTTP/2) | 90 s | `IdleTimeout` 90 s | GOAWAY, closed |
//! | a request, from its start to the end of its response (`/containerLogs?follow=true`) | 4 h | `WriteTimeout` 4 h | 504 before the response, or the response aborted |
//! | exec/attach/port-forward without a byte either way | 4 h (`--streaming-connection-idle-timeout`) | `streamingConnectionIdleTimeout` 4 h | the session closed (GOAWAY, WebSocket close frame) |
//! | exec/attach/port-forward in all | 4 h | `ReadTimeout`/`WriteTimeout` 4 h, which stay on the hijacked connection the kubelet proxies | the session closed |
//! | a peer gone without closing (TCP keep-alive) | probes after 15 s idle, every 15 s, 9 of them | the same (Go's default) | the connection fails, its requests and sessions end |
//!
//! A client that closes its connection ends what it started: a following
//! log stream is dropped (hyper notices the end of the connection while the
//! response waits for data), an exec session's command is stopped.
//! A duration of zero disables a timeout.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State as AxState},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use skylet_spdy::{StreamRate, frame::Limits as FrameLimits};
use tokio::time::Instant;

use super::error::ApiError;

/// The limits and timeouts of one kubelet API server (see the module docs).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line plus headers (HTTP/1.1; at least 8 KiB), or the header
    /// list (HTTP/2).
    pub max_header_bytes: usize,
    /// Headers per HTTP/1.1 request.
    pub max_headers: usize,
    /// Request body.
    pub max_body_bytes: u64,
    /// Connections open at once, upgraded ones included.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_http2_streams: u32,
    /// TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Reading a request's line and headers, from the moment one is
    /// expected (an idle HTTP/1.1 connection is closed after it too).
    pub header_read_timeout: Duration,
    /// A connection without a request in flight.
    pub idle_timeout: Duration,
    /// A request from its start to the end of its response.
    pub request_timeout: Duration,
    /// An upgraded session without a byte either way
    /// (`--streaming-connection-idle-timeout`).
    pub stream_idle_timeout: Duration,
    /// An upgraded session in all.
    pub stream_max_duration: Duration,
    /// TCP keep-alive: idle time before the first probe, and between probes.
    pub tcp_keepalive: Duration,
    /// SPDY connections of exec and attach.
    pub spdy_remote_command: skylet_spdy::Config,
    /// SPDY connections of port-forward.
    pub spdy_port_forward: skylet_spdy::Config,
}

/// The kubelet's `streamingConnectionIdleTimeout` default.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Largest SPDY DATA frame accepted.
const SPDY_MAX_DATA_FRAME: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        let frames = FrameLimits {
            max_data_frame_len: SPDY_MAX_DATA_FRAME,
            max_control_frame_len: 64 << 10,
            max_header_block_len: 64 << 10,
        };
        Self {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            max_http2_streams: 250,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(4 * 3600),
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            stream_max_duration: Duration::from_secs(4 * 3600),
            tcp_keepalive: Duration::from_secs(15),
            spdy_remote_command: skylet_spdy::Config {
                limits: frames,
                connection_receive_buffer: 1 << 20,
                max_streams: 16,
                stream_rate: Some(StreamRate {
                    per_second: 4,
                    burst: 16,
                }),
                ..skylet_spdy::Config::default()
            },
            spdy_port_forward: skylet_spdy::Config {
                limits: frames,
                connection_receive_buffer: 4 << 20,
                max_streams: 512,
                stream_rate: Some(StreamRate {
                    per_second: 100,
                    burst: 200,
                }),
                ..skylet_spdy::Config::default()
            },
        }
    }
}

#[cfg(test)]
mod tests;

/// `d`, or `None` for zero (disabled).
pub(crate) fn enabled(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The request checks and deadline every route gets (the outermost layer
/// of [`super::router`], before authentication): 431 when the headers are
/// over [`Limits::max_header_bytes`] (hyper and h2 refuse most such
/// requests already; this holds for every transport), 413 when the declared
/// body is over [`Limits::max_body_bytes`], a body limited to it, and
/// [`Limits::request_timeout`] from here to the end of the response.
pub(crate) async fn guard<P: skylet_provider::Provider>(
    AxState(state): AxState<Arc<super::State<P>>>,
    req: Request,
    next: Next,
) -> Response {
    let limits = &state.limits;
    // counted as HTTP/2 counts a header list: name, value, 32 bytes each
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + req.uri().to_string().len();
    if header_bytes > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers of {header_bytes} bytes exceed the limit of {} bytes",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > limits.max_body_bytes) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a request body of {len} bytes exceeds the limit of {} bytes",
                limits.max_body_bytes
            ),
        )
        .into_response();
    }
    let max_body = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, max_body)));
    let Some(timeout) = enabled(limits.request_timeout) else {
        return next.run(req).await;
    };
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(resp) => resp.map(|body| {
            Body::new(Deadline {
                body,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
            })
        }),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {timeout:?}"),
        )
        .into_response(),
    }
}

/// A response body that fails once its request's deadline passed, which
/// makes hyper abort the response (HTTP/1.1: the connection is closed
/// without the last chunk; HTTP/2: the stream is reset), so the client sees
/// the response was cut.
struct Deadline {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            tracing::info!("request timeout reached, response cut");
            return Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "request timeout reached",
            )))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
