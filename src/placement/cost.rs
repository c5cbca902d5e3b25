//! The deletion-cost keeper (`scaleIn: CostAware`): every scheduled pod of
//! such a policy carries `controller.kubernetes.io/pod-deletion-cost`, so
//! that a ReplicaSet scaling in removes the lowest-tier and most expensive
//! replicas first (it removes lower costs first, after unscheduled and
//! not-ready pods).
//!
//! The cost: `Ordered`, `(tiers - tier) * 100000 - price`; `Cheapest`,
//! `100000 - price`; where `price` is the pod's dollars per hour on its
//! node (its requests at the node's price annotations) in units of
//! $0.0001, at most 99999. A pod on a node of no tier counts as one tier
//! below the last. The annotation is patched only when it changes; a
//! ReplicaSet reads it when it scales in, so it must be right before then:
//! it is written as soon as the pod is bound.
//!
//! RBAC: `pods`: patch.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    crd::{PlacementPolicySpec, ScaleIn, Strategy},
    view::{ANN_DELETION_COST, NodeView, Resources, View, policy_of, tier_of},
};

/// The deletion cost of a pod requesting `requests` on `node` (`None`: a
/// node skylet does not know).
pub(crate) fn deletion_cost(
    spec: &PlacementPolicySpec,
    node: Option<&NodeView>,
    requests: &Resources,
) -> i32 {
    let price = node.map_or(0.0, |n| n.hourly(requests));
    // $0.0001 units, 0..=99_999 (the cast saturates; NaN is 0)
    let price = ((price * 10_000.0).round() as i32).clamp(0, 99_999);
    match spec.strategy {
        Strategy::Cheapest => 100_000 - price,
        Strategy::Ordered => {
            let n = spec.tiers.len();
            let tier = node.and_then(|n| tier_of(spec, n)).unwrap_or(n);
            let rank = i32::try_from(n - tier.min(n)).unwrap_or(0);
            rank * 100_000 - price
        }
    }
}

/// Runs until `shutdown`.
pub(crate) async fn run(client: Client, view: Arc<View>, shutdown: CancellationToken) {
    let mut changes = view.subscribe();
    while !view.wait_ready(Duration::from_secs(5)).await {
        if shutdown.is_cancelled() {
            return;
        }
    }
    loop {
        let policies: Vec<_> = view
            .policies()
            .into_iter()
            .filter(|p| p.spec.validate().is_ok())
            .collect();
        if policies
            .iter()
            .any(|p| p.spec.scale_in == ScaleIn::CostAware)
        {
            let nodes: HashMap<String, NodeView> = view
                .nodes()
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect();
            for pod in view.pods() {
                if pod.terminating || pod.finished() {
                    continue;
                }
                let Some(node) = pod.node.as_deref() else {
                    continue;
                };
                let Some(policy) = policy_of(&policies, &pod) else {
                    continue;
                };
                if policy.spec.scale_in != ScaleIn::CostAware {
                    continue;
                }
                let want = deletion_cost(&policy.spec, nodes.get(node), &pod.requests).to_string();
                if pod.deletion_cost.as_deref() == Some(want.as_str()) {
                    continue;
                }
                let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
                let patch = json!({"metadata": {"annotations": {ANN_DELETION_COST: want}}});
                match api
                    .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(pod.namespace = %pod.namespace, pod.name = %pod.name, cost = %want, "deletion cost set")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(pod.namespace = %pod.namespace, pod.name = %pod.name, error = %e, "cannot set the deletion cost")
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::fixtures::{own_node, virtual_node};

    fn spec(yaml: &str) -> PlacementPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn lower_tiers_and_dearer_nodes_cost_less_to_delete() {
        let s = spec(
            "tiers:\n- nodeSelector: {matchExpressions: [{key: type, operator: NotIn, values: [virtual-kubelet]}]}\n- nodeSelector: {matchLabels: {tier: '2'}}\n- nodeSelector: {matchLabels: {tier: '3'}}\nscaleIn: CostAware\n",
        );
        let alloc = [("cpu", "8")];
        let own = own_node("own", &[], &alloc);
        let cheap = virtual_node(
            "cheap",
            "mock",
            &[("tier", "2")],
            &alloc,
            Some((0.01, 0.001)),
        );
        let dear = virtual_node(
            "dear",
            "mock",
            &[("tier", "2")],
            &alloc,
            Some((0.04048, 0.004445)),
        );
        let t3 = virtual_node("t3", "mock", &[("tier", "3")], &alloc, None);
        let stray = virtual_node("stray", "mock", &[], &alloc, None);
        let r: Resources = [
            ("cpu".to_owned(), 1.0),
            ("memory".to_owned(), 2.0 * f64::from(1u32 << 30)),
        ]
        .into();
        let costs: Vec<i32> = [
            Some(&own),
            Some(&cheap),
            Some(&dear),
            Some(&t3),
            Some(&stray),
            None,
        ]
        .iter()
        .map(|n| deletion_cost(&s, *n, &r))
        .collect();
        // own: 3 * 100000; cheap: 0.012 $/h = 120; dear: 0.04937 $/h = 494
        assert_eq!(costs, vec![300_000, 199_880, 199_506, 100_000, 0, 0]);
        let cheapest =
            spec("tiers: [{nodeSelector: {matchLabels: {tier: '2'}}}]\nstrategy: Cheapest\n");
        assert!(
            deletion_cost(&cheapest, Some(&cheap), &r) > deletion_cost(&cheapest, Some(&dear), &r)
        );
    }
}
