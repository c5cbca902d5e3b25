//! Metrics of a backend's cloud API use, with one name and label scheme for
//! every backend (`skylet_backend_api_*`), so one dashboard and one alert
//! serve ECS, ACI and remote clusters alike.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `skylet_backend_api_calls_total` | backend, service, operation | operations skylet asked for (retries not counted) |
//! | `skylet_backend_api_requests_total` | backend, service, operation, outcome | requests sent, retries included, by outcome |
//! | `skylet_backend_api_errors_total` | backend, service, operation, code | operations that failed after their retries, by the API's error code |
//! | `skylet_backend_sweep_api_calls` | backend, service, operation | calls the last sweep made |
//!
//! `outcome` is `ok`, `throttled`, `client_error`, `server_error` or
//! `network` (no response). `service` names the API (`ecs`, `logs`,
//! `secretsmanager`, `arm`, `kubernetes`).

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are snake_case
pub enum Outcome {
    /// A 2xx/3xx answer.
    ok,
    /// Throttled (HTTP 429, or the API's throttling error code).
    throttled,
    /// Another 4xx.
    client_error,
    /// A 5xx.
    server_error,
    /// No answer: connection refused or reset, timeout.
    network,
}

impl Outcome {
    /// The outcome of an HTTP status (`None`: no answer).
    pub fn of_status(status: Option<u16>) -> Self {
        match status {
            None => Self::network,
            Some(429) => Self::throttled,
            Some(s) if s < 400 => Self::ok,
            Some(s) if s < 500 => Self::client_error,
            Some(_) => Self::server_error,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    backend: Arc<str>,
    service: &'static str,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: Arc<str>,
    service: &'static str,
    operation: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    backend: Arc<str>,
    service: &'static str,
    operation: String,
    code: String,
}

/// The metric families, registered once per process and shared by every
/// backend ([`BackendApiMetrics::for_backend`]).
#[derive(Clone, Debug, Default)]
pub struct BackendApiMetrics {
    calls: Family<OpLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    sweep_calls: Family<OpLabels, Gauge>,
}

impl BackendApiMetrics {
    /// The families, registered in `registry` (under its `skylet_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "backend_api_calls",
            "Backend API operations skylet called (retries not counted)",
            m.calls.clone(),
        );
        registry.register(
            "backend_api_requests",
            "Backend API requests sent, retries included, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "backend_api_errors",
            "Backend API operations that failed after their retries, by error code",
            m.errors.clone(),
        );
        registry.register(
            "backend_sweep_api_calls",
            "Backend API calls the last sweep made, by operation",
            m.sweep_calls.clone(),
        );
        m
    }

    /// The handle of one backend.
    pub fn for_backend(&self, backend: &str) -> ApiMetrics {
        ApiMetrics {
            families: self.clone(),
            backend: Arc::from(backend),
        }
    }
}

/// One backend's view of [`BackendApiMetrics`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    families: BackendApiMetrics,
    backend: Arc<str>,
}

impl ApiMetrics {
    /// Counters that are not exported (unit tests of a backend).
    pub fn detached(backend: &str) -> Self {
        BackendApiMetrics::default().for_backend(backend)
    }

    fn op(&self, service: &'static str, operation: &str) -> OpLabels {
        OpLabels {
            backend: self.backend.clone(),
            service,
            operation: operation.to_owned(),
        }
    }

    /// Counts one operation skylet asked for.
    pub fn call(&self, service: &'static str, operation: &str) {
        self.families
            .calls
            .get_or_create(&self.op(service, operation))
            .inc();
    }

    /// Counts one request sent (an attempt) and how it ended.
    pub fn request(&self, service: &'static str, operation: &str, outcome: Outcome) {
        let labels = RequestLabels {
            backend: self.backend.clone(),
            service,
            operation: operation.to_owned(),
            outcome,
        };
        self.families.requests.get_or_create(&labels).inc();
    }

    /// Counts an operation that failed after its retries, by error code.
    pub fn error(&self, service: &'static str, operation: &str, code: &str) {
        let labels = ErrorLabels {
            backend: self.backend.clone(),
            service,
            operation: operation.to_owned(),
            code: code.to_owned(),
        };
        self.families.errors.get_or_create(&labels).inc();
    }

    /// Records the calls of `operation` the last sweep made.
    pub fn sweep_calls(&self, service: &'static str, operation: &str, calls: u64) {
        let n = i64::try_from(calls).unwrap_or(i64::MAX);
        self.families
            .sweep_calls
            .get_or_create(&self.op(service, operation))
            .set(n);
    }

    /// Operations of this name called so far.
    pub fn calls(&self, service: &'static str, operation: &str) -> u64 {
        self.families
            .calls
            .get_or_create(&self.op(service, operation))
            .get()
    }

    /// Requests of this operation that ended with `outcome` so far.
    pub fn requests(&self, service: &'static str, operation: &str, outcome: Outcome) -> u64 {
        let labels = RequestLabels {
            backend: self.backend.clone(),
            service,
            operation: operation.to_owned(),
            outcome,
        };
        self.families.requests.get_or_create(&labels).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_per_name_labelled_by_backend() {
        let mut registry = Registry::with_prefix("skylet");
        let families = BackendApiMetrics::register(&mut registry);
        let (a, b) = (
            families.for_backend("ecs-east"),
            families.for_backend("aci-west"),
        );
        a.call("ecs", "RunTask");
        a.request("ecs", "RunTask", Outcome::of_status(Some(400)));
        b.request(
            "arm",
            "ContainerGroups_CreateOrUpdate",
            Outcome::of_status(Some(429)),
        );
        b.sweep_calls("arm", "ContainerGroups_ListByResourceGroup", 3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            text.matches("# TYPE skylet_backend_api_requests counter")
                .count(),
            1
        );
        assert!(text.contains(
            "skylet_backend_api_requests_total{backend=\"aci-west\",service=\"arm\",operation=\"ContainerGroups_CreateOrUpdate\",outcome=\"throttled\"} 1"
        ), "{text}");
        assert!(text.contains(
            "skylet_backend_sweep_api_calls{backend=\"aci-west\",service=\"arm\",operation=\"ContainerGroups_ListByResourceGroup\"} 3"
        ), "{text}");
        assert_eq!(a.calls("ecs", "RunTask"), 1);
        assert_eq!(a.requests("ecs", "RunTask", Outcome::client_error), 1);
    }
}
