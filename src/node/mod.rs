//! The Node of one backend: registration, the Lease heartbeat ([`lease`]),
//! conditions and taints from the backend's health and capacity
//! ([`health`], [`status`]), Events when the backend goes down or comes
//! back, and what happens to the Node on shutdown.
//!
//! The Node status is written only when something changed or once a
//! minute, which keeps apiserver writes low; liveness travels through the
//! Lease.
//!
//! # RBAC
//! `nodes`: get, create, patch, delete; `nodes/status`: patch;
//! `leases` in `kube-node-lease`: get, create, update, patch;
//! `events` (events.k8s.io): create, patch.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Taint};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;
use skylet_provider::Provider;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{FailoverConfig, NodeConfig, NodeOnShutdown},
    metrics::{NodeMetrics, timed},
};

pub mod health;
mod lease;
mod status;

pub use status::{PRICE_MEMORY_GIB_HOUR, PRICE_VCPU_HOUR};

use health::{CAPACITY_TAINT, Change, Cooldown, Health};

/// Why the Node could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or reading the Node failed.
    #[error("failed to create or read node {node}")]
    Register { node: String, source: kube::Error },
    /// Updating an existing Node failed.
    #[error("failed to update node {node}")]
    Update { node: String, source: kube::Error },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `nodeInfo.kubeletVersion` skylet reports: the Kubernetes API level it
/// speaks, with skylet's own version as build metadata.
pub const KUBELET_VERSION: &str = concat!("v1.36.3+skylet.", env!("CARGO_PKG_VERSION"));

/// The labels every skylet node carries (before the provider's and the
/// configured ones): what users select virtual nodes by.
pub fn base_labels(node: &str, provider: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("type", "virtual-kubelet"),
        ("kubernetes.io/role", "agent"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        (
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "true",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    labels.insert("kubernetes.io/hostname".into(), node.to_owned());
    labels.insert("skylet.io/provider".into(), provider.to_owned());
    labels
}

/// How often the full Node status is written even when nothing changed.
const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How long to wait between retries of a failed registration.
pub const REGISTER_RETRY: Duration = Duration::from_secs(2);

/// What the pod controller tells the node: refusals for lack of capacity,
/// and how many pods the backend holds. Shared by both.
#[derive(Debug)]
pub struct Signals {
    /// The capacity-exhausted cooldown.
    pub cooldown: Cooldown,
    held: AtomicUsize,
    down: AtomicBool,
    changed: Notify,
    recovered: Notify,
}

impl Signals {
    /// Signals with the cooldown of `failover`.
    pub fn new(failover: &FailoverConfig) -> Arc<Self> {
        Arc::new(Self {
            cooldown: Cooldown::new(
                failover.capacity_cooldown_min,
                failover.capacity_cooldown_max,
            ),
            held: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            changed: Notify::new(),
            recovered: Notify::new(),
        })
    }

    /// The backend refused a pod for lack of capacity; returns how long
    /// the node stays tainted.
    pub fn capacity_refused(&self) -> Duration {
        let d = self.cooldown.refused(Instant::now(), self.held());
        self.changed.notify_one();
        d
    }

    /// The backend now holds `pods` pods.
    pub fn held_pods(&self, pods: usize) {
        if self.held.swap(pods, Ordering::Relaxed) > pods {
            // capacity freed: the taint may go
            self.changed.notify_one();
        }
    }

    /// Whether the backend counts as down (after the health hysteresis).
    pub fn backend_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Waits until the backend answers again after an outage.
    pub async fn recovered(&self) {
        self.recovered.notified().await;
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn capacity_exhausted(&self) -> bool {
        self.cooldown.tainted(Instant::now(), self.held())
    }
}

/// Registers and maintains the Node.
pub struct NodeController<P> {
    client: Client,
    provider: Arc<P>,
    config: NodeConfig,
    metrics: NodeMetrics,
    signals: Arc<Signals>,
    recorder: Recorder,
    health: Mutex<Health>,
    transitions: Mutex<status::Transitions>,
    stopped: AtomicBool,
    /// The Node's UID (owner of the Lease, subject of Events).
    uid: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<P: Provider> NodeController<P> {
    /// A controller for the Node described by `config`.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        config: NodeConfig,
        failover: &FailoverConfig,
        signals: Arc<Signals>,
        metrics: NodeMetrics,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "skylet".into(),
                instance: Some(config.name.clone()),
            },
        );
        Arc::new(Self {
            client,
            provider,
            config,
            metrics,
            signals,
            recorder,
            health: Mutex::new(Health::new(
                failover.unhealthy_after,
                failover.healthy_after,
            )),
            transitions: Mutex::default(),
            stopped: AtomicBool::new(false),
            uid: Mutex::new(None),
        })
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The Node as skylet wants it now: metadata, spec and status.
    pub fn desired(&self) -> Node {
        let conditions = status::conditions(
            self.provider.name(),
            &lock(&self.health),
            self.stopped.load(Ordering::Relaxed),
            &mut lock(&self.transitions),
            Timestamp::now(),
        );
        status::node(
            &self.config,
            &*self.provider,
            conditions,
            self.signals.capacity_exhausted(),
        )
    }

    /// Whether skylet manages the taint `key`: the configured ones (or the
    /// provider's default) and the capacity taint.
    fn managed(key: &str, mine: &[Taint]) -> bool {
        key == CAPACITY_TAINT || key == status::PROVIDER_TAINT || mine.iter().any(|t| t.key == key)
    }

    /// `existing`'s taints that others manage (the node lifecycle
    /// controller's `node.kubernetes.io/*`, an operator's), plus `mine`.
    fn merged_taints(existing: &Node, mine: Vec<Taint>) -> Vec<Taint> {
        let mut taints = mine;
        for t in existing
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
        {
            if !Self::managed(&t.key, &taints) {
                taints.push(t);
            }
        }
        taints
    }

    /// Creates the Node, or brings an existing one up to date (a restart).
    pub async fn register(&self) -> Result<()> {
        let _ = self.ping().await;
        let desired = self.desired();
        let name = self.config.name.clone();
        let nodes = self.nodes();
        let node = match nodes.create(&PostParams::default(), &desired).await {
            Ok(n) => {
                tracing::info!(node = %name, "registered node");
                n
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = nodes.get(&name).await.map_err(|source| Error::Register {
                    node: name.clone(),
                    source,
                })?;
                // an unchanged condition keeps its transition time across a restart
                lock(&self.transitions).seed(
                    existing
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_deref())
                        .unwrap_or_default(),
                );
                let mine = desired.spec.and_then(|s| s.taints).unwrap_or_default();
                let patch = json!({
                    "metadata": {"labels": desired.metadata.labels, "annotations": desired.metadata.annotations},
                    "spec": {"taints": Self::merged_taints(&existing, mine)},
                });
                let n = nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| Error::Update {
                        node: name.clone(),
                        source,
                    })?;
                tracing::info!(node = %name, "node exists; updated it");
                n
            }
            Err(source) => return Err(Error::Register { node: name, source }),
        };
        *lock(&self.uid) = node.metadata.uid.clone();
        // the Lease first: a node that reports Ready has a fresh heartbeat
        if let Err(e) = self.renew_lease().await {
            tracing::warn!(error = %e, "first lease renewal failed; retrying in the loop");
        }
        self.write_status().await.map_err(|source| Error::Update {
            node: self.config.name.clone(),
            source,
        })?;
        Ok(())
    }

    /// Pings the backend; returns the change of health it made.
    async fn ping(&self) -> Option<Change> {
        let r = timed(&self.metrics, "ping", self.provider.ping()).await;
        if let Err(e) = &r {
            tracing::warn!(error = %e, "backend ping failed");
        }
        lock(&self.health).observe(r.map_err(|e| e.to_string()))
    }

    async fn write_status(&self) -> Result<(), kube::Error> {
        let desired = self.desired();
        let patch = json!({"status": desired.status});
        self.nodes()
            .patch_status(
                &self.config.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Writes the taints if skylet's differ from `existing`'s, guarded by
    /// its resourceVersion (a taint someone adds meanwhile is not lost).
    async fn write_taints(
        &self,
        existing: &Node,
        capacity_exhausted: bool,
    ) -> Result<(), kube::Error> {
        let mine = status::taints(&self.config, self.provider.name(), capacity_exhausted);
        let want = Self::merged_taints(existing, mine);
        let have = existing
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let key = |t: &Taint| (t.key.clone(), t.value.clone(), t.effect.clone());
        let (mut a, mut b): (Vec<_>, Vec<_>) = (
            want.iter().map(key).collect(),
            have.iter().map(key).collect(),
        );
        a.sort();
        b.sort();
        if a == b {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": existing.metadata.resource_version},
            "spec": {"taints": want},
        });
        self.nodes()
            .patch(
                &self.config.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(capacity_exhausted, "node taints updated");
        Ok(())
    }

    async fn renew_lease(&self) -> Result<(), kube::Error> {
        let uid = lock(&self.uid).clone();
        lease::renew(
            &self.client,
            &self.config.name,
            uid,
            self.config.lease_duration,
        )
        .await
    }

    /// Records an Event on the Node.
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.config.name.clone()),
            uid: lock(&self.uid).clone(),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Ping".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "failed to record a node event");
        }
    }

    /// Renews the Lease, watches the backend's health and capacity, and
    /// keeps the Node's status and taints current, until `shutdown`. Never
    /// returns an error: failures are logged and retried.
    ///
    /// It also watches its own Node: when someone else changes the Ready
    /// condition (the node lifecycle controller marks it Unknown after an
    /// apiserver outage), the status is written again at once instead of at
    /// the next periodic report. A watch costs no requests while idle.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let wc = kube::runtime::watcher::Config::default()
            .fields(&format!("metadata.name={}", self.config.name));
        let own =
            kube::runtime::WatchStreamExt::applied_objects(kube::runtime::WatchStreamExt::backoff(
                kube::runtime::watcher(self.nodes(), wc),
                crate::watch_backoff(),
            ));
        futures::pin_mut!(own);
        let mut lease_tick = tokio::time::interval(self.config.lease_duration / 4);
        let mut ping_tick = tokio::time::interval(self.config.ping_interval);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report = tokio::time::Instant::now();
        let mut status_dirty = false;
        let mut last_capacity = self.desired().status.and_then(|s| s.allocatable);
        let mut seen: Option<Node> = None;
        let mut taints_dirty = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(ev) = futures::StreamExt::next(&mut own) => {
                    let Ok(n) = ev else { continue };
                    let want = if lock(&self.health).is_up() { "True" } else { "False" };
                    let ready = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
                    if ready.is_none_or(|c| c.status != want) {
                        tracing::info!(want, "node Ready condition was changed by someone else; writing it again");
                        match self.write_status().await {
                            Ok(()) => last_report = tokio::time::Instant::now(),
                            Err(e) => { status_dirty = true; tracing::warn!(error = %e, "node status update failed; retrying"); }
                        }
                    }
                    seen = Some(n);
                }
                () = self.signals.changed.notified() => taints_dirty = true,
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(error = %e, "lease renewal failed; retrying");
                    }
                }
                _ = ping_tick.tick() => {
                    match self.ping().await {
                        Some(Change::Down) => {
                            self.signals.down.store(true, Ordering::Relaxed);
                            let why = lock(&self.health).last_error().unwrap_or("no answer").to_owned();
                            tracing::warn!(error = %why, "backend does not answer; node is NotReady");
                            self.event(EventType::Warning, "BackendDown", format!("backend {} ({}) does not answer: {why}", self.config.name, self.provider.name())).await;
                            status_dirty = true;
                        }
                        Some(Change::Up) => {
                            self.signals.down.store(false, Ordering::Relaxed);
                            tracing::info!("backend answers again; node is Ready");
                            self.event(EventType::Normal, "BackendRecovered", format!("backend {} ({}) answers again", self.config.name, self.provider.name())).await;
                            self.signals.recovered.notify_one();
                            status_dirty = true;
                        }
                        None => {}
                    }
                    // capacity follows the backend (quota used elsewhere, a
                    // remote cluster that scales)
                    let capacity = self.desired().status.and_then(|s| s.allocatable);
                    status_dirty |= capacity != last_capacity;
                    last_capacity = capacity;
                    if status_dirty || last_report.elapsed() >= STATUS_REPORT_INTERVAL {
                        match self.write_status().await {
                            Ok(()) => { status_dirty = false; last_report = tokio::time::Instant::now(); }
                            Err(e) => tracing::warn!(error = %e, "node status update failed; retrying"),
                        }
                    }
                    // the cooldown may have ended
                    taints_dirty = true;
                }
            }
            self.metrics
                .backend_up
                .set(i64::from(lock(&self.health).is_up()));
            if taints_dirty && let Some(n) = &seen {
                let exhausted = self.signals.capacity_exhausted();
                self.metrics.capacity_exhausted.set(i64::from(exhausted));
                match self.write_taints(n, exhausted).await {
                    // the watch brings the new object; until then `seen` is
                    // stale and a second write would conflict
                    Ok(()) => taints_dirty = false,
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => tracing::warn!(error = %e, "node taint update failed; retrying"),
                }
            }
        }
    }

    /// Leaves the Node as configured: marks it NotReady, or deletes it.
    pub async fn on_shutdown(&self) {
        let name = &self.config.name;
        match self.config.on_shutdown {
            NodeOnShutdown::Delete => match self.nodes().delete(name, &Default::default()).await {
                Ok(_) => tracing::info!(node = %name, "deleted node"),
                Err(e) => tracing::warn!(node = %name, error = %e, "failed to delete node"),
            },
            NodeOnShutdown::Keep => {
                self.stopped.store(true, Ordering::Relaxed);
                lock(&self.health).stopped("skylet stopped");
                let conds = self.desired().status.and_then(|s| s.conditions);
                let patch = json!({"status": {"conditions": conds}});
                let r = self
                    .nodes()
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                match r {
                    Ok(_) => tracing::info!(node = %name, "marked node NotReady"),
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "failed to mark node NotReady")
                    }
                }
            }
        }
    }
}
