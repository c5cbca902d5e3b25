//! Settings of the AWS ECS/Fargate backend (`--provider aws-ecs`): flags
//! `--ecs-*`, environment `SKYLET_ECS_*`, the `ecs:` section of the file.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::{Error, Result};

/// What happens to service-account tokens (see `skylet_ecs::config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// Leave the token file out (default).
    Omit,
    /// Deliver it through Secrets Manager (one task definition per pod).
    Mount,
}

/// Flags of the ECS backend.
#[derive(Debug, Default, Args)]
pub struct EcsArgs {
    /// ECS cluster name or ARN.
    #[arg(long, env = "SKYLET_ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's).
    #[arg(long, env = "SKYLET_ECS_REGION")]
    pub ecs_region: Option<String>,
    /// Endpoint URL for ECS, CloudWatch Logs and Secrets Manager (moto, a VPC endpoint).
    #[arg(long, env = "SKYLET_ECS_ENDPOINT_URL")]
    pub ecs_endpoint_url: Option<String>,
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
    /// CloudWatch Logs group (default /skylet/<cluster>).
    #[arg(long, env = "SKYLET_ECS_LOG_GROUP")]
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
    /// Attempts per AWS call (retries with backoff).
    #[arg(long, env = "SKYLET_ECS_MAX_ATTEMPTS")]
    pub ecs_max_attempts: Option<u32>,
}

/// The `ecs:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EcsFile {
    cluster: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
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
    max_attempts: Option<u32>,
}

fn or_vec(flag: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// Merges flags over the file; `None` unless the backend is selected.
///
/// # Errors
/// A missing cluster or subnet, an invalid ARN or capacity.
pub fn merge(
    args: EcsArgs,
    file: Option<EcsFile>,
    selected: bool,
    node_name: &str,
) -> Result<Option<skylet_ecs::Config>> {
    if !selected {
        return Ok(None);
    }
    let f = file.unwrap_or_default();
    let cluster = args.ecs_cluster.or(f.cluster).ok_or(Error::Invalid {
        field: "ecs-cluster",
        message: "the aws-ecs provider needs the ECS cluster (name or ARN)".into(),
    })?;
    let mut c = skylet_ecs::Config::new(node_name, cluster, or_vec(args.ecs_subnets, f.subnets));
    c.region = args.ecs_region.or(f.region);
    c.endpoint_url = args.ecs_endpoint_url.or(f.endpoint_url);
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
        Some(TokenMode::Mount) => skylet_ecs::config::ServiceAccountToken::Mount,
        _ => skylet_ecs::config::ServiceAccountToken::Omit,
    };
    if let Some(spec) = args.ecs_capacity.or(f.capacity) {
        let cap = super::parse_capacity(&spec).map_err(|e| match e {
            Error::Invalid { message, .. } => Error::Invalid {
                field: "ecs-capacity",
                message,
            },
            other => other,
        })?;
        c.capacity = skylet_ecs::config::Capacity {
            cpu: cap["cpu"].clone(),
            memory: cap["memory"].clone(),
            pods: cap["pods"].clone(),
        };
    }
    if let Some(g) = args.ecs_gc_grace.or(f.gc_grace) {
        c.gc_grace = Duration::from_secs(g);
    }
    if let Some(n) = args.ecs_max_attempts.or(f.max_attempts) {
        c.max_attempts = n;
    }
    c.check().map_err(|message| {
        let field = match message.split_once(':') {
            Some(("ecs-subnets", _)) => "ecs-subnets",
            Some(("ecs-task-role-arn", _)) => "ecs-task-role-arn",
            Some(("ecs-execution-role-arn", _)) => "ecs-execution-role-arn",
            Some(("ecs-max-attempts", _)) => "ecs-max-attempts",
            _ => "ecs",
        };
        Error::Invalid {
            field,
            message: message
                .split_once(": ")
                .map_or(message.clone(), |(_, m)| m.to_owned()),
        }
    })?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Args, Config, ProviderKind};

    fn load(flags: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("skylet").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn ecs_settings_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "provider: aws-ecs\necs:\n  cluster: burst\n  subnets: [subnet-a, subnet-b]\n  zones: [us-east-1a]\n  capacity: cpu=8,memory=32Gi,pods=40\n",
        )
        .unwrap();
        let c = load(&[
            "--config",
            path.to_str().unwrap(),
            "--ecs-region",
            "eu-west-1",
            "--node-name",
            "fargate-1",
        ])
        .unwrap();
        assert_eq!(c.provider, ProviderKind::AwsEcs);
        let e = c.ecs.unwrap();
        assert_eq!(
            (e.cluster.as_str(), e.region.as_deref()),
            ("burst", Some("eu-west-1"))
        );
        assert_eq!(e.subnets, ["subnet-a", "subnet-b"]);
        assert_eq!(e.log_group, "/skylet/burst");
        assert_eq!(e.node_name, "fargate-1");
        assert_eq!(e.capacity.pods, "40");
    }

    #[test]
    fn ecs_errors_name_the_setting() {
        let err = load(&["--provider", "aws-ecs", "--ecs-subnets", "s"]).unwrap_err();
        assert!(err.contains("ecs-cluster"), "{err}");
        let err = load(&["--provider", "aws-ecs", "--ecs-cluster", "c"]).unwrap_err();
        assert!(err.contains("ecs-subnets"), "{err}");
        let err = load(&[
            "--provider",
            "aws-ecs",
            "--ecs-cluster",
            "c",
            "--ecs-subnets",
            "s",
            "--ecs-task-role-arn",
            "x",
        ])
        .unwrap_err();
        assert!(err.contains("ecs-task-role-arn"), "{err}");
        assert!(
            load(&["--ecs-cluster", "c"]).unwrap().ecs.is_none(),
            "ignored unless selected"
        );
    }
}
