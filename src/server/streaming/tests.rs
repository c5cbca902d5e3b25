//! In-process tests of the streaming endpoints: the router with the
//! simulated backend and an apiserver stand-in that allows every access
//! review. Errors before the upgrade go through `oneshot`; whole sessions
//! through a plain-HTTP server on loopback, with tokio-tungstenite as the
//! WebSocket client and a minimal SPDY client on `skylet-spdy`'s codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::store::Writer, watcher};
use serde_json::json;
use skylet_mock::MockProvider;
use skylet_provider::{BackendPod, Deleted, Node, PodRef, Provider, ResolvedPod};
use skylet_spdy::frame::{Frame, FrameDecoder, FrameEncoder, Headers};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tower::ServiceExt;

use super::*;
use crate::server::auth::PeerCert;

const WAIT: Duration = Duration::from_secs(10);
const UID: &str = "1111-2222";

/// An apiserver that allows every SubjectAccessReview.
fn allow_all() -> kube::Client {
    let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async move {
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {}, "status": {"allowed": true}
        });
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            Bytes::from(body.to_string()),
        )))
    });
    kube::Client::new(svc, "default")
}

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": UID},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap()
}

/// The kubelet API router over `provider`, with pod `ns/p` (container
/// `main`) bound to the node and running in the backend, and every request
/// coming from an authenticated, allowed client.
async fn router_with<P: Provider>(provider: P) -> Router {
    provider
        .create_pod(&ResolvedPod::bare(pod()))
        .await
        .unwrap();
    let mut writer = Writer::<crate::pods::PodRecord>::default();
    writer.apply_watcher_event(&watcher::Event::Apply(crate::pods::PodRecord::whole(pod())));
    let mut config = crate::config::Config::parse_from(["skylet"]).unwrap();
    let backend = config.backends.remove(0);
    let metrics = crate::metrics::NodeMetrics::detached("test");
    let state = State::new(
        allow_all(),
        Arc::new(provider),
        writer.as_reader(),
        backend.server,
        metrics,
    );
    let who = crate::server::Identity {
        user: "kube-apiserver".into(),
        groups: vec![],
        uid: None,
    };
    crate::server::router(state).layer(Extension(PeerCert(Some(who))))
}

async fn router() -> Router {
    router_with(MockProvider::new(
        skylet_mock::Config::default(),
        skylet_provider::Sink::discard(),
    ))
    .await
}

fn spdy_request(uri: &str, protocol: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Body::empty())
        .unwrap()
}

async fn status_and_body(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn requests_are_checked_before_the_upgrade() {
    let app = router().await;
    let v4 = "v4.channel.k8s.io";
    let cases = [
        (
            "/exec/ns/p/nope?command=ls&output=1",
            v4,
            StatusCode::NOT_FOUND,
            "container \"nope\" is not in pod ns/p",
        ),
        (
            "/exec/ns/ghost/main?command=ls&output=1",
            v4,
            StatusCode::NOT_FOUND,
            "pod ns/ghost is not on this node",
        ),
        (
            "/exec/ns/p/other-uid/main?command=ls&output=1",
            v4,
            StatusCode::NOT_FOUND,
            "with UID other-uid",
        ),
        (
            "/exec/ns/p?command=ls&output=1",
            v4,
            StatusCode::NOT_FOUND,
            "not a valid path",
        ),
        (
            "/exec/ns/p/main?command=ls",
            v4,
            StatusCode::BAD_REQUEST,
            "at least 1 of stdin, stdout, stderr",
        ),
        (
            "/exec/ns/p/main?output=1",
            v4,
            StatusCode::BAD_REQUEST,
            "needs a command",
        ),
        (
            "/exec/ns/p/main?command=ls&output=maybe",
            v4,
            StatusCode::BAD_REQUEST,
            "output=\"maybe\" is not a boolean",
        ),
        (
            "/exec/ns/p/main?command=ls&output=1",
            "v9.channel.k8s.io",
            StatusCode::FORBIDDEN,
            "unable to negotiate protocol",
        ),
        (
            "/attach/ns/p/main?tty=1&error=1",
            v4,
            StatusCode::BAD_REQUEST,
            "at least 1 of stdin",
        ),
        (
            "/portForward/ns/ghost",
            "portforward.k8s.io",
            StatusCode::NOT_FOUND,
            "pod ns/ghost is not on this node",
        ),
        (
            "/portForward/ns/p",
            v4,
            StatusCode::FORBIDDEN,
            "unable to negotiate protocol",
        ),
        // A valid request, but `oneshot` has no connection to upgrade.
        (
            &format!("/exec/ns/p/{UID}/main?command=ls&output=1"),
            v4,
            StatusCode::BAD_REQUEST,
            "cannot be upgraded",
        ),
    ];
    for (uri, protocol, code, message) in cases {
        let (status, body) = status_and_body(&app, spdy_request(uri, protocol)).await;
        assert_eq!(status, code, "{uri}: {body}");
        assert!(body.contains(message), "{uri}: {body}");
    }
    let plain = Request::post("/exec/ns/p/main?command=ls&output=1")
        .body(Body::empty())
        .unwrap();
    let (status, body) = status_and_body(&app, plain).await;
    assert_eq!(
        (status, body.contains("Upgrade request required")),
        (StatusCode::BAD_REQUEST, true),
        "{body}"
    );
    let ws = Request::get("/portForward/ns/p")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .header(header::SEC_WEBSOCKET_PROTOCOL, "v4.channel.k8s.io")
        .body(Body::empty())
        .unwrap();
    let (status, body) = status_and_body(&app, ws).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "channel port-forward needs ports: {body}"
    );
}

/// A backend without exec, attach or port-forward.
struct Bare;

impl Provider for Bare {
    fn name(&self) -> &'static str {
        "bare"
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
}

#[tokio::test]
async fn a_backend_without_exec_is_501() {
    let app = router_with(Bare).await;
    for uri in [
        "/exec/ns/p/main?command=ls&output=1",
        "/attach/ns/p/main?output=1",
    ] {
        let mut req = spdy_request(uri, "v4.channel.k8s.io");
        // An upgradeable request: the backend is asked before the upgrade.
        req.extensions_mut()
            .insert(hyper::upgrade::on(http::Request::new(Body::empty())));
        let (status, body) = status_and_body(&app, req).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{uri}: {body}");
        assert!(body.contains("not supported by this backend"), "{body}");
    }
}

/// Serves `app` over plain HTTP on loopback; returns the address.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(
                    app.map_request(|r: http::Request<hyper::body::Incoming>| r.map(Body::new)),
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(addr: std::net::SocketAddr, path: &str, protocols: &str) -> (Ws, String) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(protocols).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let chosen = resp
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (ws, chosen)
}

/// Every message until the server closes, as payload bytes.
async fn ws_messages(ws: &mut Ws) -> Vec<Bytes> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(Message::Binary(b))) => out.push(b),
            Some(Ok(Message::Text(t))) => out.push(Bytes::from(t)),
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(
                    frame.map(|f| u16::from(f.code)),
                    Some(1000),
                    "a normal close"
                );
                return out;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return out,
        }
    }
}

/// Concatenated payloads of `channel` (first byte), decoding base64 when asked.
fn channel(msgs: &[Bytes], ch: u8, base64: bool) -> Vec<u8> {
    use base64::Engine as _;
    let tag = if base64 { b'0' + ch } else { ch };
    msgs.iter()
        .filter(|m| m.first() == Some(&tag))
        .flat_map(|m| {
            if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(&m[1..])
                    .unwrap()
            } else {
                m[1..].to_vec()
            }
        })
        .collect()
}

fn q(command: &[&str]) -> String {
    command
        .iter()
        .map(|c| format!("command={}", c.replace(' ', "%20").replace(';', "%3B")))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn websocket_v5_exec_ends_stdin_with_the_close_signal() {
    let addr = serve(router().await).await;
    let path = format!("/exec/ns/p/main?{}&input=1&output=1&error=1", q(&["cat"]));
    let (mut ws, chosen) = ws_connect(addr, &path, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert_eq!(chosen, "v5.channel.k8s.io");
    ws.send(Message::Binary(Bytes::from_static(b"\x00typed ")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00input")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let msgs = ws_messages(&mut ws).await;
    assert_eq!(
        msgs[0],
        Bytes::from_static(&[1]),
        "first an empty stdout message: ready"
    );
    assert_eq!(channel(&msgs, 1, false), b"typed input");
    assert_eq!(
        channel(&msgs, 3, false),
        br#"{"metadata":{},"status":"Success"}"#
    );
}

#[tokio::test]
async fn websocket_base64_exec_reports_the_exit_code_as_status() {
    let addr = serve(router().await).await;
    let path = format!(
        "/exec/ns/p/main?{}&output=1&error=1",
        q(&["sh", "-c", "echo hi; stderr oops; exit 2"])
    );
    let (mut ws, chosen) = ws_connect(addr, &path, "v4.base64.channel.k8s.io").await;
    assert_eq!(chosen, "v4.base64.channel.k8s.io");
    let msgs = ws_messages(&mut ws).await;
    assert!(
        msgs.iter()
            .all(|m| m.first().is_some_and(|c| (b'0'..=b'4').contains(c))),
        "ASCII channels: {msgs:?}"
    );
    assert_eq!(channel(&msgs, 1, true), b"hi\n");
    assert_eq!(channel(&msgs, 2, true), b"oops\n");
    let status: serde_json::Value = serde_json::from_slice(&channel(&msgs, 3, true)).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
}

#[tokio::test]
async fn websocket_v1_exec_writes_errors_as_text_and_tty_resizes_reach_the_command() {
    let addr = serve(router().await).await;
    let path = format!("/exec/ns/p/main?{}&input=1&output=1&tty=1", q(&["sh"]));
    let (mut ws, chosen) = ws_connect(addr, &path, "channel.k8s.io").await;
    assert_eq!(chosen, "channel.k8s.io");
    ws.send(Message::Binary(Bytes::from_static(
        b"\x04{\"Width\":100,\"Height\":30}",
    )))
    .await
    .unwrap();
    // A client without the close signal ends the shell by typing.
    let mut seen = Vec::new();
    let mut typed = false;
    while !typed {
        let Some(Ok(Message::Binary(b))) = tokio::time::timeout(WAIT, ws.next()).await.unwrap()
        else {
            panic!("connection ended")
        };
        seen.extend_from_slice(&b[1..]);
        if seen.ends_with(b"$ ") {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ws.send(Message::Binary(Bytes::from_static(
                b"\x00stty size; exit 9\r",
            )))
            .await
            .unwrap();
            typed = true;
        }
    }
    let msgs = ws_messages(&mut ws).await;
    let out = String::from_utf8(channel(&msgs, 1, false)).unwrap();
    assert!(out.contains("30 100\r\n"), "{out:?}");
    let error = String::from_utf8(channel(&msgs, 3, false)).unwrap();
    assert!(
        error.starts_with("command terminated with non-zero exit code")
            && error.ends_with("exit code 9"),
        "{error}"
    );
}

#[tokio::test]
async fn websocket_port_forward_announces_ports_and_echoes() {
    let addr = serve(router().await).await;
    let (mut ws, chosen) = ws_connect(
        addr,
        "/portForward/ns/p?port=80,1",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await;
    assert_eq!(
        chosen, "v4.channel.k8s.io",
        "v5 is not a port-forward protocol"
    );
    let mut first = Vec::new();
    for _ in 0..4 {
        let Some(Ok(Message::Binary(b))) = tokio::time::timeout(WAIT, ws.next()).await.unwrap()
        else {
            panic!()
        };
        first.push(b);
    }
    first.sort();
    assert_eq!(
        first,
        [&[0u8, 80, 0][..], &[1, 80, 0], &[2, 1, 0], &[3, 1, 0]],
        "the port, little-endian, on each channel"
    );
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello pod")))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    let mut refused = Vec::new();
    while echoed.len() < 9 || refused.is_empty() {
        let Some(Ok(Message::Binary(b))) = tokio::time::timeout(WAIT, ws.next()).await.unwrap()
        else {
            panic!()
        };
        match b[0] {
            0 => echoed.extend_from_slice(&b[1..]),
            3 => refused.extend_from_slice(&b[1..]),
            _ => {}
        }
    }
    assert_eq!(echoed, b"hello pod");
    let refused = String::from_utf8(refused).unwrap();
    assert!(
        refused.contains("error forwarding port 1 to pod p")
            && refused.contains("connection refused"),
        "{refused}"
    );
}

/// A minimal SPDY client: the HTTP upgrade, then frames.
struct Spdy {
    tcp: TcpStream,
    enc: FrameEncoder,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl Spdy {
    async fn connect(addr: std::net::SocketAddr, path: &str, protocol: &str) -> (Spdy, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tcp.read_u8().await.unwrap();
            head.push(b);
        }
        let s = Spdy {
            tcp,
            enc: FrameEncoder::new(),
            dec: FrameDecoder::new(),
            buf: BytesMut::new(),
        };
        (s, String::from_utf8(head).unwrap())
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.enc.encode(&frame, &mut out).unwrap();
        self.tcp.write_all(&out).await.unwrap();
    }

    async fn open(&mut self, id: u32, stream_type: &str) {
        let mut headers = Headers::new();
        headers.insert("streamtype", stream_type);
        self.send(Frame::open(id, headers)).await;
    }

    async fn data(&mut self, id: u32, data: &'static [u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            fin,
            data: Bytes::from_static(data),
        })
        .await;
    }

    /// Frames until the server closes the connection.
    async fn frames(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                frames.push(f);
            }
            let n = tokio::time::timeout(WAIT, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("server closes in time")
                .unwrap();
            if n == 0 {
                return frames;
            }
        }
    }
}

/// The data of stream `id` and whether it ended with FIN.
fn stream_data(frames: &[Frame], id: u32) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut fin = false;
    for f in frames {
        if let Frame::Data {
            stream_id,
            fin: f,
            data: d,
        } = f
            && *stream_id == id
        {
            data.extend_from_slice(d);
            fin |= *f;
        }
    }
    (data, fin)
}

#[tokio::test]
async fn spdy_v4_exec_copies_stdin_until_fin_and_ends_every_stream() {
    let addr = serve(router().await).await;
    let path = format!(
        "/exec/ns/p/main?{}&input=1&output=1&error=1",
        q(&["sh", "-c", "cat; exit 5"])
    );
    let (mut c, head) = Spdy::connect(addr, &path, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v5.channel.k8s.io"),
        "{head}"
    );
    c.open(1, "error").await;
    c.open(3, "stdin").await;
    c.open(5, "stdout").await;
    c.open(7, "stderr").await;
    c.data(3, b"over spdy", false).await;
    c.data(3, b"", true).await;
    let frames = c.frames().await;
    for id in [1, 3, 5, 7] {
        assert!(
            frames
                .iter()
                .any(|f| matches!(f, Frame::SynReply { stream_id, .. } if *stream_id == id)),
            "SYN_REPLY {id}"
        );
    }
    assert_eq!(
        stream_data(&frames, 5),
        (b"over spdy".to_vec(), true),
        "stdout, then FIN"
    );
    assert_eq!(stream_data(&frames, 7), (Vec::new(), true), "stderr FIN");
    let (error, fin) = stream_data(&frames, 1);
    let status: serde_json::Value = serde_json::from_slice(&error).unwrap();
    assert_eq!(
        (status["details"]["causes"][0]["message"].as_str(), fin),
        (Some("5"), true)
    );
    assert!(
        matches!(frames.last(), Some(Frame::GoAway { .. })),
        "then GOAWAY: {:?}",
        frames.last()
    );
}

#[tokio::test]
async fn spdy_v2_exec_reports_failures_as_text() {
    let addr = serve(router().await).await;
    let path = format!("/exec/ns/p/main?{}&output=1", q(&["false"]));
    let (mut c, head) = Spdy::connect(addr, &path, "v2.channel.k8s.io").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.open(1, "error").await;
    c.open(3, "stdout").await;
    let frames = c.frames().await;
    let (error, _) = stream_data(&frames, 1);
    assert!(
        String::from_utf8(error)
            .unwrap()
            .ends_with("error executing command [false], exit code 1")
    );
}

#[tokio::test]
async fn spdy_port_forward_pairs_streams_by_request_id() {
    let addr = serve(router().await).await;
    let (mut c, head) = Spdy::connect(addr, "/portForward/ns/p", "portforward.k8s.io").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let open = |id: u32, kind: &str, port: &str, request: &str| {
        let mut headers = Headers::new();
        headers.insert("streamtype", kind);
        headers.insert("port", port);
        headers.insert("requestid", request);
        Frame::open(id, headers)
    };
    c.send(open(1, "error", "8080", "0")).await;
    c.send(open(3, "error", "1", "1")).await;
    c.send(open(5, "data", "8080", "0")).await;
    c.send(open(7, "data", "1", "1")).await;
    c.send(open(9, "data", "notaport", "2")).await;
    c.data(5, b"round trip", true).await;
    // Read until the echo came back and the refused pair ended, then leave.
    let mut frames = Vec::new();
    loop {
        while let Some(f) = c.dec.decode(&mut c.buf).unwrap() {
            frames.push(f);
        }
        let (echo, echo_fin) = stream_data(&frames, 5);
        let (_, refused_fin) = stream_data(&frames, 3);
        if echo_fin && refused_fin {
            assert_eq!(echo, b"round trip");
            break;
        }
        let n = tokio::time::timeout(WAIT, c.tcp.read_buf(&mut c.buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "connection closed early: {frames:?}");
    }
    let (refused, _) = stream_data(&frames, 3);
    let refused = String::from_utf8(refused).unwrap();
    assert!(
        refused.starts_with("error forwarding port 1 to pod p, uid 1111-2222:"),
        "{refused}"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::RstStream { stream_id: 7, .. })),
        "the refused data stream is reset"
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::RstStream { stream_id: 9, .. })),
        "a stream without a valid port is reset"
    );
}
