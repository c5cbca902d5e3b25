//! A fault-injecting HTTP proxy between skylet and a backend's API (moto's
//! ECS, the ACI emulator's ARM, a remote kube-apiserver), for the fault
//! suite (issue #15): it answers a configured share of requests with that
//! API's own error shapes ([`shapes`]), holds some back, or closes the
//! connection, and forwards the rest unchanged.
//!
//! - **Where**: on `127.0.0.1`, plain HTTP or TLS with a test CA of its own
//!   ([`FaultProxy::ca_pem`], which skylet is told to trust: `--aci-ca-file`,
//!   a kubeconfig's `certificate-authority-data`). Towards the API it speaks
//!   what the API speaks: HTTP for moto, TLS trusting the emulator's or the
//!   apiserver's CA, with the apiserver's client certificate
//!   ([`Upstream::from_kubeconfig`]). One upstream connection per
//!   downstream connection, HTTP/1.1, bodies of requests buffered (they are
//!   small), answers streamed (watches pass through).
//! - **What** ([`Fault`]): the API's throttling answer, 500, 503, ARM's 409
//!   conflict, a delay, a reset before the request reaches the API, or an
//!   answer lost after the API acted on the request. Which requests are
//!   eligible is a predicate ([`Faults::eligible`]); the choice is a seeded
//!   random draw per request.
//! - **Counts** ([`Stats`]): requests per operation (ECS `X-Amz-Target`,
//!   ARM and Kubernetes method and path with names elided), faults by kind,
//!   creates forwarded and accepted per pod UID (from the request body's
//!   tags or labels), and whether clients waited what `Retry-After` said:
//!   the next request for the same method, path and pod after a throttled
//!   one is checked against the wait it was given.
//! - **Links**: ARM hands back absolute links (`nextLink`,
//!   `Azure-AsyncOperation`) to the emulator's own address, which skylet
//!   would refuse to follow to another origin: the proxy rewrites them to
//!   its own ([`FaultProxy::start`]'s `rewrite_links`).
//!
//! The proxy runs on a runtime of its own, on a thread of its own, so a
//! test that blocks (a `kubectl` run, a `Skylet::stop`) never stalls it.

mod shapes;
mod tls;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
pub use tls::TlsError;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, Closed>;

/// Whose API is behind the proxy: decides the error shapes and how
/// operations are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// AWS JSON APIs (ECS, CloudWatch Logs, Secrets Manager) on moto.
    Ecs,
    /// Azure Resource Manager (the ACI emulator).
    Arm,
    /// A kube-apiserver.
    Kubernetes,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The API's throttling answer: ECS 400 `ThrottlingException`, ARM and
    /// Kubernetes 429 with `Retry-After`.
    Throttle,
    /// HTTP 500 in the API's shape.
    Internal,
    /// HTTP 503 in the API's shape.
    Unavailable,
    /// ARM's 409 `Conflict` (another operation in progress); ARM only.
    Conflict,
    /// The request held back for [`Faults::delay`], then forwarded.
    Delay,
    /// The connection closed before the request reached the API.
    Reset,
    /// The request reaches the API, which acts on it; its answer is lost
    /// (the connection closes). Only safe where creates are idempotent
    /// (ARM's PUT by name, Kubernetes' create by name): moto ignores ECS's
    /// `clientToken`, so a lost RunTask answer makes a second task there.
    LostAnswer,
}

impl Fault {
    /// A short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Internal => "500",
            Self::Unavailable => "503",
            Self::Conflict => "409",
            Self::Delay => "delay",
            Self::Reset => "reset",
            Self::LostAnswer => "lost-answer",
        }
    }
}

/// Which faults, how often, for which requests.
#[derive(Clone, Debug)]
pub struct Faults {
    /// The share of eligible requests that get a fault (0 to 1).
    pub share: f64,
    /// The kinds, each with a weight.
    pub mix: Vec<(Fault, u32)>,
    /// What `Retry-After` says (ARM, Kubernetes), in seconds.
    pub retry_after: u32,
    /// How long [`Fault::Delay`] holds a request.
    pub delay: Duration,
    /// The seed of the draws.
    pub seed: u64,
    /// Which requests may get a fault (method, path); the others pass.
    pub eligible: fn(&Method, &str) -> bool,
}

impl Faults {
    /// No faults: every request passes.
    pub fn none() -> Self {
        Self {
            share: 0.0,
            mix: Vec::new(),
            retry_after: 1,
            delay: Duration::from_millis(500),
            seed: 0,
            eligible: |_, _| true,
        }
    }

    /// `share` of every request, spread evenly over `kinds`.
    pub fn share(share: f64, kinds: &[Fault], seed: u64) -> Self {
        Self {
            share,
            mix: kinds.iter().map(|k| (*k, 1)).collect(),
            seed,
            ..Self::none()
        }
    }

    fn draw(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        let total: u32 = self.mix.iter().map(|(_, w)| w).sum();
        if total == 0 || rng.f64() >= self.share {
            return None;
        }
        let mut pick = rng.u32(0..total);
        for (kind, w) in &self.mix {
            if pick < *w {
                return Some(*kind);
            }
            pick -= w;
        }
        None
    }
}

/// Where the proxy forwards to.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The API's address.
    pub addr: SocketAddr,
    /// TLS towards it, if it speaks TLS.
    pub tls: Option<UpstreamTls>,
}

/// TLS towards the API.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The CA certificates (PEM) that the API's certificate chains to.
    pub roots_pem: String,
    /// A client certificate chain and key (PEM) to present.
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An address was unusable or could not be bound.
    #[error("proxy I/O: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material was unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A URL or kubeconfig was unusable.
    #[error("{0}")]
    Config(String),
}

impl Upstream {
    /// Plain HTTP to `url` (`http://127.0.0.1:PORT`).
    ///
    /// # Errors
    /// When the URL has no host and port.
    pub fn http(url: &str) -> Result<Self, Error> {
        Ok(Self {
            addr: addr_of(url)?,
            tls: None,
        })
    }

    /// TLS to `url`, trusting `roots_pem`.
    ///
    /// # Errors
    /// When the URL has no host and port.
    pub fn https(url: &str, roots_pem: &str) -> Result<Self, Error> {
        Ok(Self {
            addr: addr_of(url)?,
            tls: Some(UpstreamTls {
                roots_pem: roots_pem.to_owned(),
                identity: None,
            }),
        })
    }

    /// The apiserver of a kubeconfig written by `hack/cluster` (server, CA
    /// and client certificate given as file paths), with its identity.
    ///
    /// # Errors
    /// When the kubeconfig or a file it names cannot be read.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, Error> {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let cluster = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| Error::Config("no cluster in the kubeconfig".into()))?;
        let user = kc
            .auth_infos
            .first()
            .and_then(|u| u.auth_info.clone())
            .ok_or_else(|| Error::Config("no user in the kubeconfig".into()))?;
        let read = |p: Option<&String>, what: &str| -> Result<String, Error> {
            let p = p.ok_or_else(|| Error::Config(format!("no {what} file in the kubeconfig")))?;
            Ok(std::fs::read_to_string(p)?)
        };
        let server = cluster
            .server
            .ok_or_else(|| Error::Config("no server in the kubeconfig".into()))?;
        Ok(Self {
            addr: addr_of(&server)?,
            tls: Some(UpstreamTls {
                roots_pem: read(cluster.certificate_authority.as_ref(), "CA")?,
                identity: Some((
                    read(user.client_certificate.as_ref(), "client certificate")?,
                    read(user.client_key.as_ref(), "client key")?,
                )),
            }),
        })
    }
}

fn addr_of(url: &str) -> Result<SocketAddr, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?;
    let host = uri.host().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let port = uri
        .port_u16()
        .ok_or_else(|| Error::Config(format!("{url}: no port")))?;
    format!("{host}:{port}")
        .parse()
        .map_err(|e| Error::Config(format!("{url}: {e}")))
}

/// Counts of one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Requests received.
    pub received: u64,
    /// Requests that reached the API.
    pub forwarded: u64,
    /// Requests that got a fault (delays included).
    pub faulted: u64,
}

/// What the proxy saw and did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub received: u64,
    /// Requests that reached the API.
    pub forwarded: u64,
    /// Faults injected, by kind.
    pub injected: BTreeMap<Fault, u64>,
    /// Per operation (`RunTask`, `PUT .../containerGroups/{}`, `POST
    /// /api/v1/namespaces/{}/pods`).
    pub operations: BTreeMap<String, OpStats>,
    /// Creates that reached the API, per pod UID.
    pub creates_forwarded: HashMap<String, u32>,
    /// Creates the API accepted (2xx), per pod UID.
    pub creates_accepted: HashMap<String, u32>,
    /// Requests that came after a throttled one for the same method, path
    /// and pod.
    pub retry_after_checks: u64,
    /// Those that came sooner than `Retry-After` said.
    pub retry_after_violations: u64,
    /// The shortest wait before such a request, if any.
    pub retry_after_min_wait: Option<Duration>,
    /// Requests the proxy itself could not forward (the API did not
    /// answer): answered 502.
    pub upstream_errors: u64,
    /// 429s the API itself answered (passed on; their `Retry-After` is
    /// checked like the proxy's own).
    pub upstream_throttled: u64,
}

impl Stats {
    /// Faults of every kind together.
    pub fn faults(&self) -> u64 {
        self.injected.values().sum()
    }

    /// Pods whose create the API accepted more than once.
    pub fn accepted_twice(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .creates_accepted
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(u, n)| (u.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// One line per kind: `throttle=12 500=9 ...`.
    pub fn injected_line(&self) -> String {
        self.injected
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

struct Throttled {
    at: Instant,
    wait: Duration,
}

struct Shared {
    api: Api,
    upstream: Upstream,
    upstream_tls: Option<tokio_rustls::TlsConnector>,
    rewrite: Mutex<Option<(String, String)>>,
    faults: Mutex<(Faults, fastrand::Rng)>,
    stats: Mutex<Stats>,
    throttled: Mutex<HashMap<String, Throttled>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy for `api` in front of `upstream` on a free port of
    /// `127.0.0.1`, with TLS of its own if `tls`. With `rewrite_links`,
    /// the upstream's base URL in answers (headers and JSON bodies) is
    /// replaced by the proxy's.
    ///
    /// # Errors
    /// When TLS cannot be set up or no port can be bound.
    pub fn start(
        api: Api,
        upstream: Upstream,
        tls: bool,
        rewrite_links: Option<&str>,
        faults: Faults,
    ) -> Result<Self, Error> {
        crate::install_crypto();
        let server_tls = if tls { Some(tls::server()?) } else { None };
        let upstream_tls = match &upstream.tls {
            Some(t) => Some(tokio_rustls::TlsConnector::from(tls::client(
                &t.roots_pem,
                t.identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
            )?)),
            None => None,
        };
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let scheme = if tls { "https" } else { "http" };
        let rewrite = rewrite_links.map(|from| {
            (
                from.trim_end_matches('/').to_owned(),
                format!("{scheme}://{addr}"),
            )
        });
        let rng = fastrand::Rng::with_seed(faults.seed);
        let shared = Arc::new(Shared {
            api,
            upstream,
            upstream_tls,
            rewrite: Mutex::new(rewrite),
            faults: Mutex::new((faults, rng)),
            stats: Mutex::default(),
            throttled: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let acceptor = server_tls
            .as_ref()
            .map(|(_, c)| tokio_rustls::TlsAcceptor::from(c.clone()));
        let s = shared.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept_loop(listener, acceptor, s) => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })?;
        tracing::info!(%addr, ?api, tls, "fault proxy listening");
        Ok(Self {
            addr,
            ca_pem: server_tls.map(|(pem, _)| pem),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Its test CA (PEM), with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Changes the faults from now on (the draws start again from the new
    /// seed).
    pub fn set_faults(&self, faults: Faults) {
        let rng = fastrand::Rng::with_seed(faults.seed);
        *lock(&self.shared.faults) = (faults, rng);
    }

    /// Changes only the share of faulted requests (0 stops them).
    pub fn set_share(&self, share: f64) {
        lock(&self.shared.faults).0.share = share;
    }

    /// What it saw so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// A kubeconfig for the apiserver behind this proxy: `original` with its
    /// server replaced by the proxy and its CA by the proxy's (the client
    /// certificate stays; the proxy presents its own upstream). Written
    /// next to `original` under `name`.
    ///
    /// # Errors
    /// When the kubeconfig cannot be read or written, or the proxy has no TLS.
    pub fn kubeconfig(&self, original: &Path, name: &str) -> Result<std::path::PathBuf, Error> {
        let ca = self
            .ca_pem
            .as_ref()
            .ok_or_else(|| Error::Config("a kubeconfig needs a TLS proxy".into()))?;
        let dir = original.parent().unwrap_or(Path::new("."));
        let ca_path = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_path, ca)?;
        let text = std::fs::read_to_string(original)?;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                let t = l.trim_start();
                let indent = &l[..l.len() - t.len()];
                if t.starts_with("server:") {
                    format!("{indent}server: {}", self.url())
                } else if t.starts_with("certificate-authority:") {
                    format!("{indent}certificate-authority: {}", ca_path.display())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, out.join("\n") + "\n")?;
        Ok(path)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(a) => {
                    if let Ok(tls) = a.accept(tcp).await {
                        serve(tls, shared).await;
                    }
                }
                None => serve(tcp, shared).await,
            }
        });
    }
}

/// One downstream connection and its upstream connection.
struct Conn {
    shared: Arc<Shared>,
    upstream: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// Why a request got no answer (the connection is closed, on purpose or
/// because a side failed).
#[derive(Debug, thiserror::Error)]
#[error("connection closed by the fault proxy ({0})")]
struct Closed(String);

impl Closed {
    fn because(why: impl std::fmt::Display) -> Self {
        Self(why.to_string())
    }
}

async fn serve<S>(io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        shared,
        upstream: tokio::sync::Mutex::new(None),
    });
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { conn.handle(req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn boxed(b: Incoming) -> Body {
    b.map_err(Closed::because).boxed()
}

impl Conn {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, Closed> {
        let (mut parts, body) = req.into_parts();
        let body = body.collect().await.map_err(Closed::because)?.to_bytes();
        let s = &self.shared;
        let path = parts.uri.path().to_owned();
        let op = operation(s.api, &parts.method, &path, &parts.headers);
        let created = create_uid(s.api, &op, &body);
        let key = format!(
            "{} {path}?{}#{}",
            parts.method,
            selectors(parts.uri.query()),
            created.clone().unwrap_or_default()
        );
        self.check_retry_after(&key);
        let fault = {
            let mut f = lock(&s.faults);
            let (faults, rng) = &mut *f;
            if (faults.eligible)(&parts.method, &path) {
                faults
                    .draw(rng)
                    .map(|k| (k, faults.retry_after, faults.delay))
            } else {
                None
            }
        };
        {
            let mut st = lock(&s.stats);
            st.received += 1;
            let o = st.operations.entry(op.clone()).or_default();
            o.received += 1;
            if let Some((k, _, _)) = fault {
                o.faulted += 1;
                *st.injected.entry(k).or_default() += 1;
            }
        }
        match fault {
            Some((Fault::Reset, _, _)) => return Err(Closed::because("reset")),
            Some((Fault::Delay, _, delay)) => tokio::time::sleep(delay).await,
            Some((Fault::LostAnswer, _, _)) => {}
            Some((kind, retry_after, _)) => {
                if kind == Fault::Throttle && s.api != Api::Ecs {
                    lock(&s.throttled).insert(
                        key,
                        Throttled {
                            at: Instant::now(),
                            wait: Duration::from_secs(retry_after.into()),
                        },
                    );
                }
                return Ok(shapes::answer(s.api, kind, retry_after).map(full));
            }
            None => {}
        }
        // forward
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONNECTION);
        if let Ok(host) = HeaderValue::from_str(&s.upstream.addr.to_string()) {
            parts.headers.insert(header::HOST, host);
        }
        let answer = match self.send(parts, body).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, op, "fault proxy: the API did not answer");
                lock(&s.stats).upstream_errors += 1;
                let mut r = Response::new(full(Bytes::from_static(b"fault proxy: no answer")));
                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                return Ok(r);
            }
        };
        {
            let mut st = lock(&s.stats);
            st.forwarded += 1;
            st.operations.entry(op).or_default().forwarded += 1;
            if let Some(uid) = &created {
                *st.creates_forwarded.entry(uid.clone()).or_default() += 1;
                if answer.status().is_success() {
                    *st.creates_accepted.entry(uid.clone()).or_default() += 1;
                }
            }
            if answer.status() == http::StatusCode::TOO_MANY_REQUESTS {
                st.upstream_throttled += 1;
            }
        }
        if answer.status() == http::StatusCode::TOO_MANY_REQUESTS
            && let Some(secs) = answer
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        {
            lock(&s.throttled).insert(
                key,
                Throttled {
                    at: Instant::now(),
                    wait: Duration::from_secs(secs),
                },
            );
        }
        if matches!(fault, Some((Fault::LostAnswer, _, _))) {
            *self.upstream.lock().await = None;
            return Err(Closed::because("answer lost"));
        }
        self.rewrite(answer).await
    }

    /// Counts a request that follows a throttled one of the same key.
    fn check_retry_after(&self, key: &str) {
        let Some(t) = lock(&self.shared.throttled).remove(key) else {
            return;
        };
        let waited = t.at.elapsed();
        let mut st = lock(&self.shared.stats);
        st.retry_after_checks += 1;
        // 50 ms for the clocks of two processes and the scheduler
        if waited + Duration::from_millis(50) < t.wait {
            st.retry_after_violations += 1;
            tracing::warn!(key, ?waited, wait = ?t.wait, "a request came sooner than Retry-After said");
        }
        st.retry_after_min_wait = Some(st.retry_after_min_wait.map_or(waited, |m| m.min(waited)));
    }

    /// Sends on this connection's upstream connection, opening it first if
    /// needed; a connection found closed before the request left is opened
    /// again once.
    async fn send(
        &self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Incoming>, BoxError> {
        let mut slot = self.upstream.lock().await;
        for attempt in 0..2 {
            let usable = match slot.as_mut() {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !usable {
                *slot = Some(self.connect().await?);
            }
            let Some(sender) = slot.as_mut() else {
                continue;
            };
            let req = Request::from_parts(parts.clone(), Full::new(body.clone()));
            match sender.send_request(req).await {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 && e.is_canceled() => *slot = None,
                Err(e) => return Err(e.into()),
            }
        }
        Err("the API closed the connection twice".into())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, BoxError> {
        let s = &self.shared;
        let tcp = TcpStream::connect(s.upstream.addr).await?;
        let _ = tcp.set_nodelay(true);
        match &s.upstream_tls {
            Some(c) => {
                let name = rustls_pki_types::ServerName::IpAddress(s.upstream.addr.ip().into());
                let tls = c.connect(name, tcp).await?;
                handshake(tls).await
            }
            None => handshake(tcp).await,
        }
    }

    /// The upstream's answer, with its links rewritten to the proxy's
    /// address if asked for.
    async fn rewrite(&self, answer: Response<Incoming>) -> Result<Response<Body>, Closed> {
        let rewrite = lock(&self.shared.rewrite).clone();
        let Some((from, to)) = rewrite else {
            return Ok(answer.map(boxed));
        };
        let (mut parts, body) = answer.into_parts();
        for name in ["location", "azure-asyncoperation", "operation-location"] {
            let new = parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.contains(&from))
                .and_then(|v| HeaderValue::from_str(&v.replace(&from, &to)).ok());
            if let Some(v) = new {
                parts.headers.insert(name, v);
            }
        }
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if !json {
            return Ok(Response::from_parts(parts, boxed(body)));
        }
        let bytes = body.collect().await.map_err(Closed::because)?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let bytes = if text.contains(&from) {
            Bytes::from(text.replace(&from, &to))
        } else {
            bytes
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        Ok(Response::from_parts(parts, full(bytes)))
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Full<Bytes>>, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The operation a request is: ECS's `X-Amz-Target` action; else the
/// method and the path with names elided (`PUT
/// /subscriptions/{}/resourceGroups/{}/.../containerGroups/{}`), plus
/// `?watch` for Kubernetes watches.
fn operation(api: Api, method: &Method, path: &str, headers: &HeaderMap) -> String {
    if let Some(action) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
    {
        return action.to_owned();
    }
    let named = |seg: &str| -> bool {
        match api {
            Api::Arm => matches!(
                seg.to_ascii_lowercase().as_str(),
                "subscriptions"
                    | "resourcegroups"
                    | "providers"
                    | "containergroups"
                    | "containers"
                    | "locations"
                    | "operations"
            ),
            Api::Kubernetes => matches!(
                seg,
                "namespaces"
                    | "pods"
                    | "nodes"
                    | "configmaps"
                    | "secrets"
                    | "events"
                    | "leases"
                    | "services"
                    | "serviceaccounts"
            ),
            Api::Ecs => false,
        }
    };
    let mut out = String::new();
    let mut elide = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if elide {
            out.push_str("{}");
            elide = false;
        } else {
            out.push_str(seg);
            elide = named(seg);
        }
    }
    format!("{method} {out}")
}

/// What tells two requests of one path apart: Kubernetes' `watch`,
/// `labelSelector` and `fieldSelector` (two watches of `/api/v1/pods` are
/// two clients; a resourceVersion or page token is not).
fn selectors(query: Option<&str>) -> String {
    let mut kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or_default();
            matches!(k, "watch" | "labelSelector" | "fieldSelector")
        })
        .collect();
    kept.sort_unstable();
    kept.join("&")
}

/// The pod UID a create request carries: ECS RunTask's `skylet.io/pod-uid`
/// tag, an ARM container group PUT's `skylet-pod-uid` tag, a Kubernetes pod
/// create's `skylet.io/origin-uid` label.
fn create_uid(api: Api, op: &str, body: &[u8]) -> Option<String> {
    let is_create = match api {
        Api::Ecs => op == "RunTask",
        Api::Arm => op.starts_with("PUT ") && op.ends_with("/containerGroups/{}"),
        Api::Kubernetes => op.starts_with("POST ") && op.ends_with("/pods"),
    };
    if !is_create {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let uid = match api {
        Api::Ecs => v["tags"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == "skylet.io/pod-uid")?["value"]
            .as_str()?,
        Api::Arm => v["tags"]["skylet-pod-uid"].as_str()?,
        Api::Kubernetes => v["metadata"]["labels"]["skylet.io/origin-uid"].as_str()?,
    };
    Some(uid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_without_names() {
        let h = HeaderMap::new();
        assert_eq!(
            operation(
                Api::Arm,
                &Method::PUT,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g",
                &h
            ),
            "PUT /subscriptions/{}/resourceGroups/{}/providers/{}/containerGroups/{}"
        );
        assert_eq!(
            operation(
                Api::Kubernetes,
                &Method::POST,
                "/api/v1/namespaces/a/pods",
                &h
            ),
            "POST /api/v1/namespaces/{}/pods"
        );
        let mut ecs = HeaderMap::new();
        ecs.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonEC2ContainerServiceV20141113.RunTask"),
        );
        assert_eq!(operation(Api::Ecs, &Method::POST, "/", &ecs), "RunTask");
    }

    #[test]
    fn creates_are_told_by_their_pod_uid() {
        let body = br#"{"tags":[{"key":"skylet.io/pod-uid","value":"u1"}]}"#;
        assert_eq!(create_uid(Api::Ecs, "RunTask", body).as_deref(), Some("u1"));
        assert_eq!(create_uid(Api::Ecs, "StopTask", body), None);
        let body = br#"{"metadata":{"labels":{"skylet.io/origin-uid":"u2"}}}"#;
        assert_eq!(
            create_uid(Api::Kubernetes, "POST /api/v1/namespaces/{}/pods", body).as_deref(),
            Some("u2")
        );
    }

    #[test]
    fn the_draw_keeps_the_share() {
        let f = Faults::share(0.3, &[Fault::Throttle, Fault::Internal], 7);
        let mut rng = fastrand::Rng::with_seed(f.seed);
        let n = (0..10_000).filter(|_| f.draw(&mut rng).is_some()).count();
        assert!((2_700..3_300).contains(&n), "{n}");
        assert_eq!(Faults::none().draw(&mut rng), None);
    }
}
