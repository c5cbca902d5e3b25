//! What the commands share: skylet's nodes (those labelled
//! `skylet.io/backend`), their labels and prices, the pods bound to them,
//! and pod sizes.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, ResourceExt, api::ListParams};
use skylet_provider::quantity::Quantity;

/// The label skylet puts on each of its nodes: the backend's name.
pub(crate) const LABEL_BACKEND: &str = "skylet.io/backend";
/// The backend's kind.
pub(crate) const LABEL_PROVIDER: &str = "skylet.io/provider";
/// The node's tier (placement policies select by it).
pub(crate) const LABEL_TIER: &str = "skylet.io/tier";
/// The standard region label.
pub(crate) const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// Node annotation: dollars per vCPU-hour.
pub(crate) const ANN_PRICE_VCPU: &str = "skylet.io/price-vcpu-hour";
/// Node annotation: dollars per GiB-hour of memory.
pub(crate) const ANN_PRICE_MEMORY: &str = "skylet.io/price-memory-gib-hour";

/// Every node skylet registered, sorted by name.
pub(crate) async fn skylet_nodes(client: &Client) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(LABEL_BACKEND))
        .await
        .context("cannot list nodes")?
        .items;
    nodes.sort_by_key(ResourceExt::name_any);
    Ok(nodes)
}

/// The node of backend `name` (its `skylet.io/backend` label, or the node's
/// own name).
pub(crate) async fn node_of_backend(client: &Client, name: &str) -> anyhow::Result<Node> {
    skylet_nodes(client)
        .await?
        .into_iter()
        .find(|n| label(n, LABEL_BACKEND) == name || n.name_any() == name)
        .with_context(|| {
            format!("no skylet node for backend {name:?} (kubectl skylet status lists them)")
        })
}

/// A label of `obj`, or `""`.
pub(crate) fn label<'a, K: ResourceExt>(obj: &'a K, key: &str) -> &'a str {
    obj.labels().get(key).map_or("", String::as_str)
}

/// The pods bound to `node`, sorted by namespace and name.
pub(crate) async fn pods_on(client: &Client, node: &str) -> anyhow::Result<Vec<Pod>> {
    let mut pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .with_context(|| format!("cannot list the pods of node {node}"))?
        .items;
    pods.sort_by_key(|p| (p.namespace().unwrap_or_default(), p.name_any()));
    Ok(pods)
}

/// A pod's phase (`Pending` when it has none yet).
pub(crate) fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The node a pod is bound to, or `""`.
pub(crate) fn node_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// A quantity (`500m`, `2Gi`) as a number of base units.
pub(crate) fn quantity(s: &str) -> f64 {
    Quantity::parse(s).map_or(0.0, Quantity::as_f64)
}

/// A pod's requests (vCPUs, GiB): its containers', or its largest init
/// container's if larger (the size skylet bills on backends that bill
/// requests).
pub(crate) fn pod_size(p: &Pod) -> (f64, f64) {
    let Some(spec) = &p.spec else {
        return (0.0, 0.0);
    };
    let req = |c: &k8s_openapi::api::core::v1::Container, k: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(k))
            .map_or(0.0, |q| quantity(&q.0))
    };
    let sum = |k: &str| spec.containers.iter().map(|c| req(c, k)).sum::<f64>();
    let init = |k: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| req(c, k))
            .fold(0.0, f64::max)
    };
    let gib = 1024.0 * 1024.0 * 1024.0;
    (
        sum("cpu").max(init("cpu")),
        sum("memory").max(init("memory")) / gib,
    )
}

/// A node's price per hour (vCPU, GiB), from its annotations.
pub(crate) fn price(n: &Node) -> Option<(f64, f64)> {
    let ann = n.annotations();
    let get = |k: &str| ann.get(k).and_then(|v| v.parse::<f64>().ok());
    Some((get(ANN_PRICE_VCPU)?, get(ANN_PRICE_MEMORY).unwrap_or(0.0)))
}

/// Counts by key, for pods by phase.
pub(crate) fn count<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.to_owned()).or_default() += 1;
    }
    m
}
