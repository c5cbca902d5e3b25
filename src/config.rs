//! skylet's configuration: flags, environment variables and an optional YAML
//! file, merged in that order of precedence and validated before anything
//! starts. A bad configuration is reported in one readable message and the
//! process exits with 64 (EX_USAGE), like linkerd2-proxy.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;
use skylet_provider::{ConfigError, NodeContext};

use crate::backends::{self, Configured};

mod fleet;

/// Why the configuration is unusable. Every variant is a user error: exit 64.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid YAML of the expected shape.
    #[error("config file {path} is invalid: {source}")]
    ParseFile {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    /// A value is out of range or malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A backend refused its settings.
    #[error(transparent)]
    Backend(#[from] ConfigError),
    /// An entry of `backends:`, or the fleet as a whole, is invalid.
    #[error("invalid {at}: {message}")]
    Backends { at: String, message: String },
    /// The command line could not be parsed.
    #[error("{0}")]
    Args(#[from] clap::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do with the Node object on shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeOnShutdown {
    /// Leave it: it goes NotReady and its pods are evicted by the node
    /// lifecycle controller only if they do not tolerate that (default, as a
    /// kubelet that stops).
    #[default]
    Keep,
    /// Delete it (the pods on it are then garbage-collected).
    Delete,
}

/// What to do with pods that DaemonSets place on the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonSetPods {
    /// Fail them with reason `DaemonSetPodNotSupported` and an Event (default):
    /// a node agent has nothing to do on a virtual node.
    #[default]
    Reject,
    /// Run them like any other pod.
    Run,
}

/// How the kubelet API gets its serving certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServingCert {
    /// `--tls-cert-file` and `--tls-key-file`.
    Files,
    /// A certificate signed by the cluster: a CSR with signer
    /// `kubernetes.io/kubelet-serving`, renewed before expiry. Someone must
    /// approve it (`kubectl certificate approve`).
    Csr,
    /// A self-signed certificate made at start (the kubelet's default).
    #[default]
    SelfSigned,
}

/// What `skylet --help` says skylet is.
const ABOUT: &str = "A virtual kubelet: a Kubernetes Node whose pods run elsewhere";

/// Command line and environment. Every option may also come from the YAML
/// file named by `--config`, under the same name in kebab-case.
#[derive(Debug, Default, Parser)]
#[command(
    name = "skylet",
    version,
    about = ABOUT
)]
pub struct Args {
    /// YAML config file; flags and environment variables override it.
    #[arg(long, env = "SKYLET_CONFIG")]
    pub config: Option<PathBuf>,
    /// kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Node to register.
    #[arg(long, env = "SKYLET_NODE_NAME")]
    pub node_name: Option<String>,
    /// Backend that runs the pods (one of the kinds this binary knows).
    #[arg(long, env = "SKYLET_PROVIDER")]
    pub provider: Option<String>,
    /// Extra node labels, key=value (repeatable, or comma-separated).
    #[arg(long = "node-label", env = "SKYLET_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Node taints, key[=value]:Effect (repeatable, or comma-separated);
    /// replaces the default `virtual-kubelet.io/provider=<provider>:NoSchedule`.
    #[arg(long = "node-taint", env = "SKYLET_NODE_TAINTS", value_delimiter = ',')]
    pub node_taints: Vec<String>,
    /// Register the node without any taint.
    #[arg(long, env = "SKYLET_NO_TAINT")]
    pub no_taint: bool,
    /// Address published as the node's InternalIP: where kube-apiserver
    /// reaches the kubelet API. Default: the pod IP in a pod ($POD_IP, from
    /// the downward API), else the address of the default route's interface.
    #[arg(long, env = "SKYLET_NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Kubelet API listen address.
    #[arg(long, env = "SKYLET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics listen address.
    #[arg(long, env = "SKYLET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How the kubelet API gets its serving certificate.
    #[arg(long, env = "SKYLET_SERVING_CERT")]
    pub serving_cert: Option<ServingCert>,
    /// Serving certificate (PEM) for `--serving-cert files`.
    #[arg(long, env = "SKYLET_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM) for `--serving-cert files`.
    #[arg(long, env = "SKYLET_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle that verifies client certificates (kube-apiserver's
    /// --kubelet-client-certificate). Without it only bearer tokens work.
    #[arg(long, env = "SKYLET_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Let unauthenticated requests through as system:anonymous (still
    /// authorized by SubjectAccessReview). Off, as on a hardened kubelet.
    #[arg(long, env = "SKYLET_ANONYMOUS_AUTH")]
    pub anonymous_auth: Option<bool>,
    /// Seconds an exec, attach or port-forward session may pass without a
    /// byte either way before it is closed, as the kubelet's
    /// `streamingConnectionIdleTimeout` (default 14400, 4 h; 0 = never).
    #[arg(long, env = "SKYLET_STREAMING_CONNECTION_IDLE_TIMEOUT")]
    pub streaming_connection_idle_timeout: Option<u64>,
    /// What to do with the Node object on shutdown.
    #[arg(long, env = "SKYLET_NODE_ON_SHUTDOWN")]
    pub node_on_shutdown: Option<NodeOnShutdown>,
    /// What to do with DaemonSet pods.
    #[arg(long, env = "SKYLET_DAEMONSET_PODS")]
    pub daemonset_pods: Option<DaemonSetPods>,
    /// Seconds between backend sweeps (status of every pod, orphan removal).
    #[arg(long, env = "SKYLET_SWEEP_INTERVAL")]
    pub sweep_interval: Option<u64>,
    /// How many pods are reconciled at once with calls to the backend:
    /// creates, deletes (default 64; 0 = unbounded).
    #[arg(long, env = "SKYLET_CONCURRENCY")]
    pub concurrency: Option<u16>,
    /// How many pod status writes to the API server are in flight at once
    /// (default 256; 0 = unbounded).
    #[arg(long, env = "SKYLET_STATUS_CONCURRENCY")]
    pub status_concurrency: Option<u16>,
    /// Log format.
    #[arg(long, env = "SKYLET_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://otel-collector:4318 (a span per reconcile and per backend
    /// call; the spans of one pod share its UID as trace ID). Off when unset.
    #[arg(long, env = "SKYLET_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Declare `ExtendWebSocketsToKubelet` in the node status, so
    /// kube-apiserver 1.36+ passes kubectl's WebSocket exec/attach/port-forward
    /// straight to skylet (`false`: it translates them to SPDY).
    #[arg(long, env = "SKYLET_WEBSOCKET_TO_KUBELET")]
    pub websocket_to_kubelet: Option<bool>,
    /// Run several replicas: each virtual node is driven by the replica
    /// that holds its Lease (`skylet-<node>` in --leader-elect-namespace);
    /// the others wait to take over.
    #[arg(long, env = "SKYLET_LEADER_ELECT")]
    pub leader_elect: Option<bool>,
    /// Namespace of the leader-election Leases (default: $POD_NAMESPACE,
    /// the service account's namespace in a pod, else default).
    #[arg(long, env = "SKYLET_LEADER_ELECT_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,
    /// This replica's identity in the Leases (default: $POD_NAME, else the
    /// host name, with the process id and a random suffix).
    #[arg(long, env = "SKYLET_LEADER_ELECT_IDENTITY")]
    pub leader_elect_identity: Option<String>,
    /// Seconds a Lease is held without renewal before others take it (15).
    #[arg(long, env = "SKYLET_LEADER_ELECT_LEASE_DURATION")]
    pub leader_elect_lease_duration: Option<u64>,
    /// Seconds the leader keeps trying to renew before it stops (10).
    #[arg(long, env = "SKYLET_LEADER_ELECT_RENEW_DEADLINE")]
    pub leader_elect_renew_deadline: Option<u64>,
    /// Seconds between attempts to acquire or renew (2).
    #[arg(long, env = "SKYLET_LEADER_ELECT_RETRY_PERIOD")]
    pub leader_elect_retry_period: Option<u64>,
    /// Placement: the PlacementPolicy webhook and its controllers.
    #[command(flatten)]
    pub placement: crate::placement::Args,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The same options as [`Args`], from the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    node_labels: BTreeMap<String, String>,
    node_taints: Option<Vec<String>>,
    no_taint: Option<bool>,
    node_ip: Option<IpAddr>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    serving_cert: Option<ServingCert>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    anonymous_auth: Option<bool>,
    streaming_connection_idle_timeout: Option<u64>,
    node_on_shutdown: Option<NodeOnShutdown>,
    daemonset_pods: Option<DaemonSetPods>,
    sweep_interval: Option<u64>,
    concurrency: Option<u16>,
    status_concurrency: Option<u16>,
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<String>,
    websocket_to_kubelet: Option<bool>,
    leader_elect: Option<bool>,
    leader_elect_namespace: Option<String>,
    leader_elect_identity: Option<String>,
    leader_elect_lease_duration: Option<u64>,
    leader_elect_renew_deadline: Option<u64>,
    leader_elect_retry_period: Option<u64>,
    /// Several backends, each its own node (see [`fleet`]).
    backends: Option<Vec<serde_yaml_ng::Mapping>>,
    /// How the fleet reacts to full and failing backends.
    failover: Option<FailoverFile>,
    /// The PlacementPolicy webhook and its controllers.
    placement: Option<crate::placement::File>,
}

/// The `failover:` section of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FailoverFile {
    capacity_cooldown_min: Option<u64>,
    capacity_cooldown_max: Option<u64>,
    unhealthy_after: Option<u32>,
    healthy_after: Option<u32>,
}

/// How the fleet reacts to full and failing backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfig {
    /// How long a backend that refused a pod for lack of capacity keeps the
    /// `skylet.io/capacity-exhausted` taint at first; each refusal while the
    /// taint is recent doubles it, up to `capacity_cooldown_max`.
    pub capacity_cooldown_min: Duration,
    /// The longest cooldown.
    pub capacity_cooldown_max: Duration,
    /// Failed pings in a row before the node is NotReady.
    pub unhealthy_after: u32,
    /// Answered pings in a row before it is Ready again.
    pub healthy_after: u32,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            capacity_cooldown_min: Duration::from_secs(60),
            capacity_cooldown_max: Duration::from_secs(900),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

fn failover(f: FailoverFile) -> Result<FailoverConfig> {
    let d = FailoverConfig::default();
    let c = FailoverConfig {
        capacity_cooldown_min: f
            .capacity_cooldown_min
            .map_or(d.capacity_cooldown_min, Duration::from_secs),
        capacity_cooldown_max: f
            .capacity_cooldown_max
            .map_or(d.capacity_cooldown_max, Duration::from_secs),
        unhealthy_after: f.unhealthy_after.unwrap_or(d.unhealthy_after),
        healthy_after: f.healthy_after.unwrap_or(d.healthy_after),
    };
    if c.capacity_cooldown_min.is_zero() || c.capacity_cooldown_min > c.capacity_cooldown_max {
        return Err(Error::Invalid {
            field: "failover.capacity-cooldown-min",
            message: "must be at least 1 second and at most capacity-cooldown-max".into(),
        });
    }
    if c.unhealthy_after == 0 || c.healthy_after == 0 {
        return Err(Error::Invalid {
            field: "failover",
            message: "unhealthy-after and healthy-after must be at least 1".into(),
        });
    }
    Ok(c)
}

/// Leader election from flags and file, `None` unless `leader-elect`.
fn leader_election(args: &Args, file: &File) -> Result<Option<crate::leader::Config>> {
    if !args.leader_elect.or(file.leader_elect).unwrap_or(false) {
        return Ok(None);
    }
    let secs = |flag: Option<u64>, key: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(key).unwrap_or(default))
    };
    let namespace = args
        .leader_elect_namespace
        .clone()
        .or_else(|| file.leader_elect_namespace.clone())
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|n| n.trim().to_owned())
        })
        .unwrap_or_else(|| "default".into());
    let identity = args
        .leader_elect_identity
        .clone()
        .or_else(|| file.leader_elect_identity.clone())
        .unwrap_or_else(default_identity);
    let c = crate::leader::Config {
        namespace,
        identity,
        lease_duration: secs(
            args.leader_elect_lease_duration,
            file.leader_elect_lease_duration,
            15,
        ),
        renew_deadline: secs(
            args.leader_elect_renew_deadline,
            file.leader_elect_renew_deadline,
            10,
        ),
        retry_period: secs(
            args.leader_elect_retry_period,
            file.leader_elect_retry_period,
            2,
        ),
    };
    c.check().map_err(|message| Error::Invalid {
        field: "leader-elect",
        message,
    })?;
    Ok(Some(c))
}

/// `$POD_NAME` (or the host name), the process id and a random suffix:
/// unique among the replicas, readable in the Lease.
fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "skylet".into());
    // RandomState is seeded randomly per process: a random suffix without
    // a dependency of its own
    let random =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    format!("{host}_{}_{:08x}", std::process::id(), random as u32)
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// kubeconfig path, if not inferred.
    pub kubeconfig: Option<PathBuf>,
    /// Metrics listen address.
    pub metrics_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// The OTLP/HTTP collector traces go to; `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// The backends, each its own virtual node.
    pub backends: Vec<Backend>,
    /// How the fleet reacts to full and failing backends.
    pub failover: FailoverConfig,
    /// Leader election; `None` when off.
    pub leader_election: Option<crate::leader::Config>,
    /// Placement by policy; `None` when off (no webhook-listen).
    pub placement: Option<crate::placement::Config>,
    /// The node IP every backend's node publishes, and why it was chosen.
    pub node_ip: (IpAddr, NodeIpSource),
}

/// Why the node IP is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeIpSource {
    /// `--node-ip`, `SKYLET_NODE_IP` or `node-ip` in the file.
    Given,
    /// The pod's IP, from `$POD_IP` (the chart sets it by downward API).
    PodIp,
    /// The address of the interface of the host's default route.
    HostPrimary,
    /// No default route: loopback.
    Loopback,
}

impl std::fmt::Display for NodeIpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Given => "set by --node-ip, SKYLET_NODE_IP or node-ip in the config file",
            Self::PodIp => "the pod IP ($POD_IP, from the downward API)",
            Self::HostPrimary => "the host's primary address (of the default route's interface)",
            Self::Loopback => "no default route, so loopback",
        })
    }
}

impl Config {
    /// Logs the node IP and why it was chosen (at start, once logging is up).
    pub fn log_node_ip(&self) {
        let (ip, source) = self.node_ip;
        if ip.is_loopback() {
            tracing::warn!(node_ip = %ip, %source, "node IP is a loopback address: kube-apiserver does not proxy logs, exec, port-forward or the node proxy to it; set --node-ip");
        } else {
            tracing::info!(node_ip = %ip, %source, "node IP chosen");
        }
    }
}

/// The node IP when none is given: `$POD_IP` (read only with `read_env`),
/// else the host's primary address, else loopback.
fn default_node_ip(read_env: bool) -> (IpAddr, NodeIpSource) {
    let pod_ip = read_env
        .then(|| std::env::var("POD_IP").ok())
        .flatten()
        .and_then(|v| v.trim().parse().ok());
    if let Some(ip) = pod_ip {
        return (ip, NodeIpSource::PodIp);
    }
    match host_primary_ip() {
        Some(ip) => (ip, NodeIpSource::HostPrimary),
        None => (IpAddr::V4(Ipv4Addr::LOCALHOST), NodeIpSource::Loopback),
    }
}

/// The source address the kernel picks towards the default gateway (from
/// /proc/net/route): a UDP socket connected there sends nothing.
fn host_primary_ip() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let gateway = routes.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway ...: the default route's gateway, in hex
        // of the address as it lies in memory
        (f.len() > 2 && f[1] == "00000000")
            .then(|| u32::from_str_radix(f[2], 16).ok())
            .flatten()
            .map(|g| Ipv4Addr::from(g.to_ne_bytes()))
    })?;
    if gateway.is_unspecified() {
        return None;
    }
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// One backend and the virtual node that shows it.
#[derive(Debug)]
pub struct Backend {
    /// Node settings.
    pub node: NodeConfig,
    /// Pod reconcile settings.
    pub pods: PodsConfig,
    /// Kubelet API server settings.
    pub server: ServerConfig,
    /// The backend, with its validated settings.
    pub configured: Box<dyn Configured>,
    /// Its price (`price:` of its entry), for the cost metrics.
    pub price: Option<crate::cost::Price>,
    /// Its region (`region:` of its entry), for the cost metrics.
    pub region: Option<String>,
}

/// Settings of the Node object.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Taints; `None` means the provider's default taint.
    pub taints: Option<Vec<Taint>>,
    /// Caps on what the backend reports as capacity and allocatable.
    pub capacity: Option<BTreeMap<String, String>>,
    /// Its price, published on the Node as annotations.
    pub price: Option<crate::cost::Price>,
    /// InternalIP.
    pub ip: IpAddr,
    /// Port published in `daemonEndpoints.kubeletEndpoint`.
    pub port: u16,
    /// What to do with the Node on shutdown.
    pub on_shutdown: NodeOnShutdown,
    /// Lease duration; renewed every quarter of it.
    pub lease_duration: Duration,
    /// Backend ping interval.
    pub ping_interval: Duration,
    /// Whether the node declares `ExtendWebSocketsToKubelet`.
    pub websocket_to_kubelet: bool,
}

/// Settings of the pod controller.
#[derive(Clone, Debug)]
pub struct PodsConfig {
    /// Node name (pods bound to it are ours).
    pub node_name: String,
    /// The node's IP (pods' hostIP).
    pub node_ip: IpAddr,
    /// DaemonSet pod policy.
    pub daemonset_pods: DaemonSetPods,
    /// Sweep interval.
    pub sweep_interval: Duration,
    /// Reconciles at once that call the backend (0 = unbounded).
    pub concurrency: u16,
    /// Status writes in flight at once (0 = unbounded).
    pub status_concurrency: u16,
}

/// Settings of the kubelet API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Serving certificate mode.
    pub serving_cert: ServingCert,
    /// Certificate and key files (mode `files`).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Client CA bundle.
    pub client_ca_file: Option<PathBuf>,
    /// Whether unauthenticated requests pass as system:anonymous.
    pub anonymous_auth: bool,
    /// How long an exec, attach or port-forward session may be idle
    /// (zero: forever).
    pub streaming_idle_timeout: Duration,
    /// IP SANs and DNS SANs for a generated certificate.
    pub node_ip: IpAddr,
    /// Node name (CSR subject, DNS SAN).
    pub node_name: String,
}

impl Config {
    /// The command line: skylet's own flags and every backend kind's.
    pub fn command() -> clap::Command {
        let cmd = backends::KINDS
            .iter()
            .fold(Args::command(), |cmd, k| k.augment_args(cmd))
            // a kind's doc comment must not become skylet's description
            .about(ABOUT)
            .long_about(None::<&str>);
        let names = backends::names();
        cmd.mut_arg("provider", |a| {
            a.value_parser(clap::builder::PossibleValuesParser::new(names))
        })
    }

    /// Parses and validates the command line and environment, and the config
    /// file it names. Settings that may only come from the environment
    /// (secrets) are read here.
    pub fn load() -> Result<Self> {
        let matches = Self::command().get_matches();
        Self::from_matches(&matches, true)
    }

    /// Builds the configuration from command-line words (tests; the first is
    /// the program name), without reading environment-only settings.
    pub fn parse_from<I, T>(words: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(words)?;
        Self::from_matches(&matches, false)
    }

    fn from_matches(matches: &ArgMatches, read_env: bool) -> Result<Self> {
        let args = Args::from_arg_matches(matches)?;
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileParts::default(),
        };
        let entries = match file.core.backends.take() {
            Some(list) => {
                refuse_single_backend_settings(&args, &file)?;
                fleet::entries(list)?
            }
            None => vec![single_backend(&args, &mut file)?],
        };
        merge(args, file.core, entries, matches, read_env)
    }
}

/// The one backend that the flags and the file's top-level keys describe.
fn single_backend(args: &Args, file: &mut FileParts) -> Result<fleet::Entry> {
    let kind_name = args
        .provider
        .clone()
        .or(file.core.provider.take())
        .unwrap_or_else(|| "mock".into());
    let kind = backends::kind(&kind_name).ok_or_else(|| Error::Invalid {
        field: "provider",
        message: format!(
            "{kind_name:?} is not a backend of this binary; one of {}",
            backends::names().join(", ")
        ),
    })?;
    let taints = if args.node_taints.is_empty() {
        file.core.node_taints.take()
    } else {
        Some(args.node_taints.clone())
    };
    Ok(fleet::Entry {
        name: args
            .node_name
            .clone()
            .or(file.core.node_name.take())
            .unwrap_or_else(|| "skylet".into()),
        kind,
        section: file.sections.remove(kind.section()),
        common: fleet::Common {
            taints,
            no_taint: Some(args.no_taint || file.core.no_taint.unwrap_or(false)),
            ..Default::default()
        },
        from_flags: true,
    })
}

/// With `backends:` in the file, the settings of a single backend are an
/// error: which backend would they be for?
fn refuse_single_backend_settings(args: &Args, file: &FileParts) -> Result<()> {
    let f = &file.core;
    let given = [
        ("provider", args.provider.is_some() || f.provider.is_some()),
        (
            "node-name",
            args.node_name.is_some() || f.node_name.is_some(),
        ),
        (
            "node-taint",
            !args.node_taints.is_empty() || f.node_taints.is_some(),
        ),
        ("no-taint", args.no_taint || f.no_taint.is_some()),
    ];
    let sections: Vec<&str> = file.sections.keys().map(String::as_str).collect();
    if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
        return Err(Error::Backends {
            at: (*name).to_owned(),
            message: "is set, and the config file lists backends: set it per backend there".into(),
        });
    }
    if let Some(s) = sections.first() {
        return Err(Error::Backends {
            at: format!("the `{s}` section"),
            message: "is at the top of the config file, which lists backends: move it into its backend's entry".into(),
        });
    }
    Ok(())
}

/// The config file: skylet's own keys, and the backends' sections by key.
#[derive(Debug, Default)]
struct FileParts {
    core: File,
    sections: BTreeMap<String, serde_yaml_ng::Value>,
}

fn read_file(path: &Path) -> Result<FileParts> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.into(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(FileParts::default());
    }
    let parse = |source| Error::ParseFile {
        path: path.into(),
        source,
    };
    let mut map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).map_err(parse)?;
    // every kind's section belongs to that kind; the rest is skylet's and
    // is checked for unknown keys
    let mut sections = BTreeMap::new();
    for k in backends::KINDS {
        if let Some(v) = map.remove(k.section()) {
            sections.insert(k.section().to_owned(), v);
        }
    }
    let core = serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(map)).map_err(parse)?;
    Ok(FileParts { core, sections })
}

/// What every backend's node shares: the process's settings.
struct Shared {
    labels: BTreeMap<String, String>,
    listen: SocketAddr,
    node_ip: IpAddr,
    serving_cert: ServingCert,
    tls_files: Option<(PathBuf, PathBuf)>,
    client_ca_file: Option<PathBuf>,
    anonymous_auth: bool,
    streaming_idle_timeout: Duration,
    on_shutdown: NodeOnShutdown,
    websocket_to_kubelet: bool,
    daemonset_pods: DaemonSetPods,
    sweep_interval: Duration,
    concurrency: u16,
    status_concurrency: u16,
}

fn merge(
    args: Args,
    mut file: File,
    entries: Vec<fleet::Entry>,
    matches: &ArgMatches,
    read_env: bool,
) -> Result<Config> {
    let leader_election = leader_election(&args, &file)?;
    let mut labels = std::mem::take(&mut file.node_labels);
    for l in &args.node_labels {
        let (k, v) = l.split_once('=').ok_or_else(|| Error::Invalid {
            field: "node-label",
            message: format!("{l:?} is not key=value"),
        })?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    for (k, v) in &labels {
        validate_label(k, v)?;
    }

    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 10250)));
    let node_ip = match args.node_ip.or(file.node_ip) {
        Some(ip) => (ip, NodeIpSource::Given),
        None => default_node_ip(read_env),
    };
    let metrics_listen = args
        .metrics_listen
        .or(file.metrics_listen)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 10255)));

    let serving_cert = args.serving_cert.or(file.serving_cert).unwrap_or_default();
    let cert = args.tls_cert_file.or(file.tls_cert_file);
    let key = args.tls_key_file.or(file.tls_key_file);
    let tls_files = match (serving_cert, cert, key) {
        (ServingCert::Files, Some(c), Some(k)) => Some((c, k)),
        (ServingCert::Files, _, _) => {
            return Err(Error::Invalid {
                field: "serving-cert",
                message: "`files` needs both tls-cert-file and tls-key-file".into(),
            });
        }
        (_, Some(c), Some(k)) => {
            return Err(Error::Invalid {
                field: "tls-cert-file",
                message: format!(
                    "{} and {} are given but serving-cert is not `files`",
                    c.display(),
                    k.display()
                ),
            });
        }
        _ => None,
    };
    for (field, path) in [
        ("tls-cert-file", tls_files.as_ref().map(|f| &f.0)),
        ("tls-key-file", tls_files.as_ref().map(|f| &f.1)),
    ] {
        if let Some(p) = path {
            ensure_readable(field, p)?;
        }
    }
    let client_ca_file = args.client_ca_file.or(file.client_ca_file);
    if let Some(p) = &client_ca_file {
        ensure_readable("client-ca-file", p)?;
    }

    let sweep = args.sweep_interval.or(file.sweep_interval).unwrap_or(10);
    if sweep == 0 {
        return Err(Error::Invalid {
            field: "sweep-interval",
            message: "must be at least 1 second".into(),
        });
    }
    let shared = Shared {
        labels,
        listen,
        node_ip: node_ip.0,
        serving_cert,
        tls_files,
        client_ca_file,
        anonymous_auth: args.anonymous_auth.or(file.anonymous_auth).unwrap_or(false),
        streaming_idle_timeout: Duration::from_secs(
            args.streaming_connection_idle_timeout
                .or(file.streaming_connection_idle_timeout)
                .unwrap_or(4 * 3600),
        ),
        on_shutdown: args
            .node_on_shutdown
            .or(file.node_on_shutdown)
            .unwrap_or_default(),
        websocket_to_kubelet: args
            .websocket_to_kubelet
            .or(file.websocket_to_kubelet)
            .unwrap_or(true),
        daemonset_pods: args
            .daemonset_pods
            .or(file.daemonset_pods)
            .unwrap_or_default(),
        sweep_interval: Duration::from_secs(sweep),
        concurrency: args
            .concurrency
            .or(file.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY),
        status_concurrency: args
            .status_concurrency
            .or(file.status_concurrency)
            .unwrap_or(DEFAULT_STATUS_CONCURRENCY),
    };

    let mut backends = Vec::with_capacity(entries.len());
    let mut ports = std::collections::BTreeMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let b = backend(&shared, i, entry, matches, read_env)?;
        let addr = b.server.listen;
        if addr.port() != 0 {
            if addr == metrics_listen
                || metrics_listen.port() == addr.port() && addr.ip() == metrics_listen.ip()
            {
                return Err(Error::Invalid {
                    field: "metrics-listen",
                    message: format!(
                        "{metrics_listen} is also the kubelet API address of {}; metrics are served on a port of their own",
                        b.node.name
                    ),
                });
            }
            if let Some(other) = ports.insert(addr, b.node.name.clone()) {
                return Err(Error::Backends {
                    at: format!("backend {}", b.node.name),
                    message: format!(
                        "listens on {addr}, as {other} does; give each backend its own port"
                    ),
                });
            }
        }
        backends.push(b);
    }
    Ok(Config {
        kubeconfig: args.kubeconfig.or(file.kubeconfig),
        metrics_listen,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint),
        failover: failover(file.failover.unwrap_or_default())?,
        leader_election,
        placement: crate::placement::Config::from_parts(args.placement, file.placement)?,
        backends,
        node_ip,
    })
}

/// The `i`-th backend of the process, validated.
fn backend(
    shared: &Shared,
    i: usize,
    entry: fleet::Entry,
    matches: &ArgMatches,
    read_env: bool,
) -> Result<Backend> {
    let fleet::Entry {
        name,
        kind,
        section,
        common,
        from_flags,
    } = entry;
    let field = if from_flags {
        "node-name"
    } else {
        "backends[].name"
    };
    validate_dns_subdomain(field, &name)?;
    let mut labels = shared.labels.clone();
    for (k, v) in &common.labels {
        validate_label(k, v)?;
        labels.insert(k.clone(), v.clone());
    }
    labels.insert(BACKEND_LABEL.into(), name.clone());
    if let Some(r) = &common.region {
        validate_label(REGION_LABEL, r)?;
        labels.insert(REGION_LABEL.into(), r.clone());
    }
    if let Some(z) = &common.zone {
        validate_label(ZONE_LABEL, z)?;
        labels.insert(ZONE_LABEL.into(), z.clone());
    }
    let taints = match (common.no_taint.unwrap_or(false), &common.taints) {
        (true, _) => Some(Vec::new()),
        (false, Some(specs)) => Some(
            specs
                .iter()
                .map(|s| parse_taint(s))
                .collect::<Result<_>>()?,
        ),
        (false, None) => None,
    };
    let capacity = common
        .capacity
        .as_deref()
        .map(|c| {
            skylet_provider::parse_capacity(
                if from_flags {
                    "node-capacity"
                } else {
                    "backends[].capacity"
                },
                c,
            )
        })
        .transpose()?;
    let listen = match common.listen {
        Some(addr) => addr,
        None if shared.listen.port() == 0 => shared.listen,
        None => {
            let port = u16::try_from(usize::from(shared.listen.port()) + i).map_err(|_| {
                Error::Backends {
                    at: format!("backend {name}"),
                    message: "no port left after the first backend's; set listen".into(),
                }
            })?;
            SocketAddr::new(shared.listen.ip(), port)
        }
    };

    let mut node_labels = crate::node::base_labels(&name, kind.name());
    node_labels.extend(labels.clone());
    let ctx = NodeContext {
        name: name.clone(),
        labels: node_labels,
    };
    let configured = kind
        .configure(from_flags.then_some(matches), section, &ctx, read_env)
        .map_err(|e| {
            if from_flags {
                Error::Backend(e)
            } else {
                Error::Backends {
                    at: format!("backend {name}"),
                    message: e.to_string(),
                }
            }
        })?;
    let price = common
        .price
        .map(|v| crate::cost::Price::from_yaml(v, &format!("backend {name}: price")))
        .transpose()
        .map_err(|e| Error::Backends {
            at: e.field,
            message: e.message,
        })?;
    let region = common.region.clone();
    Ok(Backend {
        configured,
        price: price.clone(),
        region,
        node: NodeConfig {
            name: name.clone(),
            labels,
            taints,
            capacity,
            price,
            ip: shared.node_ip,
            port: listen.port(),
            on_shutdown: shared.on_shutdown,
            lease_duration: Duration::from_secs(40),
            ping_interval: Duration::from_secs(10),
            websocket_to_kubelet: shared.websocket_to_kubelet,
        },
        pods: PodsConfig {
            node_name: name.clone(),
            node_ip: shared.node_ip,
            daemonset_pods: shared.daemonset_pods,
            sweep_interval: shared.sweep_interval,
            concurrency: shared.concurrency,
            status_concurrency: shared.status_concurrency,
        },
        server: ServerConfig {
            listen,
            serving_cert: shared.serving_cert,
            tls_files: shared.tls_files.clone(),
            client_ca_file: shared.client_ca_file.clone(),
            anonymous_auth: shared.anonymous_auth,
            streaming_idle_timeout: shared.streaming_idle_timeout,
            node_ip: shared.node_ip,
            node_name: name,
        },
    })
}

/// The label naming a node's backend.
pub const BACKEND_LABEL: &str = "skylet.io/backend";
/// The well-known region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The well-known zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Reconciles that call the backend at once by default: cloud APIs throttle
/// long before this (ECS, ARM), and a simulated backend answers at once.
const DEFAULT_CONCURRENCY: u16 = 64;

/// Status writes in flight by default. Unbounded, a burst of pods means as
/// many writes in flight, each on its own HTTP/1.1 connection with its
/// buffers and TLS state (2,000 pods: 92 MiB peak RSS unbounded, 72 MiB at
/// 64). Too few, and the node falls behind the creates: 10,000 pods started
/// with p50 6.8 s / p99 9.0 s at 64 and 1.9 s / 5.2 s at 256, for 220 and
/// 228 MiB (hack/bench, BENCHMARKS.md session 3).
const DEFAULT_STATUS_CONCURRENCY: u16 = 256;

fn ensure_readable(field: &'static str, path: &Path) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| Error::Invalid {
            field,
            message: format!("{}: {e}", path.display()),
        })
}

fn validate_dns_subdomain(field: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field,
            message: format!("{s:?} is not a lowercase DNS subdomain (RFC 1123)"),
        })
    }
}

fn validate_label(key: &str, value: &str) -> Result<()> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && n.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && n.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
    };
    let key_ok = match key.split_once('/') {
        Some((prefix, name)) => {
            validate_dns_subdomain("node-label", prefix).is_ok() && name_ok(name)
        }
        None => name_ok(key),
    };
    if !key_ok {
        return Err(Error::Invalid {
            field: "node-label",
            message: format!("{key:?} is not a valid label key"),
        });
    }
    if !(value.is_empty() || name_ok(value)) {
        return Err(Error::Invalid {
            field: "node-label",
            message: format!("{value:?} (for {key}) is not a valid label value"),
        });
    }
    Ok(())
}

/// Parses `key[=value]:Effect`.
fn parse_taint(spec: &str) -> Result<Taint> {
    let bad = |why: &str| Error::Invalid {
        field: "node-taint",
        message: format!("{spec:?}: {why}; expected key[=value]:Effect"),
    };
    let (kv, effect) = spec.rsplit_once(':').ok_or_else(|| bad("no effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad(
            "effect must be NoSchedule, PreferNoSchedule or NoExecute",
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    validate_label(key, value.as_deref().unwrap_or("")).map_err(|_| bad("invalid key or value"))?;
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(v: &[&str]) -> Result<Config> {
        Config::parse_from(std::iter::once("skylet").chain(v.iter().copied()))
    }

    fn one(v: &[&str]) -> Backend {
        let mut c = load(v).unwrap();
        assert_eq!(c.backends.len(), 1);
        c.backends.remove(0)
    }

    #[test]
    fn defaults_are_usable() {
        let b = one(&[]);
        assert_eq!(b.node.name, "skylet");
        assert_eq!(b.server.listen.port(), 10250);
        assert!(
            b.node.taints.is_none(),
            "default taint comes from the provider"
        );
        assert_eq!(b.server.serving_cert, ServingCert::SelfSigned);
        assert_eq!(b.configured.kind(), "mock");
    }

    #[test]
    fn flags_override_the_file_and_the_backend_gets_its_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "node-name: from-file\nnode-labels: {tier: burst}\nmock: {start-latency: 2}\n",
        )
        .unwrap();
        let b = one(&[
            "--config",
            path.to_str().unwrap(),
            "--node-name",
            "from-flag",
        ]);
        assert_eq!(b.node.name, "from-flag");
        assert_eq!(b.node.labels["tier"], "burst");
        let settings = format!("{:?}", b.configured);
        assert!(settings.contains("start_latency: 2s"), "{settings}");
    }

    #[test]
    fn unknown_file_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "node-nmae: typo\n").unwrap();
        let err = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("node-nmae"), "{err}");
        std::fs::write(&path, "mock: {start-latncy: 1}\n").unwrap();
        let err = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("start-latncy"), "{err}");
    }

    #[test]
    fn taints_parse_and_bad_ones_are_refused() {
        let b = one(&["--node-taint", "a.io/x=y:NoExecute,b:NoSchedule"]);
        let t = b.node.taints.unwrap();
        assert_eq!(
            (
                t[0].key.as_str(),
                t[0].value.as_deref(),
                t[0].effect.as_str()
            ),
            ("a.io/x", Some("y"), "NoExecute")
        );
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref()), ("b", None));
        let err = load(&["--node-taint", "a=b:Sometimes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("effect must be"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (flags, needle) in [
            (vec!["--node-name", "Not_Valid"], "node-name"),
            (vec!["--node-label", "novalue"], "node-label"),
            (vec!["--serving-cert", "files"], "serving-cert"),
            (vec!["--mock-failure-rate", "2"], "mock-failure-rate"),
            (vec!["--mock-capacity", "cpu=1,pods=1"], "memory is missing"),
            (vec!["--sweep-interval", "0"], "sweep-interval"),
            (vec!["--provider", "gce"], "provider"),
            (
                vec![
                    "--listen",
                    "0.0.0.0:9000",
                    "--metrics-listen",
                    "0.0.0.0:9000",
                ],
                "metrics-listen",
            ),
        ] {
            let err = load(&flags).unwrap_err().to_string();
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
    }

    #[test]
    fn the_node_ip_is_given_or_the_hosts_primary_address() {
        let c = load(&["--node-ip", "10.1.2.3"]).unwrap();
        assert_eq!(
            c.node_ip,
            ("10.1.2.3".parse().unwrap(), NodeIpSource::Given)
        );
        assert_eq!(c.backends[0].node.ip, c.node_ip.0);
        // tests read no environment: no $POD_IP
        let (ip, source) = load(&[]).unwrap().node_ip;
        match source {
            NodeIpSource::HostPrimary => assert!(!ip.is_loopback(), "{ip}"),
            NodeIpSource::Loopback => assert!(ip.is_loopback()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_of_a_backend_that_is_not_selected_are_ignored() {
        assert_eq!(one(&["--ecs-cluster", "c"]).configured.kind(), "mock");
    }
}
