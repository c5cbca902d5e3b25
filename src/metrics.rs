//! Prometheus metrics (`skylet_` prefix), served on their own port, off the
//! kubelet API.
//!
//! One registry per process; every family is labelled with the `backend`
//! (the virtual node's name) and its `provider` kind, so one scrape shows a
//! whole fleet. [`Metrics`] owns the families; each node gets a
//! [`NodeMetrics`] with its labels applied.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `skylet_pods` | backend, provider, phase | pods bound to the node, by phase (each sweep) |
//! | `skylet_backend_pods` | backend, provider | pods the backend held at the last sweep |
//! | `skylet_provider_call_duration_seconds` | backend, provider, op | latency of provider calls |
//! | `skylet_provider_errors_total` | backend, provider, op, class | provider call failures by class |
//! | `skylet_provider_throttles_total` | backend, provider | times the backend asked skylet to slow down |
//! | `skylet_reconcile_queue_depth` | backend, provider | reconciles running or waiting for their lane |
//! | `skylet_reconciles_total` | backend, provider | reconciles done |
//! | `skylet_pod_status_writes_total` | backend, provider | pod status writes |
//! | `skylet_kubelet_api_requests_total` | backend, provider, route, code | kubelet API requests |
//! | `skylet_backend_up` | backend, provider | 1 while the backend answers (after the health hysteresis), else 0 |
//! | `skylet_backend_capacity_exhausted` | backend, provider | 1 while the node carries the capacity-exhausted taint |
//! | `skylet_pods_awaiting_fencing` | backend, provider | deleted pods whose instance the backend has not confirmed gone |
//! | `skylet_pods_displaced_total` | backend, provider, reason | pods that left this backend to be replaced elsewhere: refused for lack of `capacity`, evicted in an `outage` |
//! | `skylet_orphans_deleted_total` | backend, provider | backend pods no Kubernetes pod owned that the sweep deleted (counted once the backend no longer holds them) |
//! | `skylet_failovers_total` | from, to, reason | such pods whose replacement started on another backend ([`crate::failover`]) |
//!
//! The backends' own API use is in `skylet_backend_api_*`
//! ([`skylet_provider::metrics`]).
//!
//! The same port serves health for probes: `/healthz` (liveness: the process
//! answers) and `/readyz` (200 when kube-apiserver answers and the node of
//! every backend this process drives is registered and its backend
//! answers; a standby replica waiting for a node's Lease is ready; 503
//! otherwise; the body lists each check, like kube-apiserver's `?verbose`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use skylet_provider::ErrorClass;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The labels every family carries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The backend (its virtual node's name).
    pub backend: Arc<str>,
    /// The backend's kind (`aws-ecs`, ...).
    pub provider: &'static str,
}

/// Labels of provider calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    /// `create`, `delete`, `list`, `ping`, `logs`, ...
    op: &'static str,
}

/// Labels of provider errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    /// The provider operation.
    op: &'static str,
    /// The error class (`transient`, `throttled`, ...).
    class: &'static str,
}

/// Labels of pod phase gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    /// Pod phase.
    phase: &'static str,
}

/// Labels of kubelet API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    /// Route (`containerLogs`, `exec`, ...).
    route: &'static str,
    /// HTTP status code.
    code: u16,
}

/// The families of skylet's metrics, and the registry they are served from.
pub struct Metrics {
    registry: Registry,
    /// Registries served next to skylet's, without its prefix (OpenCost's
    /// series keep their exact names).
    unprefixed: Vec<Arc<Registry>>,
    pods: Family<PhaseLabels, Gauge>,
    backend_pods: Family<NodeLabels, Gauge>,
    provider_latency: Family<OpLabels, Histogram>,
    provider_errors: Family<ErrorLabels, Counter>,
    throttles: Family<NodeLabels, Counter>,
    reconcile_queue: Family<NodeLabels, Gauge>,
    reconciles: Family<NodeLabels, Counter>,
    status_writes: Family<NodeLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    backend_up: Family<NodeLabels, Gauge>,
    capacity_exhausted: Family<NodeLabels, Gauge>,
    awaiting_fencing: Family<NodeLabels, Gauge>,
    displaced: Family<ReasonLabels, Counter>,
    orphans_deleted: Family<NodeLabels, Counter>,
    /// Each node's `backend_up` and whether this process drives it, for `/readyz`.
    health: std::sync::Mutex<Vec<Health>>,
}

/// A node's name, its `backend_up`, and whether this process drives it.
type Health = (Arc<str>, Gauge, Arc<AtomicBool>);

/// Labels of counters by reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    #[prometheus(flatten)]
    node: NodeLabels,
    /// Why.
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with skylet's families.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skylet");
        let m = Self {
            pods: Family::default(),
            backend_pods: Family::default(),
            provider_latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            provider_errors: Family::default(),
            throttles: Family::default(),
            reconcile_queue: Family::default(),
            reconciles: Family::default(),
            status_writes: Family::default(),
            requests: Family::default(),
            backend_up: Family::default(),
            capacity_exhausted: Family::default(),
            awaiting_fencing: Family::default(),
            displaced: Family::default(),
            orphans_deleted: Family::default(),
            health: std::sync::Mutex::default(),
            registry: Registry::default(),
            unprefixed: Vec::new(),
        };
        registry.register(
            "backend_up",
            "1 while the backend answers its pings, else 0",
            m.backend_up.clone(),
        );
        registry.register(
            "backend_capacity_exhausted",
            "1 while the node carries the capacity-exhausted taint",
            m.capacity_exhausted.clone(),
        );
        registry.register(
            "pods_awaiting_fencing",
            "Deleted pods whose instance the backend has not confirmed gone",
            m.awaiting_fencing.clone(),
        );
        registry.register(
            "pods_displaced",
            "Pods failed on this backend so that their controller replaces them elsewhere",
            m.displaced.clone(),
        );
        registry.register(
            "orphans_deleted",
            "Backend pods no Kubernetes pod owned that the sweep deleted",
            m.orphans_deleted.clone(),
        );
        registry.register("pods", "Pods bound to the node, by phase", m.pods.clone());
        registry.register(
            "backend_pods",
            "Pods the backend held for the node at the last sweep",
            m.backend_pods.clone(),
        );
        registry.register(
            "provider_call_duration_seconds",
            "Latency of provider calls",
            m.provider_latency.clone(),
        );
        registry.register(
            "provider_errors",
            "Provider call failures, by class",
            m.provider_errors.clone(),
        );
        registry.register(
            "provider_throttles",
            "Times the backend asked skylet to slow down",
            m.throttles.clone(),
        );
        registry.register(
            "reconcile_queue_depth",
            "Pod reconciles running or waiting for their turn in a lane",
            m.reconcile_queue.clone(),
        );
        registry.register("reconciles", "Pod reconciles done", m.reconciles.clone());
        registry.register(
            "pod_status_writes",
            "Pod status writes to the apiserver",
            m.status_writes.clone(),
        );
        registry.register(
            "kubelet_api_requests",
            "Kubelet API requests by route and status",
            m.requests.clone(),
        );
        Self { registry, ..m }
    }

    /// The registry, for the families registered next to skylet's own (the
    /// backends' API metrics, cost).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Serves `registry` too, its names as they are.
    pub fn serve_unprefixed(&mut self, registry: Arc<Registry>) {
        self.unprefixed.push(registry);
    }

    /// The metrics of one backend's node.
    pub fn node(&self, backend: &str, provider: &'static str) -> NodeMetrics {
        let labels = NodeLabels {
            backend: Arc::from(backend),
            provider,
        };
        let backend_up = self.backend_up.get_or_create(&labels).clone();
        let serving = Arc::new(AtomicBool::new(false));
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((labels.backend.clone(), backend_up.clone(), serving.clone()));
        NodeMetrics {
            backend_pods: self.backend_pods.get_or_create(&labels).clone(),
            throttles: self.throttles.get_or_create(&labels).clone(),
            reconcile_queue: self.reconcile_queue.get_or_create(&labels).clone(),
            reconciles: self.reconciles.get_or_create(&labels).clone(),
            status_writes: self.status_writes.get_or_create(&labels).clone(),
            backend_up,
            serving,
            capacity_exhausted: self.capacity_exhausted.get_or_create(&labels).clone(),
            awaiting_fencing: self.awaiting_fencing.get_or_create(&labels).clone(),
            orphans_deleted: self.orphans_deleted.get_or_create(&labels).clone(),
            displaced: self.displaced.clone(),
            pods: self.pods.clone(),
            provider_latency: self.provider_latency.clone(),
            provider_errors: self.provider_errors.clone(),
            requests: self.requests.clone(),
            labels,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing to a String cannot fail
        let _ = encode_registry(&mut out, &self.registry);
        for r in &self.unprefixed {
            let _ = encode_registry(&mut out, r);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

/// One node's metrics: [`Metrics`] with its `backend` and `provider` labels.
/// Cheap to clone; clones count together.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    labels: NodeLabels,
    /// Pods the backend held at its last sweep.
    pub backend_pods: Gauge,
    /// Times the backend throttled skylet.
    pub throttles: Counter,
    /// Reconciles running or waiting to run.
    pub reconcile_queue: Gauge,
    /// Reconciles done.
    pub reconciles: Counter,
    /// Pod status writes to the apiserver.
    pub status_writes: Counter,
    /// 1 while the backend answers.
    pub backend_up: Gauge,
    /// Whether this process drives the node (not a standby).
    serving: Arc<AtomicBool>,
    /// 1 while the node carries the capacity-exhausted taint.
    pub capacity_exhausted: Gauge,
    /// Deleted pods whose instance is not confirmed gone.
    pub awaiting_fencing: Gauge,
    /// Orphaned backend pods the sweep deleted.
    pub orphans_deleted: Counter,
    displaced: Family<ReasonLabels, Counter>,
    pods: Family<PhaseLabels, Gauge>,
    provider_latency: Family<OpLabels, Histogram>,
    provider_errors: Family<ErrorLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
}

impl NodeMetrics {
    /// Metrics that are not exported (unit tests).
    pub fn detached(backend: &str) -> Self {
        Metrics::new().node(backend, "test")
    }

    /// Sets the number of pods in `phase`.
    pub fn set_phase(&self, phase: &'static str, pods: i64) {
        let labels = PhaseLabels {
            node: self.labels.clone(),
            phase,
        };
        self.pods.get_or_create(&labels).set(pods);
    }

    /// Counts a pod failed here so that it is replaced elsewhere.
    pub fn displaced(&self, reason: &'static str) {
        let labels = ReasonLabels {
            node: self.labels.clone(),
            reason,
        };
        self.displaced.get_or_create(&labels).inc();
    }

    /// Marks the node as driven by this process, not by another replica:
    /// `/readyz` then waits for it to be registered and its backend up.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// Counts a kubelet API request.
    pub fn request(&self, route: &'static str, code: u16) {
        let labels = RequestLabels {
            node: self.labels.clone(),
            route,
            code,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Records the outcome of a provider call that took `secs`.
    pub fn provider_call(&self, op: &'static str, secs: f64, err: Option<ErrorClass>) {
        let node = self.labels.clone();
        self.provider_latency
            .get_or_create(&OpLabels {
                node: node.clone(),
                op,
            })
            .observe(secs);
        if let Some(class) = err {
            self.provider_errors
                .get_or_create(&ErrorLabels {
                    node,
                    op,
                    class: class.as_str(),
                })
                .inc();
            if class == ErrorClass::Throttled {
                self.throttles.inc();
            }
        }
    }
}

/// Times a provider call and records it in `metrics`.
pub async fn timed<T>(
    metrics: &NodeMetrics,
    op: &'static str,
    fut: impl Future<Output = skylet_provider::Result<T>>,
) -> skylet_provider::Result<T> {
    // a span per call, a child of the pod's reconcile span when in one
    let span = tracing::info_span!("provider_call", op, backend = %metrics.labels.backend, provider = metrics.labels.provider, outcome = tracing::field::Empty);
    let start = std::time::Instant::now();
    let r = tracing::Instrument::instrument(fut, span.clone()).await;
    let class = r.as_ref().err().map(|e| e.class());
    span.record("outcome", class.map_or("ok", ErrorClass::as_str));
    metrics.provider_call(op, start.elapsed().as_secs_f64(), class);
    r
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`; `client`
/// is the home cluster's, whose apiserver `/readyz` checks.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    client: kube::Client,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state((metrics, client));
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

/// Readiness: kube-apiserver answers (`/version`, within 2 s) and every
/// backend is up; the body lists each check.
async fn readyz(State((m, client)): State<(Arc<Metrics>, kube::Client)>) -> impl IntoResponse {
    let mut ok = true;
    let mut body = String::new();
    match tokio::time::timeout(Duration::from_secs(2), client.apiserver_version()).await {
        Ok(Ok(_)) => body.push_str("[+]apiserver ok\n"),
        Ok(Err(e)) => {
            ok = false;
            body.push_str(&format!("[-]apiserver failed: {e}\n"));
        }
        Err(_) => {
            ok = false;
            body.push_str("[-]apiserver failed: no answer within 2s\n");
        }
    }
    let backends = m
        .health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (name, up, serving) in backends {
        if !serving.load(Ordering::Relaxed) {
            body.push_str(&format!("[+]backend {name} ok: standby\n"));
        } else if up.get() == 1 {
            body.push_str(&format!("[+]backend {name} ok\n"));
        } else {
            ok = false;
            body.push_str(&format!(
                "[-]backend {name} failed: not registered yet, or not answering\n"
            ));
        }
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn render(State((m, _)): State<(Arc<Metrics>, kube::Client)>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_per_metric_labelled_by_backend() {
        let m = Metrics::new();
        let (a, b) = (
            m.node("ecs-east", "aws-ecs"),
            m.node("aci-west", "azure-aci"),
        );
        a.status_writes.inc();
        b.status_writes.inc();
        b.status_writes.inc();
        a.set_phase("Running", 3);
        b.provider_call("create", 0.2, Some(ErrorClass::Throttled));
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE skylet_pod_status_writes counter")
                .count(),
            1
        );
        assert!(
            text.contains(
                "skylet_pod_status_writes_total{backend=\"aci-west\",provider=\"azure-aci\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "skylet_pods{backend=\"ecs-east\",provider=\"aws-ecs\",phase=\"Running\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "skylet_provider_throttles_total{backend=\"aci-west\",provider=\"azure-aci\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("skylet_provider_errors_total{backend=\"aci-west\",provider=\"azure-aci\",op=\"create\",class=\"throttled\"} 1"), "{text}");
    }
}
