//! What differs between pods of one template: secret values, gathered into
//! one [`SecretPayload`], and per-pod environment, sent as RunTask
//! overrides unless it is too large; and the template key that names the
//! family and the secret.

use std::collections::BTreeMap;

use ring::hmac;
use skylet_provider::ProviderError;

use super::{TaskSpec, invalid};
use crate::names;

/// Overrides ECS accepts per RunTask (characters of JSON); skylet keeps a margin.
const OVERRIDES_LIMIT: usize = 8192 - 512;

/// Largest secret Secrets Manager stores.
const SECRET_LIMIT: usize = 65_536;

/// Secret values of one template: JSON key to value. Its `Debug` shows keys
/// only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretPayload(BTreeMap<String, String>);

impl std::fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretPayload")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretPayload {
    /// The JSON document stored in Secrets Manager.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// Keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What differs between pods of one template, gathered while containers
/// and volumes are translated.
#[derive(Debug, Default)]
pub(super) struct PodValues {
    /// Secret values by JSON key (the [`SecretPayload`]).
    pub(super) secret: BTreeMap<String, String>,
    /// Per-pod environment by ECS container name (RunTask overrides).
    pub(super) overrides: BTreeMap<String, Vec<(String, String)>>,
}

impl PodValues {
    /// Stores a secret value under `key`.
    pub(super) fn secret(&mut self, key: String, value: String) {
        self.secret.insert(key, value);
    }

    /// Adds variable `name` to the overrides of `container`.
    pub(super) fn per_pod(&mut self, container: &str, name: String, value: String) {
        self.overrides
            .entry(container.to_owned())
            .or_default()
            .push((name, value));
    }
}

/// The overrides RunTask gets. Per-pod environment that does not fit into
/// them ([`OVERRIDES_LIMIT`]) goes into the task definition instead, which
/// then serves this pod alone.
pub(super) fn fit_overrides(
    task: &mut TaskSpec,
    overrides: BTreeMap<String, Vec<(String, String)>>,
) -> Vec<(String, Vec<(String, String)>)> {
    if overrides_size(&overrides) <= OVERRIDES_LIMIT {
        return overrides.into_iter().collect();
    }
    for (name, env) in overrides {
        if let Some(c) = task.containers.iter_mut().find(|c| c.name == name) {
            c.environment.extend(env);
        }
    }
    Vec::new()
}

/// About the size of the overrides' JSON.
fn overrides_size(overrides: &BTreeMap<String, Vec<(String, String)>>) -> usize {
    overrides
        .iter()
        .map(|(c, env)| {
            c.len()
                + 40
                + env
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 30)
                    .sum::<usize>()
        })
        .sum()
}

/// The pod's secret values as one document, `None` without any.
///
/// # Errors
/// `SecretTooLarge` past what Secrets Manager stores ([`SECRET_LIMIT`]).
pub(super) fn secret_payload(
    secret: BTreeMap<String, String>,
) -> Result<Option<SecretPayload>, ProviderError> {
    let payload = SecretPayload(secret);
    if payload.to_json().len() > SECRET_LIMIT {
        return Err(invalid(
            "SecretTooLarge",
            format!(
                "the pod's Secret-derived environment and files add up to more than {SECRET_LIMIT} bytes, the Secrets Manager limit"
            ),
        ));
    }
    Ok((!payload.is_empty()).then_some(payload))
}

/// The template hash: of the task definition and, through an HMAC keyed
/// by `secret_key`, of the secret values.
pub(super) fn template_key(
    task: &TaskSpec,
    secret: Option<&SecretPayload>,
    secret_key: &hmac::Key,
) -> String {
    let mut hashed = serde_json::to_vec(task).unwrap_or_default();
    if let Some(payload) = secret {
        let tag = hmac::sign(secret_key, payload.to_json().as_bytes());
        hashed.extend_from_slice(b"|secret:");
        hashed.extend_from_slice(tag.as_ref());
    }
    names::short_hash(&hashed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{
        plan,
        tests::{key, pod, reason, settings, web},
    };

    #[test]
    fn overrides_past_the_limit_move_into_their_containers() {
        let mut task = plan(&pod("p", web()), &settings(), &key()).unwrap().task;
        let small: BTreeMap<_, _> =
            [("web".to_owned(), vec![("A".to_owned(), "a".to_owned())])].into();
        assert_eq!(
            fit_overrides(&mut task.clone(), small.clone()),
            small.into_iter().collect::<Vec<_>>()
        );
        let big: BTreeMap<_, _> = [(
            "web".to_owned(),
            vec![("A".to_owned(), "a".repeat(OVERRIDES_LIMIT))],
        )]
        .into();
        assert!(fit_overrides(&mut task, big).is_empty());
        assert_eq!(
            task.containers[0].environment.last().unwrap().1.len(),
            OVERRIDES_LIMIT
        );
    }

    #[test]
    fn the_secret_payload_is_none_when_empty_and_at_most_what_secrets_manager_holds() {
        assert!(secret_payload(BTreeMap::new()).unwrap().is_none());
        let one: BTreeMap<_, _> = [("k".to_owned(), "v".to_owned())].into();
        assert_eq!(
            secret_payload(one).unwrap().unwrap().to_json(),
            r#"{"k":"v"}"#
        );
        let huge: BTreeMap<_, _> = [("k".to_owned(), "v".repeat(SECRET_LIMIT))].into();
        assert_eq!(reason(secret_payload(huge).unwrap_err()), "SecretTooLarge");
    }
}
