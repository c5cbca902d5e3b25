//! Pods: watch the pods bound to this node, run them through the provider,
//! write their status back, delete them gracefully, and sweep the backend.
//!
//! The reconcile loop is kube-runtime's `Controller` (per-pod serialization,
//! deduplication, concurrency), fed by the pod watch and by changes in the
//! [`backend::BackendView`], which sweeps and pushes keep current. A pod costs
//! one status write when its backend state changes and nothing otherwise.
//!
//! What a provider failure means is decided here, once:
//!
//! | class | pod status | Event | retry |
//! |---|---|---|---|
//! | `InvalidPod` | Failed, the provider's reason | Warning, the provider's reason | never |
//! | `Unsupported` | Failed, `ProviderUnsupported` | Warning | never |
//! | `Throttled` | unchanged | none | after `retry_after`, else backoff |
//! | `Transient` | unchanged (Pending) | Warning `ProviderCreateFailed` | exponential backoff, 1 s to 5 min |
//! | `NotFound` | (on delete: done) | none | no |
//!
//! # RBAC
//! `pods`: get, list, watch, delete; `pods/status`: patch; `events`
//! (events.k8s.io): create, patch; plus what `resolve` needs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use skylet_provider::{
    BackendEvent, Deleted, PodEvent, PodRef, Provider, ProviderError, SinkReceiver,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::{DaemonSetPods, PodsConfig},
    metrics::{Metrics, PhaseLabels, timed},
};

pub mod backend;
pub mod resolve;
pub mod status;

use backend::BackendView;
use status::Observed;

/// Why a reconcile failed; the error policy requeues with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider call failed.
    #[error("provider {op} failed for pod {pod}")]
    Provider {
        op: &'static str,
        pod: PodRef,
        source: ProviderError,
    },
    /// Writing the pod status failed.
    #[error("failed to write the status of pod {pod}")]
    WriteStatus { pod: PodRef, source: kube::Error },
    /// Deleting the pod object failed.
    #[error("failed to delete pod {pod}")]
    Delete { pod: PodRef, source: kube::Error },
    /// A reference could not be resolved yet (the status says which).
    #[error("pod {pod} waits for {source}")]
    Resolve { pod: PodRef, source: resolve::Error },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// After a create, how long skylet waits for the backend to report the pod
/// before it writes a `ContainerCreating` status; fast backends thus cost one
/// status write per pod instead of two.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// A steady pod is looked at again this often even if nothing changed.
const RESYNC: Duration = Duration::from_secs(300);

/// Shared by every reconcile.
pub struct Ctx<P> {
    client: Client,
    provider: Arc<P>,
    config: PodsConfig,
    metrics: Arc<Metrics>,
    store: Store<Pod>,
    backend: BackendView,
    recorder: Recorder,
    source: resolve::KubeSource,
    node_info: resolve::NodeInfo,
    /// Per-pod state that is not in Kubernetes or the backend.
    local: Mutex<HashMap<String, Local>>,
    /// Pods whose object skylet removed: a reconcile of a stale copy (the
    /// watch has not delivered the removal yet) must not delete it again.
    removed: Mutex<Recent>,
    trigger: mpsc::UnboundedSender<ObjectRef<Pod>>,
    lanes: Lanes,
}

/// Where reconciles wait for their turn, first come first served.
///
/// kube-runtime's own concurrency limit holds the reconciles beyond it in a
/// hash set and starts them in no particular order, so under a burst a pod
/// could wait for the whole burst (p99 24.5 s at 10,000 pods, p50 1.9 s;
/// BENCHMARKS.md). skylet lets the controller start every reconcile and
/// queues them here on fair semaphores instead, in two lanes: reconciles
/// that call the backend (create, delete) and those that only write a status
/// the backend already reported (`--concurrency`, `--status-concurrency`).
/// A slow cloud create then never holds up the status of a pod that is
/// already running, and each lane bounds the connections it can open.
struct Lanes {
    backend: Option<tokio::sync::Semaphore>,
    status: Option<tokio::sync::Semaphore>,
}

impl Lanes {
    /// Lanes of `backend` and `status` reconciles at once; 0 = unbounded.
    fn new(backend: u16, status: u16) -> Self {
        let lane = |n: u16| (n > 0).then(|| tokio::sync::Semaphore::new(usize::from(n)));
        Self {
            backend: lane(backend),
            status: lane(status),
        }
    }
}

/// The last [`Recent::MAX`] UIDs inserted.
#[derive(Debug, Default)]
struct Recent {
    set: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Recent {
    const MAX: usize = 4096;

    fn insert(&mut self, uid: &str) {
        if self.set.insert(uid.to_owned()) {
            self.order.push_back(uid.to_owned());
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, uid: &str) -> bool {
        self.set.contains(uid)
    }
}

/// What skylet remembers of a pod between reconciles.
#[derive(Debug, Default, Clone)]
struct Local {
    /// When skylet last called create for it.
    created: Option<Instant>,
    /// When skylet asked the backend to delete it.
    delete_requested: Option<Instant>,
    /// Consecutive failures, for backoff.
    failures: u32,
    /// When its service-account token must be refreshed.
    refresh_at: Option<Timestamp>,
}

/// Reconciles the pods bound to this node.
pub struct PodController<P> {
    ctx: Arc<Ctx<P>>,
    controller: Controller<Pod>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<Pod>>,
    services: (Store<Service>, reflector::store::Writer<Service>),
    events: SinkReceiver,
}

impl<P: Provider> PodController<P> {
    /// A controller for the pods with `spec.nodeName` = the configured node.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        config: PodsConfig,
        metrics: Arc<Metrics>,
        events: SinkReceiver,
    ) -> Self {
        let pods: Api<Pod> = Api::all(client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
        // The store keeps every pod of the node; managedFields are often a
        // third of a pod and skylet never reads them, so they are dropped
        // before the store sees the pod (as kube-rs's memory guide advises).
        let (store, writer) = reflector::store();
        let stream = watcher(pods, wc)
            .backoff(crate::watch_backoff())
            .modify(|p: &mut Pod| p.managed_fields_mut().clear())
            .reflect(writer)
            .applied_objects();
        let controller = Controller::for_stream(stream, store.clone())
            // unbounded here: `Lanes` limits and orders them
            .with_config(kube::runtime::controller::Config::default().concurrency(0));
        let (trigger, triggers) = mpsc::unbounded_channel();
        let (services_store, services_writer) = reflector::store();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "skylet".into(),
                instance: Some(config.node_name.clone()),
            },
        );
        let mut node = k8s_openapi::api::core::v1::Node::default();
        provider.configure_node(&mut node);
        let alloc = node.status.and_then(|s| s.allocatable).unwrap_or_default();
        let node_info = resolve::NodeInfo {
            name: config.node_name.clone(),
            ip: config.node_ip.to_string(),
            allocatable_cpu: alloc.get("cpu").map_or_else(|| "1".into(), |q| q.0.clone()),
            allocatable_memory: alloc
                .get("memory")
                .map_or_else(|| "1Gi".into(), |q| q.0.clone()),
        };
        let ctx = Arc::new(Ctx {
            source: resolve::KubeSource::new(client.clone(), services_store.clone()),
            client,
            provider,
            metrics,
            store,
            backend: BackendView::default(),
            recorder,
            node_info,
            local: Mutex::default(),
            removed: Mutex::default(),
            trigger,
            lanes: Lanes::new(config.concurrency, config.status_concurrency),
            config,
        });
        Self {
            ctx,
            controller,
            triggers,
            services: (services_store, services_writer),
            events,
        }
    }

    /// The pods bound to this node, as the watch sees them.
    pub fn store(&self) -> Store<Pod> {
        self.ctx.store.clone()
    }

    /// Runs until `shutdown`: the reconcile loop, the sweep, the push stream.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            ctx,
            controller,
            triggers,
            services,
            events,
        } = self;

        // Service links need every Service; one watch serves all pods.
        let (services_store, writer) = services;
        let svc_api: Api<Service> = Api::all(ctx.client.clone());
        let svc_stream = watcher(svc_api, watcher::Config::default())
            .backoff(crate::watch_backoff())
            .reflect(writer)
            .applied_objects();
        let svc_task = tokio::spawn(
            async move {
                futures::pin_mut!(svc_stream);
                while let Some(r) = svc_stream.next().await {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "service watch error; retrying");
                    }
                }
            }
            .in_current_span(),
        );

        // Know what the backend holds before the first reconcile, so existing
        // pods are adopted rather than created again.
        initial_listing(&ctx).await;
        // service-link variables need the Services; do not wait forever if
        // they cannot be listed (the watch logs why and keeps retrying)
        if tokio::time::timeout(Duration::from_secs(10), services_store.wait_until_ready())
            .await
            .is_err()
        {
            tracing::warn!(
                "Services not listed after 10s; pods created now get no service-link variables"
            );
        }

        tokio::spawn(push_loop(ctx.clone(), events, shutdown.clone()).in_current_span());
        tokio::spawn(sweep_loop(ctx.clone(), shutdown.clone()).in_current_span());

        let triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(triggers);
        controller
            .reconcile_on(triggers)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            })
            .await;
        svc_task.abort();
    }
}

impl<P> Ctx<P> {
    fn local(&self, uid: &str) -> Local {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn update_local(&self, uid: &str, f: impl FnOnce(&mut Local)) {
        let mut m = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(m.entry(uid.to_owned()).or_default());
    }

    fn forget(&self, uid: &str) {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    fn removed(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.removed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn trigger(&self, pod: &PodRef) {
        let _ = self
            .trigger
            .send(ObjectRef::new(&pod.name).within(&pod.namespace));
    }
}

async fn initial_listing<P: Provider>(ctx: &Ctx<P>) {
    for attempt in 1..=3 {
        let started = Instant::now();
        match timed(&ctx.metrics, "list", ctx.provider.list_pods()).await {
            Ok(list) => {
                tracing::info!(pods = list.len(), "backend holds pods for this node");
                ctx.backend.apply_listing(list, started);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot list backend pods at start");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
    tracing::warn!(
        "starting without a backend listing; creates are idempotent, the next sweep catches up"
    );
}

/// Applies what the backend reports through its sink: status changes
/// trigger a reconcile; Events go to the recorder's own task, so a burst
/// of them never delays a status.
async fn push_loop<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut events: SinkReceiver,
    shutdown: CancellationToken,
) {
    let (to_recorder, recorder_queue) = mpsc::unbounded_channel();
    tokio::spawn(
        record_backend_events(
            ctx.client.clone(),
            ctx.config.node_name.clone(),
            recorder_queue,
        )
        .in_current_span(),
    );
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return,
            ev = events.recv() => ev,
        };
        match ev {
            Some(BackendEvent::Event(e)) => {
                let _ = to_recorder.send(*e);
            }
            Some(BackendEvent::Status(bp)) => {
                let pod = bp.pod.clone();
                if ctx.backend.upsert(*bp) {
                    ctx.trigger(&pod);
                }
            }
            Some(BackendEvent::Gone(pod)) => {
                if ctx.backend.remove(&pod.uid) {
                    ctx.trigger(&pod);
                }
            }
            None => {
                tracing::warn!("the backend's status stream ended; relying on sweeps");
                return;
            }
        }
    }
}

/// Records the Events backends report, one recorder per reporting
/// component, until the queue closes.
async fn record_backend_events(
    client: Client,
    node: String,
    mut queue: mpsc::UnboundedReceiver<PodEvent>,
) {
    let mut recorders: HashMap<&'static str, Recorder> = HashMap::new();
    while let Some(e) = queue.recv().await {
        let recorder = recorders.entry(e.reporter).or_insert_with(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: e.reporter.into(),
                    instance: Some(node.clone()),
                },
            )
        });
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.pod.namespace.clone()),
            name: Some(e.pod.name.clone()),
            uid: Some(e.pod.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: e.type_,
            reason: e.reason,
            note: Some(e.note),
            action: e.action.into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, pod = %e.pod, reason = %event.reason, "failed to record a backend event");
        }
    }
}

async fn sweep_loop<P: Provider>(ctx: Arc<Ctx<P>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the initial listing was just taken
    // Orphans are only judged once the pod watch has a complete picture.
    // kube-runtime's readiness signal wakes only its most recent waiter (the
    // controller also waits on it), so poll it again now and then.
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(Duration::from_millis(500), ctx.store.wait_until_ready()) => match r {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => {}
            },
        }
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => sweep(&ctx).await,
        }
    }
}

/// One sweep: list the backend once, note changes, delete orphans, create
/// what is missing, refresh the phase gauges.
async fn sweep<P: Provider>(ctx: &Ctx<P>) {
    let started = Instant::now();
    match timed(&ctx.metrics, "list", ctx.provider.list_pods()).await {
        Ok(list) => {
            ctx.metrics
                .backend_pods
                .set(i64::try_from(list.len()).unwrap_or(i64::MAX));
            for pod in ctx.backend.apply_listing(list, started) {
                ctx.trigger(&pod);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "backend sweep failed; retrying next interval");
            return;
        }
    }
    let known: HashMap<String, Arc<Pod>> = ctx
        .store
        .state()
        .into_iter()
        .filter_map(|p| p.metadata.uid.clone().map(|u| (u, p)))
        .collect();
    tracing::debug!(
        backend = ctx.backend.len(),
        kubernetes = known.len(),
        "sweep"
    );
    for orphan in ctx
        .backend
        .pods()
        .into_iter()
        .filter(|p| !known.contains_key(&p.uid))
    {
        delete_orphan(ctx, orphan).await;
    }
    // pods the backend should hold but does not (lost, or a failed create);
    // not those waiting out a backoff: a trigger would retry them at once,
    // every sweep, hammering a backend that refuses (quota, throttling)
    for pod in known.values() {
        let uid = pod.uid().unwrap_or_default();
        let missing = !status::is_terminal(pod)
            && pod.metadata.deletion_timestamp.is_none()
            && !ctx.backend.contains(&uid);
        if missing && ctx.local(&uid).failures == 0 {
            ctx.trigger(&PodRef::of(pod));
        }
    }
    let mut phases: HashMap<String, i64> = HashMap::new();
    for p in known.values() {
        *phases
            .entry(
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Pending".into()),
            )
            .or_default() += 1;
    }
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        ctx.metrics
            .pods
            .get_or_create(&PhaseLabels {
                phase: phase.into(),
            })
            .set(phases.get(phase).copied().unwrap_or(0));
    }
}

/// Deletes a backend pod that no Kubernetes pod owns, after checking with the
/// apiserver (not only the watch cache) that its pod is really gone.
async fn delete_orphan<P: Provider>(ctx: &Ctx<P>, orphan: PodRef) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
    match api.get_opt(&orphan.name).await {
        Ok(Some(p)) if p.metadata.uid.as_deref() == Some(orphan.uid.as_str()) => return, // the watch is behind
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(pod = %orphan, error = %e, "cannot check a possible orphan; keeping it for now");
            return;
        }
    }
    tracing::info!(pod = %orphan, "deleting backend pod that no Kubernetes pod owns");
    match timed(
        &ctx.metrics,
        "delete",
        ctx.provider.delete_pod(&orphan, Duration::from_secs(30)),
    )
    .await
    {
        Ok(Deleted::Gone) | Err(ProviderError::NotFound(_)) => {
            ctx.backend.remove(&orphan.uid);
            ctx.forget(&orphan.uid);
        }
        Ok(Deleted::Stopping) => {}
        Err(e) => {
            tracing::warn!(pod = %orphan, error = %e, "failed to delete orphan; retrying next sweep")
        }
    }
}

fn is_daemonset_pod(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
}

/// Waits for the pod's turn in its lane, then reconciles the pod as it is
/// then. While it waits, this future holds two pointers and the semaphore's
/// waiter, not a whole reconcile: thousands may wait during a burst.
async fn reconcile<P: Provider>(pod: Arc<Pod>, ctx: Arc<Ctx<P>>) -> Result<Action> {
    ctx.metrics.reconcile_queue.inc();
    let uid = pod.uid().unwrap_or_default();
    let status_only = pod.metadata.deletion_timestamp.is_none() && ctx.backend.contains(&uid);
    let lane = if status_only {
        &ctx.lanes.status
    } else {
        &ctx.lanes.backend
    };
    let _permit = match lane {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    // the pod may have changed, or gone, while it waited
    let out = match ctx.store.get(&ObjectRef::from_obj(&*pod)) {
        Some(p) if p.metadata.uid.as_deref() == Some(uid.as_str()) => {
            Box::pin(run_reconcile(p, ctx.clone())).await
        }
        _ => Ok(Action::await_change()),
    };
    ctx.metrics.reconcile_queue.dec();
    out
}

async fn run_reconcile<P: Provider>(pod: Arc<Pod>, ctx: Arc<Ctx<P>>) -> Result<Action> {
    let r = PodRef::of(&pod);
    let span = tracing::info_span!("reconcile", pod.namespace = %r.namespace, pod.name = %r.name, pod.uid = %r.uid, provider = ctx.provider.name());
    let out = reconcile_inner(&pod, &ctx, &r).instrument(span).await;
    ctx.metrics.reconciles.inc();
    if out.is_ok() {
        ctx.update_local(&r.uid, |l| l.failures = 0);
    }
    out
}

async fn reconcile_inner<P: Provider>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
    if pod.metadata.deletion_timestamp.is_some() {
        return delete(pod, ctx, r).await;
    }
    if is_daemonset_pod(pod) && ctx.config.daemonset_pods == DaemonSetPods::Reject {
        let msg = "DaemonSet pods do not run on skylet virtual nodes: a node agent has no node to act on here. \
                   Add a nodeAffinity to the DaemonSet that excludes nodes labelled type=virtual-kubelet, \
                   or start skylet with --daemonset-pods run";
        if !status::is_terminal(pod) {
            event(
                ctx,
                pod,
                EventType::Warning,
                "DaemonSetPodNotSupported",
                msg,
            )
            .await;
        }
        write_status(
            ctx,
            pod,
            &Observed::Failed {
                reason: "DaemonSetPodNotSupported",
                message: msg,
            },
        )
        .await?;
        return Ok(Action::await_change());
    }
    if let Some(b) = ctx.backend.get(&r.uid) {
        write_status(ctx, pod, &Observed::Backend(&b)).await?;
        refresh_token_if_due(ctx, pod, r).await?;
        return Ok(Action::requeue(RESYNC));
    }
    if status::is_terminal(pod) {
        return Ok(Action::await_change());
    }
    let local = ctx.local(&r.uid);
    if let Some(created) = local.created {
        let waited = created.elapsed();
        if waited < REPORT_WAIT {
            return Ok(Action::requeue(REPORT_WAIT - waited));
        }
        if waited < 2 * ctx.config.sweep_interval + REPORT_WAIT {
            write_status(
                ctx,
                pod,
                &Observed::Waiting {
                    reason: "ContainerCreating",
                    message: None,
                },
            )
            .await?;
            return Ok(Action::requeue(ctx.config.sweep_interval));
        }
        // created long ago and no sweep has seen it since: create again
        // (idempotent), as the kubelet restarts a container that vanished
        tracing::info!(
            "the backend does not report the pod it was asked to create; creating again"
        );
    }
    create(pod, ctx, r).await
}

async fn create<P: Provider>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
    let resolved = match resolve::resolve(&ctx.source, &ctx.node_info, pod).await {
        Ok(res) => res,
        Err(e) => {
            let msg = e.to_string();
            event(ctx, pod, EventType::Warning, e.reason(), &msg).await;
            if e.retriable() {
                write_status(
                    ctx,
                    pod,
                    &Observed::Waiting {
                        reason: e.reason(),
                        message: Some(&msg),
                    },
                )
                .await?;
                return Err(Error::Resolve {
                    pod: r.clone(),
                    source: e,
                });
            }
            write_status(
                ctx,
                pod,
                &Observed::Failed {
                    reason: e.reason(),
                    message: &msg,
                },
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    ctx.update_local(&r.uid, |l| {
        l.created = Some(Instant::now());
        l.refresh_at = resolved.refresh_at;
    });
    match timed(
        &ctx.metrics,
        "create",
        ctx.provider.create_pod(&resolved.pod),
    )
    .await
    {
        // The backend's report (a push, or the next sweep) triggers the
        // status write, in the status lane: writing it here would let this
        // pod overtake the pods queued there. If it has reported already,
        // that reconcile is on its way; without a report by REPORT_WAIT,
        // the pod is said to be ContainerCreating.
        Ok(()) if ctx.backend.contains(&r.uid) => Ok(Action::await_change()),
        Ok(()) => Ok(Action::requeue(REPORT_WAIT)),
        Err(e) => {
            ctx.update_local(&r.uid, |l| l.created = None);
            fail(ctx, pod, r, "create", e).await
        }
    }
}

/// Applies the failure policy of the module docs.
async fn fail<P: Provider>(
    ctx: &Ctx<P>,
    pod: &Pod,
    r: &PodRef,
    op: &'static str,
    e: ProviderError,
) -> Result<Action> {
    match &e {
        ProviderError::InvalidPod { reason, message } => {
            event(ctx, pod, EventType::Warning, reason, message).await;
            write_status(ctx, pod, &Observed::Failed { reason, message }).await?;
            Ok(Action::await_change())
        }
        ProviderError::Unsupported(message) => {
            event(ctx, pod, EventType::Warning, "ProviderUnsupported", message).await;
            write_status(
                ctx,
                pod,
                &Observed::Failed {
                    reason: "ProviderUnsupported",
                    message,
                },
            )
            .await?;
            Ok(Action::await_change())
        }
        ProviderError::Throttled { .. } => Err(Error::Provider {
            op,
            pod: r.clone(),
            source: e,
        }),
        ProviderError::Transient(_) | ProviderError::NotFound(_) => {
            let msg = format!(
                "{op} in backend {} failed, will retry: {e}",
                ctx.provider.name()
            );
            event(ctx, pod, EventType::Warning, "ProviderCreateFailed", &msg).await;
            Err(Error::Provider {
                op,
                pod: r.clone(),
                source: e,
            })
        }
    }
}

async fn refresh_token_if_due<P: Provider>(ctx: &Ctx<P>, pod: &Pod, r: &PodRef) -> Result<()> {
    let due = ctx
        .local(&r.uid)
        .refresh_at
        .is_some_and(|t| t <= Timestamp::now());
    if !due {
        return Ok(());
    }
    let resolved = resolve::resolve(&ctx.source, &ctx.node_info, pod)
        .await
        .map_err(|source| Error::Resolve {
            pod: r.clone(),
            source,
        })?;
    ctx.update_local(&r.uid, |l| l.refresh_at = resolved.refresh_at);
    timed(
        &ctx.metrics,
        "update",
        ctx.provider.update_pod(&resolved.pod),
    )
    .await
    .map_err(|source| Error::Provider {
        op: "update",
        pod: r.clone(),
        source,
    })
}

/// Graceful deletion: ask the backend to stop the pod within the grace
/// period, wait until it is gone (or the grace period is over), then remove
/// the pod object with a UID precondition.
async fn delete<P: Provider>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
    if ctx.removed().contains(&r.uid) {
        return Ok(Action::await_change());
    }
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(30)
        .max(0);
    let deadline = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let local = ctx.local(&r.uid);
    if ctx.backend.contains(&r.uid) && local.delete_requested.is_none() {
        let grace_d = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        match timed(&ctx.metrics, "delete", ctx.provider.delete_pod(r, grace_d)).await {
            Ok(Deleted::Gone) | Err(ProviderError::NotFound(_)) => {
                ctx.backend.remove(&r.uid);
            }
            Ok(Deleted::Stopping) => {
                ctx.update_local(&r.uid, |l| l.delete_requested = Some(Instant::now()))
            }
            Err(e) => {
                return Err(Error::Provider {
                    op: "delete",
                    pod: r.clone(),
                    source: e,
                });
            }
        }
    }
    let now = Timestamp::now();
    if ctx.backend.contains(&r.uid) && now < deadline {
        let left = (deadline - now).get_milliseconds().clamp(100, 1000);
        return Ok(Action::requeue(Duration::from_millis(
            u64::try_from(left).unwrap_or(1000),
        )));
    }
    if ctx.backend.contains(&r.uid) {
        tracing::warn!(
            "grace period over and the backend still reports the pod; removing it anyway"
        );
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(r.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&r.name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => {
            return Err(Error::Delete {
                pod: r.clone(),
                source,
            });
        }
    }
    ctx.removed().insert(&r.uid);
    ctx.forget(&r.uid);
    Ok(Action::await_change())
}

/// Writes the status for `observed` if it differs from the pod's.
async fn write_status<P: Provider>(ctx: &Ctx<P>, pod: &Pod, observed: &Observed<'_>) -> Result<()> {
    let desired = status::desired(pod, observed, &ctx.node_info.ip, Timestamp::now());
    if !status::changed(pod.status.as_ref(), &desired) {
        return Ok(());
    }
    let r = PodRef::of(pod);
    if tracing::enabled!(tracing::Level::TRACE) {
        tracing::trace!(current = %serde_json::to_string(&pod.status).unwrap_or_default(), desired = %serde_json::to_string(&desired).unwrap_or_default(), "status differs");
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &r.namespace);
    // the UID precondition keeps a status from landing on a recreated pod
    let patch = json!({"metadata": {"uid": r.uid}, "status": desired});
    ctx.metrics.status_writes.inc();
    match api
        .patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()), // gone or replaced
        Err(source) => Err(Error::WriteStatus { pod: r, source }),
    }
}

async fn event<P>(ctx: &Ctx<P>, pod: &Pod, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &pod.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "failed to publish event");
    }
}

fn error_policy<P: Provider>(pod: Arc<Pod>, err: &Error, ctx: Arc<Ctx<P>>) -> Action {
    let uid = pod.uid().unwrap_or_default();
    let mut failures = 0;
    ctx.update_local(&uid, |l| {
        l.failures = l.failures.saturating_add(1);
        failures = l.failures;
    });
    if let Error::Provider {
        source: ProviderError::Throttled {
            retry_after: Some(d),
        },
        ..
    } = err
    {
        tracing::info!(error = %err, retry_after = ?d, "backend throttled; waiting as asked");
        return Action::requeue(*d);
    }
    if let Some(d) = apiserver_retry_after(err) {
        // kube-rs does not retry a 429 from the API server (priority and
        // fairness); wait as long as it asks, without escalating the backoff
        ctx.update_local(&uid, |l| l.failures = l.failures.saturating_sub(1));
        tracing::debug!(error = %err, retry_after = ?d, "API server throttled; waiting as asked");
        return Action::requeue(d);
    }
    // a missing ConfigMap or Secret is looked for again at least every 20 s,
    // so the pod starts soon after someone creates it
    let delay = match err {
        Error::Resolve { .. } => backoff(failures).min(Duration::from_secs(20)),
        _ => backoff(failures),
    };
    tracing::warn!(error = %err, cause = ?std::error::Error::source(err).map(ToString::to_string), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How long the API server asked skylet to wait, for a 429 on a status
/// write or a delete (`details.retryAfterSeconds`, else 1 s).
fn apiserver_retry_after(err: &Error) -> Option<Duration> {
    let (Error::WriteStatus {
        source: kube::Error::Api(s),
        ..
    }
    | Error::Delete {
        source: kube::Error::Api(s),
        ..
    }) = err
    else {
        return None;
    };
    (s.code == 429).then(|| {
        let secs = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
        Duration::from_secs(u64::from(secs.clamp(1, 60)))
    })
}

/// 1 s, 2 s, 4 s ... capped at 5 minutes, with up to 10% jitter so that
/// failures of many pods at once do not retry in lockstep.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9))
        .min(Duration::from_secs(300));
    let jitter = base.as_millis() as u64 / 10;
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    base + Duration::from_millis(if jitter == 0 { 0 } else { nanos % jitter })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_429_waits_as_asked() {
        let pod = PodRef::new("ns", "p", "u");
        let status = |code: u16, retry: Option<u32>| {
            let mut s = kube::core::Status::failure("slow down", "TooManyRequests").with_code(code);
            s.details = retry.map(|r| {
                serde_json::from_value(json!({"retryAfterSeconds": r}))
                    .unwrap_or_else(|e| panic!("{e}"))
            });
            kube::Error::Api(s.boxed())
        };
        let write = |code, retry| Error::WriteStatus {
            pod: pod.clone(),
            source: status(code, retry),
        };
        assert_eq!(
            apiserver_retry_after(&write(429, Some(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            apiserver_retry_after(&write(429, None)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            apiserver_retry_after(&Error::Delete {
                pod: pod.clone(),
                source: status(429, Some(900))
            }),
            Some(Duration::from_secs(60))
        );
        assert_eq!(apiserver_retry_after(&write(500, None)), None);
    }

    #[test]
    fn recent_uids_are_bounded() {
        let mut r = Recent::default();
        for i in 0..Recent::MAX + 10 {
            r.insert(&i.to_string());
        }
        assert!(!r.contains("0") && r.contains("10") && r.contains(&(Recent::MAX + 9).to_string()));
        assert_eq!(r.set.len(), Recent::MAX);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert!(backoff(1) >= Duration::from_secs(1) && backoff(1) < Duration::from_millis(1101));
        assert!(backoff(3) >= Duration::from_secs(4) && backoff(3) < Duration::from_millis(4401));
        assert!(backoff(50) >= Duration::from_secs(300) && backoff(50) <= Duration::from_secs(330));
    }
}
