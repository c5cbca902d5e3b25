//! Pods: watch the pods bound to this node, run them through the backend,
//! write their status back, delete them gracefully, and sweep the backend.
//!
//! The path of a pod (ARCHITECTURE.md has the picture):
//! - the watch on `spec.nodeName` feeds the [work queue](queue) (one entry
//!   per pod, never two reconciles of a pod at once, first come first
//!   served in two lanes), as do the pods whose backend state changed
//!   ([`push`], [`sweep`]) and the reconciles that asked to run again later;
//! - a [reconcile](reconcile::reconcile) gathers what skylet knows of the
//!   pod, [decides](decide) what to do, and does it: resolve and create,
//!   write the backend's status, stop, finalize;
//! - a failure is judged once, by [`policy`];
//! - [`table::PodTable`] holds, per pod, what the backend last reported and
//!   skylet's own bookkeeping, behind one lock;
//! - the store keeps a [`PodRecord`] per pod: the whole pod until the
//!   backend holds it, then only what the core reads again.
//!
//! A pod costs one status write when its backend state changes and nothing
//! otherwise.
//!
//! # RBAC
//! `pods`: get, list, watch, delete; `pods/status`: patch; `events`
//! (events.k8s.io): create, patch; plus what [`resolve`] needs.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use skylet_provider::{PodRef, Provider, SinkReceiver};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::PodsConfig, metrics::NodeMetrics};

mod changes;
mod decide;
mod packed;
pub mod policy;
mod push;
mod queue;
mod reconcile;
mod record;
pub mod resolve;
pub mod status;
mod sweep;
mod table;

pub use policy::{Error, Result};
use queue::{Key, Lane, WorkQueue};
pub use record::PodRecord;
use table::PodTable;

/// Where the pod controller reports what it sees and does, besides the
/// pods' status and Events.
pub struct Reporting {
    /// The node's metrics.
    pub metrics: NodeMetrics,
    /// What the node shows of refusals and use.
    pub signals: Arc<crate::node::Signals>,
    /// What the pods cost, when the backend has a price.
    pub meter: Option<crate::cost::CostMeter>,
    /// The fleet's fail-overs.
    pub ledger: crate::failover::Ledger,
}

/// Shared by every reconcile.
pub struct Ctx<P> {
    client: Client,
    provider: Arc<P>,
    config: PodsConfig,
    metrics: NodeMetrics,
    store: Store<PodRecord>,
    table: Arc<PodTable>,
    recorder: Recorder,
    source: resolve::KubeSource,
    node_info: resolve::NodeInfo,
    trigger: mpsc::UnboundedSender<Key>,
    /// What the node shows of refusals and use.
    signals: Arc<crate::node::Signals>,
    /// What the pods cost, when the backend has a price.
    meter: Option<crate::cost::CostMeter>,
    /// The fleet's fail-overs.
    ledger: crate::failover::Ledger,
}

/// Reconciles the pods bound to this node.
pub struct PodController<P> {
    ctx: Arc<Ctx<P>>,
    /// The pods of the node as the watch applies them to the store.
    pods: BoxStream<'static, Result<watcher::Event<PodRecord>, watcher::Error>>,
    triggers: mpsc::UnboundedReceiver<Key>,
    services: (Store<Service>, reflector::store::Writer<Service>),
    events: SinkReceiver,
}

impl<P: Provider> PodController<P> {
    /// A controller for the pods with `spec.nodeName` = the configured node.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        config: PodsConfig,
        with: Reporting,
        events: SinkReceiver,
    ) -> Self {
        let Reporting {
            metrics,
            signals,
            meter,
            ledger,
        } = with;
        let pods: Api<Pod> = Api::all(client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
        // The store keeps every pod of the node: whole until the backend
        // holds it, then the slim record (record.rs). managedFields are often
        // a third of a pod and skylet never reads them: dropped at once.
        let (store, writer) = reflector::store();
        let table = Arc::new(PodTable::default());
        let settled = table.clone();
        let stream = watcher(pods, wc)
            .backoff(crate::watch_backoff())
            .modify(|p: &mut Pod| p.managed_fields_mut().clear())
            .map_ok(move |ev| record::keep(ev, |uid| settled.settled(uid)))
            .reflect(writer)
            .boxed();
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
            csi_secret_attributes: provider.csi_secret_attributes(),
        };
        let ctx = Arc::new(Ctx {
            source: resolve::KubeSource::new(client.clone(), services_store.clone()),
            client,
            provider,
            metrics,
            store,
            table,
            signals,
            meter,
            ledger,
            recorder,
            node_info,
            trigger,
            config,
        });
        Self {
            ctx,
            pods: stream,
            triggers,
            services: (services_store, services_writer),
            events,
        }
    }

    /// The pods bound to this node, as the watch sees them.
    pub fn store(&self) -> Store<PodRecord> {
        self.ctx.store.clone()
    }

    /// Runs until `shutdown`: the reconcile loop, the sweep, the push stream.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            ctx,
            pods,
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
        sweep::initial_listing(&ctx).await;
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

        tokio::spawn(push::push_loop(ctx.clone(), events, shutdown.clone()).in_current_span());
        tokio::spawn(retry_on_recovery(ctx.clone(), shutdown.clone()).in_current_span());
        tokio::spawn(sweep::sweep_loop(ctx.clone(), shutdown.clone()).in_current_span());

        work(ctx, pods, triggers, shutdown).await;
        svc_task.abort();
    }
}

/// Every pod of the node is reconciled at least this often, whatever
/// happened: a safety net under the watch, the backend's reports and the
/// sweep, as the kubelet's periodic sync is. One timer for the node, not
/// one per pod.
const RESYNC: Duration = Duration::from_secs(300);

/// The controller's loop: queues every pod the watch applies, every trigger
/// and every timer that fires, and starts reconciles as the lanes have room,
/// until `shutdown`; then lets the running reconciles end.
async fn work<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut pods: BoxStream<'static, Result<watcher::Event<PodRecord>, watcher::Error>>,
    mut triggers: mpsc::UnboundedReceiver<Key>,
    shutdown: CancellationToken,
) {
    let mut queue = WorkQueue::new(ctx.config.concurrency, ctx.config.status_concurrency);
    let mut running: JoinSet<(Key, queue::Action)> = JoinSet::new();
    let mut running_ids = std::collections::HashMap::new();
    // nothing runs before the store holds every pod of the node: the
    // watch's first list has ended
    let mut is_ready = false;
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if is_ready {
            for lane in [Lane::Backend, Lane::Status] {
                while let Some(key) = queue.next(lane) {
                    let Some(record) = ctx.store.get(&key.object_ref()) else {
                        // gone: nothing left to do for it
                        queue.done(key, queue::Action::await_change(), |k| ctx.lane(k));
                        continue;
                    };
                    let c = ctx.clone();
                    let k = key.clone();
                    let task = running.spawn(
                        async move {
                            let action = match reconcile::reconcile(record.clone(), c.clone()).await
                            {
                                Ok(a) => a,
                                Err(e) => reconcile::on_error(record, &e, c),
                            };
                            (k, action)
                        }
                        .in_current_span(),
                    );
                    running_ids.insert(task.id(), key);
                }
            }
        }
        ctx.metrics
            .reconcile_queue
            .set(i64::try_from(queue.depth()).unwrap_or(i64::MAX));
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(ev) = pods.next() => match ev {
                Ok(ev) => is_ready |= on_watch_event(&mut queue, &ctx.store, ev, |k| ctx.lane(k)),
                Err(e) => tracing::debug!(error = %e, "pod watch error; retrying"),
            },
            Some(key) = triggers.recv() => queue.add(key, |k| ctx.lane(k)),
            key = queue.expired() => queue.add(key, |k| ctx.lane(k)),
            _ = resync.tick(), if is_ready => queue_all(&mut queue, &ctx.store, |k| ctx.lane(k)),
            Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                let (key, action) = match ended {
                    Ok((id, done)) => {
                        running_ids.remove(&id);
                        done
                    }
                    Err(e) => {
                        // a bug in a reconcile; the pod is tried again later
                        tracing::error!(error = %e, "a reconcile panicked");
                        let Some(key) = running_ids.remove(&e.id()) else { continue };
                        (key, queue::Action::requeue(Duration::from_secs(10)))
                    }
                };
                queue.done(key, action, |k| ctx.lane(k));
            }
        }
    }
    // as a graceful shutdown of kube-runtime's Controller: what runs ends
    while running.join_next().await.is_some() {}
    ctx.metrics.reconcile_queue.set(0);
}

/// Queues the pods a watch event names, once the store shows them as the
/// event does; true when a list of the node's pods has ended.
///
/// The reflector has applied `ev` to `store` already. For an `Apply` the
/// store is current. A (re-)list, though, is buffered: the store keeps its
/// old view until `InitDone`, so a reconcile started on an `InitApply`
/// would act on the pod as it was before the watch broke (not yet deleted,
/// say) and then wait for a change that has already happened. The listed
/// pods are queued at `InitDone`, all of them, as the store then holds them.
fn on_watch_event(
    queue: &mut WorkQueue,
    store: &Store<PodRecord>,
    ev: watcher::Event<PodRecord>,
    lane: impl Fn(&Key) -> Lane,
) -> bool {
    match ev {
        watcher::Event::Apply(p) => queue.add(Key::of(&p), &lane),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
        watcher::Event::InitDone => {
            queue_all(queue, store, lane);
            return true;
        }
        // gone from the apiserver: nothing to reconcile; what the backend
        // still runs for it is the sweep's
        watcher::Event::Delete(_) => {}
    }
    false
}

/// Queues every pod of `store`.
fn queue_all(queue: &mut WorkQueue, store: &Store<PodRecord>, lane: impl Fn(&Key) -> Lane) {
    for p in store.state() {
        queue.add(Key::of(&p), &lane);
    }
}

/// When the backend answers again after an outage, wakes at once the pods
/// that wait for it: deleted pods whose instances must be stopped (they
/// stay Terminating until then) and pods whose calls failed.
async fn retry_on_recovery<P: Provider>(ctx: Arc<Ctx<P>>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = ctx.signals.recovered() => {}
        }
        let waiting: Vec<PodRef> = ctx
            .store
            .state()
            .iter()
            .filter(|p| {
                p.meta().deletion_timestamp.is_some()
                    || ctx.table.local(&p.uid().unwrap_or_default()).failures > 0
            })
            .map(|p| p.pod_ref())
            .collect();
        tracing::info!(
            pods = waiting.len(),
            "backend recovered; retrying the pods that wait for it"
        );
        for p in &waiting {
            ctx.trigger(p);
        }
    }
}

impl<P: Provider> Ctx<P> {
    /// Whether [`Ctx::meter`] with `instance_runs` would start metering
    /// `pod`: it then needs the whole pod (its billed size).
    fn meter_starts(&self, pod: &PodRef, instance_runs: bool) -> bool {
        instance_runs && self.meter.as_ref().is_some_and(|m| !m.is_running(pod))
    }

    /// Tells the cost meter that `pod`'s instance runs (the backend holds
    /// it and it has not ended) or not.
    fn meter(&self, pod: &Pod, instance_runs: bool) {
        let Some(m) = &self.meter else { return };
        let r = PodRef::of(pod);
        match (instance_runs, m.is_running(&r)) {
            (true, false) => m.started_pod(pod, self.provider.billed_size(pod), crate::cost::now()),
            (false, true) => m.stopped(&r, crate::cost::now()),
            _ => {}
        }
    }
}

impl<P> Ctx<P> {
    /// The lane `key`'s reconcile waits in: the status lane for a pod the
    /// backend holds and that is not being deleted, the backend lane
    /// otherwise.
    fn lane(&self, key: &Key) -> Lane {
        match self.store.get(&key.object_ref()) {
            Some(p)
                if p.meta().deletion_timestamp.is_none()
                    && self.table.in_backend(&p.uid().unwrap_or_default()) =>
            {
                Lane::Status
            }
            _ => Lane::Backend,
        }
    }

    /// The whole `pod`: itself, or for a slim one (`slim`), the pod as the
    /// apiserver has it now; `None` once it is gone or was replaced.
    async fn whole(&self, pod: &Arc<Pod>, slim: bool) -> Result<Option<Arc<Pod>>> {
        if !slim {
            return Ok(Some(pod.clone()));
        }
        let r = PodRef::of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &r.namespace);
        match api.get_opt(&r.name).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                Ok(Some(Arc::new(p)))
            }
            Ok(_) => Ok(None),
            Err(source) => Err(Error::Get { pod: r, source }),
        }
    }

    /// Wakes the reconcile of `pod`.
    fn trigger(&self, pod: &PodRef) {
        let _ = self.trigger.send(Key::new(&pod.namespace, &pod.name));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::watcher::Event;

    use super::*;

    fn pod(name: &str, deleting: bool) -> PodRecord {
        PodRecord::from(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    /// What the controller's loop does with one event: the reflector
    /// applies it to the store first, as `reflect` does.
    fn deliver(
        queue: &mut WorkQueue,
        store: &Store<PodRecord>,
        writer: &mut reflector::store::Writer<PodRecord>,
        ev: Event<PodRecord>,
    ) -> bool {
        writer.apply_watcher_event(&ev);
        on_watch_event(queue, store, ev, |_| Lane::Backend)
    }

    #[test]
    fn a_pod_deleted_while_the_watch_was_down_is_reconciled_as_deleted() {
        let (store, mut writer) = reflector::store();
        let mut queue = WorkQueue::new(0, 0);
        for ev in [Event::Init, Event::InitApply(pod("a", false))] {
            assert!(!deliver(&mut queue, &store, &mut writer, ev));
        }
        assert!(deliver(&mut queue, &store, &mut writer, Event::InitDone));
        let a = queue.next(Lane::Backend).expect("listed pods are queued");
        queue.done(a, queue::Action::await_change(), |_| Lane::Backend);

        // the watch broke; "a" was deleted meanwhile; the watch lists again
        for ev in [Event::Init, Event::InitApply(pod("a", true))] {
            assert!(!deliver(&mut queue, &store, &mut writer, ev));
            assert_eq!(
                queue.next(Lane::Backend),
                None,
                "nothing runs while the store shows the pod as it was"
            );
        }
        assert!(deliver(&mut queue, &store, &mut writer, Event::InitDone));
        let key = queue.next(Lane::Backend).expect("queued once listed");
        let seen = store.get(&key.object_ref()).expect("in the store");
        assert!(
            seen.meta().deletion_timestamp.is_some(),
            "the reconcile reads the pod as deleted"
        );
    }

    #[test]
    fn a_watched_change_is_queued_at_once() {
        let (store, mut writer) = reflector::store();
        let mut queue = WorkQueue::new(0, 0);
        deliver(&mut queue, &store, &mut writer, Event::Init);
        deliver(&mut queue, &store, &mut writer, Event::InitDone);
        assert!(!deliver(
            &mut queue,
            &store,
            &mut writer,
            Event::Apply(pod("b", true))
        ));
        assert_eq!(queue.next(Lane::Backend), Some(Key::new("ns", "b")));
        deliver(
            &mut queue,
            &store,
            &mut writer,
            Event::Delete(pod("b", true)),
        );
        assert_eq!(queue.next(Lane::Backend), None, "a deletion queues nothing");
    }
}
