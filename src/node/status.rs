//! The Node as skylet wants it: labels, taints, addresses, capacity and
//! conditions, from the configuration, the backend and the backend's
//! health. Condition transition times change only when a condition's status
//! changes, as the kubelet keeps them.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
        NodeStatus, NodeSystemInfo, Taint,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, Time},
    },
};
use skylet_provider::{Provider, quantity};

use super::{
    KUBELET_VERSION, base_labels,
    health::{CAPACITY_TAINT, Health},
};
use crate::config::NodeConfig;

/// What the node's conditions were, and since when.
#[derive(Debug, Default)]
pub(crate) struct Transitions(HashMap<String, (String, Time)>);

impl Transitions {
    /// Takes the conditions an existing Node reports (skylet restarted), so
    /// a status unchanged across the restart keeps its transition time.
    pub(crate) fn seed(&mut self, conditions: &[NodeCondition]) {
        for c in conditions {
            if let Some(t) = &c.last_transition_time {
                self.0
                    .insert(c.type_.clone(), (c.status.clone(), t.clone()));
            }
        }
    }

    /// The transition time of condition `type_` with `status` at `now`:
    /// the time it last changed, or `now` if it changes now.
    fn at(&mut self, type_: &str, status: &str, now: &Time) -> Time {
        match self.0.get(type_) {
            Some((s, since)) if s == status => since.clone(),
            _ => {
                self.0
                    .insert(type_.to_owned(), (status.to_owned(), now.clone()));
                now.clone()
            }
        }
    }
}

/// The key of the default taint: `virtual-kubelet.io/provider=<kind>`.
pub(crate) const PROVIDER_TAINT: &str = "virtual-kubelet.io/provider";

/// The taints the node carries: configured (or the provider's default),
/// plus the capacity taint while it is on.
pub(crate) fn taints(config: &NodeConfig, provider: &str, capacity_exhausted: bool) -> Vec<Taint> {
    let mut taints = config.taints.clone().unwrap_or_else(|| {
        vec![Taint {
            key: PROVIDER_TAINT.into(),
            value: Some(provider.into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]
    });
    if capacity_exhausted {
        taints.push(Taint {
            key: CAPACITY_TAINT.into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    taints
}

/// The conditions for `health` at `now`.
pub(crate) fn conditions(
    provider: &str,
    health: &Health,
    stopped: bool,
    transitions: &mut Transitions,
    now: Timestamp,
) -> Vec<NodeCondition> {
    let now = Time(now);
    let mut cond = |type_: &str, status: &str, reason: &str, message: String| NodeCondition {
        last_transition_time: Some(transitions.at(type_, status, &now)),
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
    };
    let ready = match (stopped, health.is_up()) {
        (true, _) => cond(
            "Ready",
            "False",
            "KubeletStopped",
            "skylet was stopped; pods keep running in the backend until deleted".into(),
        ),
        (false, true) => cond(
            "Ready",
            "True",
            "KubeletReady",
            format!("skylet is posting ready status; backend {provider} reachable"),
        ),
        (false, false) => cond(
            "Ready",
            "False",
            "ProviderUnreachable",
            format!(
                "backend {provider} does not answer: {}",
                health.last_error().unwrap_or("no answer")
            ),
        ),
    };
    vec![
        ready,
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "the backend manages memory".into(),
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "the backend manages disk".into(),
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "the backend manages processes".into(),
        ),
        cond(
            "NetworkUnavailable",
            "False",
            "RouteCreated",
            "the backend provides pod networking".into(),
        ),
    ]
}

/// The whole Node: what skylet sets, then what the backend knows
/// ([`Provider::configure_node`]), then the configured labels and capacity
/// caps, which win.
pub(crate) fn node<P: Provider>(
    config: &NodeConfig,
    provider: &P,
    conditions: Vec<NodeCondition>,
    capacity_exhausted: bool,
) -> Node {
    let mut node = Node {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            labels: Some(base_labels(&config.name, provider.name())),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints(config, provider.name(), capacity_exhausted)),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: config.ip.to_string(),
            }]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(config.port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                operating_system: "linux".into(),
                kubelet_version: KUBELET_VERSION.into(),
                container_runtime_version: format!(
                    "skylet://{} ({})",
                    env!("CARGO_PKG_VERSION"),
                    provider.name()
                ),
                os_image: format!("skylet {} provider", provider.name()),
                ..Default::default()
            }),
            conditions: Some(conditions),
            // kube-apiserver 1.36 sends WebSocket streams straight to a
            // kubelet that declares this; skylet serves them
            // (server::streaming)
            declared_features: config
                .websocket_to_kubelet
                .then(|| vec!["ExtendWebSocketsToKubelet".to_owned()]),
            ..Default::default()
        }),
    };
    if let Some(price) = &config.price {
        node.metadata.annotations = Some(price_annotations(price));
    }
    provider.configure_node(&mut node);
    // configured labels win over the provider's
    if let Some(l) = node.metadata.labels.as_mut() {
        l.extend(config.labels.clone());
    }
    if let (Some(caps), Some(status)) = (&config.capacity, node.status.as_mut()) {
        for list in [&mut status.capacity, &mut status.allocatable] {
            cap(list.get_or_insert_with(BTreeMap::new), caps);
        }
    }
    node
}

/// The annotations that publish a backend's price on its Node, for
/// placement by price and for people: dollars per vCPU-hour and per
/// GiB-hour, and whether it is spot capacity.
pub(crate) fn price_annotations(price: &crate::cost::Price) -> BTreeMap<String, String> {
    [
        (PRICE_VCPU_HOUR, price.vcpu_hour.to_string()),
        (PRICE_MEMORY_GIB_HOUR, price.memory_gib_hour.to_string()),
        ("skylet.io/spot", price.spot.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The annotation with a backend's dollars per vCPU-hour.
pub const PRICE_VCPU_HOUR: &str = "skylet.io/price-vcpu-hour";
/// The annotation with a backend's dollars per GiB-hour.
pub const PRICE_MEMORY_GIB_HOUR: &str = "skylet.io/price-memory-gib-hour";

/// Each resource of `list` at most its cap; a resource the backend does
/// not report stays absent (a cap never adds what the backend lacks).
fn cap(list: &mut BTreeMap<String, Quantity>, caps: &BTreeMap<String, String>) {
    for (resource, limit) in caps {
        let Some(have) = list.get_mut(resource) else {
            continue;
        };
        let over = match (
            quantity::Quantity::parse(&have.0),
            quantity::Quantity::parse(limit),
        ) {
            (Some(h), Some(l)) => h.num * l.den > l.num * h.den,
            _ => true,
        };
        if over {
            *have = Quantity(limit.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_change_only_with_the_status() {
        let mut t = Transitions::default();
        let mut h = Health::new(1, 1);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let ready = |c: &[NodeCondition]| c[0].clone();
        let first = ready(&conditions("mock", &h, false, &mut t, t0));
        let later = ready(&conditions("mock", &h, false, &mut t, t1));
        assert_eq!(later.last_transition_time, first.last_transition_time);
        assert_eq!(later.last_heartbeat_time, Some(Time(t1)));
        h.observe(Err("down".into()));
        let down = ready(&conditions("mock", &h, false, &mut t, t2));
        assert_eq!(
            (down.status.as_str(), down.last_transition_time),
            ("False", Some(Time(t2)))
        );
        assert!(down.message.unwrap().contains("down"));
    }

    #[test]
    fn a_restart_keeps_the_transition_times_of_unchanged_conditions() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let h = Health::new(1, 1);
        let before = conditions("mock", &h, true, &mut Transitions::default(), t0);
        // a new process: the Node's conditions seed the times
        let mut t = Transitions::default();
        t.seed(&before);
        let after = conditions("mock", &h, false, &mut t, t1);
        assert_eq!(
            after[0].last_transition_time,
            Some(Time(t1)),
            "Ready went from False (stopped) to True"
        );
        for (a, b) in after[1..].iter().zip(&before[1..]) {
            assert_eq!(
                a.last_transition_time, b.last_transition_time,
                "{}",
                a.type_
            );
        }
    }

    #[test]
    fn capacity_is_capped_by_the_configuration() {
        let mut list: BTreeMap<String, Quantity> =
            [("cpu", "1000"), ("memory", "1Gi"), ("pods", "10")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
                .collect();
        let caps = [("cpu", "8"), ("memory", "4Gi"), ("nvidia.com/gpu", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cap(&mut list, &caps);
        let got: Vec<_> = list.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
        assert_eq!(got, ["cpu=8", "memory=1Gi", "pods=10"]);
    }

    #[test]
    fn the_capacity_taint_comes_and_goes() {
        let config = crate::config::Config::parse_from(["skylet"])
            .unwrap()
            .backends
            .remove(0)
            .node;
        let keys = |t: Vec<Taint>| t.into_iter().map(|t| t.key).collect::<Vec<_>>();
        assert_eq!(
            keys(taints(&config, "mock", false)),
            ["virtual-kubelet.io/provider"]
        );
        assert_eq!(
            keys(taints(&config, "mock", true)),
            ["virtual-kubelet.io/provider", CAPACITY_TAINT]
        );
    }
}
