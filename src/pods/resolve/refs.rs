//! Step 1 of resolution: every ConfigMap, Secret and service-account token
//! a pod references, each with the field of its first reference (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccountTokenProjection, Volume};

use super::volumes::csi_secret;
use super::{Usage, containers, spec};

/// Lifetime of a projected service-account token when the pod sets none.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// A projected service-account token, as requested; one per distinct pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TokenKey {
    pub(super) audience: Option<String>,
    pub(super) expiration_seconds: i64,
}

impl TokenKey {
    pub(super) fn of(p: &ServiceAccountTokenProjection) -> Self {
        Self {
            audience: p.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: p.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
        }
    }
}

/// The first reference to an object, for the messages of fetch errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub(super) usage: Usage,
    pub(super) field: String,
}

/// Every object a pod references, by name, with its first reference. Volumes
/// come first, as the kubelet mounts volumes before it starts containers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct References {
    pub(super) config_maps: BTreeMap<String, Origin>,
    pub(super) secrets: BTreeMap<String, Origin>,
    pub(super) tokens: BTreeMap<TokenKey, Origin>,
}

impl References {
    /// The references of `pod`; `csi_secret_attributes` as in
    /// [`NodeInfo::csi_secret_attributes`](super::NodeInfo::csi_secret_attributes).
    pub(super) fn of(pod: &Pod, csi_secret_attributes: &[(&str, &str)]) -> Self {
        let mut refs = Self::default();
        for (i, volume) in spec(pod).volumes.iter().flatten().enumerate() {
            refs.add_volume(volume, &format!("spec.volumes[{i}]"), csi_secret_attributes);
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

    fn add_volume(&mut self, volume: &Volume, field: &str, csi_secret_attributes: &[(&str, &str)]) {
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
        let csi = volume.csi.as_ref();
        if let Some((name, f)) = csi.and_then(|c| csi_secret(c, csi_secret_attributes)) {
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
