//! A policy compiled into one pod's scheduling fields: a pure function of
//! the policy, the pod and the nodes, so every rule is unit-tested here and
//! the webhook only moves JSON.
//!
//! What the pod gets, merged with what it already has:
//! - required node affinity: one term per tier (the tier's node selector),
//!   each combined with each of the pod's own terms, so the pod runs only
//!   on nodes of some tier and still on nodes its own terms allow;
//! - preferred node affinity: `Ordered`, one term per tier with weights
//!   from 100 down to 1, strictly decreasing; `Cheapest`, one term per price
//!   (node names, cheapest 100, dearest 1), the price of this pod's
//!   requests on each node from its price annotations, a node without
//!   them costing 0;
//! - tolerations: the provider taint of every virtual node of the tiers,
//!   and `node.kubernetes.io/not-ready|unreachable:NoExecute` for
//!   `failover.tolerationSeconds` (replacing the cluster's 300 s default,
//!   keeping a value the pod chose itself); never
//!   `skylet.io/capacity-exhausted`;
//! - a topology spread constraint with `nodeTaintsPolicy: Honor` (unless
//!   the pod spreads over that key itself);
//! - the scheduling gate `skylet.io/fencing` when the caller says a
//!   predecessor is not yet fenced.
//!
//! A pod no node of any tier could ever run (it requests more of a
//! resource, or a resource, that no tier node has in allocatable) is
//! refused with a message naming the resource and the fix.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSchedulingGate, PreferredSchedulingTerm, Taint, Toleration, TopologySpreadConstraint,
};
use serde_json::{Value, json};

use super::{
    crd::{PlacementPolicySpec, Strategy},
    selector,
    view::{ANN_POLICY, GATE, NodeView, Resources, fmt, pod_requests, tier_of},
};

/// The node lifecycle taints a policy's `tolerationSeconds` applies to.
const FAILOVER_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The cluster's default `tolerationSeconds` (the DefaultTolerationSeconds
/// admission plugin adds it before webhooks run).
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The scheduling fields a policy gives one pod (whole, merged values).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Placement {
    pub(crate) affinity: Affinity,
    pub(crate) tolerations: Vec<Toleration>,
    /// `Some` when the policy spreads (the merged list).
    pub(crate) spread: Option<Vec<TopologySpreadConstraint>>,
    /// `Some` when the gate is added (the merged list).
    pub(crate) gates: Option<Vec<PodSchedulingGate>>,
}

/// Compiles `spec` (policy `policy` of the pod's namespace) for `pod`.
///
/// # Errors
/// The refusal message when no node of any tier could ever run the pod.
pub(crate) fn compile(
    policy: &str,
    spec: &PlacementPolicySpec,
    pod: &Pod,
    nodes: &[NodeView],
    gate: bool,
) -> Result<Placement, String> {
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let requests = pod_requests(&pod_spec);
    let in_tiers: Vec<(usize, &NodeView)> = nodes
        .iter()
        .filter_map(|n| tier_of(spec, n).map(|t| (t, n)))
        .collect();
    // nodes may not be registered yet (a fleet starting): then the
    // scheduler keeps the pod Pending rather than skylet refusing it
    if !in_tiers.is_empty() && !in_tiers.iter().any(|(_, n)| n.could_run(&requests).is_ok()) {
        return Err(refusal(policy, spec, &requests, &in_tiers));
    }

    let mut affinity = pod_spec.affinity.clone().unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let tier_terms: Vec<Vec<NodeSelectorRequirement>> = spec
        .tiers
        .iter()
        .map(|t| selector::node_requirements(&t.node_selector))
        .collect();
    node_affinity.required_during_scheduling_ignored_during_execution = Some(required(
        node_affinity
            .required_during_scheduling_ignored_during_execution
            .take(),
        &tier_terms,
    ));
    let preferred = match spec.strategy {
        Strategy::Ordered => ordered_terms(&tier_terms),
        Strategy::Cheapest => cheapest_terms(&in_tiers, &requests),
    };
    if !preferred.is_empty() {
        node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .extend(preferred);
    }

    let mut tolerations = pod_spec.tolerations.clone().unwrap_or_default();
    let mut provider_taints: Vec<&Taint> = Vec::new();
    for (_, n) in in_tiers.iter().filter(|(_, n)| n.is_virtual()) {
        for t in n.provider_taints() {
            if !provider_taints
                .iter()
                .any(|o| o.key == t.key && o.value == t.value && o.effect == t.effect)
            {
                provider_taints.push(t);
            }
        }
    }
    provider_taints.sort_by(|a, b| (&a.value, &a.effect).cmp(&(&b.value, &b.effect)));
    for t in provider_taints {
        if !tolerations.iter().any(|tol| tolerates(tol, t)) {
            tolerations.push(Toleration {
                key: Some(t.key.clone()),
                operator: Some("Equal".into()),
                value: t.value.clone(),
                effect: Some(t.effect.clone()),
                toleration_seconds: None,
            });
        }
    }
    if let Some(secs) = spec.failover.toleration_seconds {
        for key in FAILOVER_TAINTS {
            let own = tolerations.iter_mut().find(|t| {
                t.key.as_deref() == Some(key)
                    && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
            });
            match own {
                Some(t) if t.toleration_seconds == Some(DEFAULT_TOLERATION_SECONDS) => {
                    t.toleration_seconds = Some(secs);
                }
                Some(_) => {} // the pod's own choice
                None => tolerations.push(Toleration {
                    key: Some(key.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(secs),
                    value: None,
                }),
            }
        }
    }

    let spread = spec.spread.as_ref().map(|s| {
        let mut list = pod_spec
            .topology_spread_constraints
            .clone()
            .unwrap_or_default();
        if !list.iter().any(|c| c.topology_key == s.topology_key) {
            let has_hash = pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("pod-template-hash"));
            list.push(TopologySpreadConstraint {
                max_skew: s.max_skew,
                topology_key: s.topology_key.clone(),
                when_unsatisfiable: format!("{:?}", s.when_unsatisfiable),
                label_selector: Some(selector::to_k8s(&spec.selector)),
                match_label_keys: has_hash.then(|| vec!["pod-template-hash".to_owned()]),
                node_taints_policy: Some("Honor".into()),
                node_affinity_policy: Some("Honor".into()),
                min_domains: None,
            });
        }
        list
    });

    let gates = gate.then(|| {
        let mut g = pod_spec.scheduling_gates.clone().unwrap_or_default();
        if !g.iter().any(|g| g.name == GATE) {
            g.push(PodSchedulingGate { name: GATE.into() });
        }
        g
    });

    Ok(Placement {
        affinity,
        tolerations,
        spread,
        gates,
    })
}

/// The pod's own required terms (ORed) combined with the tiers' (ORed):
/// every pair, ANDed.
fn required(own: Option<NodeSelector>, tiers: &[Vec<NodeSelectorRequirement>]) -> NodeSelector {
    let own_terms = own.map(|s| s.node_selector_terms).unwrap_or_default();
    let mut terms = Vec::new();
    if own_terms.is_empty() {
        for t in tiers {
            terms.push(NodeSelectorTerm {
                match_expressions: Some(t.clone()),
                match_fields: None,
            });
        }
    } else {
        for o in &own_terms {
            for t in tiers {
                let mut exprs = o.match_expressions.clone().unwrap_or_default();
                exprs.extend(t.iter().cloned());
                terms.push(NodeSelectorTerm {
                    match_expressions: Some(exprs),
                    match_fields: o.match_fields.clone(),
                });
            }
        }
    }
    NodeSelector {
        node_selector_terms: terms,
    }
}

/// `n` weights from 100 down to 1, strictly decreasing (`n` <= 100).
pub(crate) fn weights(n: usize) -> Vec<i32> {
    if n <= 1 {
        return vec![100; n];
    }
    let step_den = i32::try_from(n - 1).unwrap_or(i32::MAX);
    (0..n)
        .map(|i| 100 - i32::try_from(i).unwrap_or(0) * 99 / step_den)
        .collect()
}

fn ordered_terms(tiers: &[Vec<NodeSelectorRequirement>]) -> Vec<PreferredSchedulingTerm> {
    if tiers.len() < 2 {
        return Vec::new();
    }
    tiers
        .iter()
        .zip(weights(tiers.len()))
        .map(|(t, w)| PreferredSchedulingTerm {
            weight: w,
            preference: NodeSelectorTerm {
                match_expressions: Some(t.clone()),
                match_fields: None,
            },
        })
        .collect()
}

fn cheapest_terms(
    nodes: &[(usize, &NodeView)],
    requests: &Resources,
) -> Vec<PreferredSchedulingTerm> {
    let mut priced: Vec<(f64, &str)> = nodes
        .iter()
        .filter(|(_, n)| n.could_run(requests).is_ok())
        .map(|(_, n)| (n.hourly(requests), n.name.as_str()))
        .collect();
    priced.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let mut groups: Vec<(f64, Vec<String>)> = Vec::new();
    for (p, name) in priced {
        match groups.last_mut() {
            Some((q, names)) if (p - *q).abs() < 1e-9 => names.push(name.to_owned()),
            _ => groups.push((p, vec![name.to_owned()])),
        }
    }
    if groups.len() < 2 {
        return Vec::new();
    }
    groups.truncate(100);
    let w = weights(groups.len());
    groups
        .into_iter()
        .zip(w)
        .map(|((_, names), w)| PreferredSchedulingTerm {
            weight: w,
            preference: NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(names),
                }]),
            },
        })
        .collect()
}

/// Whether toleration `t` tolerates `taint` (the scheduler's rule).
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) if k != taint.key => false,
        Some(_) => match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        },
    }
}

fn refusal(
    policy: &str,
    spec: &PlacementPolicySpec,
    requests: &Resources,
    nodes: &[(usize, &NodeView)],
) -> String {
    let tiers: BTreeSet<usize> = nodes.iter().map(|(t, _)| *t).collect();
    let tier_names: Vec<String> = tiers.iter().map(|t| spec.tier_name(*t)).collect();
    let mut missing = Vec::new();
    for (k, v) in requests.iter().filter(|(_, v)| **v > 0.0) {
        let most = nodes
            .iter()
            .filter_map(|(_, n)| n.allocatable.get(k).copied())
            .fold(None::<f64>, |m, a| Some(m.map_or(a, |m| m.max(a))));
        match most {
            None => missing.push(format!(
                "it requests {k} {} and no node of tiers {} has {k} in allocatable",
                fmt(k, *v),
                tier_names.join(", ")
            )),
            Some(a) if a + 1e-9 < *v => missing.push(format!(
                "it requests {k} {} and the largest node of tiers {} has {}",
                fmt(k, *v),
                tier_names.join(", "),
                fmt(k, a)
            )),
            Some(_) => {}
        }
    }
    let why = if missing.is_empty() {
        let asked: Vec<String> = requests
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{k} {}", fmt(k, *v)))
            .collect();
        format!(
            "no single node of tiers {} has all it requests ({})",
            tier_names.join(", "),
            asked.join(", ")
        )
    } else {
        missing.join("; ")
    };
    format!(
        "PlacementPolicy {policy:?} cannot place this pod: {why}. Lower or remove those requests, \
         or add a tier whose nodes have them to the policy (or exclude the pod from its selector)"
    )
}

/// The JSON patch (RFC 6902) that writes `placement` into `pod`, with the
/// annotation naming `policy`.
pub(crate) fn patch(pod: &Pod, policy: &str, placement: &Placement) -> Vec<Value> {
    let mut ops = Vec::new();
    if pod.metadata.annotations.is_some() {
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", ANN_POLICY.replace('~', "~0").replace('/', "~1")), "value": policy}));
    } else {
        ops.push(
            json!({"op": "add", "path": "/metadata/annotations", "value": {ANN_POLICY: policy}}),
        );
    }
    ops.push(json!({"op": "add", "path": "/spec/affinity", "value": placement.affinity}));
    ops.push(json!({"op": "add", "path": "/spec/tolerations", "value": placement.tolerations}));
    if let Some(s) = &placement.spread {
        ops.push(json!({"op": "add", "path": "/spec/topologySpreadConstraints", "value": s}));
    }
    if let Some(g) = &placement.gates {
        ops.push(json!({"op": "add", "path": "/spec/schedulingGates", "value": g}));
    }
    ops
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::fixtures::{own_node, virtual_node};

    fn spec(yaml: &str) -> PlacementPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn small_pod() -> Pod {
        pod(json!({
            "metadata": {"name": "p", "labels": {"app": "web", "pod-template-hash": "abc"}},
            "spec": {
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]
            }
        }))
    }

    fn fleet() -> Vec<NodeView> {
        let alloc = [("cpu", "4"), ("memory", "8Gi"), ("pods", "10")];
        vec![
            virtual_node(
                "eu-ecs",
                "aws-ecs",
                &[("skylet.io/tier", "1")],
                &alloc,
                Some((0.04048, 0.004445)),
            ),
            virtual_node(
                "eu-aci",
                "azure-aci",
                &[("skylet.io/tier", "2")],
                &alloc,
                Some((0.0405, 0.00445)),
            ),
            virtual_node(
                "us-mock",
                "mock",
                &[("skylet.io/tier", "2")],
                &alloc,
                Some((0.01, 0.001)),
            ),
            own_node(
                "own-1",
                &[("type", "kwok")],
                &[("cpu", "32"), ("memory", "64Gi"), ("pods", "110")],
            ),
        ]
    }

    const ORDERED: &str = "selector: {matchLabels: {app: web}}\ntiers:\n- nodeSelector: {matchLabels: {skylet.io/tier: '1'}}\n- nodeSelector: {matchLabels: {skylet.io/tier: '2'}}\nfailover: {tolerationSeconds: 30}\n";

    #[test]
    fn weights_decrease_strictly_from_100_to_1() {
        assert_eq!(weights(1), vec![100]);
        assert_eq!(weights(2), vec![100, 1]);
        assert_eq!(weights(3), vec![100, 51, 1]);
        for n in 2..=100 {
            let w = weights(n);
            assert_eq!((w[0], w[n - 1]), (100, 1));
            assert!(w.windows(2).all(|p| p[0] > p[1]), "{n}: {w:?}");
        }
    }

    #[test]
    fn ordered_policy_compiles_to_required_and_decreasing_preferred_affinity() {
        let p = compile("burst", &spec(ORDERED), &small_pod(), &fleet(), false).unwrap();
        let na = p.affinity.node_affinity.unwrap();
        let req = na
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(req.node_selector_terms.len(), 2);
        let first = &req.node_selector_terms[0]
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (first.key.as_str(), first.operator.as_str()),
            ("skylet.io/tier", "In")
        );
        let pref = na
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            pref.iter().map(|t| t.weight).collect::<Vec<_>>(),
            vec![100, 1]
        );
        // provider taints of both tiers' virtual nodes, sorted; failover
        // seconds replace the cluster default
        let tol: Vec<(Option<String>, Option<String>, Option<i64>)> = p
            .tolerations
            .iter()
            .map(|t| (t.key.clone(), t.value.clone(), t.toleration_seconds))
            .collect();
        assert_eq!(
            tol,
            vec![
                (Some("node.kubernetes.io/not-ready".into()), None, Some(30)),
                (
                    Some("node.kubernetes.io/unreachable".into()),
                    None,
                    Some(30)
                ),
                (
                    Some("virtual-kubelet.io/provider".into()),
                    Some("aws-ecs".into()),
                    None
                ),
                (
                    Some("virtual-kubelet.io/provider".into()),
                    Some("azure-aci".into()),
                    None
                ),
                (
                    Some("virtual-kubelet.io/provider".into()),
                    Some("mock".into()),
                    None
                ),
            ]
        );
        assert!(p.spread.is_none() && p.gates.is_none());
        assert!(
            !p.tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("skylet.io/capacity-exhausted"))
        );
    }

    #[test]
    fn the_pods_own_terms_and_tolerations_are_kept() {
        let mut pod = small_pod();
        let s = pod.spec.as_mut().unwrap();
        s.affinity = Some(
            serde_json::from_value(json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["arm64"]}]},
                    {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 7, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]
            }, "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}))
            .unwrap(),
        );
        s.tolerations.as_mut().unwrap()[1].toleration_seconds = Some(7);
        s.tolerations.as_mut().unwrap().push(Toleration {
            key: Some("virtual-kubelet.io/provider".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        });
        let p = compile("burst", &spec(ORDERED), &pod, &fleet(), false).unwrap();
        assert!(p.affinity.pod_anti_affinity.is_some());
        let na = p.affinity.node_affinity.unwrap();
        let terms = na
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        // 2 own x 2 tiers, each own term ANDed with a tier
        assert_eq!(terms.len(), 4);
        let keys: Vec<Vec<String>> = terms
            .iter()
            .map(|t| {
                t.match_expressions
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|e| e.key.clone())
                    .collect()
            })
            .collect();
        assert!(
            keys.iter().all(|k| k == &["arch", "skylet.io/tier"]),
            "{keys:?}"
        );
        let pref = na
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            pref.iter().map(|t| t.weight).collect::<Vec<_>>(),
            vec![7, 100, 1]
        );
        // the pod's own 7 s stays; its Exists toleration covers every provider
        let unreachable = p
            .tolerations
            .iter()
            .find(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
            .unwrap();
        assert_eq!(unreachable.toleration_seconds, Some(7));
        assert_eq!(
            p.tolerations
                .iter()
                .filter(|t| t.key.as_deref() == Some("virtual-kubelet.io/provider"))
                .count(),
            1
        );
    }

    #[test]
    fn cheapest_prefers_by_price_and_own_nodes_cost_nothing() {
        let s = spec(
            "tiers:\n- nodeSelector: {matchExpressions: [{key: type, operator: NotIn, values: [virtual-kubelet]}]}\n- nodeSelector: {matchLabels: {type: virtual-kubelet}}\nstrategy: Cheapest\n",
        );
        let p = compile("cheap", &s, &small_pod(), &fleet(), false).unwrap();
        let pref = p
            .affinity
            .node_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        let order: Vec<(i32, Vec<String>)> = pref
            .iter()
            .map(|t| {
                (
                    t.weight,
                    t.preference.match_fields.as_ref().unwrap()[0]
                        .values
                        .clone()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (100, vec!["own-1".to_owned()]),
                (67, vec!["us-mock".to_owned()]),
                (34, vec!["eu-ecs".to_owned()]),
                (1, vec!["eu-aci".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_pod_no_tier_can_run_is_refused_naming_the_resource() {
        let mut pod = small_pod();
        pod.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .limits = Some(
            [(
                "nvidia.com/gpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            )]
            .into(),
        );
        let err = compile("burst", &spec(ORDERED), &pod, &fleet(), false).unwrap_err();
        assert!(err.contains("nvidia.com/gpu 1"), "{err}");
        assert!(err.contains("tiers tier-1, tier-2"), "{err}");
        assert!(err.contains("add a tier"), "{err}");
        let mut big = small_pod();
        big.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests = Some(
            [(
                "cpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("64".into()),
            )]
            .into(),
        );
        let err = compile("burst", &spec(ORDERED), &big, &fleet(), false).unwrap_err();
        assert!(
            err.contains("requests cpu 64 and the largest node of tiers tier-1, tier-2 has 4"),
            "{err}"
        );
        // no tier node registered yet: admitted, the scheduler waits
        compile("burst", &spec(ORDERED), &pod, &[], false).unwrap();
    }

    #[test]
    fn spread_honours_taints_and_gate_is_added_once() {
        let s = spec(&format!("{ORDERED}spread: {{maxSkew: 2}}\n"));
        let p = compile("burst", &s, &small_pod(), &fleet(), true).unwrap();
        let c = &p.spread.unwrap()[0];
        assert_eq!(c.topology_key, "topology.kubernetes.io/region");
        assert_eq!(c.max_skew, 2);
        assert_eq!(c.when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(c.node_taints_policy.as_deref(), Some("Honor"));
        assert_eq!(
            c.match_label_keys.as_deref(),
            Some(&["pod-template-hash".to_owned()][..])
        );
        assert_eq!(
            c.label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "web"
        );
        assert_eq!(
            p.gates.unwrap(),
            vec![PodSchedulingGate { name: GATE.into() }]
        );
    }

    #[test]
    fn patch_writes_whole_fields_and_the_policy_annotation() {
        let pod = small_pod();
        let p = compile("burst", &spec(ORDERED), &pod, &fleet(), true).unwrap();
        let ops = patch(&pod, "burst", &p);
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            vec![
                "/metadata/annotations",
                "/spec/affinity",
                "/spec/tolerations",
                "/spec/schedulingGates"
            ]
        );
        let mut v = serde_json::to_value(&pod).unwrap();
        for op in &ops {
            let path: Vec<&str> = op["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .split('/')
                .collect();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut v;
            for p in parents {
                at = at.get_mut(*p).unwrap();
            }
            at[*last] = op["value"].clone();
        }
        let patched: Pod = serde_json::from_value(v).unwrap();
        assert_eq!(patched.metadata.annotations.unwrap()[ANN_POLICY], "burst");
        assert_eq!(
            patched.spec.unwrap().scheduling_gates.unwrap()[0].name,
            GATE
        );
    }
}
