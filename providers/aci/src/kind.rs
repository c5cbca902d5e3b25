//! The ACI backend as a kind of backend ([`Aci`], `--provider azure-aci`):
//! flags `--aci-*`, environment `SKYLET_ACI_*` and the standard `AZURE_*`
//! variables, the `aci:` section of the config file, and how the backend
//! is built from them.
//!
//! `AZURE_CLIENT_SECRET` is read from the environment only
//! ([`Kind::read_env`]): never a flag, which `ps` shows, nor in `--help`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::ValueEnum;
use serde::Deserialize;
use skylet_provider::{BoxError, BuildContext, ConfigError, Kind, NodeContext};

use crate::{
    AciProvider, Config,
    config::{AuthMode, Capacity},
};

/// The Azure Container Instances backend: one container group per pod.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aci;

/// How skylet signs in to Azure (see [`AuthMode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// Workload identity, else managed identity, else the Azure CLI (default).
    Default,
    /// Service principal with a client secret.
    ClientSecret,
    /// Workload identity federation.
    WorkloadIdentity,
    /// Managed identity.
    ManagedIdentity,
    /// Azure CLI.
    AzureCli,
}

/// Flags of the ACI backend.
#[derive(clap::Args, Debug, Default)]
#[group(skip)]
#[command(next_help_heading = "Azure Container Instances backend (--provider azure-aci)")]
pub struct Args {
    /// Azure subscription id.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID")]
    pub aci_subscription_id: Option<String>,
    /// Resource group of the container groups.
    #[arg(long, env = "SKYLET_ACI_RESOURCE_GROUP")]
    pub aci_resource_group: Option<String>,
    /// Azure region (westeurope, eastus, ...).
    #[arg(long, env = "SKYLET_ACI_LOCATION")]
    pub aci_location: Option<String>,
    /// Availability zones (comma-separated; one pins every group to it).
    #[arg(long, env = "SKYLET_ACI_ZONES", value_delimiter = ',')]
    pub aci_zones: Vec<String>,
    /// Azure Resource Manager endpoint (sovereign clouds, the test emulator).
    #[arg(long, env = "SKYLET_ACI_ARM_ENDPOINT")]
    pub aci_arm_endpoint: Option<String>,
    /// Azure Monitor metrics endpoint (default: the location's in the public cloud).
    #[arg(long, env = "SKYLET_ACI_METRICS_ENDPOINT")]
    pub aci_metrics_endpoint: Option<String>,
    /// Entra ID authority host.
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub aci_authority_host: Option<String>,
    /// Extra trusted CA certificates (PEM) for ARM and Entra ID.
    #[arg(long, env = "SKYLET_ACI_CA_FILE")]
    pub aci_ca_file: Option<PathBuf>,
    /// How to sign in.
    #[arg(long, env = "SKYLET_ACI_AUTH")]
    pub aci_auth: Option<Auth>,
    /// Entra ID tenant id.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub aci_tenant_id: Option<String>,
    /// Client id of the app registration or user-assigned identity.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub aci_client_id: Option<String>,
    /// File holding the client secret (or set AZURE_CLIENT_SECRET).
    #[arg(long, env = "SKYLET_ACI_CLIENT_SECRET_FILE")]
    pub aci_client_secret_file: Option<PathBuf>,
    /// The client secret from the environment only (never a flag: flags show in `ps`).
    #[arg(skip)]
    pub aci_client_secret_env: Option<String>,
    /// Delegated subnets for private IPs (comma-separated resource ids).
    #[arg(long, env = "SKYLET_ACI_SUBNET_IDS", value_delimiter = ',')]
    pub aci_subnet_ids: Vec<String>,
    /// DNS servers of the groups (e.g. the cluster DNS Service IP).
    #[arg(long, env = "SKYLET_ACI_DNS_NAMESERVERS", value_delimiter = ',')]
    pub aci_dns_nameservers: Vec<String>,
    /// DNS search domains (comma-separated).
    #[arg(long, env = "SKYLET_ACI_DNS_SEARCH_DOMAINS", value_delimiter = ',')]
    pub aci_dns_search_domains: Vec<String>,
    /// DNS resolver options (e.g. ndots:5).
    #[arg(long, env = "SKYLET_ACI_DNS_OPTIONS")]
    pub aci_dns_options: Option<String>,
    /// Cluster DNS domain for the search path of ClusterFirst pods (with --aci-dns-nameservers).
    #[arg(long, env = "SKYLET_ACI_CLUSTER_DOMAIN")]
    pub aci_cluster_domain: Option<String>,
    /// Change a published API rate limit kept on skylet's side: NAME=CAPACITY:REFILL_PER_SECOND
    /// or NAME=off (repeatable or comma-separated; buckets reads, writes, deletes, creates-5m,
    /// creates-1h, deletes-5m, deletes-1h).
    #[arg(
        long = "aci-rate-limit",
        env = "SKYLET_ACI_RATE_LIMITS",
        value_delimiter = ',',
        value_name = "NAME=C:R"
    )]
    pub aci_rate_limit: Vec<String>,
    /// Node capacity, e.g. cpu=100,memory=400Gi,pods=100 (default: the location's quota).
    #[arg(long, env = "SKYLET_ACI_CAPACITY")]
    pub aci_capacity: Option<String>,
    /// Seconds between polls of `kubectl logs -f`.
    #[arg(long, env = "SKYLET_ACI_LOG_POLL_INTERVAL")]
    pub aci_log_poll_interval: Option<f64>,
    /// Attempts per ARM call.
    #[arg(long, env = "SKYLET_ACI_MAX_ATTEMPTS")]
    pub aci_max_attempts: Option<u32>,
    /// Run `kubectl exec` commands under /bin/sh to learn their exit code,
    /// which ACI does not report (default true; false: images without
    /// /bin/sh, exit code always 0).
    #[arg(long, env = "SKYLET_ACI_EXEC_EXIT_CODE")]
    pub aci_exec_exit_code: Option<bool>,
}

/// The `aci:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct File {
    subscription_id: Option<String>,
    resource_group: Option<String>,
    location: Option<String>,
    zones: Option<Vec<String>>,
    arm_endpoint: Option<String>,
    metrics_endpoint: Option<String>,
    authority_host: Option<String>,
    ca_file: Option<PathBuf>,
    auth: Option<Auth>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    subnet_ids: Option<Vec<String>>,
    dns_nameservers: Option<Vec<String>>,
    dns_search_domains: Option<Vec<String>>,
    dns_options: Option<String>,
    cluster_domain: Option<String>,
    capacity: Option<String>,
    rate_limits: Option<Vec<String>>,
    log_poll_interval: Option<f64>,
    max_attempts: Option<u32>,
    exec_exit_code: Option<bool>,
}

impl Kind for Aci {
    const NAME: &'static str = "azure-aci";
    const SECTION: &'static str = "aci";
    type Args = Args;
    type File = File;
    type Config = Config;
    type Provider = AciProvider;

    /// `AZURE_CLIENT_SECRET`, if set and not empty.
    fn read_env(args: &mut Args) {
        args.aci_client_secret_env = std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
    }

    fn configure(args: Args, file: File, node: &NodeContext) -> Result<Config, ConfigError> {
        configure(args, file, &node.name)
    }

    async fn build(config: Config, ctx: BuildContext) -> Result<AciProvider, BoxError> {
        Ok(AciProvider::new(config, ctx.sink, ctx.api_metrics).await?)
    }
}

fn or_vec(flag: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

fn required(v: Option<String>, field: &str, what: &str) -> Result<String, ConfigError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::new(field, format!("the {} provider needs {what}", Aci::NAME)))
}

fn ensure_readable(field: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))
}

/// Merges flags over the file and validates the result for node `node_name`.
fn configure(args: Args, f: File, node_name: &str) -> Result<Config, ConfigError> {
    let subscription = required(
        args.aci_subscription_id.or(f.subscription_id),
        "aci-subscription-id",
        "the subscription id",
    )?;
    let rg = required(
        args.aci_resource_group.or(f.resource_group),
        "aci-resource-group",
        "the resource group",
    )?;
    let location = required(
        args.aci_location.or(f.location),
        "aci-location",
        "the region (e.g. westeurope)",
    )?;
    let mut c = Config::new(node_name, subscription, rg, location);
    c.zones = or_vec(args.aci_zones, f.zones);
    if let Some(e) = args.aci_arm_endpoint.or(f.arm_endpoint) {
        c.arm_endpoint = e.trim_end_matches('/').to_owned();
    }
    c.metrics_endpoint = args
        .aci_metrics_endpoint
        .or(f.metrics_endpoint)
        .map(|e| e.trim_end_matches('/').to_owned());
    c.authority_host = args.aci_authority_host.or(f.authority_host);
    c.ca_file = args.aci_ca_file.or(f.ca_file);
    if let Some(path) = &c.ca_file {
        ensure_readable("aci-ca-file", path)?;
    }
    c.auth = match args.aci_auth.or(f.auth).unwrap_or(Auth::Default) {
        Auth::Default => AuthMode::Default,
        Auth::ClientSecret => AuthMode::ClientSecret,
        Auth::WorkloadIdentity => AuthMode::WorkloadIdentity,
        Auth::ManagedIdentity => AuthMode::ManagedIdentity,
        Auth::AzureCli => AuthMode::AzureCli,
    };
    c.tenant_id = args.aci_tenant_id.or(f.tenant_id);
    c.client_id = args.aci_client_id.or(f.client_id);
    c.client_secret = match args.aci_client_secret_file.or(f.client_secret_file) {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    ConfigError::new("aci-client-secret-file", format!("{}: {e}", path.display()))
                })?
                .trim()
                .to_owned(),
        ),
        None => args.aci_client_secret_env,
    };
    c.subnet_ids = or_vec(args.aci_subnet_ids, f.subnet_ids);
    c.dns_nameservers = or_vec(args.aci_dns_nameservers, f.dns_nameservers);
    c.dns_search_domains = or_vec(args.aci_dns_search_domains, f.dns_search_domains);
    c.dns_options = args.aci_dns_options.or(f.dns_options);
    c.cluster_domain = args.aci_cluster_domain.or(f.cluster_domain);
    if let Some(spec) = args.aci_capacity.or(f.capacity) {
        c.capacity = parse_capacity(&spec)?;
    }
    c.rate_limits = or_vec(args.aci_rate_limit, f.rate_limits)
        .iter()
        .map(|s| skylet_provider::ratelimit::parse_override(s))
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new("aci-rate-limit", e))?;
    if let Some(s) = args.aci_log_poll_interval.or(f.log_poll_interval) {
        if !(s.is_finite() && (0.1..=60.0).contains(&s)) {
            return Err(ConfigError::new(
                "aci-log-poll-interval",
                format!("{s} is not between 0.1 and 60 seconds"),
            ));
        }
        c.log_poll_interval = Duration::from_secs_f64(s);
    }
    if let Some(n) = args.aci_max_attempts.or(f.max_attempts) {
        c.max_attempts = n;
    }
    if let Some(b) = args.aci_exec_exit_code.or(f.exec_exit_code) {
        c.exec_exit_code = b;
    }
    c.check().map_err(|message| {
        let (field, rest) = message
            .split_once(": ")
            .unwrap_or(("aci", message.as_str()));
        let field = FIELDS
            .iter()
            .find(|f| **f == field)
            .copied()
            .unwrap_or("aci");
        ConfigError::new(field, rest)
    })?;
    Ok(c)
}

/// Setting names [`Config::check`] may name.
const FIELDS: &[&str] = &[
    "aci-subscription-id",
    "aci-resource-group",
    "aci-location",
    "aci-subnet-ids",
    "aci-arm-endpoint",
    "aci-tenant-id",
    "aci-client-id",
    "aci-client-secret-file",
    "aci-max-attempts",
    "aci-rate-limit",
];

/// `cpu=100,memory=400Gi,pods=100[,nvidia.com/gpu=4]`: any subset; the rest
/// comes from the location's quota. (Not [`skylet_provider::parse_capacity`],
/// which requires cpu, memory and pods: here each may come from the quota.)
fn parse_capacity(spec: &str) -> Result<Capacity, ConfigError> {
    let bad = |message: String| ConfigError::new("aci-capacity", message);
    let mut c = Capacity::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not resource=quantity")))?;
        if skylet_provider::quantity::Quantity::parse(v).is_none() {
            return Err(bad(format!("{v:?} (for {k}) is not a quantity")));
        }
        let slot = match k {
            "cpu" => &mut c.cpu,
            "memory" => &mut c.memory,
            "pods" => &mut c.pods,
            "nvidia.com/gpu" => &mut c.gpu,
            other => {
                return Err(bad(format!(
                    "unknown resource {other:?}; use cpu, memory, pods, nvidia.com/gpu"
                )));
            }
        };
        *slot = Some(v.to_owned());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn node(name: &str) -> NodeContext {
        NodeContext {
            name: name.to_owned(),
            labels: BTreeMap::new(),
        }
    }

    fn load(flags: &[&str], yaml: &str) -> Result<Config, String> {
        let args = T::try_parse_from(std::iter::once("skylet").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?
            .a;
        let file: File = if yaml.is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?
        };
        Aci::configure(args, file, &node("aci-1")).map_err(|e| e.to_string())
    }

    #[test]
    fn aci_settings_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let yaml = format!(
            "subscription-id: {SUB}\nresource-group: burst-rg\nlocation: westeurope\n\
             auth: client-secret\ntenant-id: t\nclient-id: c\nclient-secret-file: {}\ncapacity: cpu=8,pods=40\n",
            secret.display()
        );
        let a = load(&["--aci-location", "northeurope"], &yaml).unwrap();
        assert_eq!(
            (a.resource_group.as_str(), a.location.as_str()),
            ("burst-rg", "northeurope")
        );
        assert_eq!(a.auth, AuthMode::ClientSecret);
        assert_eq!(a.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(a.node_name, "aci-1");
        assert_eq!(
            (a.capacity.cpu.as_deref(), a.capacity.memory.as_deref()),
            (Some("8"), None)
        );
        assert!(
            !format!("{a:?}").contains("s3cret"),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn rate_limits_are_the_published_ones_changed_by_name() {
        let base = ["--aci-subscription-id", SUB, "--aci-resource-group", "rg"];
        let with = |extra: &[&str], yaml: &str| {
            let mut flags = base.to_vec();
            flags.extend_from_slice(&["--aci-location", "westeurope"]);
            flags.extend_from_slice(extra);
            load(&flags, yaml)
        };
        let names = |c: &Config| -> Vec<(&'static str, u32)> {
            c.buckets()
                .unwrap()
                .specs()
                .iter()
                .map(|b| (b.name, b.capacity))
                .collect()
        };
        let c = with(&[], "").unwrap();
        assert_eq!(names(&c).len(), 7, "the published buckets by default");
        let c = with(&["--aci-rate-limit", "writes=400:20,creates-1h=off"], "").unwrap();
        let n = names(&c);
        assert!(n.contains(&("writes", 400)) && n.len() == 6, "{n:?}");
        let c = with(&[], "rate-limits: [creates-5m=off]").unwrap();
        assert_eq!(names(&c).len(), 6);
        for bad in ["nope=1:1", "writes=1"] {
            let e = with(&["--aci-rate-limit", bad], "").unwrap_err();
            assert!(e.contains("aci-rate-limit"), "{e}");
        }
    }

    #[test]
    fn the_secret_from_the_environment_is_used_without_a_file() {
        let mut args = T::try_parse_from([
            "skylet",
            "--aci-subscription-id",
            SUB,
            "--aci-resource-group",
            "rg",
            "--aci-location",
            "westeurope",
            "--aci-auth",
            "client-secret",
            "--aci-tenant-id",
            "t",
            "--aci-client-id",
            "c",
        ])
        .unwrap()
        .a;
        args.aci_client_secret_env = Some("from-env".into());
        let c = Aci::configure(args, File::default(), &node("n")).unwrap();
        assert_eq!(c.client_secret.as_deref(), Some("from-env"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let e = load(&[], "subscription-id: x\nregion: westeurope\n").unwrap_err();
        assert!(e.contains("region"), "{e}");
    }

    #[test]
    fn aci_errors_name_the_setting() {
        let base = ["--aci-resource-group", "rg", "--aci-location", "westeurope"];
        let with = |extra: &[&str]| load(&[&base[..], extra].concat(), "").unwrap_err();
        let err = with(&[]);
        assert_eq!(
            err,
            "invalid aci-subscription-id: the azure-aci provider needs the subscription id"
        );
        assert!(with(&["--aci-subscription-id", "nope"]).contains("aci-subscription-id"));
        let err = with(&[
            "--aci-subscription-id",
            SUB,
            "--aci-auth",
            "client-secret",
            "--aci-tenant-id",
            "t",
        ]);
        assert!(err.contains("aci-client-id"), "{err}");
        let err = with(&["--aci-subscription-id", SUB, "--aci-subnet-ids", "subnet-1"]);
        assert!(err.contains("aci-subnet-ids"), "{err}");
        let err = with(&["--aci-subscription-id", SUB, "--aci-capacity", "cpu=lots"]);
        assert!(err.contains("aci-capacity"), "{err}");
        let err = with(&["--aci-subscription-id", SUB, "--aci-log-poll-interval", "0"]);
        assert_eq!(
            err,
            "invalid aci-log-poll-interval: 0 is not between 0.1 and 60 seconds"
        );
        let err = with(&["--aci-subscription-id", SUB, "--aci-max-attempts", "0"]);
        assert_eq!(err, "invalid aci-max-attempts: must be at least 1");
        let err = with(&[
            "--aci-subscription-id",
            SUB,
            "--aci-ca-file",
            "/nonexistent/ca.pem",
        ]);
        assert!(
            err.starts_with("invalid aci-ca-file: /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
