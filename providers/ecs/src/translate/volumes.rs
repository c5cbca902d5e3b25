//! The pod's volumes as task volumes, and the files container that writes
//! the files of configMap, secret, downwardAPI and projected volumes into
//! them before any other container starts.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::api::core::v1::{PodSpec, Volume as KubeVolume};
use skylet_provider::{ProviderError, ResolvedPod, VolumeFile};

use super::{ContainerSpec, DEFAULT_RESERVATION_MIB, invalid, values::PodValues};
use crate::{config::ServiceAccountToken, names::FILES_CONTAINER};

/// The mount point of volume `name` inside the files container.
fn files_dir(volume: &str) -> String {
    format!("/skylet/volumes/{volume}")
}

/// How the pod's volumes map to task volumes.
#[derive(Debug, Default)]
pub(super) struct VolumeLayout {
    /// Task volumes, named by position (`v0`, `v1`, ...): Kubernetes names
    /// can differ between replicas (`kube-api-access-<random>`).
    pub(super) volumes: Vec<String>,
    /// Task volume by Kubernetes volume name.
    pub(super) names: BTreeMap<String, String>,
    /// Task volumes the files container fills (mounted read-only).
    pub(super) files: BTreeSet<String>,
}

/// The task volume of the pod's volume at `index`.
fn task_volume(index: usize) -> String {
    format!("v{index}")
}

/// The task volumes of the pod, and the files container that fills those
/// holding files (configMap, secret, downwardAPI, projected).
///
/// # Errors
/// `UnsupportedVolume` for any other kind than these and emptyDir.
pub(super) fn volume_layout(
    rp: &ResolvedPod,
    spec: &PodSpec,
    token: ServiceAccountToken,
    values: &mut PodValues,
) -> Result<(VolumeLayout, FilesContainer), ProviderError> {
    let mut layout = VolumeLayout::default();
    let mut files = FilesContainer::default();
    for (vi, v) in spec.volumes.iter().flatten().enumerate() {
        let ecs_volume = task_volume(vi);
        layout.names.insert(v.name.clone(), ecs_volume.clone());
        match volume_kind(v) {
            VolumeKind::EmptyDir => {}
            VolumeKind::Files { per_pod, tokens } => {
                layout.files.insert(ecs_volume.clone());
                files.volumes.push(ecs_volume.clone());
                // numbered before tokens are left out: names stay put
                for (fi, f) in rp.volumes.get(&v.name).into_iter().flatten().enumerate() {
                    if tokens.contains(&f.path) && token == ServiceAccountToken::Omit {
                        continue;
                    }
                    files.add_file((vi, fi), f, is_under(&f.path, &per_pod), values);
                }
            }
            VolumeKind::Other(kind) => {
                return Err(invalid(
                    "UnsupportedVolume",
                    format!(
                        "volume {:?} is a {kind} volume, which ECS/Fargate cannot mount; skylet supports emptyDir, configMap, secret, downwardAPI and projected volumes",
                        v.name
                    ),
                ));
            }
        }
        layout.volumes.push(ecs_volume);
    }
    Ok((layout, files))
}

/// Whether `path` is one of `paths` or inside one of them.
fn is_under(path: &str, paths: &[String]) -> bool {
    paths
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

enum VolumeKind {
    EmptyDir,
    /// Files: paths (files or directories) that differ per pod
    /// (downward API), and service-account token paths.
    Files {
        per_pod: Vec<String>,
        tokens: Vec<String>,
    },
    Other(String),
}

fn volume_kind(v: &KubeVolume) -> VolumeKind {
    if v.empty_dir.is_some() {
        return VolumeKind::EmptyDir;
    }
    if v.config_map.is_some() || v.secret.is_some() {
        return VolumeKind::Files {
            per_pod: Vec::new(),
            tokens: Vec::new(),
        };
    }
    if let Some(d) = &v.downward_api {
        return VolumeKind::Files {
            per_pod: d.items.iter().flatten().map(|i| i.path.clone()).collect(),
            tokens: Vec::new(),
        };
    }
    if let Some(p) = &v.projected {
        let mut per_pod = Vec::new();
        let mut tokens = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(d) = &s.downward_api {
                per_pod.extend(d.items.iter().flatten().map(|i| i.path.clone()));
            }
            if let Some(t) = &s.service_account_token {
                tokens.push(t.path.clone());
            }
        }
        return VolumeKind::Files { per_pod, tokens };
    }
    // the name of whichever source field is set
    let kind = serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into());
    VolumeKind::Other(kind)
}

/// Single-quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `sh` line that writes `path` under `dir` from base64 variable `var`.
fn file_command(dir: &str, path: &str, mode: u32, var: &str) -> String {
    let target = format!("{dir}/{path}");
    let parent = target
        .rsplit_once('/')
        .map_or(dir.to_owned(), |(p, _)| p.to_owned());
    format!(
        "mkdir -p {p}; printf '%s' \"${var}\" | base64 -d > {t}; chmod {mode:o} {t}",
        p = sh_quote(&parent),
        t = sh_quote(&target),
    )
}

/// The files container under construction.
#[derive(Debug, Default)]
pub(super) struct FilesContainer {
    /// Task volumes it fills.
    volumes: Vec<String>,
    /// Files' contents that every pod of the template shares.
    environment: Vec<(String, String)>,
    /// Secret files: variable and JSON key of the pod's secret.
    secrets: Vec<(String, String)>,
    /// One `sh` line per file.
    script: Vec<String>,
}

impl FilesContainer {
    /// Adds file `fi` of the pod's volume `vi`: its content, base64-encoded,
    /// goes in variable `SKYLET_F<vi>_<fi>` from the pod's secret (a secret
    /// value), an override (`per_pod`) or the task definition, and a script
    /// line writes it into place.
    fn add_file(
        &mut self,
        (vi, fi): (usize, usize),
        f: &VolumeFile,
        per_pod: bool,
        values: &mut PodValues,
    ) {
        let var = format!("SKYLET_F{vi}_{fi}");
        let content = base64::engine::general_purpose::STANDARD.encode(&f.value.data);
        if f.value.secret {
            let key = format!("f{vi}.{fi}");
            values.secret(key.clone(), content);
            self.secrets.push((var.clone(), key));
        } else if per_pod {
            values.per_pod(FILES_CONTAINER, var.clone(), content);
        } else {
            self.environment.push((var.clone(), content));
        }
        self.script.push(file_command(
            &files_dir(&task_volume(vi)),
            &f.path,
            f.mode,
            &var,
        ));
    }

    /// The container, `None` when no volume holds files.
    pub(super) fn into_spec(self, image: &str, stop_timeout: u32) -> Option<ContainerSpec> {
        if self.volumes.is_empty() {
            return None;
        }
        let mut script = vec!["set -e".to_owned()];
        script.extend(
            self.volumes
                .iter()
                .map(|v| format!("mkdir -p {}", sh_quote(&files_dir(v)))),
        );
        script.extend(self.script);
        Some(ContainerSpec {
            name: FILES_CONTAINER.into(),
            image: image.into(),
            essential: false,
            entry_point: Some(vec!["sh".into(), "-c".into()]),
            command: Some(vec![script.join("\n")]),
            working_dir: None,
            user: None,
            environment: self.environment,
            secrets: self.secrets,
            ports: Vec::new(),
            mounts: self
                .volumes
                .iter()
                .map(|v| (v.clone(), files_dir(v), false))
                .collect(),
            depends_on: Vec::new(),
            cpu: None,
            memory: None,
            memory_reservation: DEFAULT_RESERVATION_MIB,
            stop_timeout,
            readonly_root: false,
            restart: None,
            interactive: false,
            tty: false,
            health_check: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::{file, pod, reason};
    use serde_json::json;
    use skylet_provider::Value;

    #[test]
    fn file_volumes_keep_their_variable_numbers_when_tokens_are_left_out() {
        let mut rp = pod(
            "p",
            json!({"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "meta", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}]}),
        );
        rp.volumes.insert(
            "api".into(),
            vec![
                file("token", Value::secret("t")),
                file("meta/labels", Value::plain("a=b")),
                file("metadata", Value::plain("shared")),
            ],
        );
        let spec = rp.pod.spec.clone().unwrap();
        let mut values = PodValues::default();
        let (layout, files) =
            volume_layout(&rp, &spec, ServiceAccountToken::Omit, &mut values).unwrap();
        assert_eq!(layout.volumes, ["v0", "v1"]);
        assert_eq!(layout.names["api"], "v1");
        assert_eq!(layout.files, BTreeSet::from(["v1".to_owned()]));
        assert!(values.secret.is_empty(), "the token is left out");
        assert_eq!(
            values.overrides[FILES_CONTAINER][0].0, "SKYLET_F1_1",
            "under a downward-API path: per pod; numbered as if the token were there"
        );
        assert_eq!(
            files.environment[0].0, "SKYLET_F1_2",
            "a prefix is no parent"
        );
        assert_eq!(files.script.len(), 2);
        let mut values = PodValues::default();
        volume_layout(&rp, &spec, ServiceAccountToken::Mount, &mut values).unwrap();
        assert_eq!(values.secret.keys().collect::<Vec<_>>(), ["f1.0"]);
        let hostpath = pod(
            "p",
            json!({"containers": [], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
        );
        let spec = hostpath.pod.spec.clone().unwrap();
        let e = volume_layout(&hostpath, &spec, ServiceAccountToken::Omit, &mut values);
        assert_eq!(reason(e.unwrap_err()), "UnsupportedVolume");
    }

    #[test]
    fn file_commands_quote_paths_and_make_parent_directories() {
        assert_eq!(
            file_command("/d", "it's/x", 0o600, "V"),
            r#"mkdir -p '/d/it'\''s'; printf '%s' "$V" | base64 -d > '/d/it'\''s/x'; chmod 600 '/d/it'\''s/x'"#
        );
        assert!(FilesContainer::default().into_spec("busybox", 30).is_none());
    }
}
