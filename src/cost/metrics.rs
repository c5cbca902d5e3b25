//! The cost series: their families, registered once per process
//! ([`CostMetrics::register`]), shared by every backend's
//! [`CostMeter`].
//!
//! | series | labels | registry |
//! |---|---|---|
//! | `skylet_pod_cost_dollars_total` | namespace, pod, backend, region | skylet's (prefix `skylet`) |
//! | `node_cpu_hourly_cost` | instance, node, instance_type, region, provider_id, arch | OpenCost's (no prefix) |
//! | `node_ram_hourly_cost` | same | OpenCost's |
//! | `node_total_hourly_cost` | same | OpenCost's |
//! | `kubecost_node_is_spot` | same | OpenCost's |
//! | `container_cpu_allocation` | namespace, pod, container, instance, node | OpenCost's |
//! | `container_memory_allocation_bytes` | same | OpenCost's |

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Config, CostMeter, Price, model::Cost};

/// Labels of `skylet_pod_cost_dollars_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PodLabels {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) backend: Arc<str>,
    pub(super) region: Arc<str>,
}

/// Labels of OpenCost's node series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NodeLabels {
    pub(super) instance: Arc<str>,
    pub(super) node: Arc<str>,
    pub(super) instance_type: Arc<str>,
    pub(super) region: Arc<str>,
    pub(super) provider_id: Arc<str>,
    pub(super) arch: &'static str,
}

/// Labels of OpenCost's allocation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ContainerLabels {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) instance: Arc<str>,
    pub(super) node: Arc<str>,
}

/// A float gauge.
pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

/// A counter of dollars kept exactly in pico-dollars: set to a total
/// computed from the whole duration (never lowered), so it never drifts
/// the way adding float increments would.
#[derive(Clone, Default)]
pub(super) struct DollarCounter(Arc<AtomicU64>);

impl DollarCounter {
    /// Raises the counter to `total` (a lower total is ignored).
    pub(super) fn raise_to(&self, total: Cost) {
        self.0.fetch_max(total.0, Ordering::Relaxed);
    }

    /// Its value.
    pub(super) fn get(&self) -> Cost {
        Cost(self.0.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for DollarCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DollarCounter({})", self.get().dollars())
    }
}

impl TypedMetric for DollarCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for DollarCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get().dollars(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The families of the cost series, registered once per process; each
/// backend gets a [`CostMeter`] from [`CostMetrics::meter`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CostMetrics {
    pub(super) pod_cost: Family<PodLabels, DollarCounter>,
    pub(super) node_cpu_hourly: Family<NodeLabels, FloatGauge>,
    pub(super) node_ram_hourly: Family<NodeLabels, FloatGauge>,
    pub(super) node_total_hourly: Family<NodeLabels, FloatGauge>,
    pub(super) node_is_spot: Family<NodeLabels, Gauge>,
    pub(super) cpu_allocation: Family<ContainerLabels, FloatGauge>,
    pub(super) memory_allocation: Family<ContainerLabels, FloatGauge>,
    opencost: Arc<Registry>,
}

/// Which node a [`CostMeter`] prices, as its series name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterLabels {
    /// The backend's name in the fleet (`backends[].name`): the `backend`
    /// label of the pod cost, and OpenCost's `provider_id`.
    pub backend: String,
    /// The backend's kind (`aws-ecs`): OpenCost's `instance_type`.
    pub kind: String,
    /// The virtual node's name: OpenCost's `instance` and `node`.
    pub node: String,
    /// The backend's region (`us-east-1`), empty if unknown.
    pub region: String,
}

impl CostMetrics {
    /// Registers `skylet_pod_cost_dollars_total` in `registry` (skylet's,
    /// prefix `skylet`), and OpenCost's series in a registry of their own
    /// without prefix ([`CostMetrics::opencost_registry`]): OpenCost
    /// queries them by their exact names, and a prometheus-client
    /// registry passes its prefix on to every sub-registry.
    pub fn register(registry: &mut Registry) -> Self {
        let pod_cost = Family::<PodLabels, DollarCounter>::default();
        registry.register(
            "pod_cost_dollars",
            "What each pod has cost so far in dollars: its billed size at the backend's price, \
             accrued every few seconds while it runs, the minimum billed duration added when it stops",
            pod_cost.clone(),
        );
        let mut opencost = Registry::default();
        let node = || Family::<NodeLabels, FloatGauge>::default();
        let (node_cpu_hourly, node_ram_hourly, node_total_hourly) = (node(), node(), node());
        opencost.register(
            "node_cpu_hourly_cost",
            "Price of one vCPU-hour on this virtual node, in dollars",
            node_cpu_hourly.clone(),
        );
        opencost.register(
            "node_ram_hourly_cost",
            "Price of one GiB-hour of memory on this virtual node, in dollars",
            node_ram_hourly.clone(),
        );
        opencost.register(
            "node_total_hourly_cost",
            "Dollars per hour of the instances running on this virtual node now (an empty virtual node costs nothing)",
            node_total_hourly.clone(),
        );
        let node_is_spot = Family::<NodeLabels, Gauge>::default();
        opencost.register(
            "kubecost_node_is_spot",
            "1 if the virtual node's backend runs on spot capacity",
            node_is_spot.clone(),
        );
        let cpu_allocation = Family::<ContainerLabels, FloatGauge>::default();
        opencost.register(
            "container_cpu_allocation",
            "vCPU billed for each running container: the pod's billed size split by its containers' requests",
            cpu_allocation.clone(),
        );
        let memory_allocation = Family::<ContainerLabels, FloatGauge>::default();
        opencost.register(
            "container_memory_allocation_bytes",
            "Memory billed for each running container in bytes: the pod's billed size split by its containers' requests",
            memory_allocation.clone(),
        );
        Self {
            pod_cost,
            node_cpu_hourly,
            node_ram_hourly,
            node_total_hourly,
            node_is_spot,
            cpu_allocation,
            memory_allocation,
            opencost: Arc::new(opencost),
        }
    }

    /// The registry of OpenCost's series (no prefix, no constant labels),
    /// to encode after skylet's own and before the end marker:
    /// `encode_registry(&mut out, &skylet)`, `encode_registry(&mut out,
    /// &opencost)`, `encode_eof(&mut out)`
    /// (`prometheus_client::encoding::text`).
    pub fn opencost_registry(&self) -> Arc<Registry> {
        self.opencost.clone()
    }

    /// The meter of one backend's node, pricing its pods at `price`; its
    /// node series are set at once. Run [`CostMeter::run`] for its timer.
    pub fn meter(&self, labels: MeterLabels, price: Price, config: Config) -> CostMeter {
        CostMeter::new(self.clone(), labels, price, config)
    }
}
