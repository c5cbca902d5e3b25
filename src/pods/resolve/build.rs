//! Step 3 of resolution: the resolved pod from the pod and the fetched
//! objects (pure). The environment, the downward API and the volume files
//! have their own modules; this one holds what they read ([`Inputs`], a
//! ConfigMap or Secret as an [`Object`]) and puts the pieces together.

use std::collections::BTreeMap;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use skylet_provider::{ResolvedPod, Value};

use super::env::{container_env, expand_commands};
use super::fetch::Fetched;
use super::volumes::volume_files;
use super::{Error, NodeInfo, Usage, containers, namespace, spec};

/// Everything the pure part reads.
pub(super) struct Inputs<'a> {
    pub(super) pod: &'a Pod,
    pub(super) node: &'a NodeInfo,
    pub(super) fetched: &'a Fetched,
}

/// A ConfigMap or Secret reduced to its keys.
pub(super) struct Object<'a> {
    pub(super) kind: Kind,
    pub(super) name: &'a str,
    /// A ConfigMap's `data` or a Secret's `data`: what the environment reads.
    pub(super) entries: BTreeMap<&'a str, &'a [u8]>,
    /// A ConfigMap's `binaryData`: volumes only.
    pub(super) binary: BTreeMap<&'a str, &'a [u8]>,
}

impl Object<'_> {
    pub(super) fn value(&self, data: &[u8]) -> Value {
        Value {
            data: Bytes::copy_from_slice(data),
            secret: matches!(self.kind, Kind::Secret),
        }
    }

    /// A key as a volume sees it: `data`, else `binaryData`.
    pub(super) fn file(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .get(key)
            .or_else(|| self.binary.get(key))
            .copied()
    }

    /// Every key as a volume sees it.
    pub(super) fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .chain(&self.binary)
            .map(|(k, v)| (*k, *v))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

impl Inputs<'_> {
    pub(super) fn namespace(&self) -> &str {
        namespace(self.pod)
    }

    /// A referenced object; `Ok(None)` when it is missing and `optional`.
    pub(super) fn object<'a>(
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

    pub(super) fn missing_key(
        &self,
        object: &Object<'_>,
        key: &str,
        usage: Usage,
        field: &str,
    ) -> Error {
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

pub(super) fn build(
    inputs: &Inputs<'_>,
    services: &[(String, String)],
) -> Result<ResolvedPod, Error> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::super::fixtures::*;

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
}
