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
//! [`resolve`] runs in three steps:
//! 1. `References::of` walks the pod spec and collects every ConfigMap,
//!    Secret and service-account token it needs (pure).
//! 2. `fetch` asks the [`Source`] for each of them once, concurrently: the
//!    only asynchronous step, and the only one that talks to the API server.
//! 3. `build` turns the pod and the fetched objects into a [`ResolvedPod`]
//!    (pure): service links, `envFrom`, `env` with `$(VAR)` expansion,
//!    downward-API fields and resources, volume files.
//!
//! Values that come from a Secret or are tokens are [`Value::secret`], and so
//! is every `$(VAR)` expansion that substitutes one; nothing here logs a value.
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

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::future::{try_join_all, try_join3};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec, TokenRequestStatus,
    },
    core::v1::{
        CSIVolumeSource, ConfigMap, Container, DownwardAPIVolumeFile, EnvVar, KeyToPath,
        ObjectFieldSelector, Pod, PodSpec, ResourceFieldSelector, ResourceRequirements, Secret,
        Service, ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeProjection,
    },
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::{Api, api::PostParams, runtime::reflector::Store};
use skylet_provider::quantity::{Quantity, ceil_div};
use skylet_provider::{PodRef, ResolvedPod, Value, VolumeFile};

/// File mode of volume files when the pod sets none (the API server's default
/// for `defaultMode`).
const DEFAULT_MODE: u32 = 0o644;

/// Lifetime of a projected service-account token when the pod sets none.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// A token is refreshed at the latest this long after it was issued, however
/// long it lives (the kubelet token manager's `maxTTL`).
const MAX_TOKEN_AGE: SignedDuration = SignedDuration::from_hours(24);

/// Where resolution reads objects from. Implemented for kube::Client in this
/// file ([`KubeSource`]), and by an in-memory fake in the unit tests.
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

fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

/// Resolves every reference of `pod`: its containers' environment and the
/// contents of its configMap, secret, downwardAPI and projected volumes.
///
/// # Errors
/// When a referenced object or key is missing, reading it fails, or the pod
/// uses something skylet does not support; see [`Error::retriable`].
pub async fn resolve<S: Source>(source: &S, node: &NodeInfo, pod: &Pod) -> Result<Resolved, Error> {
    let refs = References::of(pod);
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

// ---------------------------------------------------------------------------
// Step 1: what the pod references

/// A projected service-account token, as requested; one per distinct pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TokenKey {
    audience: Option<String>,
    expiration_seconds: i64,
}

impl TokenKey {
    fn of(p: &ServiceAccountTokenProjection) -> Self {
        Self {
            audience: p.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: p.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
        }
    }
}

/// The first reference to an object, for the messages of fetch errors.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    usage: Usage,
    field: String,
}

/// Every object a pod references, by name, with its first reference. Volumes
/// come first, as the kubelet mounts volumes before it starts containers.
#[derive(Debug, Default, PartialEq, Eq)]
struct References {
    config_maps: BTreeMap<String, Origin>,
    secrets: BTreeMap<String, Origin>,
    tokens: BTreeMap<TokenKey, Origin>,
}

impl References {
    fn of(pod: &Pod) -> Self {
        let mut refs = Self::default();
        for (i, volume) in spec(pod).volumes.iter().flatten().enumerate() {
            refs.add_volume(volume, &format!("spec.volumes[{i}]"));
        }
        for (field, container) in containers(pod) {
            refs.add_container(container, &field);
        }
        for (i, r) in spec(pod).image_pull_secrets.iter().flatten().enumerate() {
            note(&mut refs.secrets, &r.name, || Origin {
                usage: Usage::Volume,
                field: format!("spec.imagePullSecrets[{i}]"),
            });
        }
        refs
    }

    fn add_volume(&mut self, volume: &Volume, field: &str) {
        let at = |f: &str| Origin {
            usage: Usage::Volume,
            field: format!("{field}.{f}"),
        };
        if let Some(cm) = &volume.config_map {
            note(&mut self.config_maps, &cm.name, || at("configMap"));
        }
        if let Some(name) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            note(&mut self.secrets, name, || at("secret"));
        }
        if let Some((name, f)) = volume.csi.as_ref().and_then(csi_secret) {
            note(&mut self.secrets, name, || at(&format!("csi.{f}")));
        }
        let sources = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_deref())
            .unwrap_or_default();
        for (j, src) in sources.iter().enumerate() {
            let at = |f: &str| at(&format!("projected.sources[{j}].{f}"));
            if let Some(cm) = &src.config_map {
                note(&mut self.config_maps, &cm.name, || at("configMap"));
            }
            if let Some(s) = &src.secret {
                note(&mut self.secrets, &s.name, || at("secret"));
            }
            if let Some(t) = &src.service_account_token {
                self.tokens
                    .entry(TokenKey::of(t))
                    .or_insert_with(|| at("serviceAccountToken"));
            }
        }
    }

    fn add_container(&mut self, container: &Container, field: &str) {
        let at = |f: String| Origin {
            usage: Usage::Env,
            field: format!("{field}.{f}"),
        };
        for (j, from) in container.env_from.iter().flatten().enumerate() {
            if let Some(cm) = &from.config_map_ref {
                note(&mut self.config_maps, &cm.name, || {
                    at(format!("envFrom[{j}].configMapRef"))
                });
            }
            if let Some(s) = &from.secret_ref {
                note(&mut self.secrets, &s.name, || {
                    at(format!("envFrom[{j}].secretRef"))
                });
            }
        }
        for (j, var) in container.env.iter().flatten().enumerate() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                note(&mut self.config_maps, &r.name, || {
                    at(format!("env[{j}].valueFrom.configMapKeyRef"))
                });
            }
            if let Some(r) = &from.secret_key_ref {
                note(&mut self.secrets, &r.name, || {
                    at(format!("env[{j}].valueFrom.secretKeyRef"))
                });
            }
        }
    }
}

/// Records the first reference to `name` (an empty name is the API server's
/// to refuse; fetching it would list the collection).
fn note(map: &mut BTreeMap<String, Origin>, name: &str, origin: impl FnOnce() -> Origin) {
    if !name.is_empty() && !map.contains_key(name) {
        map.insert(name.to_owned(), origin());
    }
}

// ---------------------------------------------------------------------------
// Step 2: fetch each referenced object once

/// The objects a pod references; `None` for a ConfigMap or Secret that does
/// not exist.
#[derive(Debug, Default)]
struct Fetched {
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
    tokens: HashMap<TokenKey, TokenRequestStatus>,
}

async fn fetch<S: Source>(source: &S, pod: &Pod, refs: &References) -> Result<Fetched, Error> {
    let ns = namespace(pod);
    let pod_ref = PodRef::of(pod);
    let sa = service_account(pod);
    let config_maps = refs.config_maps.iter().map(|(name, origin)| async move {
        match source.config_map(ns, name).await {
            Ok(cm) => Ok((name.clone(), cm)),
            Err(cause) => Err(fetch_error(
                origin,
                "ConfigMap",
                "configmaps",
                ns,
                name,
                cause,
            )),
        }
    });
    let secrets = refs.secrets.iter().map(|(name, origin)| async move {
        match source.secret(ns, name).await {
            Ok(s) => Ok((name.clone(), s)),
            Err(cause) => Err(fetch_error(origin, "Secret", "secrets", ns, name, cause)),
        }
    });
    let pod_ref = &pod_ref;
    let tokens = refs.tokens.iter().map(|(key, origin)| async move {
        let status = source
            .token(
                ns,
                sa,
                key.audience.as_deref(),
                key.expiration_seconds,
                pod_ref,
            )
            .await
            .map_err(|cause| token_error(origin, ns, sa, cause))?;
        if status.token.as_deref().is_none_or(str::is_empty) {
            return Err(Error::EmptyToken {
                field: origin.field.clone(),
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            });
        }
        Ok((key.clone(), status))
    });
    let (config_maps, secrets, tokens) = try_join3(
        try_join_all(config_maps),
        try_join_all(secrets),
        try_join_all(tokens),
    )
    .await?;
    Ok(Fetched {
        config_maps: config_maps.into_iter().collect(),
        secrets: secrets.into_iter().collect(),
        tokens: tokens.into_iter().collect(),
    })
}

fn fetch_error(
    origin: &Origin,
    kind: &'static str,
    plural: &str,
    ns: &str,
    name: &str,
    cause: kube::Error,
) -> Error {
    let hint = match api_status(&cause) {
        Some(s) if s.is_forbidden() => {
            format!("; grant skylet `get` on {plural} in namespace {ns}")
        }
        _ => String::new(),
    };
    Error::Fetch {
        usage: origin.usage,
        field: origin.field.clone(),
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
        cause: Box::new(cause),
        hint,
    }
}

fn token_error(origin: &Origin, ns: &str, sa: &str, cause: kube::Error) -> Error {
    let hint = match api_status(&cause) {
        Some(s) if s.is_forbidden() => {
            "; grant skylet `create` on serviceaccounts/token".to_owned()
        }
        Some(s) if s.is_not_found() => format!(
            "; create service account {sa} in namespace {ns}, or set spec.serviceAccountName to one that exists"
        ),
        _ => String::new(),
    };
    Error::Token {
        field: origin.field.clone(),
        namespace: ns.to_owned(),
        service_account: sa.to_owned(),
        cause: Box::new(cause),
        hint,
    }
}

/// When the earliest token must be refreshed: 80% into its life, and at the
/// latest a day after it was issued (as the kubelet's token manager). The
/// issue time is the expiration minus the requested lifetime.
fn refresh_at(tokens: &HashMap<TokenKey, TokenRequestStatus>, now: Timestamp) -> Option<Timestamp> {
    tokens
        .iter()
        .map(|(key, status)| {
            let ttl = SignedDuration::from_secs(key.expiration_seconds.max(0));
            let expires = status
                .expiration_timestamp
                .as_ref()
                .map_or_else(|| saturating_add(now, ttl), |t| t.0);
            let issued = expires.saturating_sub(ttl).unwrap_or(expires);
            let age =
                SignedDuration::from_millis(key.expiration_seconds.max(0).saturating_mul(800));
            saturating_add(issued, age.min(MAX_TOKEN_AGE))
        })
        .min()
}

fn saturating_add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

// ---------------------------------------------------------------------------
// Step 3: build the resolved pod from fetched objects (pure)

/// Everything the pure part reads.
struct Inputs<'a> {
    pod: &'a Pod,
    node: &'a NodeInfo,
    fetched: &'a Fetched,
}

/// A ConfigMap or Secret reduced to its keys.
struct Object<'a> {
    kind: Kind,
    name: &'a str,
    /// A ConfigMap's `data` or a Secret's `data`: what the environment reads.
    entries: BTreeMap<&'a str, &'a [u8]>,
    /// A ConfigMap's `binaryData`: volumes only.
    binary: BTreeMap<&'a str, &'a [u8]>,
}

impl Object<'_> {
    fn value(&self, data: &[u8]) -> Value {
        Value {
            data: Bytes::copy_from_slice(data),
            secret: matches!(self.kind, Kind::Secret),
        }
    }

    /// A key as a volume sees it: `data`, else `binaryData`.
    fn file(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .get(key)
            .or_else(|| self.binary.get(key))
            .copied()
    }

    /// Every key as a volume sees it.
    fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .chain(&self.binary)
            .map(|(k, v)| (*k, *v))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

impl Inputs<'_> {
    fn namespace(&self) -> &str {
        namespace(self.pod)
    }

    /// A referenced object; `Ok(None)` when it is missing and `optional`.
    fn object<'a>(
        &'a self,
        kind: Kind,
        name: &'a str,
        optional: Option<bool>,
        usage: Usage,
        field: &str,
    ) -> Result<Option<Object<'a>>, Error> {
        let found = match kind {
            Kind::ConfigMap => self
                .fetched
                .config_maps
                .get(name)
                .and_then(Option::as_ref)
                .map(|cm| Object {
                    kind,
                    name,
                    entries: cm
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.as_bytes()))
                        .collect(),
                    binary: cm
                        .binary_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
                        .collect(),
                }),
            Kind::Secret => self
                .fetched
                .secrets
                .get(name)
                .and_then(Option::as_ref)
                .map(|s| Object {
                    kind,
                    name,
                    entries: s
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
                        .collect(),
                    binary: BTreeMap::new(),
                }),
        };
        match found {
            Some(object) => Ok(Some(object)),
            None if optional == Some(true) => Ok(None),
            None => Err(Error::MissingObject {
                usage,
                field: field.to_owned(),
                kind: kind.as_str(),
                namespace: self.namespace().to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    fn missing_key(&self, object: &Object<'_>, key: &str, usage: Usage, field: &str) -> Error {
        Error::MissingKey {
            usage,
            field: field.to_owned(),
            kind: object.kind.as_str(),
            namespace: self.namespace().to_owned(),
            name: object.name.to_owned(),
            key: key.to_owned(),
        }
    }
}

fn build(inputs: &Inputs<'_>, services: &[(String, String)]) -> Result<ResolvedPod, Error> {
    let pod = inputs.pod;
    let mut volumes = BTreeMap::new();
    for (i, volume) in spec(pod).volumes.iter().flatten().enumerate() {
        if let Some(files) = volume_files(inputs, volume, &format!("spec.volumes[{i}]"))? {
            volumes.insert(volume.name.clone(), files);
        }
    }
    let mut env = BTreeMap::new();
    for (field, container) in containers(pod) {
        env.insert(
            container.name.clone(),
            container_env(inputs, container, &field, services)?,
        );
    }
    let image_pull_secrets = pull_secrets(inputs);
    let mut pod = pod.clone();
    expand_commands(&mut pod, &env);
    Ok(ResolvedPod {
        pod,
        env,
        volumes,
        image_pull_secrets,
    })
}

/// The Secret a CSI volume names for its driver, and the field naming it:
/// `nodePublishSecretRef`, or the Azure Files driver's `secretName` attribute
/// (which reads the Secret from the pod's namespace).
fn csi_secret(csi: &CSIVolumeSource) -> Option<(&str, &'static str)> {
    if let Some(r) = &csi.node_publish_secret_ref {
        return Some((r.name.as_str(), "nodePublishSecretRef"));
    }
    let attrs = csi.volume_attributes.as_ref()?;
    (csi.driver == AZURE_FILE_CSI_DRIVER)
        .then(|| attrs.get("secretName"))
        .flatten()
        .map(|n| (n.as_str(), "volumeAttributes.secretName"))
}

/// The Azure Files CSI driver, whose inline volumes name their Secret in an attribute.
const AZURE_FILE_CSI_DRIVER: &str = "file.csi.azure.com";

/// The pod's pull Secrets that exist, with their registry credentials. As
/// the kubelet does, a missing pull Secret (or one without a docker config
/// key) is skipped: the image may be public.
fn pull_secrets(inputs: &Inputs<'_>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for r in spec(inputs.pod).image_pull_secrets.iter().flatten() {
        let Some(Some(secret)) = inputs.fetched.secrets.get(&r.name) else {
            continue;
        };
        let data = secret.data.as_ref();
        let config = data.and_then(|d| d.get(".dockerconfigjson").or_else(|| d.get(".dockercfg")));
        if let Some(config) = config {
            out.push((
                r.name.clone(),
                Value::secret(Bytes::copy_from_slice(&config.0)),
            ));
        }
    }
    out
}

/// Expands `$(NAME)` in `command` and `args` with the container's variables,
/// as the kubelet does before it starts a container. Secret-derived values
/// are not substituted: backends keep commands in plain text (an ECS task
/// definition, an ACI container group), so `$(SECRET)` stays as written; a
/// shell can read the variable from the environment instead.
fn expand_commands(pod: &mut Pod, env: &BTreeMap<String, Vec<(String, Value)>>) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let all = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in all {
        let Some(vars) = env.get(&c.name) else {
            continue;
        };
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(n, v)| n == name && !v.secret)
                .map(|(_, v)| v)
        };
        for words in [c.command.as_mut(), c.args.as_mut()].into_iter().flatten() {
            for w in words.iter_mut() {
                if w.contains("$(") || w.contains("$$") {
                    let (bytes, _) = expand(w, lookup);
                    *w = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
        }
    }
}

// --- environment -----------------------------------------------------------

/// Variables in order of first definition; defining a name again replaces its
/// value in place.
#[derive(Debug, Default)]
struct EnvList {
    vars: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: Value) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.index.get(name).map(|&i| &self.vars[i].1)
    }
}

/// A container's environment: service links, then `envFrom`, then `env`.
fn container_env(
    inputs: &Inputs<'_>,
    container: &Container,
    field: &str,
    services: &[(String, String)],
) -> Result<Vec<(String, Value)>, Error> {
    let mut env = EnvList::default();
    for (name, value) in services {
        env.set(name.clone(), Value::plain(value.clone()));
    }
    for (j, from) in container.env_from.iter().flatten().enumerate() {
        let (kind, name, optional, what) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional, "configMapRef"),
            (None, Some(r)) => (Kind::Secret, &r.name, r.optional, "secretRef"),
            (None, None) => continue,
        };
        let field = format!("{field}.envFrom[{j}].{what}");
        let Some(object) = inputs.object(kind, name, optional, Usage::Env, &field)? else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        for (key, data) in &object.entries {
            let var = format!("{prefix}{key}");
            if is_env_name(&var) {
                env.set(var, object.value(data));
            } else {
                tracing::warn!(
                    pod = %PodRef::of(inputs.pod), container = %container.name, %field, variable = %var,
                    "skipping a key that is not a valid environment variable name",
                );
            }
        }
    }
    for (j, var) in container.env.iter().flatten().enumerate() {
        let field = format!("{field}.env[{j}]");
        if let Some(value) = env_value(inputs, container, var, &env, &field)? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.vars)
}

/// The value of one `env` entry; `None` when it refers to something missing
/// but optional (the variable is then not set).
fn env_value(
    inputs: &Inputs<'_>,
    container: &Container,
    var: &EnvVar,
    env: &EnvList,
    field: &str,
) -> Result<Option<Value>, Error> {
    if let Some(text) = var.value.as_deref().filter(|v| !v.is_empty()) {
        let (data, secret) = expand(text, |name| env.get(name));
        return Ok(Some(Value {
            data: data.into(),
            secret,
        }));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(Value::plain("")));
    };
    let field = format!("{field}.valueFrom");
    let invalid = |f: &str, problem: String| Error::Invalid {
        usage: Usage::Env,
        field: format!("{field}.{f}"),
        problem,
    };
    if let Some(r) = &from.field_ref {
        return field_value(inputs, r)
            .map(|v| Some(Value::plain(v)))
            .map_err(|p| invalid("fieldRef", p));
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(inputs, r, Some(container))
            .map(|v| Some(Value::plain(v)))
            .map_err(|p| invalid("resourceFieldRef", p));
    }
    let (kind, name, key, optional, what) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(r), _) => (
            Kind::ConfigMap,
            &r.name,
            &r.key,
            r.optional,
            "configMapKeyRef",
        ),
        (None, Some(r)) => (Kind::Secret, &r.name, &r.key, r.optional, "secretKeyRef"),
        (None, None) if from.file_key_ref.is_some() => {
            return Err(Error::Unsupported {
                usage: Usage::Env,
                field: format!("{field}.fileKeyRef"),
                what: "reading environment variables from a file (fileKeyRef)",
            });
        }
        (None, None) => return Ok(Some(Value::plain(""))),
    };
    let field = format!("{field}.{what}");
    let Some(object) = inputs.object(kind, name, optional, Usage::Env, &field)? else {
        return Ok(None);
    };
    match object.entries.get(key.as_str()) {
        Some(data) => Ok(Some(object.value(data))),
        None if optional == Some(true) => Ok(None),
        None => Err(inputs.missing_key(&object, key, Usage::Env, &field)),
    }
}

/// Whether `name` is a valid environment variable name: printable ASCII
/// except `=` (the API server's rule since RelaxedEnvironmentVariableValidation).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// Expands `$(NAME)` like the kubelet (third_party/forked/golang/expansion):
/// a defined `NAME` is replaced by its value, an undefined one is left as is,
/// `$$` is a literal `$` (so `$$(NAME)` gives `$(NAME)`), and an unterminated
/// `$(` or a `$` before anything else is copied. Returns the bytes and whether
/// a secret value went into them.
fn expand<'v>(input: &str, lookup: impl Fn(&str) -> Option<&'v Value>) -> (Vec<u8>, bool) {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut secret = false;
    let mut i = 0;
    while i < bytes.len() {
        let (b, next) = (bytes[i], bytes.get(i + 1).copied());
        match (b, next) {
            (b'$', Some(b'$')) => {
                out.push(b'$');
                i += 2;
            }
            (b'$', Some(b'(')) => match bytes[i + 2..].iter().position(|&c| c == b')') {
                Some(len) => {
                    let end = i + 2 + len;
                    match lookup(&input[i + 2..end]) {
                        Some(v) => {
                            out.extend_from_slice(&v.data);
                            secret |= v.secret;
                        }
                        None => out.extend_from_slice(&bytes[i..=end]),
                    }
                    i = end + 1;
                }
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            (b'$', Some(c)) => {
                out.extend_from_slice(&[b'$', c]);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, secret)
}

/// Service-link variables, as the kubelet's `getServiceEnvVarMap`: the
/// `kubernetes` service of namespace `default` always (it is how in-cluster
/// clients find the API server, so `enableServiceLinks: false` keeps it), and
/// with links enabled every service of the pod's namespace with a cluster IP,
/// which wins over the former on a name clash. Ordered by service name.
fn service_env(
    links: bool,
    namespace_services: &[Service],
    default_services: &[Service],
) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<&str, &Service> = BTreeMap::new();
    if let Some(master) = default_services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("kubernetes") && cluster_ip(s).is_some())
    {
        by_name.insert("kubernetes", master);
    }
    if links {
        for s in namespace_services
            .iter()
            .filter(|s| cluster_ip(s).is_some())
        {
            by_name.insert(s.metadata.name.as_deref().unwrap_or_default(), s);
        }
    }
    by_name
        .into_iter()
        .flat_map(|(name, s)| service_vars(name, s))
        .collect()
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables of one service (envvars.FromServices).
fn service_vars(name: &str, s: &Service) -> Vec<(String, String)> {
    let prefix = env_var_name(name);
    let ip = cluster_ip(s).unwrap_or_default();
    let ports = s
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let mut vars = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_owned())];
    let Some(first) = ports.first() else {
        return vars;
    };
    vars.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    for p in ports {
        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", env_var_name(port_name)),
                p.port.to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{ip}:{}", p.port);
        if i == 0 {
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{upper}", p.port);
        vars.push((pp.clone(), url));
        vars.push((format!("{pp}_PROTO"), lower));
        vars.push((format!("{pp}_PORT"), p.port.to_string()));
        vars.push((format!("{pp}_ADDR"), ip.to_owned()));
    }
    vars
}

/// A service or port name as a variable name: upper case, `-` and `.` as `_`,
/// `_` before a leading digit.
fn env_var_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    if upper.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{upper}")
    } else {
        upper
    }
}

// --- downward API ----------------------------------------------------------

/// The value of a `fieldRef`. `status.podIP(s)` is what the pod status holds
/// now, usually empty: the backend assigns the address later.
fn field_value(inputs: &Inputs<'_>, selector: &ObjectFieldSelector) -> Result<String, String> {
    let (pod, meta) = (inputs.pod, &inputs.pod.metadata);
    let path = selector.field_path.as_str();
    if let Some((base, key)) = subscript(path) {
        let map = match base {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(unsupported_field(path)),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    Ok(match path {
        "metadata.name" => text(&meta.name),
        "metadata.namespace" => text(&meta.namespace),
        "metadata.uid" => text(&meta.uid),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec(pod)
            .node_name
            .clone()
            .unwrap_or_else(|| inputs.node.name.clone()),
        "spec.serviceAccountName" => text(&spec(pod).service_account_name),
        "status.hostIP" | "status.hostIPs" => inputs.node.ip.clone(),
        "status.podIP" => pod_ips(pod).first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips(pod).join(","),
        _ => return Err(unsupported_field(path)),
    })
}

fn unsupported_field(path: &str) -> String {
    format!(
        "fieldPath {path:?} is not supported; use metadata.name, metadata.namespace, metadata.uid, \
         metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, \
         status.hostIP, status.hostIPs, status.podIP or status.podIPs"
    )
}

/// `base['key']` as `(base, key)` (fieldpath.SplitMaybeSubscriptedPath).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (base, key) = path.strip_suffix("']")?.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// The pod's IPs, primary first; empty until the backend reports them.
fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        status
            .pod_ip
            .iter()
            .filter(|ip| !ip.is_empty())
            .cloned()
            .collect()
    } else {
        ips
    }
}

/// Labels or annotations as the kubelet writes them (fieldpath.FormatMap):
/// `key="value"` lines sorted by key, values quoted like Go's `%q`.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` quoted like Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if go_printable(c) => out.push(c),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` for the characters labels and annotations hold in
/// practice: not a control, not a space other than ' ', not a format or
/// private-use character.
fn go_printable(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
        )
        || ('\u{e000}'..='\u{f8ff}').contains(&c))
}

/// The value of a `resourceFieldRef`, rounded up to a whole number of
/// `divisor`s (pkg/api/v1/resource). `default_container` is the container of
/// an environment variable; volumes must name one.
fn resource_value(
    inputs: &Inputs<'_>,
    selector: &ResourceFieldSelector,
    default_container: Option<&Container>,
) -> Result<String, String> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => containers(inputs.pod)
            .map(|(_, c)| c)
            .find(|c| c.name == name)
            .ok_or_else(|| format!("containerName {name:?} is not a container of this pod"))?,
        None => default_container.ok_or("containerName is required")?,
    };
    let divisor = match &selector.divisor {
        Some(q) => Quantity::parse(&q.0)
            .ok_or_else(|| format!("divisor {:?} is not a valid quantity", q.0))?,
        None => Quantity::ONE,
    };
    let divisor = if divisor.is_zero() {
        Quantity::ONE
    } else {
        divisor
    };
    let unsupported = || {
        format!(
            "resource {:?} is not supported; use limits.cpu, limits.memory, limits.ephemeral-storage, \
             requests.cpu, requests.memory or requests.ephemeral-storage",
            selector.resource
        )
    };
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let cpu = match resource {
        "cpu" => true,
        "memory" | "ephemeral-storage" => false,
        r if r.starts_with("hugepages-") => false,
        _ => return Err(unsupported()),
    };
    let amount = match kind {
        "limits" => limit(inputs, container, resource)?,
        "requests" => quantity_of(
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref()),
            resource,
        )?
        .unwrap_or(Quantity::ZERO),
        _ => return Err(unsupported()),
    };
    let scale = if cpu { 1000 } else { 1 };
    let overflow = || format!("{} is too large", selector.resource);
    let amount = amount.scaled_ceil(scale).ok_or_else(overflow)?;
    let divisor = divisor.scaled_ceil(scale).ok_or_else(overflow)?;
    ceil_div(amount, divisor)
        .map(|v| v.to_string())
        .ok_or_else(|| "divisor must not be zero".to_owned())
}

/// A container's limit, defaulted like the kubelet's
/// `defaultPodLimitsForDownwardAPI`: the pod-level limit, else the node's
/// allocatable.
fn limit(inputs: &Inputs<'_>, container: &Container, resource: &str) -> Result<Quantity, String> {
    if let Some(q) =
        quantity_of(limits(container.resources.as_ref()), resource)?.filter(|q| !q.is_zero())
    {
        return Ok(q);
    }
    let pod_level = matches!(resource, "cpu" | "memory");
    if pod_level
        && let Some(q) = quantity_of(limits(spec(inputs.pod).resources.as_ref()), resource)?
            .filter(|q| !q.is_zero())
    {
        return Ok(q);
    }
    let node = match resource {
        "cpu" => &inputs.node.allocatable_cpu,
        "memory" => &inputs.node.allocatable_memory,
        "ephemeral-storage" => {
            return Err(format!(
                "container {:?} has no ephemeral-storage limit and skylet knows no allocatable to default it to; \
                 set resources.limits.ephemeral-storage on the container",
                container.name
            ));
        }
        _ => return Ok(Quantity::ZERO),
    };
    Quantity::parse(node).ok_or_else(|| {
        format!("the node's allocatable {resource} {node:?} is not a valid quantity")
    })
}

fn limits(r: Option<&ResourceRequirements>) -> Option<&BTreeMap<String, ApiQuantity>> {
    r.and_then(|r| r.limits.as_ref())
}

fn quantity_of(
    list: Option<&BTreeMap<String, ApiQuantity>>,
    resource: &str,
) -> Result<Option<Quantity>, String> {
    match list.and_then(|l| l.get(resource)) {
        None => Ok(None),
        Some(q) => Quantity::parse(&q.0)
            .map(Some)
            .ok_or_else(|| format!("{resource} {:?} is not a valid quantity", q.0)),
    }
}

// --- volumes -----------------------------------------------------------------

/// The files of a volume skylet resolves; `None` for other kinds.
fn volume_files(
    inputs: &Inputs<'_>,
    volume: &Volume,
    field: &str,
) -> Result<Option<Vec<VolumeFile>>, Error> {
    let mut files = Files::default();
    if let Some(cm) = &volume.config_map {
        let field = format!("{field}.configMap");
        let mode = file_mode(
            cm.default_mode,
            DEFAULT_MODE,
            &format!("{field}.defaultMode"),
        )?;
        let object = inputs.object(
            Kind::ConfigMap,
            &cm.name,
            cm.optional,
            Usage::Volume,
            &field,
        )?;
        files.key_files(
            inputs,
            object.as_ref(),
            cm.items.as_deref(),
            cm.optional,
            mode,
            &field,
        )?;
    } else if let Some(s) = &volume.secret {
        let field = format!("{field}.secret");
        let mode = file_mode(
            s.default_mode,
            DEFAULT_MODE,
            &format!("{field}.defaultMode"),
        )?;
        let name = s.secret_name.as_deref().unwrap_or_default();
        let object = inputs.object(Kind::Secret, name, s.optional, Usage::Volume, &field)?;
        files.key_files(
            inputs,
            object.as_ref(),
            s.items.as_deref(),
            s.optional,
            mode,
            &field,
        )?;
    } else if let Some(d) = &volume.downward_api {
        let field = format!("{field}.downwardAPI");
        let mode = file_mode(
            d.default_mode,
            DEFAULT_MODE,
            &format!("{field}.defaultMode"),
        )?;
        files.downward_files(inputs, d.items.as_deref().unwrap_or_default(), mode, &field)?;
    } else if let Some(p) = &volume.projected {
        let field = format!("{field}.projected");
        let mode = file_mode(
            p.default_mode,
            DEFAULT_MODE,
            &format!("{field}.defaultMode"),
        )?;
        for (j, source) in p.sources.iter().flatten().enumerate() {
            files.projection(inputs, source, mode, &format!("{field}.sources[{j}]"))?;
        }
    } else if let Some((name, f)) = volume.csi.as_ref().and_then(csi_secret) {
        // The driver's credentials, for backends that mount the share
        // themselves (ACI's azureFile volume): every key as a file.
        let field = format!("{field}.csi.{f}");
        let object = inputs.object(Kind::Secret, name, None, Usage::Volume, &field)?;
        files.key_files(inputs, object.as_ref(), None, None, DEFAULT_MODE, &field)?;
    } else {
        return Ok(None);
    }
    Ok(Some(files.0.into_values().collect()))
}

/// A volume's files by path; a later file with the same path replaces an
/// earlier one, as in the kubelet's payload map.
#[derive(Default)]
struct Files(BTreeMap<String, VolumeFile>);

impl Files {
    fn add(&mut self, path: &str, mode: u32, value: Value, field: &str) -> Result<(), Error> {
        let path = clean_path(path).ok_or_else(|| Error::Invalid {
            usage: Usage::Volume,
            field: field.to_owned(),
            problem: format!("path {path:?} must be relative and must not contain '..'"),
        })?;
        self.0
            .insert(path.clone(), VolumeFile { path, mode, value });
        Ok(())
    }

    /// The keys of a ConfigMap or Secret as files (the volume plugins'
    /// `MakePayload`): `items` when given, else every key. A missing optional
    /// object gives no files.
    fn key_files(
        &mut self,
        inputs: &Inputs<'_>,
        object: Option<&Object<'_>>,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        default_mode: u32,
        field: &str,
    ) -> Result<(), Error> {
        let Some(object) = object else { return Ok(()) };
        let Some(items) = items.filter(|i| !i.is_empty()) else {
            for (key, data) in object.files() {
                self.add(key, default_mode, object.value(data), field)?;
            }
            return Ok(());
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}.items[{i}]");
            let Some(data) = object.file(&item.key) else {
                if optional == Some(true) {
                    continue;
                }
                return Err(inputs.missing_key(object, &item.key, Usage::Volume, &field));
            };
            let mode = file_mode(item.mode, default_mode, &format!("{field}.mode"))?;
            self.add(&item.path, mode, object.value(data), &field)?;
        }
        Ok(())
    }

    /// Downward-API items (downwardapi.CollectData).
    fn downward_files(
        &mut self,
        inputs: &Inputs<'_>,
        items: &[DownwardAPIVolumeFile],
        default_mode: u32,
        field: &str,
    ) -> Result<(), Error> {
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}.items[{i}]");
            let invalid = |f: &str, problem| Error::Invalid {
                usage: Usage::Volume,
                field: format!("{field}.{f}"),
                problem,
            };
            let value = if let Some(r) = &item.field_ref {
                field_value(inputs, r).map_err(|p| invalid("fieldRef", p))?
            } else if let Some(r) = &item.resource_field_ref {
                resource_value(inputs, r, None).map_err(|p| invalid("resourceFieldRef", p))?
            } else {
                String::new()
            };
            let mode = file_mode(item.mode, default_mode, &format!("{field}.mode"))?;
            self.add(&item.path, mode, Value::plain(value), &field)?;
        }
        Ok(())
    }

    /// One source of a projected volume.
    fn projection(
        &mut self,
        inputs: &Inputs<'_>,
        source: &VolumeProjection,
        default_mode: u32,
        field: &str,
    ) -> Result<(), Error> {
        let unsupported = |f: &str, what| Error::Unsupported {
            usage: Usage::Volume,
            field: format!("{field}.{f}"),
            what,
        };
        if source.cluster_trust_bundle.is_some() {
            return Err(unsupported(
                "clusterTrustBundle",
                "a clusterTrustBundle projection",
            ));
        }
        if source.pod_certificate.is_some() {
            return Err(unsupported("podCertificate", "a podCertificate projection"));
        }
        if let Some(cm) = &source.config_map {
            let field = format!("{field}.configMap");
            let object = inputs.object(
                Kind::ConfigMap,
                &cm.name,
                cm.optional,
                Usage::Volume,
                &field,
            )?;
            self.key_files(
                inputs,
                object.as_ref(),
                cm.items.as_deref(),
                cm.optional,
                default_mode,
                &field,
            )?;
        }
        if let Some(s) = &source.secret {
            let field = format!("{field}.secret");
            let object = inputs.object(Kind::Secret, &s.name, s.optional, Usage::Volume, &field)?;
            self.key_files(
                inputs,
                object.as_ref(),
                s.items.as_deref(),
                s.optional,
                default_mode,
                &field,
            )?;
        }
        if let Some(d) = &source.downward_api {
            let items = d.items.as_deref().unwrap_or_default();
            self.downward_files(inputs, items, default_mode, &format!("{field}.downwardAPI"))?;
        }
        if let Some(t) = &source.service_account_token {
            let field = format!("{field}.serviceAccountToken");
            let token = inputs
                .fetched
                .tokens
                .get(&TokenKey::of(t))
                .and_then(|s| s.token.clone());
            let token = token.ok_or_else(|| Error::EmptyToken {
                field: field.clone(),
                namespace: inputs.namespace().to_owned(),
                service_account: service_account(inputs.pod).to_owned(),
            })?;
            self.add(&t.path, default_mode, Value::secret(token), &field)?;
        }
        Ok(())
    }
}

/// A file mode, `default` when unset; the API server allows 0 to 0777.
fn file_mode(mode: Option<i32>, default: u32, field: &str) -> Result<u32, Error> {
    let Some(mode) = mode else { return Ok(default) };
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| Error::Invalid {
            usage: Usage::Volume,
            field: field.to_owned(),
            problem: format!("mode {mode} is not between 0 and 0777 (511)"),
        })
}

/// A relative path without `.` and empty components; `None` when absolute,
/// empty or escaping with `..`.
fn clean_path(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.is_empty() && !parts.contains(&"..")).then(|| parts.join("/"))
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

    use std::sync::Mutex;

    use k8s_openapi::{ByteString, apimachinery::pkg::apis::meta::v1::Time};
    use serde_json::json;

    use super::*;

    /// When the fake API server issues every token.
    const ISSUED: i64 = 1_700_000_000;

    /// An in-memory API server: objects from JSON, calls recorded.
    #[derive(Default)]
    struct Fake {
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
        services: Vec<Service>,
        forbid_secrets: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Fake {
        /// Objects by `kind`; a Secret's `stringData` becomes `data`, as the
        /// API server does.
        fn new(objects: serde_json::Value) -> Self {
            let mut fake = Self::default();
            for object in objects.as_array().unwrap() {
                match object["kind"].as_str().unwrap() {
                    "ConfigMap" => fake
                        .config_maps
                        .push(serde_json::from_value(object.clone()).unwrap()),
                    "Service" => fake
                        .services
                        .push(serde_json::from_value(object.clone()).unwrap()),
                    "Secret" => {
                        let mut secret: Secret = serde_json::from_value(object.clone()).unwrap();
                        for (k, v) in secret.string_data.take().unwrap_or_default() {
                            secret
                                .data
                                .get_or_insert_default()
                                .insert(k, ByteString(v.into_bytes()));
                        }
                        fake.secrets.push(secret);
                    }
                    other => panic!("unexpected kind {other}"),
                }
            }
            fake
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    fn find<K: kube::Resource + Clone>(objects: &[K], ns: &str, name: &str) -> Option<K> {
        objects
            .iter()
            .find(|o| {
                o.meta().namespace.as_deref() == Some(ns) && o.meta().name.as_deref() == Some(name)
            })
            .cloned()
    }

    impl Source for Fake {
        async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
            self.record(format!("configmap {ns}/{name}"));
            Ok(find(&self.config_maps, ns, name))
        }

        async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
            self.record(format!("secret {ns}/{name}"));
            if self.forbid_secrets {
                let status = kube::core::Status::failure(
                    &format!("secrets \"{name}\" is forbidden"),
                    "Forbidden",
                );
                return Err(kube::Error::Api(status.with_code(403).boxed()));
            }
            Ok(find(&self.secrets, ns, name))
        }

        fn services(&self, ns: &str) -> Vec<Service> {
            self.services
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                .cloned()
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
            self.record(format!(
                "token {ns}/{service_account} {audience:?} {expiration_seconds} {}",
                pod.uid
            ));
            Ok(TokenRequestStatus {
                token: Some(format!(
                    "token:{service_account}:{}",
                    audience.unwrap_or("api")
                )),
                expiration_timestamp: Some(Time(
                    Timestamp::from_second(ISSUED + expiration_seconds).unwrap(),
                )),
            })
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "skylet".into(),
            ip: "10.0.0.1".into(),
            allocatable_cpu: "1000".into(),
            allocatable_memory: "4Ti".into(),
        }
    }

    /// Pod `shop/web` with `spec`.
    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "uid-1",
                "labels": {"zone": "a", "app": "web"},
                "annotations": {"note": "say \"hi\"\n"},
            },
            "spec": spec,
        }))
        .unwrap()
    }

    /// A pod with one container `app` and these env entries.
    fn env_pod(env_from: serde_json::Value, env: serde_json::Value) -> Pod {
        pod(json!({
            "enableServiceLinks": false,
            "containers": [{"name": "app", "image": "app", "envFrom": env_from, "env": env}],
        }))
    }

    fn env(resolved: &Resolved, container: &str) -> Vec<(String, String)> {
        resolved.pod.env[container]
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().into_owned()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secret_flag(resolved: &Resolved, container: &str, name: &str) -> bool {
        resolved.pod.env[container]
            .iter()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .secret
    }

    async fn resolve_with(fake: &Fake, pod: &Pod) -> Result<Resolved, Error> {
        resolve(fake, &node(), pod).await
    }

    #[tokio::test]
    async fn env_from_with_prefix_then_env_overrides_and_expands() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"},
             "data": {"A": "1", "B": "two", "x=y": "not a variable"}},
        ]));
        let pod = env_pod(
            json!([{"configMapRef": {"name": "app"}, "prefix": "APP_"}]),
            json!([
                {"name": "APP_A", "value": "override-$(APP_B)"},
                {"name": "C", "value": "$$(APP_A) $(UNDEFINED) $(APP_A) $(D) cost$$5 $x $("},
                {"name": "D", "value": "late"},
                {"name": "E"},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("APP_A", "override-two"),
                ("APP_B", "two"),
                ("C", "$(APP_A) $(UNDEFINED) override-two $(D) cost$5 $x $("),
                ("D", "late"),
                ("E", ""),
            ])
        );
        assert!(!secret_flag(&resolved, "app", "APP_B"));
        assert_eq!(resolved.refresh_at, None);
    }

    #[tokio::test]
    async fn secret_values_and_their_expansions_are_secret() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "creds"},
             "stringData": {"password": "hunter2", "user": "bob"}},
        ]));
        let pod = env_pod(
            json!([{"secretRef": {"name": "creds"}, "prefix": "DB_"}]),
            json!([
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "URL", "value": "postgres://$(DB_user):$(PW)@db"},
                {"name": "PLAIN", "value": "$(NOPE)"},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("DB_password", "hunter2"),
                ("DB_user", "bob"),
                ("PW", "hunter2"),
                ("URL", "postgres://bob:hunter2@db"),
                ("PLAIN", "$(NOPE)"),
            ])
        );
        for name in ["DB_password", "DB_user", "PW", "URL"] {
            assert!(secret_flag(&resolved, "app", name), "{name} must be secret");
        }
        assert!(!secret_flag(&resolved, "app", "PLAIN"));
        assert!(!format!("{resolved:?}").contains("hunter2"));
        // only get was needed, once
        assert_eq!(fake.calls(), ["secret shop/creds"]);
    }

    #[tokio::test]
    async fn optional_missing_references_are_skipped() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"}, "data": {"A": "1"}},
        ]));
        let pod = env_pod(
            json!([
                {"configMapRef": {"name": "nope", "optional": true}},
                {"secretRef": {"name": "nope", "optional": true}},
            ]),
            json!([
                {"name": "X", "value": "kept"},
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "missing", "optional": true}}},
                {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            ]),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(env(&resolved, "app"), pairs(&[("X", "kept")]));
    }

    #[tokio::test]
    async fn missing_required_config_map_or_key_is_a_retriable_error() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"}, "data": {"A": "1"}},
        ]));
        let pod = env_pod(
            json!([]),
            json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}}]),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(matches!(err, Error::MissingObject { .. }), "{err:?}");
        assert!(err.retriable());
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert_eq!(
            err.to_string(),
            "spec.containers[0].env[0].valueFrom.configMapKeyRef: ConfigMap shop/settings not found; \
             create it in namespace shop, or set `optional: true` on the reference"
        );

        let pod = env_pod(
            json!([]),
            json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "b"}}}]),
        );
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(err.retriable());
        assert!(
            err.to_string()
                .contains("ConfigMap shop/app has no key \"b\"; add the key"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn field_refs() {
        let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
        let paths = [
            ("NAME", "metadata.name"),
            ("NAMESPACE", "metadata.namespace"),
            ("UID", "metadata.uid"),
            ("APP", "metadata.labels['app']"),
            ("NO_LABEL", "metadata.labels['missing']"),
            ("NOTE", "metadata.annotations['note']"),
            ("NODE", "spec.nodeName"),
            ("SA", "spec.serviceAccountName"),
            ("HOST_IP", "status.hostIP"),
            ("HOST_IPS", "status.hostIPs"),
            ("POD_IP", "status.podIP"),
            ("POD_IPS", "status.podIPs"),
        ];
        let env_json: Vec<_> = paths
            .iter()
            .map(|(n, p)| json!({"name": n, "valueFrom": field(p)}))
            .collect();
        let mut pod = pod(json!({
            "enableServiceLinks": false,
            "nodeName": "skylet",
            "serviceAccountName": "builder",
            "containers": [{"name": "app", "env": env_json}],
        }));
        let fake = Fake::default();

        // not yet running: no pod IP
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let expected = [
            ("NAME", "web"),
            ("NAMESPACE", "shop"),
            ("UID", "uid-1"),
            ("APP", "web"),
            ("NO_LABEL", ""),
            ("NOTE", "say \"hi\"\n"),
            ("NODE", "skylet"),
            ("SA", "builder"),
            ("HOST_IP", "10.0.0.1"),
            ("HOST_IPS", "10.0.0.1"),
            ("POD_IP", ""),
            ("POD_IPS", ""),
        ];
        assert_eq!(env(&resolved, "app"), pairs(&expected));

        // re-resolved once the backend reported addresses
        pod.status = Some(
            serde_json::from_value(
                json!({"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}]}),
            )
            .unwrap(),
        );
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let vars = env(&resolved, "app");
        assert_eq!(vars[10], ("POD_IP".to_owned(), "10.1.2.3".to_owned()));
        assert_eq!(
            vars[11],
            ("POD_IPS".to_owned(), "10.1.2.3,fd00::3".to_owned())
        );

        let bad = env_pod(
            json!([]),
            json!([{"name": "H", "valueFrom": field("spec.hostname")}]),
        );
        let err = resolve_with(&fake, &bad).await.unwrap_err();
        assert!(!err.retriable());
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert!(
            err.to_string().starts_with(
                "spec.containers[0].env[0].valueFrom.fieldRef: fieldPath \"spec.hostname\" is not supported"
            )
        );
    }

    #[tokio::test]
    async fn resource_field_refs_round_up_and_default_to_node_allocatable() {
        fn res(
            resource: &str,
            divisor: Option<&str>,
            container: Option<&str>,
        ) -> serde_json::Value {
            json!({"resourceFieldRef": {"resource": resource, "divisor": divisor, "containerName": container}})
        }
        let pod = pod(json!({
            "enableServiceLinks": false,
            "containers": [
                {"name": "app",
                 "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "100Mi"}},
                 "env": [
                    {"name": "MEM_LIMIT_MI", "valueFrom": res("limits.memory", Some("1Mi"), None)},
                    {"name": "CPU_REQ_M", "valueFrom": res("requests.cpu", Some("1m"), None)},
                    {"name": "CPU_REQ", "valueFrom": res("requests.cpu", None, None)},
                    {"name": "CPU_LIMIT", "valueFrom": res("limits.cpu", None, None)},
                    {"name": "MEM_REQ_K", "valueFrom": res("requests.memory", Some("1k"), None)},
                    {"name": "SIDECAR_MEM_GI", "valueFrom": res("limits.memory", Some("1Gi"), Some("sidecar"))},
                    {"name": "SIDECAR_CPU_REQ", "valueFrom": res("requests.cpu", None, Some("sidecar"))},
                 ]},
                {"name": "sidecar"},
            ],
        }));
        let resolved = resolve_with(&Fake::default(), &pod).await.unwrap();
        assert_eq!(
            env(&resolved, "app"),
            pairs(&[
                ("MEM_LIMIT_MI", "1024"),
                ("CPU_REQ_M", "250"),
                ("CPU_REQ", "1"),
                ("CPU_LIMIT", "1000"),
                ("MEM_REQ_K", "104858"),
                ("SIDECAR_MEM_GI", "4096"),
                ("SIDECAR_CPU_REQ", "0"),
            ])
        );
        assert_eq!(env(&resolved, "sidecar"), pairs(&[]));

        // a pod-level limit comes before the node's allocatable
        let pod_level = serde_json::from_value::<Pod>(json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"enableServiceLinks": false, "resources": {"limits": {"cpu": "2"}},
                     "containers": [{"name": "app", "env": [
                        {"name": "CPU", "valueFrom": res("limits.cpu", None, None)}]}]},
        }))
        .unwrap();
        let resolved = resolve_with(&Fake::default(), &pod_level).await.unwrap();
        assert_eq!(env(&resolved, "app"), pairs(&[("CPU", "2")]));

        let no_limit = env_pod(
            json!([]),
            json!([{"name": "E", "valueFrom": res("limits.ephemeral-storage", None, None)}]),
        );
        let err = resolve_with(&Fake::default(), &no_limit).await.unwrap_err();
        assert!(!err.retriable());
        assert!(
            err.to_string()
                .contains("set resources.limits.ephemeral-storage"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn service_links_with_named_ports() {
        let fake = Fake::new(json!([
            {"kind": "Service", "metadata": {"namespace": "shop", "name": "db-main"},
             "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "pg", "port": 5432, "protocol": "TCP"},
                {"name": "metrics", "port": 9187, "protocol": "UDP"}]}},
            {"kind": "Service", "metadata": {"namespace": "shop", "name": "headless"},
             "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
            {"kind": "Service", "metadata": {"namespace": "default", "name": "kubernetes"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
            {"kind": "Service", "metadata": {"namespace": "default", "name": "elsewhere"},
             "spec": {"clusterIP": "10.96.0.99", "ports": [{"port": 80}]}},
        ]));
        let spec = |links: Option<bool>| {
            json!({"enableServiceLinks": links, "containers": [{"name": "app", "env": [
                {"name": "DB", "value": "$(DB_MAIN_SERVICE_HOST):$(DB_MAIN_SERVICE_PORT_PG)"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "8443"},
            ]}]})
        };
        let resolved = resolve_with(&fake, &pod(spec(None))).await.unwrap();
        let kubernetes = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "8443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        let db = [
            ("DB_MAIN_SERVICE_HOST", "10.96.0.10"),
            ("DB_MAIN_SERVICE_PORT", "5432"),
            ("DB_MAIN_SERVICE_PORT_PG", "5432"),
            ("DB_MAIN_SERVICE_PORT_METRICS", "9187"),
            ("DB_MAIN_PORT", "tcp://10.96.0.10:5432"),
            ("DB_MAIN_PORT_5432_TCP", "tcp://10.96.0.10:5432"),
            ("DB_MAIN_PORT_5432_TCP_PROTO", "tcp"),
            ("DB_MAIN_PORT_5432_TCP_PORT", "5432"),
            ("DB_MAIN_PORT_5432_TCP_ADDR", "10.96.0.10"),
            ("DB_MAIN_PORT_9187_UDP", "udp://10.96.0.10:9187"),
            ("DB_MAIN_PORT_9187_UDP_PROTO", "udp"),
            ("DB_MAIN_PORT_9187_UDP_PORT", "9187"),
            ("DB_MAIN_PORT_9187_UDP_ADDR", "10.96.0.10"),
        ];
        let expected: Vec<_> = db
            .iter()
            .chain(&kubernetes)
            .chain(&[("DB", "10.96.0.10:5432")])
            .copied()
            .collect();
        assert_eq!(env(&resolved, "app"), pairs(&expected));

        // disabled: only the API server's service, which the kubelet always sets
        let resolved = resolve_with(&fake, &pod(spec(Some(false)))).await.unwrap();
        let expected: Vec<_> = kubernetes
            .iter()
            .chain(&[("DB", "$(DB_MAIN_SERVICE_HOST):$(DB_MAIN_SERVICE_PORT_PG)")])
            .copied()
            .collect();
        assert_eq!(env(&resolved, "app"), pairs(&expected));
    }

    fn file(path: &str, mode: u32, value: Value) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            mode,
            value,
        }
    }

    #[tokio::test]
    async fn config_map_volume_with_items_and_modes() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "web"},
             "data": {"nginx.conf": "conf", "index.html": "<h1>"}, "binaryData": {"logo.png": "iVBO"}},
        ]));
        let pod = pod(json!({
            "enableServiceLinks": false,
            "containers": [{"name": "app"}],
            "volumes": [
                {"name": "conf", "configMap": {"name": "web", "defaultMode": 0o600, "items": [
                    {"key": "nginx.conf", "path": "etc/nginx.conf", "mode": 0o400},
                    {"key": "logo.png", "path": "./img//logo.png"}]}},
                {"name": "all", "configMap": {"name": "web"}},
                {"name": "maybe", "configMap": {"name": "nope", "optional": true}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let volumes = &resolved.pod.volumes;
        let png = || Value::plain(vec![0x89, 0x50, 0x4e]);
        assert_eq!(
            volumes["conf"],
            [
                file("etc/nginx.conf", 0o400, Value::plain("conf")),
                file("img/logo.png", 0o600, png())
            ]
        );
        assert_eq!(
            volumes["all"],
            [
                file("index.html", 0o644, Value::plain("<h1>")),
                file("logo.png", 0o644, png()),
                file("nginx.conf", 0o644, Value::plain("conf")),
            ]
        );
        assert_eq!(volumes["maybe"], []);
        assert!(!volumes.contains_key("scratch"));
        assert_eq!(
            fake.calls()
                .iter()
                .filter(|c| *c == "configmap shop/web")
                .count(),
            1
        );

        let missing_key = self::pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "conf", "configMap": {"name": "web", "items": [{"key": "missing", "path": "m"}]}}]}));
        let err = resolve_with(&fake, &missing_key).await.unwrap_err();
        assert!(err.retriable());
        assert_eq!(err.reason(), "FailedMount");
        assert!(
            err.to_string().starts_with(
                "spec.volumes[0].configMap.items[0]: ConfigMap shop/web has no key \"missing\""
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn secret_volume_values_are_secret() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "creds"},
             "stringData": {"password": "hunter2", "user": "bob"}},
        ]));
        let pod = pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "tls", "secret": {"secretName": "tls", "optional": true}}]}));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            resolved.pod.volumes["creds"],
            [
                file("password", 0o644, Value::secret("hunter2")),
                file("user", 0o644, Value::secret("bob"))
            ]
        );
        assert_eq!(resolved.pod.volumes["tls"], []);

        let pod = self::pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "tls", "secret": {"secretName": "tls"}}]}));
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::MissingObject {
                    usage: Usage::Volume,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.reason(), "FailedMount");
        assert!(
            err.to_string()
                .starts_with("spec.volumes[0].secret: Secret shop/tls not found"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pull_secrets_are_resolved_and_missing_ones_skipped() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
             "stringData": {".dockerconfigjson": "{\"auths\":{\"r.example\":{\"auth\":\"dTpw\"}}}"}},
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "opaque"}, "stringData": {"x": "y"}},
        ]));
        let pod = pod(json!({"containers": [{"name": "app"}],
            "imagePullSecrets": [{"name": "regcred"}, {"name": "gone"}, {"name": "opaque"}]}));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        let pulls = &resolved.pod.image_pull_secrets;
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        assert_eq!(pulls[0].0, "regcred");
        assert!(pulls[0].1.secret);
        assert!(pulls[0].1.as_str().contains("r.example"));
    }

    #[tokio::test]
    async fn csi_volume_secrets_become_files_and_are_required() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "azure-files"},
             "stringData": {"azurestorageaccountname": "acct", "azurestorageaccountkey": "k3y"}},
        ]));
        let pod = pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "share", "csi": {"driver": "file.csi.azure.com",
                "volumeAttributes": {"shareName": "data", "secretName": "azure-files"}}},
            {"name": "other", "csi": {"driver": "x.example", "nodePublishSecretRef": {"name": "azure-files"}}},
            {"name": "plain", "csi": {"driver": "x.example"}}]}));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        for v in ["share", "other"] {
            assert_eq!(
                resolved.pod.volumes[v],
                [
                    file("azurestorageaccountkey", 0o644, Value::secret("k3y")),
                    file("azurestorageaccountname", 0o644, Value::secret("acct"))
                ]
            );
        }
        assert!(!resolved.pod.volumes.contains_key("plain"));

        let pod = self::pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "share", "csi": {"driver": "file.csi.azure.com", "volumeAttributes": {"secretName": "nope"}}}]}));
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(
            err.to_string().starts_with(
                "spec.volumes[0].csi.volumeAttributes.secretName: Secret shop/nope not found"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn downward_api_volume_formats_maps_like_the_kubelet() {
        let pod = pod(json!({
            "containers": [{"name": "app", "resources": {"limits": {"cpu": "500m"}}}],
            "volumes": [{"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o600},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "cpu_limit",
                 "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
            ]}}],
        }));
        let resolved = resolve_with(&Fake::default(), &pod).await.unwrap();
        assert_eq!(
            resolved.pod.volumes["info"],
            [
                file("annotations", 0o600, Value::plain(r#"note="say \"hi\"\n""#)),
                file("cpu_limit", 0o644, Value::plain("500")),
                file("labels", 0o644, Value::plain("app=\"web\"\nzone=\"a\"")),
                file("name", 0o644, Value::plain("web")),
            ]
        );

        let pod = self::pod(
            json!({"containers": [{"name": "app"}], "volumes": [{"name": "info", "downwardAPI": {
            "items": [{"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}}]}),
        );
        let err = resolve_with(&Fake::default(), &pod).await.unwrap_err();
        assert!(!err.retriable());
        assert_eq!(
            err.to_string(),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef: containerName is required"
        );
    }

    /// The volume the ServiceAccount admission plugin adds to every pod.
    fn kube_api_access(name: &str) -> serde_json::Value {
        json!({"name": name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}})
    }

    #[tokio::test]
    async fn default_kube_api_access_volume_and_token_refresh() {
        let fake = Fake::new(json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "kube-root-ca.crt"},
             "data": {"ca.crt": "-----BEGIN CERTIFICATE-----"}},
        ]));
        let pod = pod(json!({
            "serviceAccountName": "default",
            "containers": [{"name": "app"}, {"name": "sidecar"}],
            "volumes": [kube_api_access("kube-api-access-x7k2p")],
        }));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            resolved.pod.volumes["kube-api-access-x7k2p"],
            [
                file("ca.crt", 0o644, Value::plain("-----BEGIN CERTIFICATE-----")),
                file("namespace", 0o644, Value::plain("shop")),
                file("token", 0o644, Value::secret("token:default:api")),
            ]
        );
        let issued = Timestamp::from_second(ISSUED).unwrap();
        // 80% of 3607 s
        assert_eq!(
            resolved.refresh_at,
            Some(issued + SignedDuration::from_millis(2_885_600))
        );
        let mut calls = fake.calls();
        calls.sort();
        assert_eq!(
            calls,
            [
                "configmap shop/kube-root-ca.crt",
                "token shop/default None 3607 uid-1"
            ]
        );

        // a second, shorter-lived token comes due first
        let pod = self::pod(json!({
            "serviceAccountName": "builder",
            "containers": [{"name": "app"}],
            "volumes": [
                kube_api_access("kube-api-access-1"),
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "vault-token"}}]}},
            ],
        }));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(
            resolved.pod.volumes["vault"],
            [file(
                "vault-token",
                0o644,
                Value::secret("token:builder:vault")
            )]
        );
        assert_eq!(
            resolved.refresh_at,
            Some(issued + SignedDuration::from_secs(480))
        );
    }

    #[test]
    fn refresh_at_caps_at_a_day_and_tolerates_a_missing_expiration() {
        let now = Timestamp::from_second(ISSUED).unwrap();
        let key = |s| TokenKey {
            audience: None,
            expiration_seconds: s,
        };
        let status = |exp: Option<i64>| TokenRequestStatus {
            token: Some("t".into()),
            expiration_timestamp: exp.map(|e| Time(Timestamp::from_second(e).unwrap())),
        };
        let two_days = 48 * 3600;
        let tokens = HashMap::from([(key(two_days), status(Some(ISSUED + two_days)))]);
        assert_eq!(
            refresh_at(&tokens, now),
            Some(now + SignedDuration::from_hours(24))
        );
        let tokens = HashMap::from([(key(1000), status(None))]);
        assert_eq!(
            refresh_at(&tokens, now),
            Some(now + SignedDuration::from_secs(800))
        );
        assert_eq!(refresh_at(&HashMap::new(), now), None);
    }

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

    #[tokio::test]
    async fn each_object_is_fetched_once_and_api_errors_are_retriable() {
        let fake = Fake {
            forbid_secrets: true,
            ..Fake::new(
                json!([{"kind": "ConfigMap", "metadata": {"namespace": "shop", "name": "app"}, "data": {"A": "1"}}]),
            )
        };
        let container = |name: &str| {
            json!({"name": name,
                "envFrom": [{"configMapRef": {"name": "app"}}],
                "env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "A"}}}]})
        };
        let pod = pod(json!({
            "initContainers": [container("init")],
            "containers": [container("app"), container("sidecar")],
            "volumes": [{"name": "conf", "configMap": {"name": "app"}}],
        }));
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert_eq!(fake.calls(), ["configmap shop/app"]);
        assert_eq!(
            resolved.pod.env.keys().collect::<Vec<_>>(),
            ["app", "init", "sidecar"]
        );
        assert_eq!(env(&resolved, "init"), pairs(&[("A", "1"), ("B", "1")]));

        let pod = self::pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "creds", "secret": {"secretName": "creds"}}]}));
        let err = resolve_with(&fake, &pod).await.unwrap_err();
        assert!(err.retriable());
        assert_eq!(err.reason(), "FailedMount");
        assert_eq!(
            err.to_string(),
            "spec.volumes[0].secret: reading Secret shop/creds failed: secrets \"creds\" is forbidden (403 Forbidden); \
             grant skylet `get` on secrets in namespace shop"
        );
    }

    #[test]
    fn resolve_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (fake, info, pod) = (Fake::default(), node(), pod(json!({"containers": []})));
        assert_send(&resolve(&fake, &info, &pod));
        let _: fn(KubeSource) = |s| assert_send(&resolve(&s, &node(), &Pod::default()));
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = EnvList::default();
        let run = |s: &str| String::from_utf8(expand(s, |n| vars.get(n)).0).unwrap();
        assert_eq!(run("$"), "$");
        assert_eq!(run("a$"), "a$");
        assert_eq!(run("$$$"), "$$");
        assert_eq!(run("$$(X)"), "$(X)");
        assert_eq!(run("$(X"), "$(X");
        assert_eq!(run("é$é"), "é$é");
    }

    #[test]
    fn go_quoting_and_names() {
        assert_eq!(go_quote("tab\there é"), r#""tab\there é""#);
        assert_eq!(go_quote("\u{7f}\u{a0}\\"), r#""\x7f\u00a0\\""#);
        assert_eq!(env_var_name("9-lives.svc"), "_9_LIVES_SVC");
        assert!(
            is_env_name("my.var-1 x")
                && !is_env_name("a=b")
                && !is_env_name("")
                && !is_env_name("é")
        );
        assert_eq!(clean_path("./a//b/"), Some("a/b".into()));
        assert_eq!(clean_path("/etc/passwd"), None);
        assert_eq!(clean_path("a/../../b"), None);
    }

    #[tokio::test]
    async fn command_and_args_are_expanded_but_never_with_secrets() {
        let source = Fake::new(json!([
            {"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, "stringData": {"pw": "hunter2"}}
        ]));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{
                "name": "c",
                "command": ["sh", "-c", "echo $(GREETING) $(PW) $$(GREETING) $(NOPE)"],
                "args": ["$(GREETING)"],
                "env": [{"name": "GREETING", "value": "hi"},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]
            }]}
        }))
        .unwrap();
        let r = resolve(&source, &node(), &pod).await.unwrap();
        let c = &r.pod.pod.spec.unwrap().containers[0];
        assert_eq!(
            c.command.as_ref().unwrap()[2],
            "echo hi $(PW) $(GREETING) $(NOPE)"
        );
        assert_eq!(c.args.as_ref().unwrap()[0], "hi");
    }
}
