#![warn(missing_docs)]
//! The contract between skylet's core and a backend.
//!
//! A backend does CRUD and observation; the core owns everything else: the
//! watch on pods, per-pod reconcile with backoff, status writes, Events, the
//! kubelet API and its authorization. This keeps each backend small and makes
//! its behaviour uniform (after virtual-kubelet's node/podcontroller.go, and
//! unlike krustlet, whose backends each drove a state machine of their own).
//!
//! # Guarantees the core gives a backend
//! - [`Provider::create_pod`] receives a [`ResolvedPod`]: every ConfigMap,
//!   Secret, downward-API and service-account reference is already resolved to
//!   values, with Secret-derived values marked so a backend can keep them out
//!   of plain text.
//! - Calls for one pod are serialized; calls for different pods run
//!   concurrently.
//! - [`Provider::list_pods`] is called once per sweep, never once per pod.
//!
//! - The core records every Kubernetes Event and runs every task: a backend
//!   reports through the [`Sink`] it was built with and does its background
//!   work in [`Provider::run`], under the core's shutdown token.
//!
//! # What the core expects of a backend
//! - `create_pod` is keyed by the pod UID and safe to repeat, also after a
//!   crash between the backend call and the core noticing it.
//! - Every backend resource carries the pod UID and the node name, so a
//!   restarted skylet adopts what exists and a sweep deletes what no pod owns.
//! - It owns its settings and construction ([`Kind`]).
//!
//! # What a backend finds here
//! Pieces every backend needs once: [`Backoff`], [`BoundedSet`], log
//! rendering, `limitBytes` and following by polling ([`logs`]), API metrics
//! with one naming scheme ([`metrics`]), spec checks ([`checks`]), exact
//! Kubernetes quantities ([`quantity`]), the size a pod is billed for
//! ([`billing`]), cumulative CPU counters from rate samples ([`usage`]),
//! client-side token buckets of a cloud's API rate limits ([`ratelimit`])
//! and, with feature `testing`, a pod builder (the `testing` module).

use std::{collections::BTreeMap, fmt, future::Future, io, pin::Pin, time::Duration};

use bytes::Bytes;
use futures::stream::BoxStream;
pub use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};

pub mod backoff;
pub mod billing;
pub mod bounded;
pub mod checks;
mod error;
pub mod exit_marker;
pub mod kind;
pub mod logs;
pub mod metrics;
pub mod quantity;
pub mod ratelimit;
mod sink;
mod streams;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;

pub use backoff::Backoff;
pub use billing::BilledSize;
pub use bounded::BoundedSet;
pub use error::{BoxError, ErrorClass, ProviderError, Result};
pub use kind::{BuildContext, ConfigError, Kind, NodeContext, parse_capacity};
pub use kube::runtime::events::EventType;
pub use metrics::ApiMetrics;
pub use sink::{BackendEvent, PodEvent, Sink, SinkReceiver};
pub use streams::{AttachIo, Duplex, ExecIo, ExitStatus, PortStream, Reader, TermSize, Writer};
pub use tokio_util::sync::CancellationToken;

/// The identity of a pod: namespace, name and UID.
///
/// The UID is what backends key their resources by; namespace and name are for
/// humans (tags, log stream names) and for finding the Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// `metadata.uid` of the pod.
    pub uid: String,
}

impl PodRef {
    /// A reference from its three parts.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// The reference of a Kubernetes pod object (empty parts where unset).
    pub fn of(pod: &Pod) -> Self {
        let m = &pod.metadata;
        Self {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

/// A value the core resolved for a backend; `secret` when it came from a
/// Secret (or a service-account token), so a backend must not store it in
/// plain text and must never log it.
#[derive(Clone, PartialEq, Eq)]
pub struct Value {
    /// The resolved bytes (UTF-8 for environment variables).
    pub data: Bytes,
    /// Whether the value is secret.
    pub secret: bool,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            write!(f, "Value(<secret, {} bytes>)", self.data.len())
        } else {
            write!(f, "Value({:?})", String::from_utf8_lossy(&self.data))
        }
    }
}

impl Value {
    /// A plain (non-secret) value.
    pub fn plain(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            secret: false,
        }
    }

    /// A secret value.
    pub fn secret(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            secret: true,
        }
    }

    /// The value as text (lossy for non-UTF-8 bytes).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// One file of a resolved volume, relative to the volume's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path below the mount point, without a leading `/` (`config/app.yaml`).
    pub path: String,
    /// File mode, e.g. `0o644`.
    pub mode: u32,
    /// Contents.
    pub value: Value,
}

/// A pod with every reference resolved, as the core hands it to a backend.
#[derive(Clone, Debug)]
pub struct ResolvedPod {
    /// The pod object as stored in Kubernetes.
    pub pod: Pod,
    /// Environment per container name (init containers included), in the order
    /// Kubernetes defines: `envFrom` first, then `env`, later entries winning.
    pub env: BTreeMap<String, Vec<(String, Value)>>,
    /// Contents of the configMap, secret, downwardAPI and projected volumes, by
    /// volume name. Volumes of other kinds (emptyDir, CSI, ...) are absent and
    /// left for the backend to map or refuse, except CSI volumes that name a
    /// Secret (`nodePublishSecretRef`, or the `secretName` volume attribute
    /// of the Azure Files driver): that Secret's keys are here as files.
    pub volumes: BTreeMap<String, Vec<VolumeFile>>,
    /// The pod's `imagePullSecrets`, by Secret name: the contents of its
    /// `.dockerconfigjson` (or legacy `.dockercfg`) key, always secret.
    /// Missing pull Secrets are skipped, as the kubelet does.
    pub image_pull_secrets: Vec<(String, Value)>,
}

impl ResolvedPod {
    /// A pod with nothing resolved (tests, and pods that reference nothing).
    pub fn bare(pod: Pod) -> Self {
        Self {
            pod,
            env: BTreeMap::new(),
            volumes: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
        }
    }

    /// The reference of the pod.
    pub fn pod_ref(&self) -> PodRef {
        PodRef::of(&self.pod)
    }
}

/// What a backend reports about one pod it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendPod {
    /// Which pod.
    pub pod: PodRef,
    /// Its status as the backend sees it; the core merges it into the pod's
    /// status (phase, conditions, container statuses, IPs).
    pub status: PodStatus,
}

/// One page of the backend's pods ([`Provider::list_page`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListPage {
    /// The page's pods.
    pub pods: Vec<BackendPod>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

/// What [`Provider::delete_pod`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The pod no longer exists in the backend.
    Gone,
    /// The backend is stopping it; it will report when it is gone.
    Stopping,
}

/// Options of a log request, as the kubelet API receives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new lines as they arrive.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// The previous instance of the container.
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// Resource usage of one container, for `/stats/summary` and `/metrics/resource`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerStats {
    /// Container name.
    pub name: String,
    /// When the container started.
    pub start_time: Option<jiff::Timestamp>,
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_core_nanoseconds: u64,
    /// Working set in bytes.
    pub memory_working_set_bytes: u64,
    /// CPU in use now, in nanocores, when the backend reports a rate
    /// (`usageNanoCores` of `/stats/summary`; otherwise the average since
    /// the container started).
    pub usage_nano_cores: Option<u64>,
}

/// Resource usage of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodStats {
    /// Which pod.
    pub pod: PodRef,
    /// When the pod started.
    pub start_time: Option<jiff::Timestamp>,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
}

/// A boxed, sendable future, for the few trait methods that must be object-safe
/// in their arguments' lifetimes.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, io::Result<Bytes>>;

/// A backend that runs pods.
///
/// Methods take `&self` only: a provider guards its own state. `impl Future +
/// Send` rather than `async fn` so callers can spawn the futures; implementors
/// still write `async fn`.
pub trait Provider: Send + Sync + 'static {
    /// A short name: the `skylet.io/provider` node label, the default taint's
    /// value, metrics and spans (`aws-ecs`, `azure-aci`, `kubernetes`, `mock`).
    fn name(&self) -> &'static str;

    /// Fills in what the backend knows of the node: capacity and allocatable,
    /// labels (region, zone), taints. Called at registration and on every
    /// status update, so it may change over time.
    fn configure_node(&self, node: &mut Node);

    /// CSI drivers whose inline volumes name a Secret in a volume attribute,
    /// as `(driver, attribute)` (the Azure Files driver's `secretName`): the
    /// core resolves that Secret into [`ResolvedPod::volumes`] for backends
    /// that mount such volumes themselves. `nodePublishSecretRef` is resolved
    /// for every driver. The default names none.
    fn csi_secret_attributes(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The size of the instance the backend bills for `pod` (what the cost
    /// model prices). The default is the pod's requests as the scheduler
    /// counts them ([`BilledSize::requests`]); a backend that rounds a pod
    /// up to a size of its own returns that size. Pure and cheap: called
    /// when a pod starts, never with I/O.
    fn billed_size(&self, pod: &Pod) -> BilledSize {
        BilledSize::requests(pod)
    }

    /// Whether the backend is reachable; an error makes the node NotReady.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// Runs a pod. Keyed by the pod UID and safe to repeat: a second call for
    /// a pod the backend already holds succeeds without creating anything.
    fn create_pod(&self, pod: &ResolvedPod) -> impl Future<Output = Result<()>> + Send;

    /// Applies what the core resolved anew for a running pod (a refreshed
    /// service-account token). Image changes, ephemeral containers and
    /// resizes have calls of their own. The default does nothing.
    fn update_pod(&self, pod: &ResolvedPod) -> impl Future<Output = Result<()>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// Restarts the containers of a running pod whose image changed, each
    /// with its new image (`images`: container name and image), as the
    /// kubelet does. Safe to repeat. The default is
    /// [`ProviderError::Unsupported`]: its message says why and what to do,
    /// and the core records it on the pod as a Warning Event, once per
    /// change.
    fn change_images(
        &self,
        pod: &Pod,
        images: &[(String, String)],
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (pod, images);
        async {
            Err(ProviderError::Unsupported(
                "this backend cannot change the image of a running container; delete the pod \
                 (its controller recreates it with the new image)"
                    .into(),
            ))
        }
    }

    /// Starts the ephemeral containers of `pod` (`kubectl debug`) that do
    /// not run yet, and reports them in `ephemeralContainerStatuses` from
    /// then on. Safe to repeat. The default is
    /// [`ProviderError::Unsupported`]: the core reports each ephemeral
    /// container as terminated with that message, so `kubectl debug`
    /// does not wait for it.
    fn add_ephemeral_containers(&self, pod: &Pod) -> impl Future<Output = Result<()>> + Send {
        let _ = pod;
        async {
            Err(ProviderError::Unsupported(
                "this backend cannot add a container to a running pod; use kubectl debug \
                 --copy-to to debug a copy of the pod"
                    .into(),
            ))
        }
    }

    /// Applies an in-place resize (`pods/resize`): the containers'
    /// resources in `pod` are the new ones. Safe to repeat. The default is
    /// [`ProviderError::Unsupported`]: the core gives the pod condition
    /// `PodResizePending` with reason `Infeasible` and that message.
    fn resize(&self, pod: &Pod) -> impl Future<Output = Result<()>> + Send {
        let _ = pod;
        async {
            Err(ProviderError::Unsupported(
                "this backend cannot resize a running pod; delete the pod so that its \
                 controller recreates it with the new resources"
                    .into(),
            ))
        }
    }

    /// Stops a pod within `grace` and releases its resources. Safe to repeat;
    /// deleting a pod the backend does not hold is `Ok(Deleted::Gone)`.
    /// [`Deleted::Stopping`] means the backend is still stopping it: the core
    /// waits for a sweep or a [`BackendEvent::Gone`] (or the grace period)
    /// before it removes the Kubernetes pod.
    fn delete_pod(
        &self,
        pod: &PodRef,
        grace: Duration,
    ) -> impl Future<Output = Result<Deleted>> + Send;

    /// Every pod the backend holds for this node, with its status, in as few
    /// backend calls as its API allows.
    fn list_pods(&self) -> impl Future<Output = Result<Vec<BackendPod>>> + Send;

    /// One page of [`Provider::list_pods`]: the pods from `from` (the
    /// [`ListPage::next`] of the page before; `None` for the first page) and
    /// where the next page starts (`None` after the last). The core's sweep
    /// lists this way, so that it holds one page of statuses at a time rather
    /// than one per pod of the node. A pod created or removed while the pages
    /// are read may be missing from them; the sweep tells those apart by the
    /// time of their last report. The default is [`Provider::list_pods`] in
    /// one page.
    fn list_page(&self, from: Option<String>) -> impl Future<Output = Result<ListPage>> + Send {
        async move {
            // one page: there is no next one to start from
            let _ = from;
            Ok(ListPage {
                pods: self.list_pods().await?,
                next: None,
            })
        }
    }

    /// The backend's background work (watches, garbage collection, its
    /// own timers), run by the core in a task with the node's span until
    /// `shutdown` is cancelled; returns then. Status changes and Events go
    /// to the [`Sink`] of [`BuildContext`]. The default has none.
    fn run(&self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send {
        async move { shutdown.cancelled().await }
    }

    /// The log of a container.
    fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: LogOptions,
    ) -> impl Future<Output = Result<LogStream>> + Send {
        let _ = (pod, container, opts);
        async {
            Err(ProviderError::Unsupported(
                "logs are not supported by this backend".into(),
            ))
        }
    }

    /// Runs `command` in a container, wired to `io`, and returns how it ended.
    ///
    /// The core polls the returned future once *before* it answers the
    /// client's upgrade request: an error the backend can tell at once (no
    /// such pod or container, not supported) should be returned before the
    /// first `.await` that waits, so it becomes an HTTP status (404, 501)
    /// instead of a message on the error stream. The future is dropped when
    /// the client goes away. `Ok(ExitStatus::Code(n))` with `n != 0` is a
    /// command that failed, not an error of the backend.
    fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> impl Future<Output = Result<ExitStatus>> + Send {
        let _ = (pod, container, command, io);
        async {
            Err(ProviderError::Unsupported(
                "exec is not supported by this backend".into(),
            ))
        }
    }

    /// Attaches `io` to the main process of a container, until the process
    /// ends or the client detaches; polled once before the upgrade, like
    /// [`Provider::exec`].
    fn attach(
        &self,
        pod: &PodRef,
        container: &str,
        io: AttachIo,
    ) -> impl Future<Output = Result<ExitStatus>> + Send {
        let _ = (pod, container, io);
        async {
            Err(ProviderError::Unsupported(
                "attach is not supported by this backend".into(),
            ))
        }
    }

    /// Opens a TCP connection to `port` of a pod; called once per forwarded
    /// connection, after the upgrade (errors reach the client as text on the
    /// connection's error stream). Closing the returned stream's write side
    /// must half-close the connection.
    fn port_forward(
        &self,
        pod: &PodRef,
        port: u16,
    ) -> impl Future<Output = Result<PortStream>> + Send {
        let _ = (pod, port);
        async {
            Err(ProviderError::Unsupported(
                "port-forward is not supported by this backend".into(),
            ))
        }
    }

    /// Resource usage of the pods this backend runs, for `kubectl top`.
    fn stats(&self) -> impl Future<Output = Result<Vec<PodStats>>> + Send {
        async {
            Err(ProviderError::Unsupported(
                "stats are not supported by this backend".into(),
            ))
        }
    }
}
