//! An Azure Container Instances emulator for skylet's tests: an HTTPS server
//! with ARM semantics for the container-group operations skylet's ACI backend
//! uses, the Entra ID client-credentials token endpoint, and the exec/attach
//! WebSockets, all on one TLS port signed by the emulator's own CA.
//!
//! Every request is routed by the official ARM spec (read at start from
//! [`Config::spec_path`]) to its `operationId`; its api-version, path
//! parameters and body are checked against the spec ([`spec`]), and every
//! answer is checked against the operation's response schema: an answer that
//! breaks the spec is an emulator bug and goes out as 500
//! `EmulatorResponseInvalid` (counted in [`Stats::invalid_responses`]).
//!
//! Azure Monitor's batch metrics API (`metrics:getBatch`, [`monitor`]) is
//! served on the same port, its requests checked against a typing of its
//! published spec, its answers the containers' use (`load` in their
//! program).
//!
//! Containers are simulated ([`state`]): their `command` is a tiny program in
//! the toy shell of `skylet-toysh` (`echo`, `sleep`, `exit`, `env`, `while
//! true` loops, ...; the language the simulated backend's containers speak
//! too) whose output is what logs and attach show.
//!
//! ```no_run
//! # async fn demo() -> Result<(), skylet_aci_emulator::Error> {
//! let emulator = skylet_aci_emulator::Emulator::start(Default::default()).await?;
//! println!("ARM and Entra ID at {}", emulator.url());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Quotas are enforced on the creation of a group as ARM does, with its
//! answer, 409 `ContainerGroupQuotaReached` naming the quota
//! (`ContainerGroups`, `StandardCores`, `StandardSpotCores`): see
//! [`Config::container_group_quota`].
//!
//! API rate limits are token buckets, ARM's and ACI's published figures
//! or any others ([`Config::rate_limits`], [`limits`]; none by default):
//! 429 `TooManyRequests` with `Retry-After` when a bucket is empty.
//!
//! Test controls: [`Emulator::throttle`], [`Emulator::set_capacity_available`]
//! (409 `ServiceUnavailable`: the location has no room for new groups),
//! [`Emulator::set_container_exit`], [`Emulator::stats`],
//! [`Emulator::requests`], [`Emulator::groups`], and the same over HTTP (no
//! auth) under `/_emulator/` ([`control`]).

pub mod spec;

mod arm;
pub mod control;
pub mod limits;
pub mod monitor;
mod rules;
mod state;
mod tls;
mod token;
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why the emulator could not start. Not retryable: fix the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec could not be loaded.
    #[error("failed to load the ACI spec")]
    Spec(#[from] spec::Error),
    /// The CA or serving certificate could not be made.
    #[error("failed to set up TLS")]
    Tls(#[from] tls::Error),
    /// The listener could not be bound.
    #[error("failed to bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The emulator's settings.
#[derive(Clone)]
pub struct Config {
    /// The one subscription that exists.
    pub subscription_id: String,
    /// The tenant whose token endpoint is served.
    pub tenant_id: String,
    /// The service principal's client id.
    pub client_id: String,
    /// The service principal's secret (never logged).
    pub client_secret: String,
    /// The one location groups may be created in.
    pub location: String,
    /// The resource groups that exist.
    pub resource_groups: Vec<String>,
    /// Items per LIST page.
    pub page_size: usize,
    /// How long a group stays `Creating` (and an update `Updating`).
    pub create_delay: Duration,
    /// How long a group stays `Deleting`.
    pub delete_delay: Duration,
    /// How long a container stays `Terminated` before a restart.
    pub restart_delay: Duration,
    /// The ARM spec (`containerInstance.json`).
    pub spec_path: PathBuf,
    /// Where to listen (`127.0.0.1:0` picks a port).
    pub bind: SocketAddr,
    /// The subscription's container group quota in the location
    /// (`ContainerGroups`): creating a group beyond it is answered 409
    /// `ContainerGroupQuotaReached`.
    pub container_group_quota: u32,
    /// The subscription's standard core quota in the location
    /// (`StandardCores`): the CPU requests of its Regular groups together.
    pub core_quota: u32,
    /// The subscription's Spot core quota in the location
    /// (`StandardSpotCores`): the CPU requests of its Spot groups together.
    pub spot_core_quota: u32,
    /// API rate limits as token buckets ([`limits`]); none by default,
    /// [`limits::RateLimit::published`] for ARM's and ACI's published ones.
    pub rate_limits: Vec<limits::RateLimit>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("subscription_id", &self.subscription_id)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("location", &self.location)
            .field("resource_groups", &self.resource_groups)
            .field("page_size", &self.page_size)
            .field("create_delay", &self.create_delay)
            .field("delete_delay", &self.delete_delay)
            .field("restart_delay", &self.restart_delay)
            .field("spec_path", &self.spec_path)
            .field("bind", &self.bind)
            .field("container_group_quota", &self.container_group_quota)
            .field("core_quota", &self.core_quota)
            .field("spot_core_quota", &self.spot_core_quota)
            .field("rate_limits", &self.rate_limits)
            .finish()
    }
}

/// The spec's default path: `$SKYLET_ACI_SPEC`, else
/// `<CARGO_MANIFEST_DIR>/../../../shared/specs/aci/containerInstance.json`.
pub fn default_spec_path() -> PathBuf {
    match std::env::var_os("SKYLET_ACI_SPEC") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/specs/aci/containerInstance.json"),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            tenant_id: "00000000-0000-0000-0000-0000000000aa".into(),
            client_id: "skylet-test".into(),
            client_secret: "test-secret".into(),
            location: "westeurope".into(),
            resource_groups: vec!["skylet-rg".into()],
            page_size: 100,
            create_delay: Duration::from_millis(300),
            delete_delay: Duration::from_millis(200),
            restart_delay: Duration::from_millis(200),
            spec_path: default_spec_path(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            container_group_quota: 100,
            core_quota: 100,
            spot_core_quota: 100,
            rate_limits: Vec::new(),
        }
    }
}

/// Request counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests per spec `operationId` (`ContainerGroups_ListByResourceGroup`),
    /// plus `Token` (token endpoint), `OperationStatus` (LRO polling) and
    /// `WebSocket_Exec` / `WebSocket_Attach` (socket connections) and `Batch`
    /// (Azure Monitor metrics, [`monitor`]); throttled
    /// and rejected requests count too.
    pub requests: BTreeMap<String, u64>,
    /// Requests answered 429, by [`Emulator::throttle`] or a rate limit.
    pub throttled: u64,
    /// The rate limits' buckets by name ([`Config::rate_limits`]).
    pub limits: BTreeMap<String, limits::BucketStats>,
    /// Requests answered with a 4xx status.
    pub rejected: u64,
    /// Answers that broke the spec (emulator bugs, sent as 500).
    pub invalid_responses: u64,
}

impl Stats {
    /// The count for one operation (0 if never called).
    pub fn count(&self, operation_id: &str) -> u64 {
        self.requests.get(operation_id).copied().unwrap_or(0)
    }
}

/// ARM's per-hour subscription read/write budget, for the
/// `x-ms-ratelimit-remaining-subscription-*` headers (never enforced).
struct RateWindow {
    start: std::time::Instant,
    reads: u32,
    writes: u32,
}

/// ARM's hourly budgets per subscription.
const READS_PER_HOUR: u32 = 12_000;
const WRITES_PER_HOUR: u32 = 1_200;

struct Throttle {
    remaining: u32,
    retry_after: Duration,
}

/// State shared by every handler and simulation task.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) spec: spec::Spec,
    pub(crate) base_url: String,
    pub(crate) store: Mutex<state::Store>,
    pub(crate) tokens: token::Tokens,
    pub(crate) sessions: Mutex<HashMap<String, ws::Session>>,
    stats: Mutex<Stats>,
    throttle: Mutex<Throttle>,
    limits: Mutex<limits::Limits>,
    /// Whether the location has room for new groups.
    capacity_available: std::sync::atomic::AtomicBool,
    requests: Mutex<HashMap<String, Vec<Value>>>,
    ratelimit: Mutex<RateWindow>,
    pub(crate) tasks: TaskTracker,
    shutdown: CancellationToken,
    ca_pem: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, state::Store> {
        lock(&self.store)
    }

    pub(crate) fn count(&self, operation_id: &str) {
        *lock(&self.stats)
            .requests
            .entry(operation_id.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn count_rejected(&self) {
        lock(&self.stats).rejected += 1;
    }

    pub(crate) fn count_invalid_response(&self) {
        lock(&self.stats).invalid_responses += 1;
    }

    /// Takes one throttled call if any are left: its Retry-After.
    pub(crate) fn take_throttle(&self) -> Option<Duration> {
        let mut t = lock(&self.throttle);
        if t.remaining == 0 {
            return None;
        }
        t.remaining -= 1;
        let after = t.retry_after;
        drop(t);
        lock(&self.stats).throttled += 1;
        Some(after)
    }

    /// Counts one call in the hour's window: the header name and what is left.
    pub(crate) fn ratelimit(&self, read: bool) -> (&'static str, u32) {
        let mut w = lock(&self.ratelimit);
        if w.start.elapsed() >= Duration::from_secs(3600) {
            *w = RateWindow {
                start: std::time::Instant::now(),
                reads: 0,
                writes: 0,
            };
        }
        if read {
            w.reads = w.reads.saturating_add(1);
            (
                "x-ms-ratelimit-remaining-subscription-reads",
                READS_PER_HOUR.saturating_sub(w.reads),
            )
        } else {
            w.writes = w.writes.saturating_add(1);
            (
                "x-ms-ratelimit-remaining-subscription-writes",
                WRITES_PER_HOUR.saturating_sub(w.writes),
            )
        }
    }

    pub(crate) fn record_request(&self, operation_id: &str, body: Value) {
        lock(&self.requests)
            .entry(operation_id.to_owned())
            .or_default()
            .push(body);
    }

    fn stats(&self) -> Stats {
        let mut s = lock(&self.stats).clone();
        s.limits = lock(&self.limits).stats();
        s
    }

    /// Takes a token of every rate-limit bucket covering `what`; else the
    /// wait until the empty one has one (counted as throttled).
    pub(crate) fn take_limit(&self, what: limits::Covers) -> Result<(), Duration> {
        let r = lock(&self.limits).take(what);
        if r.is_err() {
            lock(&self.stats).throttled += 1;
        }
        r
    }

    /// Whether the location has room for new groups now.
    pub(crate) fn capacity_available(&self) -> bool {
        self.capacity_available
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_capacity_available(&self, available: bool) {
        self.capacity_available
            .store(available, std::sync::atomic::Ordering::Relaxed);
    }

    fn set_throttle(&self, requests: u32, retry_after: Duration) {
        *lock(&self.throttle) = Throttle {
            remaining: requests,
            retry_after,
        };
    }

    fn requests(&self, operation_id: &str) -> Vec<Value> {
        lock(&self.requests)
            .get(operation_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The stored groups with write-only values (test assertions only).
    fn groups(&self) -> Vec<Value> {
        let store = self.lock_store();
        store
            .groups
            .values()
            .map(|g| {
                let mut m = g.identified(&self.config.subscription_id);
                m.insert(
                    "provisioningState".into(),
                    Value::String(g.provisioning.into()),
                );
                m.insert("state".into(), Value::String(g.state().into()));
                Value::Object(m)
            })
            .collect()
    }

    fn set_container_exit(&self, rg: &str, group: &str, container: &str, code: i32) -> bool {
        self.lock_store()
            .groups
            .get_mut(&state::key(rg, group))
            .is_some_and(|g| g.set_exit(container, code))
    }
}

/// A running emulator. Dropping it without [`Emulator::shutdown`] leaves the
/// server running until the runtime ends.
pub struct Emulator {
    app: Arc<App>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.app.base_url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Loads the spec, makes the CA, binds `config.bind` and serves.
    ///
    /// # Errors
    /// When the spec cannot be loaded, TLS cannot be set up, the address
    /// cannot be bound, or the config is unusable.
    pub async fn start(config: Config) -> Result<Self, Error> {
        if config.page_size == 0 {
            return Err(Error::Config("page_size must be at least 1".into()));
        }
        if config.resource_groups.is_empty() {
            return Err(Error::Config(
                "at least one resource group is needed".into(),
            ));
        }
        let spec = spec::Spec::load(&config.spec_path)?;
        let tls = tls::generate()?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let rate_limits = limits::Limits::new(&config.rate_limits);
        let app = Arc::new(App {
            base_url: format!("https://{addr}"),
            config,
            spec,
            store: Mutex::default(),
            tokens: token::Tokens::default(),
            sessions: Mutex::default(),
            stats: Mutex::default(),
            throttle: Mutex::new(Throttle {
                remaining: 0,
                retry_after: Duration::ZERO,
            }),
            limits: Mutex::new(rate_limits),
            capacity_available: std::sync::atomic::AtomicBool::new(true),
            requests: Mutex::default(),
            ratelimit: Mutex::new(RateWindow {
                start: std::time::Instant::now(),
                reads: 0,
                writes: 0,
            }),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            ca_pem: tls.ca_pem,
        });
        let router = router(app.clone());
        let acceptor = TlsAcceptor::from(tls.server);
        let span = tracing::info_span!("aci_emulator", %addr);
        let server =
            tokio::spawn(serve(listener, acceptor, router, app.shutdown.clone()).instrument(span));
        tracing::info!(url = %app.base_url, "ACI emulator listening");
        Ok(Self { app, server })
    }

    /// The base URL of ARM, Entra ID and the WebSockets: `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.app.base_url.clone()
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.app.ca_pem
    }

    /// Writes [`Emulator::ca_pem`] to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_ca(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, &self.app.ca_pem)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.app.config
    }

    /// Request counts so far.
    pub fn stats(&self) -> Stats {
        self.app.stats()
    }

    /// The next `requests` ARM calls are answered 429 with `Retry-After`
    /// (whole seconds, rounded up).
    pub fn throttle(&self, requests: u32, retry_after: Duration) {
        self.app.set_throttle(requests, retry_after);
    }

    /// With `false`, the location has no room for new groups: creating one
    /// is answered 409 `ServiceUnavailable`, "The requested resource is not
    /// available in the location ... at this moment", as ARM does when a
    /// region runs out of capacity (updates of existing groups still pass);
    /// `true` ends that.
    pub fn set_capacity_available(&self, available: bool) {
        self.app.set_capacity_available(available);
    }

    /// The request bodies of an operation as received (before validation),
    /// oldest first.
    pub fn requests(&self, operation_id: &str) -> Vec<Value> {
        self.app.requests(operation_id)
    }

    /// The stored groups, write-only values included, plus `id`, `name`,
    /// `provisioningState` and `state` at the top level.
    pub fn groups(&self) -> Vec<Value> {
        self.app.groups()
    }

    /// Makes a running container end with `code` (then the restart policy
    /// applies). Does nothing when it is not running.
    pub fn set_container_exit(&self, rg: &str, group: &str, container: &str, code: i32) {
        if !self.app.set_container_exit(rg, group, container, code) {
            tracing::warn!(
                rg,
                group,
                container,
                "set_container_exit: no such running container"
            );
        }
    }

    /// Stops serving and every simulation.
    pub async fn shutdown(self) {
        self.app.shutdown.cancel();
        for g in self.app.lock_store().groups.values() {
            g.generation.cancel();
        }
        let _ = self.server.await;
        self.app.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.app.tasks.wait()).await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(token::openid),
        )
        .route(
            "/subscriptions/{sub}/metrics:getBatch",
            post(monitor::batch),
        )
        .route("/exec/{id}", get(ws::exec))
        .route("/attach/{id}", get(ws::attach))
        .nest("/_emulator", control::router())
        .fallback(arm::handle)
        .with_state(app)
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) {
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        conns.spawn(
            async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                    }
                }
            }
            .in_current_span(),
        );
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), conns.wait()).await;
}
