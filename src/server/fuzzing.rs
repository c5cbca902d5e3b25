//! The kubelet API as the fuzz targets in the workspace's `fuzz/`
//! directory drive it, and the fixtures the tests of the limits share: the
//! router over the simulated backend with one pod, `ns/p` (container
//! `main`, UID [`UID`]), and an apiserver stand-in that allows every access
//! review. Not an API: hidden from the docs, used by `fuzz/` and tests.
//!
//! Each entry point takes the fuzzer's bytes, runs them against a fresh
//! server on a runtime of its own, and panics on a bug: a handler that
//! panics, a 500 for a request the simulated backend could answer, a
//! connection or session that is still held [`BUDGET`] after its client
//! left. The seed corpus in `fuzz/corpus/<target>/` is replayed by this
//! module's tests on every `cargo test`.
//!
//! | target | input |
//! |---|---|
//! | `router` ([`router`]) | a flags byte, then a request: `PATH?QUERY`, header lines, an empty line, the body; or, with the flags' top bit, the raw bytes of an HTTP connection |
//! | `channels` ([`channels`]) | a mode byte choosing an exec, attach or port-forward upgrade (WebSocket channel protocols, SPDY, SPDY in a WebSocket), then the frames the client sends after it, each as a few bytes of header choices and a payload |
//! | `spdy_frames` (`skylet_spdy::fuzzing::decode`) | bytes for the SPDY frame decoder |

#![allow(clippy::expect_used)]

use std::{
    convert::Infallible, future::Future, net::SocketAddr, sync::Arc, task::Poll, time::Duration,
};

use axum::{
    Extension, Router,
    body::Body,
    http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri},
};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::store::Writer, watcher};
use serde_json::json;
use skylet_mock::MockProvider;
use skylet_provider::{Provider, ResolvedPod};

use crate::pods::PodRecord;
use skylet_spdy::frame::{Frame, FrameEncoder, GoAwayStatus, Headers, RstStatus, Setting};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Limits, State, auth::PeerCert, conn};

/// The UID of pod `ns/p`.
pub const UID: &str = "1111-2222";

/// How long a server may take to let go of a connection after its client
/// left (generous: the longest wait that applies is 10 s for the last
/// output of an exec to drain, which a reading client never needs).
pub const BUDGET: Duration = Duration::from_secs(20);

/// An apiserver that allows every SubjectAccessReview and TokenReview.
pub fn allow_all() -> kube::Client {
    let svc = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        let body = if req.uri().path().contains("tokenreviews") {
            json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {}, "status": {"authenticated": true, "user": {"username": "fuzz"}}
            })
        } else {
            json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {}, "status": {"allowed": true}
            })
        };
        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(
            body.to_string(),
        ))))
    });
    kube::Client::new(svc, "default")
}

/// Pod `ns/p` with container `main`.
pub fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": UID},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .expect("a valid pod")
}

/// Server state over the simulated backend, with pod `ns/p` bound to the
/// node and running.
pub async fn mock_state(limits: Limits) -> Arc<State<MockProvider>> {
    let provider = MockProvider::new(
        skylet_mock::Config::default(),
        skylet_provider::Sink::discard(),
    );
    state_with(provider, limits).await
}

/// Server state over `provider`, with pod `ns/p` bound to the node and
/// created in the backend.
pub async fn state_with<P: Provider>(provider: P, limits: Limits) -> Arc<State<P>> {
    provider
        .create_pod(&ResolvedPod::bare(pod()))
        .await
        .expect("the backend takes the pod");
    let mut writer = Writer::<PodRecord>::default();
    writer.apply_watcher_event(&watcher::Event::Apply(PodRecord::whole(pod())));
    State::with_limits(
        allow_all(),
        Arc::new(provider),
        writer.as_reader(),
        server_config(),
        crate::metrics::NodeMetrics::detached("fuzz"),
        limits,
    )
}

/// The kubelet API settings of a default configuration (parsed once: it
/// looks for the node's address).
fn server_config() -> crate::config::ServerConfig {
    static CONFIG: std::sync::OnceLock<crate::config::ServerConfig> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = crate::config::Config::parse_from(["skylet"]).expect("default config");
            config.backends.remove(0).server
        })
        .clone()
}

/// `router` with every request coming from kube-apiserver's client
/// certificate.
pub fn as_apiserver(router: Router) -> Router {
    let who = crate::server::Identity {
        user: "kube-apiserver".into(),
        groups: vec![],
        uid: None,
    };
    router.layer(Extension(PeerCert(Some(who))))
}

/// Serves `app` over plain HTTP on a loopback port with the connection
/// limits of `limits`, until `stop`.
pub async fn serve_plain(app: Router, limits: Arc<Limits>, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(conn::serve(listener, None, app, limits, stop));
    addr
}

/// Runs `f` on a runtime of its own; panics if it takes over [`BUDGET`].
fn run(f: impl Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        tokio::time::timeout(BUDGET, f)
            .await
            .expect("the server let go of the connection in time");
    });
}

/// The `router` target: one request through the router with `oneshot`
/// (or a whole connection, see the module docs).
///
/// The flags byte: bits 0-1 the method (GET, POST, PUT, DELETE), bit 2 a
/// request from kube-apiserver (else unauthenticated), bit 3 an upgradeable
/// request (its upgrade then fails), bit 7 raw connection bytes instead.
///
/// # Panics
/// On a 500, or when the router panics.
pub fn router(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    if flags & 0x80 != 0 {
        connection(rest);
        return;
    }
    let Some(req) = request(flags, rest) else {
        return;
    };
    let described = format!("{} {}", req.method(), req.uri());
    run(async move {
        let state = mock_state(Limits::default()).await;
        let mut app = super::router(state);
        if flags & 4 != 0 {
            app = as_apiserver(app);
        }
        let resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
        assert_ne!(
            resp.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{described}"
        );
        // what the body has now (a log that follows never ends)
        let mut body = resp.into_body();
        for _ in 0..64 {
            match futures::poll!(body.frame()) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(_) => break,
                Poll::Pending => tokio::task::yield_now().await,
            }
        }
    });
}

/// A request from the `router` target's bytes, if they make one.
fn request(flags: u8, bytes: &[u8]) -> Option<Request<Body>> {
    let method =
        [Method::GET, Method::POST, Method::PUT, Method::DELETE][usize::from(flags & 3)].clone();
    let mut lines = bytes.splitn(2, |b| *b == b'\n');
    let target = lines.next()?;
    let rest = lines.next().unwrap_or_default();
    let uri = Uri::try_from(target).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (rest.get(..i)?, rest.get(i + 2..)?),
        None => (rest, &[][..]),
    };
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line.get(..colon)?);
        let value = HeaderValue::from_bytes(line.get(colon + 1..)?.trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            builder = builder.header(name, value);
        }
    }
    let mut req = builder.body(Body::from(body.to_vec())).ok()?;
    if flags & 8 != 0 {
        req.extensions_mut()
            .insert(hyper::upgrade::on(http::Request::new(Body::empty())));
    }
    Some(req)
}

/// Raw bytes from a client on one HTTP connection (as kube-apiserver):
/// written, the client's side shut, the answer read to the end; then the
/// connection's permit must come back (every session it started ended).
///
/// # Panics
/// When the server does not let go of the connection within [`BUDGET`].
pub fn connection(input: &[u8]) {
    let _ = exchange(input);
}

/// [`connection`], returning the first 64 KiB the server wrote.
fn exchange(input: &[u8]) -> Vec<u8> {
    let input = input.to_vec();
    let output = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = Arc::clone(&output);
    run(async move {
        let state = mock_state(Limits::default()).await;
        let app = as_apiserver(super::router(Arc::clone(&state)));
        let (client, server) = tokio::io::duplex(64 << 10);
        let permits = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&permits)
            .try_acquire_owned()
            .expect("a free permit");
        let limits = Arc::clone(&state.limits);
        let server = tokio::spawn(async move {
            let stop = CancellationToken::new();
            conn::serve_connection(server, permit, app, &limits, &stop).await;
        });
        let answer = talk(client, &input).await;
        *out.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = answer;
        server.await.expect("the connection task");
        let _ = permits.acquire().await;
    });
    std::mem::take(
        &mut *output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Writes `input`, shuts the writing side, reads until the server closes;
/// returns the first 64 KiB read.
async fn talk(client: DuplexStream, input: &[u8]) -> Vec<u8> {
    const KEEP: usize = 64 << 10;
    let (mut r, mut w) = tokio::io::split(client);
    let write = async {
        let _ = w.write_all(input).await;
        let _ = w.shutdown().await;
    };
    let read = async {
        let mut kept = Vec::new();
        let mut buf = vec![0; 16 << 10];
        while let Ok(n @ 1..) = r.read(&mut buf).await {
            let room = KEEP.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(buf.get(..room).unwrap_or_default());
        }
        kept
    };
    tokio::join!(write, read).1
}

/// WebSocket upgrades of the `channels` target: path and query, protocol.
const WS_REQUESTS: &[(&str, &str)] = &[
    (
        "/exec/ns/p/main?command=sh&input=1&output=1&error=1",
        "v5.channel.k8s.io",
    ),
    (
        "/exec/ns/p/main?command=cat&input=1&output=1&tty=1",
        "v4.channel.k8s.io",
    ),
    (
        "/exec/ns/p/main?command=sh&input=1&output=1&error=1",
        "v4.base64.channel.k8s.io",
    ),
    ("/attach/ns/p/main?input=1&output=1&tty=1", "channel.k8s.io"),
    (
        "/exec/ns/p/main?command=cat&input=1&error=1",
        "base64.channel.k8s.io",
    ),
    ("/portForward/ns/p?port=80,1", "v4.channel.k8s.io"),
    ("/portForward/ns/p?port=80", "v4.base64.channel.k8s.io"),
    ("/portForward/ns/p", "SPDY/3.1+portforward.k8s.io"),
];

/// SPDY upgrades of the `channels` target: path and query, protocol.
const SPDY_REQUESTS: &[(&str, &str)] = &[
    (
        "/exec/ns/p/main?command=sh&input=1&output=1&error=1",
        "v4.channel.k8s.io",
    ),
    (
        "/exec/ns/p/main?command=cat&input=1&output=1&tty=1",
        "v5.channel.k8s.io",
    ),
    ("/attach/ns/p/main?input=1&output=1", "v2.channel.k8s.io"),
    ("/portForward/ns/p", "portforward.k8s.io"),
];

/// The `channels` target: an exec, attach or port-forward session with
/// the frames the fuzzer chose, through a whole connection.
///
/// The mode byte: bit 7 SPDY (bits 0-1 pick one of [`SPDY_REQUESTS`]), else
/// WebSocket (bits 0-2 pick one of [`WS_REQUESTS`]). The rest are frames:
/// see [`ws_frames`] and [`spdy_frames`]; SPDY in a WebSocket takes SPDY
/// frames and wraps them in binary messages.
///
/// # Panics
/// As [`connection`].
pub fn channels(input: &[u8]) {
    if let Some(bytes) = channels_request(input) {
        connection(&bytes);
    }
}

/// The bytes of the `channels` target's connection: the upgrade request,
/// then the frames.
fn channels_request(input: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = input.split_first()?;
    let mut bytes = Vec::new();
    if mode & 0x80 != 0 {
        let (path, protocol) = SPDY_REQUESTS[usize::from(mode & 3)];
        bytes.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(&spdy_frames(rest));
    } else {
        let (path, protocol) = WS_REQUESTS[usize::from(mode & 7)];
        bytes.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            )
            .as_bytes(),
        );
        if protocol.starts_with("SPDY") {
            let spdy = spdy_frames(rest);
            for chunk in spdy.chunks(1000) {
                ws_frame(&mut bytes, 0x82, true, chunk);
            }
        } else {
            bytes.extend_from_slice(&ws_frames(rest));
        }
    }
    Some(bytes)
}

/// Client WebSocket frames: each is a byte of FIN, RSV and opcode bits as
/// sent, a byte whose top bit leaves the frame unmasked and whose other
/// bits are the payload length (at most 127), then the payload.
pub fn ws_frames(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [first, len, rest @ ..] = input {
        let n = usize::from(len & 0x7f).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        ws_frame(&mut out, *first, len & 0x80 == 0, payload);
        input = tail;
    }
    out
}

/// One WebSocket frame with header byte `first`, masked if asked.
fn ws_frame(out: &mut Vec<u8>, first: u8, masked: bool, payload: &[u8]) {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    out.push(first);
    let bit = if masked { 0x80 } else { 0 };
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => out.push(bit | u8::try_from(n).unwrap_or(125)),
        Ok(n) => {
            out.push(bit | 126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => {
            out.push(bit | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    } else {
        out.extend_from_slice(payload);
    }
}

/// Stream types a SYN_STREAM of [`spdy_frames`] may carry.
const STREAM_TYPES: &[&str] = &[
    "error", "stdin", "stdout", "stderr", "resize", "data", "", "bogus",
];

/// Client SPDY frames, encoded with one compression context as a real
/// client does. Each starts with an operation byte (its value modulo 8)
/// and takes the next bytes as its fields:
///
/// | op | frame | fields |
/// |---|---|---|
/// | 0 | SYN_STREAM | stream, stream type and FIN, port, request id |
/// | 1 | DATA | stream, FIN, length, payload |
/// | 2 | RST_STREAM | stream, status |
/// | 3 | PING | id |
/// | 4 | GOAWAY | last stream, status |
/// | 5 | SETTINGS, WINDOW_UPDATE or HEADERS | stream, which |
/// | 6 | raw bytes | length, bytes |
/// | 7 | DATA on a resize stream | stream, width, height |
///
/// A stream byte `s` is stream `2s + 1` (a client's ids are odd).
pub fn spdy_frames(mut input: &[u8]) -> Vec<u8> {
    let mut encoder = FrameEncoder::new();
    let mut out = BytesMut::new();
    let id = |s: u8| u32::from(s) * 2 + 1;
    loop {
        let (frame, used) = match input {
            [op, s, t, port, req, ..] if op % 8 == 0 => {
                let mut headers = Headers::new();
                headers.insert("streamtype", STREAM_TYPES[usize::from(t & 7)]);
                if t & 0x10 == 0 {
                    headers.insert("port", port.to_string());
                }
                if t & 0x20 == 0 {
                    headers.insert("requestid", (req % 4).to_string());
                }
                let frame = Frame::SynStream {
                    stream_id: id(*s),
                    associated_stream_id: 0,
                    priority: 0,
                    slot: 0,
                    fin: t & 0x80 != 0,
                    unidirectional: t & 0x40 != 0,
                    headers,
                };
                (Some(frame), 5)
            }
            [op, s, fin, len, rest @ ..] if op % 8 == 1 => {
                let n = usize::from(*len).min(rest.len());
                let frame = Frame::Data {
                    stream_id: id(*s),
                    fin: fin & 1 != 0,
                    data: Bytes::copy_from_slice(rest.get(..n).unwrap_or_default()),
                };
                (Some(frame), 4 + n)
            }
            [op, s, status, ..] if op % 8 == 2 => {
                let frame = Frame::RstStream {
                    stream_id: id(*s),
                    status: RstStatus(u32::from(*status)),
                };
                (Some(frame), 3)
            }
            [op, ping, ..] if op % 8 == 3 => (
                Some(Frame::Ping {
                    id: u32::from(*ping),
                }),
                2,
            ),
            [op, s, status, ..] if op % 8 == 4 => {
                let frame = Frame::GoAway {
                    last_good_stream_id: id(*s),
                    status: GoAwayStatus(u32::from(*status)),
                };
                (Some(frame), 3)
            }
            [op, s, which, ..] if op % 8 == 5 => {
                let frame = match which % 3 {
                    0 => Frame::Settings {
                        clear_settings: false,
                        settings: vec![Setting {
                            flags: 0,
                            id: Setting::INITIAL_WINDOW_SIZE,
                            value: u32::from(*s),
                        }],
                    },
                    1 => Frame::WindowUpdate {
                        stream_id: id(*s),
                        delta_window_size: 1 << 16,
                    },
                    _ => Frame::Headers {
                        stream_id: id(*s),
                        fin: false,
                        headers: Headers::new(),
                    },
                };
                (Some(frame), 3)
            }
            [op, len, rest @ ..] if op % 8 == 6 => {
                let n = usize::from(*len).min(rest.len());
                out.extend_from_slice(rest.get(..n).unwrap_or_default());
                (None, 2 + n)
            }
            [op, s, w, h, ..] if op % 8 == 7 => {
                let json = format!(r#"{{"Width":{w},"Height":{h}}}"#);
                let frame = Frame::Data {
                    stream_id: id(*s),
                    fin: false,
                    data: Bytes::from(json),
                };
                (Some(frame), 4)
            }
            _ => break,
        };
        if let Some(frame) = frame
            && encoder.encode(&frame, &mut out).is_err()
        {
            break;
        }
        input = input.get(used..).unwrap_or_default();
    }
    out.to_vec()
}

#[cfg(test)]
mod tests;
