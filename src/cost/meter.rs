//! [`CostMeter`]: the cost of one backend's pods, kept as they start and
//! stop, exported through the [`CostMetrics`] families.
//!
//! # Guarantees
//! - `started` and `stopped` are idempotent and cheap: one lock, one map
//!   look-up, no allocation when nothing changes. Call them on every
//!   status change.
//! - A pod's cost series never decreases. It is created at 0 when the pod
//!   starts, raised every [`Config::accrue_every`] while it runs and when
//!   it stops (the minimum billed duration then), and removed
//!   [`Config::linger`] after it stopped, so Prometheus scrapes the final
//!   value first.
//! - The series of a pod name continues across pods of that name (a
//!   StatefulSet's `web-0` replaced within the linger time), as a
//!   counter must.
//!
//! # Caveats
//! - Counters restart at 0 with the process (Prometheus' `increase()`
//!   handles the reset); a pod running at a restart is billed from the
//!   `at` given when it is seen again.
//! - The whole backend has one price: a backend that runs some pods on
//!   spot capacity (ECS's FARGATE_SPOT annotation) prices them at the
//!   configured price.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use k8s_openapi::api::core::v1::Pod;
use skylet_provider::{BilledSize, CancellationToken, PodRef};

use super::{
    Config, Price,
    metrics::{
        ContainerLabels, CostMetrics, DollarCounter, FloatGauge, MeterLabels, NodeLabels, PodLabels,
    },
    model::{self, Cost, Instance, Rate},
    now,
};

/// The cost of one backend's pods. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct CostMeter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    families: CostMetrics,
    node: NodeLabels,
    node_total: FloatGauge,
    backend: Arc<str>,
    region: Arc<str>,
    price: Price,
    config: Config,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// One entry per cost series: by namespace, then pod name.
    pods: HashMap<String, HashMap<String, Entry>>,
    /// The rates of the running instances, summed.
    running: Rate,
}

#[derive(Debug)]
struct Entry {
    labels: PodLabels,
    counter: DollarCounter,
    /// The UID of the pod that last started under this name.
    uid: String,
    /// What the finished instances cost.
    finished: Cost,
    running: Option<Running>,
    /// When the last instance stopped.
    stopped: Option<Instant>,
}

#[derive(Debug)]
struct Running {
    instance: Instance,
    containers: Vec<ContainerLabels>,
}

impl CostMeter {
    pub(super) fn new(
        families: CostMetrics,
        labels: MeterLabels,
        price: Price,
        config: Config,
    ) -> Self {
        let backend: Arc<str> = labels.backend.into();
        let region: Arc<str> = labels.region.into();
        let node_name: Arc<str> = labels.node.into();
        let node = NodeLabels {
            instance: node_name.clone(),
            node: node_name,
            instance_type: labels.kind.into(),
            region: region.clone(),
            provider_id: backend.clone(),
            arch: "amd64",
        };
        families
            .node_cpu_hourly
            .get_or_create(&node)
            .set(price.vcpu_hour);
        families
            .node_ram_hourly
            .get_or_create(&node)
            .set(price.memory_gib_hour);
        families
            .node_is_spot
            .get_or_create(&node)
            .set(i64::from(price.spot));
        let node_total = families.node_total_hourly.get_or_create_owned(&node);
        node_total.set(0.0);
        Self {
            inner: Arc::new(Inner {
                families,
                node,
                node_total,
                backend,
                region,
                price,
                config,
                state: Mutex::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend started an instance of `size` for `pod` at `at` (use
    /// [`now`]); its allocation series split `size` over the
    /// pod's containers by their requests. Nothing happens if the pod
    /// already runs.
    pub fn started_pod(&self, pod: &Pod, size: BilledSize, at: Instant) {
        self.start(&PodRef::of(pod), size, at, || model::split(pod, size));
    }

    /// As [`CostMeter::started_pod`] for a pod known by reference only:
    /// one allocation series for the whole pod, with `container=""`.
    /// OpenCost's allocation queries skip such series, so prefer
    /// `started_pod`.
    pub fn started(&self, pod: &PodRef, size: BilledSize, at: Instant) {
        self.start(pod, size, at, || vec![(String::new(), size)]);
    }

    fn start(
        &self,
        pod: &PodRef,
        size: BilledSize,
        at: Instant,
        split: impl FnOnce() -> Vec<(String, BilledSize)>,
    ) {
        let inner = &*self.inner;
        let mut st = self.state();
        let State { pods, running } = &mut *st;
        if let Some(e) = pods.get(&pod.namespace).and_then(|m| m.get(&pod.name))
            && e.uid == pod.uid
            && e.running.is_some()
        {
            return;
        }
        let entry = pods
            .entry(pod.namespace.clone())
            .or_default()
            .entry(pod.name.clone())
            .or_insert_with(|| {
                let labels = PodLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    backend: inner.backend.clone(),
                    region: inner.region.clone(),
                };
                let counter = inner.families.pod_cost.get_or_create_owned(&labels);
                Entry {
                    labels,
                    counter,
                    uid: pod.uid.clone(),
                    finished: Cost::default(),
                    running: None,
                    stopped: None,
                }
            });
        // another pod of this name still running: it stopped when this one started
        inner.stop(entry, running, at);
        let containers = split()
            .into_iter()
            .map(|(container, part)| {
                let labels = ContainerLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    container,
                    instance: inner.node.instance.clone(),
                    node: inner.node.node.clone(),
                };
                #[allow(clippy::cast_precision_loss)] // exact below 2^53
                let (cpu, memory) = (part.cpu_millis as f64 / 1000.0, part.memory_bytes as f64);
                inner
                    .families
                    .cpu_allocation
                    .get_or_create(&labels)
                    .set(cpu);
                inner
                    .families
                    .memory_allocation
                    .get_or_create(&labels)
                    .set(memory);
                labels
            })
            .collect();
        let instance = Instance::new(size, &inner.price, at);
        *running = running.plus(instance.rate);
        inner.node_total.set(running.hourly_dollars());
        pod.uid.clone_into(&mut entry.uid);
        entry.running = Some(Running {
            instance,
            containers,
        });
        entry.stopped = None;
        entry.counter.raise_to(entry.finished);
    }

    /// Whether an instance of `pod` runs as far as the meter knows: a
    /// caller can skip computing the billed size when it does.
    pub fn is_running(&self, pod: &PodRef) -> bool {
        self.state()
            .pods
            .get(&pod.namespace)
            .and_then(|m| m.get(&pod.name))
            .is_some_and(|e| e.uid == pod.uid && e.running.is_some())
    }

    /// The backend's instance of `pod` stopped at `at` (or is gone): it is
    /// billed up to `at`, at least the minimum duration, and its series
    /// are removed (the cost series after [`Config::linger`]). Nothing
    /// happens if the pod does not run, or a newer pod of its name does.
    pub fn stopped(&self, pod: &PodRef, at: Instant) {
        let mut st = self.state();
        let State { pods, running } = &mut *st;
        if let Some(e) = pods
            .get_mut(&pod.namespace)
            .and_then(|m| m.get_mut(&pod.name))
            && e.uid == pod.uid
        {
            self.inner.stop(e, running, at);
        }
    }

    /// Stops, at `at`, every running pod for which `keep` is false: for a
    /// sweep that knows every pod the backend still runs.
    pub fn retain_running(&self, at: Instant, mut keep: impl FnMut(&PodRef) -> bool) {
        let mut st = self.state();
        let State { pods, running } = &mut *st;
        for (namespace, m) in pods.iter_mut() {
            for (name, e) in m.iter_mut() {
                if e.running.is_some()
                    && !keep(&PodRef::new(
                        namespace.as_str(),
                        name.as_str(),
                        e.uid.as_str(),
                    ))
                {
                    self.inner.stop(e, running, at);
                }
            }
        }
    }

    /// Accrues every running pod up to `now`, and removes the cost series
    /// of pods stopped [`Config::linger`] ago. [`CostMeter::run`] calls
    /// this every [`Config::accrue_every`].
    pub fn accrue(&self, now: Instant) {
        let inner = &*self.inner;
        let mut st = self.state();
        for m in st.pods.values_mut() {
            m.retain(|_, e| {
                if let Some(r) = &e.running {
                    e.counter.raise_to(e.finished.plus(r.instance.so_far(now)));
                    return true;
                }
                let gone = e
                    .stopped
                    .is_some_and(|t| now.saturating_duration_since(t) >= inner.config.linger);
                if gone {
                    inner.families.pod_cost.remove(&e.labels);
                }
                !gone
            });
        }
        st.pods.retain(|_, m| !m.is_empty());
    }

    /// Accrues every [`Config::accrue_every`] until `shutdown`, then once
    /// more. The pods keep running in the backend: nothing is stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.config.accrue_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.accrue(now()),
            }
        }
        self.accrue(now());
    }
}

impl Inner {
    /// Ends the running instance of `e` at `at`, if any.
    fn stop(&self, e: &mut Entry, running: &mut Rate, at: Instant) {
        let Some(r) = e.running.take() else {
            return;
        };
        // what the counter shows already is billed, whatever `at` says
        e.finished = e.finished.plus(r.instance.at_stop(at)).max(e.counter.get());
        e.counter.raise_to(e.finished);
        e.stopped = Some(at);
        for c in &r.containers {
            self.families.cpu_allocation.remove(c);
            self.families.memory_allocation.remove(c);
        }
        *running = running.minus(r.instance.rate);
        self.node_total.set(running.hourly_dollars());
    }
}
