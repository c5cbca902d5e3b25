//! A small HTTPS + WebSocket client for the emulator tests: hyper over
//! tokio-rustls trusting only the emulator's CA, one connection per request.
//! Every answer is checked not to be the emulator's 500
//! `EmulatorResponseInvalid` (a response that broke the spec).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: panicking is the point

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use skylet_aci_emulator::{Config, Emulator};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const API: &str = "api-version=2026-05-01";

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ARM error code.
    pub fn code(&self) -> &str {
        self.json
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

pub struct Client {
    pub base: String,
    addr: String,
    tls: TlsConnector,
    pub token: Option<String>,
    pub sub: String,
    pub tenant: String,
}

pub fn tls_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Starts an emulator with `config` (tests' log output on).
pub async fn start(config: Config) -> (Emulator, Client) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("skylet_aci_emulator=debug")
        .with_test_writer()
        .try_init();
    let emu = Emulator::start(config).await.unwrap();
    let client = Client::new(&emu);
    (emu, client)
}

impl Client {
    pub fn new(emu: &Emulator) -> Self {
        let base = emu.url();
        let addr = base.trim_start_matches("https://").to_owned();
        Self {
            base,
            addr,
            tls: TlsConnector::from(tls_config(emu.ca_pem())),
            token: None,
            sub: emu.config().subscription_id.clone(),
            tenant: emu.config().tenant_id.clone(),
        }
    }

    async fn connect(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(&self.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
        self.tls.connect(name, tcp).await.unwrap()
    }

    /// Sends a request to `path_or_url` (absolute URLs must be on the emulator).
    pub async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let path = match path_or_url.strip_prefix(&self.base) {
            Some(p) => p.to_owned(),
            None => {
                assert!(
                    path_or_url.starts_with('/'),
                    "not on the emulator: {path_or_url}"
                );
                path_or_url.to_owned()
            }
        };
        let tls = self.connect().await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header("host", &self.addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let r = Resp {
            status,
            headers,
            body,
            json,
        };
        assert_ne!(
            r.code(),
            "EmulatorResponseInvalid",
            "the emulator broke the spec: {}",
            r.json
        );
        r
    }

    /// Gets a token with the configured client credentials.
    pub async fn login(&mut self) {
        let r = self.token_request("skylet-test", "test-secret").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        self.token = Some(r.json["access_token"].as_str().unwrap().to_owned());
    }

    pub async fn token_request(&self, client: &str, secret: &str) -> Resp {
        let form = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={secret}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default"
        );
        self.send(
            Method::POST,
            &format!("/{}/oauth2/v2.0/token", self.tenant),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await
    }

    /// An authenticated ARM call; adds `api-version` unless present.
    pub async fn arm(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let path = if path.contains("api-version=") {
            path.to_owned()
        } else if path.contains('?') {
            format!("{path}&{API}")
        } else {
            format!("{path}?{API}")
        };
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send(
            method,
            &path,
            &headers,
            body.map(|b| serde_json::to_vec(b).unwrap()),
        )
        .await
    }

    pub fn rg_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/skylet-rg/providers/Microsoft.ContainerInstance",
            self.sub
        )
    }

    pub fn group_path(&self, name: &str) -> String {
        format!("{}/containerGroups/{name}", self.rg_path())
    }

    /// `method` on a path below group `name`: `rest` is `/stop`,
    /// `/containers/app/logs?tail=1`, ...
    pub async fn group_call(
        &self,
        method: Method,
        name: &str,
        rest: &str,
        body: Option<&Value>,
    ) -> Resp {
        self.arm(method, &format!("{}{rest}", self.group_path(name)), body)
            .await
    }

    pub async fn put_group(&self, name: &str, body: &Value) -> Resp {
        self.arm(Method::PUT, &self.group_path(name), Some(body))
            .await
    }

    pub async fn get_group(&self, name: &str) -> Resp {
        self.arm(Method::GET, &self.group_path(name), None).await
    }

    /// Polls an operation URL until it is no longer InProgress.
    pub async fn wait_operation(&self, url: &str) -> Resp {
        for _ in 0..100 {
            let r = self.arm(Method::GET, url, None).await;
            if r.json["status"] != "InProgress" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("operation {url} never ended");
    }

    /// PUTs a group and waits for it to be Succeeded.
    pub async fn create(&self, name: &str, body: &Value) -> Value {
        let r = self.put_group(name, body).await;
        assert!(r.status.is_success(), "{}", r.json);
        let op = r.header("azure-asyncoperation").unwrap().to_owned();
        assert_eq!(self.wait_operation(&op).await.json["status"], "Succeeded");
        self.get_group(name).await.json
    }

    /// Waits until `f` holds for the group (GET), returning it.
    pub async fn wait_group(&self, name: &str, f: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let g = self.get_group(name).await.json;
            if f(&g) {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "group {name} never reached the expected state: {}",
            self.get_group(name).await.json
        );
    }

    /// A WebSocket to `uri` (wss://...), with extra headers.
    pub async fn websocket(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> WebSocketStream<TlsStream<TcpStream>> {
        let mut req = uri.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let tls = self.connect().await;
        let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws
    }
}

impl Client {
    /// The HTTP status of a WebSocket handshake to `uri` (101 on success).
    pub async fn websocket_status(&self, uri: &str) -> StatusCode {
        let req = uri.into_client_request().unwrap();
        let tls = self.connect().await;
        match tokio_tungstenite::client_async(req, tls).await {
            Ok((_, resp)) => resp.status(),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status(),
            Err(e) => panic!("handshake failed: {e}"),
        }
    }
}

/// A minimal valid group with one container running `command`.
pub fn simple_group(command: &[&str]) -> Value {
    serde_json::json!({
        "location": "westeurope",
        "tags": {"skylet-pod-uid": "uid-1", "skylet-node": "skylet"},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [{
                "name": "app",
                "properties": {
                    "image": "busybox",
                    "command": command,
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}},
                    "environmentVariables": [
                        {"name": "PLAIN", "value": "visible"},
                        {"name": "SECRET", "secureValue": "hunter2"}
                    ]
                }
            }]
        }
    })
}
