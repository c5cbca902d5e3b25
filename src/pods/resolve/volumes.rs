//! The files of configMap, secret, downwardAPI and projected volumes, and of
//! the Secret a CSI volume names for its driver, as the kubelet's volume
//! plugins make them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, DownwardAPIVolumeFile, KeyToPath, Volume, VolumeProjection,
};
use skylet_provider::{Value, VolumeFile};

use super::build::{Inputs, Kind};
use super::downward::{field_value, resource_value};
use super::refs::TokenKey;
use super::{Error, Usage, service_account};

/// File mode of volume files when the pod sets none (the API server's default
/// for `defaultMode`).
const DEFAULT_MODE: u32 = 0o644;

/// The files of a volume skylet resolves; `None` for other kinds.
pub(super) fn volume_files(
    inputs: &Inputs<'_>,
    volume: &Volume,
    field: &str,
) -> Result<Option<Vec<VolumeFile>>, Error> {
    let mut files = Files::default();
    if let Some(cm) = &volume.config_map {
        let field = format!("{field}.configMap");
        let mode = default_mode(cm.default_mode, &field)?;
        let keys = Keys::new(Kind::ConfigMap, &cm.name, cm.items.as_deref(), cm.optional);
        files.key_files(inputs, &keys, mode, &field)?;
    } else if let Some(s) = &volume.secret {
        let field = format!("{field}.secret");
        let mode = default_mode(s.default_mode, &field)?;
        let name = s.secret_name.as_deref().unwrap_or_default();
        let keys = Keys::new(Kind::Secret, name, s.items.as_deref(), s.optional);
        files.key_files(inputs, &keys, mode, &field)?;
    } else if let Some(d) = &volume.downward_api {
        let field = format!("{field}.downwardAPI");
        let mode = default_mode(d.default_mode, &field)?;
        files.downward_files(inputs, d.items.as_deref().unwrap_or_default(), mode, &field)?;
    } else if let Some(p) = &volume.projected {
        let field = format!("{field}.projected");
        let mode = default_mode(p.default_mode, &field)?;
        for (j, source) in p.sources.iter().flatten().enumerate() {
            files.projection(inputs, source, mode, &format!("{field}.sources[{j}]"))?;
        }
    } else if let Some((name, f)) = volume
        .csi
        .as_ref()
        .and_then(|c| csi_secret(c, inputs.node.csi_secret_attributes))
    {
        // The driver's credentials, for backends that mount the volume
        // themselves: every key as a file.
        let field = format!("{field}.csi.{f}");
        let keys = Keys::new(Kind::Secret, name, None, None);
        files.key_files(inputs, &keys, DEFAULT_MODE, &field)?;
    } else {
        return Ok(None);
    }
    Ok(Some(files.0.into_values().collect()))
}

/// A ConfigMap or Secret whose keys become files, and which of its keys.
struct Keys<'a> {
    kind: Kind,
    name: &'a str,
    /// The keys to project and where; every key when `None` or empty.
    items: Option<&'a [KeyToPath]>,
    optional: Option<bool>,
}

impl<'a> Keys<'a> {
    fn new(
        kind: Kind,
        name: &'a str,
        items: Option<&'a [KeyToPath]>,
        optional: Option<bool>,
    ) -> Self {
        Self {
            kind,
            name,
            items,
            optional,
        }
    }
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
        keys: &Keys<'_>,
        default_mode: u32,
        field: &str,
    ) -> Result<(), Error> {
        let object = inputs.object(keys.kind, keys.name, keys.optional, Usage::Volume, field)?;
        let Some(object) = object else { return Ok(()) };
        let Some(items) = keys.items.filter(|i| !i.is_empty()) else {
            for (key, data) in object.files() {
                self.add(key, default_mode, object.value(data), field)?;
            }
            return Ok(());
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}.items[{i}]");
            let Some(data) = object.file(&item.key) else {
                if keys.optional == Some(true) {
                    continue;
                }
                return Err(inputs.missing_key(&object, &item.key, Usage::Volume, &field));
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
            let keys = Keys::new(Kind::ConfigMap, &cm.name, cm.items.as_deref(), cm.optional);
            self.key_files(inputs, &keys, default_mode, &format!("{field}.configMap"))?;
        }
        if let Some(s) = &source.secret {
            let keys = Keys::new(Kind::Secret, &s.name, s.items.as_deref(), s.optional);
            self.key_files(inputs, &keys, default_mode, &format!("{field}.secret"))?;
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

/// The `defaultMode` of the volume at `field`, [`DEFAULT_MODE`] when unset.
fn default_mode(mode: Option<i32>, field: &str) -> Result<u32, Error> {
    file_mode(mode, DEFAULT_MODE, &format!("{field}.defaultMode"))
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

/// The Secret a CSI volume names for its driver, and the field naming it:
/// `nodePublishSecretRef` for any driver, else the first attribute that
/// `attributes` (`(driver, attribute)` pairs, the backend's declaration)
/// names for the volume's driver and the volume sets. Such an attribute
/// names a Secret of the pod's namespace.
pub(super) fn csi_secret<'a>(
    csi: &'a CSIVolumeSource,
    attributes: &[(&str, &str)],
) -> Option<(&'a str, String)> {
    if let Some(r) = &csi.node_publish_secret_ref {
        return Some((r.name.as_str(), "nodePublishSecretRef".to_owned()));
    }
    let set = csi.volume_attributes.as_ref()?;
    attributes
        .iter()
        .filter(|(driver, _)| *driver == csi.driver)
        .find_map(|(_, attribute)| {
            let name = set.get(*attribute)?;
            Some((name.as_str(), format!("volumeAttributes.{attribute}")))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::super::fixtures::*;
    use super::super::{Error, NodeInfo, Usage, resolve};
    use super::*;

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

    /// What the ACI backend declares.
    const AZURE_FILES: &[(&str, &str)] = &[("file.csi.azure.com", "secretName")];

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
        let node = NodeInfo {
            csi_secret_attributes: AZURE_FILES,
            ..node()
        };
        let resolved = resolve(&fake, &node, &pod).await.unwrap();
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
        let err = resolve(&fake, &node, &pod).await.unwrap_err();
        assert!(
            err.to_string().starts_with(
                "spec.volumes[0].csi.volumeAttributes.secretName: Secret shop/nope not found"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn csi_secret_attributes_of_undeclared_drivers_are_not_resolved() {
        let fake = Fake::new(json!([
            {"kind": "Secret", "metadata": {"namespace": "shop", "name": "creds"}, "stringData": {"key": "k3y"}},
        ]));
        let pod = pod(json!({"containers": [{"name": "app"}], "volumes": [
            {"name": "share", "csi": {"driver": "file.csi.azure.com", "volumeAttributes": {"secretName": "creds"}}},
            {"name": "other", "csi": {"driver": "x.example", "volumeAttributes": {"secretName": "creds"}}}]}));
        // the backend declares no driver: neither attribute names a Secret
        let resolved = resolve_with(&fake, &pod).await.unwrap();
        assert!(
            resolved.pod.volumes.is_empty(),
            "{:?}",
            resolved.pod.volumes
        );
        assert_eq!(fake.calls(), Vec::<String>::new());

        // the backend declares one driver: only its volume is resolved
        let node = NodeInfo {
            csi_secret_attributes: AZURE_FILES,
            ..node()
        };
        let resolved = resolve(&fake, &node, &pod).await.unwrap();
        assert_eq!(resolved.pod.volumes.keys().collect::<Vec<_>>(), ["share"]);
        assert_eq!(fake.calls(), ["secret shop/creds"]);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("./a//b/"), Some("a/b".into()));
        assert_eq!(clean_path("/etc/passwd"), None);
        assert_eq!(clean_path("a/../../b"), None);
    }
}
