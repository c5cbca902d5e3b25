//! Changes to a running pod that Kubernetes allows after creation and that
//! the backend must apply: a container's image (`kubectl set image`),
//! ephemeral containers (`kubectl debug`) and resources (`pods/resize`).
//!
//! Each change is handed to the backend once ([`apply`]); where the
//! backend cannot apply it, the pod says so ([`annotate`]): a Warning Event
//! for an image, a terminated ephemeral container status with the reason
//! (so `kubectl debug` does not wait for it), the condition
//! `PodResizePending` with reason `Infeasible` for a resize.
//!
//! Container statuses carry the resources the containers run with, as a
//! kubelet's do: the apiserver accepts a resize only of a pod whose node
//! reports them.
//!
//! What the backend runs is skylet's bookkeeping ([`Applied`], in the pod
//! table). A pod created by this process starts from its spec at the
//! create; a pod adopted after a restart from its spec then (an image
//! changed while skylet was down is not noticed), except ephemeral
//! containers, which are handed to the backend again: it starts only
//! those it does not run yet.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
    ResourceRequirements,
};
use kube::runtime::events::EventType;
use skylet_provider::{PodRef, Provider, ProviderError};

use super::{
    Ctx,
    policy::{Error, Result},
    reconcile::event,
};
use crate::metrics::timed;

/// The reason of a refused ephemeral container's terminated state.
pub(crate) const EPHEMERAL_REFUSED: &str = "EphemeralContainersNotSupported";
/// The condition of a resize the backend cannot apply.
pub(crate) const RESIZE_PENDING: &str = "PodResizePending";

/// What of a pod's spec may change while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Image per app container, in spec order.
    images: Vec<(String, String)>,
    /// The app containers' resources, as JSON.
    resources: String,
    /// The ephemeral containers' names.
    ephemeral: Vec<String>,
}

impl Spec {
    /// The spec of `pod` now.
    pub(crate) fn of(pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let resources: Vec<_> = spec
            .containers
            .iter()
            .map(|c| (&c.name, &c.resources))
            .collect();
        Self {
            images: spec
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
            resources: serde_json::to_string(&resources).unwrap_or_default(),
            ephemeral: spec
                .ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.clone())
                .collect(),
        }
    }

    /// The spec a backend runs when it creates `pod`: no ephemeral
    /// container (they are added to running pods only).
    pub(crate) fn created(pod: &Pod) -> Self {
        Self {
            ephemeral: Vec::new(),
            ..Self::of(pod)
        }
    }
}

/// What the backend runs of a pod, and what it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The spec the backend runs (images refused are counted as applied:
    /// they are reported once).
    pub(crate) spec: Spec,
    /// Why the backend cannot run ephemeral containers, once it said so.
    pub(crate) ephemeral_refused: Option<String>,
    /// A resize the backend refused: the resources asked for, and why.
    pub(crate) resize_refused: Option<(String, String)>,
}

/// Hands the backend what changed in `pod`'s spec since it was applied,
/// and notes what was applied or refused. An error of the backend other
/// than [`ProviderError::Unsupported`] is returned (retried), with nothing
/// noted.
pub(super) async fn apply<P: Provider>(ctx: &Ctx<P>, pod: &Pod, r: &PodRef) -> Result<()> {
    let now = Spec::of(pod);
    let known = ctx.table.local(&r.uid).applied;
    let applied = known.clone().map_or_else(
        || Applied {
            spec: Spec::created(pod),
            ..Applied::default()
        },
        |a| (*a).clone(),
    );
    if applied.spec == now && applied.resize_refused.is_none() {
        if known.is_none() {
            ctx.table.update(r, |l| l.applied = Some(Arc::new(applied)));
        }
        return Ok(());
    }
    let mut next = applied.clone();
    let provider_error = |source| Error::Provider {
        op: "update",
        pod: r.clone(),
        source,
    };
    let backend = format!("{} ({})", ctx.config.node_name, ctx.provider.name());

    let images: Vec<(String, String)> = now
        .images
        .iter()
        .filter(|c| !applied.spec.images.contains(c))
        .cloned()
        .collect();
    if !images.is_empty() {
        let list = images
            .iter()
            .map(|(c, i)| format!("{c}={i}"))
            .collect::<Vec<_>>()
            .join(", ");
        match timed(
            &ctx.metrics,
            "update",
            ctx.provider.change_images(pod, &images),
        )
        .await
        {
            Ok(()) => {
                let note = format!("restarting with the new image: {list}");
                event(ctx, pod, EventType::Normal, "ImageChanged", &note).await;
            }
            Err(ProviderError::Unsupported(why)) => {
                let note = format!(
                    "the new image is not applied ({list}): backend {backend} keeps running \
                     the old one: {why}"
                );
                event(ctx, pod, EventType::Warning, "ImageChangeNotApplied", &note).await;
            }
            Err(e) => return Err(provider_error(e)),
        }
        next.spec.images = now.images.clone();
    }

    if now
        .ephemeral
        .iter()
        .any(|e| !applied.spec.ephemeral.contains(e))
    {
        match timed(
            &ctx.metrics,
            "update",
            ctx.provider.add_ephemeral_containers(pod),
        )
        .await
        {
            Ok(()) => next.ephemeral_refused = None,
            Err(ProviderError::Unsupported(why)) => {
                let note = format!("backend {backend} cannot run ephemeral containers: {why}");
                if next.ephemeral_refused.is_none() {
                    event(ctx, pod, EventType::Warning, EPHEMERAL_REFUSED, &note).await;
                }
                next.ephemeral_refused = Some(note);
            }
            Err(e) => return Err(provider_error(e)),
        }
        next.spec.ephemeral = now.ephemeral.clone();
    }

    if now.resources == next.spec.resources {
        next.resize_refused = None;
    } else if next
        .resize_refused
        .as_ref()
        .is_none_or(|(asked, _)| *asked != now.resources)
    {
        match timed(&ctx.metrics, "update", ctx.provider.resize(pod)).await {
            Ok(()) => {
                next.spec.resources = now.resources.clone();
                next.resize_refused = None;
            }
            Err(ProviderError::Unsupported(why)) => {
                let note = format!("backend {backend} cannot resize the pod in place: {why}");
                event(ctx, pod, EventType::Warning, "ResizeInfeasible", &note).await;
                next.resize_refused = Some((now.resources.clone(), note));
            }
            Err(e) => return Err(provider_error(e)),
        }
    }
    ctx.table.update(r, |l| l.applied = Some(Arc::new(next)));
    Ok(())
}

/// The backend's status of `pod` with what the backend refused:
/// ephemeral containers it cannot run are terminated with the reason
/// (the kubelet's way for a container that cannot start), a resize it
/// cannot apply is the condition `PodResizePending`, reason `Infeasible`.
pub(crate) fn annotate(held: &mut PodStatus, pod: &Pod, applied: Option<&Applied>) {
    let Some(applied) = applied else { return };
    // the resources the containers run with, as a kubelet reports them
    // (the apiserver accepts a resize only of a pod whose node reports them)
    let running: Vec<(String, Option<ResourceRequirements>)> =
        serde_json::from_str(&applied.spec.resources).unwrap_or_default();
    for s in held.container_statuses.iter_mut().flatten() {
        if s.resources.is_none() {
            s.resources = running
                .iter()
                .find(|(name, _)| *name == s.name)
                .map(|(_, r)| r.clone().unwrap_or_default());
        }
    }
    if let Some(why) = &applied.ephemeral_refused {
        let spec = pod.spec.as_ref();
        let statuses = held
            .ephemeral_container_statuses
            .get_or_insert_with(Vec::new);
        for c in spec
            .and_then(|s| s.ephemeral_containers.as_ref())
            .into_iter()
            .flatten()
        {
            if statuses.iter().any(|s| s.name == c.name) {
                continue;
            }
            statuses.push(ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                started: Some(false),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some(EPHEMERAL_REFUSED.into()),
                        message: Some(why.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    if let Some((asked, why)) = &applied.resize_refused
        && Spec::of(pod).resources == *asked
    {
        let conditions = held.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != RESIZE_PENDING);
        conditions.push(PodCondition {
            type_: RESIZE_PENDING.into(),
            status: "True".into(),
            reason: Some("Infeasible".into()),
            message: Some(why.clone()),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(image: &str, cpu: &str, ephemeral: &[&str]) -> Pod {
        let eph: Vec<_> = ephemeral
            .iter()
            .map(|n| json!({"name": n, "image": "busybox"}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "containers": [{"name": "main", "image": image,
                    "resources": {"requests": {"cpu": cpu}}}],
                "ephemeralContainers": eph,
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_spec_is_what_may_change_and_a_created_pod_runs_no_ephemeral_container() {
        let a = Spec::of(&pod("img:1", "100m", &["dbg"]));
        assert_eq!(a.images, [("main".to_owned(), "img:1".to_owned())]);
        assert_eq!(a.ephemeral, ["dbg"]);
        assert!(
            Spec::created(&pod("img:1", "100m", &["dbg"]))
                .ephemeral
                .is_empty()
        );
        assert_ne!(
            a.resources,
            Spec::of(&pod("img:1", "200m", &["dbg"])).resources
        );
    }

    #[test]
    fn refusals_are_a_terminated_ephemeral_container_and_an_infeasible_resize() {
        let p = pod("img:1", "200m", &["dbg"]);
        let applied = Applied {
            spec: Spec::created(&pod("img:1", "100m", &[])),
            ephemeral_refused: Some("cannot".into()),
            resize_refused: Some((Spec::of(&p).resources, "no resize".into())),
        };
        let mut held = PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        annotate(&mut held, &p, Some(&applied));
        let resources = held.container_statuses.as_ref().unwrap()[0]
            .resources
            .clone();
        assert_eq!(
            serde_json::to_value(resources).unwrap(),
            serde_json::json!({"requests": {"cpu": "100m"}}),
            "the resources it runs with, not the ones asked for"
        );
        let eph = &held.ephemeral_container_statuses.as_ref().unwrap()[0];
        let t = eph.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (eph.name.as_str(), t.reason.as_deref(), t.message.as_deref()),
            ("dbg", Some(EPHEMERAL_REFUSED), Some("cannot"))
        );
        let c = &held.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
            (RESIZE_PENDING, "True", Some("Infeasible"))
        );
        // the resize taken back: no condition
        let mut held = PodStatus::default();
        annotate(&mut held, &pod("img:1", "100m", &["dbg"]), Some(&applied));
        assert!(held.conditions.is_none());
    }
}
