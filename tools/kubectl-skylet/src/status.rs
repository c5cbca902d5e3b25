//! `kubectl skylet status`: every skylet node, its backend, health,
//! capacity, pods by phase, and the taints on it with why each is there.

use std::{collections::BTreeMap, process::ExitCode};

use k8s_openapi::api::core::v1::{Event, Node};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use crate::{
    Format,
    nodes::{self, LABEL_BACKEND, LABEL_PROVIDER, LABEL_REGION, LABEL_TIER, label},
    output,
};

/// One node as the command shows it.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    node: String,
    backend: String,
    provider: String,
    region: String,
    tier: String,
    /// `Ready`, `NotReady` or `Unknown`; `,SchedulingDisabled` when cordoned.
    health: String,
    /// The Ready condition's reason and message when not Ready.
    health_reason: String,
    /// Allocatable cpu, memory, pods.
    capacity: BTreeMap<String, String>,
    /// Pods bound to the node, by phase.
    pods: BTreeMap<String, usize>,
    taints: Vec<Taint>,
}

/// A taint and why it is there.
#[derive(Debug, Serialize)]
struct Taint {
    key: String,
    effect: String,
    why: String,
}

pub(crate) async fn run(client: &Client, out: Format) -> anyhow::Result<ExitCode> {
    let refusals = last_refusals(client).await;
    let mut all = Vec::new();
    for n in nodes::skylet_nodes(client).await? {
        let pods = nodes::pods_on(client, &n.name_any()).await?;
        let phases = nodes::count(pods.iter().map(|p| {
            if p.metadata.deletion_timestamp.is_some() {
                "Terminating"
            } else {
                nodes::phase(p)
            }
        }));
        all.push(status_of(&n, phases, &refusals));
    }
    let rows = all
        .iter()
        .map(|s| {
            vec![
                s.node.clone(),
                s.provider.clone(),
                s.region.clone(),
                s.health.clone(),
                ["cpu", "memory", "pods"]
                    .iter()
                    .map(|k| format!("{k}={}", s.capacity.get(*k).map_or("-", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(","),
                s.pods
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                s.taints
                    .iter()
                    .map(|t| format!("{}:{} ({})", t.key, t.effect, t.why))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    output::print(
        out,
        &all,
        &[
            "BACKEND", "PROVIDER", "REGION", "HEALTH", "CAPACITY", "PODS", "TAINTS",
        ],
        rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn status_of(n: &Node, pods: BTreeMap<String, usize>, refusals: &[Event]) -> NodeStatus {
    let status = n.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    let (mut health, reason) = match &ready {
        Some(c) if c.status == "True" => ("Ready".to_owned(), String::new()),
        Some(c) => (
            if c.status == "False" {
                "NotReady"
            } else {
                "Unknown"
            }
            .to_owned(),
            format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        ),
        None => ("Unknown".to_owned(), "no Ready condition yet".to_owned()),
    };
    let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if cordoned {
        health.push_str(",SchedulingDisabled");
    }
    let capacity = status
        .allocatable
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| ["cpu", "memory", "pods"].contains(&k.as_str()))
        .map(|(k, v)| (k, v.0))
        .collect();
    let name = n.name_any();
    let taints = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| Taint {
            why: why(&t.key, &name, &reason, refusals),
            key: t.key,
            effect: t.effect,
        })
        .collect();
    NodeStatus {
        node: name,
        backend: label(n, LABEL_BACKEND).to_owned(),
        provider: label(n, LABEL_PROVIDER).to_owned(),
        region: label(n, LABEL_REGION).to_owned(),
        tier: label(n, LABEL_TIER).to_owned(),
        health,
        health_reason: reason,
        capacity,
        pods,
        taints,
    }
}

/// Why a taint is on a skylet node.
fn why(key: &str, node: &str, not_ready: &str, refusals: &[Event]) -> String {
    match key {
        "virtual-kubelet.io/provider" => {
            "skylet's: only pods that tolerate it run on this virtual node".into()
        }
        "skylet.io/capacity-exhausted" => {
            let last = refusals
                .iter()
                .rev()
                .find(|e| e.message.as_deref().is_some_and(|m| m.contains(node)))
                .and_then(|e| e.message.clone());
            match last {
                Some(m) => format!("skylet's: the backend refused pods for lack of capacity, until its cooldown ends: {m}"),
                None => "skylet's: the backend refused pods for lack of capacity, until its cooldown ends".into(),
            }
        }
        "node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable" => {
            format!("the node lifecycle controller's: the node is not Ready ({not_ready})")
        }
        "node.kubernetes.io/unschedulable" => {
            "cordoned (kubectl cordon, kubectl skylet drain)".into()
        }
        _ => String::new(),
    }
}

/// The `BackendCapacityUnavailable` Events, oldest first (empty if they
/// cannot be read).
async fn last_refusals(client: &Client) -> Vec<Event> {
    let mut events = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields("reason=BackendCapacityUnavailable"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
    });
    events
}
