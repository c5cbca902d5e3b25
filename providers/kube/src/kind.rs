//! [`Kube`]: the remote-Kubernetes backend's settings (`--remote-*` flags
//! and `--cluster-id`, the `remote:` section of the config file) and its
//! construction (the remote cluster's client, from its kubeconfig).

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use skylet_provider::{BoxError, BuildContext, ConfigError, Kind, NodeContext};

use crate::{
    KubeProvider,
    services::{self, Export, Selection},
    translate::{Context, NamespaceMode, Rule, SchedulingPolicy, ServiceAccountPolicy},
};

/// The remote-Kubernetes backend (`--provider kubernetes`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Kube;

/// Flags of the remote-Kubernetes backend.
#[derive(clap::Args, Default, Debug)]
#[group(skip)]
#[command(next_help_heading = "Remote Kubernetes backend (--provider kubernetes)")]
pub struct Args {
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
    pub remote_service_account: Option<ServiceAccountPolicy>,
    /// Home Services reflected into the remote namespaces of offloaded pods.
    #[arg(long, env = "SKYLET_REMOTE_SERVICES")]
    pub remote_services: Option<Selection>,
    /// Label selector the reflected home Services must match (default: every one).
    #[arg(long, env = "SKYLET_REMOTE_SERVICE_SELECTOR")]
    pub remote_service_selector: Option<String>,
    /// Offer reflected Services to a multi-cluster network (comma-separated).
    #[arg(long, env = "SKYLET_REMOTE_SERVICE_EXPORT", value_delimiter = ',')]
    pub remote_service_export: Vec<Export>,
}

/// The `remote:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct File {
    /// kubeconfig of the remote cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the remote kubeconfig.
    pub context: Option<String>,
    /// Id of the home cluster.
    pub cluster_id: Option<String>,
    /// How home namespaces map to remote ones.
    pub namespace_mode: Option<NamespaceMode>,
    /// Home namespace -> remote namespace, for mode `map`.
    #[serde(default)]
    pub namespace_map: BTreeMap<String, String>,
    /// nodeSelector terms other than the virtual node's own.
    pub node_selector: Option<Rule>,
    /// Node affinity.
    pub node_affinity: Option<Rule>,
    /// Tolerations.
    pub tolerations: Option<Rule>,
    /// Pod affinity and anti-affinity.
    pub pod_affinity: Option<Rule>,
    /// Service account of remote pods.
    pub service_account: Option<ServiceAccountPolicy>,
    /// Home Services reflected into the remote namespaces.
    pub services: Option<Selection>,
    /// Label selector the reflected home Services must match.
    pub service_selector: Option<String>,
    /// Mesh integrations of the reflected Services.
    pub service_export: Option<Vec<Export>>,
}

/// Validated settings of the remote-Kubernetes backend.
#[derive(Clone, Debug)]
pub struct Config {
    /// kubeconfig of the remote cluster.
    pub kubeconfig: PathBuf,
    /// Context in it (`None`: its current context).
    pub kube_context: Option<String>,
    /// Translation settings (cluster id, node, namespaces, scheduling,
    /// service accounts).
    pub context: Context,
    /// Service reflection.
    pub services: services::Settings,
}

/// Why the backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The remote kubeconfig could not be read or parsed.
    #[error("cannot read remote kubeconfig {}", path.display())]
    ReadKubeconfig {
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: kube::config::KubeconfigError,
    },
    /// The remote kubeconfig has no usable cluster, context or credentials.
    #[error("invalid remote kubeconfig {}", path.display())]
    InvalidKubeconfig {
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from it (TLS settings).
    #[error("cannot build the remote cluster's client")]
    Client {
        /// The cause.
        source: kube::Error,
    },
}

/// Whether `id` can prefix namespaces and be a label value.
fn valid_cluster_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

impl Kind for Kube {
    const NAME: &'static str = "kubernetes";
    const SECTION: &'static str = "remote";
    type Args = Args;
    type File = File;
    type Config = Config;
    type Provider = KubeProvider;

    fn configure(args: Args, file: File, node: &NodeContext) -> Result<Config, ConfigError> {
        let Some(kubeconfig) = args.remote_kubeconfig.or(file.kubeconfig) else {
            return Err(ConfigError::new(
                "remote-kubeconfig",
                "the kubernetes provider needs the remote cluster's kubeconfig",
            ));
        };
        if std::fs::metadata(&kubeconfig).is_err() {
            return Err(ConfigError::new(
                "remote-kubeconfig",
                format!("{} cannot be read", kubeconfig.display()),
            ));
        }
        let cluster_id = args
            .cluster_id
            .or(file.cluster_id)
            .unwrap_or_else(|| "home".into());
        if !valid_cluster_id(&cluster_id) {
            return Err(ConfigError::new(
                "cluster-id",
                format!(
                    "{cluster_id:?} must be 1-40 lowercase letters, digits or '-' (it prefixes namespaces and labels)"
                ),
            ));
        }
        let namespaces = args
            .remote_namespace_mode
            .or(file.namespace_mode)
            .unwrap_or_default();
        if namespaces == NamespaceMode::Map && file.namespace_map.is_empty() {
            return Err(ConfigError::new(
                "remote.namespace-map",
                "mode `map` needs a namespace-map in the config file",
            ));
        }
        let scheduling = SchedulingPolicy {
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
        };
        let services = service_settings(
            args.remote_services.or(file.services),
            args.remote_service_selector.or(file.service_selector),
            if args.remote_service_export.is_empty() {
                file.service_export.unwrap_or_default()
            } else {
                args.remote_service_export
            },
            namespaces,
        )?;
        Ok(Config {
            services,
            kubeconfig,
            kube_context: args.remote_context.or(file.context),
            context: Context {
                cluster_id,
                node: node.name.clone(),
                node_labels: node.labels.clone(),
                namespaces,
                namespace_map: file.namespace_map,
                scheduling,
                service_account: args
                    .remote_service_account
                    .or(file.service_account)
                    .unwrap_or_default(),
            },
        })
    }

    /// Builds the remote cluster's client from the kubeconfig; the watches
    /// start in [`skylet_provider::Provider::run`].
    async fn build(config: Config, ctx: BuildContext) -> Result<KubeProvider, BoxError> {
        let remote = remote_client(&config).await?;
        Ok(KubeProvider::new(
            remote,
            config.context,
            config.services,
            ctx,
        ))
    }
}

/// The Service reflection settings, checked: a selector of label
/// requirements, and ClusterMesh only where namespaces keep their names.
fn service_settings(
    selection: Option<Selection>,
    selector: Option<String>,
    mut exports: Vec<Export>,
    namespaces: NamespaceMode,
) -> Result<services::Settings, ConfigError> {
    let selector = selector.map(|s| s.trim().to_owned());
    if let Some(s) = &selector
        && let Err(why) = check_selector(s)
    {
        return Err(ConfigError::new(
            "remote-service-selector",
            format!("{s:?} is not a label selector: {why}"),
        ));
    }
    exports.sort_by_key(|e| *e as u8);
    exports.dedup();
    if exports.contains(&Export::Cilium) && namespaces != NamespaceMode::Same {
        return Err(ConfigError::new(
            "remote-service-export",
            "cilium: ClusterMesh pairs Services by namespace and name, so it needs remote namespace-mode same",
        ));
    }
    Ok(services::Settings {
        selection: selection.unwrap_or_default(),
        selector,
        exports,
    })
}

/// Checks the syntax of a label selector (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`),
/// so that a typo stops skylet at start rather than failing every watch.
fn check_selector(s: &str) -> Result<(), String> {
    fn key(k: &str) -> Result<(), String> {
        let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
        let ok = |x: &str, extra: &[char]| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        if name.len() > 63
            || !ok(name, &['-', '_', '.'])
            || (!prefix.is_empty() && !ok(prefix, &['-', '.']))
        {
            return Err(format!("bad label key {k:?}"));
        }
        Ok(())
    }
    fn value(v: &str) -> Result<(), String> {
        if v.len() > 63
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!("bad label value {v:?}"));
        }
        Ok(())
    }
    if s.is_empty() {
        return Err("it is empty".into());
    }
    // split on commas outside parentheses
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for p in parts.iter().map(|p| p.trim()) {
        if let Some(k) = p.strip_prefix('!') {
            key(k.trim())?;
        } else if let Some((k, v)) = p
            .split_once("!=")
            .or_else(|| p.split_once("=="))
            .or_else(|| p.split_once('='))
        {
            key(k.trim())?;
            value(v.trim())?;
        } else if let Some((k, rest)) = p.split_once(" in ").or_else(|| p.split_once(" notin ")) {
            key(k.trim())?;
            let list = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{p:?}: the values go in parentheses"))?;
            for v in list.split(',') {
                value(v.trim())?;
            }
        } else {
            key(p)?;
        }
    }
    Ok(())
}

/// A client of the remote cluster, from `config`'s kubeconfig and context.
///
/// # Errors
/// The kubeconfig cannot be read, or names no usable context.
pub(crate) async fn remote_client(config: &Config) -> Result<kube::Client, BuildError> {
    let path = &config.kubeconfig;
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|source| BuildError::ReadKubeconfig {
            path: path.clone(),
            source,
        })?;
    let opts = kube::config::KubeConfigOptions {
        context: config.kube_context.clone(),
        ..Default::default()
    };
    let remote = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|source| BuildError::InvalidKubeconfig {
            path: path.clone(),
            source,
        })?;
    kube::Client::try_from(remote).map_err(|source| BuildError::Client { source })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn args(v: &[&str]) -> Args {
        T::try_parse_from(std::iter::once("skylet").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    fn file(yaml: &str) -> File {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn node() -> NodeContext {
        NodeContext {
            name: "remote-eu".into(),
            labels: [("type".to_owned(), "virtual-kubelet".to_owned())].into(),
        }
    }

    /// A readable file to name as the remote kubeconfig.
    fn kubeconfig() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn defaults_and_the_node_reach_the_translation() {
        let kc = kubeconfig();
        let path = kc.path().to_str().unwrap();
        let c = Kube::configure(
            args(&["--remote-kubeconfig", path]),
            File::default(),
            &node(),
        )
        .unwrap();
        assert_eq!(c.kubeconfig, kc.path());
        assert_eq!(c.kube_context, None);
        let t = c.context;
        assert_eq!(
            (t.cluster_id.as_str(), t.node.as_str()),
            ("home", "remote-eu")
        );
        assert_eq!(t.node_labels, node().labels);
        assert_eq!(t.namespaces, NamespaceMode::Same);
        assert_eq!(t.scheduling, SchedulingPolicy::default());
        assert_eq!(t.service_account, ServiceAccountPolicy::Remote);
    }

    #[test]
    fn flags_override_the_file() {
        let kc = kubeconfig();
        let path = kc.path().to_str().unwrap();
        let f = file(&format!(
            "kubeconfig: {path}\ncontext: eu\ncluster-id: from-file\nnamespace-mode: map\n\
             namespace-map: {{shop: tenant-a}}\ntolerations: drop\nservice-account: home-token\n"
        ));
        let c = Kube::configure(
            args(&[
                "--cluster-id",
                "from-flag",
                "--remote-tolerations",
                "pass",
                "--remote-pod-affinity",
                "drop",
            ]),
            f,
            &node(),
        )
        .unwrap();
        assert_eq!(c.kube_context.as_deref(), Some("eu"));
        let t = c.context;
        assert_eq!(t.cluster_id, "from-flag");
        assert_eq!(t.namespaces, NamespaceMode::Map);
        assert_eq!(t.remote_namespace("shop"), "tenant-a");
        assert_eq!(t.scheduling.tolerations, Rule::Pass);
        assert_eq!(t.scheduling.pod_affinity, Rule::Drop);
        assert_eq!(t.scheduling.node_affinity, Rule::Drop);
        assert_eq!(t.service_account, ServiceAccountPolicy::HomeToken);
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let kc = kubeconfig();
        let path = kc.path().to_str().unwrap();
        for (flags, yaml, field, needle) in [
            (
                vec![],
                "{}",
                "remote-kubeconfig",
                "needs the remote cluster's kubeconfig",
            ),
            (
                vec!["--remote-kubeconfig", "/no/such/kubeconfig"],
                "{}",
                "remote-kubeconfig",
                "/no/such/kubeconfig cannot be read",
            ),
            (
                vec!["--remote-kubeconfig", path, "--cluster-id", "Home"],
                "{}",
                "cluster-id",
                "must be 1-40 lowercase letters",
            ),
            (
                vec!["--remote-kubeconfig", path, "--cluster-id", "home-"],
                "{}",
                "cluster-id",
                "must be 1-40",
            ),
            (
                vec!["--remote-kubeconfig", path],
                "namespace-mode: map",
                "remote.namespace-map",
                "mode `map` needs a namespace-map",
            ),
        ] {
            let e = Kube::configure(args(&flags), file(yaml), &node()).unwrap_err();
            assert_eq!(e.field, field, "{flags:?} {yaml}");
            assert!(e.message.contains(needle), "{flags:?} {yaml}: {e}");
        }
    }

    #[test]
    fn service_reflection_settings() {
        let kc = kubeconfig();
        let path = kc.path().to_str().unwrap();
        let c = Kube::configure(
            args(&["--remote-kubeconfig", path]),
            File::default(),
            &node(),
        )
        .unwrap();
        assert_eq!(
            c.services,
            services::Settings::default(),
            "every Service, no mesh"
        );
        assert_eq!(c.services.selection, Selection::All);
        let f = file(&format!(
            "kubeconfig: {path}\nservices: all\nservice-selector: 'tier in (db, cache), !internal'\n\
             service-export: [mcs, cilium]\n"
        ));
        let c = Kube::configure(args(&[]), f, &node()).unwrap();
        assert_eq!(
            c.services.selector.as_deref(),
            Some("tier in (db, cache), !internal")
        );
        assert_eq!(c.services.exports, [Export::Cilium, Export::Mcs]);
        let c = Kube::configure(
            args(&[
                "--remote-kubeconfig",
                path,
                "--remote-services",
                "none",
                "--remote-service-export",
                "mcs,mcs",
            ]),
            File::default(),
            &node(),
        )
        .unwrap();
        assert_eq!(c.services.selection, Selection::None);
        assert_eq!(c.services.exports, [Export::Mcs]);
        for (flags, field, needle) in [
            (
                vec!["--remote-service-selector", "app=web,,x"],
                "remote-service-selector",
                "bad label key",
            ),
            (
                vec!["--remote-service-selector", "tier in db"],
                "remote-service-selector",
                "parentheses",
            ),
            (
                vec!["--remote-service-selector", "app=we b"],
                "remote-service-selector",
                "bad label value",
            ),
            (
                vec![
                    "--remote-service-export",
                    "cilium",
                    "--remote-namespace-mode",
                    "prefixed",
                ],
                "remote-service-export",
                "namespace-mode same",
            ),
        ] {
            let mut all = vec!["--remote-kubeconfig", path];
            all.extend(flags.iter().copied());
            let e = Kube::configure(args(&all), File::default(), &node()).unwrap_err();
            assert_eq!(e.field, field, "{flags:?}");
            assert!(e.message.contains(needle), "{flags:?}: {e}");
        }
        for ok in [
            "app=web",
            "app==web,tier!=db",
            "example.com/team=a",
            "has-label",
            "a notin (x,y),b",
        ] {
            assert_eq!(check_selector(ok), Ok(()), "{ok}");
        }
        assert!(
            T::try_parse_from(["skylet", "--remote-service-export", "istio"]).is_err(),
            "only cilium and mcs"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        let err = serde_yaml_ng::from_str::<File>("namespace-mod: same\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("namespace-mod"), "{err}");
        assert!(serde_yaml_ng::from_str::<File>("tolerations: keep\n").is_err());
        assert!(
            T::try_parse_from(["skylet", "--remote-namespace-mode", "mapped"]).is_err(),
            "only same, prefixed, map"
        );
    }

    #[tokio::test]
    async fn a_bad_kubeconfig_is_named() {
        let kc = kubeconfig();
        std::fs::write(kc.path(), "not: [a kubeconfig").unwrap();
        let config = Config {
            services: services::Settings::default(),
            kubeconfig: kc.path().into(),
            kube_context: None,
            context: Kube::configure(
                args(&["--remote-kubeconfig", kc.path().to_str().unwrap()]),
                File::default(),
                &node(),
            )
            .unwrap()
            .context,
        };
        let Err(e) = remote_client(&config).await else {
            panic!("a client from a bad kubeconfig");
        };
        assert!(
            e.to_string().starts_with("cannot read remote kubeconfig "),
            "{e}"
        );
    }
}
