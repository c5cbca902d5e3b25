//! Pod volumes → the group's volumes.
//!
//! | pod volume | ACI volume |
//! |---|---|
//! | emptyDir (any medium, size ignored) | `emptyDir` |
//! | configMap, secret, downwardAPI, projected (incl. the service-account token) | `secret`: file name → base64 of the contents the core resolved; write-only, so configMap data stays out of plain view too. Files must sit at the volume's top level (ACI keys are file names); modes are ACI's |
//! | csi with driver `file.csi.azure.com` | `azureFile`: `volumeAttributes.shareName`, the account from `volumeAttributes.storageAccount` or the Secret's `azurestorageaccountname`, the key from its `azurestorageaccountkey` (the core resolves the Secret of `nodePublishSecretRef`/`secretName` into the volume's files) |
//! | any volume with annotation `skylet.io/aci-azure-file-<volume>: [<account>/]<share>` | `azureFile` with the key (and account) from that volume's resolved Secret files |
//! | gitRepo | `gitRepo` |
//! | anything else (hostPath, PVCs, other CSI drivers, ...) | refused |
//!
//! Mounts of volumes holding resolved files are read-only
//! ([`super::containers`] mounts them).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::api::core::v1::{CSIVolumeSource, PodSpec, Volume as KubeVolume};
use skylet_provider::{ProviderError, ResolvedPod, Value, VolumeFile};

use super::{ANNOTATION_AZURE_FILE_PREFIX, bad_annotation, invalid};
use crate::models::{AzureFileVolume, EmptyDir, GitRepoVolume, SecretMap, SecretString, Volume};

/// The CSI driver of Azure Files.
pub const AZURE_FILE_CSI_DRIVER: &str = "file.csi.azure.com";
/// Secret key of the storage account name (Azure Files CSI driver convention).
pub const ACCOUNT_NAME_KEY: &str = "azurestorageaccountname";
/// Secret key of the storage account key.
pub const ACCOUNT_KEY_KEY: &str = "azurestorageaccountkey";

/// The group's volumes, and the names of those holding resolved files.
pub(super) fn volumes(
    rp: &ResolvedPod,
    spec: &PodSpec,
    ann: &BTreeMap<String, String>,
) -> Result<(Vec<Volume>, BTreeSet<String>), ProviderError> {
    check_share_annotations(spec, ann)?;
    let mut out = Vec::new();
    let mut files = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let resolved = rp
            .volumes
            .get(&v.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let volume = volume(&path, v, resolved, ann)?;
        if volume.secret.is_some() {
            files.insert(v.name.clone());
        }
        out.push(volume);
    }
    Ok((out, files))
}

/// Refuses an Azure Files annotation naming a volume the pod lacks.
fn check_share_annotations(
    spec: &PodSpec,
    ann: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let declared: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for key in ann.keys() {
        if let Some(v) = key.strip_prefix(ANNOTATION_AZURE_FILE_PREFIX)
            && !declared.contains(v)
        {
            return Err(invalid(
                "InvalidAnnotation",
                format!(
                    "metadata.annotations[{key}]: the pod has no volume {v:?}; declare it (a secret volume with the storage account key)"
                ),
            ));
        }
    }
    Ok(())
}

/// The ACI volume of pod volume `v` (at `path`), whose files the core
/// resolved into `resolved`.
fn volume(
    path: &str,
    v: &KubeVolume,
    resolved: &[VolumeFile],
    ann: &BTreeMap<String, String>,
) -> Result<Volume, ProviderError> {
    let mut volume = Volume {
        name: v.name.clone(),
        ..Default::default()
    };
    if let Some(share) = ann.get(&format!("{ANNOTATION_AZURE_FILE_PREFIX}{}", v.name)) {
        volume.azure_file = Some(annotated_share(path, &v.name, resolved, share)?);
    } else if v.empty_dir.is_some() {
        volume.empty_dir = Some(EmptyDir {});
    } else if v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
    {
        match secret_files(path, &v.name, resolved)? {
            Some(map) => volume.secret = Some(map),
            // nothing to write (an optional source that is absent): an
            // empty directory, as the kubelet mounts
            None => volume.empty_dir = Some(EmptyDir {}),
        }
    } else if let Some(csi) = &v.csi {
        volume.azure_file = Some(csi_share(path, &v.name, csi, resolved)?);
    } else if let Some(git) = &v.git_repo {
        volume.git_repo = Some(GitRepoVolume {
            directory: git.directory.clone().filter(|d| !d.is_empty()),
            repository: git.repository.clone(),
            revision: git.revision.clone().filter(|r| !r.is_empty()),
        });
    } else {
        return Err(unsupported_kind(path, v));
    }
    Ok(volume)
}

/// The Azure Files share of annotation `skylet.io/aci-azure-file-<name>:
/// [<account>/]<share>`.
fn annotated_share(
    path: &str,
    name: &str,
    resolved: &[VolumeFile],
    share: &str,
) -> Result<AzureFileVolume, ProviderError> {
    let (account, share) = match share.split_once('/') {
        Some((a, s)) => (Some(a.trim()), s.trim()),
        None => (None, share.trim()),
    };
    if share.is_empty() || account.is_some_and(str::is_empty) {
        return Err(bad_annotation(
            &format!("{ANNOTATION_AZURE_FILE_PREFIX}{name}"),
            share,
            "use <account>/<share> or <share>",
        ));
    }
    azure_file(path, name, resolved, share, account, None)
}

/// The Azure Files share of a csi volume; other drivers are refused.
fn csi_share(
    path: &str,
    name: &str,
    csi: &CSIVolumeSource,
    resolved: &[VolumeFile],
) -> Result<AzureFileVolume, ProviderError> {
    if csi.driver != AZURE_FILE_CSI_DRIVER {
        return Err(invalid(
            "UnsupportedVolume",
            format!(
                "{path}.csi.driver: {:?} cannot be mounted by ACI; only {AZURE_FILE_CSI_DRIVER} (Azure Files) is supported",
                csi.driver
            ),
        ));
    }
    let attrs = csi.volume_attributes.clone().unwrap_or_default();
    let Some(share) = attrs.get("shareName").filter(|s| !s.is_empty()) else {
        return Err(invalid(
            "UnsupportedVolume",
            format!("{path}.csi.volumeAttributes.shareName: required for an Azure Files volume"),
        ));
    };
    let account = attrs
        .get("storageAccount")
        .or(attrs.get("storageAccountName"))
        .map(String::as_str);
    azure_file(path, name, resolved, share, account, csi.read_only)
}

/// The refusal of a volume kind ACI cannot mount, naming the kind.
fn unsupported_kind(path: &str, v: &KubeVolume) -> ProviderError {
    // the name of whichever source field is set
    let kind = serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into());
    let hint = if kind == "azureFile" {
        format!(
            "; use a csi volume with driver {AZURE_FILE_CSI_DRIVER} and volumeAttributes shareName and secretName"
        )
    } else {
        String::new()
    };
    invalid(
        "UnsupportedVolume",
        format!(
            "{path}.{kind}: volume {:?} is a {kind} volume, which ACI cannot mount; skylet supports emptyDir, configMap, secret, \
             downwardAPI, projected, gitRepo and Azure Files{hint}",
            v.name
        ),
    )
}

/// A `secret` volume of resolved files; `None` when there are none.
fn secret_files(
    path: &str,
    name: &str,
    resolved: &[VolumeFile],
) -> Result<Option<SecretMap>, ProviderError> {
    let mut map = BTreeMap::new();
    for f in resolved {
        if f.path.contains('/') {
            return Err(invalid(
                "UnsupportedVolume",
                format!(
                    "{path}: file {:?} of volume {name:?} is in a subdirectory; ACI secret volumes hold files at their top level only: \
                     give its item a path without '/' (or mount it from a volume of its own)",
                    f.path
                ),
            ));
        }
        map.insert(
            f.path.clone(),
            SecretString::new(base64::engine::general_purpose::STANDARD.encode(&f.value.data)),
        );
    }
    Ok((!map.is_empty()).then_some(SecretMap(map)))
}

fn file_value<'a>(resolved: &'a [VolumeFile], key: &str) -> Option<&'a Value> {
    resolved.iter().find(|f| f.path == key).map(|f| &f.value)
}

fn azure_file(
    path: &str,
    name: &str,
    resolved: &[VolumeFile],
    share: &str,
    account: Option<&str>,
    read_only: Option<bool>,
) -> Result<AzureFileVolume, ProviderError> {
    let key = file_value(resolved, ACCOUNT_KEY_KEY).map(|v| v.as_str().trim().to_owned()).filter(|k| !k.is_empty()).ok_or_else(|| {
        invalid(
            "UnsupportedVolume",
            format!(
                "{path}: the storage account key of Azure Files volume {name:?} cannot be resolved: reference a Secret with \
                 {ACCOUNT_KEY_KEY} (csi nodePublishSecretRef or volumeAttributes.secretName, or a secret volume of that name)"
            ),
        )
    })?;
    let account = match account.filter(|a| !a.is_empty()) {
        Some(a) => a.to_owned(),
        None => file_value(resolved, ACCOUNT_NAME_KEY).map(|v| v.as_str().trim().to_owned()).filter(|a| !a.is_empty()).ok_or_else(|| {
            invalid(
                "UnsupportedVolume",
                format!("{path}: Azure Files volume {name:?} names no storage account: put {ACCOUNT_NAME_KEY} in its Secret or name the account"),
            )
        })?,
    };
    Ok(AzureFileVolume {
        share_name: share.to_owned(),
        read_only,
        storage_account_name: account,
        storage_account_key: Some(SecretString::new(key)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::super::{
        container_group,
        fixtures::{b64, file, group, pod, pod_with, refusal, settings},
    };

    #[test]
    fn file_volumes_become_secret_volumes() {
        let mut rp = pod(json!({
            "containers": [{"name": "app", "image": "app", "volumeMounts": [
                {"name": "conf", "mountPath": "/etc/app"},
                {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                {"name": "info", "mountPath": "/info", "readOnly": true},
                {"name": "missing", "mountPath": "/opt"}]}],
            "volumes": [{"name": "conf", "configMap": {"name": "conf"}},
                        {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                                    {"configMap": {"name": "kube-root-ca.crt"}}]}},
                        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                        {"name": "missing", "configMap": {"name": "gone", "optional": true}}]}));
        rp.volumes.insert(
            "conf".into(),
            vec![file("app.yaml", Value::plain("port: 80\n"))],
        );
        rp.volumes.insert(
            "token".into(),
            vec![
                file("token", Value::secret("eyJhbGciOi")),
                file("ca.crt", Value::plain("CERT")),
            ],
        );
        rp.volumes
            .insert("info".into(), vec![file("name", Value::plain("p"))]);
        let g = group(&rp);
        let v = &g.properties.volumes;
        let secret = |i: usize, k: &str| v[i].secret.as_ref().unwrap().0[k].expose().to_owned();
        assert_eq!(secret(0, "app.yaml"), b64("port: 80\n"));
        assert_eq!(secret(1, "token"), b64("eyJhbGciOi"));
        assert_eq!(secret(1, "ca.crt"), b64("CERT"));
        assert_eq!(secret(2, "name"), b64("p"));
        assert_eq!(
            (v[3].secret.as_ref(), v[3].empty_dir),
            (None, Some(EmptyDir {})),
            "an absent optional source is an empty directory"
        );
        let mounts = &g.properties.containers[0].properties.volume_mounts;
        assert!(
            mounts[..3].iter().all(|m| m.read_only == Some(true)),
            "file volumes are read-only"
        );
        assert_eq!(mounts[3].read_only, None);
        // nested paths cannot be expressed
        rp.volumes
            .insert("conf".into(), vec![file("sub/app.yaml", Value::plain("x"))]);
        let (reason, message) = refusal(container_group(&rp, &settings()));
        assert_eq!(reason, "UnsupportedVolume");
        assert!(
            message.contains("spec.volumes[0]") && message.contains("sub/app.yaml"),
            "{message}"
        );
    }

    #[test]
    fn azure_files_from_csi_or_annotation() {
        let spec = json!({
            "containers": [{"name": "app", "image": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "logs", "mountPath": "/logs"}]}],
            "volumes": [{"name": "data", "csi": {"driver": "file.csi.azure.com", "readOnly": true,
                                                 "volumeAttributes": {"shareName": "share1", "secretName": "storage"}}},
                        {"name": "logs", "secret": {"secretName": "storage2"}}]});
        let mut rp = pod_with(
            "p",
            json!({"skylet.io/aci-azure-file-logs": "acct2/logshare"}),
            spec,
        );
        rp.volumes.insert(
            "data".into(),
            vec![
                file(ACCOUNT_NAME_KEY, Value::secret("acct1")),
                file(ACCOUNT_KEY_KEY, Value::secret("a2V5MQ==")),
            ],
        );
        rp.volumes.insert(
            "logs".into(),
            vec![file(ACCOUNT_KEY_KEY, Value::secret("a2V5Mg=="))],
        );
        let g = group(&rp);
        let data = g.properties.volumes[0].azure_file.as_ref().unwrap();
        assert_eq!(
            (
                data.share_name.as_str(),
                data.storage_account_name.as_str(),
                data.read_only
            ),
            ("share1", "acct1", Some(true))
        );
        assert_eq!(
            data.storage_account_key.as_ref().map(SecretString::expose),
            Some("a2V5MQ==")
        );
        let logs = g.properties.volumes[1].azure_file.as_ref().unwrap();
        assert_eq!(
            (logs.share_name.as_str(), logs.storage_account_name.as_str()),
            ("logshare", "acct2")
        );
        assert!(
            g.properties.volumes[1].secret.is_none(),
            "the annotated volume is the share, not the Secret's files"
        );
        assert!(!format!("{g:?}").contains("a2V5"), "keys are redacted");
        // no key resolved: say so
        rp.volumes.remove("data");
        let (reason, message) = refusal(container_group(&rp, &settings()));
        assert_eq!(reason, "UnsupportedVolume");
        assert!(
            message.contains("spec.volumes[0]") && message.contains(ACCOUNT_KEY_KEY),
            "{message}"
        );
    }

    #[test]
    fn other_volume_kinds_and_mounts_are_refused() {
        for (volume, mount, needle) in [
            (
                json!({"name": "v", "hostPath": {"path": "/"}}),
                json!({}),
                "spec.volumes[0].hostPath",
            ),
            (
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "c"}}),
                json!({}),
                "persistentVolumeClaim",
            ),
            (
                json!({"name": "v", "csi": {"driver": "disk.csi.azure.com"}}),
                json!({}),
                "spec.volumes[0].csi.driver",
            ),
            (
                json!({"name": "v", "azureFile": {"secretName": "s", "shareName": "x"}}),
                json!({}),
                "file.csi.azure.com",
            ),
            (
                json!({"name": "v", "csi": {"driver": "file.csi.azure.com"}}),
                json!({}),
                "shareName",
            ),
            (
                json!({"name": "v", "emptyDir": {}}),
                json!({"subPath": "x"}),
                "spec.containers[0].volumeMounts[0].subPath",
            ),
        ] {
            let mut m = json!({"name": "v", "mountPath": "/v"});
            m.as_object_mut()
                .unwrap()
                .extend(mount.as_object().unwrap().clone());
            let rp = pod(
                json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [m]}], "volumes": [volume]}),
            );
            let (_, message) = refusal(container_group(&rp, &settings()));
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let git = pod(json!({"containers": [{"name": "a", "image": "i"}],
                             "volumes": [{"name": "src", "gitRepo": {"repository": "https://x/y.git", "revision": "abc"}}]}));
        let g = group(&git);
        assert_eq!(
            g.properties.volumes[0]
                .git_repo
                .as_ref()
                .unwrap()
                .revision
                .as_deref(),
            Some("abc")
        );
        let stray = pod_with(
            "p",
            json!({"skylet.io/aci-azure-file-nope": "a/b"}),
            json!({"containers": [{"name": "a", "image": "i"}]}),
        );
        assert!(
            refusal(container_group(&stray, &settings()))
                .1
                .contains("no volume \"nope\"")
        );
    }
}
