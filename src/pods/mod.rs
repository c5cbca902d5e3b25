//! Pods: watch the pods bound to this node, run them through the backend,
//! write their status back, delete them gracefully, and sweep the backend.
//!
//! The path of a pod (ARCHITECTURE.md has the picture):
//! - the watch on `spec.nodeName` feeds kube-runtime's `Controller`
//!   (per-pod serialization and deduplication), which calls
//!   [`reconcile`](reconcile::reconcile) for every change, and for every pod
//!   whose backend state changed ([`push`], [`sweep`]);
//! - a reconcile waits for its turn in a [lane](lanes), gathers what skylet
//!   knows of the pod, [decides](decide) what to do, and does it: resolve and
//!   create, write the backend's status, stop, finalize;
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

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use skylet_provider::{PodRef, Provider, SinkReceiver};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::PodsConfig, metrics::NodeMetrics};

mod changes;
mod decide;
mod lanes;
mod packed;
pub mod policy;
mod push;
mod reconcile;
mod record;
pub mod resolve;
pub mod status;
mod sweep;
mod table;

pub use policy::{Error, Result};
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
    trigger: mpsc::UnboundedSender<ObjectRef<PodRecord>>,
    lanes: lanes::Lanes,
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
    controller: Controller<PodRecord>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<PodRecord>>,
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
            lanes: lanes::Lanes::new(config.concurrency, config.status_concurrency),
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
    pub fn store(&self) -> Store<PodRecord> {
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

        let triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(triggers);
        controller
            .reconcile_on(triggers)
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(reconcile::reconcile, reconcile::on_error, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            })
            .await;
        svc_task.abort();
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
        let _ = self
            .trigger
            .send(ObjectRef::new(&pod.name).within(&pod.namespace));
    }
}
