//! From a resolved pod to what ECS runs: a task definition shared by every
//! pod of the same template, the pod's own secret values, and the per-pod
//! parts of the RunTask call. Pure functions; no I/O.
//!
//! # One task definition per template
//! The task definition holds only what pods of one template share: images,
//! commands, ports, resources rounded to a Fargate size, template-level
//! environment, volume layout, log configuration, roles. Its family is
//! `skylet-<node hash>-<hash of all that>`, so 100 replicas of a Deployment
//! register it once. What differs per pod travels in RunTask instead:
//! environment variables from `fieldRef` (or with `$(VAR)` expansions) and
//! downward-API files go in `overrides.containerOverrides[].environment`
//! (ECS allows 8 KiB of overrides; past that, they move into the task
//! definition, which then serves that pod alone).
//!
//! # Secrets
//! Values that came from a Secret ([`Value::secret`](skylet_provider::Value::secret)) never appear in a task
//! definition, an override, a tag or a log line. They are gathered into one
//! JSON document ([`SecretPayload`]) stored in Secrets Manager as
//! `skylet/<node>/<template hash>`, and containers reference single keys of
//! it through `secrets[].valueFrom = <secret ARN>:<key>::`, which the ECS
//! agent resolves with the execution role when the task starts. The
//! template hash covers the secret values through an HMAC with a key that
//! lives only in skylet's memory, so names reveal nothing about values, and
//! replicas that see the same Secret values share one secret and one task
//! definition. The sweep deletes both once no task uses them.
//!
//! Image pull Secrets become `repositoryCredentials`: one Secrets Manager
//! secret per pull Secret and registry, next to the template's ([`pull`]).
//!
//! # Files (configMap, secret, downwardAPI, projected volumes)
//! ECS has no such volumes. Each becomes a task volume (Fargate ephemeral
//! storage shared by the task's containers) that a non-essential container,
//! [`names::FILES_CONTAINER`](crate::names::FILES_CONTAINER), fills before
//! anything else starts: it gets each file base64-encoded in an environment
//! variable (plain, per-pod override, or from the secret as above) and runs
//! a generated `sh` script that decodes them into place and sets their
//! modes. Every other container `dependsOn` it with condition `SUCCESS` and
//! mounts the volume read-only.
//!
//! # Containers
//! `command` → `entryPoint`, `args` → `command`; `env`; `ports` →
//! `portMappings` (awsvpc: the container port on the task's address);
//! `workingDir`; `runAsUser`/`runAsGroup` → `user`; `readOnlyRootFilesystem`;
//! `stdin`/`tty`. App containers are essential; with restartPolicy Always or
//! OnFailure they get an ECS container restart policy, and their exec
//! probes become a health check ([`probes`]). Init containers are
//! non-essential `init_<name>` containers run in order, each `dependsOn` the
//! previous one with `SUCCESS` (sidecars, init containers with
//! `restartPolicy: Always`, with `START`), and app containers depend on the
//! last. `stopTimeout` is `terminationGracePeriodSeconds` within 2..=120 s
//! (the Fargate maximum).
//!
//! # Size
//! CPU and memory requests (limits where no request) are summed over app
//! containers, compared with the largest init container, and rounded up to
//! the smallest Fargate size that holds them ([`FARGATE_SIZES`]); a pod
//! larger than 16 vCPU / 120 GiB fails with `ResourcesTooLarge`.
//!
//! # What a pod cannot use here
//! Volumes other than emptyDir/configMap/secret/downwardAPI/projected,
//! `subPath` mounts, `privileged`, host namespaces, SCTP ports, a `hostPort`
//! other than the container port: the pod fails with a reason saying so.
//!
//! # Modules
//! One per step of [`plan`]: `pod` (pod-level checks and settings, tags),
//! `volumes` (task volumes and the files container), `containers`,
//! `sizing` (requests, Fargate sizes), `values` (the secret and the
//! overrides); `sdk` turns a plan into the SDK's types.

mod containers;
mod pod;
pub mod probes;
pub mod pull;
mod sdk;
mod sizing;
#[cfg(test)]
mod tests;
mod values;
mod volumes;

use ring::hmac;
use serde::Serialize;
use skylet_provider::{ProviderError, ResolvedPod};

pub use pull::PullSecret;
pub use sizing::{FARGATE_SIZES, fargate_size};
pub use values::SecretPayload;

use crate::config::ServiceAccountToken;
use containers::{Ctx, check_images, containers};
use pod::{pod_options, tags};
use sizing::cap_memory_limits;
use values::{PodValues, fit_overrides, secret_payload, template_key};
use volumes::volume_layout;

/// What [`plan`] needs besides the pod.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Node name (tags).
    pub node: String,
    /// Family prefix `skylet-<node hash>-`.
    pub family_prefix: String,
    /// CloudWatch Logs group.
    pub log_group: String,
    /// Region for the awslogs driver.
    pub region: String,
    /// Default execution role.
    pub execution_role_arn: Option<String>,
    /// Default task role.
    pub task_role_arn: Option<String>,
    /// Image of the files container.
    pub files_image: String,
    /// What to do with service-account tokens.
    pub service_account_token: ServiceAccountToken,
}

/// Memory reserved for a container without a memory request (MiB); also
/// what the files container and init containers reserve.
pub const DEFAULT_RESERVATION_MIB: u32 = 32;

/// Fargate's largest stop timeout.
pub const MAX_STOP_TIMEOUT: u32 = 120;

/// Everything needed to run one pod.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Template hash: names the family and the secret.
    pub key: String,
    /// Task definition family.
    pub family: String,
    /// The shared task definition.
    pub task: TaskSpec,
    /// Secret values, if the pod has any.
    pub secret: Option<SecretPayload>,
    /// Registry credentials from the pod's pull Secrets ([`pull`]).
    pub pull: Vec<PullSecret>,
    /// Per-pod environment, by ECS container name.
    pub overrides: Vec<(String, Vec<(String, String)>)>,
    /// Run on FARGATE_SPOT.
    pub spot: bool,
    /// Task tags.
    pub tags: Vec<(String, String)>,
}

/// A task definition, as skylet derives it (serialized for its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskSpec {
    /// CPU units (a Fargate size).
    pub cpu: u32,
    /// Memory in MiB (a Fargate size).
    pub memory: u32,
    /// Ephemeral storage beyond the included 20 GiB.
    pub ephemeral_gib: Option<u32>,
    /// Task role.
    pub task_role_arn: Option<String>,
    /// Execution role.
    pub execution_role_arn: Option<String>,
    /// Task volumes (ephemeral storage).
    pub volumes: Vec<String>,
    /// Containers; app containers first.
    pub containers: Vec<ContainerSpec>,
    /// awslogs group, region and stream prefix (the namespace).
    pub log: (String, String, String),
}

/// One container of a [`TaskSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// ECS name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Whether the task stops when it exits.
    pub essential: bool,
    /// `entryPoint` (Kubernetes `command`).
    pub entry_point: Option<Vec<String>>,
    /// `command` (Kubernetes `args`).
    pub command: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    /// Template-level environment (never secret values).
    pub environment: Vec<(String, String)>,
    /// Environment from the pod's secret: variable name and JSON key.
    pub secrets: Vec<(String, String)>,
    /// Container ports and protocol (`tcp`/`udp`).
    pub ports: Vec<(u16, &'static str)>,
    /// Volume, container path, read-only.
    pub mounts: Vec<(String, String, bool)>,
    /// Container and condition (`START`/`SUCCESS`).
    pub depends_on: Vec<(String, &'static str)>,
    /// CPU units.
    pub cpu: Option<u32>,
    /// Hard memory limit (MiB).
    pub memory: Option<u32>,
    /// Soft memory reservation (MiB); not sent when it equals the hard limit.
    pub memory_reservation: u32,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_timeout: u32,
    /// Read-only root filesystem.
    pub readonly_root: bool,
    /// Restart policy: `None` = never; `Some(ignored exit codes)`.
    pub restart: Option<Vec<i32>>,
    /// Keep stdin open.
    pub interactive: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// From the container's exec probes ([`probes`]).
    pub health_check: Option<probes::HealthCheck>,
}

fn invalid(reason: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::invalid(reason, message)
}

/// Derives the plan for `rp`. `secret_key` keys the HMAC of secret values.
///
/// One step after another, each a function of its own: pod-level checks
/// and settings (`pod_options`), volumes and the files container
/// (`volume_layout`), images (`check_images`), containers (`containers`),
/// the Fargate size (`Needs::size`), per-pod environment that fits into
/// RunTask (`fit_overrides`), the secret (`secret_payload`), the template
/// key (`template_key`) and the tags (`tags`). A pod with several problems
/// fails on the first in that order.
///
/// # Errors
/// [`ProviderError::InvalidPod`] for a pod ECS/Fargate cannot run, with a
/// reason and a message that says what to change.
pub fn plan(
    rp: &ResolvedPod,
    settings: &Settings,
    secret_key: &hmac::Key,
) -> Result<Plan, ProviderError> {
    let spec = rp.pod.spec.clone().unwrap_or_default();
    let meta = &rp.pod.metadata;
    let options = pod_options(meta, &spec, settings)?;
    let mut values = PodValues::default();
    let (layout, files) = volume_layout(rp, &spec, settings.service_account_token, &mut values)?;
    check_images(&spec)?;
    let ctx = Ctx {
        rp,
        spec: &spec,
        volumes: &layout,
        stop_timeout: options.stop_timeout,
    };
    let files = files.into_spec(&settings.files_image, options.stop_timeout);
    let (mut containers, needs) = containers(&ctx, files, &mut values)?;
    let size = needs.size()?;
    cap_memory_limits(&mut containers, size.memory);
    let namespace = meta.namespace.clone().unwrap_or_default();
    let mut task = TaskSpec {
        cpu: size.cpu,
        memory: size.memory,
        ephemeral_gib: size.ephemeral_gib,
        task_role_arn: options.task_role_arn,
        execution_role_arn: settings.execution_role_arn.clone(),
        volumes: layout.volumes,
        containers,
        log: (
            settings.log_group.clone(),
            settings.region.clone(),
            namespace,
        ),
    };
    let mut tags = tags(meta, &settings.node);
    let checked: Vec<&str> = task
        .containers
        .iter()
        .filter(|c| c.health_check.is_some())
        .map(|c| c.name.as_str())
        .collect();
    if !checked.is_empty() {
        tags.push((
            crate::names::TAG_HEALTH_CHECKED.to_owned(),
            checked.join(" "),
        ));
    }
    let overrides = fit_overrides(&mut task, values.overrides);
    let secret = secret_payload(values.secret)?;
    let pull = pull::pull_secrets(rp, &task);
    let key = pull::keyed(
        template_key(&task, secret.as_ref(), secret_key),
        &pull,
        secret_key,
    );
    Ok(Plan {
        family: format!("{}{key}", settings.family_prefix),
        key,
        task,
        secret,
        pull,
        overrides,
        spot: options.spot,
        tags,
    })
}
