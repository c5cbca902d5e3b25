//! The mutating admission webhook: TLS with a CA made at start, the
//! MutatingWebhookConfiguration skylet keeps, and `POST /mutate-pods`.
//!
//! At start skylet makes a CA and a serving certificate signed by it
//! (rcgen, ECDSA P-256; SANs: the webhook host, or the Service's DNS
//! names), and writes the CA into the `caBundle` of the
//! MutatingWebhookConfiguration it creates or updates (server-side apply,
//! field manager `skylet`): pods, CREATE only, `failurePolicy: Ignore`,
//! `sideEffects: None`, `timeoutSeconds: 5`, `reinvocationPolicy: Never`,
//! and the namespace selector when one is configured. A new CA at every
//! start means that during a restart, until the configuration is updated,
//! kube-apiserver cannot verify the webhook and admits pods unchanged
//! (`failurePolicy: Ignore`).
//!
//! A review answers, in order: a pod that already names a policy
//! (another skylet mutated it), a pod bound to a node already, a DaemonSet
//! or mirror pod, or a pod no policy selects: allowed unchanged; the policy
//! is invalid: allowed unchanged with a warning; no tier node can run the
//! pod: refused with the message of [`compile::compile`]; else allowed
//! with a JSON patch. With `fencing: Strict` the pod is gated when a pod of
//! its controller is Terminating on a virtual node (read from the
//! apiserver, not the cache: the controller created this pod because it saw
//! that deletion, which the cache may not have yet; if the read fails, the
//! pod is gated and the gate controller decides).
//!
//! RBAC: `mutatingwebhookconfigurations` (admissionregistration.k8s.io):
//! get, create, patch; `pods`: list.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::post};
use base64::Engine;
use hyper::Request;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use k8s_openapi::api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use super::{
    Config, Endpoint, Error, compile,
    crd::{Fencing, PlacementPolicy},
    selector,
    view::{ANN_POLICY, NodeView, View, owner_of},
};

/// The path kube-apiserver posts reviews to.
pub(crate) const PATH: &str = "/mutate-pods";

/// The webhook's name inside the configuration.
const WEBHOOK_NAME: &str = "placement.skylet.io";

/// A TLS identity: the CA (PEM, for `caBundle`) and the serving config.
pub(crate) struct Identity {
    pub(crate) ca_pem: String,
    pub(crate) tls: Arc<ServerConfig>,
}

/// Makes a CA and a serving certificate for `names` (DNS names or IPs).
pub(crate) fn identity(names: &[String]) -> Result<Identity, Error> {
    // rcgen's default validity (1975 to 4096): the CA lives as long as
    // the process, a new one is made at every start
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "skylet placement webhook CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca)?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| Error::Tls(e.to_owned()))?;
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, der)
        .map_err(|e| Error::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: ca.pem(),
        tls: Arc::new(tls),
    })
}

/// The names the serving certificate must carry for `endpoint`.
pub(crate) fn names(endpoint: &Endpoint) -> Vec<String> {
    match endpoint {
        Endpoint::Url { host, .. } => vec![host.clone()],
        Endpoint::Service {
            namespace, name, ..
        } => vec![
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
            format!("{name}.{namespace}"),
        ],
    }
}

/// The MutatingWebhookConfiguration skylet applies.
pub(crate) fn configuration(
    config: &Config,
    port: u16,
    ca_pem: &str,
) -> MutatingWebhookConfiguration {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let client_config = match &config.endpoint {
        Endpoint::Url { host, .. } => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            json!({"url": format!("https://{host}:{port}{PATH}"), "caBundle": ca})
        }
        Endpoint::Service {
            namespace,
            name,
            port,
        } => json!({
            "service": {"namespace": namespace, "name": name, "port": port, "path": PATH},
            "caBundle": ca
        }),
    };
    let mut webhook = json!({
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
        "failurePolicy": "Ignore",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "reinvocationPolicy": "Never",
    });
    if let Some(sel) = &config.namespace_selector {
        webhook["namespaceSelector"] = json!(selector::to_k8s(sel));
    }
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": config.configuration_name,
            "labels": {"app.kubernetes.io/managed-by": "skylet"}
        },
        "webhooks": [webhook]
    }))
    .unwrap_or_default()
}

/// Applies the configuration, retrying until it is written or shutdown.
pub(crate) async fn keep_configuration(
    client: Client,
    object: MutatingWebhookConfiguration,
    shutdown: CancellationToken,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let name = object.name_any();
    let mut delay = Duration::from_millis(500);
    loop {
        match api
            .patch(
                &name,
                &PatchParams::apply("skylet").force(),
                &Patch::Apply(&object),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(configuration = %name, "webhook configuration applied");
                return;
            }
            Err(e) => {
                tracing::warn!(configuration = %name, error = %e, retry_in = ?delay, "cannot apply the webhook configuration");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The webhook's state.
#[derive(Clone)]
pub(crate) struct Hook {
    pub(crate) client: Client,
    pub(crate) view: Arc<View>,
}

/// The router: `POST /mutate-pods`.
pub(crate) fn router(hook: Hook) -> Router {
    Router::new()
        .route(PATH, post(mutate))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(hook)
}

/// A bound webhook server.
pub(crate) struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl Server {
    pub(crate) async fn bind(addr: SocketAddr, tls: Arc<ServerConfig>) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown`.
    pub(crate) async fn serve(self, app: Router, shutdown: CancellationToken) {
        let conns = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            let stop = shutdown.clone();
            conns.spawn(
                async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let svc = TowerToHyperService::new(
                        app.map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
                    );
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                        () = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(3), conn).await;
                        }
                    }
                }
                .in_current_span(),
            );
        }
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(4), conns.wait()).await;
    }
}

/// An AdmissionReview as posted (the parts skylet reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReviewIn {
    #[serde(default)]
    api_version: String,
    request: Option<ReviewRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequest {
    uid: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Option<Value>,
}

/// The answer to one review.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Answer {
    /// `Some(message)`: refused.
    pub(crate) refusal: Option<String>,
    /// The JSON patch, when the pod changes.
    pub(crate) patch: Option<Vec<Value>>,
    pub(crate) warnings: Vec<String>,
}

impl Answer {
    fn review(self, api_version: &str, uid: &str) -> Value {
        let mut response = json!({"uid": uid, "allowed": self.refusal.is_none()});
        if let Some(msg) = self.refusal {
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": msg});
        }
        if let Some(p) = self.patch {
            let bytes = serde_json::to_vec(&p).unwrap_or_default();
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            response["patchType"] = json!("JSONPatch");
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        let api_version = if api_version.is_empty() {
            "admission.k8s.io/v1"
        } else {
            api_version
        };
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
    }
}

async fn mutate(State(hook): State<Hook>, Json(review): Json<ReviewIn>) -> Json<Value> {
    let Some(req) = review.request else {
        return Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": true, "warnings": ["skylet: review without a request"]}}),
        );
    };
    let answer = match req
        .object
        .as_ref()
        .filter(|_| req.operation == "CREATE")
        .map(|o| serde_json::from_value::<Pod>(o.clone()))
    {
        Some(Ok(pod)) => {
            let ns = req
                .namespace
                .clone()
                .or_else(|| pod.namespace())
                .unwrap_or_default();
            let span = tracing::debug_span!("review", pod.namespace = %ns, pod.name = %pod.name_any(), pod.generate_name = pod.metadata.generate_name.as_deref().unwrap_or(""));
            review_pod(&hook, &ns, &pod).instrument(span).await
        }
        Some(Err(e)) => Answer {
            warnings: vec![format!("skylet placement: cannot read the pod: {e}")],
            ..Answer::default()
        },
        None => Answer::default(),
    };
    Json(answer.review(&review.api_version, &req.uid))
}

/// Decides one pod: see the module docs.
pub(crate) async fn review_pod(hook: &Hook, ns: &str, pod: &Pod) -> Answer {
    let skip = pod.annotations().contains_key(ANN_POLICY)
        || pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
        || pod
            .annotations()
            .contains_key("kubernetes.io/config.mirror")
        || owner_of(pod).is_some_and(|o| o.kind == "DaemonSet");
    if skip {
        return Answer::default();
    }
    if !hook.view.wait_ready(Duration::from_secs(2)).await {
        return Answer {
            warnings: vec![
                "skylet placement is starting: no PlacementPolicy was applied to this pod".into(),
            ],
            ..Answer::default()
        };
    }
    let Some(policy) = hook.view.policy_for(ns, pod.labels()) else {
        return Answer::default();
    };
    let name = policy.name_any();
    if let Err(why) = policy.spec.validate() {
        return Answer {
            warnings: vec![format!(
                "PlacementPolicy {name:?} is invalid and was not applied: {why}"
            )],
            ..Answer::default()
        };
    }
    let nodes = hook.view.nodes();
    let gate = policy.spec.failover.fencing == Fencing::Strict
        && unfenced_predecessor(&hook.client, ns, pod, &nodes).await;
    decide(&policy, pod, &nodes, gate)
}

/// The answer for `pod` under a valid `policy`.
pub(crate) fn decide(
    policy: &PlacementPolicy,
    pod: &Pod,
    nodes: &[NodeView],
    gate: bool,
) -> Answer {
    let name = policy.name_any();
    match compile::compile(&name, &policy.spec, pod, nodes, gate) {
        Ok(placement) => Answer {
            patch: Some(compile::patch(pod, &name, &placement)),
            ..Answer::default()
        },
        Err(msg) => {
            tracing::info!(policy = %name, reason = %msg, "pod refused");
            Answer {
                refusal: Some(msg),
                ..Answer::default()
            }
        }
    }
}

/// Whether a pod of `pod`'s controller is Terminating on a virtual node
/// (read from the apiserver; `true` if it cannot be read).
async fn unfenced_predecessor(client: &Client, ns: &str, pod: &Pod, nodes: &[NodeView]) -> bool {
    let Some(owner) = owner_of(pod) else {
        return false;
    };
    let selector: Vec<String> = pod
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = selector.join(",");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().labels(&selector);
    let list = tokio::time::timeout(Duration::from_secs(3), api.list(&params));
    let pods = match list.await {
        Ok(Ok(l)) => l.items,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list the pods of the controller; gating the pod");
            return true;
        }
        Err(_) => {
            tracing::warn!("listing the pods of the controller timed out; gating the pod");
            return true;
        }
    };
    pods.iter().any(|p| {
        p.metadata.deletion_timestamp.is_some()
            && owner_of(p).is_some_and(|o| o.uid == owner.uid)
            && p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| nodes.iter().any(|v| v.name == n && v.is_virtual()))
    })
}

/// The AdmissionReview test fixtures kube-apiserver would post.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::fixtures::virtual_node;

    fn config(endpoint: Endpoint) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            endpoint,
            configuration_name: "skylet-placement".into(),
            namespace_selector: Some(selector::parse("placement=on").unwrap()),
        }
    }

    #[test]
    fn configuration_is_pods_create_only_ignore_on_failure() {
        let c = configuration(
            &config(Endpoint::Url {
                host: "127.0.0.1".into(),
            }),
            9443,
            "PEM",
        );
        let v = serde_json::to_value(&c).unwrap();
        let w = &v["webhooks"][0];
        assert_eq!(
            w["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate-pods"
        );
        assert_eq!(w["clientConfig"]["caBundle"], "UEVN");
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["rules"][0]["operations"], json!(["CREATE"]));
        assert_eq!(w["rules"][0]["resources"], json!(["pods"]));
        assert_eq!(w["namespaceSelector"]["matchLabels"]["placement"], "on");
        let c = configuration(
            &config(Endpoint::Service {
                namespace: "skylet".into(),
                name: "skylet-webhook".into(),
                port: 443,
            }),
            9443,
            "PEM",
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["webhooks"][0]["clientConfig"]["service"],
            json!({"namespace": "skylet", "name": "skylet-webhook", "port": 443, "path": "/mutate-pods"})
        );
    }

    #[test]
    fn identity_is_a_ca_and_a_serving_certificate_for_the_names() {
        crate::placement::tests::install_crypto();
        let id = identity(&["127.0.0.1".into(), "skylet.example".into()]).unwrap();
        assert!(id.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let (_, ca) = x509_parser::pem::parse_x509_pem(id.ca_pem.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        assert!(ca.is_ca());
    }

    fn policy(yaml: &str) -> PlacementPolicy {
        let mut p = PlacementPolicy::new("burst", serde_yaml_ng::from_str(yaml).unwrap());
        p.metadata.namespace = Some("ns".into());
        p
    }

    #[test]
    fn reviews_answer_with_a_patch_or_a_refusal() {
        let nodes = vec![virtual_node(
            "vn",
            "mock",
            &[("skylet.io/tier", "1")],
            &[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")],
            None,
        )];
        let pol = policy("tiers: [{nodeSelector: {matchLabels: {skylet.io/tier: '1'}}}]");
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .unwrap();
        let a = decide(&pol, &pod, &nodes, false);
        assert!(a.refusal.is_none());
        let review = a.review("admission.k8s.io/v1", "u1");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(review["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        assert_eq!(ops[0]["path"], "/metadata/annotations");

        let gpu: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})).unwrap();
        let review = decide(&pol, &gpu, &nodes, false).review("admission.k8s.io/v1", "u2");
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["uid"], "u2");
        assert!(
            review["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("nvidia.com/gpu")
        );
    }
}
