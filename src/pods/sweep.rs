//! The sweep: what the backend holds, in one list call per interval (the
//! safety net under the backend's pushes, and its only status source when it
//! pushes nothing). It notes status changes, deletes backend pods that no
//! Kubernetes pod owns, wakes pods the backend should hold but does not, and
//! refreshes the phase gauges.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Resource, ResourceExt};
use skylet_provider::{Deleted, PodRef, Provider, ProviderError};
use tokio_util::sync::CancellationToken;

use super::{Ctx, PodRecord, table::Listing};
use crate::metrics::timed;

/// Lists the backend before the first reconcile, so that existing pods are
/// adopted rather than created again. Gives up after three tries: creates
/// are idempotent and the next sweep catches up.
pub(super) async fn initial_listing<P: Provider>(ctx: &Ctx<P>) {
    for attempt in 1..=3 {
        match list(ctx).await {
            Ok((_, held)) => {
                tracing::info!(pods = held, "backend holds pods for this node");
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

/// Lists the backend into the table a page at a time
/// ([`Provider::list_page`]), so that only one page of statuses is held at
/// once. Returns the pods whose status changed or that disappeared, and how
/// many pods the backend holds. A page that fails ends the listing: the
/// pages before it are recorded, and no pod is taken for gone.
async fn list<P: Provider>(ctx: &Ctx<P>) -> Result<(Vec<PodRef>, usize), ProviderError> {
    let mut listing = Listing::new(Instant::now());
    let mut changed = Vec::new();
    let pages = async {
        let mut from = None;
        loop {
            let page = ctx.provider.list_page(from).await?;
            changed.extend(ctx.table.apply_page(&mut listing, page.pods));
            from = page.next;
            if from.is_none() {
                return Ok(());
            }
        }
    };
    timed(&ctx.metrics, "list", pages).await?;
    let held = listing.len();
    changed.extend(ctx.table.end_listing(listing));
    Ok((changed, held))
}

/// Sweeps every `sweep_interval` until `shutdown`, once the pod watch has a
/// complete picture (orphans are judged against it).
pub(super) async fn sweep_loop<P: Provider>(ctx: Arc<Ctx<P>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.config.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the initial listing was just taken
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

/// One sweep.
async fn sweep<P: Provider>(ctx: &Ctx<P>) {
    match list(ctx).await {
        Ok((changed, held)) => {
            ctx.metrics
                .backend_pods
                .set(i64::try_from(held).unwrap_or(i64::MAX));
            for pod in changed {
                ctx.trigger(&pod);
            }
            ctx.signals.held_pods(ctx.table.backend_len());
            if let Some(m) = &ctx.meter {
                m.retain_running(crate::cost::now(), |p| ctx.table.in_backend(&p.uid));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "backend sweep failed; retrying next interval");
            // the gauges still follow the pods: while the backend is down,
            // the pods awaiting fencing are the ones to watch
            set_gauges(ctx, &known(ctx));
            return;
        }
    }
    let known = known(ctx);
    tracing::debug!(
        backend = ctx.table.backend_len(),
        kubernetes = known.len(),
        "sweep"
    );
    for orphan in ctx
        .table
        .backend_pods()
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
        let missing = !pod.is_terminal()
            && pod.meta().deletion_timestamp.is_none()
            && !ctx.table.in_backend(&uid);
        if missing && ctx.table.local(&uid).failures == 0 {
            ctx.trigger(&pod.pod_ref());
        }
    }
    set_gauges(ctx, &known);
}

/// The pods bound to the node, by UID.
fn known<P>(ctx: &Ctx<P>) -> HashMap<String, Arc<PodRecord>> {
    ctx.store
        .state()
        .into_iter()
        .filter_map(|p| p.meta().uid.clone().map(|u| (u, p)))
        .collect()
}

/// The phase gauges, and the deleted pods whose instance the backend
/// has not confirmed gone (by its last listing).
fn set_gauges<P>(ctx: &Ctx<P>, known: &HashMap<String, Arc<PodRecord>>) {
    count_phases(ctx, known.values());
    let awaiting = known
        .iter()
        .filter(|(uid, p)| p.meta().deletion_timestamp.is_some() && ctx.table.in_backend(uid))
        .count();
    ctx.metrics
        .awaiting_fencing
        .set(i64::try_from(awaiting).unwrap_or(i64::MAX));
}

fn count_phases<'a, P>(ctx: &Ctx<P>, pods: impl Iterator<Item = &'a Arc<PodRecord>>) {
    let mut phases: HashMap<&str, i64> = HashMap::new();
    for p in pods {
        let phase = p.phase();
        *phases.entry(phase.unwrap_or("Pending")).or_default() += 1;
    }
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        ctx.metrics
            .set_phase(phase, phases.get(phase).copied().unwrap_or(0));
    }
}

/// Deletes a backend pod that no Kubernetes pod owns, after checking with the
/// apiserver (not only the watch cache) that its pod is really gone.
async fn delete_orphan<P: Provider>(ctx: &Ctx<P>, orphan: PodRef) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &orphan.namespace);
    match api.get_opt(&orphan.name).await {
        // the watch is behind
        Ok(Some(p)) if p.metadata.uid.as_deref() == Some(orphan.uid.as_str()) => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(pod = %orphan, error = %e, "cannot check a possible orphan; keeping it for now");
            return;
        }
    }
    tracing::info!(pod = %orphan, "deleting backend pod that no Kubernetes pod owns");
    let stop = ctx.provider.delete_pod(&orphan, Duration::from_secs(30));
    match timed(&ctx.metrics, "delete", stop).await {
        Ok(Deleted::Gone) | Err(ProviderError::NotFound(_)) => {
            ctx.metrics.orphans_deleted.inc();
            ctx.table.forget(&orphan.uid);
        }
        Ok(Deleted::Stopping) => {}
        Err(e) => {
            tracing::warn!(pod = %orphan, error = %e, "failed to delete orphan; retrying next sweep");
        }
    }
}
