//! Settings of the ECS backend, as [`crate::Ecs`]'s `configure` merges them
//! from the flags `--ecs-*` (environment `SKYLET_ECS_*`) over the `ecs:`
//! section of the YAML file; [`Config::check`] validates them.

use std::time::Duration;

/// What to do with the projected service-account token of a pod (the
/// `kube-api-access-*` volume every pod gets unless
/// `automountServiceAccountToken: false`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceAccountToken {
    /// Leave the token file out (the volume's `ca.crt` and `namespace` are
    /// still delivered). A Fargate task usually cannot reach the cluster's
    /// API server anyway, and a token differs per pod, so delivering it costs
    /// one task definition and one secret per pod instead of per template.
    #[default]
    Omit,
    /// Deliver it like any Secret-derived file (through Secrets Manager).
    Mount,
}

/// The node's capacity as published to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// vCPUs, a Kubernetes quantity (`"64"`): the account's Fargate vCPU quota
    /// share this node may use.
    pub cpu: String,
    /// Memory, a Kubernetes quantity (`"256Gi"`).
    pub memory: String,
    /// Pods (tasks) at most.
    pub pods: String,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            cpu: "64".into(),
            memory: "256Gi".into(),
            pods: "500".into(),
        }
    }
}

/// Settings of the ECS backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The node's name: `startedBy` of every task, tags, names.
    pub node_name: String,
    /// ECS cluster name or ARN.
    pub cluster: String,
    /// AWS region (`us-east-1`); `None`: from the environment/profile.
    pub region: Option<String>,
    /// Endpoint override for every service (moto, LocalStack, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Endpoint override for CloudWatch alone (`kubectl top`); `None`:
    /// `endpoint_url`'s, else the region's.
    pub cloudwatch_endpoint_url: Option<String>,
    /// Availability zones of the subnets, for the node's zone label (one zone:
    /// `topology.kubernetes.io/zone`; several: no zone label).
    pub zones: Vec<String>,
    /// Subnets of the tasks' network interfaces (awsvpc); at least one.
    pub subnets: Vec<String>,
    /// Security groups of the tasks' network interfaces.
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed in public subnets without NAT to pull
    /// images from public registries).
    pub assign_public_ip: bool,
    /// Role the ECS agent uses to pull images, write logs and read secrets.
    /// Required by real ECS for awslogs and secrets; moto does not check it.
    pub execution_role_arn: Option<String>,
    /// Role the pods' code runs as, unless the pod names its own with the
    /// `skylet.io/aws-task-role-arn` annotation.
    pub task_role_arn: Option<String>,
    /// CloudWatch Logs group of the containers' output; default
    /// `/skylet/<cluster>`.
    pub log_group: String,
    /// Fargate platform version (`LATEST` when unset).
    pub platform_version: Option<String>,
    /// Image of the container that writes configMap/secret/downward-API
    /// files into the pod's volumes; it needs `sh`, `base64 -d`, `mkdir`,
    /// `chmod` (busybox has them).
    pub files_image: String,
    /// What to do with service-account tokens.
    pub service_account_token: ServiceAccountToken,
    /// The node's capacity.
    pub capacity: Capacity,
    /// How long an unused task definition or secret is kept before the sweep
    /// removes it (covers creates in flight and ListTasks lag).
    pub gc_grace: Duration,
    /// Changes to the published ECS and Fargate API rate limits kept on
    /// skylet's side (`crate::limits`); empty: the published figures.
    pub rate_limits: Vec<skylet_provider::ratelimit::Override>,
    /// Attempts per AWS call (the SDK's standard retry mode, with backoff;
    /// throttling and 5xx are retried).
    pub max_attempts: u32,
    /// Cloud Map namespace (`ns-...`) to register pods in, one service per
    /// Kubernetes Service (`crate::cloudmap`); `None`: no registration.
    pub cloud_map_namespace_id: Option<String>,
    /// Start tasks with ECS Exec (`enableExecuteCommand`) unless the pod's
    /// `skylet.io/ecs-exec` annotation says otherwise (`crate::exec`).
    pub exec_enabled: bool,
}

impl Config {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        node_name: impl Into<String>,
        cluster: impl Into<String>,
        subnets: Vec<String>,
    ) -> Self {
        let cluster = cluster.into();
        Self {
            node_name: node_name.into(),
            log_group: default_log_group(&cluster),
            cluster,
            region: None,
            endpoint_url: None,
            cloudwatch_endpoint_url: None,
            zones: Vec::new(),
            subnets,
            security_groups: Vec::new(),
            assign_public_ip: false,
            execution_role_arn: None,
            task_role_arn: None,
            platform_version: None,
            files_image: DEFAULT_FILES_IMAGE.into(),
            service_account_token: ServiceAccountToken::default(),
            capacity: Capacity::default(),
            gc_grace: Duration::from_secs(30),
            rate_limits: Vec::new(),
            max_attempts: 4,
            cloud_map_namespace_id: None,
            exec_enabled: false,
        }
    }

    /// Checks what the core cannot know; the message names the setting.
    ///
    /// # Errors
    /// A message for the user (the core exits 64 with it).
    pub fn check(&self) -> Result<(), String> {
        if self.cluster.is_empty() {
            return Err("ecs-cluster: must be set".into());
        }
        if self.subnets.is_empty() {
            return Err(
                "ecs-subnets: at least one subnet is needed for the tasks' network interfaces"
                    .into(),
            );
        }
        if self.max_attempts == 0 {
            return Err("ecs-max-attempts: must be at least 1".into());
        }
        self.buckets().map_err(|e| format!("ecs-rate-limit: {e}"))?;
        if self.log_group.is_empty() {
            return Err("ecs-log-group: must not be empty".into());
        }
        for (field, arn) in [
            ("ecs-execution-role-arn", &self.execution_role_arn),
            ("ecs-task-role-arn", &self.task_role_arn),
        ] {
            if let Some(a) = arn
                && !a.starts_with("arn:")
            {
                return Err(format!(
                    "{field}: {a:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The API rate limits in force: the published buckets with
    /// [`Config::rate_limits`] applied.
    ///
    /// # Errors
    /// A change naming no published bucket.
    pub fn buckets(&self) -> Result<skylet_provider::ratelimit::Buckets, String> {
        skylet_provider::ratelimit::Buckets::new(crate::limits::PUBLISHED, &self.rate_limits)
    }
}

/// The log group used when none is configured.
pub fn default_log_group(cluster: &str) -> String {
    // a cluster ARN ends in cluster/NAME
    let name = cluster.rsplit('/').next().unwrap_or(cluster);
    format!("/skylet/{name}")
}

/// Default image of the files container.
pub const DEFAULT_FILES_IMAGE: &str = "public.ecr.aws/docker/library/busybox:1.37";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c = Config::new(
            "n",
            "arn:aws:ecs:us-east-1:1:cluster/burst",
            vec!["subnet-1".into()],
        );
        assert_eq!(c.log_group, "/skylet/burst");
        assert!(c.check().is_ok());
        let mut bad = c.clone();
        bad.subnets.clear();
        assert!(bad.check().unwrap_err().contains("ecs-subnets"));
        let mut bad = c;
        bad.task_role_arn = Some("role/x".into());
        assert!(bad.check().unwrap_err().contains("ecs-task-role-arn"));
    }
}
