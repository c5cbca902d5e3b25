//! [`Ecs`]: the aws-ecs kind of backend (`--provider aws-ecs`), its
//! settings (flags `--ecs-*`, environment `SKYLET_ECS_*`, the `ecs:`
//! section of the config file) and its construction.

use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;
use skylet_provider::{BoxError, BuildContext, ConfigError, Kind, NodeContext, parse_capacity};

use crate::{
    EcsProvider,
    config::{Capacity, Config, ServiceAccountToken},
};

/// The AWS ECS/Fargate backend: every pod is one Fargate task.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ecs;

/// What happens to service-account tokens (see [`ServiceAccountToken`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// Leave the token file out (default).
    Omit,
    /// Deliver it through Secrets Manager (one task definition per pod).
    Mount,
}

/// Flags of the ECS backend.
#[derive(clap::Args, Default, Debug)]
#[group(skip)]
#[command(next_help_heading = "AWS ECS/Fargate backend (--provider aws-ecs)")]
pub struct Args {
    /// ECS cluster name or ARN.
    #[arg(long, env = "SKYLET_ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's).
    #[arg(long, env = "SKYLET_ECS_REGION")]
    pub ecs_region: Option<String>,
    /// Endpoint URL for ECS, CloudWatch Logs and Secrets Manager (moto, a VPC endpoint).
    #[arg(long, env = "SKYLET_ECS_ENDPOINT_URL")]
    pub ecs_endpoint_url: Option<String>,
    /// Endpoint URL for CloudWatch metrics alone (default: the endpoint URL's).
    #[arg(long, env = "SKYLET_ECS_CLOUDWATCH_ENDPOINT_URL")]
    pub ecs_cloudwatch_endpoint_url: Option<String>,
    /// Subnets of the tasks (comma-separated).
    #[arg(long, env = "SKYLET_ECS_SUBNETS", value_delimiter = ',')]
    pub ecs_subnets: Vec<String>,
    /// Security groups of the tasks (comma-separated).
    #[arg(long, env = "SKYLET_ECS_SECURITY_GROUPS", value_delimiter = ',')]
    pub ecs_security_groups: Vec<String>,
    /// Availability zones of the subnets (one: the node's zone label).
    #[arg(long, env = "SKYLET_ECS_ZONES", value_delimiter = ',')]
    pub ecs_zones: Vec<String>,
    /// Give tasks a public IP.
    #[arg(long, env = "SKYLET_ECS_ASSIGN_PUBLIC_IP")]
    pub ecs_assign_public_ip: Option<bool>,
    /// Task execution role (image pulls, logs, secrets).
    #[arg(long, env = "SKYLET_ECS_EXECUTION_ROLE_ARN")]
    pub ecs_execution_role_arn: Option<String>,
    /// Default task role (annotation skylet.io/aws-task-role-arn overrides it per pod).
    #[arg(long, env = "SKYLET_ECS_TASK_ROLE_ARN")]
    pub ecs_task_role_arn: Option<String>,
    /// CloudWatch Logs group (default `/skylet/<cluster>`).
    #[arg(
        long,
        env = "SKYLET_ECS_LOG_GROUP",
        help = "CloudWatch Logs group (default /skylet/<cluster>)"
    )]
    pub ecs_log_group: Option<String>,
    /// Fargate platform version (default LATEST).
    #[arg(long, env = "SKYLET_ECS_PLATFORM_VERSION")]
    pub ecs_platform_version: Option<String>,
    /// Image that writes configMap/secret volume files (needs sh and base64).
    #[arg(long, env = "SKYLET_ECS_FILES_IMAGE")]
    pub ecs_files_image: Option<String>,
    /// Service-account token files: omit or mount.
    #[arg(long, env = "SKYLET_ECS_SERVICE_ACCOUNT_TOKEN")]
    pub ecs_service_account_token: Option<TokenMode>,
    /// Node capacity, e.g. cpu=64,memory=256Gi,pods=500.
    #[arg(long, env = "SKYLET_ECS_CAPACITY")]
    pub ecs_capacity: Option<String>,
    /// Seconds an unused task definition or secret is kept.
    #[arg(long, env = "SKYLET_ECS_GC_GRACE")]
    pub ecs_gc_grace: Option<u64>,
    /// Change a published ECS/Fargate API rate limit kept on skylet's side:
    /// NAME=CAPACITY:REFILL_PER_SECOND or NAME=off (repeatable or comma-separated;
    /// e.g. fargate-launch, cluster-resource-modify, cluster-resource-read).
    #[arg(
        long = "ecs-rate-limit",
        env = "SKYLET_ECS_RATE_LIMITS",
        value_delimiter = ',',
        value_name = "NAME=C:R"
    )]
    pub ecs_rate_limit: Vec<String>,
    /// Attempts per AWS call (retries with backoff).
    #[arg(long, env = "SKYLET_ECS_MAX_ATTEMPTS")]
    pub ecs_max_attempts: Option<u32>,
    /// Cloud Map namespace id: register pods as instances of `<service>.<namespace>`.
    #[arg(long, env = "SKYLET_ECS_CLOUD_MAP_NAMESPACE_ID")]
    pub ecs_cloud_map_namespace_id: Option<String>,
    /// Start tasks with ECS Exec (kubectl exec) unless a pod's
    /// skylet.io/ecs-exec annotation says "false" (default false).
    #[arg(long, env = "SKYLET_ECS_ENABLE_EXEC")]
    pub ecs_enable_exec: Option<bool>,
}

/// The `ecs:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct File {
    cluster: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    cloudwatch_endpoint_url: Option<String>,
    subnets: Option<Vec<String>>,
    security_groups: Option<Vec<String>>,
    zones: Option<Vec<String>>,
    assign_public_ip: Option<bool>,
    execution_role_arn: Option<String>,
    task_role_arn: Option<String>,
    log_group: Option<String>,
    platform_version: Option<String>,
    files_image: Option<String>,
    service_account_token: Option<TokenMode>,
    capacity: Option<String>,
    gc_grace: Option<u64>,
    rate_limits: Option<Vec<String>>,
    max_attempts: Option<u32>,
    cloud_map_namespace_id: Option<String>,
    enable_exec: Option<bool>,
}

fn or_vec(flag: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// A message of [`Config::check`] (`ecs-subnets: ...`) as the error of
/// the setting it names.
fn check_error(message: &str) -> ConfigError {
    let field = match message.split_once(':') {
        Some(("ecs-subnets", _)) => "ecs-subnets",
        Some(("ecs-task-role-arn", _)) => "ecs-task-role-arn",
        Some(("ecs-execution-role-arn", _)) => "ecs-execution-role-arn",
        Some(("ecs-max-attempts", _)) => "ecs-max-attempts",
        Some(("ecs-rate-limit", _)) => "ecs-rate-limit",
        _ => "ecs",
    };
    let text = message.split_once(": ").map_or(message, |(_, m)| m);
    ConfigError::new(field, text)
}

impl Kind for Ecs {
    const NAME: &'static str = "aws-ecs";
    const SECTION: &'static str = "ecs";
    type Args = Args;
    type File = File;
    type Config = Config;
    type Provider = EcsProvider;

    fn configure(args: Args, f: File, node: &NodeContext) -> Result<Config, ConfigError> {
        let cluster = args.ecs_cluster.or(f.cluster).ok_or_else(|| {
            ConfigError::new(
                "ecs-cluster",
                "the aws-ecs provider needs the ECS cluster (name or ARN)",
            )
        })?;
        let mut c = Config::new(&node.name, cluster, or_vec(args.ecs_subnets, f.subnets));
        c.region = args.ecs_region.or(f.region);
        c.endpoint_url = args.ecs_endpoint_url.or(f.endpoint_url);
        c.cloudwatch_endpoint_url = args
            .ecs_cloudwatch_endpoint_url
            .or(f.cloudwatch_endpoint_url);
        c.security_groups = or_vec(args.ecs_security_groups, f.security_groups);
        c.zones = or_vec(args.ecs_zones, f.zones);
        c.assign_public_ip = args
            .ecs_assign_public_ip
            .or(f.assign_public_ip)
            .unwrap_or(false);
        c.execution_role_arn = args.ecs_execution_role_arn.or(f.execution_role_arn);
        c.task_role_arn = args.ecs_task_role_arn.or(f.task_role_arn);
        if let Some(g) = args.ecs_log_group.or(f.log_group) {
            c.log_group = g;
        }
        c.platform_version = args.ecs_platform_version.or(f.platform_version);
        if let Some(i) = args.ecs_files_image.or(f.files_image) {
            c.files_image = i;
        }
        c.service_account_token = match args.ecs_service_account_token.or(f.service_account_token) {
            Some(TokenMode::Mount) => ServiceAccountToken::Mount,
            Some(TokenMode::Omit) | None => ServiceAccountToken::Omit,
        };
        if let Some(spec) = args.ecs_capacity.or(f.capacity) {
            let mut cap = parse_capacity("ecs-capacity", &spec)?;
            let mut take = |k: &str| cap.remove(k).unwrap_or_default();
            c.capacity = Capacity {
                cpu: take("cpu"),
                memory: take("memory"),
                pods: take("pods"),
            };
        }
        c.rate_limits = or_vec(args.ecs_rate_limit, f.rate_limits)
            .iter()
            .map(|s| skylet_provider::ratelimit::parse_override(s))
            .collect::<Result<_, _>>()
            .map_err(|e| ConfigError::new("ecs-rate-limit", e))?;
        if let Some(g) = args.ecs_gc_grace.or(f.gc_grace) {
            c.gc_grace = Duration::from_secs(g);
        }
        if let Some(n) = args.ecs_max_attempts.or(f.max_attempts) {
            c.max_attempts = n;
        }
        c.cloud_map_namespace_id = args
            .ecs_cloud_map_namespace_id
            .or(f.cloud_map_namespace_id)
            .filter(|n| !n.is_empty());
        c.exec_enabled = args.ecs_enable_exec.or(f.enable_exec).unwrap_or(false);
        c.check().map_err(|m| check_error(&m))?;
        Ok(c)
    }

    async fn build(config: Config, ctx: BuildContext) -> Result<EcsProvider, BoxError> {
        let namespace = config.cloud_map_namespace_id.clone();
        let p = EcsProvider::new(config, ctx.api_metrics.clone()).await?;
        let cloud_map = namespace.map(|ns| {
            crate::cloudmap::CloudMap::new(
                p.inner.clients.servicediscovery.clone(),
                ns,
                ctx.home,
                ctx.node.name,
                ctx.api_metrics,
            )
        });
        Ok(p.with_cloud_map(cloud_map).with_sink(ctx.sink))
    }
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

    fn node(name: &str) -> NodeContext {
        NodeContext {
            name: name.into(),
            labels: Default::default(),
        }
    }

    fn configure(flags: &[&str], yaml: &str) -> Result<Config, ConfigError> {
        let args = T::try_parse_from(std::iter::once("skylet").chain(flags.iter().copied()))
            .expect("flags parse")
            .a;
        let file: File = if yaml.is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(yaml).expect("file parses")
        };
        Ecs::configure(args, file, &node("fargate-1"))
    }

    #[test]
    fn ecs_settings_from_flags_and_file() {
        let c = configure(
            &["--ecs-region", "eu-west-1"],
            "cluster: burst\nsubnets: [subnet-a, subnet-b]\nzones: [us-east-1a]\ncapacity: cpu=8,memory=32Gi,pods=40\n",
        )
        .unwrap();
        assert_eq!(
            (c.cluster.as_str(), c.region.as_deref()),
            ("burst", Some("eu-west-1"))
        );
        assert_eq!(c.subnets, ["subnet-a", "subnet-b"]);
        assert_eq!(c.zones, ["us-east-1a"]);
        assert_eq!(c.log_group, "/skylet/burst");
        assert_eq!(c.node_name, "fargate-1");
        assert_eq!(
            (c.capacity.cpu.as_str(), c.capacity.memory.as_str()),
            ("8", "32Gi")
        );
        assert_eq!(c.capacity.pods, "40");
    }

    #[test]
    fn rate_limits_are_the_published_ones_changed_by_name() {
        let yaml = "cluster: burst\nsubnets: [subnet-a]\n";
        let specs = |c: &Config| c.buckets().unwrap().specs();
        let c = configure(&[], yaml).unwrap();
        assert_eq!(specs(&c).len(), crate::limits::PUBLISHED.len());
        let c = configure(
            &["--ecs-rate-limit", "fargate-launch=500:100,tag-modify=off"],
            yaml,
        )
        .unwrap();
        let s = specs(&c);
        assert_eq!(s.len(), crate::limits::PUBLISHED.len() - 1);
        assert!(
            s.iter()
                .any(|b| b.name == "fargate-launch" && b.capacity == 500)
        );
        let e = configure(&["--ecs-rate-limit", "nope=1:1"], yaml).unwrap_err();
        assert!(e.to_string().contains("ecs-rate-limit"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let c = configure(
            &[
                "--ecs-cluster",
                "flag",
                "--ecs-subnets",
                "s1,s2",
                "--ecs-service-account-token",
                "mount",
                "--ecs-gc-grace",
                "90",
            ],
            "cluster: file\nsubnets: [f]\nservice-account-token: omit\ngc-grace: 5\nmax-attempts: 7\n",
        )
        .unwrap();
        assert_eq!(c.cluster, "flag");
        assert_eq!(c.subnets, ["s1", "s2"]);
        assert_eq!(c.service_account_token, ServiceAccountToken::Mount);
        assert_eq!(c.gc_grace, Duration::from_secs(90));
        assert_eq!(c.max_attempts, 7, "the file fills what no flag sets");
    }

    #[test]
    fn cloud_map_is_off_unless_a_namespace_is_given() {
        let c = configure(&[], "cluster: c\nsubnets: [s]\n").unwrap();
        assert_eq!(c.cloud_map_namespace_id, None);
        let c = configure(
            &["--ecs-cloud-map-namespace-id", "ns-flag"],
            "cluster: c\nsubnets: [s]\ncloud-map-namespace-id: ns-file\n",
        )
        .unwrap();
        assert_eq!(c.cloud_map_namespace_id.as_deref(), Some("ns-flag"));
        let c = configure(
            &[],
            "cluster: c\nsubnets: [s]\ncloud-map-namespace-id: ns-file\n",
        )
        .unwrap();
        assert_eq!(c.cloud_map_namespace_id.as_deref(), Some("ns-file"));
    }

    #[test]
    fn ecs_errors_name_the_setting() {
        let e = configure(&["--ecs-subnets", "s"], "").unwrap_err();
        assert_eq!(e.field, "ecs-cluster");
        assert_eq!(
            e.to_string(),
            "invalid ecs-cluster: the aws-ecs provider needs the ECS cluster (name or ARN)"
        );
        let e = configure(&["--ecs-cluster", "c"], "").unwrap_err();
        assert_eq!(e.field, "ecs-subnets");
        let e = configure(
            &[
                "--ecs-cluster",
                "c",
                "--ecs-subnets",
                "s",
                "--ecs-task-role-arn",
                "x",
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(e.field, "ecs-task-role-arn");
        assert!(e.message.starts_with("\"x\" is not an ARN"), "{e}");
        let e = configure(
            &["--ecs-cluster", "c", "--ecs-subnets", "s"],
            "max-attempts: 0\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ecs-max-attempts: must be at least 1"
        );
        let e = configure(
            &[
                "--ecs-cluster",
                "c",
                "--ecs-subnets",
                "s",
                "--ecs-capacity",
                "cpu=8",
            ],
            "",
        )
        .unwrap_err();
        assert_eq!(e.field, "ecs-capacity");
    }

    #[test]
    fn the_file_refuses_unknown_keys() {
        let r: Result<File, _> = serde_yaml_ng::from_str("cluster: c\nsubnet: [s]\n");
        assert!(r.unwrap_err().to_string().contains("subnet"));
    }
}
