//! One reconcile of one pod: wait for a turn in its lane, gather the
//! [`Facts`], [`decide`], and do what was decided.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::events::{Event, EventType},
};
use serde_json::json;
use skylet_provider::{Deleted, PodRef, Provider, ProviderError};
use tracing::Instrument;

use super::{
    Ctx, PodRecord, changes,
    decide::{DEADLINE_EXCEEDED, Decision, Facts, REPORT_WAIT, decide},
    policy::{self, Error, Result},
    queue::Action,
    resolve,
    status::{self, Observed},
};
use crate::{config::DaemonSetPods, failover::Reason, metrics::timed};

/// Why a pod failed by its `activeDeadlineSeconds`, as the kubelet says it.
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why DaemonSet pods are refused, and what to do about it.
const DAEMONSET_REFUSED: &str = "DaemonSet pods do not run on skylet virtual nodes: a node agent has \
     no node to act on here. Add a nodeAffinity to the DaemonSet that excludes nodes labelled \
     type=virtual-kubelet, or start skylet with --daemonset-pods run";

/// Reconciles the pod as the store has it now (the work queue looked it up
/// when its turn came).
pub(super) async fn reconcile<P: Provider>(
    pod: Arc<PodRecord>,
    ctx: Arc<Ctx<P>>,
) -> Result<Action> {
    run(pod.pod(), pod.is_slim(), ctx).await
}

/// The error policy of the controller: count the failure, wait as
/// [`policy::retry_after`] says.
pub(super) fn on_error<P: Provider>(pod: Arc<PodRecord>, err: &Error, ctx: Arc<Ctx<P>>) -> Action {
    let r = pod.pod_ref();
    let failures = ctx.table.failed(&r);
    let (delay, counts) = policy::retry_after(err, failures);
    if !counts {
        ctx.table
            .update(&r, |l| l.failures = l.failures.saturating_sub(1));
        tracing::debug!(error = %err, retry_after = ?delay, "API server throttled; waiting as asked");
    } else if matches!(
        err,
        Error::Provider {
            source: ProviderError::Throttled { .. },
            ..
        }
    ) {
        tracing::info!(error = %err, retry_after = ?delay, "backend throttled; waiting");
    } else {
        tracing::warn!(error = %err, cause = ?std::error::Error::source(err).map(ToString::to_string), retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}

/// Reconciles `pod`; `slim`: it was built from the slim record, and the
/// whole pod is fetched again where it is needed.
async fn run<P: Provider>(pod: Arc<Pod>, slim: bool, ctx: Arc<Ctx<P>>) -> Result<Action> {
    let r = PodRef::of(&pod);
    let span = tracing::info_span!("reconcile", pod.namespace = %r.namespace, pod.name = %r.name, pod.uid = %r.uid, provider = ctx.provider.name(), backend = %ctx.config.node_name, outcome = tracing::field::Empty);
    crate::telemetry::pod_trace(&span, &r.uid);
    let out = act(&pod, slim, &ctx, &r).instrument(span.clone()).await;
    span.record("outcome", if out.is_ok() { "ok" } else { "error" });
    ctx.metrics.reconciles.inc();
    if out.is_ok() {
        ctx.table.update(&r, |l| l.failures = 0);
    }
    out
}

/// What skylet knows of `pod` now.
fn facts<P>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef) -> Facts {
    let local = ctx.table.local(&r.uid);
    let deadline = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    Facts {
        deadline,
        refused_daemonset: is_daemonset_pod(pod)
            && ctx.config.daemonset_pods == DaemonSetPods::Reject,
        finished: status::is_terminal(pod),
        in_backend: ctx.table.in_backend(&r.uid),
        removed: ctx.table.is_removed(&r.uid),
        stop_requested: local.delete_requested.is_some(),
        kill_requested: local.kill_requested.is_some(),
        created_ago: local.created.map(|t| t.elapsed()),
        token_due: local.refresh_at.is_some_and(|t| t <= Timestamp::now()),
        sweep_interval: ctx.config.sweep_interval,
        active_deadline: active_deadline(pod),
        failed_by_deadline: pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some(DEADLINE_EXCEEDED)
        }),
    }
}

/// When `pod`'s `activeDeadlineSeconds` end: counted from its start time,
/// as the kubelet counts them.
fn active_deadline(pod: &Pod) -> Option<Timestamp> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// The steady pod's next look: when its active deadline ends or its
/// service-account token is due, whichever comes first; otherwise only when
/// something changes. A steady pod needs nothing else: a change of the pod
/// comes by the watch (which lists everything again after it lost its
/// place), a change in the backend by the backend's reports and the sweep's
/// listing (every `--sweep-interval`), a failed call by the error policy;
/// and the controller's loop looks at every pod again each
/// [`RESYNC`](super::RESYNC) in case all of those missed something. (Until
/// session 7 that resync was a timer per pod: 2 MB at 10,000 pods.)
fn next_look(pod: &Pod, refresh_at: Option<Timestamp>) -> Action {
    match [active_deadline(pod), refresh_at]
        .into_iter()
        .flatten()
        .min()
    {
        Some(at) => {
            let left = Timestamp::now().duration_until(at);
            Action::requeue(
                Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(100),
            )
        }
        None => Action::await_change(),
    }
}

/// Decides and acts; a stop that ends at once is followed by the
/// finalization in the same reconcile.
async fn act<P: Provider>(pod: &Arc<Pod>, slim: bool, ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
    loop {
        let facts = facts(pod, ctx, r);
        if !facts.in_backend {
            // no instance, nothing billed
            ctx.meter(pod, false);
        }
        if facts.deadline.is_some() && facts.in_backend && ctx.signals.backend_down() {
            // deleted while its backend is down: evicted, to be replaced elsewhere
            let first = ctx
                .table
                .update(r, |l| !std::mem::replace(&mut l.departed, true));
            if first {
                ctx.metrics.displaced("outage");
                ctx.ledger
                    .departed(pod, &ctx.config.node_name, Reason::Outage, Instant::now());
            }
        }
        match decide(&facts, Timestamp::now()) {
            Decision::Nothing => return Ok(Action::await_change()),
            Decision::RefuseDaemonSet => {
                if !facts.finished {
                    event(
                        ctx,
                        pod,
                        EventType::Warning,
                        "DaemonSetPodNotSupported",
                        DAEMONSET_REFUSED,
                    )
                    .await;
                }
                let failed = Observed::Failed {
                    reason: "DaemonSetPodNotSupported",
                    message: DAEMONSET_REFUSED,
                };
                write_status(ctx, pod, &failed).await?;
                return Ok(Action::await_change());
            }
            Decision::Sync { refresh_token } => {
                if let Some(held) = ctx.table.backend_status(&r.uid) {
                    let ended = matches!(held.phase.as_deref(), Some("Succeeded" | "Failed"));
                    // the meter bills the whole pod's size
                    if slim && ctx.meter_starts(r, !ended) {
                        let Some(whole) = ctx.whole(pod, slim).await? else {
                            return Ok(Action::await_change());
                        };
                        ctx.meter(&whole, !ended);
                    } else {
                        ctx.meter(pod, !ended);
                    }
                    // from now on the whole pod is needed again only for a
                    // new token or a create: the store may keep the slim
                    // record, from the watch event of the status written
                    // next (which may arrive before the write returns)
                    if ctx.table.local(&r.uid).refresh_at.is_none() {
                        ctx.table.update(r, |l| l.settled = true);
                    }
                    if held.phase.as_deref() == Some("Running")
                        && ctx
                            .table
                            .update(r, |l| !std::mem::replace(&mut l.arrived, true))
                    {
                        ctx.ledger
                            .arrived(pod, &ctx.config.node_name, Instant::now());
                    }
                    let mut held = held;
                    if !ended && !facts.finished {
                        changes::apply(ctx, pod, r).await?;
                    }
                    let applied = ctx.table.local(&r.uid).applied;
                    changes::annotate(&mut held, pod, applied.as_deref());
                    write_status(ctx, pod, &Observed::Backend(&held)).await?;
                }
                if refresh_token {
                    let Some(whole) = ctx.whole(pod, slim).await? else {
                        return Ok(Action::await_change());
                    };
                    refresh_token_of(ctx, &whole, r).await?;
                }
                return Ok(next_look(pod, ctx.table.local(&r.uid).refresh_at));
            }
            Decision::ExceedDeadline { stop: stop_it } => {
                if stop_it {
                    tracing::info!("active deadline exceeded; stopping the pod's instance");
                    stop(pod, ctx, r, false).await?;
                }
                if !facts.finished {
                    event(
                        ctx,
                        pod,
                        EventType::Warning,
                        DEADLINE_EXCEEDED,
                        DEADLINE_MESSAGE,
                    )
                    .await;
                }
                let failed = Observed::Failed {
                    reason: DEADLINE_EXCEEDED,
                    message: DEADLINE_MESSAGE,
                };
                write_status(ctx, pod, &failed).await?;
                return Ok(Action::await_change());
            }
            Decision::AwaitReport(d) | Decision::AwaitStop(d) => return Ok(Action::requeue(d)),
            Decision::ReportCreating => {
                let creating = Observed::Waiting {
                    reason: "ContainerCreating",
                    message: None,
                };
                write_status(ctx, pod, &creating).await?;
                return Ok(Action::requeue(ctx.config.sweep_interval));
            }
            Decision::Create => {
                if facts.created_ago.is_some() {
                    tracing::info!(
                        "the backend does not report the pod it was asked to create; creating again"
                    );
                }
                let Some(whole) = ctx.whole(pod, slim).await? else {
                    return Ok(Action::await_change());
                };
                return create(&whole, ctx, r).await;
            }
            Decision::Stop => stop(pod, ctx, r, false).await?,
            Decision::Kill => {
                tracing::warn!(
                    "grace period over and the backend still runs the pod; stopping it at once"
                );
                stop(pod, ctx, r, true).await?;
            }
            Decision::Finalize => {
                if ctx.table.local(&r.uid).fencing_unconfirmed {
                    let note = format!(
                        "backend {} confirmed that the pod's instance is gone",
                        ctx.config.node_name
                    );
                    event(ctx, pod, EventType::Normal, "FencingConfirmed", &note).await;
                }
                return finalize(ctx, r).await;
            }
        }
    }
}

async fn create<P: Provider>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
    let resolved = match resolve::resolve(&ctx.source, &ctx.node_info, pod).await {
        Ok(res) => res,
        Err(e) => {
            let msg = e.to_string();
            event(ctx, pod, EventType::Warning, e.reason(), &msg).await;
            if e.retriable() {
                let waiting = Observed::Waiting {
                    reason: e.reason(),
                    message: Some(&msg),
                };
                write_status(ctx, pod, &waiting).await?;
                return Err(Error::Resolve {
                    pod: r.clone(),
                    source: e,
                });
            }
            let failed = Observed::Failed {
                reason: e.reason(),
                message: &msg,
            };
            write_status(ctx, pod, &failed).await?;
            return Ok(Action::await_change());
        }
    };
    let applied = changes::Applied {
        spec: changes::Spec::created(pod),
        ..Default::default()
    };
    ctx.table.update(r, |l| {
        l.created = Some(Instant::now());
        l.refresh_at = resolved.refresh_at;
        l.applied = Some(Arc::new(applied));
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
        // the pod is said to be ContainerCreating. The wait for a report
        // counts from the backend's answer: a create that waited its turn
        // under the cloud's rate limits is not "lost" for that wait (#19).
        Ok(()) if ctx.table.in_backend(&r.uid) => Ok(Action::await_change()),
        Ok(()) => {
            ctx.table.update(r, |l| l.created = Some(Instant::now()));
            Ok(Action::requeue(REPORT_WAIT))
        }
        Err(e) => {
            ctx.table.update(r, |l| l.created = None);
            fail(ctx, pod, r, "create", e).await
        }
    }
}

/// Applies [`policy::on_provider_error`].
async fn fail<P: Provider>(
    ctx: &Ctx<P>,
    pod: &Pod,
    r: &PodRef,
    op: &'static str,
    e: ProviderError,
) -> Result<Action> {
    if matches!(e, ProviderError::Capacity(_)) {
        let cooldown = ctx.signals.capacity_refused();
        tracing::warn!(error = %e, ?cooldown, "backend has no capacity; the node is tainted for the cooldown");
    }
    let backend = format!("{} ({})", ctx.config.node_name, ctx.provider.name());
    let owned = pod
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true));
    match policy::on_provider_error(op, &backend, owned, &e) {
        policy::Outcome::Fail { reason, message } => {
            if reason == policy::CAPACITY_REASON {
                ctx.metrics.displaced("capacity");
                ctx.ledger
                    .departed(pod, &ctx.config.node_name, Reason::Capacity, Instant::now());
            }
            event(ctx, pod, EventType::Warning, &reason, &message).await;
            write_status(
                ctx,
                pod,
                &Observed::Failed {
                    reason: &reason,
                    message: &message,
                },
            )
            .await?;
            Ok(Action::await_change())
        }
        policy::Outcome::Retry { event: note } => {
            if let Some((reason, message)) = note {
                event(ctx, pod, EventType::Warning, reason, &message).await;
            }
            Err(Error::Provider {
                op,
                pod: r.clone(),
                source: e,
            })
        }
    }
}

async fn refresh_token_of<P: Provider>(ctx: &Ctx<P>, pod: &Pod, r: &PodRef) -> Result<()> {
    let resolved = resolve::resolve(&ctx.source, &ctx.node_info, pod)
        .await
        .map_err(|source| Error::Resolve {
            pod: r.clone(),
            source,
        })?;
    ctx.table.update(r, |l| l.refresh_at = resolved.refresh_at);
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

/// Asks the backend to stop the pod within its grace period, or at once
/// (`kill`). A backend that does not answer leaves the pod Terminating,
/// with a `FencingUnconfirmed` Event the first time.
async fn stop<P: Provider>(pod: &Pod, ctx: &Ctx<P>, r: &PodRef, kill: bool) -> Result<()> {
    let grace = if kill {
        0
    } else {
        // a pod stopped by its active deadline is not deleted: its spec's
        // grace period applies
        pod.metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0)
    };
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    let now = Instant::now();
    match timed(&ctx.metrics, "delete", ctx.provider.delete_pod(r, grace)).await {
        Ok(Deleted::Gone) | Err(ProviderError::NotFound(_)) => {
            if ctx.table.report_gone(&r.uid) {
                ctx.signals.held_pods(ctx.table.backend_len());
            }
        }
        Ok(Deleted::Stopping) => ctx.table.update(r, |l| {
            l.delete_requested.get_or_insert(now);
            if kill {
                l.kill_requested = Some(now);
            }
        }),
        Err(source) => {
            let first = ctx
                .table
                .update(r, |l| !std::mem::replace(&mut l.fencing_unconfirmed, true));
            if first {
                let note = format!(
                    "backend {} ({}) did not stop the pod's instance: {source}; the pod stays \
                     Terminating until the backend confirms the instance is gone (a replacement \
                     may already run elsewhere)",
                    ctx.config.node_name,
                    ctx.provider.name()
                );
                event(ctx, pod, EventType::Warning, "FencingUnconfirmed", &note).await;
            }
            return Err(Error::Provider {
                op: "delete",
                pod: r.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// Removes the pod object, with a UID precondition so that a pod of the
/// same name created since is left alone.
async fn finalize<P>(ctx: &Ctx<P>, r: &PodRef) -> Result<Action> {
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
    ctx.table.removed(&r.uid);
    Ok(Action::await_change())
}

/// Writes the status for `observed` if it differs from the pod's.
async fn write_status<P>(ctx: &Ctx<P>, pod: &Pod, observed: &Observed<'_>) -> Result<()> {
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

/// Records an Event on the pod as skylet.
pub(super) async fn event<P>(ctx: &Ctx<P>, pod: &Pod, type_: EventType, reason: &str, note: &str) {
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

fn is_daemonset_pod(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(active_deadline: Option<i64>, started: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "a"}], "activeDeadlineSeconds": active_deadline},
            "status": {"phase": "Running", "startTime": started}
        }))
        .expect("a valid pod")
    }

    #[test]
    fn a_steady_pod_is_looked_at_again_only_for_its_deadline_or_its_token() {
        let now = Timestamp::now();
        let started = now.to_string();
        assert_eq!(
            next_look(&pod(None, &started), None).requeue_after(),
            None,
            "nothing due: only a change wakes it"
        );
        let in_a_minute = now
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let token = next_look(&pod(None, &started), Some(in_a_minute)).requeue_after();
        assert!(
            token.is_some_and(|d| d > Duration::from_secs(55) && d <= Duration::from_secs(61)),
            "woken when its token is due: {token:?}"
        );
        let deadline = next_look(&pod(Some(10), &started), Some(in_a_minute)).requeue_after();
        assert!(
            deadline.is_some_and(|d| d > Duration::from_secs(5) && d <= Duration::from_secs(11)),
            "the sooner of the deadline and the token: {deadline:?}"
        );
    }
}
