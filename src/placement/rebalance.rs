//! Fail-back (`rebalance.mode: OnRecovery`): pods of a policy running on a
//! lower tier are evicted, through the Eviction API, once a higher tier has
//! a node that has been healthy (Ready, schedulable, free of skylet's and
//! the node lifecycle controller's taints) for `afterSeconds` and has room
//! for them; their controllers create replacements, which the scheduler
//! places on the higher tier (the replacement's preferred affinity).
//!
//! # Guarantees
//! - PodDisruptionBudgets hold: the Eviction API refuses what a budget
//!   forbids; skylet retries on a later pass.
//! - At most `maxPerMinute` evictions per policy in any 60 s.
//! - Only pods owned by a controller (not DaemonSets) move; bare pods are
//!   never evicted (nothing would recreate them).
//! - A pod moves only if a recovered node of a higher tier has room for
//!   its requests (allocatable minus the requests of the pods on it, and a
//!   pod slot), counting the moves planned in the same pass; nothing moves
//!   while a pod of the policy is still waiting to be scheduled, so
//!   replacements land before the next eviction.
//!
//! # Caveats
//! Health is tracked in memory: after a restart skylet takes a node's
//! Ready transition time as the start of its health. A pod that another
//! constraint of its own (a `DoNotSchedule` spread, a node affinity) keeps
//! on the lower tier would move back and forth at `maxPerMinute`: do not
//! combine such constraints with `OnRecovery`.
//!
//! kube's client retries a 429 (what the Eviction API answers when a
//! budget forbids it) for as long as the server's `Retry-After` says, so
//! the budgets that select a pod are read from the cache first and an
//! eviction not answered within 3 s is abandoned until the next pass.
//!
//! RBAC: `pods/eviction`: create; `poddisruptionbudgets` (policy): get,
//! list, watch; `events` (events.k8s.io): create.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, EvictParams, Preconditions},
    runtime::events::{Event, EventType, Recorder},
};
use tokio_util::sync::CancellationToken;

use super::{
    crd::{PlacementPolicy, RebalanceMode},
    view::{NodeView, PodInfo, Resources, View, policy_of, tier_of},
};

/// One planned eviction.
#[derive(Debug)]
pub(crate) struct Move<'a> {
    pub(crate) pod: &'a PodInfo,
    pub(crate) from_tier: usize,
    pub(crate) to_tier: usize,
    pub(crate) to_node: String,
}

fn is_policy(a: &PlacementPolicy, b: &PlacementPolicy) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// The evictions `policy` wants now, at most `budget`.
pub(crate) fn plan<'a>(
    policy: &PlacementPolicy,
    policies: &[Arc<PlacementPolicy>],
    nodes: &[NodeView],
    pods: &'a [Arc<PodInfo>],
    healthy_since: &HashMap<String, Timestamp>,
    now: Timestamp,
    budget: usize,
) -> Vec<Move<'a>> {
    let spec = &policy.spec;
    if budget == 0 || spec.rebalance.mode != RebalanceMode::OnRecovery {
        return Vec::new();
    }
    let mine: Vec<&PodInfo> = pods
        .iter()
        .filter(|p| policy_of(policies, p).is_some_and(|q| is_policy(q, policy)))
        .map(AsRef::as_ref)
        .collect();
    if mine
        .iter()
        .any(|p| p.node.is_none() && !p.terminating && !p.finished() && !p.any_gate)
    {
        return Vec::new();
    }
    let tiers: HashMap<&str, (usize, &NodeView)> = nodes
        .iter()
        .filter_map(|n| tier_of(spec, n).map(|t| (n.name.as_str(), (t, n))))
        .collect();
    // what is left on each node
    let mut free: HashMap<&str, Resources> = tiers
        .iter()
        .map(|(name, (_, n))| (*name, n.allocatable.clone()))
        .collect();
    for p in pods.iter().filter(|p| !p.finished()) {
        if let Some(f) = p.node.as_deref().and_then(|n| free.get_mut(n)) {
            take(f, &p.requests);
        }
    }
    let after = SignedDuration::from_secs(i64::from(spec.rebalance.after_seconds));
    let mut recovered: Vec<(usize, &NodeView)> = tiers
        .values()
        .filter(|(_, n)| {
            n.healthy()
                && healthy_since
                    .get(&n.name)
                    .is_some_and(|since| *since + after <= now)
        })
        .copied()
        .collect();
    recovered.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));

    let mut candidates: Vec<(usize, f64, &PodInfo)> = mine
        .into_iter()
        .filter(|p| {
            !p.terminating
                && p.phase == "Running"
                && p.ready
                && p.owner
                    .as_ref()
                    .is_some_and(|o| o.kind != "DaemonSet" && o.kind != "Node")
        })
        .filter_map(|p| {
            let (tier, node) = tiers.get(p.node.as_deref()?)?;
            (*tier > 0).then(|| (*tier, node.hourly(&p.requests), p))
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| a.2.name.cmp(&b.2.name))
    });

    let mut moves = Vec::new();
    for (tier, _, pod) in candidates {
        if moves.len() >= budget {
            break;
        }
        let target = recovered.iter().filter(|(t, _)| *t < tier).find(|(_, n)| {
            free.get(n.name.as_str())
                .is_some_and(|f| fits(f, &pod.requests))
        });
        if let Some((t, n)) = target {
            if let Some(f) = free.get_mut(n.name.as_str()) {
                take(f, &pod.requests);
            }
            moves.push(Move {
                pod,
                from_tier: tier,
                to_tier: *t,
                to_node: n.name.clone(),
            });
        }
    }
    moves
}

/// Subtracts `r` and one pod slot from `free`.
fn take(free: &mut Resources, r: &Resources) {
    for (k, v) in r {
        if let Some(f) = free.get_mut(k) {
            *f -= v;
        }
    }
    if let Some(p) = free.get_mut("pods") {
        *p -= 1.0;
    }
}

fn fits(free: &Resources, r: &Resources) -> bool {
    r.iter()
        .filter(|(_, v)| **v > 0.0)
        .all(|(k, v)| free.get(k).is_some_and(|f| *f + 1e-9 >= *v))
        && free.get("pods").is_none_or(|p| *p >= 1.0)
}

/// Runs until `shutdown`.
pub(crate) async fn run(
    client: Client,
    view: Arc<View>,
    recorder: Recorder,
    shutdown: CancellationToken,
) {
    let mut changes = view.subscribe();
    while !view.wait_ready(Duration::from_secs(5)).await {
        if shutdown.is_cancelled() {
            return;
        }
    }
    let mut healthy_since: HashMap<String, Timestamp> = HashMap::new();
    let mut evictions: HashMap<(String, String), VecDeque<Timestamp>> = HashMap::new();
    let mut first = true;
    loop {
        let now = Timestamp::now();
        let nodes = view.nodes();
        for n in &nodes {
            if n.healthy() {
                healthy_since.entry(n.name.clone()).or_insert_with(|| {
                    if first {
                        n.ready_since.unwrap_or(now)
                    } else {
                        now
                    }
                });
            } else {
                healthy_since.remove(&n.name);
            }
        }
        healthy_since.retain(|name, _| nodes.iter().any(|n| &n.name == name));
        first = false;

        let policies = view.policies();
        let pods = view.pods();
        for policy in policies.iter().filter(|p| {
            p.spec.rebalance.mode == RebalanceMode::OnRecovery && p.spec.validate().is_ok()
        }) {
            let key = (policy.namespace().unwrap_or_default(), policy.name_any());
            let recent = evictions.entry(key).or_default();
            while recent
                .front()
                .is_some_and(|t| *t + SignedDuration::from_secs(60) <= now)
            {
                recent.pop_front();
            }
            let limit = usize::try_from(policy.spec.rebalance.max_per_minute).unwrap_or(usize::MAX);
            let budget = limit.saturating_sub(recent.len());
            for m in plan(
                policy,
                &policies,
                &nodes,
                &pods,
                &healthy_since,
                now,
                budget,
            ) {
                // kube's client retries a 429 for as long as the server's
                // Retry-After says (10 s, up to 15 times): the budgets are
                // read first, and an eviction not answered at once is
                // abandoned
                let budgets = view.budgets_of(m.pod);
                if let Some((name, _)) = budgets.iter().find(|(_, allowed)| *allowed < 1) {
                    tracing::info!(pod.namespace = %m.pod.namespace, pod.name = %m.pod.name, budget = %name, "fail-back eviction refused (PodDisruptionBudget allows no disruption now); retrying later");
                    break;
                }
                match evict(&client, m.pod).await {
                    Ok(true) => {
                        recent.push_back(Timestamp::now());
                        let note = format!(
                            "PlacementPolicy {}: moving back from {} to {} (node {} healthy for at least {}s)",
                            policy.name_any(),
                            policy.spec.tier_name(m.from_tier),
                            policy.spec.tier_name(m.to_tier),
                            m.to_node,
                            policy.spec.rebalance.after_seconds
                        );
                        tracing::info!(pod.namespace = %m.pod.namespace, pod.name = %m.pod.name, %note, "evicted for fail-back");
                        publish(&recorder, m.pod, note).await;
                        if !budgets.is_empty() {
                            // the budget's status changed: read it again
                            // in the next pass
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(Failed::Unanswered) => {
                        tracing::info!(pod.namespace = %m.pod.namespace, pod.name = %m.pod.name, "fail-back eviction not answered in {EVICT_TIMEOUT:?} (refused by a PodDisruptionBudget, or a slow apiserver); retrying later");
                        break;
                    }
                    Err(Failed::Api(e)) => {
                        tracing::warn!(pod.namespace = %m.pod.namespace, pod.name = %m.pod.name, error = %e, "fail-back eviction failed");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long an eviction may take. The apiserver answers at once; only a
/// 429 (a PodDisruptionBudget) that the client retries takes longer.
const EVICT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an eviction did not happen.
enum Failed {
    /// No answer within [`EVICT_TIMEOUT`].
    Unanswered,
    /// The apiserver refused it.
    Api(kube::Error),
}

/// Evicts `pod` (only this instance: a UID precondition). `false` when it
/// is already gone.
async fn evict(client: &Client, pod: &PodInfo) -> Result<bool, Failed> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    let Ok(r) = tokio::time::timeout(EVICT_TIMEOUT, api.evict(&pod.name, &params)).await else {
        return Err(Failed::Unanswered);
    };
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(Failed::Api(e)),
    }
}

async fn publish(recorder: &Recorder, p: &PodInfo, note: String) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        uid: Some(p.uid.clone()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "PlacementRebalance".into(),
        note: Some(note),
        action: "Evict".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::{Owner, fixtures::virtual_node};

    fn policy(yaml: &str) -> Arc<PlacementPolicy> {
        let mut p = PlacementPolicy::new("burst", serde_yaml_ng::from_str(yaml).unwrap());
        p.metadata.namespace = Some("ns".into());
        Arc::new(p)
    }

    const POLICY: &str = "selector: {matchLabels: {app: web}}\ntiers:\n- nodeSelector: {matchLabels: {tier: '1'}}\n- nodeSelector: {matchLabels: {tier: '2'}}\nrebalance: {mode: OnRecovery, afterSeconds: 60, maxPerMinute: 5}\n";

    fn pod(name: &str, node: Option<&str>) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "web-1".into(),
                uid: "rs".into(),
            }),
            node: node.map(Into::into),
            phase: if node.is_some() { "Running" } else { "Pending" }.into(),
            ready: node.is_some(),
            requests: [("cpu".to_owned(), 1.0)].into(),
            ..PodInfo::default()
        })
    }

    fn nodes() -> Vec<NodeView> {
        vec![
            virtual_node(
                "t1",
                "mock",
                &[("tier", "1")],
                &[("cpu", "3"), ("pods", "10")],
                None,
            ),
            virtual_node(
                "t2",
                "mock",
                &[("tier", "2")],
                &[("cpu", "10"), ("pods", "10")],
                Some((0.04, 0.004)),
            ),
        ]
    }

    fn since(secs_ago: i64) -> HashMap<String, Timestamp> {
        let t = Timestamp::now() - SignedDuration::from_secs(secs_ago);
        [("t1".to_owned(), t), ("t2".to_owned(), t)].into()
    }

    #[test]
    fn pods_move_back_only_after_the_tier_was_healthy_long_enough_and_as_room_allows() {
        let p = policy(POLICY);
        let policies = vec![p.clone()];
        let pods = vec![
            pod("a", Some("t1")),
            pod("b", Some("t2")),
            pod("c", Some("t2")),
            pod("d", Some("t2")),
        ];
        let now = Timestamp::now();
        assert!(plan(&p, &policies, &nodes(), &pods, &since(30), now, 5).is_empty());
        // t1 has 3 cpus, 1 used: two of the three tier-2 pods fit
        let moves = plan(&p, &policies, &nodes(), &pods, &since(61), now, 5);
        assert_eq!(
            moves
                .iter()
                .map(|m| m.pod.name.as_str())
                .collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        assert!(
            moves
                .iter()
                .all(|m| (m.from_tier, m.to_tier, m.to_node.as_str()) == (1, 0, "t1"))
        );
        // the budget bounds a pass
        assert_eq!(
            plan(&p, &policies, &nodes(), &pods, &since(61), now, 1).len(),
            1
        );
        assert!(plan(&p, &policies, &nodes(), &pods, &since(61), now, 0).is_empty());
    }

    #[test]
    fn nothing_moves_while_a_pod_waits_or_for_bare_pods_or_unhealthy_tiers() {
        let p = policy(POLICY);
        let policies = vec![p.clone()];
        let mut pods = vec![pod("b", Some("t2")), pod("pending", None)];
        assert!(
            plan(
                &p,
                &policies,
                &nodes(),
                &pods,
                &since(61),
                Timestamp::now(),
                5
            )
            .is_empty()
        );
        pods.pop();
        let mut bare = (*pod("bare", Some("t2"))).clone();
        bare.owner = None;
        let pods2 = vec![Arc::new(bare)];
        assert!(
            plan(
                &p,
                &policies,
                &nodes(),
                &pods2,
                &since(61),
                Timestamp::now(),
                5
            )
            .is_empty()
        );
        let mut n = nodes();
        n[0].taints.push(k8s_openapi::api::core::v1::Taint {
            key: "skylet.io/capacity-exhausted".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert!(plan(&p, &policies, &n, &pods, &since(61), Timestamp::now(), 5).is_empty());
        let never = policy(&POLICY.replace("OnRecovery", "Never"));
        assert!(
            plan(
                &never,
                std::slice::from_ref(&never),
                &nodes(),
                &pods,
                &since(61),
                Timestamp::now(),
                5
            )
            .is_empty()
        );
    }
}
