//! The remote cluster's API calls, counted with the shared
//! `skylet_backend_api_*` metrics under service `kubernetes`.
//!
//! Operations are named by the Kubernetes OpenAPI `operationId`
//! (`createCoreV1NamespacedPod`), as ACI's are by their ARM operationId. The
//! client does not retry, so each operation is one request. The long-running
//! watches ([`Provider::run`](skylet_provider::Provider::run)) are not
//! counted, nor are the reads of home objects (another cluster's API).

use std::future::Future;

use kube::client::UpgradeConnectionError;
use skylet_provider::{ApiMetrics, metrics::Outcome};

/// The `service` label of every call.
pub(crate) const SERVICE: &str = "kubernetes";

/// Operation names: OpenAPI operationIds of the calls the backend makes.
pub(crate) mod op {
    /// `GET /version` (ping).
    pub(crate) const VERSION: &str = "getCodeVersion";
    /// `POST /api/v1/namespaces`.
    pub(crate) const CREATE_NAMESPACE: &str = "createCoreV1Namespace";
    /// `POST /api/v1/namespaces/{ns}/pods`.
    pub(crate) const CREATE_POD: &str = "createCoreV1NamespacedPod";
    /// `GET /api/v1/namespaces/{ns}/pods/{name}`.
    pub(crate) const READ_POD: &str = "readCoreV1NamespacedPod";
    /// `PATCH /api/v1/namespaces/{ns}/pods/{name}` (an image change).
    pub(crate) const PATCH_POD: &str = "patchCoreV1NamespacedPod";
    /// `PATCH /api/v1/namespaces/{ns}/pods/{name}/ephemeralcontainers`.
    pub(crate) const PATCH_EPHEMERAL: &str = "patchCoreV1NamespacedPodEphemeralcontainers";
    /// `PATCH /api/v1/namespaces/{ns}/pods/{name}/resize`.
    pub(crate) const PATCH_RESIZE: &str = "patchCoreV1NamespacedPodResize";
    /// `DELETE /api/v1/namespaces/{ns}/pods/{name}`.
    pub(crate) const DELETE_POD: &str = "deleteCoreV1NamespacedPod";
    /// `GET /api/v1/pods?labelSelector=..` (the sweep).
    pub(crate) const LIST_PODS: &str = "listCoreV1PodForAllNamespaces";
    /// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
    pub(crate) const READ_POD_LOG: &str = "readCoreV1NamespacedPodLog";
    /// `GET /api/v1/namespaces/{ns}/pods/{name}/exec` (WebSocket).
    pub(crate) const EXEC: &str = "connectCoreV1GetNamespacedPodExec";
    /// `GET /api/v1/namespaces/{ns}/pods/{name}/attach` (WebSocket).
    pub(crate) const ATTACH: &str = "connectCoreV1GetNamespacedPodAttach";
    /// `GET /api/v1/namespaces/{ns}/pods/{name}/portforward` (WebSocket).
    pub(crate) const PORT_FORWARD: &str = "connectCoreV1GetNamespacedPodPortforward";
    /// Server-side apply of the home token Secret.
    pub(crate) const PATCH_SECRET: &str = "patchCoreV1NamespacedSecret";
    /// Reads of reflected copies.
    pub(crate) const READ_CONFIG_MAP: &str = "readCoreV1NamespacedConfigMap";
    /// See [`READ_CONFIG_MAP`].
    pub(crate) const READ_SECRET: &str = "readCoreV1NamespacedSecret";
    /// Creates of reflected copies.
    pub(crate) const CREATE_CONFIG_MAP: &str = "createCoreV1NamespacedConfigMap";
    /// See [`CREATE_CONFIG_MAP`].
    pub(crate) const CREATE_SECRET: &str = "createCoreV1NamespacedSecret";
    /// Updates of reflected copies.
    pub(crate) const REPLACE_CONFIG_MAP: &str = "replaceCoreV1NamespacedConfigMap";
    /// See [`REPLACE_CONFIG_MAP`].
    pub(crate) const REPLACE_SECRET: &str = "replaceCoreV1NamespacedSecret";
    /// Deletes of Service reflection anchors.
    pub(crate) const DELETE_CONFIG_MAP: &str = "deleteCoreV1NamespacedConfigMap";
    /// Reflected Services (`crate::services`).
    pub(crate) const READ_SERVICE: &str = "readCoreV1NamespacedService";
    /// See [`READ_SERVICE`].
    pub(crate) const CREATE_SERVICE: &str = "createCoreV1NamespacedService";
    /// See [`READ_SERVICE`].
    pub(crate) const REPLACE_SERVICE: &str = "replaceCoreV1NamespacedService";
    /// See [`READ_SERVICE`].
    pub(crate) const DELETE_SERVICE: &str = "deleteCoreV1NamespacedService";
    /// Reflected EndpointSlices.
    pub(crate) const READ_ENDPOINT_SLICE: &str = "readDiscoveryV1NamespacedEndpointSlice";
    /// See [`READ_ENDPOINT_SLICE`].
    pub(crate) const CREATE_ENDPOINT_SLICE: &str = "createDiscoveryV1NamespacedEndpointSlice";
    /// See [`READ_ENDPOINT_SLICE`].
    pub(crate) const REPLACE_ENDPOINT_SLICE: &str = "replaceDiscoveryV1NamespacedEndpointSlice";
    /// See [`READ_ENDPOINT_SLICE`].
    pub(crate) const DELETE_ENDPOINT_SLICE: &str = "deleteDiscoveryV1NamespacedEndpointSlice";
    /// Whether the remote cluster serves the MCS API (discovery).
    pub(crate) const MCS_RESOURCES: &str = "getMulticlusterXK8sIoV1alpha1APIResources";
    /// ServiceImports (`--remote-service-export mcs`).
    pub(crate) const READ_SERVICE_IMPORT: &str =
        "readMulticlusterXK8sIoV1alpha1NamespacedServiceImport";
    /// See [`READ_SERVICE_IMPORT`].
    pub(crate) const CREATE_SERVICE_IMPORT: &str =
        "createMulticlusterXK8sIoV1alpha1NamespacedServiceImport";
    /// See [`READ_SERVICE_IMPORT`].
    pub(crate) const REPLACE_SERVICE_IMPORT: &str =
        "replaceMulticlusterXK8sIoV1alpha1NamespacedServiceImport";
    /// See [`READ_SERVICE_IMPORT`].
    pub(crate) const DELETE_SERVICE_IMPORT: &str =
        "deleteMulticlusterXK8sIoV1alpha1NamespacedServiceImport";
}

/// Counts the calls it makes. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Calls {
    metrics: ApiMetrics,
}

impl Calls {
    pub(crate) fn new(metrics: ApiMetrics) -> Self {
        Self { metrics }
    }

    /// Makes one call of operation `op` and counts it: the call, the
    /// request with its outcome, and the error code if it failed.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        self.metrics.call(SERVICE, op);
        let r = call.await;
        let (outcome, code) = match &r {
            Ok(_) => (Outcome::ok, None),
            Err(e) => {
                let (status, code) = classify(e);
                (Outcome::of_status(status), Some(code))
            }
        };
        self.metrics.request(SERVICE, op, outcome);
        if let Some(code) = code {
            self.metrics.error(SERVICE, op, &code);
        }
        r
    }

    /// Records a request of `op` that got no answer in time (its
    /// [`Calls::run`] future was dropped after counting the call).
    pub(crate) fn timed_out(&self, op: &'static str) {
        self.metrics.request(SERVICE, op, Outcome::network);
        self.metrics.error(SERVICE, op, "Timeout");
    }

    /// Records the calls of each operation a sweep made.
    pub(crate) fn sweep(&self, calls: &[(&'static str, u64)]) {
        for (op, n) in calls {
            self.metrics.sweep_calls(SERVICE, op, *n);
        }
    }
}

/// The HTTP status of a failed call (`None`: no answer) and its error code:
/// the API's `reason` (`NotFound`, `AlreadyExists`, `Forbidden`, ...).
fn classify(e: &kube::Error) -> (Option<u16>, String) {
    match e {
        kube::Error::Api(s) => {
            let code = if s.reason.is_empty() {
                s.code.to_string()
            } else {
                s.reason.clone()
            };
            (Some(s.code), code)
        }
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(status)) => {
            (Some(status.as_u16()), status.as_u16().to_string())
        }
        // an answer that could not be read
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => {
            (Some(200), "InvalidResponse".into())
        }
        kube::Error::Auth(_) => (None, "Auth".into()),
        _ => (None, "Network".into()),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    #[tokio::test]
    async fn calls_are_counted_with_their_outcome() {
        let metrics = ApiMetrics::detached("kubernetes");
        let calls = Calls::new(metrics.clone());
        let ok: Result<(), kube::Error> = calls.run(op::CREATE_POD, async { Ok(()) }).await;
        assert!(ok.is_ok());
        let conflict = Status::failure("exists", "AlreadyExists").with_code(409);
        let _ = calls
            .run(op::CREATE_POD, async {
                Err::<(), _>(kube::Error::Api(Box::new(conflict)))
            })
            .await;
        assert_eq!(metrics.calls(SERVICE, op::CREATE_POD), 2);
        assert_eq!(metrics.requests(SERVICE, op::CREATE_POD, Outcome::ok), 1);
        assert_eq!(
            metrics.requests(SERVICE, op::CREATE_POD, Outcome::client_error),
            1
        );
    }
}
