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
//!   resourceVersion with the one last copied ([`reflect`]).
//! - **Status by watch**: one watch on the remote pods of this node pushes
//!   every change to the core; the sweep (one list call) is only a safety net.
//! - **Events**: Events the remote cluster records about a remote pod (the
//!   remote scheduler's `Scheduled`, the remote kubelet's `Pulled`,
//!   `BackOff`, ...) are recorded once on the home pod ([`events`]).
//! - **Logs, exec, attach, port-forward** go to the remote apiserver (kube-rs's
//!   WebSocket client). Caveat: that port-forward protocol has no half-close,
//!   so a forwarded connection ends as soon as either side closes its writes.
//! - **Node**: capacity is the sum of allocatable of the remote cluster's
//!   Ready, schedulable nodes minus what the unfinished pods on them request,
//!   kept current by watches (nodes, and pods not Succeeded or Failed); the node is NotReady
//!   while the remote apiserver does not answer, and Ready again without
//!   re-creating anything when it returns.
//!
//! # Networking
//! Pod IPs of the remote cluster are reported as the home pods' IPs, but they
//! are routable from the home cluster only if the clusters share a network
//! (a VPN, a flat VPC, Submariner, Cilium ClusterMesh). Services and
//! EndpointSlices are not reflected yet: a home Service selecting these pods
//! gets their remote IPs as endpoints; reflecting Services is a follow-up.
//!
//! # RBAC on the remote cluster
//! `namespaces`: get, create; `pods`: get, list, watch, create, delete;
//! `pods/log`: get; `pods/exec`, `pods/attach`, `pods/portforward`: create;
//! `configmaps`, `secrets`: get, create, update; `nodes`: list, watch;
//! `events`: list, watch; `pods` in all namespaces: list, watch (capacity).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt, stream::BoxStream};
use k8s_openapi::{
    api::core::v1::{Namespace, Node, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, PostParams, Preconditions},
    runtime::{WatchStreamExt, reflector, watcher},
};
use skylet_provider::{
    BackendEvent, BackendPod, Deleted, LogOptions, LogStream, PodRef, Provider, ProviderError,
    ResolvedPod, Result,
};

mod events;
mod reflect;
mod remote;
pub mod translate;

pub use translate::{Context, NamespaceMode, Rule, SchedulingPolicy, ServiceAccountPolicy};

/// Settings of the backend.
#[derive(Clone, Debug)]
pub struct Config {
    /// Translation settings (cluster id, node, namespaces, scheduling).
    pub context: Context,
}

/// The remote-cluster backend.
pub struct KubeProvider {
    remote: Client,
    ctx: Context,
    nodes: reflector::Store<Node>,
    /// Remote pods that are not finished, for the capacity they take.
    running: reflector::Store<Pod>,
    namespaces: Mutex<HashSet<String>>,
    reflections: reflect::Reflections,
    /// Remote pod (namespace, name) -> the home pod it runs, from the watch.
    owners: events::Owners,
    _node_watch: tokio::task::JoinHandle<()>,
    _event_watch: tokio::task::JoinHandle<()>,
}

/// Maps a remote API failure to the provider's error classes.
pub(crate) fn classify(what: &str, e: kube::Error) -> ProviderError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => {
            ProviderError::NotFound(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 429 => ProviderError::Throttled { retry_after: None },
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

impl KubeProvider {
    /// A backend for `remote`, reading referenced objects from `home`.
    /// Starts the watch on the remote nodes (call inside a Tokio runtime).
    pub fn new(home: Client, remote: Client, config: Config) -> Self {
        let (nodes, writer) = reflector::store();
        let stream = watcher(Api::<Node>::all(remote.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let (running, pod_writer) = reflector::store();
        let pods_wc =
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let pod_stream = watcher(Api::<Pod>::all(remote.clone()), pods_wc)
            .default_backoff()
            .reflect(pod_writer)
            .applied_objects();
        let node_watch = tokio::spawn(async move {
            let both = futures::stream::select(
                stream.map(|r| r.map(|_| ())).boxed(),
                pod_stream.map(|r| r.map(|_| ())).boxed(),
            );
            futures::pin_mut!(both);
            while let Some(r) = both.next().await {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "remote node or pod watch; retrying");
                }
            }
        });
        let owners = events::Owners::default();
        let event_watch = tokio::spawn(events::forward(
            home.clone(),
            remote.clone(),
            config.context.node.clone(),
            owners.clone(),
        ));
        Self {
            reflections: reflect::Reflections::new(home, remote.clone(), config.context.clone()),
            owners,
            _event_watch: event_watch,
            remote,
            ctx: config.context,
            nodes,
            running,
            namespaces: Mutex::default(),
            _node_watch: node_watch,
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.remote.clone(), ns)
    }

    async fn ensure_namespace(&self, ns: &str) -> Result<()> {
        if self
            .namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(ns)
        {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.remote.clone());
        let obj: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": ns, "labels": {translate::CLUSTER_ID: self.ctx.cluster_id}}
        }))
        .map_err(ProviderError::transient)?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(classify(&format!("creating namespace {ns}"), e)),
        }
        self.namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ns.to_owned());
        Ok(())
    }

    /// The remote pod that runs home pod `pod`, if any.
    async fn find(&self, pod: &PodRef) -> Result<Option<Pod>> {
        let ns = self.ctx.remote_namespace(&pod.namespace);
        let found = self
            .pods(&ns)
            .get_opt(&pod.name)
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
        api.patch(&name, &pp, &kube::api::Patch::Apply(&secret))
            .await
            .map_err(|e| classify("writing the home token Secret", e))?;
        Ok(())
    }
}

impl Provider for KubeProvider {
    fn name(&self) -> &'static str {
        "kubernetes"
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
        tokio::time::timeout(Duration::from_secs(5), self.remote.apiserver_version())
            .await
            .map_err(|_| ProviderError::transient("the remote apiserver did not answer within 5s"))?
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
        let created = match api.create(&PostParams::default(), &remote_pod).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api
                    .get(&pod_ref.name)
                    .await
                    .map_err(|e| classify("reading the remote pod", e))?;
                if existing.labels().get(translate::ORIGIN_UID) != Some(&pod_ref.uid) {
                    // a pod of the same name from an earlier home pod: remove it first
                    let _ = api.delete(&pod_ref.name, &DeleteParams::default()).await;
                    return Err(ProviderError::transient(format!(
                        "remote pod {ns}/{} belongs to an earlier pod of that name; deleting it first",
                        pod_ref.name
                    )));
                }
                existing
            }
            Err(e) => return Err(classify("creating the remote pod", e)),
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
        match self.pods(&ns).delete(&pod.name, &dp).await {
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
        let list = Api::<Pod>::all(self.remote.clone())
            .list(&lp)
            .await
            .map_err(|e| classify("listing remote pods", e))?;
        // the sweep also brings reflected ConfigMaps and Secrets up to date
        self.reflections.sync().await;
        Ok(list
            .items
            .into_iter()
            .filter_map(Self::backend_pod)
            .collect())
    }

    fn status_updates(&self) -> Option<BoxStream<'static, BackendEvent>> {
        let wc = watcher::Config::default().labels(&self.ctx.selector());
        let owners = self.owners.clone();
        let stream = watcher(Api::<Pod>::all(self.remote.clone()), wc)
            .default_backoff()
            .filter_map(move |ev| {
                let owners = owners.clone();
                async move {
                    match ev {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            if let Some(origin) = Self::origin(&p) {
                                owners.insert(
                                    &p.namespace().unwrap_or_default(),
                                    &p.name_any(),
                                    origin,
                                );
                            }
                            Self::backend_pod(p).map(|bp| BackendEvent::Status(Box::new(bp)))
                        }
                        Ok(watcher::Event::Delete(p)) => {
                            owners.remove(&p.namespace().unwrap_or_default(), &p.name_any());
                            Self::origin(&p).map(BackendEvent::Gone)
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::debug!(error = %e, "remote pod watch; retrying");
                            None
                        }
                    }
                }
            });
        Some(stream.boxed())
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
        let reader = self
            .pods(&ns)
            .log_stream(&pod.name, &lp)
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
            &pod.name,
            port,
        )
        .await
    }
}

impl Drop for KubeProvider {
    fn drop(&mut self) {
        self._node_watch.abort();
        self._event_watch.abort();
    }
}
