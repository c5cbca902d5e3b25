//! Pure functions: a home pod -> the remote pod that runs it, and the
//! ConfigMaps and Secrets it needs on the remote side.
//!
//! # Scheduling fields
//! The home pod was steered onto the virtual node with a nodeSelector (or
//! node affinity) and a toleration for its taint; those terms mean nothing on
//! the remote cluster, whose nodes do not carry the virtual node's labels.
//! By default skylet therefore drops nodeSelector terms that the virtual node
//! itself satisfies and passes the rest, drops required node affinity, and
//! passes tolerations and pod (anti-)affinity. Each can be set to `pass` or
//! `drop` (see [`SchedulingPolicy`]).
//!
//! # Service accounts
//! By default ([`ServiceAccountPolicy::Remote`]) the remote pod runs as the
//! remote namespace's `default` service account: the home
//! `kube-api-access-*` projected volume is removed so the remote cluster
//! mounts its own token, and no home credential leaves the home cluster.
//! With [`ServiceAccountPolicy::HomeToken`] the home token (the one the core
//! obtained by TokenRequest, bound to the home pod) is delivered instead, as a
//! Secret mounted where the projected volume was, and refreshed when the core
//! refreshes it; the workload can then call the home apiserver (it must be
//! told its address: `KUBERNETES_SERVICE_HOST` points at the remote one).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodSpec, Volume};
use kube::api::ObjectMeta;
use serde::Deserialize;

/// Label with the UID of the home pod a remote pod runs.
pub const ORIGIN_UID: &str = "skylet.io/origin-uid";
/// Label with the home namespace.
pub const ORIGIN_NAMESPACE: &str = "skylet.io/origin-namespace";
/// Label with the home pod name.
pub const ORIGIN_NAME: &str = "skylet.io/origin-name";
/// Label with the id of the home cluster.
pub const CLUSTER_ID: &str = "skylet.io/cluster-id";
/// Label with the virtual node's name.
pub const NODE: &str = "skylet.io/node";

// The enums below are also the values of flags and config-file keys
// (`crate::kind`): their variant docs are the `--help` texts.

/// How home namespaces map to remote ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceMode {
    /// The same name (default).
    #[default]
    Same,
    /// `<cluster-id>-<namespace>`.
    Prefixed,
    /// `namespace-map` in the config file; unmapped namespaces keep their name.
    Map,
}

/// Whether a scheduling field reaches the remote pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Passed as is.
    Pass,
    /// Dropped.
    Drop,
}

/// What happens to the scheduling fields of a pod (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulingPolicy {
    /// nodeSelector terms the virtual node does not satisfy (those it does are always dropped).
    pub node_selector: Rule,
    /// Node affinity.
    pub node_affinity: Rule,
    /// Tolerations.
    pub tolerations: Rule,
    /// Pod affinity and anti-affinity.
    pub pod_affinity: Rule,
}

impl Default for SchedulingPolicy {
    fn default() -> Self {
        Self {
            node_selector: Rule::Pass,
            node_affinity: Rule::Drop,
            tolerations: Rule::Pass,
            pod_affinity: Rule::Pass,
        }
    }
}

/// Which service account a remote pod uses (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceAccountPolicy {
    /// The remote namespace's default service account (default).
    #[default]
    Remote,
    /// The home pod's own token, delivered as a Secret.
    HomeToken,
}

/// What the translation needs to know.
#[derive(Clone, Debug)]
pub struct Context {
    /// Home cluster id (labels, prefixed namespaces).
    pub cluster_id: String,
    /// Virtual node name.
    pub node: String,
    /// Labels of the virtual node (to recognise the selector that chose it).
    pub node_labels: BTreeMap<String, String>,
    /// Namespace mapping.
    pub namespaces: NamespaceMode,
    /// Home namespace -> remote namespace, for [`NamespaceMode::Map`]
    /// (unmapped namespaces keep their name).
    pub namespace_map: BTreeMap<String, String>,
    /// Scheduling policy.
    pub scheduling: SchedulingPolicy,
    /// Service-account policy.
    pub service_account: ServiceAccountPolicy,
}

impl Context {
    /// The remote namespace of a home namespace.
    pub fn remote_namespace(&self, home: &str) -> String {
        match &self.namespaces {
            NamespaceMode::Same => home.to_owned(),
            NamespaceMode::Prefixed => format!("{}-{home}", self.cluster_id),
            NamespaceMode::Map => self
                .namespace_map
                .get(home)
                .cloned()
                .unwrap_or_else(|| home.to_owned()),
        }
    }

    /// The labels that mark remote objects of this node.
    pub fn selector(&self) -> String {
        format!("{CLUSTER_ID}={},{NODE}={}", self.cluster_id, self.node)
    }
}

/// The ConfigMaps and Secrets a pod references, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMaps.
    pub config_maps: BTreeSet<String>,
    /// Secrets (including imagePullSecrets).
    pub secrets: BTreeSet<String>,
}

/// Every ConfigMap and Secret `spec` references: volumes (also projected),
/// env and envFrom of all containers, imagePullSecrets.
pub fn references(spec: &PodSpec) -> References {
    let mut r = References::default();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(k) = &from.config_map_key_ref {
                    r.config_maps.insert(k.name.clone());
                }
                if let Some(k) = &from.secret_key_ref {
                    r.secrets.insert(k.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(cm) = &f.config_map_ref {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &f.secret_ref {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    r
}

fn is_service_account_volume(v: &Volume) -> bool {
    v.name.starts_with("kube-api-access-") && v.projected.is_some()
}

/// The name of the Secret that carries a pod's home token remotely.
pub fn token_secret_name(pod: &str) -> String {
    format!("{pod}-home-token")
}

/// The files of the home service-account volume(s) the core resolved (token,
/// ca.crt, namespace), as Secret data; `None` when the pod has none.
pub fn home_token_data(
    rp: &skylet_provider::ResolvedPod,
) -> Option<BTreeMap<String, k8s_openapi::ByteString>> {
    let spec = rp.pod.spec.as_ref()?;
    let mut data = BTreeMap::new();
    for v in spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| is_service_account_volume(v))
    {
        for f in rp.volumes.get(&v.name).into_iter().flatten() {
            data.insert(
                f.path.clone(),
                k8s_openapi::ByteString(f.value.data.to_vec()),
            );
        }
    }
    (!data.is_empty()).then_some(data)
}

/// The remote pod for a home pod.
pub fn remote_pod(ctx: &Context, home: &Pod) -> Pod {
    let m = &home.metadata;
    let ns = m.namespace.clone().unwrap_or_default();
    let mut labels = m.labels.clone().unwrap_or_default();
    labels.insert(ORIGIN_UID.into(), m.uid.clone().unwrap_or_default());
    labels.insert(ORIGIN_NAMESPACE.into(), ns.clone());
    labels.insert(ORIGIN_NAME.into(), m.name.clone().unwrap_or_default());
    labels.insert(CLUSTER_ID.into(), ctx.cluster_id.clone());
    labels.insert(NODE.into(), ctx.node.clone());
    let mut spec = home.spec.clone().unwrap_or_default();
    spec.node_name = None;
    spec.service_account_name = None;
    #[allow(deprecated)]
    {
        spec.service_account = None;
    }
    spec.priority_class_name = None;
    spec.priority = None;
    spec.preemption_policy = None;
    let sa_volumes: BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| is_service_account_volume(v))
        .map(|v| v.name.clone())
        .collect();
    match ctx.service_account {
        ServiceAccountPolicy::Remote => {
            if let Some(vs) = spec.volumes.as_mut() {
                vs.retain(|v| !sa_volumes.contains(&v.name));
            }
            for c in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                if let Some(mounts) = c.volume_mounts.as_mut() {
                    mounts.retain(|vm| !sa_volumes.contains(&vm.name));
                }
            }
        }
        ServiceAccountPolicy::HomeToken => {
            let secret = token_secret_name(m.name.as_deref().unwrap_or_default());
            for v in spec
                .volumes
                .iter_mut()
                .flatten()
                .filter(|v| sa_volumes.contains(&v.name))
            {
                let mode = v.projected.as_ref().and_then(|p| p.default_mode);
                *v = Volume {
                    name: v.name.clone(),
                    secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                        secret_name: Some(secret.clone()),
                        default_mode: mode,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
            }
            // the remote cluster must not mount its own token over it
            spec.automount_service_account_token = Some(false);
        }
    }
    // the virtual node's own selector means nothing remotely
    if let Some(sel) = spec.node_selector.as_mut() {
        sel.retain(|k, v| ctx.node_labels.get(k) != Some(v));
        if ctx.scheduling.node_selector == Rule::Drop {
            sel.clear();
        }
    }
    if spec.node_selector.as_ref().is_some_and(BTreeMap::is_empty) {
        spec.node_selector = None;
    }
    if let Some(t) = spec.tolerations.as_mut() {
        t.retain(|t| t.key.as_deref() != Some("virtual-kubelet.io/provider"));
        if ctx.scheduling.tolerations == Rule::Drop {
            t.clear();
        }
    }
    if let Some(a) = spec.affinity.as_mut() {
        if ctx.scheduling.node_affinity == Rule::Drop {
            a.node_affinity = None;
        }
        if ctx.scheduling.pod_affinity == Rule::Drop {
            a.pod_affinity = None;
            a.pod_anti_affinity = None;
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: m.name.clone(),
            namespace: Some(ctx.remote_namespace(&ns)),
            labels: Some(labels),
            annotations: m.annotations.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Context {
        Context {
            cluster_id: "home".into(),
            node: "vk".into(),
            node_labels: [("type".to_owned(), "virtual-kubelet".to_owned())].into(),
            namespaces: NamespaceMode::Prefixed,
            namespace_map: BTreeMap::new(),
            scheduling: SchedulingPolicy::default(),
            service_account: ServiceAccountPolicy::Remote,
        }
    }

    fn home() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "vk",
                "serviceAccountName": "builder",
                "priorityClassName": "high",
                "nodeSelector": {"type": "virtual-kubelet", "disk": "ssd"},
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}, {"key": "gpu", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-config"}},
                    {"name": "kube-api-access-x", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "creds", "projected": {"sources": [{"secret": {"name": "db"}}]}}
                ],
                "containers": [{"name": "c", "image": "nginx",
                    "envFrom": [{"secretRef": {"name": "env-secret"}}],
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "a"}}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/c"}, {"name": "kube-api-access-x", "mountPath": "/var/run/secrets"}]}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn remote_pod_is_labelled_mapped_and_unbound() {
        let p = remote_pod(&ctx(), &home());
        assert_eq!(p.metadata.namespace.as_deref(), Some("home-shop"));
        let l = p.metadata.labels.unwrap();
        assert_eq!(
            (
                l[ORIGIN_UID].as_str(),
                l[CLUSTER_ID].as_str(),
                l[NODE].as_str(),
                l["app"].as_str()
            ),
            ("u-1", "home", "vk", "web")
        );
        let s = p.spec.unwrap();
        assert!(
            s.node_name.is_none()
                && s.service_account_name.is_none()
                && s.priority_class_name.is_none()
        );
        assert_eq!(
            s.node_selector.unwrap(),
            [("disk".to_owned(), "ssd".to_owned())].into(),
            "the virtual node's selector is dropped"
        );
        let t = s.tolerations.unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key.as_deref(), Some("gpu"));
        assert!(s.affinity.unwrap().node_affinity.is_none());
        let vols: Vec<_> = s.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(
            vols,
            ["cfg", "creds"],
            "the home service-account volume is removed"
        );
        assert_eq!(s.containers[0].volume_mounts.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn references_cover_volumes_env_and_pull_secrets() {
        let r = references(home().spec.as_ref().unwrap());
        let cms: Vec<_> = r.config_maps.iter().map(String::as_str).collect();
        assert_eq!(cms, ["app-config", "kube-root-ca.crt", "other"]);
        let ss: Vec<_> = r.secrets.iter().map(String::as_str).collect();
        assert_eq!(ss, ["db", "env-secret", "regcred"]);
    }

    #[test]
    fn home_token_policy_mounts_a_secret_instead() {
        let mut c = ctx();
        c.service_account = ServiceAccountPolicy::HomeToken;
        let s = remote_pod(&c, &home()).spec.unwrap();
        assert_eq!(s.automount_service_account_token, Some(false));
        let v = s
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "kube-api-access-x")
            .unwrap();
        assert_eq!(
            v.secret.unwrap().secret_name.as_deref(),
            Some("web-1-home-token")
        );
        assert_eq!(
            s.containers[0].volume_mounts.as_ref().unwrap().len(),
            2,
            "the mount stays"
        );
        let mut rp = skylet_provider::ResolvedPod::bare(home());
        rp.volumes.insert(
            "kube-api-access-x".into(),
            vec![skylet_provider::VolumeFile {
                path: "token".into(),
                mode: 0o644,
                value: skylet_provider::Value::secret("t0ken"),
            }],
        );
        let data = home_token_data(&rp).unwrap();
        assert_eq!(data["token"].0, b"t0ken");
    }

    #[test]
    fn namespace_modes() {
        let mut c = ctx();
        c.namespaces = NamespaceMode::Same;
        assert_eq!(c.remote_namespace("shop"), "shop");
        c.namespaces = NamespaceMode::Map;
        c.namespace_map = [("shop".to_owned(), "tenant-a".to_owned())].into();
        assert_eq!(
            (
                c.remote_namespace("shop").as_str(),
                c.remote_namespace("x").as_str()
            ),
            ("tenant-a", "x")
        );
    }

    #[test]
    fn drop_policies_clear_fields() {
        let mut c = ctx();
        c.scheduling = SchedulingPolicy {
            node_selector: Rule::Drop,
            node_affinity: Rule::Pass,
            tolerations: Rule::Drop,
            pod_affinity: Rule::Drop,
        };
        let s = remote_pod(&c, &home()).spec.unwrap();
        assert!(s.node_selector.is_none());
        assert!(s.tolerations.unwrap().is_empty());
        assert!(s.affinity.unwrap().node_affinity.is_some());
    }
}
