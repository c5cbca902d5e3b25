//! Image pull Secrets → the group's registry credentials: user name and
//! password per registry host, the password write-only.

use base64::Engine;
use serde::Deserialize;
use skylet_provider::Value;

use crate::models::{ImageRegistryCredential, SecretString};

/// One entry of a docker config: no `Debug`, it holds a password.
#[derive(Deserialize)]
struct DockerAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// The registry host of a docker config key (`https://index.docker.io/v1/` → `index.docker.io`).
fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Registry credentials from the pod's pull Secrets (`.dockerconfigjson`
/// `{"auths": {server: {username, password, auth}}}` or legacy `.dockercfg`
/// `{server: {...}}`). Entries without a user name and password (identity
/// tokens) and unparsable Secrets are skipped, as the kubelet does; the
/// first Secret naming a server wins.
pub fn registry_credentials(pull_secrets: &[(String, Value)]) -> Vec<ImageRegistryCredential> {
    let mut out: Vec<ImageRegistryCredential> = Vec::new();
    for (secret, value) in pull_secrets {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&value.data) else {
            tracing::warn!(secret = %secret, "image pull secret is not JSON; skipped");
            continue;
        };
        let auths = doc.get("auths").filter(|a| a.is_object()).unwrap_or(&doc);
        let Some(auths) = auths.as_object() else {
            continue;
        };
        for (server, entry) in auths {
            let Ok(a) = serde_json::from_value::<DockerAuth>(entry.clone()) else {
                continue;
            };
            let decoded = a
                .auth
                .as_deref()
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok());
            let from_auth = decoded
                .as_deref()
                .and_then(|d| d.split_once(':'))
                .map(|(u, p)| (u.to_owned(), p.to_owned()));
            let (user, password) = match (
                a.username.filter(|u| !u.is_empty()),
                a.password.filter(|p| !p.is_empty()),
            ) {
                (Some(u), Some(p)) => (u, p),
                _ => match from_auth {
                    Some(up) => up,
                    None => {
                        tracing::debug!(secret = %secret, server = %server, "pull secret entry without user name and password; skipped");
                        continue;
                    }
                },
            };
            let host = registry_host(server);
            if host.is_empty() || out.iter().any(|c| c.server == host) {
                continue;
            }
            out.push(ImageRegistryCredential {
                server: host,
                username: Some(user),
                password: Some(SecretString::new(password)),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_credentials_from_pull_secrets() {
        let creds = registry_credentials(&[
            (
                "a".into(),
                Value::secret(
                    r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwOnc="},"r.azurecr.io":{"username":"u","password":"p"}}}"#,
                ),
            ),
            (
                "legacy".into(),
                Value::secret(r#"{"quay.io":{"username":"q","password":"qp","email":"x@y"}}"#),
            ),
            (
                "dup".into(),
                Value::secret(r#"{"auths":{"r.azurecr.io":{"username":"other","password":"o"}}}"#),
            ),
            (
                "token".into(),
                Value::secret(r#"{"auths":{"t.io":{"identitytoken":"xyz"}}}"#),
            ),
            ("broken".into(), Value::secret("not json")),
        ]);
        let got: Vec<(&str, &str, &str)> = creds
            .iter()
            .map(|c| {
                (
                    c.server.as_str(),
                    c.username.as_deref().unwrap(),
                    c.password.as_ref().unwrap().expose(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("index.docker.io", "user", "p:w"),
                ("r.azurecr.io", "u", "p"),
                ("quay.io", "q", "qp")
            ]
        );
        assert!(!format!("{creds:?}").contains("qp"));
    }
}
