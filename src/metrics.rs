//! Prometheus metrics (`skylet_` prefix), served on their own port, off the
//! kubelet API.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use skylet_provider::ErrorClass;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Labels of provider calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `create`, `delete`, `list`, `ping`, `logs`, ...
    pub op: &'static str,
}

/// Labels of provider errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The provider operation.
    pub op: &'static str,
    /// The error class (`transient`, `throttled`, ...).
    pub class: &'static str,
}

/// Labels of pod phase gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Pod phase.
    pub phase: String,
}

/// Labels of kubelet API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route (`containerLogs`, `exec`, ...).
    pub route: &'static str,
    /// HTTP status code.
    pub code: u16,
}

/// All of skylet's metrics.
pub struct Metrics {
    registry: Registry,
    /// Pods on this node by phase (refreshed every sweep).
    pub pods: Family<PhaseLabels, Gauge>,
    /// Latency of provider calls.
    pub provider_latency: Family<OpLabels, Histogram>,
    /// Provider errors by class.
    pub provider_errors: Family<ErrorLabels, Counter>,
    /// Reconciles running or waiting to run.
    pub reconcile_queue: Gauge,
    /// Reconciles done.
    pub reconciles: Counter,
    /// Times the backend throttled us.
    pub throttles: Counter,
    /// Pod status writes to the apiserver.
    pub status_writes: Counter,
    /// Kubelet API requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Pods the backend held at its last sweep.
    pub backend_pods: Gauge,
}

impl Metrics {
    /// A fresh registry for `provider`.
    pub fn new(provider: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "skylet",
            [(
                std::borrow::Cow::Borrowed("provider"),
                std::borrow::Cow::Owned(provider.to_owned()),
            )]
            .into_iter(),
        );
        let pods = Family::<PhaseLabels, Gauge>::default();
        registry.register("pods", "Pods bound to this node, by phase", pods.clone());
        let provider_latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "provider_call_duration_seconds",
            "Latency of provider calls",
            provider_latency.clone(),
        );
        let provider_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Provider call failures, by class",
            provider_errors.clone(),
        );
        let reconcile_queue = Gauge::default();
        registry.register(
            "reconcile_queue_depth",
            "Pod reconciles running or waiting for their turn in a lane",
            reconcile_queue.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Pod reconciles done", reconciles.clone());
        let throttles = Counter::default();
        registry.register(
            "provider_throttles",
            "Times the backend asked skylet to slow down",
            throttles.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "pod_status_writes",
            "Pod status writes to the apiserver",
            status_writes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kubelet_api_requests",
            "Kubelet API requests by route and status",
            requests.clone(),
        );
        let backend_pods = Gauge::default();
        registry.register(
            "backend_pods",
            "Pods the backend held for this node at the last sweep",
            backend_pods.clone(),
        );
        Self {
            backend_pods,
            registry,
            pods,
            provider_latency,
            provider_errors,
            reconcile_queue,
            reconciles,
            throttles,
            status_writes,
            requests,
        }
    }

    /// The registry, for the metric families registered next to skylet's
    /// own (the backends' API metrics).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Records the outcome of a provider call that took `secs`.
    pub fn provider_call(&self, op: &'static str, secs: f64, err: Option<ErrorClass>) {
        self.provider_latency
            .get_or_create(&OpLabels { op })
            .observe(secs);
        if let Some(class) = err {
            self.provider_errors
                .get_or_create(&ErrorLabels {
                    op,
                    class: class.as_str(),
                })
                .inc();
            if class == ErrorClass::Throttled {
                self.throttles.inc();
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing to a String cannot fail
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Times a provider call and records it in `metrics`.
pub async fn timed<T>(
    metrics: &Metrics,
    op: &'static str,
    fut: impl Future<Output = skylet_provider::Result<T>>,
) -> skylet_provider::Result<T> {
    let start = std::time::Instant::now();
    let r = fut.await;
    metrics.provider_call(
        op,
        start.elapsed().as_secs_f64(),
        r.as_ref().err().map(|e| e.class()),
    );
    r
}

/// Serves `/metrics` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

async fn render(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}
