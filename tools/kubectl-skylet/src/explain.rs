//! `kubectl skylet explain POD`: why a pod is where it is, from what the
//! apiserver holds: its node and that node's backend, region and tier; the
//! PlacementPolicy the webhook compiled into it (annotation
//! `skylet.io/placement-policy`) and what it compiled to (required tiers,
//! preferences, fail-over tolerations, the fencing gate); its own Events;
//! and the refusals, evictions and fail-overs of its controller's earlier
//! pods (their Events outlive them).

use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use crate::{
    Format,
    nodes::{self, LABEL_BACKEND, LABEL_PROVIDER, LABEL_REGION, LABEL_TIER, label},
    output,
};

/// The policy annotation the placement webhook writes.
const ANN_POLICY: &str = "skylet.io/placement-policy";
/// Event reasons that tell a pod's history across its controller's pods.
const HISTORY: &[&str] = &[
    "BackendCapacityUnavailable",
    "FencingUnconfirmed",
    "FencingConfirmed",
    "PlacementRebalance",
    "TaintManagerEviction",
    "Evicted",
    "Preempted",
    "FailedScheduling",
];

/// `explain` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The pod.
    pod: String,
    /// Its namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// The explanation.
#[derive(Debug, Serialize)]
struct Explanation {
    namespace: String,
    pod: String,
    phase: String,
    node: String,
    backend: String,
    provider: String,
    region: String,
    tier: String,
    /// The PlacementPolicy compiled into the pod, if any.
    policy: Option<String>,
    /// What the policy (or the pod's author) put in its scheduling fields.
    placement: Vec<String>,
    /// Why, in sentences.
    reasons: Vec<String>,
    /// Events of the pod and of its controller's earlier pods, oldest first.
    events: Vec<EventLine>,
}

#[derive(Debug, Serialize)]
struct EventLine {
    pod: String,
    reason: String,
    #[serde(rename = "type")]
    type_: String,
    message: String,
}

pub(crate) async fn run(client: &Client, args: &Args, out: Format) -> anyhow::Result<ExitCode> {
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&args.pod)
        .await
        .with_context(|| format!("cannot read pod {ns}/{}", args.pod))?;
    let node_name = nodes::node_name(&pod).to_owned();
    let node = if node_name.is_empty() {
        None
    } else {
        Api::<Node>::all(client.clone()).get_opt(&node_name).await?
    };
    let events = history(client, &ns, &pod).await;
    let e = explain(&pod, node.as_ref(), events);
    let mut rows = vec![
        vec![
            "pod".into(),
            format!("{}/{} ({})", e.namespace, e.pod, e.phase),
        ],
        vec![
            "node".into(),
            if e.node.is_empty() {
                "not scheduled".into()
            } else {
                format!(
                    "{} (backend {}, provider {}, region {}, tier {})",
                    e.node,
                    or_dash(&e.backend),
                    or_dash(&e.provider),
                    or_dash(&e.region),
                    or_dash(&e.tier)
                )
            },
        ],
        vec![
            "policy".into(),
            e.policy.clone().unwrap_or_else(|| "none".into()),
        ],
    ];
    rows.extend(
        e.placement
            .iter()
            .map(|p| vec!["placement".into(), p.clone()]),
    );
    rows.extend(e.reasons.iter().map(|r| vec!["why".into(), r.clone()]));
    rows.extend(e.events.iter().map(|ev| {
        vec![
            "event".into(),
            format!("{} {} on {}: {}", ev.type_, ev.reason, ev.pod, ev.message),
        ]
    }));
    output::print(out, &e, &["WHAT", "DETAIL"], rows)?;
    Ok(ExitCode::SUCCESS)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The pod's Events, and its controller's earlier pods' Events of
/// [`HISTORY`] (pods of one ReplicaSet share its name as prefix).
async fn history(client: &Client, ns: &str, pod: &Pod) -> Vec<Event> {
    let name = pod.name_any();
    let prefix = pod.metadata.generate_name.clone();
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let of = e.involved_object.name.as_deref().unwrap_or_default();
            of == name
                || prefix.as_deref().is_some_and(|p| {
                    of.starts_with(p) && HISTORY.contains(&e.reason.as_deref().unwrap_or_default())
                })
        })
        .collect();
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    events
}

fn explain(pod: &Pod, node: Option<&Node>, events: Vec<Event>) -> Explanation {
    let name = pod.name_any();
    let get = |k: &str| node.map_or(String::new(), |n| label(n, k).to_owned());
    let policy = pod.annotations().get(ANN_POLICY).cloned();
    let placement = placement(pod);
    let events: Vec<EventLine> = events
        .into_iter()
        .map(|e| EventLine {
            pod: e.involved_object.name.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            type_: e.type_.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect();
    let mut reasons = Vec::new();
    let backend = get(LABEL_BACKEND);
    match (&policy, node) {
        (Some(p), Some(_)) => reasons.push(format!(
            "PlacementPolicy {p} was compiled into its scheduling fields at admission; kube-scheduler chose {backend} among the nodes they allow"
        )),
        (None, Some(_)) => reasons.push(format!(
            "no PlacementPolicy applied: kube-scheduler chose {backend} from the pod's own nodeSelector, affinity and tolerations"
        )),
        (_, None) => reasons.push("the pod is not bound to a node".into()),
    }
    for e in events.iter().filter(|e| e.pod != name) {
        let what = match e.reason.as_str() {
            "BackendCapacityUnavailable" => {
                "was refused by its backend for lack of capacity, so its controller replaced it (a fail-over)"
            }
            "TaintManagerEviction" | "Evicted" => {
                "was evicted (its node NotReady, or drained), so its controller replaced it"
            }
            "PlacementRebalance" => "was moved back to a recovered higher tier",
            "FencingUnconfirmed" => {
                "stayed Terminating until its backend confirmed its instance gone"
            }
            "FencingConfirmed" => "was confirmed gone by its backend",
            _ => continue,
        };
        reasons.push(format!(
            "an earlier pod of its controller, {}, {what}: {}",
            e.pod, e.message
        ));
    }
    for e in events.iter().filter(|e| e.pod == name) {
        if e.reason == "BackendCapacityUnavailable" {
            reasons.push(format!(
                "this pod was refused for lack of capacity: {}",
                e.message
            ));
        }
    }
    Explanation {
        namespace: pod.namespace().unwrap_or_default(),
        pod: name,
        phase: nodes::phase(pod).to_owned(),
        node: nodes::node_name(pod).to_owned(),
        provider: get(LABEL_PROVIDER),
        region: get(LABEL_REGION),
        tier: get(LABEL_TIER),
        backend,
        policy,
        placement,
        reasons,
        events,
    }
}

/// The pod's scheduling fields, one line each.
fn placement(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let expr = |m: &k8s_openapi::api::core::v1::NodeSelectorRequirement| {
        format!(
            "{} {} [{}]",
            m.key,
            m.operator,
            m.values.clone().unwrap_or_default().join(",")
        )
    };
    if let Some(sel) = &spec.node_selector {
        let pairs: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("nodeSelector {}", pairs.join(",")));
    }
    if let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    {
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            for t in &req.node_selector_terms {
                let e: Vec<String> = t.match_expressions.iter().flatten().map(expr).collect();
                out.push(format!("required: {}", e.join(" and ")));
            }
        }
        for p in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let e: Vec<String> = p
                .preference
                .match_expressions
                .iter()
                .flatten()
                .map(expr)
                .collect();
            out.push(format!(
                "preferred (weight {}): {}",
                p.weight,
                e.join(" and ")
            ));
        }
    }
    for t in spec.tolerations.iter().flatten() {
        if let Some(s) = t.toleration_seconds {
            out.push(format!(
                "fail-over: tolerates {} for {s}s before eviction",
                t.key.clone().unwrap_or_default()
            ));
        }
    }
    for g in spec.scheduling_gates.iter().flatten() {
        out.push(format!(
            "scheduling gate {} (waits for its predecessor to be fenced)",
            g.name
        ));
    }
    for c in spec.topology_spread_constraints.iter().flatten() {
        out.push(format!(
            "spread over {} (maxSkew {}, {})",
            c.topology_key, c.max_skew, c.when_unsatisfiable
        ));
    }
    out
}
