//! The status of every PlacementPolicy: `observedGeneration` and a `Ready`
//! condition, `True` (reason `Valid`, the tiers and their node counts) or
//! `False` (reason `Invalid`, what to fix). Written only when it changes.
//!
//! RBAC: `placementpolicies/status`: patch.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    crd::{Condition, PlacementPolicy},
    view::{NodeView, View, tier_of},
};

/// The Ready condition `policy` should carry.
pub(crate) fn ready_condition(policy: &PlacementPolicy, nodes: &[NodeView]) -> Condition {
    let generation = policy.metadata.generation;
    match policy.spec.validate() {
        Ok(()) => {
            let mut counts = vec![0usize; policy.spec.tiers.len()];
            for n in nodes {
                if let Some(t) = tier_of(&policy.spec, n) {
                    counts[t] += 1;
                }
            }
            let tiers: Vec<String> = counts
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "{} ({c} node{})",
                        policy.spec.tier_name(i),
                        if *c == 1 { "" } else { "s" }
                    )
                })
                .collect();
            Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Valid".into(),
                message: format!("in force: {}", tiers.join(", ")),
                last_transition_time: None,
                observed_generation: generation,
            }
        }
        Err(why) => Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Invalid".into(),
            message: format!(
                "{why}; pods this policy selects are admitted unchanged until it is fixed"
            ),
            last_transition_time: None,
            observed_generation: generation,
        },
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
        let nodes = view.nodes();
        for policy in view.policies() {
            let mut want = ready_condition(&policy, &nodes);
            let status = policy.status.clone().unwrap_or_default();
            let current = status.conditions.iter().find(|c| c.type_ == "Ready");
            let same = current.is_some_and(|c| {
                c.status == want.status
                    && c.reason == want.reason
                    && c.message == want.message
                    && c.observed_generation == want.observed_generation
            });
            if same && status.observed_generation == policy.metadata.generation {
                continue;
            }
            want.last_transition_time = match current {
                Some(c) if c.status == want.status => c.last_transition_time.clone(),
                _ => Some(Timestamp::now().to_string()),
            };
            let ns = policy.namespace().unwrap_or_default();
            let api: Api<PlacementPolicy> = Api::namespaced(client.clone(), &ns);
            let patch = json!({"status": {"observedGeneration": policy.metadata.generation, "conditions": [want]}});
            if let Err(e) = api
                .patch_status(
                    &policy.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(policy.namespace = %ns, policy.name = %policy.name_any(), error = %e, "cannot write the policy status");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::fixtures::virtual_node;

    #[test]
    fn ready_names_tiers_and_invalid_says_what_to_fix() {
        let mut p = PlacementPolicy::new(
            "p",
            serde_yaml_ng::from_str("tiers: [{name: burst, nodeSelector: {matchLabels: {tier: '1'}}}, {nodeSelector: {matchLabels: {tier: '2'}}}]").unwrap(),
        );
        p.metadata.generation = Some(3);
        let nodes = vec![virtual_node("a", "mock", &[("tier", "1")], &[], None)];
        let c = ready_condition(&p, &nodes);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Valid"));
        assert_eq!(c.message, "in force: burst (1 node), tier-2 (0 nodes)");
        assert_eq!(c.observed_generation, Some(3));
        p.spec.tiers[1].node_selector = Default::default();
        let c = ready_condition(&p, &nodes);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert!(
            c.message.starts_with("tiers[1].nodeSelector: empty"),
            "{}",
            c.message
        );
    }
}
