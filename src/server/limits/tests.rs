//! Every limit and timeout of the kubelet API, in process: through the
//! router with `oneshot` where the router enforces it, and with real
//! sockets on loopback (plain HTTP, the server's own connection handling)
//! with small configured values otherwise. Regression tests of issue #15.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, http::Request};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use skylet_provider::{
    BackendPod, Deleted, LogOptions, LogStream, Node, PodRef, Provider, ResolvedPod,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::server::fuzzing::{as_apiserver, mock_state, serve_plain, state_with};

const WAIT: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The router over the simulated backend, with `limits`, every request
/// from kube-apiserver.
async fn app(limits: Limits) -> Router {
    as_apiserver(crate::server::router(mock_state(limits).await))
}

/// `app(limits)` served on loopback until the test ends.
async fn serve(limits: Limits) -> (SocketAddr, CancellationToken) {
    let shared = Arc::new(limits.clone());
    let stop = CancellationToken::new();
    let addr = serve_plain(app(limits).await, shared, stop.clone()).await;
    (addr, stop)
}

async fn status(app: &Router, req: Request<Body>) -> StatusCode {
    app.clone().oneshot(req).await.unwrap().status()
}

/// Writes `request` on a new connection and returns what comes back until
/// the server closes it or `WAIT` passes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_until_closed(&mut tcp).await
}

async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closes `tcp` (end of file or reset) within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0; 4096];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn headers_over_the_limit_are_431_in_the_router() {
    let app = app(Limits::default()).await;
    let big = "x".repeat(70 << 10);
    let req = Request::get("/healthz")
        .header("x-big", big.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        status(&app, req).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let req = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(status(&app, req).await, StatusCode::OK);
}

#[tokio::test]
async fn declared_bodies_over_the_limit_are_413_in_the_router() {
    let app = app(Limits {
        max_body_bytes: 1000,
        ..Limits::default()
    })
    .await;
    let req = Request::post("/exec/ns/p/main?command=ls&output=1")
        .header(header::CONTENT_LENGTH, "1001")
        .body(Body::from(vec![b'x'; 1001]))
        .unwrap();
    assert_eq!(status(&app, req).await, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::get("/pods")
        .header(header::CONTENT_LENGTH, "1000")
        .body(Body::from(vec![b'x'; 1000]))
        .unwrap();
    assert_eq!(status(&app, req).await, StatusCode::OK);
}

#[tokio::test]
async fn malformed_requests_are_4xx() {
    let app = app(Limits::default()).await;
    let ws = |uri: &str| {
        Request::get(uri)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "v4.channel.k8s.io")
            .body(Body::empty())
            .unwrap()
    };
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let cases = [
        (get("/containerLogs/ns/p/main?tailLines=many"), 400),
        (get("/containerLogs/ns/p/main?sinceTime=%ff"), 400),
        (get("/containerLogs/ns/p/main?follow=%zz"), 400),
        (get("/containerLogs/ns/p/%ff"), 400),
        (get("/containerLogs/ns/p"), 404),
        (get("/containerLogs/ns/p/main/extra"), 404),
        (get("/exec/ns/p/main?command=ls&output=1&tty=yes"), 400),
        (get("/exec//p/main?command=ls&output=1"), 404),
        (get("/exec/ns/p/main?command=%ff&output=1"), 400),
        (ws("/portForward/ns/p?port=99999"), 400),
        (ws("/portForward/ns/p?port=0"), 400),
        (ws("/portForward/ns/p?port=,"), 400),
        (
            ws(&format!("/portForward/ns/p?port={}", "1,".repeat(65))),
            400,
        ),
        (ws("/exec/ns/p/main?command=ls&output=1"), 400),
        (get("/stats/summary?only_cpu_and_memory=%"), 200),
        (get("/../../etc/passwd"), 404),
        (Request::put("/pods").body(Body::from("{}")).unwrap(), 405),
    ];
    for (req, want) in cases {
        let uri = req.uri().clone();
        let got = status(&app, req).await.as_u16();
        if want == 200 {
            assert!(got < 500, "{uri}: {got}");
        } else {
            assert_eq!(got, want, "{uri}");
        }
    }
}

#[tokio::test]
async fn oversized_headers_are_431_on_the_wire() {
    let (addr, _stop) = serve(Limits {
        max_header_bytes: 16 << 10,
        max_headers: 20,
        ..Limits::default()
    })
    .await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "x".repeat(20 << 10)
    );
    let answer = exchange(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_on_the_wire() {
    let (addr, _stop) = serve(Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    // the headers only: the answer comes before the body is sent
    let answer = exchange(
        addr,
        b"POST /exec/ns/p/main?command=ls&output=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("exceeds the limit of 4096 bytes"),
        "{answer}"
    );
}

#[tokio::test]
async fn malformed_http_is_400_on_the_wire() {
    let (addr, _stop) = serve(Limits::default()).await;
    for request in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not TLS here\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ] {
        let answer = exchange(addr, request).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let (addr, _stop) = serve(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        {
            let mut req = format!("ws://{addr}/exec/ns/p/main?command=cat&input=1&output=1")
                .into_client_request()
                .unwrap();
            req.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                "v5.channel.k8s.io".parse().unwrap(),
            );
            req
        },
        TcpStream::connect(addr).await.unwrap(),
    )
    .await
    .unwrap();
    // an idle connection and an upgraded exec session hold both permits
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut third, ms(2000)).await,
        "a third connection is closed"
    );
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the first one is served");
    // once the session ends, its permit is back
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no permit came back: {answer:?}");
        tokio::time::sleep(ms(50)).await;
    }
}

#[tokio::test]
async fn a_slow_client_is_cut_off() {
    let (addr, _stop) = serve(Limits {
        header_read_timeout: ms(400),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    // a byte every 100 ms: never idle, never done
    let mut cut = false;
    for _ in 0..40 {
        tokio::time::sleep(ms(100)).await;
        if tcp.write_all(b"a").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(ms(1), tcp.read(&mut buf)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickling client was not cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= ms(350) && elapsed < ms(2000),
        "cut after {elapsed:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_not_one_with_a_request_in_flight() {
    let (addr, _stop) = serve(Limits {
        // the connection watchdog alone (HTTP/1.1's header timeout is off)
        header_read_timeout: Duration::ZERO,
        idle_timeout: ms(300),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut tcp, ms(3000)).await, "idle, not closed");
    assert!(started.elapsed() >= ms(250), "{:?}", started.elapsed());

    // a log that follows keeps its connection open past the idle timeout
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /containerLogs/ns/p/main?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        !closed_within(&mut tcp, ms(900)).await,
        "closed with a request in flight"
    );
}

/// A backend whose logs never end, counting the streams it has open.
#[derive(Default)]
struct Endless {
    open: Arc<AtomicUsize>,
}

/// Counts one open log stream until dropped.
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Provider for Endless {
    fn name(&self) -> &'static str {
        "endless"
    }
    fn configure_node(&self, _: &mut Node) {}
    async fn ping(&self) -> skylet_provider::Result<()> {
        Ok(())
    }
    async fn create_pod(&self, _: &ResolvedPod) -> skylet_provider::Result<()> {
        Ok(())
    }
    async fn delete_pod(&self, _: &PodRef, _: Duration) -> skylet_provider::Result<Deleted> {
        Ok(Deleted::Gone)
    }
    async fn list_pods(&self) -> skylet_provider::Result<Vec<BackendPod>> {
        Ok(vec![])
    }
    async fn logs(&self, _: &PodRef, _: &str, _: LogOptions) -> skylet_provider::Result<LogStream> {
        self.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenStream(Arc::clone(&self.open));
        let first = futures::stream::once(async { Ok(Bytes::from_static(b"line 1\n")) });
        let rest = futures::stream::pending().map(move |()| {
            let _ = &guard;
            Ok(Bytes::new())
        });
        Ok(first.chain(rest).boxed())
    }
}

/// An endless log served on loopback with `limits`; the count of its
/// open streams.
async fn serve_endless(limits: Limits) -> (SocketAddr, Arc<AtomicUsize>, CancellationToken) {
    let provider = Endless::default();
    let open = Arc::clone(&provider.open);
    let state = state_with(provider, limits).await;
    let stop = CancellationToken::new();
    let addr = serve_plain(
        as_apiserver(crate::server::router(Arc::clone(&state))),
        Arc::clone(&state.limits),
        stop.clone(),
    )
    .await;
    (addr, open, stop)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(ms(20)).await;
    }
}

#[tokio::test]
async fn a_following_log_ends_when_the_client_leaves() {
    let (addr, open, _stop) = serve_endless(Limits::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /containerLogs/ns/p/main?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("line 1") {
        let mut buf = [0; 1024];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(open.load(Ordering::SeqCst), 1);
    drop(tcp);
    wait_for("the log stream is dropped", || {
        open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_response_is_cut_at_the_request_timeout() {
    let (addr, open, _stop) = serve_endless(Limits {
        request_timeout: ms(500),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /containerLogs/ns/p/main?follow=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut tcp).await;
    let elapsed = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("line 1"), "{answer}");
    // aborted: no last chunk
    assert!(!answer.ends_with("0\r\n\r\n"), "{answer:?}");
    assert!(elapsed >= ms(400) && elapsed < ms(5000), "{elapsed:?}");
    wait_for("the log stream is dropped", || {
        open.load(Ordering::SeqCst) == 0
    })
    .await;
}

async fn ws_exec(addr: SocketAddr, query: &str) -> Ws {
    let mut req = format!("ws://{addr}/exec/ns/p/main?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap().0
}

/// Reads `ws` until the server closes it; true if within `within`.
async fn ws_closed_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn an_idle_exec_session_is_closed_after_the_idle_timeout() {
    let (addr, _stop) = serve(Limits {
        stream_idle_timeout: ms(400),
        ..Limits::default()
    })
    .await;
    // typing every 150 ms keeps it open
    let mut ws = ws_exec(addr, "command=cat&input=1&output=1").await;
    for _ in 0..8 {
        tokio::time::sleep(ms(150)).await;
        ws.send(Message::Binary(Bytes::from_static(b"\x00.")))
            .await
            .unwrap();
    }
    let started = Instant::now();
    assert!(
        ws_closed_within(&mut ws, ms(5000)).await,
        "an idle session stays open"
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= ms(300), "closed while typing: {elapsed:?}");
}

#[tokio::test]
async fn an_idle_spdy_session_gets_goaway() {
    use skylet_spdy::frame::{Frame, FrameDecoder, FrameEncoder, Headers};
    let (addr, _stop) = serve(Limits {
        stream_idle_timeout: ms(300),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /exec/ns/p/main?command=cat&input=1&output=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
        .await
        .unwrap();
    let mut enc = FrameEncoder::new();
    let mut out = bytes::BytesMut::new();
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
        let mut headers = Headers::new();
        headers.insert("streamtype", kind);
        enc.encode(&Frame::open(id, headers), &mut out).unwrap();
    }
    tcp.write_all(&out).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
    let head = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let mut buf = bytes::BytesMut::from(&answer[head + 4..]);
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut buf) {
        frames.push(f);
    }
    assert!(
        matches!(frames.last(), Some(Frame::GoAway { .. })),
        "{frames:?}"
    );
    assert!(elapsed >= ms(250) && elapsed < ms(5000), "{elapsed:?}");
}

#[tokio::test]
async fn a_busy_session_ends_at_the_maximum_duration() {
    let (addr, _stop) = serve(Limits {
        stream_idle_timeout: ms(300),
        stream_max_duration: ms(1000),
        ..Limits::default()
    })
    .await;
    let mut ws = ws_exec(addr, "command=cat&input=1&output=1").await;
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < WAIT {
        if ws
            .send(Message::Binary(Bytes::from_static(b"\x00.")))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        if ws_closed_within(&mut ws, ms(100)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "never closed");
    let elapsed = started.elapsed();
    assert!(elapsed >= ms(900) && elapsed < ms(5000), "{elapsed:?}");
}

#[tokio::test]
async fn spdy_streams_over_the_exec_limit_are_refused() {
    use skylet_spdy::frame::{Frame, FrameDecoder, FrameEncoder, Headers, RstStatus};
    let (addr, _stop) = serve(Limits::default()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /exec/ns/p/main?command=cat&input=1&output=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
        .await
        .unwrap();
    // 40 streams at once: 16 are let through (the burst), the rest refused
    let mut enc = FrameEncoder::new();
    let mut out = bytes::BytesMut::new();
    for i in 0..40u32 {
        let mut headers = Headers::new();
        headers.insert("streamtype", if i == 0 { "error" } else { "junk" });
        enc.encode(&Frame::open(2 * i + 1, headers), &mut out)
            .unwrap();
    }
    tcp.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut head_done = false;
    let mut dec = FrameDecoder::new();
    let mut refused = 0;
    let deadline = Instant::now() + WAIT;
    while refused < 24 {
        assert!(Instant::now() < deadline, "{refused} refused");
        let n = tokio::time::timeout(WAIT, tcp.read_buf(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed after {refused} refused");
        if !head_done {
            let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let _ = buf.split_to(i + 4);
            head_done = true;
        }
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            if matches!(
                f,
                Frame::RstStream {
                    status: RstStatus::REFUSED_STREAM,
                    ..
                }
            ) {
                refused += 1;
            }
        }
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let l = Limits::default();
    assert_eq!(l.max_header_bytes, 64 << 10);
    assert_eq!(l.max_body_bytes, 1 << 20);
    assert_eq!(l.max_connections, 1024);
    assert_eq!(l.max_http2_streams, 250);
    assert_eq!(l.header_read_timeout, Duration::from_secs(30));
    assert_eq!(l.idle_timeout, Duration::from_secs(90));
    assert_eq!(l.stream_idle_timeout, Duration::from_secs(4 * 3600));
    assert_eq!(l.stream_max_duration, Duration::from_secs(4 * 3600));
    assert_eq!(l.spdy_remote_command.max_streams, 16);
    assert_eq!(l.spdy_port_forward.max_streams, 512);
}

/// Frames of an HTTP/2 connection, (type, flags, stream, payload), up to
/// one of type `until_type` (0xff: one frame), or all until it closes.
async fn h2_frames(tcp: &mut TcpStream, until_type: u8) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if tokio::time::timeout(WAIT, tcp.read_exact(&mut head))
            .await
            .unwrap()
            .is_err()
        {
            return frames;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).await.unwrap();
        let kind = head[3];
        frames.push((kind, head[4], stream, payload));
        if kind == until_type || until_type == 0xff {
            return frames;
        }
    }
}

#[tokio::test]
async fn http2_advertises_its_limits_and_an_idle_connection_gets_goaway() {
    let (addr, _stop) = serve(Limits {
        max_http2_streams: 7,
        max_header_bytes: 20_000,
        idle_timeout: ms(300),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let frames = h2_frames(&mut tcp, 4).await;
    let (_, _, _, settings) = frames.last().unwrap();
    let settings: Vec<(u16, u32)> = settings
        .chunks(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    assert!(settings.contains(&(6, 20_000)), "{settings:?}");
    // acknowledge, then stay idle: GOAWAY, then the end
    tcp.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let frames = h2_frames(&mut tcp, 7).await;
    assert_eq!(frames.last().map(|f| f.0), Some(7), "{frames:?}");
    assert!(started.elapsed() >= ms(250), "{:?}", started.elapsed());
    // hyper confirms with a PING that nothing is in flight, then closes
    let frames = h2_frames(&mut tcp, 6).await;
    let (_, _, _, ping) = frames.last().unwrap();
    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
    ack.extend_from_slice(ping);
    tcp.write_all(&ack).await.unwrap();
    assert!(closed_within(&mut tcp, ms(3000)).await);
}

#[tokio::test]
async fn http2_streams_over_the_limit_are_refused() {
    let (addr, _stop) = serve(Limits {
        max_http2_streams: 3,
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    h2_frames(&mut tcp, 4).await;
    tcp.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
        .await
        .unwrap();
    // five logs that follow (HPACK: GET, http, literal :path, :authority)
    let path = b"/containerLogs/ns/p/main?follow=true";
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path);
    block.extend_from_slice(b"\x01\x01x");
    for stream in [1u32, 3, 5, 7, 9] {
        let len = u32::try_from(block.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], 1, 0x05];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(&block);
        tcp.write_all(&frame).await.unwrap();
    }
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    while refused.len() + answered.len() < 5 {
        let frames = h2_frames(&mut tcp, 0xff).await;
        assert!(!frames.is_empty(), "closed: {refused:?} {answered:?}");
        for (kind, _, stream, payload) in frames {
            match kind {
                // RST_STREAM REFUSED_STREAM
                3 if payload == [0, 0, 0, 7] => refused.push(stream),
                // HEADERS: an answer
                1 => answered.push(stream),
                _ => {}
            }
        }
    }
    assert_eq!(answered, [1, 3, 5]);
    assert_eq!(refused, [7, 9]);
}
