//! A skylet backend whose pods run in another Kubernetes cluster (another
//! cloud, another region), as liqo and admiralty do, inside one small binary.
//!
//! - **Pods**: each home pod becomes a remote pod in a mapped namespace,
//!   labelled with its origin UID, the home cluster id and the node
//!   ([`translate`]). Creates are idempotent: an existing remote pod with the
//!   same origin UID is adopted.
//! - **Reflection**: the ConfigMaps, Secrets and imagePullSecrets a pod
//!   references (and only those) are copied next to it, owned by the remote
//!   pods that use them (so the remote garbage collector removes a copy with
//!   its last pod), and kept in sync: every sweep compares the home object's
//!   resourceVersion with the one last copied (the `reflect` module).
//! - **Status by watch**: one watch on the remote pods of this node pushes
//!   every change to the core's [`Sink`]; the sweep (one list call) is only a
//!   safety net.
//! - **Services**: the home Services of every namespace with pods of this
//!   node are reflected into its remote namespace as selector-less Services
//!   with EndpointSlices carrying the home endpoints, kept in sync by watch,
//!   owned through the remote pods and removed with the last of them
//!   ([`services`]; Cilium ClusterMesh and MCS options there).
//! - **Events**: Events the remote cluster records about a remote pod (the
//!   remote scheduler's `Scheduled`, the remote kubelet's `Pulled`,
//!   `BackOff`, ...) go to the core, which records them once on the home pod
//!   (reporter `skylet-kube`, note `remote: ...`; the `events` module).
//! - **Metrics** (`kubectl top`): one list of the remote cluster's
//!   `metrics.k8s.io` PodMetrics of this node's pods per request ([`top`]).
//! - **Changes after creation**: an image change, ephemeral containers
//!   (`kubectl debug`) and in-place resize are patched onto the remote pod
//!   (the `changes` module); the remote kubelet acts on them.
//! - **Logs, exec, attach, port-forward** go to the remote apiserver (kube-rs's
//!   WebSocket client). Caveat: that port-forward protocol has no half-close,
//!   so a forwarded connection ends as soon as either side closes its writes.
//! - **Node**: capacity is the sum of allocatable of the remote cluster's
//!   Ready, schedulable nodes minus what the unfinished pods on them request,
//!   kept current by watches (nodes, and pods not Succeeded or Failed); the node is NotReady
//!   until those watches have listed once and while the remote apiserver
//!   does not answer, and Ready again without
//!   re-creating anything when it returns.
//!
//! The watches (nodes, unfinished pods, this node's pods, Events, Service
//! reflection) run in [`Provider::run`]. Settings and construction: [`Kube`] (`--remote-*`,
//! `--cluster-id`, the `remote:` section of the config file). Remote API
//! calls are counted in the shared `skylet_backend_api_*` metrics, service
//! `kubernetes`, operations named by their OpenAPI operationId
//! (`createCoreV1NamespacedPod`).
//!
//! # Networking
//! Pod IPs of the remote cluster are reported as the home pods' IPs (so home
//! Services selecting these pods get their remote IPs as endpoints, ready as
//! the remote pods are), and reflected Services point at home pod IPs; both
//! are routable only if the clusters share a network (a VPN, a flat VPC,
//! Submariner, Cilium ClusterMesh).
//!
//! # RBAC on the remote cluster
//! `namespaces`: get, create; `pods`: get, list, watch, create, delete,
//! patch; `pods/ephemeralcontainers`, `pods/resize`: patch;
//! `pods/log`: get; `pods/exec`, `pods/attach`, `pods/portforward`: create
//! (and get, for apiservers before 1.31); `configmaps`, `secrets`: get,
//! create, update; `secrets`: patch (the home token, server-side apply);
//! `nodes`: list, watch; `events`: list, watch; for Service reflection
//! `services`, `discovery.k8s.io/endpointslices`: get, list, watch, create,
//! update, delete, `configmaps`: list, watch, delete, and with MCS
//! `multicluster.x-k8s.io/serviceimports`: get, create, update, delete.
//! `kubectl top`: `metrics.k8s.io` `pods`: list.
//! Cluster-wide (a ClusterRole): pods are listed and watched in all
//! namespaces. On the home cluster the backend reads ConfigMaps and Secrets,
//! and lists and watches Services and EndpointSlices; the core records its
//! Events. README.md has the manifest.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::{AsyncBufReadExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::{
    api::core::v1::{Namespace, Node, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, PostParams, Preconditions},
    runtime::{
        WatchStreamExt,
        reflector::{self, store::Writer},
        watcher,
    },
};
use skylet_provider::{
    BackendPod, BuildContext, CancellationToken, Deleted, LogOptions, LogStream, PodRef, Provider,
    ProviderError, ResolvedPod, Result, Sink,
};

mod calls;
mod changes;
mod events;
mod kind;
mod reflect;
mod remote;
pub mod services;
mod top;
pub mod translate;

pub use kind::{Args, BuildError, Config, File, Kube};
pub use translate::{Context, NamespaceMode, Rule, SchedulingPolicy, ServiceAccountPolicy};

use calls::{Calls, op};

/// How long a ping waits for the remote apiserver.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The remote-cluster backend.
pub struct KubeProvider {
    remote: Client,
    ctx: Context,
    sink: Sink,
    calls: Calls,
    nodes: reflector::Store<Node>,
    /// Fills `nodes`, from the watch in [`Provider::run`].
    node_writer: Mutex<Writer<Node>>,
    /// Remote pods that are not finished, for the capacity they take.
    running: reflector::Store<Pod>,
    /// Fills `running`, from the watch in [`Provider::run`].
    running_writer: Mutex<Writer<Pod>>,
    namespaces: Mutex<HashSet<String>>,
    /// Held while a namespace is created (the first pods of a namespace
    /// arrive together: one create, not one per pod), with the namespaces
    /// whose create was throttled and when to try again.
    creating: tokio::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    reflections: reflect::Reflections,
    /// Remote pod (namespace, name) -> the home pod it runs, from the watch.
    owners: events::Owners,
    /// Fills the Service reflector's store of this node's remote pods, from
    /// the pod watch.
    mine_writer: Mutex<Writer<Pod>>,
    /// Woken by every change of this node's remote pods.
    mine_changed: std::sync::Arc<tokio::sync::Notify>,
    services: services::Reflector,
    /// `kubectl top`: the meter and the last `metrics.k8s.io` list.
    top: top::Top,
}

/// How long a 429 of the remote apiserver asks to wait
/// (`details.retryAfterSeconds`, else 1 s).
fn retry_after(s: &kube::core::Status) -> Duration {
    let secs = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
    Duration::from_secs(u64::from(secs.clamp(1, 60)))
}

/// Maps a remote API failure to the provider's error classes.
pub(crate) fn classify(what: &str, e: kube::Error) -> ProviderError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => {
            ProviderError::NotFound(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 429 => ProviderError::Throttled {
            retry_after: Some(retry_after(s)),
        },
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => ProviderError::invalid(
            "RemoteRejected",
            format!("the remote cluster refused {what}: {}", s.message),
        ),
        kube::Error::Api(s) if s.code == 403 => ProviderError::transient(format!(
            "the remote cluster forbids {what} ({}); grant skylet's remote identity the RBAC listed in the skylet-kube docs",
            s.message
        )),
        _ => ProviderError::transient(format!("{what}: {e}")),
    }
}

/// A lock whose holder cannot leave the data inconsistent (no panics
/// between the updates it guards).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `store` in step with a watch until it ends (never: it retries).
async fn reflect<K>(
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    store: &Mutex<Writer<K>>,
) where
    K: Resource + Clone + Debug,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => lock(store).apply_watcher_event(&ev),
            Err(e) => tracing::debug!(error = %e, "remote node or pod watch; retrying"),
        }
    }
}

impl KubeProvider {
    /// A backend for `remote`, translating with `context` and reflecting
    /// Services as `services` says; it reads the objects pods reference
    /// and the Services from `ctx.home` and reports to `ctx.sink`. Nothing
    /// starts until [`Provider::run`].
    pub fn new(
        remote: Client,
        context: Context,
        services: services::Settings,
        ctx: BuildContext,
    ) -> Self {
        let (nodes, node_writer) = reflector::store();
        let (running, running_writer) = reflector::store();
        let (mine, mine_writer) = reflector::store();
        let mine_changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let calls = Calls::new(ctx.api_metrics);
        Self {
            services: services::Reflector::new(
                ctx.home.clone(),
                remote.clone(),
                context.clone(),
                services,
                calls.clone(),
                mine,
                mine_changed.clone(),
            ),
            mine_writer: Mutex::new(mine_writer),
            mine_changed,
            reflections: reflect::Reflections::new(
                ctx.home,
                remote.clone(),
                context.clone(),
                calls.clone(),
            ),
            owners: events::Owners::default(),
            remote,
            ctx: context,
            sink: ctx.sink,
            calls,
            nodes,
            node_writer: Mutex::new(node_writer),
            running,
            running_writer: Mutex::new(running_writer),
            namespaces: Mutex::default(),
            creating: tokio::sync::Mutex::default(),
            top: top::Top::default(),
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.remote.clone(), ns)
    }

    /// Keeps the node and unfinished-pod stores (the capacity) current.
    async fn watch_capacity(&self) {
        let nodes = watcher(
            Api::<Node>::all(self.remote.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let unfinished =
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let pods = watcher(Api::<Pod>::all(self.remote.clone()), unfinished).default_backoff();
        tokio::join!(
            reflect(nodes, &self.node_writer),
            reflect(pods, &self.running_writer)
        );
    }

    /// Pushes every change of this node's remote pods to the sink, and
    /// keeps `owners` (for Events) current.
    async fn watch_pods(&self) {
        let wc = watcher::Config::default().labels(&self.ctx.selector());
        let stream = watcher(Api::<Pod>::all(self.remote.clone()), wc).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(ev) = &ev {
                lock(&self.mine_writer).apply_watcher_event(ev);
                self.mine_changed.notify_one();
            }
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    if let Some(origin) = Self::origin(&p) {
                        self.owners.insert(
                            &p.namespace().unwrap_or_default(),
                            &p.name_any(),
                            origin,
                        );
                    }
                    if let Some(bp) = Self::backend_pod(p) {
                        self.sink.status(bp);
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    self.owners
                        .remove(&p.namespace().unwrap_or_default(), &p.name_any());
                    if let Some(origin) = Self::origin(&p) {
                        self.sink.gone(origin);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "remote pod watch; retrying"),
            }
        }
    }

    async fn ensure_namespace(&self, ns: &str) -> Result<()> {
        if lock(&self.namespaces).contains(ns) {
            return Ok(());
        }
        let mut throttled = self.creating.lock().await;
        // created while this one waited its turn
        if lock(&self.namespaces).contains(ns) {
            return Ok(());
        }
        if let Some(until) = throttled.get(ns).copied() {
            let now = tokio::time::Instant::now();
            if until > now {
                return Err(ProviderError::Throttled {
                    retry_after: Some(until - now),
                });
            }
        }
        let api: Api<Namespace> = Api::all(self.remote.clone());
        let obj: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": ns, "labels": {translate::CLUSTER_ID: self.ctx.cluster_id}}
        }))
        .map_err(ProviderError::transient)?;
        let created = self
            .calls
            .run(
                op::CREATE_NAMESPACE,
                api.create(&PostParams::default(), &obj),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                if let kube::Error::Api(s) = &e
                    && s.code == 429
                {
                    // the pods waiting for this namespace wait as asked too
                    throttled.insert(ns.to_owned(), tokio::time::Instant::now() + retry_after(s));
                }
                return Err(classify(&format!("creating namespace {ns}"), e));
            }
        }
        throttled.remove(ns);
        lock(&self.namespaces).insert(ns.to_owned());
        Ok(())
    }

    /// The remote pod that runs home pod `pod`, if any.
    async fn find(&self, pod: &PodRef) -> Result<Option<Pod>> {
        let ns = self.ctx.remote_namespace(&pod.namespace);
        let found = self
            .calls
            .run(op::READ_POD, self.pods(&ns).get_opt(&pod.name))
            .await
            .map_err(|e| classify("reading the remote pod", e))?;
        Ok(found.filter(|p| p.labels().get(translate::ORIGIN_UID) == Some(&pod.uid)))
    }

    /// The home pod a remote pod runs, from its labels.
    fn origin(p: &Pod) -> Option<PodRef> {
        let l = p.metadata.labels.as_ref()?;
        Some(PodRef::new(
            l.get(translate::ORIGIN_NAMESPACE)?.clone(),
            l.get(translate::ORIGIN_NAME)?.clone(),
            l.get(translate::ORIGIN_UID)?.clone(),
        ))
    }

    fn backend_pod(p: Pod) -> Option<BackendPod> {
        let pod = Self::origin(&p)?;
        let mut status = p.status.unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some()
            && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            // still shown while the remote kubelet stops it
            status.reason.get_or_insert_with(|| "Terminating".into());
        }
        Some(BackendPod { pod, status })
    }
}

impl KubeProvider {
    /// With the home-token policy, writes the pod's home token as a Secret
    /// owned by the remote pod.
    async fn write_home_token(&self, rp: &ResolvedPod, ns: &str, owner: &Pod) -> Result<()> {
        if self.ctx.service_account != ServiceAccountPolicy::HomeToken {
            return Ok(());
        }
        let Some(data) = translate::home_token_data(rp) else {
            return Ok(());
        };
        let name = translate::token_secret_name(&rp.pod_ref().name);
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.to_owned()),
                labels: Some(BTreeMap::from([(
                    translate::CLUSTER_ID.to_owned(),
                    self.ctx.cluster_id.clone(),
                )])),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: owner.name_any(),
                        uid: owner.metadata.uid.clone().unwrap_or_default(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            data: Some(data),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.remote.clone(), ns);
        let pp = kube::api::PatchParams::apply("skylet").force();
        self.calls
            .run(
                op::PATCH_SECRET,
                api.patch(&name, &pp, &kube::api::Patch::Apply(&secret)),
            )
            .await
            .map_err(|e| classify("writing the home token Secret", e))?;
        Ok(())
    }
}

impl Provider for KubeProvider {
    fn name(&self) -> &'static str {
        <Kube as skylet_provider::Kind>::NAME
    }

    fn configure_node(&self, node: &mut Node) {
        let mut total: BTreeMap<String, f64> = BTreeMap::new();
        let mut usable = HashSet::new();
        for n in self.nodes.state() {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let schedulable = !n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            if !(ready && schedulable) {
                continue;
            }
            usable.insert(n.name_any());
            for (k, q) in n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .into_iter()
                .flatten()
            {
                if let Some(v) = remote::parse_quantity(&q.0) {
                    *total.entry(k.clone()).or_default() += v;
                }
            }
        }
        // minus what the pods already running there request
        for p in self.running.state() {
            let Some(spec) = p
                .spec
                .as_ref()
                .filter(|s| s.node_name.as_ref().is_some_and(|n| usable.contains(n)))
            else {
                continue;
            };
            *total.entry("pods".into()).or_default() -= 1.0;
            for c in &spec.containers {
                for (k, q) in c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .into_iter()
                    .flatten()
                {
                    if let Some(v) = remote::parse_quantity(&q.0) {
                        *total.entry(k.clone()).or_default() -= v;
                    }
                }
            }
        }
        for v in total.values_mut() {
            *v = v.max(0.0);
        }
        let q: BTreeMap<String, Quantity> = ["cpu", "memory", "pods", "ephemeral-storage"]
            .into_iter()
            .map(|k| {
                (
                    k.to_owned(),
                    Quantity(remote::format_quantity(
                        k,
                        total.get(k).copied().unwrap_or(0.0),
                    )),
                )
            })
            .collect();
        let status = node.status.get_or_insert_with(Default::default);
        status.capacity = Some(q.clone());
        status.allocatable = Some(q);
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            "skylet.io/remote-cluster".into(),
            self.ctx.cluster_id.clone(),
        );
    }

    async fn ping(&self) -> Result<()> {
        // The capacity comes from the node and pod watches: the node is not
        // Ready before they have listed once (a Ready node of no capacity
        // turns pods away).
        let listed = async {
            self.nodes.wait_until_ready().await.is_ok()
                && self.running.wait_until_ready().await.is_ok()
        };
        if !tokio::time::timeout(PING_TIMEOUT, listed)
            .await
            .unwrap_or(false)
        {
            return Err(ProviderError::transient(
                "the remote cluster's nodes and pods are not listed yet",
            ));
        }
        let version = self.calls.run(op::VERSION, self.remote.apiserver_version());
        tokio::time::timeout(PING_TIMEOUT, version)
            .await
            .map_err(|_| {
                self.calls.timed_out(op::VERSION);
                ProviderError::transient("the remote apiserver did not answer within 5s")
            })?
            .map(|_| ())
            .map_err(|e| {
                ProviderError::transient(format!("the remote apiserver is unreachable: {e}"))
            })
    }

    async fn create_pod(&self, rp: &ResolvedPod) -> Result<()> {
        let home = &rp.pod;
        let pod_ref = rp.pod_ref();
        let remote_pod = translate::remote_pod(&self.ctx, home);
        let ns = remote_pod.namespace().unwrap_or_default();
        self.ensure_namespace(&ns).await?;
        let api = self.pods(&ns);
        // Known before it exists: the remote scheduler's Event for it may
        // arrive before the pod watch shows it (events::Owners).
        self.owners
            .insert(&ns, &remote_pod.name_any(), pod_ref.clone());
        let created = self
            .calls
            .run(
                op::CREATE_POD,
                api.create(&PostParams::default(), &remote_pod),
            )
            .await;
        let created = match created {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .calls
                    .run(op::READ_POD, api.get(&pod_ref.name))
                    .await
                    .map_err(|e| classify("reading the remote pod", e))?;
                if existing.labels().get(translate::ORIGIN_UID) != Some(&pod_ref.uid) {
                    // a pod of the same name from an earlier home pod: remove it first
                    let _ = self
                        .calls
                        .run(
                            op::DELETE_POD,
                            api.delete(&pod_ref.name, &DeleteParams::default()),
                        )
                        .await;
                    return Err(ProviderError::transient(format!(
                        "remote pod {ns}/{} belongs to an earlier pod of that name; deleting it first",
                        pod_ref.name
                    )));
                }
                existing
            }
            Err(e) => {
                self.owners.remove(&ns, &remote_pod.name_any());
                return Err(classify("creating the remote pod", e));
            }
        };
        let mut refs =
            translate::references(remote_pod.spec.as_ref().unwrap_or(&Default::default()));
        refs.secrets
            .remove(&translate::token_secret_name(&pod_ref.name));
        self.reflections
            .reflect(&pod_ref.namespace, &ns, &refs, &created)
            .await?;
        self.write_home_token(rp, &ns, &created).await
    }

    /// Updates the home token Secret when the core refreshed the token.
    async fn update_pod(&self, rp: &ResolvedPod) -> Result<()> {
        let Some(remote) = self.find(&rp.pod_ref()).await? else {
            return Ok(());
        };
        let ns = remote.namespace().unwrap_or_default();
        self.write_home_token(rp, &ns, &remote).await
    }

    /// Patches the remote pod's images: its kubelet restarts the containers.
    async fn change_images(&self, pod: &Pod, images: &[(String, String)]) -> Result<()> {
        self.patch_images(pod, images).await
    }

    /// Adds the ephemeral containers to the remote pod.
    async fn add_ephemeral_containers(&self, pod: &Pod) -> Result<()> {
        self.patch_ephemeral(pod).await
    }

    /// Passes the resize on to the remote pod's `resize` subresource.
    async fn resize(&self, pod: &Pod) -> Result<()> {
        self.patch_resize(pod).await
    }

    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<Deleted> {
        let Some(remote) = self.find(pod).await? else {
            return Ok(Deleted::Gone);
        };
        let ns = remote.namespace().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            preconditions: Some(Preconditions {
                uid: remote.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let deleted = self
            .calls
            .run(op::DELETE_POD, self.pods(&ns).delete(&pod.name, &dp))
            .await;
        match deleted {
            Ok(either) => Ok(if either.is_right() {
                Deleted::Gone
            } else {
                Deleted::Stopping
            }),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Deleted::Gone),
            Err(e) => Err(classify("deleting the remote pod", e)),
        }
    }

    async fn list_pods(&self) -> Result<Vec<BackendPod>> {
        let lp = ListParams::default().labels(&self.ctx.selector());
        let listed = self
            .calls
            .run(
                op::LIST_PODS,
                Api::<Pod>::all(self.remote.clone()).list(&lp),
            )
            .await;
        self.calls.sweep(&[(op::LIST_PODS, 1)]);
        let list = listed.map_err(|e| classify("listing remote pods", e))?;
        // the sweep also brings reflected ConfigMaps and Secrets up to date
        let synced = self.reflections.sync().await;
        self.calls.sweep(&synced);
        Ok(list
            .items
            .into_iter()
            .filter_map(Self::backend_pod)
            .collect())
    }

    /// Runs the watches: remote nodes and unfinished pods (capacity), this
    /// node's remote pods (status pushed to the sink), remote Events
    /// (forwarded to the sink), and the Service reflection
    /// ([`services`]), until `shutdown`.
    async fn run(&self, shutdown: CancellationToken) {
        let events = events::forward(self.remote.clone(), self.sink.clone(), self.owners.clone());
        let watches = async {
            tokio::join!(
                self.watch_capacity(),
                self.watch_pods(),
                events,
                self.services.run()
            );
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = watches => {}
        }
    }

    async fn logs(&self, pod: &PodRef, container: &str, opts: LogOptions) -> Result<LogStream> {
        let remote = self
            .find(pod)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("no remote pod for {pod}")))?;
        let lp = LogParams {
            container: Some(container.to_owned()),
            follow: opts.follow,
            limit_bytes: opts.limit_bytes.and_then(|b| i64::try_from(b).ok()),
            previous: opts.previous,
            since_time: opts.since,
            tail_lines: opts.tail_lines.and_then(|t| i64::try_from(t).ok()),
            timestamps: opts.timestamps,
            ..Default::default()
        };
        let ns = remote.namespace().unwrap_or_default();
        let pods = self.pods(&ns);
        let reader = self
            .calls
            .run(op::READ_POD_LOG, pods.log_stream(&pod.name, &lp))
            .await
            .map_err(|e| classify("reading remote logs", e))?;
        Ok(reader
            .lines()
            .map_ok(|l| bytes::Bytes::from(l + "\n"))
            .boxed())
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: skylet_provider::ExecIo,
    ) -> Result<skylet_provider::ExitStatus> {
        let remote = self
            .find(pod)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("no remote pod for {pod}")))?;
        remote::exec(
            &self.pods(&remote.namespace().unwrap_or_default()),
            &self.calls,
            &pod.name,
            container,
            Some(command),
            io,
        )
        .await
    }

    async fn attach(
        &self,
        pod: &PodRef,
        container: &str,
        io: skylet_provider::AttachIo,
    ) -> Result<skylet_provider::ExitStatus> {
        let remote = self
            .find(pod)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("no remote pod for {pod}")))?;
        remote::exec(
            &self.pods(&remote.namespace().unwrap_or_default()),
            &self.calls,
            &pod.name,
            container,
            None,
            io,
        )
        .await
    }

    async fn port_forward(&self, pod: &PodRef, port: u16) -> Result<skylet_provider::PortStream> {
        let remote = self
            .find(pod)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("no remote pod for {pod}")))?;
        remote::port_forward(
            &self.pods(&remote.namespace().unwrap_or_default()),
            &self.calls,
            &pod.name,
            port,
        )
        .await
    }

    async fn stats(&self) -> Result<Vec<skylet_provider::PodStats>> {
        self.usage().await
    }
}
