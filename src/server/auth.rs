//! Authentication and authorization of kubelet API requests, as the kubelet
//! does them (pkg/kubelet/server/auth.go):
//!
//! - **Authentication**: a client certificate verified against the client CA
//!   (kube-apiserver presents `--kubelet-client-certificate`), else a bearer
//!   token checked with a TokenReview (metrics-server, Prometheus, users with
//!   `kubectl get --raw`). Anonymous requests get 401 unless anonymous auth
//!   is on.
//! - **Authorization**: a SubjectAccessReview for verb (from the HTTP
//!   method) on `nodes/<subresource>` of this node: `stats` for `/stats`,
//!   `metrics` for `/metrics`, `log` for `/logs`, `proxy` for everything else
//!   (`/pods`, `/containerLogs`, `/exec`, ...). Denied: 403.
//!
//! Results are cached like the kubelet's webhook caches: token reviews for
//! 2 minutes, allowed decisions for 5 minutes, denials for 30 seconds.
//!
//! # RBAC
//! `tokenreviews` and `subjectaccessreviews`: create (the ClusterRole
//! `system:auth-delegator` has both).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State as AxState},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use rustls::pki_types::CertificateDer;
use skylet_provider::Provider;

use super::{State, error::ApiError};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// UID (token-authenticated users).
    pub uid: Option<String>,
}

/// The identity of the connection's verified client certificate, if any;
/// put into each request's extensions by the server.
#[derive(Clone, Debug)]
pub struct PeerCert(pub Option<Identity>);

/// Reads user (CN) and groups (O) from a verified client certificate.
pub fn identity_from_cert(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = x.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(Identity {
        user,
        groups,
        uid: None,
    })
}

type Cache<K, V> = Mutex<HashMap<K, (V, Instant)>>;

/// Checks identities and permissions against the apiserver, with caches.
pub struct Authenticator {
    client: Client,
    node: String,
    anonymous: bool,
    tokens: Cache<[u8; 32], Option<Identity>>,
    decisions: Cache<(Identity, &'static str, &'static str), bool>,
}

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOW_TTL: Duration = Duration::from_secs(300);
const DENY_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

fn cached<K: std::hash::Hash + Eq + Clone, V: Clone>(cache: &Cache<K, V>, key: &K) -> Option<V> {
    let c = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    c.get(key)
        .filter(|(_, exp)| *exp > Instant::now())
        .map(|(v, _)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(cache: &Cache<K, V>, key: K, value: V, ttl: Duration) {
    let mut c = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if c.len() >= CACHE_MAX {
        let now = Instant::now();
        c.retain(|_, (_, exp)| *exp > now);
        if c.len() >= CACHE_MAX {
            c.clear();
        }
    }
    c.insert(key, (value, Instant::now() + ttl));
}

/// Why a request could not be checked (the apiserver did not answer).
#[derive(Debug, thiserror::Error)]
#[error("the apiserver could not {what}")]
pub struct CheckError {
    what: &'static str,
    source: kube::Error,
}

impl Authenticator {
    /// An authenticator for node `node`.
    pub fn new(client: Client, node: String, anonymous: bool) -> Self {
        Self {
            client,
            node,
            anonymous,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The user behind a bearer token, by TokenReview; `None` if invalid.
    pub async fn review_token(&self, token: &str) -> Result<Option<Identity>, CheckError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(hit) = cached(&self.tokens, &key) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| CheckError {
                what: "review a token",
                source,
            })?;
        let status = out.status.unwrap_or_default();
        let id = if status.authenticated == Some(true) {
            status.user.map(|u| Identity {
                user: u.username.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                uid: u.uid,
            })
        } else {
            None
        };
        remember(&self.tokens, key, id.clone(), TOKEN_TTL);
        Ok(id)
    }

    /// Whether `who` may `verb` `nodes/<subresource>` of this node.
    pub async fn authorize(
        &self,
        who: &Identity,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, CheckError> {
        let key = (who.clone(), verb, subresource);
        if let Some(hit) = cached(&self.decisions, &key) {
            return Ok(hit);
        }
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                uid: who.uid.clone(),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let out = api
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|source| CheckError {
                what: "review access",
                source,
            })?;
        let allowed = out.status.is_some_and(|s| s.allowed);
        remember(
            &self.decisions,
            key,
            allowed,
            if allowed { ALLOW_TTL } else { DENY_TTL },
        );
        Ok(allowed)
    }
}

/// The verb a request needs, from its method.
fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// The `nodes` subresource a path needs, and a route label for metrics.
fn subresource(path: &str) -> (&'static str, &'static str) {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => ("stats", "stats"),
        "metrics" => ("metrics", "metrics"),
        "logs" => ("log", "logs"),
        "containerLogs" => ("proxy", "containerLogs"),
        "exec" => ("proxy", "exec"),
        "attach" => ("proxy", "attach"),
        "portForward" => ("proxy", "portForward"),
        "pods" => ("proxy", "pods"),
        "runningpods" => ("proxy", "runningpods"),
        "healthz" => ("proxy", "healthz"),
        _ => ("proxy", "other"),
    }
}

/// Authenticates and authorizes every request before its handler runs.
pub async fn middleware<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let (sub, route) = subresource(req.uri().path());
    let verb = verb(req.method());
    let from_cert = req.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let response = match check(&state, from_cert, bearer.as_deref(), verb, sub).await {
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err(resp) => resp,
    };
    state.metrics.request(route, response.status().as_u16());
    response
}

async fn check<P: Provider>(
    state: &State<P>,
    from_cert: Option<Identity>,
    bearer: Option<&str>,
    verb: &'static str,
    sub: &'static str,
) -> Result<Identity, Response> {
    let auth = &state.auth;
    let identity = match (from_cert, bearer) {
        (Some(id), _) => id,
        (None, Some(token)) => match auth.review_token(token).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(ApiError::unauthorized("the bearer token is not valid").into_response());
            }
            Err(e) => return Err(ApiError::internal(e).into_response()),
        },
        (None, None) if auth.anonymous => Identity {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            uid: None,
        },
        (None, None) => {
            return Err(ApiError::unauthorized(
                "a client certificate or a bearer token is required",
            )
            .into_response());
        }
    };
    match auth.authorize(&identity, verb, sub).await {
        Ok(true) => Ok(identity),
        Ok(false) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                identity.user
            ),
        )
        .into_response()),
        Err(e) => Err(ApiError::internal(e).into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        assert_eq!(subresource("/stats/summary").0, "stats");
        assert_eq!(subresource("/metrics/resource").0, "metrics");
        assert_eq!(subresource("/logs/").0, "log");
        assert_eq!(subresource("/containerLogs/ns/p/c").0, "proxy");
        assert_eq!(subresource("/exec/ns/p/c").0, "proxy");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::GET), "get");
    }

    #[test]
    fn certificate_subject_gives_user_and_groups() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let cert = p.self_signed(&key).unwrap();
        let id = identity_from_cert(cert.der()).unwrap();
        assert_eq!(id.user, "kube-apiserver-kubelet-client");
        assert_eq!(id.groups, ["system:masters"]);
    }
}
