//! Resolution done once in the core, so every backend receives a ready pod.
//!
//! A backend gets a [`ResolvedPod`]: the pod plus, per container, its
//! environment as final values and, per configMap/secret/downwardAPI/projected
//! volume, its files as final contents. This module computes them the way the
//! kubelet does (`makeEnvironmentVariables` in `pkg/kubelet/kubelet_pods.go`,
//! the volume plugins in `pkg/volume/{configmap,secret,downwardapi,projected}`),
//! so a pod behaves the same on skylet as on any node.
//!
//! # Design
//! [`resolve`] runs in three steps, a module each:
//! 1. [`refs`]: `References::of` walks the pod spec and collects every
//!    ConfigMap, Secret and service-account token it needs (pure).
//! 2. [`fetch`](mod@fetch) asks the [`Source`] for each of them once,
//!    concurrently: the only asynchronous step, and the only one that talks
//!    to the API server.
//! 3. [`build`](mod@build) turns the pod and the fetched objects into a
//!    [`ResolvedPod`] (pure): service links, `envFrom`, `env` with `$(VAR)`
//!    expansion ([`env`](mod@env)), downward-API fields and resources
//!    ([`downward`]), volume files ([`volumes`]).
//!
//! Values that come from a Secret or are tokens are
//! [`Value::secret`](skylet_provider::Value::secret), and so is every
//! `$(VAR)` expansion that substitutes one; nothing here logs a value.
//!
//! Service links follow the kubelet: with `enableServiceLinks` unset or true,
//! every Service of the pod's namespace with a cluster IP; and always, even
//! when it is false, the `kubernetes` Service of namespace `default`, which is
//! how in-cluster clients find the API server.
//!
//! Where skylet differs from a kubelet:
//! - `status.podIP` and `status.podIPs` are the pod's status as Kubernetes has
//!   it at resolution time, usually empty: the backend assigns the address
//!   after it receives the pod. `status.hostIP`/`status.hostIPs` are the
//!   node's IP ([`NodeInfo::ip`]).
//! - A `limits.ephemeral-storage` reference to a container without that limit
//!   is refused: skylet knows no node allocatable for it.
//! - `fileKeyRef`, `clusterTrustBundle` and `podCertificate` sources are
//!   refused as unsupported (the pod fails, with the field named).
//! - Service-account token files have the projected volume's `defaultMode`;
//!   the kubelet's `fsGroup` ownership change is the backend's affair.
//!
//! # Errors
//! A missing ConfigMap, Secret or key is [retriable](Error::retriable): the
//! object may be created later, and the core tries again with backoff. A
//! source skylet cannot serve or an invalid reference is not. Either way
//! [`Error::reason`] is the kubelet's reason (`CreateContainerConfigError` for
//! the environment, `FailedMount` for volumes) and the message names the field
//! and what to change.
//!
//! # RBAC
//! - `configmaps`: get
//! - `secrets`: get
//! - `serviceaccounts/token`: create
//! - `services`: list, watch (the reflector behind [`KubeSource`])

mod build;
mod downward;
mod env;
mod fetch;
#[cfg(test)]
mod fixtures;
mod refs;
mod volumes;

use jiff::Timestamp;
use k8s_openapi::api::{
    authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec, TokenRequestStatus,
    },
    core::v1::{ConfigMap, Container, Pod, PodSpec, Secret, Service, ServiceAccount},
};
use kube::{Api, api::PostParams, runtime::reflector::Store};
use skylet_provider::{PodRef, ResolvedPod};

use build::{Inputs, build};
use env::service_env;
use fetch::{fetch, refresh_at};
use refs::References;

/// Where resolution reads objects from. Implemented for kube::Client in this
/// module ([`KubeSource`]), and by an in-memory fake in the unit tests.
pub trait Source: Send + Sync {
    /// A ConfigMap, `None` when it does not exist.
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, kube::Error>> + Send;

    /// A Secret, `None` when it does not exist.
    fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, kube::Error>> + Send;

    /// Services of a namespace (for service-link env vars); the real impl
    /// reads a reflector store, no API call.
    fn services(&self, ns: &str) -> Vec<Service>;

    /// TokenRequest for the pod's service account, bound to the pod.
    fn token(
        &self,
        ns: &str,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
        pod: &PodRef,
    ) -> impl Future<Output = Result<TokenRequestStatus, kube::Error>> + Send;
}

/// The [`Source`] of a running skylet: the API server, and a reflector store
/// of Services.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
    services: Store<Service>,
}

impl KubeSource {
    /// A source reading through `client`, with `services` a reflector store of
    /// the Services of all namespaces.
    ///
    /// Like the kubelet, wait for the store to be ready
    /// ([`Store::wait_until_ready`]) before resolving the first pod, or early
    /// pods miss `KUBERNETES_SERVICE_HOST` and their other service links.
    pub fn new(client: kube::Client, services: Store<Service>) -> Self {
        Self { client, services }
    }
}

impl Source for KubeSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
    }

    fn services(&self, ns: &str) -> Vec<Service> {
        self.services
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .into_iter()
            .map(|s| Service::clone(&s))
            .collect()
    }

    async fn token(
        &self,
        ns: &str,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
        pod: &PodRef,
    ) -> Result<TokenRequestStatus, kube::Error> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // empty: the API server's own audiences
                audiences: Some(audience.map(|a| vec![a.to_owned()]).unwrap_or_default()),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name.clone()),
                    uid: Some(pod.uid.clone()),
                }),
            }),
            ..TokenRequest::default()
        };
        let response = Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .create_token_request(service_account, &PostParams::default(), &request)
            .await?;
        Ok(response.status.unwrap_or_default())
    }
}

/// What resolution needs to know of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node name (`spec.nodeName` when a pod lacks it).
    pub name: String,
    /// The node IP: `status.hostIP` and `status.hostIPs`.
    pub ip: String,
    /// Allocatable CPU as a quantity, e.g. `"1000"`: `limits.cpu` of a
    /// container without a CPU limit.
    pub allocatable_cpu: String,
    /// Allocatable memory as a quantity, e.g. `"4Ti"`: `limits.memory` of a
    /// container without a memory limit.
    pub allocatable_memory: String,
    /// CSI drivers whose inline volumes name a Secret of the pod's namespace
    /// in a volume attribute, as `(driver, attribute)`: the backend's
    /// [`Provider::csi_secret_attributes`](skylet_provider::Provider::csi_secret_attributes).
    /// That Secret's keys become the volume's files, as do those of a
    /// `nodePublishSecretRef` of any driver.
    pub csi_secret_attributes: &'static [(&'static str, &'static str)],
}

/// A resolved pod and when to resolve it again.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The pod with its environment and volume files.
    pub pod: ResolvedPod,
    /// when a service-account token must be refreshed (80% of its TTL), if any
    pub refresh_at: Option<Timestamp>,
}

/// What a failed reference was for; decides [`Error::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A container's environment.
    Env,
    /// A volume.
    Volume,
}

/// Why a pod could not be resolved. Messages name the field (as in
/// `spec.containers[0].env[2].valueFrom.configMapKeyRef`) and say what to
/// change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ConfigMap or Secret the pod needs does not exist.
    #[error(
        "{field}: {kind} {namespace}/{name} not found; create it in namespace {namespace}, \
         or set `optional: true` on the reference"
    )]
    MissingObject {
        usage: Usage,
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },

    /// A ConfigMap or Secret the pod needs lacks a key.
    #[error(
        "{field}: {kind} {namespace}/{name} has no key {key:?}; add the key to the {kind}, \
         or set `optional: true` on the reference"
    )]
    MissingKey {
        usage: Usage,
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },

    /// Reading a ConfigMap or Secret failed.
    #[error("{field}: reading {kind} {namespace}/{name} failed: {}{hint}", describe(.cause))]
    Fetch {
        usage: Usage,
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        cause: Box<kube::Error>,
        /// What to do about it, when known (starts with `; `).
        hint: String,
    },

    /// Requesting a service-account token failed.
    #[error(
        "{field}: requesting a token for service account {namespace}/{service_account} failed: {}{hint}",
        describe(.cause)
    )]
    Token {
        field: String,
        namespace: String,
        service_account: String,
        #[source]
        cause: Box<kube::Error>,
        /// What to do about it, when known (starts with `; `).
        hint: String,
    },

    /// The API server answered a TokenRequest without a token.
    #[error(
        "{field}: the API server returned no token for service account {namespace}/{service_account}"
    )]
    EmptyToken {
        field: String,
        namespace: String,
        service_account: String,
    },

    /// The pod uses something skylet cannot provide.
    #[error("{field}: {what} is not supported by skylet; remove it from the pod spec")]
    Unsupported {
        usage: Usage,
        field: String,
        what: &'static str,
    },

    /// The pod spec is invalid in a way the API server did not catch.
    #[error("{field}: {problem}")]
    Invalid {
        usage: Usage,
        field: String,
        problem: String,
    },
}

impl Error {
    /// PascalCase reason for the pod status/Event, e.g. "CreateContainerConfigError"
    pub fn reason(&self) -> &'static str {
        match self.usage() {
            Usage::Env => "CreateContainerConfigError",
            Usage::Volume => "FailedMount",
        }
    }

    /// true when waiting may fix it (a missing object may appear); false when
    /// the pod spec itself is unsupported/invalid
    pub fn retriable(&self) -> bool {
        !matches!(self, Self::Unsupported { .. } | Self::Invalid { .. })
    }

    /// What the failed reference was for.
    pub fn usage(&self) -> Usage {
        match self {
            Self::MissingObject { usage, .. }
            | Self::MissingKey { usage, .. }
            | Self::Fetch { usage, .. }
            | Self::Unsupported { usage, .. }
            | Self::Invalid { usage, .. } => *usage,
            Self::Token { .. } | Self::EmptyToken { .. } => Usage::Volume,
        }
    }
}

/// An API error as a short sentence (kube's `Display` of an API error
/// includes the whole `Status` debug output).
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// Resolves every reference of `pod`: its containers' environment and the
/// contents of its configMap, secret, downwardAPI and projected volumes.
///
/// # Errors
/// When a referenced object or key is missing, reading it fails, or the pod
/// uses something skylet does not support; see [`Error::retriable`].
pub async fn resolve<S: Source>(source: &S, node: &NodeInfo, pod: &Pod) -> Result<Resolved, Error> {
    let refs = References::of(pod, node.csi_secret_attributes);
    let fetched = fetch(source, pod, &refs).await?;
    let ns = namespace(pod);
    let links = spec(pod).enable_service_links.unwrap_or(true);
    let ns_services = if links {
        source.services(ns)
    } else {
        Vec::new()
    };
    let default_services = if ns == "default" && links {
        ns_services.clone()
    } else {
        source.services("default")
    };
    let services = service_env(links, &ns_services, &default_services);
    let resolved = build(
        &Inputs {
            pod,
            node,
            fetched: &fetched,
        },
        &services,
    )?;
    Ok(Resolved {
        pod: resolved,
        refresh_at: refresh_at(&fetched.tokens, Timestamp::now()),
    })
}
// --- pod helpers -------------------------------------------------------------

fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The pod's service account (`default` when the admission plugin did not set
/// one).
fn service_account(pod: &Pod) -> &str {
    let spec = spec(pod);
    #[allow(deprecated)]
    let legacy = spec.service_account.as_deref();
    spec.service_account_name
        .as_deref()
        .or(legacy)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Init containers then containers, with their field paths.
fn containers(pod: &Pod) -> impl Iterator<Item = (String, &Container)> {
    let spec = spec(pod);
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c));
    let main = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.containers[{i}]"), c));
    init.chain(main)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::fixtures::*;
    use super::*;

    #[tokio::test]
    async fn unsupported_sources_are_refused_for_good() {
        let fake = Fake::default();
        let pod = pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "a", "emptyDir": {}},
            {"name": "b", "emptyDir": {}},
            {"name": "bundle", "projected": {"sources": [
                {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"clusterTrustBundle": {"signerName": "example.com/signer", "path": "bundle.pem"}}]}}]}));
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(!err.retriable());
        assert_eq!(err.reason(), "FailedMount");
        assert_eq!(
            err.to_string(),
            "spec.volumes[2].projected.sources[1].clusterTrustBundle: a clusterTrustBundle projection is not \
             supported by skylet; remove it from the pod spec"
        );

        let pod = self::pod(
            json!({"containers": [{"name": "app"}], "volumes": [{"name": "cert", "projected": {
            "sources": [{"podCertificate": {
                "signerName": "example.com/signer", "keyType": "ED25519", "credentialBundlePath": "c"}}]}}]}),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(!err.retriable());
        assert!(
            err.to_string()
                .starts_with("spec.volumes[0].projected.sources[0].podCertificate: "),
            "{err}"
        );

        let pod = env_pod(
            json!([]),
            json!([{"name": "F", "valueFrom": {"fileKeyRef": {
            "volumeName": "v", "path": "env", "key": "F"}}}]),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(!err.retriable());
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert!(
            err.to_string()
                .starts_with("spec.containers[0].env[0].valueFrom.fileKeyRef: "),
            "{err}"
        );
    }

    #[test]
    fn resolve_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (fake, info, pod) = (Fake::default(), node(), pod(json!({"containers": []})));
        assert_send(&resolve(&fake, &info, &pod));
        let _: fn(KubeSource) = |s| assert_send(&resolve(&s, &node(), &Pod::default()));
    }
}
