//! The Node: registration, the Lease heartbeat, conditions from the backend's
//! health, and what happens to the Node on shutdown.
//!
//! Like the kubelet since v1.17, liveness travels through the Lease in
//! `kube-node-lease` (renewed every quarter of its duration, one small write),
//! and the Node status is written only when something changed or once a
//! minute, which keeps apiserver writes low.
//!
//! # RBAC
//! `nodes`: get, create, patch, delete; `nodes/status`: patch;
//! `leases` in `kube-node-lease`: get, create, update, patch.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
            NodeStatus, NodeSystemInfo, Taint,
        },
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use skylet_provider::Provider;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{NodeConfig, NodeOnShutdown},
    metrics::{Metrics, timed},
};

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

/// Registers and maintains the Node.
pub struct NodeController<P> {
    client: Client,
    provider: Arc<P>,
    config: NodeConfig,
    metrics: Arc<Metrics>,
    /// The last ping error, `None` when the backend answered.
    health: Mutex<Option<String>>,
    /// The Node's UID (owner of the Lease).
    uid: Mutex<Option<String>>,
}

impl<P: Provider> NodeController<P> {
    /// A controller for the Node described by `config`.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        config: NodeConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            provider,
            config,
            metrics,
            health: Mutex::new(None),
            uid: Mutex::new(None),
        })
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The taints the node carries: configured, or the provider's default.
    fn taints(&self) -> Vec<Taint> {
        self.config.taints.clone().unwrap_or_else(|| {
            vec![Taint {
                key: "virtual-kubelet.io/provider".into(),
                value: Some(self.provider.name().into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }]
        })
    }

    /// The Node as skylet wants it: metadata, spec and status.
    pub fn desired(&self) -> Node {
        let labels = base_labels(&self.config.name, self.provider.name());
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(self.taints()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.config.ip.to_string(),
                }]),
                daemon_endpoints: Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint {
                        port: i32::from(self.config.port),
                    }),
                }),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    kubelet_version: KUBELET_VERSION.into(),
                    container_runtime_version: format!(
                        "skylet://{} ({})",
                        env!("CARGO_PKG_VERSION"),
                        self.provider.name()
                    ),
                    os_image: format!("skylet {} provider", self.provider.name()),
                    kernel_version: String::new(),
                    machine_id: String::new(),
                    system_uuid: String::new(),
                    boot_id: String::new(),
                    kube_proxy_version: String::new(),
                    ..Default::default()
                }),
                conditions: Some(self.conditions()),
                // kube-apiserver 1.36 sends WebSocket streams straight to a kubelet
                // that declares this; skylet serves them (server::streaming)
                declared_features: self
                    .config
                    .websocket_to_kubelet
                    .then(|| vec!["ExtendWebSocketsToKubelet".to_owned()]),
                ..Default::default()
            }),
        };
        self.provider.configure_node(&mut node);
        // configured labels win over the provider's
        if let Some(l) = node.metadata.labels.as_mut() {
            l.extend(self.config.labels.clone());
        }
        node
    }

    fn conditions(&self) -> Vec<NodeCondition> {
        let now = Time(Timestamp::now());
        let health = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let cond = |type_: &str, status: &str, reason: &str, message: String| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        };
        let ready = match &health {
            None => cond(
                "Ready",
                "True",
                "KubeletReady",
                format!(
                    "skylet is posting ready status; backend {} reachable",
                    self.provider.name()
                ),
            ),
            Some(e) => cond(
                "Ready",
                "False",
                "ProviderUnreachable",
                format!("backend {} does not answer: {e}", self.provider.name()),
            ),
        };
        vec![
            ready,
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "the backend manages memory".into(),
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "the backend manages disk".into(),
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "the backend manages processes".into(),
            ),
            cond(
                "NetworkUnavailable",
                "False",
                "RouteCreated",
                "the backend provides pod networking".into(),
            ),
        ]
    }

    /// Creates the Node, or brings an existing one up to date (a restart).
    pub async fn register(&self) -> Result<()> {
        let _ = timed(&self.metrics, "ping", self.ping_once()).await;
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
                // keep taints that others (the node lifecycle controller) manage
                let mut taints = self.taints();
                for t in existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                {
                    if t.key.starts_with("node.kubernetes.io/")
                        && !taints.iter().any(|o| o.key == t.key)
                    {
                        taints.push(t);
                    }
                }
                let patch = json!({
                    "metadata": {"labels": desired.metadata.labels},
                    "spec": {"taints": taints},
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
        *self
            .uid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = node.metadata.uid.clone();
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

    async fn ping_once(&self) -> skylet_provider::Result<()> {
        let r = self.provider.ping().await;
        *self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            r.as_ref().err().map(ToString::to_string);
        r
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

    async fn renew_lease(&self) -> Result<(), kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let name = &self.config.name;
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(40);
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now}});
        match leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let uid = self
                    .uid
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        // deleted with the Node, as the kubelet's
                        owner_references: uid.map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: name.clone(),
                                uid,
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(name.clone()),
                        lease_duration_seconds: Some(duration),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease and watches the backend's health until `shutdown`.
    /// Never returns an error: failures are logged and retried.
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
        let mut last_ready = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none();
        let mut status_dirty = false;
        let mut last_capacity = self.desired().status.and_then(|s| s.allocatable);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(ev) = futures::StreamExt::next(&mut own) => {
                    let Ok(n) = ev else { continue };
                    let want = if last_ready { "True" } else { "False" };
                    let ready = n.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
                    if ready.is_none_or(|c| c.status != want) {
                        tracing::info!(want, "node Ready condition was changed by someone else; writing it again");
                        match self.write_status().await {
                            Ok(()) => last_report = tokio::time::Instant::now(),
                            Err(e) => { status_dirty = true; tracing::warn!(error = %e, "node status update failed; retrying"); }
                        }
                    }
                }
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(error = %e, "lease renewal failed; retrying");
                    }
                }
                _ = ping_tick.tick() => {
                    let r = timed(&self.metrics, "ping", self.ping_once()).await;
                    let ready = r.is_ok();
                    if let Err(e) = &r {
                        tracing::warn!(error = %e, "backend ping failed; node is NotReady");
                    } else if !last_ready {
                        tracing::info!("backend answers again; node is Ready");
                    }
                    status_dirty |= ready != last_ready;
                    last_ready = ready;
                    // capacity follows the backend (a remote cluster scales)
                    let capacity = self.desired().status.and_then(|s| s.allocatable);
                    status_dirty |= capacity != last_capacity;
                    last_capacity = capacity;
                    if status_dirty || last_report.elapsed() >= STATUS_REPORT_INTERVAL {
                        match self.write_status().await {
                            Ok(()) => { status_dirty = false; last_report = tokio::time::Instant::now(); }
                            Err(e) => tracing::warn!(error = %e, "node status update failed; retrying"),
                        }
                    }
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
                *self
                    .health
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some("skylet stopped".into());
                let mut conds = self.conditions();
                if let Some(ready) = conds.first_mut() {
                    ready.reason = Some("KubeletStopped".into());
                    ready.message = Some(
                        "skylet was stopped; pods keep running in the backend until deleted".into(),
                    );
                }
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

/// How long to wait between retries of a failed registration.
pub const REGISTER_RETRY: Duration = Duration::from_secs(2);
