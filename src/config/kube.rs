//! Settings of the remote-Kubernetes backend (`--provider kubernetes`).

use std::{collections::BTreeMap, path::PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::{Error, Result};

/// How home namespaces map to remote ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Passed as is.
    Pass,
    /// Dropped.
    Drop,
}

/// Which service account remote pods use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceAccount {
    /// The remote namespace's default service account (default).
    #[default]
    Remote,
    /// The home pod's own token, delivered as a Secret.
    HomeToken,
}

/// Flags of the remote-Kubernetes backend.
#[derive(Debug, Default, Args)]
pub struct KubeArgs {
    /// kubeconfig of the remote cluster.
    #[arg(long, env = "SKYLET_REMOTE_KUBECONFIG")]
    pub remote_kubeconfig: Option<PathBuf>,
    /// Context in the remote kubeconfig (default: its current context).
    #[arg(long, env = "SKYLET_REMOTE_CONTEXT")]
    pub remote_context: Option<String>,
    /// Id of the home cluster, in labels and prefixed namespaces.
    #[arg(long, env = "SKYLET_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// How home namespaces map to remote ones.
    #[arg(long, env = "SKYLET_REMOTE_NAMESPACE_MODE")]
    pub remote_namespace_mode: Option<NamespaceMode>,
    /// nodeSelector terms other than the virtual node's own (always dropped).
    #[arg(long, env = "SKYLET_REMOTE_NODE_SELECTOR")]
    pub remote_node_selector: Option<Rule>,
    /// Node affinity (default drop: it selected the virtual node).
    #[arg(long, env = "SKYLET_REMOTE_NODE_AFFINITY")]
    pub remote_node_affinity: Option<Rule>,
    /// Tolerations (the virtual node's own is always dropped).
    #[arg(long, env = "SKYLET_REMOTE_TOLERATIONS")]
    pub remote_tolerations: Option<Rule>,
    /// Pod affinity and anti-affinity.
    #[arg(long, env = "SKYLET_REMOTE_POD_AFFINITY")]
    pub remote_pod_affinity: Option<Rule>,
    /// Service account of remote pods: the remote namespace's, or the home token.
    #[arg(long, env = "SKYLET_REMOTE_SERVICE_ACCOUNT")]
    pub remote_service_account: Option<ServiceAccount>,
}

/// The `remote:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KubeFile {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    cluster_id: Option<String>,
    namespace_mode: Option<NamespaceMode>,
    #[serde(default)]
    namespace_map: BTreeMap<String, String>,
    node_selector: Option<Rule>,
    node_affinity: Option<Rule>,
    tolerations: Option<Rule>,
    pod_affinity: Option<Rule>,
    service_account: Option<ServiceAccount>,
}

/// Validated settings of the remote-Kubernetes backend.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// Remote kubeconfig.
    pub kubeconfig: PathBuf,
    /// Remote context.
    pub context: Option<String>,
    /// Home cluster id.
    pub cluster_id: String,
    /// Namespace mode.
    pub namespace_mode: NamespaceMode,
    /// Explicit namespace map (mode `map`).
    pub namespace_map: BTreeMap<String, String>,
    /// nodeSelector rule.
    pub node_selector: Rule,
    /// Node affinity rule.
    pub node_affinity: Rule,
    /// Tolerations rule.
    pub tolerations: Rule,
    /// Pod affinity rule.
    pub pod_affinity: Rule,
    /// Service-account policy.
    pub service_account: ServiceAccount,
}

/// Merges flags over the file section; `required` when the provider is selected.
pub(super) fn merge(
    args: KubeArgs,
    file: Option<KubeFile>,
    required: bool,
) -> Result<Option<KubeConfig>> {
    let file = file.unwrap_or_default();
    let Some(kubeconfig) = args.remote_kubeconfig.or(file.kubeconfig) else {
        if required {
            return Err(Error::Invalid {
                field: "remote-kubeconfig",
                message: "the kubernetes provider needs the remote cluster's kubeconfig".into(),
            });
        }
        return Ok(None);
    };
    if required && std::fs::metadata(&kubeconfig).is_err() {
        return Err(Error::Invalid {
            field: "remote-kubeconfig",
            message: format!("{} cannot be read", kubeconfig.display()),
        });
    }
    let cluster_id = args
        .cluster_id
        .or(file.cluster_id)
        .unwrap_or_else(|| "home".into());
    let valid = !cluster_id.is_empty()
        && cluster_id.len() <= 40
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cluster_id.starts_with('-')
        && !cluster_id.ends_with('-');
    if !valid {
        return Err(Error::Invalid {
            field: "cluster-id",
            message: format!(
                "{cluster_id:?} must be 1-40 lowercase letters, digits or '-' (it prefixes namespaces and labels)"
            ),
        });
    }
    let namespace_mode = args
        .remote_namespace_mode
        .or(file.namespace_mode)
        .unwrap_or_default();
    if namespace_mode == NamespaceMode::Map && file.namespace_map.is_empty() {
        return Err(Error::Invalid {
            field: "remote.namespace-map",
            message: "mode `map` needs a namespace-map in the config file".into(),
        });
    }
    Ok(Some(KubeConfig {
        kubeconfig,
        context: args.remote_context.or(file.context),
        cluster_id,
        namespace_mode,
        namespace_map: file.namespace_map,
        node_selector: args
            .remote_node_selector
            .or(file.node_selector)
            .unwrap_or(Rule::Pass),
        node_affinity: args
            .remote_node_affinity
            .or(file.node_affinity)
            .unwrap_or(Rule::Drop),
        tolerations: args
            .remote_tolerations
            .or(file.tolerations)
            .unwrap_or(Rule::Pass),
        pod_affinity: args
            .remote_pod_affinity
            .or(file.pod_affinity)
            .unwrap_or(Rule::Pass),
        service_account: args
            .remote_service_account
            .or(file.service_account)
            .unwrap_or_default(),
    }))
}
