//! Placement by policy: the `PlacementPolicy` custom resource, the
//! mutating admission webhook that compiles it into each new pod's
//! scheduling fields, and the controllers that keep fencing, fail-back and
//! scale-in order.
//!
//! # Design
//! skylet does not schedule. Every backend is its own virtual node, and
//! skylet tells kube-scheduler the truth about it: labels (`skylet.io/backend`,
//! `skylet.io/provider`, region and zone, tiers), allocatable (what the
//! backend can still run), taints (`virtual-kubelet.io/provider=<kind>`,
//! `skylet.io/capacity-exhausted` while it is full, the node lifecycle
//! controller's not-ready/unreachable) and prices (node annotations
//! `skylet.io/price-vcpu-hour`, `skylet.io/price-memory-gib-hour`). A policy
//! is turned into standard pod fields once, at admission ([`compile`]):
//!
//! | policy | pod field |
//! |---|---|
//! | `tiers` | required node affinity: one term per tier (combined with the pod's own terms) |
//! | `strategy: Ordered` | preferred node affinity, one term per tier, weights 100 down to 1 |
//! | `strategy: Cheapest` | preferred node affinity by node name, cheapest 100, dearest 1 |
//! | virtual nodes in the tiers | a toleration of each one's provider taint (never of `capacity-exhausted`) |
//! | `failover.tolerationSeconds` | `node.kubernetes.io/not-ready|unreachable:NoExecute` tolerations |
//! | `spread` | a topology spread constraint, `nodeTaintsPolicy: Honor` |
//! | `failover.fencing: Strict` | scheduling gate `skylet.io/fencing`, when a predecessor is not yet fenced |
//!
//! So the scheduler, `kubectl drain`, PodDisruptionBudgets, topology spread
//! and the descheduler keep working, and a pod shows in its own spec why it
//! went where it went. Overflow needs no controller: a full tier is full to
//! the scheduler (allocatable, pods count, the capacity taint), so its
//! filter drops it and the next tier's preference wins. Fail-over needs
//! none either: a backend that stops answering makes its node NotReady, the
//! node lifecycle controller evicts after `tolerationSeconds`, and the
//! pods' controllers create replacements, which the same affinity sends to
//! the next tier.
//!
//! What preferences cannot do, controllers do:
//! - [`gate`]: releases the fencing gate once no pod of the controller is
//!   Terminating on a virtual node (skylet finalizes a pod only when its
//!   backend confirmed the instance gone), with Events `FencingUnconfirmed`
//!   and `FencingConfirmed`;
//! - [`rebalance`]: fail-back, evictions through the Eviction API (so
//!   PodDisruptionBudgets hold) at most `maxPerMinute`, of pods owned by a
//!   controller, once a higher tier has been healthy for `afterSeconds`;
//! - [`cost`]: `controller.kubernetes.io/pod-deletion-cost` on running pods
//!   so that a scale-in removes the lowest-tier, dearest replicas first;
//! - [`status`]: each policy's `Ready` condition (`Invalid` says what to fix).
//!
//! All of them read one set of caches ([`view`]): Nodes, policies, and a
//! small projection of every Pod.
//!
//! # Caveats
//! - Preferred affinity is a score, not an order: the scheduler adds it to
//!   its other scores (NodeAffinity weighs 2, against up to about 200 for
//!   resource fit and balance), so within the nodes that fit, a tier's
//!   preference wins by a margin that shrinks with the number of tiers. The
//!   hard guarantees are the required affinity and what the scheduler
//!   filters (capacity, taints).
//! - The policy is compiled when the pod is created: a policy changed later
//!   applies to new pods (a rollout), not to running ones.
//! - `Cheapest` names the nodes priced at admission; a node added later is
//!   allowed (required affinity is by label) but least preferred.
//! - Bare pods (no controller) fail over and back only if someone recreates
//!   them; skylet never evicts them.
//! - With `failurePolicy: Ignore`, pods created while skylet's webhook is
//!   down (or restarting: a new CA is made at every start) are admitted
//!   without their policy.
//!
//! # RBAC
//! `placementpolicies` (skylet.io): get, list, watch; `placementpolicies/status`:
//! patch; `nodes`, `pods`, `namespaces`: get, list, watch; `pods`: patch;
//! `pods/eviction`: create; `poddisruptionbudgets` (policy): get, list,
//! watch; `events` (events.k8s.io): create;
//! `mutatingwebhookconfigurations` (admissionregistration.k8s.io): get,
//! create, patch.

use std::net::SocketAddr;

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use serde::Deserialize;
use skylet_provider::ConfigError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod compile;
pub mod cost;
pub mod crd;
pub mod gate;
pub mod rebalance;
pub mod selector;
pub mod status;
pub mod view;
pub mod webhook;

pub use crd::{PlacementPolicy, PlacementPolicySpec, PlacementPolicyStatus};

/// Placement's command-line flags (flattened into skylet's).
#[derive(Clone, Debug, Default, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Placement")]
pub struct Args {
    /// Serve the placement admission webhook (TLS) on this address and run
    /// the placement controllers (fencing gates, fail-back, deletion cost);
    /// placement is off without it.
    #[arg(long, env = "SKYLET_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,
    /// Host name or IP where kube-apiserver reaches the webhook
    /// (`https://HOST:PORT/mutate-pods`); default: the listen IP.
    #[arg(long, env = "SKYLET_WEBHOOK_HOST")]
    pub webhook_host: Option<String>,
    /// Reach the webhook through a Service instead:
    /// `NAMESPACE/NAME[:PORT]` (port 443 by default).
    #[arg(long, env = "SKYLET_WEBHOOK_SERVICE")]
    pub webhook_service: Option<String>,
    /// Name of the MutatingWebhookConfiguration skylet creates and keeps
    /// (default skylet-placement).
    #[arg(long, env = "SKYLET_WEBHOOK_CONFIGURATION_NAME")]
    pub webhook_configuration_name: Option<String>,
    /// Apply placement only in namespaces whose labels match this selector
    /// (kubectl syntax, e.g. `skylet.io/placement=enabled`); default: all.
    #[arg(long, env = "SKYLET_PLACEMENT_NAMESPACE_SELECTOR")]
    pub placement_namespace_selector: Option<String>,
}

/// The `placement:` section of the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct File {
    /// As `--webhook-listen`.
    pub webhook_listen: Option<SocketAddr>,
    /// As `--webhook-host`.
    pub webhook_host: Option<String>,
    /// As `--webhook-service`.
    pub webhook_service: Option<String>,
    /// As `--webhook-configuration-name`.
    pub webhook_configuration_name: Option<String>,
    /// As `--placement-namespace-selector`.
    pub namespace_selector: Option<String>,
}

/// Where kube-apiserver reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://<host>:<bound port>/mutate-pods`.
    Url {
        /// Host name or IP.
        host: String,
    },
    /// A Service in front of skylet.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: i32,
    },
}

/// Validated placement settings: placement is on.
#[derive(Clone, Debug)]
pub struct Config {
    /// The webhook's listen address (port 0 picks one).
    pub listen: SocketAddr,
    /// Where kube-apiserver reaches it.
    pub endpoint: Endpoint,
    /// The MutatingWebhookConfiguration's name.
    pub configuration_name: String,
    /// Namespaces placement applies in (`None`: all).
    pub namespace_selector: Option<crd::LabelSelector>,
}

impl Config {
    /// Merges flags over the file section: `None` when placement is off.
    ///
    /// # Errors
    /// A setting that is malformed, or given without `webhook-listen`.
    pub fn from_parts(args: Args, file: Option<File>) -> Result<Option<Self>, ConfigError> {
        let file = file.unwrap_or_default();
        let host = args.webhook_host.or(file.webhook_host);
        let service = args.webhook_service.or(file.webhook_service);
        let name = args
            .webhook_configuration_name
            .or(file.webhook_configuration_name);
        let ns_selector = args
            .placement_namespace_selector
            .or(file.namespace_selector);
        let Some(listen) = args.webhook_listen.or(file.webhook_listen) else {
            if host.is_some() || service.is_some() || name.is_some() || ns_selector.is_some() {
                return Err(ConfigError::new(
                    "webhook-listen",
                    "placement settings are given but not webhook-listen, which turns placement on",
                ));
            }
            return Ok(None);
        };
        let endpoint = match (host, service) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "webhook-service",
                    "give webhook-host or webhook-service, not both",
                ));
            }
            (None, Some(s)) => parse_service(&s)?,
            (Some(h), None) => {
                if h.is_empty() || h.contains(['/', ' ']) || h.contains("://") {
                    return Err(ConfigError::new(
                        "webhook-host",
                        format!("{h:?} is not a host name or IP (no scheme, port or path)"),
                    ));
                }
                Endpoint::Url { host: h }
            }
            (None, None) if listen.ip().is_unspecified() => {
                return Err(ConfigError::new(
                    "webhook-host",
                    format!(
                        "webhook-listen {listen} is a wildcard address: say where kube-apiserver reaches the webhook with webhook-host or webhook-service"
                    ),
                ));
            }
            (None, None) => Endpoint::Url {
                host: listen.ip().to_string(),
            },
        };
        let configuration_name = name.unwrap_or_else(|| "skylet-placement".into());
        let dns_ok = !configuration_name.is_empty()
            && configuration_name.len() <= 253
            && configuration_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !dns_ok {
            return Err(ConfigError::new(
                "webhook-configuration-name",
                format!("{configuration_name:?} is not a lowercase DNS subdomain"),
            ));
        }
        let namespace_selector = ns_selector
            .map(|s| selector::parse(&s))
            .transpose()
            .map_err(|m| ConfigError::new("placement-namespace-selector", m))?;
        Ok(Some(Self {
            listen,
            endpoint,
            configuration_name,
            namespace_selector,
        }))
    }
}

fn parse_service(s: &str) -> Result<Endpoint, ConfigError> {
    let bad = || {
        ConfigError::new(
            "webhook-service",
            format!("{s:?} is not NAMESPACE/NAME[:PORT]"),
        )
    };
    let (namespace, rest) = s.split_once('/').ok_or_else(bad)?;
    let (name, port) = match rest.split_once(':') {
        Some((n, p)) => (n, p.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 443),
    };
    if namespace.is_empty() || name.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Endpoint::Service {
        namespace: namespace.into(),
        name: name.into(),
        port: i32::from(port),
    })
}

/// Why placement could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The webhook's address could not be bound.
    #[error("cannot listen for the placement webhook on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook's certificates could not be made.
    #[error("cannot make the placement webhook's certificates")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the serving certificate.
    #[error("invalid placement webhook TLS configuration: {0}")]
    Tls(String),
}

/// Runs placement until `shutdown`: the webhook server, its configuration,
/// the fencing gate controller, the fail-back rebalancer, the deletion-cost
/// keeper and the policies' status.
///
/// # Errors
/// Only at start (certificates, the listen address); afterwards failures
/// are logged and retried.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let identity = webhook::identity(&webhook::names(&config.endpoint))?;
    let server = webhook::Server::bind(config.listen, identity.tls.clone()).await?;
    let addr = server.local_addr();
    let view = view::View::start(&client, config.namespace_selector.clone(), &shutdown);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "skylet-placement".into(),
            instance: Some(config.configuration_name.clone()),
        },
    );
    let mut tasks = tokio::task::JoinSet::new();
    let hook = webhook::Hook {
        client: client.clone(),
        view: view.clone(),
    };
    tasks.spawn(
        server
            .serve(webhook::router(hook), shutdown.clone())
            .instrument(tracing::info_span!("webhook")),
    );
    let object = webhook::configuration(&config, addr.port(), &identity.ca_pem);
    {
        let (client, view, shutdown) = (client.clone(), view.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                // answer with the caches filled: reviews before that are
                // admitted unchanged
                if !view.wait_ready(std::time::Duration::from_secs(10)).await {
                    tracing::warn!(
                        "placement caches not filled after 10s; publishing the webhook anyway"
                    );
                }
                webhook::keep_configuration(client, object, shutdown).await;
            }
            .instrument(tracing::info_span!("webhook")),
        );
    }
    tasks.spawn(
        gate::run(
            client.clone(),
            view.clone(),
            recorder.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("fencing")),
    );
    tasks.spawn(
        rebalance::run(client.clone(), view.clone(), recorder, shutdown.clone())
            .instrument(tracing::info_span!("rebalance")),
    );
    tasks.spawn(
        cost::run(client.clone(), view.clone(), shutdown.clone())
            .instrument(tracing::info_span!("deletion_cost")),
    );
    tasks.spawn(
        status::run(client, view, shutdown.clone())
            .instrument(tracing::info_span!("policy_status")),
    );
    tracing::info!(%addr, configuration = %config.configuration_name, endpoint = ?config.endpoint, "placement webhook serving");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Installs the process-wide rustls provider once.
    pub(crate) fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn args(listen: Option<&str>) -> Args {
        Args {
            webhook_listen: listen.map(|l| l.parse().unwrap()),
            ..Args::default()
        }
    }

    #[test]
    fn placement_is_off_without_a_listen_address() {
        assert!(Config::from_parts(Args::default(), None).unwrap().is_none());
        let err = Config::from_parts(
            Args {
                webhook_host: Some("x".into()),
                ..Args::default()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(err.field, "webhook-listen");
    }

    #[test]
    fn the_endpoint_is_the_listen_ip_a_host_or_a_service() {
        let c = Config::from_parts(args(Some("127.0.0.1:0")), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Url {
                host: "127.0.0.1".into()
            }
        );
        assert_eq!(c.configuration_name, "skylet-placement");
        let err = Config::from_parts(args(Some("0.0.0.0:9443")), None).unwrap_err();
        assert_eq!(err.field, "webhook-host");
        let file: File = serde_yaml_ng::from_str(
            "webhook-listen: 0.0.0.0:9443\nwebhook-service: skylet/skylet-webhook\nnamespace-selector: placement=on\n",
        )
        .unwrap();
        let c = Config::from_parts(Args::default(), Some(file))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Service {
                namespace: "skylet".into(),
                name: "skylet-webhook".into(),
                port: 443
            }
        );
        assert_eq!(
            c.namespace_selector.unwrap().match_labels["placement"],
            "on"
        );
        for (service, ok) in [
            ("a/b:8443", true),
            ("a/b:x", false),
            ("b", false),
            ("/b", false),
        ] {
            let r = Config::from_parts(
                Args {
                    webhook_service: Some(service.into()),
                    ..args(Some("0.0.0.0:1"))
                },
                None,
            );
            assert_eq!(r.is_ok(), ok, "{service}");
        }
    }

    /// The flags and the `placement:` section reach skylet's configuration.
    #[test]
    fn skylet_takes_the_flags_and_the_placement_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "placement:\n  webhook-listen: 127.0.0.1:9443\n  namespace-selector: team=a\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let load = |extra: &[&str]| {
            crate::config::Config::parse_from(
                ["skylet", "--config", path].iter().chain(extra).copied(),
            )
        };
        let c = load(&[]).unwrap().placement.unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert_eq!(c.namespace_selector.unwrap().match_labels["team"], "a");
        let c = load(&["--webhook-listen", "127.0.0.2:1"])
            .unwrap()
            .placement
            .unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint::Url {
                host: "127.0.0.2".into()
            }
        );
        assert!(
            crate::config::Config::parse_from(["skylet"])
                .unwrap()
                .placement
                .is_none()
        );
        std::fs::write(dir.path().join("c.yaml"), "placement: {webhook-lisen: x}\n").unwrap();
        let err = load(&[]).unwrap_err().to_string();
        assert!(err.contains("webhook-lisen"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let err = serde_yaml_ng::from_str::<File>("webhook-lisen: x\n").unwrap_err();
        assert!(err.to_string().contains("webhook-lisen"), "{err}");
    }
}
