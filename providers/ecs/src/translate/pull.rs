//! Image pull Secrets → ECS `repositoryCredentials`.
//!
//! ECS pulls from a private registry (other than ECR, which the execution
//! role reaches) with the credentials of a Secrets Manager secret that
//! holds `{"username": ..., "password": ...}`, named per container in
//! its definition's `repositoryCredentials.credentialsParameter`. skylet
//! converts each of the pod's pull Secrets (`.dockerconfigjson` or the
//! legacy `.dockercfg`, resolved by the core) into such a document for
//! the registry of each container's image, matched as the kubelet matches
//! them (the registry host; `docker.io` for a bare image name, also
//! known as `index.docker.io`; a `*.` wildcard on the first label). One
//! secret per pull Secret and registry: `skylet/<node>/<template
//! key>-pull-<n>`, created with the template, removed with it.
//!
//! The template key covers which pull Secret serves which container and
//! an HMAC of the credentials, so a changed password is a new template.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::hmac;
use serde_json::{Value as Json, json};
use skylet_provider::{ResolvedPod, Value};

use super::TaskSpec;
use crate::names;

/// The credentials of one registry from one pull Secret, for the
/// containers whose images come from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSecret {
    /// The pull Secret, `namespace/name`.
    pub source: String,
    /// The registry host the credentials are for.
    pub registry: String,
    /// ECS names of the containers that pull with them.
    pub containers: Vec<String>,
    /// `{"username": ..., "password": ...}`, secret.
    pub payload: Value,
}

/// The pull Secrets of `rp` that the containers of `task` need, in the
/// order of the pod's `imagePullSecrets` (the first that has credentials
/// for a container's registry serves it, as the kubelet tries them).
/// A Secret that does not parse, or has no credentials for a registry,
/// serves no container: the pull goes without, as the kubelet's would.
pub fn pull_secrets(rp: &ResolvedPod, task: &TaskSpec) -> Vec<PullSecret> {
    let ns = rp.pod.metadata.namespace.as_deref().unwrap_or_default();
    let parsed: Vec<(String, Auths)> = rp
        .image_pull_secrets
        .iter()
        .map(|(name, v)| (format!("{ns}/{name}"), auths(&v.data)))
        .collect();
    let mut out: Vec<PullSecret> = Vec::new();
    for c in &task.containers {
        let registry = registry_of(&c.image);
        let found = parsed.iter().find_map(|(source, auths)| {
            auths
                .iter()
                .find(|(host, _)| host_matches(host, &registry))
                .map(|(host, creds)| (source, host, creds))
        });
        let Some((source, host, (user, password))) = found else {
            continue;
        };
        if let Some(p) = out
            .iter_mut()
            .find(|p| p.source == *source && p.registry == *host)
        {
            p.containers.push(c.name.clone());
            continue;
        }
        out.push(PullSecret {
            source: source.clone(),
            registry: host.clone(),
            containers: vec![c.name.clone()],
            payload: Value::secret(json!({"username": user, "password": password}).to_string()),
        });
    }
    out
}

/// `key` extended with which pull Secret serves which container and an
/// HMAC of their credentials (unchanged without pull Secrets).
pub fn keyed(key: String, pulls: &[PullSecret], secret_key: &hmac::Key) -> String {
    if pulls.is_empty() {
        return key;
    }
    let mut hashed = key.into_bytes();
    for p in pulls {
        hashed.extend_from_slice(
            format!(
                "|pull:{}@{}:{}",
                p.source,
                p.registry,
                p.containers.join(",")
            )
            .as_bytes(),
        );
        hashed.extend_from_slice(hmac::sign(secret_key, &p.payload.data).as_ref());
    }
    names::short_hash(&hashed)
}

/// The registry host of an image reference (`docker.io` for a name
/// without one), as Docker parses it.
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => normalize(first),
        _ => "docker.io".to_owned(),
    }
}

/// A registry key of a Docker config (`https://index.docker.io/v1/`,
/// `ghcr.io`) as a host.
fn normalize(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Whether the credentials for `host` (from a Docker config) serve
/// `registry`; `*.example.com` covers one label.
fn host_matches(host: &str, registry: &str) -> bool {
    if let Some(suffix) = host.strip_prefix("*.") {
        return registry
            .split_once('.')
            .is_some_and(|(_, rest)| rest == suffix);
    }
    host == registry
}

/// Registry host → (username, password).
type Auths = BTreeMap<String, (String, String)>;

/// Registry → (username, password) of a `.dockerconfigjson` (`{"auths":
/// {...}}`) or legacy `.dockercfg` (the map itself); `auth` (base64 of
/// `user:password`) where username and password are absent.
fn auths(data: &[u8]) -> Auths {
    let Ok(doc) = serde_json::from_slice::<Json>(data) else {
        return BTreeMap::new();
    };
    let map = doc.get("auths").unwrap_or(&doc);
    let Some(map) = map.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(key, entry)| {
            let field = |k: &str| entry.get(k).and_then(Json::as_str).unwrap_or_default();
            let (user, password) = match (field("username"), field("password")) {
                (u, p) if !u.is_empty() && !p.is_empty() => (u.to_owned(), p.to_owned()),
                _ => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(field("auth"))
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    let (u, p) = text.split_once(':')?;
                    (u.to_owned(), p.to_owned())
                }
            };
            Some((normalize(key), (user, password)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{
        plan,
        tests::{key, pod, settings},
    };

    fn with_pull(images: &[(&str, &str)], secrets: &[(&str, serde_json::Value)]) -> ResolvedPod {
        let containers: Vec<_> = images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        let mut rp = pod("p", json!({"containers": containers}));
        rp.image_pull_secrets = secrets
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Value::secret(v.to_string())))
            .collect();
        rp
    }

    #[test]
    fn each_container_pulls_with_the_credentials_for_its_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let rp = with_pull(
            &[
                ("app", "registry.example.com/team/app:1"),
                ("side", "registry.example.com:5000/side"),
                ("hub", "nginx"),
                ("ecr", "123.dkr.ecr.us-east-1.amazonaws.com/x"),
            ],
            &[
                (
                    "corp",
                    json!({"auths": {"registry.example.com": {"username": "u", "password": "p"},
                                     "https://index.docker.io/v1/": {"auth": auth}}}),
                ),
                (
                    "port",
                    json!({"registry.example.com:5000": {"username": "u2", "password": "p2"}}),
                ),
            ],
        );
        let task = plan(&rp, &settings(), &key()).unwrap().task;
        let pulls = pull_secrets(&rp, &task);
        let got: Vec<(&str, &str, Vec<String>)> = pulls
            .iter()
            .map(|p| (p.source.as_str(), p.registry.as_str(), p.containers.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("shop/corp", "registry.example.com", vec!["app".to_owned()]),
                (
                    "shop/port",
                    "registry.example.com:5000",
                    vec!["side".to_owned()]
                ),
                ("shop/corp", "docker.io", vec!["hub".to_owned()]),
            ],
            "ECR takes the execution role: no credentials"
        );
        let doc: Json = serde_json::from_slice(&pulls[2].payload.data).unwrap();
        assert_eq!(doc, json!({"username": "robot", "password": "s3cret"}));
        assert!(pulls[0].payload.secret);
        assert!(
            !format!("{pulls:?}").contains("s3cret"),
            "credentials never appear in debug output"
        );
    }

    #[test]
    fn malformed_or_unmatched_secrets_serve_nothing_and_wildcards_match_one_label() {
        let rp = with_pull(
            &[
                ("a", "eu.registry.example.com/a"),
                ("b", "x.y.example.com/b"),
            ],
            &[
                ("bad", json!("not a config")),
                (
                    "wild",
                    json!({"auths": {"*.registry.example.com": {"username": "u", "password": "p"},
                                     "*.example.com": {"username": "v", "password": "q"}}}),
                ),
            ],
        );
        let task = plan(&rp, &settings(), &key()).unwrap().task;
        let pulls = pull_secrets(&rp, &task);
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        assert_eq!(pulls[0].containers, ["a"]);
    }

    #[test]
    fn the_key_changes_with_the_credentials() {
        let rp = |pw: &str| {
            with_pull(
                &[("app", "registry.example.com/app")],
                &[(
                    "corp",
                    json!({"auths": {"registry.example.com": {"username": "u", "password": pw}}}),
                )],
            )
        };
        let key_of = |rp: &ResolvedPod| plan(rp, &settings(), &key()).unwrap().key;
        assert_ne!(key_of(&rp("one")), key_of(&rp("two")));
        let bare = pod(
            "p",
            json!({"containers": [{"name": "app", "image": "registry.example.com/app"}]}),
        );
        assert_ne!(key_of(&rp("one")), key_of(&bare));
    }
}
