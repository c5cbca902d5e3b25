//! What the placement controllers know of the cluster: the Nodes, the
//! PlacementPolicies, the Namespaces (when a namespace selector is set) and
//! a small projection of every Pod, each kept by one watch; plus the pure
//! readings of them the other modules share (a node's price, health, tier;
//! a pod's effective requests and owner).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::{
    core::v1::{Container, Namespace, Node, Pod, PodSpec, Taint},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use skylet_provider::quantity::Quantity;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    crd::{LabelSelector, PlacementPolicy, PlacementPolicySpec},
    selector,
};

/// Label every virtual node carries (`type=virtual-kubelet`).
pub(crate) const LABEL_TYPE: &str = "type";
/// Its value on a virtual node.
pub(crate) const VIRTUAL_KUBELET: &str = "virtual-kubelet";
/// The default taint of a virtual node (`<key>=<kind>:NoSchedule`).
pub(crate) const TAINT_PROVIDER: &str = "virtual-kubelet.io/provider";
/// The taint of a backend that is out of capacity: never tolerated.
pub(crate) const TAINT_CAPACITY: &str = "skylet.io/capacity-exhausted";
/// Node annotation: dollars per vCPU-hour.
pub(crate) const ANN_PRICE_VCPU: &str = "skylet.io/price-vcpu-hour";
/// Node annotation: dollars per GiB-hour of memory.
pub(crate) const ANN_PRICE_MEMORY: &str = "skylet.io/price-memory-gib-hour";
/// The scheduling gate of strict fencing.
pub(crate) const GATE: &str = "skylet.io/fencing";
/// Pod annotation: the policy the webhook compiled into the pod.
pub(crate) const ANN_POLICY: &str = "skylet.io/placement-policy";
/// Pod annotation a ReplicaSet reads when it scales in.
pub(crate) const ANN_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Resource amounts in base units (cores, bytes, count).
pub(crate) type Resources = BTreeMap<String, f64>;

/// A node's price per hour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Price {
    /// Dollars per vCPU-hour.
    pub(crate) vcpu_hour: f64,
    /// Dollars per GiB-hour.
    pub(crate) gib_hour: f64,
}

impl Price {
    /// Dollars per hour for a pod requesting `r` (at least 1 vCPU and 2
    /// GiB are assumed for a pod without requests, so that nodes still
    /// order by price).
    pub(crate) fn hourly(&self, r: &Resources) -> f64 {
        let cpu = r.get("cpu").copied().filter(|v| *v > 0.0).unwrap_or(1.0);
        let gib = r
            .get("memory")
            .copied()
            .filter(|v| *v > 0.0)
            .map_or(2.0, |b| b / f64::from(1u32 << 30));
        cpu * self.vcpu_hour + gib * self.gib_hour
    }
}

/// What placement reads of a Node.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeView {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) taints: Vec<Taint>,
    pub(crate) allocatable: Resources,
    pub(crate) price: Option<Price>,
    pub(crate) ready: bool,
    /// When the Ready condition last changed.
    pub(crate) ready_since: Option<Timestamp>,
    pub(crate) unschedulable: bool,
}

impl NodeView {
    pub(crate) fn from_node(n: &Node) -> Self {
        let ann = n.annotations();
        let price = |k: &str| ann.get(k).and_then(|v| v.trim().parse::<f64>().ok());
        let price = match (price(ANN_PRICE_VCPU), price(ANN_PRICE_MEMORY)) {
            (None, None) => None,
            (c, m) => Some(Price {
                vcpu_hour: c.unwrap_or(0.0),
                gib_hour: m.unwrap_or(0.0),
            }),
        };
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        Self {
            name: n.name_any(),
            labels: n.labels().clone(),
            taints: n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default(),
            allocatable: status
                .and_then(|s| s.allocatable.as_ref())
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, q)| Some((k.clone(), quantity(&q.0)?)))
                        .collect()
                })
                .unwrap_or_default(),
            price,
            ready: ready.is_some_and(|c| c.status == "True"),
            ready_since: ready.and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            unschedulable: n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        }
    }

    /// Whether this is a virtual node (`type=virtual-kubelet`).
    pub(crate) fn is_virtual(&self) -> bool {
        self.labels.get(LABEL_TYPE).map(String::as_str) == Some(VIRTUAL_KUBELET)
    }

    /// The values of the provider taints of this node (one per kind).
    pub(crate) fn provider_taints(&self) -> impl Iterator<Item = &Taint> {
        self.taints.iter().filter(|t| t.key == TAINT_PROVIDER)
    }

    /// Ready, schedulable, and free of the taints that keep pods away
    /// (capacity exhausted, not-ready, unreachable, ...).
    pub(crate) fn healthy(&self) -> bool {
        self.ready
            && !self.unschedulable
            && !self
                .taints
                .iter()
                .any(|t| t.key == TAINT_CAPACITY || t.key.starts_with("node.kubernetes.io/"))
    }

    /// The price per hour of a pod requesting `r` here; 0 for a node
    /// without a price (the cluster's own capacity).
    pub(crate) fn hourly(&self, r: &Resources) -> f64 {
        self.price.map_or(0.0, |p| p.hourly(r))
    }

    /// Whether a pod requesting `r` could ever run here: every requested
    /// resource is in the node's allocatable, at least as much.
    pub(crate) fn could_run(&self, r: &Resources) -> Result<(), String> {
        for (k, v) in r {
            if *v <= 0.0 {
                continue;
            }
            match self.allocatable.get(k) {
                Some(a) if *a + 1e-9 >= *v => {}
                Some(a) => {
                    return Err(format!(
                        "{k}: requests {}, node has {}",
                        fmt(k, *v),
                        fmt(k, *a)
                    ));
                }
                None => return Err(format!("{k}: requests {}, node has none", fmt(k, *v))),
            }
        }
        Ok(())
    }
}

/// A quantity for messages.
pub(crate) fn fmt(resource: &str, v: f64) -> String {
    if resource == "memory" || resource.ends_with("storage") {
        let gib = v / f64::from(1u32 << 30);
        if gib >= 1.0 {
            return format!("{gib:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
                + "Gi";
        }
        return format!("{}Mi", (v / f64::from(1u32 << 20)).round());
    }
    if resource == "cpu" && v < 1.0 {
        return format!("{}m", (v * 1000.0).round());
    }
    format!("{v}")
}

/// A quantity string in base units; `None` if malformed.
pub(crate) fn quantity(s: &str) -> Option<f64> {
    Quantity::parse(s.trim()).map(Quantity::as_f64)
}

/// The tier of `node` under `spec`: the first tier whose selector matches.
pub(crate) fn tier_of(spec: &PlacementPolicySpec, node: &NodeView) -> Option<usize> {
    spec.tiers
        .iter()
        .position(|t| selector::matches(&t.node_selector, &node.labels))
}

/// A pod's controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) uid: String,
}

/// The controller owner of a pod, if any.
pub(crate) fn owner_of(pod: &Pod) -> Option<Owner> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        })
}

/// What placement reads of a Pod (a few hundred bytes instead of the pod).
#[derive(Clone, Debug, Default)]
pub(crate) struct PodInfo {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) owner: Option<Owner>,
    pub(crate) node: Option<String>,
    pub(crate) terminating: bool,
    pub(crate) phase: String,
    pub(crate) ready: bool,
    /// Carries skylet's fencing gate.
    pub(crate) gated: bool,
    /// Carries any scheduling gate.
    pub(crate) any_gate: bool,
    pub(crate) requests: Resources,
    pub(crate) deletion_cost: Option<String>,
}

impl PodInfo {
    pub(crate) fn from_pod(p: &Pod) -> Self {
        let spec = p.spec.as_ref();
        let gates = spec.and_then(|s| s.scheduling_gates.as_ref());
        let status = p.status.as_ref();
        Self {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            labels: p.labels().clone(),
            owner: owner_of(p),
            node: spec.and_then(|s| s.node_name.clone()),
            terminating: p.meta().deletion_timestamp.is_some(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            gated: gates.is_some_and(|g| g.iter().any(|g| g.name == GATE)),
            any_gate: gates.is_some_and(|g| !g.is_empty()),
            requests: spec.map(pod_requests).unwrap_or_default(),
            deletion_cost: p.annotations().get(ANN_DELETION_COST).cloned(),
        }
    }

    /// Finished: its resources are free again.
    pub(crate) fn finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

fn container_requests(c: &Container) -> Resources {
    let mut out = Resources::new();
    if let Some(r) = &c.resources {
        // requests default to limits (as the apiserver's defaulting does)
        for (k, q) in r.limits.iter().flatten() {
            if let Some(v) = quantity(&q.0) {
                out.insert(k.clone(), v);
            }
        }
        for (k, q) in r.requests.iter().flatten() {
            if let Some(v) = quantity(&q.0) {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}

fn add(to: &mut Resources, r: &Resources) {
    for (k, v) in r {
        *to.entry(k.clone()).or_default() += v;
    }
}

fn max_into(to: &mut Resources, r: &Resources) {
    for (k, v) in r {
        let e = to.entry(k.clone()).or_default();
        *e = e.max(*v);
    }
}

/// The pod's effective requests, as the scheduler computes them: the app
/// containers plus the sidecars (restartable init containers), or the
/// largest init container (plus the sidecars started before it) if that is
/// more, plus the pod overhead.
pub(crate) fn pod_requests(spec: &PodSpec) -> Resources {
    let mut total = Resources::new();
    for c in &spec.containers {
        add(&mut total, &container_requests(c));
    }
    let mut sidecars = Resources::new();
    let mut init = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &r);
            max_into(&mut init, &sidecars);
        } else {
            let mut with = sidecars.clone();
            add(&mut with, &r);
            max_into(&mut init, &with);
        }
    }
    add(&mut total, &sidecars);
    max_into(&mut total, &init);
    if let Some(o) = &spec.overhead {
        for (k, q) in o {
            if let Some(v) = quantity(&q.0) {
                *total.entry(k.clone()).or_default() += v;
            }
        }
    }
    total
}

/// The caches, kept by watches until shutdown.
pub(crate) struct View {
    nodes: Store<Node>,
    policies: Store<PlacementPolicy>,
    namespaces: Option<Store<Namespace>>,
    budgets: Store<PodDisruptionBudget>,
    pods: RwLock<HashMap<String, Arc<PodInfo>>>,
    /// One bit per watch that has listed everything once.
    ready: watch::Sender<u8>,
    ready_mask: u8,
    changes: watch::Sender<u64>,
    namespace_selector: Option<LabelSelector>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").finish_non_exhaustive()
    }
}

impl View {
    /// Starts the watches.
    pub(crate) fn start(
        client: &Client,
        namespace_selector: Option<LabelSelector>,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let (nodes, node_writer) = reflector::store();
        let (policies, policy_writer) = reflector::store();
        let (budgets, budget_writer) = reflector::store();
        let ns = namespace_selector
            .is_some()
            .then(reflector::store::<Namespace>);
        let view = Arc::new(Self {
            nodes,
            policies,
            namespaces: ns.as_ref().map(|(r, _)| r.clone()),
            budgets,
            pods: RwLock::default(),
            ready: watch::Sender::new(0),
            ready_mask: if ns.is_some() { 0b1_1111 } else { 0b1_1011 },
            changes: watch::Sender::new(0),
            namespace_selector,
        });
        let node_stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .backoff(crate::watch_backoff())
            .modify(|n: &mut Node| n.managed_fields_mut().clear())
            .reflect(node_writer);
        view.drive("nodes", 0b0001, node_stream, shutdown);
        let policy_stream = watcher(
            Api::<PlacementPolicy>::all(client.clone()),
            watcher::Config::default(),
        )
        .backoff(crate::watch_backoff())
        .modify(|p: &mut PlacementPolicy| p.managed_fields_mut().clear())
        .reflect(policy_writer);
        view.drive("placementpolicies", 0b0010, policy_stream, shutdown);
        let budget_stream = watcher(
            Api::<PodDisruptionBudget>::all(client.clone()),
            watcher::Config::default(),
        )
        .backoff(crate::watch_backoff())
        .modify(|p: &mut PodDisruptionBudget| p.managed_fields_mut().clear())
        .reflect(budget_writer);
        view.drive("poddisruptionbudgets", 0b1_0000, budget_stream, shutdown);
        if let Some((_, writer)) = ns {
            let stream = watcher(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
            )
            .backoff(crate::watch_backoff())
            .modify(|n: &mut Namespace| n.managed_fields_mut().clear())
            .reflect(writer);
            view.drive("namespaces", 0b0100, stream, shutdown);
        }
        let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .backoff(crate::watch_backoff());
        let v = view.clone();
        let stop = shutdown.clone();
        tokio::spawn(
            async move {
                futures::pin_mut!(pods);
                let mut relist: Option<HashMap<String, Arc<PodInfo>>> = None;
                loop {
                    let ev = tokio::select! {
                        () = stop.cancelled() => return,
                        ev = pods.next() => ev,
                    };
                    match ev {
                        None => return,
                        Some(Err(e)) => tracing::debug!(error = %e, "pod watch error; retrying"),
                        Some(Ok(ev)) => v.apply_pod_event(ev, &mut relist),
                    }
                }
            }
            .instrument(tracing::debug_span!("watch", resource = "pods")),
        );
        view
    }

    fn drive<K, S>(
        self: &Arc<Self>,
        what: &'static str,
        bit: u8,
        stream: S,
        shutdown: &CancellationToken,
    ) where
        K: Resource + Clone + DeserializeOwned + Send + 'static,
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let v = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(
            async move {
                futures::pin_mut!(stream);
                loop {
                    let ev = tokio::select! {
                        () = stop.cancelled() => return,
                        ev = stream.next() => ev,
                    };
                    match ev {
                        None => return,
                        Some(Err(e)) => tracing::debug!(error = %e, "watch error; retrying"),
                        Some(Ok(ev)) => {
                            if matches!(ev, watcher::Event::InitDone) {
                                v.ready.send_modify(|m| *m |= bit);
                            }
                            v.changed();
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("watch", resource = what)),
        );
    }

    fn apply_pod_event(
        &self,
        ev: watcher::Event<Pod>,
        relist: &mut Option<HashMap<String, Arc<PodInfo>>>,
    ) {
        let mut pods = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            watcher::Event::Init => *relist = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                let info = PodInfo::from_pod(&p);
                relist
                    .get_or_insert_with(HashMap::new)
                    .insert(info.uid.clone(), Arc::new(info));
            }
            watcher::Event::InitDone => {
                *pods = relist.take().unwrap_or_default();
                self.ready.send_modify(|m| *m |= 0b1000);
            }
            watcher::Event::Apply(p) => {
                let info = PodInfo::from_pod(&p);
                pods.insert(info.uid.clone(), Arc::new(info));
            }
            watcher::Event::Delete(p) => {
                pods.remove(&p.uid().unwrap_or_default());
            }
        }
        drop(pods);
        self.changed();
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every change of any cache.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits (at most `timeout`) until every cache has been listed once.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> bool {
        // kube's Store::wait_until_ready wakes one waiter only: the
        // watches report their first full listing here instead
        let mut rx = self.ready.subscribe();
        let want = self.ready_mask;
        let all = async move {
            let _ = rx.wait_for(|m| *m & want == want).await;
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }

    /// Every node.
    pub(crate) fn nodes(&self) -> Vec<NodeView> {
        self.nodes
            .state()
            .iter()
            .map(|n| NodeView::from_node(n))
            .collect()
    }

    /// Every pod.
    pub(crate) fn pods(&self) -> Vec<Arc<PodInfo>> {
        self.pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The PodDisruptionBudgets that select `pod`: their names and how
    /// many disruptions each allowed when last seen.
    pub(crate) fn budgets_of(&self, pod: &PodInfo) -> Vec<(String, i32)> {
        self.budgets
            .state()
            .iter()
            .filter(|b| b.namespace().as_deref() == Some(pod.namespace.as_str()))
            .filter(|b| {
                // a null selector selects nothing, an empty one everything
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|sel| serde_json::to_value(sel).ok())
                    .and_then(|v| serde_json::from_value::<LabelSelector>(v).ok())
                    .is_some_and(|sel| selector::matches(&sel, &pod.labels))
            })
            .map(|b| {
                let allowed = b
                    .status
                    .as_ref()
                    .and_then(|s| s.disruptions_allowed)
                    .unwrap_or(0);
                (b.name_any(), allowed)
            })
            .collect()
    }

    /// Whether placement applies in namespace `ns` (the namespace
    /// selector, when one is configured).
    pub(crate) fn namespace_allowed(&self, ns: &str) -> bool {
        let (Some(sel), Some(store)) = (&self.namespace_selector, &self.namespaces) else {
            return true;
        };
        store
            .get(&reflector::ObjectRef::new(ns))
            .is_some_and(|n| selector::matches(sel, n.labels()))
    }

    /// Every policy in a namespace where placement applies.
    pub(crate) fn policies(&self) -> Vec<Arc<PlacementPolicy>> {
        let mut v: Vec<_> = self
            .policies
            .state()
            .into_iter()
            .filter(|p| self.namespace_allowed(&p.namespace().unwrap_or_default()))
            .collect();
        v.sort_by_key(|p| precedence(p));
        v
    }

    /// The policy that applies to a pod of `ns` labelled `labels`: the
    /// oldest (then first by name) of those that select it.
    pub(crate) fn policy_for(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<Arc<PlacementPolicy>> {
        if !self.namespace_allowed(ns) {
            return None;
        }
        self.policies
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns))
            .filter(|p| selector::matches(&p.spec.selector, labels))
            .min_by_key(|p| precedence(p))
    }
}

/// The order among policies that select the same pod.
fn precedence(p: &PlacementPolicy) -> (Option<Timestamp>, String, String) {
    (
        p.creation_timestamp().map(|t| t.0),
        p.namespace().unwrap_or_default(),
        p.name_any(),
    )
}

/// Among `policies`, the one that applies to pod `p` (they are sorted by
/// precedence, see [`View::policies`]).
pub(crate) fn policy_of<'a>(
    policies: &'a [Arc<PlacementPolicy>],
    p: &PodInfo,
) -> Option<&'a Arc<PlacementPolicy>> {
    policies.iter().find(|pol| {
        pol.namespace().as_deref() == Some(p.namespace.as_str())
            && selector::matches(&pol.spec.selector, &p.labels)
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for nodes and pods in unit tests.

    use super::*;
    use serde_json::json;

    /// A virtual node of `kind` with labels, allocatable and an optional
    /// price.
    pub(crate) fn virtual_node(
        name: &str,
        kind: &str,
        labels: &[(&str, &str)],
        alloc: &[(&str, &str)],
        price: Option<(f64, f64)>,
    ) -> NodeView {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.insert(LABEL_TYPE.into(), VIRTUAL_KUBELET.into());
        l.insert("skylet.io/provider".into(), kind.into());
        let mut ann = BTreeMap::new();
        if let Some((c, m)) = price {
            ann.insert(ANN_PRICE_VCPU.to_owned(), c.to_string());
            ann.insert(ANN_PRICE_MEMORY.to_owned(), m.to_string());
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l, "annotations": ann},
            "spec": {"taints": [{"key": TAINT_PROVIDER, "value": kind, "effect": "NoSchedule"}]},
            "status": {
                "allocatable": alloc.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        }))
        .unwrap_or_default();
        NodeView::from_node(&node)
    }

    /// A node of the cluster's own (no virtual-kubelet label, no price).
    pub(crate) fn own_node(
        name: &str,
        labels: &[(&str, &str)],
        alloc: &[(&str, &str)],
    ) -> NodeView {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>()},
            "status": {
                "allocatable": alloc.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap_or_default();
        NodeView::from_node(&node)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{fixtures::*, *};
    use serde_json::json;

    #[test]
    fn effective_requests_count_sidecars_and_init_containers() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "big", "resources": {"requests": {"cpu": "4", "memory": "128Mi"}}}
            ],
            "overhead": {"memory": "64Mi"}
        }))
        .unwrap();
        let r = pod_requests(&spec);
        // init "big" with the sidecar before it: 4.1 cores > 1.35
        assert!((r["cpu"] - 4.1).abs() < 1e-9, "{r:?}");
        assert_eq!(r["memory"], f64::from(320u32 << 20));
        assert_eq!(r["nvidia.com/gpu"], 1.0);
    }

    #[test]
    fn nodes_read_price_health_and_fit() {
        let n = virtual_node(
            "vn",
            "mock",
            &[],
            &[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")],
            Some((0.04048, 0.004445)),
        );
        assert!(n.is_virtual() && n.healthy());
        let r: Resources = [
            ("cpu".to_owned(), 1.0),
            ("memory".to_owned(), 2.0 * f64::from(1u32 << 30)),
        ]
        .into_iter()
        .collect();
        assert!((n.hourly(&r) - (0.04048 + 2.0 * 0.004445)).abs() < 1e-12);
        n.could_run(&r).unwrap();
        let gpu: Resources = [("nvidia.com/gpu".to_owned(), 1.0)].into_iter().collect();
        assert!(n.could_run(&gpu).unwrap_err().contains("node has none"));
        let own = own_node("own", &[("type", "kwok")], &[("cpu", "32")]);
        assert!(!own.is_virtual());
        assert_eq!(own.hourly(&r), 0.0);
        let mut exhausted = n.clone();
        exhausted.taints.push(Taint {
            key: TAINT_CAPACITY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert!(!exhausted.healthy());
    }
}
