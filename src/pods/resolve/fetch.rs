//! Step 2 of resolution: fetch each referenced object once, concurrently,
//! and request the service-account tokens; the only step that talks to the
//! API server. Also when the tokens must be refreshed.

use std::collections::HashMap;

use futures::future::{try_join_all, try_join3};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    authentication::v1::TokenRequestStatus,
    core::v1::{ConfigMap, Pod, Secret},
};
use skylet_provider::PodRef;

use super::refs::{Origin, References, TokenKey};
use super::{Error, Source, namespace, service_account};

/// A token is refreshed at the latest this long after it was issued, however
/// long it lives (the kubelet token manager's `maxTTL`).
const MAX_TOKEN_AGE: SignedDuration = SignedDuration::from_hours(24);
/// The objects a pod references; `None` for a ConfigMap or Secret that does
/// not exist.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    pub(super) config_maps: HashMap<String, Option<ConfigMap>>,
    pub(super) secrets: HashMap<String, Option<Secret>>,
    pub(super) tokens: HashMap<TokenKey, TokenRequestStatus>,
}

pub(super) async fn fetch<S: Source>(
    source: &S,
    pod: &Pod,
    refs: &References,
) -> Result<Fetched, Error> {
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
pub(super) fn refresh_at(
    tokens: &HashMap<TokenKey, TokenRequestStatus>,
    now: Timestamp,
) -> Option<Timestamp> {
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
fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use jiff::{SignedDuration, Timestamp};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;
    use skylet_provider::Value;

    use super::super::fixtures::*;
    use super::*;

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
}
