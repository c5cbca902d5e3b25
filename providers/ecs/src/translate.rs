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
//! # Files (configMap, secret, downwardAPI, projected volumes)
//! ECS has no such volumes. Each becomes a task volume (Fargate ephemeral
//! storage shared by the task's containers) that a non-essential container,
//! [`names::FILES_CONTAINER`], fills before anything else starts: it gets
//! each file base64-encoded in an environment variable (plain, per-pod
//! override, or from the secret as above) and runs a generated `sh` script
//! that decodes them into place and sets their modes. Every other container
//! `dependsOn` it with condition `SUCCESS` and mounts the volume read-only.
//!
//! # Containers
//! `command` → `entryPoint`, `args` → `command`; `env`; `ports` →
//! `portMappings` (awsvpc: the container port on the task's address);
//! `workingDir`; `runAsUser`/`runAsGroup` → `user`; `readOnlyRootFilesystem`;
//! `stdin`/`tty`. App containers are essential; with restartPolicy Always or
//! OnFailure they get an ECS container restart policy. Init containers are
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

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride,
    ContainerRestartPolicy, EphemeralStorage, KeyValuePair, LogConfiguration, LogDriver,
    MountPoint, PortMapping, Secret, TransportProtocol, Volume,
};
use base64::Engine;
use k8s_openapi::{
    api::core::v1::{Container, PodSpec, Volume as KubeVolume},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use ring::hmac;
use serde::Serialize;
use skylet_provider::{
    ProviderError, ResolvedPod, Value, VolumeFile,
    checks::{self, unsupported},
    quantity::Quantity,
};

use crate::{
    config::ServiceAccountToken,
    names::{self, ANNOTATION_CAPACITY, ANNOTATION_TASK_ROLE, FILES_CONTAINER},
};

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

/// Fargate task sizes: CPU units and the memory sizes (MiB) each allows.
pub const FARGATE_SIZES: &[(u32, &[u32])] = &[
    (256, &[512, 1024, 2048]),
    (512, &[1024, 2048, 3072, 4096]),
    (1024, &[2048, 3072, 4096, 5120, 6144, 7168, 8192]),
    (2048, &mem_range::<13>(4096, 1024)),
    (4096, &mem_range::<23>(8192, 1024)),
    (8192, &mem_range::<12>(16384, 4096)),
    (16384, &mem_range::<12>(32768, 8192)),
];

const fn mem_range<const N: usize>(start: u32, step: u32) -> [u32; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = start + step * i as u32;
        i += 1;
    }
    out
}

/// Memory reserved for a container without a memory request (MiB); also
/// what the files container and init containers reserve.
pub const DEFAULT_RESERVATION_MIB: u32 = 32;

/// Fargate's largest stop timeout.
pub const MAX_STOP_TIMEOUT: u32 = 120;

/// Overrides ECS accepts per RunTask (characters of JSON); skylet keeps a margin.
const OVERRIDES_LIMIT: usize = 8192 - 512;

/// Largest secret Secrets Manager stores.
const SECRET_LIMIT: usize = 65_536;

/// Fargate's included ephemeral storage (GiB) and its maximum.
const EPHEMERAL_DEFAULT_GIB: u64 = 20;
const EPHEMERAL_MAX_GIB: u64 = 200;

/// The mount point of volume `name` inside the files container.
fn files_dir(volume: &str) -> String {
    format!("/skylet/volumes/{volume}")
}

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
}

/// Secret values of one template: JSON key to value. Its `Debug` shows keys
/// only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretPayload(BTreeMap<String, String>);

impl std::fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretPayload")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretPayload {
    /// The JSON document stored in Secrets Manager.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// Keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
    let overrides = fit_overrides(&mut task, values.overrides);
    let secret = secret_payload(values.secret)?;
    let key = template_key(&task, secret.as_ref(), secret_key);
    Ok(Plan {
        family: format!("{}{key}", settings.family_prefix),
        key,
        task,
        secret,
        overrides,
        spot: options.spot,
        tags: tags(meta, &settings.node),
    })
}

// ---- pod-level checks and settings ----

/// What the pod as a whole asks of its task.
#[derive(Debug, PartialEq, Eq)]
struct PodOptions {
    /// The task role: the pod's annotation, else the default.
    task_role_arn: Option<String>,
    /// Run on FARGATE_SPOT.
    spot: bool,
    /// Every container's stop timeout.
    stop_timeout: u32,
}

/// Pod-level checks and settings, before any container: no host
/// namespaces, the task role and capacity annotations, the stop timeout.
fn pod_options(
    meta: &ObjectMeta,
    spec: &PodSpec,
    settings: &Settings,
) -> Result<PodOptions, ProviderError> {
    checks::refuse_host_namespaces(spec, "Fargate tasks")?;
    let annotation = |name: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(name))
            .map(String::as_str)
    };
    Ok(PodOptions {
        task_role_arn: task_role(annotation(ANNOTATION_TASK_ROLE), settings)?,
        spot: spot(annotation(ANNOTATION_CAPACITY))?,
        stop_timeout: stop_timeout(spec),
    })
}

/// The task role: the annotation when it is an ARN, the default without one.
fn task_role(
    annotation: Option<&str>,
    settings: &Settings,
) -> Result<Option<String>, ProviderError> {
    match annotation {
        Some(a) if a.starts_with("arn:") => Ok(Some(a.to_owned())),
        Some(a) => Err(invalid(
            "InvalidTaskRole",
            format!(
                "annotation {ANNOTATION_TASK_ROLE}={a:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ),
        )),
        None => Ok(settings.task_role_arn.clone()),
    }
}

/// Whether the capacity annotation asks for FARGATE_SPOT.
fn spot(annotation: Option<&str>) -> Result<bool, ProviderError> {
    match annotation {
        None | Some("on-demand") => Ok(false),
        Some("spot") => Ok(true),
        Some(other) => Err(invalid(
            "InvalidCapacity",
            format!(
                "annotation {ANNOTATION_CAPACITY}={other:?}: use \"spot\" (FARGATE_SPOT) or \"on-demand\" (FARGATE)"
            ),
        )),
    }
}

/// `terminationGracePeriodSeconds` (30 by default) within
/// 2..=[`MAX_STOP_TIMEOUT`].
fn stop_timeout(spec: &PodSpec) -> u32 {
    // at least 2 s: ECS documents no minimum, and a kill without any
    // SIGTERM window gains nothing on Fargate
    u32::try_from(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(2, i64::from(MAX_STOP_TIMEOUT)),
    )
    .unwrap_or(MAX_STOP_TIMEOUT)
}

/// The task's tags: the pod's UID, namespace and name, and the node.
fn tags(meta: &ObjectMeta, node: &str) -> Vec<(String, String)> {
    vec![
        (
            names::TAG_POD_UID.to_owned(),
            meta.uid.clone().unwrap_or_default(),
        ),
        (
            names::TAG_POD_NAMESPACE.to_owned(),
            meta.namespace.clone().unwrap_or_default(),
        ),
        (
            names::TAG_POD_NAME.to_owned(),
            meta.name.clone().unwrap_or_default(),
        ),
        (names::TAG_NODE.to_owned(), node.to_owned()),
    ]
}

// ---- per-pod values: the secret and the overrides ----

/// What differs between pods of one template, gathered while containers
/// and volumes are translated.
#[derive(Debug, Default)]
struct PodValues {
    /// Secret values by JSON key (the [`SecretPayload`]).
    secret: BTreeMap<String, String>,
    /// Per-pod environment by ECS container name (RunTask overrides).
    overrides: BTreeMap<String, Vec<(String, String)>>,
}

impl PodValues {
    /// Stores a secret value under `key`.
    fn secret(&mut self, key: String, value: String) {
        self.secret.insert(key, value);
    }

    /// Adds variable `name` to the overrides of `container`.
    fn per_pod(&mut self, container: &str, name: String, value: String) {
        self.overrides
            .entry(container.to_owned())
            .or_default()
            .push((name, value));
    }
}

/// The overrides RunTask gets. Per-pod environment that does not fit into
/// them ([`OVERRIDES_LIMIT`]) goes into the task definition instead, which
/// then serves this pod alone.
fn fit_overrides(
    task: &mut TaskSpec,
    overrides: BTreeMap<String, Vec<(String, String)>>,
) -> Vec<(String, Vec<(String, String)>)> {
    if overrides_size(&overrides) <= OVERRIDES_LIMIT {
        return overrides.into_iter().collect();
    }
    for (name, env) in overrides {
        if let Some(c) = task.containers.iter_mut().find(|c| c.name == name) {
            c.environment.extend(env);
        }
    }
    Vec::new()
}

/// About the size of the overrides' JSON.
fn overrides_size(overrides: &BTreeMap<String, Vec<(String, String)>>) -> usize {
    overrides
        .iter()
        .map(|(c, env)| {
            c.len()
                + 40
                + env
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 30)
                    .sum::<usize>()
        })
        .sum()
}

/// The pod's secret values as one document, `None` without any.
///
/// # Errors
/// `SecretTooLarge` past what Secrets Manager stores ([`SECRET_LIMIT`]).
fn secret_payload(
    secret: BTreeMap<String, String>,
) -> Result<Option<SecretPayload>, ProviderError> {
    let payload = SecretPayload(secret);
    if payload.to_json().len() > SECRET_LIMIT {
        return Err(invalid(
            "SecretTooLarge",
            format!(
                "the pod's Secret-derived environment and files add up to more than {SECRET_LIMIT} bytes, the Secrets Manager limit"
            ),
        ));
    }
    Ok((!payload.is_empty()).then_some(payload))
}

/// The template hash: of the task definition and, through an HMAC keyed
/// by `secret_key`, of the secret values.
fn template_key(task: &TaskSpec, secret: Option<&SecretPayload>, secret_key: &hmac::Key) -> String {
    let mut hashed = serde_json::to_vec(task).unwrap_or_default();
    if let Some(payload) = secret {
        let tag = hmac::sign(secret_key, payload.to_json().as_bytes());
        hashed.extend_from_slice(b"|secret:");
        hashed.extend_from_slice(tag.as_ref());
    }
    names::short_hash(&hashed)
}

// ---- volumes and the files container ----

/// How the pod's volumes map to task volumes.
#[derive(Debug, Default)]
struct VolumeLayout {
    /// Task volumes, named by position (`v0`, `v1`, ...): Kubernetes names
    /// can differ between replicas (`kube-api-access-<random>`).
    volumes: Vec<String>,
    /// Task volume by Kubernetes volume name.
    names: BTreeMap<String, String>,
    /// Task volumes the files container fills (mounted read-only).
    files: BTreeSet<String>,
}

/// The task volume of the pod's volume at `index`.
fn task_volume(index: usize) -> String {
    format!("v{index}")
}

/// The task volumes of the pod, and the files container that fills those
/// holding files (configMap, secret, downwardAPI, projected).
///
/// # Errors
/// `UnsupportedVolume` for any other kind than these and emptyDir.
fn volume_layout(
    rp: &ResolvedPod,
    spec: &PodSpec,
    token: ServiceAccountToken,
    values: &mut PodValues,
) -> Result<(VolumeLayout, FilesContainer), ProviderError> {
    let mut layout = VolumeLayout::default();
    let mut files = FilesContainer::default();
    for (vi, v) in spec.volumes.iter().flatten().enumerate() {
        let ecs_volume = task_volume(vi);
        layout.names.insert(v.name.clone(), ecs_volume.clone());
        match volume_kind(v) {
            VolumeKind::EmptyDir => {}
            VolumeKind::Files { per_pod, tokens } => {
                layout.files.insert(ecs_volume.clone());
                files.volumes.push(ecs_volume.clone());
                // numbered before tokens are left out: names stay put
                for (fi, f) in rp.volumes.get(&v.name).into_iter().flatten().enumerate() {
                    if tokens.contains(&f.path) && token == ServiceAccountToken::Omit {
                        continue;
                    }
                    files.add_file((vi, fi), f, is_under(&f.path, &per_pod), values);
                }
            }
            VolumeKind::Other(kind) => {
                return Err(invalid(
                    "UnsupportedVolume",
                    format!(
                        "volume {:?} is a {kind} volume, which ECS/Fargate cannot mount; skylet supports emptyDir, configMap, secret, downwardAPI and projected volumes",
                        v.name
                    ),
                ));
            }
        }
        layout.volumes.push(ecs_volume);
    }
    Ok((layout, files))
}

/// Whether `path` is one of `paths` or inside one of them.
fn is_under(path: &str, paths: &[String]) -> bool {
    paths
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

enum VolumeKind {
    EmptyDir,
    /// Files: paths (files or directories) that differ per pod
    /// (downward API), and service-account token paths.
    Files {
        per_pod: Vec<String>,
        tokens: Vec<String>,
    },
    Other(String),
}

fn volume_kind(v: &KubeVolume) -> VolumeKind {
    if v.empty_dir.is_some() {
        return VolumeKind::EmptyDir;
    }
    if v.config_map.is_some() || v.secret.is_some() {
        return VolumeKind::Files {
            per_pod: Vec::new(),
            tokens: Vec::new(),
        };
    }
    if let Some(d) = &v.downward_api {
        return VolumeKind::Files {
            per_pod: d.items.iter().flatten().map(|i| i.path.clone()).collect(),
            tokens: Vec::new(),
        };
    }
    if let Some(p) = &v.projected {
        let mut per_pod = Vec::new();
        let mut tokens = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(d) = &s.downward_api {
                per_pod.extend(d.items.iter().flatten().map(|i| i.path.clone()));
            }
            if let Some(t) = &s.service_account_token {
                tokens.push(t.path.clone());
            }
        }
        return VolumeKind::Files { per_pod, tokens };
    }
    // the name of whichever source field is set
    let kind = serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into());
    VolumeKind::Other(kind)
}

/// Single-quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `sh` line that writes `path` under `dir` from base64 variable `var`.
fn file_command(dir: &str, path: &str, mode: u32, var: &str) -> String {
    let target = format!("{dir}/{path}");
    let parent = target
        .rsplit_once('/')
        .map_or(dir.to_owned(), |(p, _)| p.to_owned());
    format!(
        "mkdir -p {p}; printf '%s' \"${var}\" | base64 -d > {t}; chmod {mode:o} {t}",
        p = sh_quote(&parent),
        t = sh_quote(&target),
    )
}

/// The files container under construction.
#[derive(Debug, Default)]
struct FilesContainer {
    /// Task volumes it fills.
    volumes: Vec<String>,
    /// Files' contents that every pod of the template shares.
    environment: Vec<(String, String)>,
    /// Secret files: variable and JSON key of the pod's secret.
    secrets: Vec<(String, String)>,
    /// One `sh` line per file.
    script: Vec<String>,
}

impl FilesContainer {
    /// Adds file `fi` of the pod's volume `vi`: its content, base64-encoded,
    /// goes in variable `SKYLET_F<vi>_<fi>` from the pod's secret (a secret
    /// value), an override (`per_pod`) or the task definition, and a script
    /// line writes it into place.
    fn add_file(
        &mut self,
        (vi, fi): (usize, usize),
        f: &VolumeFile,
        per_pod: bool,
        values: &mut PodValues,
    ) {
        let var = format!("SKYLET_F{vi}_{fi}");
        let content = base64::engine::general_purpose::STANDARD.encode(&f.value.data);
        if f.value.secret {
            let key = format!("f{vi}.{fi}");
            values.secret(key.clone(), content);
            self.secrets.push((var.clone(), key));
        } else if per_pod {
            values.per_pod(FILES_CONTAINER, var.clone(), content);
        } else {
            self.environment.push((var.clone(), content));
        }
        self.script.push(file_command(
            &files_dir(&task_volume(vi)),
            &f.path,
            f.mode,
            &var,
        ));
    }

    /// The container, `None` when no volume holds files.
    fn into_spec(self, image: &str, stop_timeout: u32) -> Option<ContainerSpec> {
        if self.volumes.is_empty() {
            return None;
        }
        let mut script = vec!["set -e".to_owned()];
        script.extend(
            self.volumes
                .iter()
                .map(|v| format!("mkdir -p {}", sh_quote(&files_dir(v)))),
        );
        script.extend(self.script);
        Some(ContainerSpec {
            name: FILES_CONTAINER.into(),
            image: image.into(),
            essential: false,
            entry_point: Some(vec!["sh".into(), "-c".into()]),
            command: Some(vec![script.join("\n")]),
            working_dir: None,
            user: None,
            environment: self.environment,
            secrets: self.secrets,
            ports: Vec::new(),
            mounts: self
                .volumes
                .iter()
                .map(|v| (v.clone(), files_dir(v), false))
                .collect(),
            depends_on: Vec::new(),
            cpu: None,
            memory: None,
            memory_reservation: DEFAULT_RESERVATION_MIB,
            stop_timeout,
            readonly_root: false,
            restart: None,
            interactive: false,
            tty: false,
        })
    }
}

// ---- containers ----

/// What translating a container reads besides the container.
struct Ctx<'a> {
    rp: &'a ResolvedPod,
    spec: &'a PodSpec,
    volumes: &'a VolumeLayout,
    stop_timeout: u32,
}

/// Every container has an image.
///
/// # Errors
/// `InvalidImageName` naming the first container without one.
fn check_images(spec: &PodSpec) -> Result<(), ProviderError> {
    let init = spec.init_containers.iter().flatten();
    match spec
        .containers
        .iter()
        .chain(init)
        .find(|c| c.image.as_deref().is_none_or(str::is_empty))
    {
        Some(c) => Err(invalid(
            "InvalidImageName",
            format!("container {:?} has no image", c.name),
        )),
        None => Ok(()),
    }
}

/// The task's containers, app containers first, then the files container
/// (`files`), then init containers; and what they need of the task.
/// Containers start in a chain: the files container, each init container
/// in turn, then the app containers.
fn containers(
    ctx: &Ctx<'_>,
    files: Option<ContainerSpec>,
    values: &mut PodValues,
) -> Result<(Vec<ContainerSpec>, Needs), ProviderError> {
    let mut needs = Needs::default();
    let mut after = files.as_ref().map(|f| (f.name.clone(), "SUCCESS"));
    let mut init = Vec::new();
    for c in ctx.spec.init_containers.iter().flatten() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let (cs, res) = init_container(ctx, c, sidecar, after.take(), values)?;
        if sidecar {
            needs.running(&res, cs.memory_reservation);
        } else {
            needs.init(&res, cs.memory_reservation);
        }
        after = Some((cs.name.clone(), if sidecar { "START" } else { "SUCCESS" }));
        init.push(cs);
    }
    let mut out = Vec::new();
    for c in &ctx.spec.containers {
        let (cs, res) = app_container(ctx, c, after.clone(), values)?;
        needs.running(&res, cs.memory_reservation);
        out.push(cs);
    }
    if let Some(f) = files {
        needs.reserve(f.memory_reservation);
        out.push(f);
    }
    out.extend(init);
    Ok((out, needs))
}

/// An init container: `init_<name>`, not essential, started `after` the
/// previous one. A sidecar (`restartPolicy: Always`) restarts and has its
/// CPU and memory reserved; the others run alone and reserve the minimum.
fn init_container(
    ctx: &Ctx<'_>,
    c: &Container,
    sidecar: bool,
    after: Option<(String, &'static str)>,
    values: &mut PodValues,
) -> Result<(ContainerSpec, Resources), ProviderError> {
    let res = Resources::of(c)?;
    let mut cs = container_spec(ctx, c, &names::ecs_container(&c.name, true), values)?;
    cs.essential = false;
    cs.depends_on = after.into_iter().collect();
    cs.memory_reservation = DEFAULT_RESERVATION_MIB;
    cs.memory = res.memory_limit_mib.map(|m| m.max(DEFAULT_RESERVATION_MIB));
    if sidecar {
        cs.restart = Some(Vec::new());
        cs.cpu = res.cpu_units();
        cs.memory_reservation = res.memory_request_mib().max(DEFAULT_RESERVATION_MIB);
    }
    Ok((cs, res))
}

/// An app container: essential, started `after` the last init container,
/// with the pod's restart policy and its own CPU and memory.
fn app_container(
    ctx: &Ctx<'_>,
    c: &Container,
    after: Option<(String, &'static str)>,
    values: &mut PodValues,
) -> Result<(ContainerSpec, Resources), ProviderError> {
    let res = Resources::of(c)?;
    let mut cs = container_spec(ctx, c, &c.name, values)?;
    cs.essential = true;
    cs.depends_on = after.into_iter().collect();
    cs.cpu = res.cpu_units();
    cs.memory_reservation = res.memory_request_mib().max(DEFAULT_RESERVATION_MIB);
    cs.memory = res.memory_limit_mib.map(|m| m.max(cs.memory_reservation));
    cs.restart = restart_policy(ctx.spec);
    Ok((cs, res))
}

/// The ECS restart policy of app containers: `None` (never) or the exit
/// codes that do not restart.
fn restart_policy(spec: &PodSpec) -> Option<Vec<i32>> {
    match spec.restart_policy.as_deref() {
        None | Some("Always") => Some(Vec::new()),
        Some("OnFailure") => Some(vec![0]),
        _ => None,
    }
}

/// What every container shares: image, command, user, environment, ports,
/// mounts; essential, without resources, restart or dependencies (the
/// caller sets those).
///
/// # Errors
/// `UnsupportedPodSpec` for a privileged container, a port or a mount
/// Fargate cannot have.
fn container_spec(
    ctx: &Ctx<'_>,
    c: &Container,
    ecs_name: &str,
    values: &mut PodValues,
) -> Result<ContainerSpec, ProviderError> {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Err(unsupported(format!(
            "container {:?} is privileged; Fargate does not run privileged containers",
            c.name
        )));
    }
    let env = environment(ctx.rp, c, ecs_name, values);
    Ok(ContainerSpec {
        name: ecs_name.to_owned(),
        image: c.image.clone().unwrap_or_default(),
        essential: true,
        entry_point: c.command.clone().filter(|v| !v.is_empty()),
        command: c.args.clone().filter(|v| !v.is_empty()),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: user(c, ctx.spec),
        environment: env.environment,
        secrets: env.secrets,
        ports: ports(c)?,
        mounts: mounts(c, ctx.volumes)?,
        depends_on: Vec::new(),
        cpu: None,
        memory: None,
        memory_reservation: DEFAULT_RESERVATION_MIB,
        stop_timeout: ctx.stop_timeout,
        readonly_root: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        restart: None,
        interactive: c.stdin.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
    })
}

/// `uid[:gid]` from `runAsUser`/`runAsGroup`, the container's over the pod's.
fn user(c: &Container, spec: &PodSpec) -> Option<String> {
    let sc = c.security_context.as_ref();
    let pod_sc = spec.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    }
}

/// What of a container's environment its definition holds.
#[derive(Debug, Default)]
struct ContainerEnv {
    /// Values every pod of the template shares.
    environment: Vec<(String, String)>,
    /// Secret values: variable and JSON key of the pod's secret.
    secrets: Vec<(String, String)>,
}

/// The container's environment, three ways: secret values go into the
/// pod's secret (the definition references their keys), per-pod values
/// into `values`' overrides, the rest stays in the task definition.
fn environment(
    rp: &ResolvedPod,
    c: &Container,
    ecs_name: &str,
    values: &mut PodValues,
) -> ContainerEnv {
    let per_pod = per_pod_vars(c);
    let mut out = ContainerEnv::default();
    let env = rp.env.get(&c.name).map_or(&[][..], Vec::as_slice);
    for (j, (name, value)) in last_wins(env).into_iter().enumerate() {
        if value.secret {
            let key = format!("e.{ecs_name}.{j}");
            values.secret(key.clone(), value.as_str().into_owned());
            out.secrets.push((name, key));
        } else if per_pod.contains(&name) {
            values.per_pod(ecs_name, name, value.as_str().into_owned());
        } else {
            out.environment.push((name, value.as_str().into_owned()));
        }
    }
    out
}

/// One value per variable: later entries win, the first position stays.
fn last_wins(env: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in env {
        match out.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// Names of the variables of `c` whose values differ between pods of one
/// template: `fieldRef`s, and values with `$(VAR)` expansions (which may
/// expand one).
fn per_pod_vars(c: &Container) -> BTreeSet<String> {
    c.env
        .iter()
        .flatten()
        .filter(|e| {
            e.value_from.as_ref().is_some_and(|f| f.field_ref.is_some())
                || e.value.as_deref().is_some_and(|v| v.contains("$("))
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Port mappings: container port and `tcp`/`udp`.
///
/// # Errors
/// `UnsupportedPodSpec` for SCTP, a `hostPort` other than the container
/// port, or a port out of range.
fn ports(c: &Container) -> Result<Vec<(u16, &'static str)>, ProviderError> {
    let mut ports = Vec::new();
    for p in c.ports.iter().flatten() {
        let proto = match p.protocol.as_deref() {
            None | Some("TCP") => "tcp",
            Some("UDP") => "udp",
            Some(other) => {
                return Err(unsupported(format!(
                    "container {:?} port {}: protocol {other} is not supported by ECS (TCP and UDP are)",
                    c.name, p.container_port
                )));
            }
        };
        if p.host_port.is_some_and(|h| h != p.container_port) {
            return Err(unsupported(format!(
                "container {:?}: hostPort {} differs from containerPort {}; on Fargate (awsvpc) a port is exposed on the task's own address as is",
                c.name,
                p.host_port.unwrap_or_default(),
                p.container_port
            )));
        }
        let port = u16::try_from(p.container_port).map_err(|_| {
            unsupported(format!(
                "container {:?}: port {} is out of range",
                c.name, p.container_port
            ))
        })?;
        ports.push((port, proto));
    }
    Ok(ports)
}

/// Mount points: task volume, path, read-only (always for file volumes).
///
/// # Errors
/// `UnsupportedPodSpec` for a `subPath` mount.
fn mounts(
    c: &Container,
    layout: &VolumeLayout,
) -> Result<Vec<(String, String, bool)>, ProviderError> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(format!(
                "container {:?} mounts a subPath of volume {:?} at {}; ECS mounts whole volumes only: mount the volume as a directory",
                c.name, m.name, m.mount_path
            )));
        }
        let volume = layout
            .names
            .get(&m.name)
            .cloned()
            .unwrap_or_else(|| m.name.clone());
        let read_only = m.read_only.unwrap_or(false) || layout.files.contains(&volume);
        mounts.push((volume, m.mount_path.clone(), read_only));
    }
    Ok(mounts)
}

/// Requests of one container (limits where no request).
struct Resources {
    cpu_millis: u64,
    memory_bytes: u64,
    memory_limit_mib: Option<u32>,
    ephemeral_bytes: u64,
}

impl Resources {
    fn of(c: &Container) -> Result<Self, ProviderError> {
        let r = c.resources.as_ref();
        let get = |name: &str| {
            r.and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(name))
                .or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(name)))
        };
        let bad = |name: &str, q: &str| {
            invalid(
                "InvalidResources",
                format!("container {:?}: {name} {q:?} is not a quantity", c.name),
            )
        };
        // ceil(quantity * scale), saturating at u64::MAX
        let scaled = |name: &str,
                      q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                      scale: u128| {
            Quantity::parse(q.0.trim())
                .and_then(|v| v.scaled_ceil(scale))
                .map(|v| u64::try_from(v).unwrap_or(u64::MAX))
                .ok_or_else(|| bad(name, &q.0))
        };
        let cpu_millis = get("cpu")
            .map(|q| scaled("cpu", q, 1000))
            .transpose()?
            .unwrap_or(0);
        let memory_bytes = get("memory")
            .map(|q| scaled("memory", q, 1))
            .transpose()?
            .unwrap_or(0);
        let ephemeral_bytes = get("ephemeral-storage")
            .map(|q| scaled("ephemeral-storage", q, 1))
            .transpose()?
            .unwrap_or(0);
        let memory_limit_mib = r
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get("memory"))
            .map(|q| {
                scaled("memory limit", q, 1)
                    .map(|b| u32::try_from(b.div_ceil(1 << 20)).unwrap_or(u32::MAX))
            })
            .transpose()?;
        Ok(Self {
            cpu_millis,
            memory_bytes,
            memory_limit_mib,
            ephemeral_bytes,
        })
    }

    /// ECS CPU units (1024 per vCPU), `None` without a request.
    fn cpu_units(&self) -> Option<u32> {
        (self.cpu_millis > 0)
            .then(|| u32::try_from((self.cpu_millis * 1024).div_ceil(1000)).unwrap_or(u32::MAX))
    }

    fn memory_mib(&self) -> u64 {
        self.memory_bytes.div_ceil(1 << 20)
    }

    fn memory_request_mib(&self) -> u32 {
        u32::try_from(self.memory_mib()).unwrap_or(u32::MAX)
    }
}

/// What the containers need of the task, gathered while they are
/// translated.
#[derive(Debug, Default, PartialEq, Eq)]
struct Needs {
    /// CPU units of the containers that run side by side (app containers
    /// and sidecars), summed.
    cpu: u64,
    /// Their memory requests (MiB), summed.
    memory_mib: u64,
    /// Their ephemeral storage (bytes), summed.
    ephemeral: u64,
    /// CPU units of the largest init container (they run one at a time).
    init_cpu: u64,
    /// Memory (MiB) of the largest init container.
    init_memory_mib: u64,
    /// Ephemeral storage (bytes) of the largest init container.
    init_ephemeral: u64,
    /// Memory reservations (MiB) of every container, which ECS wants to fit
    /// into the task.
    reservations_mib: u64,
}

/// A task size.
#[derive(Debug, PartialEq, Eq)]
struct TaskSize {
    /// CPU units.
    cpu: u32,
    /// Memory (MiB).
    memory: u32,
    /// Ephemeral storage (GiB) when more than the included 20 GiB.
    ephemeral_gib: Option<u32>,
}

impl Needs {
    /// Counts a container that runs beside the others.
    fn running(&mut self, r: &Resources, reservation_mib: u32) {
        self.cpu += u64::from(r.cpu_units().unwrap_or(0));
        self.memory_mib += r.memory_mib();
        self.ephemeral += r.ephemeral_bytes;
        self.reserve(reservation_mib);
    }

    /// Counts an init container that runs alone.
    fn init(&mut self, r: &Resources, reservation_mib: u32) {
        self.init_cpu = self.init_cpu.max(u64::from(r.cpu_units().unwrap_or(0)));
        self.init_memory_mib = self.init_memory_mib.max(r.memory_mib());
        self.init_ephemeral = self.init_ephemeral.max(r.ephemeral_bytes);
        self.reserve(reservation_mib);
    }

    /// Counts a container's memory reservation alone.
    fn reserve(&mut self, reservation_mib: u32) {
        self.reservations_mib += u64::from(reservation_mib);
    }

    /// The smallest Fargate size that holds what is needed.
    ///
    /// # Errors
    /// `ResourcesTooLarge` when no Fargate size does.
    fn size(&self) -> Result<TaskSize, ProviderError> {
        let cpu = self.cpu.max(self.init_cpu);
        let memory = self
            .memory_mib
            .max(self.init_memory_mib)
            .max(self.reservations_mib);
        let (cpu, memory) = fargate_size(cpu, memory)?;
        let eph_gib = self.ephemeral.max(self.init_ephemeral).div_ceil(1 << 30);
        if eph_gib > EPHEMERAL_MAX_GIB {
            return Err(invalid(
                "ResourcesTooLarge",
                format!(
                    "the pod requests {eph_gib} GiB of ephemeral storage; Fargate tasks have at most {EPHEMERAL_MAX_GIB} GiB"
                ),
            ));
        }
        Ok(TaskSize {
            cpu,
            memory,
            ephemeral_gib: (eph_gib > EPHEMERAL_DEFAULT_GIB)
                .then(|| u32::try_from(eph_gib).unwrap_or(200)),
        })
    }
}

/// Lowers containers' memory limits to the task's memory.
fn cap_memory_limits(containers: &mut [ContainerSpec], task_memory: u32) {
    for c in containers {
        if let Some(m) = c.memory.as_mut() {
            *m = (*m).min(task_memory);
        }
    }
}

/// The smallest Fargate size with at least `cpu` units and `memory_mib` MiB.
///
/// # Errors
/// `ResourcesTooLarge`, naming the valid sizes, when none is large enough.
pub fn fargate_size(cpu: u64, memory_mib: u64) -> Result<(u32, u32), ProviderError> {
    for (c, mems) in FARGATE_SIZES {
        if u64::from(*c) < cpu {
            continue;
        }
        if let Some(m) = mems.iter().find(|m| u64::from(**m) >= memory_mib) {
            return Ok((*c, *m));
        }
    }
    Err(invalid(
        "ResourcesTooLarge",
        format!(
            "the pod needs {:.2} vCPU and {memory_mib} MiB, more than any Fargate task size; valid sizes: \
             0.25 vCPU with 0.5/1/2 GiB, 0.5 vCPU with 1-4 GiB, 1 vCPU with 2-8 GiB, 2 vCPU with 4-16 GiB, \
             4 vCPU with 8-30 GiB, 8 vCPU with 16-60 GiB (4 GiB steps), 16 vCPU with 32-120 GiB (8 GiB steps)",
            cpu as f64 / 1024.0
        ),
    ))
}

// ---- to the SDK's types ----

impl TaskSpec {
    /// The container definitions for RegisterTaskDefinition; `secret_arn` is
    /// the ARN of the template's secret (required when a container has
    /// secrets).
    ///
    /// # Errors
    /// A message when a secret is referenced without an ARN, or a builder
    /// refuses a value.
    pub fn container_definitions(
        &self,
        secret_arn: Option<&str>,
    ) -> Result<Vec<ContainerDefinition>, String> {
        self.containers
            .iter()
            .map(|c| c.definition(&self.log, secret_arn))
            .collect()
    }

    /// The task volumes.
    pub fn task_volumes(&self) -> Vec<Volume> {
        self.volumes
            .iter()
            .map(|v| Volume::builder().name(v).build())
            .collect()
    }

    /// Ephemeral storage, when more than the included 20 GiB.
    pub fn ephemeral_storage(&self) -> Option<EphemeralStorage> {
        self.ephemeral_gib.map(|g| {
            EphemeralStorage::builder()
                .size_in_gib(i32::try_from(g).unwrap_or(200))
                .build()
        })
    }
}

fn kv(pairs: &[(String, String)]) -> Vec<KeyValuePair> {
    pairs
        .iter()
        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
        .collect()
}

impl ContainerSpec {
    fn definition(
        &self,
        log: &(String, String, String),
        secret_arn: Option<&str>,
    ) -> Result<ContainerDefinition, String> {
        let secrets = self
            .secrets
            .iter()
            .map(|(name, key)| {
                let arn = secret_arn.ok_or_else(|| {
                    format!(
                        "container {} references a secret but none was created",
                        self.name
                    )
                })?;
                Secret::builder()
                    .name(name)
                    .value_from(format!("{arn}:{key}::"))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let depends = self
            .depends_on
            .iter()
            .map(|(c, cond)| {
                ContainerDependency::builder()
                    .container_name(c)
                    .condition(ContainerCondition::from(*cond))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let logc = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", &log.0)
            .options("awslogs-region", &log.1)
            .options("awslogs-stream-prefix", &log.2)
            .build()
            .map_err(|e| e.to_string())?;
        let restart = match &self.restart {
            Some(ignored) => Some(
                ContainerRestartPolicy::builder()
                    .enabled(true)
                    .set_ignored_exit_codes((!ignored.is_empty()).then(|| ignored.clone()))
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok(ContainerDefinition::builder()
            .name(&self.name)
            .image(&self.image)
            .essential(self.essential)
            .set_entry_point(self.entry_point.clone())
            .set_command(self.command.clone())
            .set_working_directory(self.working_dir.clone())
            .set_user(self.user.clone())
            .set_environment(Some(kv(&self.environment)))
            .set_secrets((!secrets.is_empty()).then_some(secrets))
            .set_port_mappings(Some(
                self.ports
                    .iter()
                    .map(|(p, proto)| {
                        PortMapping::builder()
                            .container_port(i32::from(*p))
                            .protocol(TransportProtocol::from(*proto))
                            .build()
                    })
                    .collect(),
            ))
            .set_mount_points(Some(
                self.mounts
                    .iter()
                    .map(|(v, p, ro)| MountPoint::builder().source_volume(v).container_path(p).read_only(*ro).build())
                    .collect(),
            ))
            .set_depends_on((!depends.is_empty()).then_some(depends))
            .set_cpu(self.cpu.map(|c| i32::try_from(c).unwrap_or(i32::MAX)))
            .set_memory(self.memory.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
            // ECS wants a hard limit strictly above the reservation; with
            // both equal (request = limit) the limit alone says it
            .set_memory_reservation(match self.memory {
                Some(m) if self.memory_reservation >= m => None,
                _ => Some(i32::try_from(self.memory_reservation).unwrap_or(i32::MAX)),
            })
            .stop_timeout(i32::try_from(self.stop_timeout).unwrap_or(120))
            .readonly_root_filesystem(self.readonly_root)
            .set_restart_policy(restart)
            .interactive(self.interactive)
            .pseudo_terminal(self.tty)
            .log_configuration(logc)
            .build())
    }
}

impl Plan {
    /// The RunTask container overrides (per-pod environment).
    pub fn container_overrides(&self) -> Vec<ContainerOverride> {
        self.overrides
            .iter()
            .map(|(name, env)| {
                ContainerOverride::builder()
                    .name(name)
                    .set_environment(Some(kv(env)))
                    .build()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use skylet_provider::{Value, VolumeFile};

    /// Every plain value of a plan, for tests that look for leaks.
    fn everything_sent(plan: &Plan, secret_arn: &str) -> String {
        format!(
            "{:?}{:?}{:?}{:?}",
            plan.task.container_definitions(Some(secret_arn)).unwrap(),
            plan.container_overrides(),
            plan.tags,
            plan.family
        )
    }

    /// Environment of a container by name (tests).
    fn env_of(plan: &Plan, container: &str) -> std::collections::HashMap<String, String> {
        plan.task
            .containers
            .iter()
            .find(|c| c.name == container)
            .map(|c| c.environment.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn settings() -> Settings {
        Settings {
            node: "burst-1".into(),
            family_prefix: "skylet-abcd1234-".into(),
            log_group: "/skylet/test".into(),
            region: "us-east-1".into(),
            execution_role_arn: Some("arn:aws:iam::1:role/exec".into()),
            task_role_arn: None,
            files_image: "busybox".into(),
            service_account_token: ServiceAccountToken::Omit,
        }
    }

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"test-key")
    }

    /// A pod fixture: `spec` merged into a minimal pod named `name`.
    fn pod(name: &str, spec: serde_json::Value) -> ResolvedPod {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
            "spec": spec,
        }))
        .unwrap();
        ResolvedPod::bare(p)
    }

    fn web() -> serde_json::Value {
        json!({"containers": [{"name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
                               "ports": [{"containerPort": 80}],
                               "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                       {"name": "MODE", "value": "prod"},
                                       {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                               "resources": {"requests": {"cpu": "300m", "memory": "600Mi"}}}],
               "terminationGracePeriodSeconds": 300})
    }

    fn with_env(mut rp: ResolvedPod) -> ResolvedPod {
        let name = rp.pod.metadata.name.clone().unwrap();
        rp.env.insert(
            "web".into(),
            vec![
                ("POD_NAME".into(), Value::plain(name)),
                ("MODE".into(), Value::plain("prod")),
                ("PASSWORD".into(), Value::secret("hunter2")),
            ],
        );
        rp
    }

    #[test]
    fn replicas_share_one_task_definition_and_per_pod_values_go_to_overrides() {
        let a = plan(&with_env(pod("web-a", web())), &settings(), &key()).unwrap();
        let b = plan(&with_env(pod("web-b", web())), &settings(), &key()).unwrap();
        assert_eq!(a.family, b.family, "same template, same family");
        assert_eq!(a.task, b.task);
        assert!(a.family.starts_with("skylet-abcd1234-"));
        assert_eq!(
            a.overrides,
            [(
                "web".to_owned(),
                vec![("POD_NAME".to_owned(), "web-a".to_owned())]
            )]
        );
        assert_eq!(env_of(&a, "web")["MODE"], "prod");
        let web = &a.task.containers[0];
        assert_eq!(web.entry_point.as_deref(), Some(&["nginx".to_owned()][..]));
        assert_eq!(web.command.as_ref().unwrap()[0], "-g");
        assert_eq!(web.ports, [(80, "tcp")]);
        assert_eq!(web.stop_timeout, 120, "grace period capped at 120 s");
        assert_eq!(
            (a.task.cpu, a.task.memory),
            (512, 1024),
            "300m/600Mi rounds up to 0.5 vCPU / 1 GiB"
        );
        assert_eq!(
            web.restart,
            Some(vec![]),
            "restartPolicy Always restarts the container"
        );
        assert!(
            a.tags
                .contains(&("skylet.io/pod-uid".into(), "uid-web-a".into()))
        );
    }

    #[test]
    fn secret_values_never_leave_in_plain_text() {
        let p = plan(&with_env(pod("web-a", web())), &settings(), &key()).unwrap();
        let payload = p.secret.as_ref().expect("a secret");
        assert!(payload.to_json().contains("hunter2"));
        assert!(!format!("{payload:?}").contains("hunter2"), "Debug redacts");
        assert!(
            !format!("{p:?}").contains("hunter2"),
            "the plan's Debug neither"
        );
        let sent = everything_sent(
            &p,
            "arn:aws:secretsmanager:us-east-1:1:secret:skylet/n/x-AbCdEf",
        );
        assert!(!sent.contains("hunter2"), "{sent}");
        let defs = p.task.container_definitions(Some("arn:s")).unwrap();
        let s = &defs[0].secrets()[0];
        assert_eq!(
            (s.name(), s.value_from()),
            (
                "PASSWORD",
                format!("arn:s:{}::", p.task.containers[0].secrets[0].1).as_str()
            )
        );
        // a different secret value is a different template (and secret)
        let mut other = with_env(pod("web-b", web()));
        other.env.get_mut("web").unwrap()[2].1 = Value::secret("changed");
        assert_ne!(plan(&other, &settings(), &key()).unwrap().family, p.family);
        // the family reveals nothing without the key
        let other_key = hmac::Key::new(hmac::HMAC_SHA256, b"another");
        assert_ne!(
            plan(&with_env(pod("web-a", web())), &settings(), &other_key)
                .unwrap()
                .family,
            p.family
        );
        assert!(
            p.task.container_definitions(None).is_err(),
            "secrets need the secret's ARN"
        );
    }

    #[test]
    fn init_containers_run_in_order_before_app_containers() {
        let rp = pod(
            "job",
            json!({"restartPolicy": "Never",
                   "initContainers": [{"name": "migrate", "image": "app", "resources": {"requests": {"cpu": "2", "memory": "3Gi"}}},
                                      {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
                   "containers": [{"name": "main", "image": "app", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                                  {"name": "side", "image": "app"}]}),
        );
        let p = plan(&rp, &settings(), &key()).unwrap();
        let names: Vec<&str> = p.task.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["main", "side", "init_migrate", "init_proxy"],
            "app containers first"
        );
        let by = |n: &str| p.task.containers.iter().find(|c| c.name == n).unwrap();
        assert!(!by("init_migrate").essential && by("main").essential);
        assert!(by("init_migrate").depends_on.is_empty());
        assert_eq!(
            by("init_proxy").depends_on,
            [("init_migrate".to_owned(), "SUCCESS")]
        );
        assert_eq!(
            by("main").depends_on,
            [("init_proxy".to_owned(), "START")],
            "a sidecar need only start"
        );
        assert_eq!(by("main").restart, None, "restartPolicy Never");
        assert_eq!(by("init_proxy").restart, Some(vec![]), "sidecars restart");
        // the init container's 2 vCPU / 3 GiB dominates the app's 0.25 vCPU
        assert_eq!((p.task.cpu, p.task.memory), (2048, 4096));
        let defs = p.task.container_definitions(None).unwrap();
        assert_eq!(
            defs[0].depends_on()[0].condition(),
            &ContainerCondition::Start
        );
    }

    #[test]
    fn sizes_round_up_and_too_large_pods_name_the_valid_sizes() {
        assert_eq!(fargate_size(0, 0).unwrap(), (256, 512));
        assert_eq!(fargate_size(256, 600).unwrap(), (256, 1024));
        assert_eq!(fargate_size(300, 512).unwrap(), (512, 1024));
        assert_eq!(
            fargate_size(1024, 9000).unwrap(),
            (2048, 9216),
            "1 vCPU allows at most 8 GiB"
        );
        assert_eq!(fargate_size(5000, 17000).unwrap(), (8192, 20480));
        assert_eq!(fargate_size(16384, 122_880).unwrap(), (16384, 122_880));
        let e = fargate_size(20_000, 1024).unwrap_err();
        assert!(
            matches!(&e, ProviderError::InvalidPod { reason, .. } if reason == "ResourcesTooLarge")
        );
        assert!(e.to_string().contains("16 vCPU with 32-120 GiB"), "{e}");
        let rp = pod(
            "big",
            json!({"containers": [{"name": "x", "image": "i", "resources": {"requests": {"memory": "200Gi"}}}]}),
        );
        assert!(matches!(
            plan(&rp, &settings(), &key()),
            Err(ProviderError::InvalidPod { .. })
        ));
        let rp = pod(
            "bad",
            json!({"containers": [{"name": "x", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}),
        );
        assert!(
            plan(&rp, &settings(), &key())
                .unwrap_err()
                .to_string()
                .contains("\"lots\" is not a quantity")
        );
    }

    #[test]
    fn volumes_become_files_written_by_the_files_container() {
        let mut rp = pod(
            "cfg",
            json!({"containers": [{"name": "app", "image": "app",
                                   "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"},
                                                    {"name": "creds", "mountPath": "/creds"},
                                                    {"name": "info", "mountPath": "/info"},
                                                    {"name": "scratch", "mountPath": "/tmp"},
                                                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                   "volumes": [{"name": "conf", "configMap": {"name": "conf"}},
                               {"name": "creds", "secret": {"secretName": "creds"}},
                               {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                               {"name": "scratch", "emptyDir": {}},
                               {"name": "kube-api-access", "projected": {"sources": [
                                   {"serviceAccountToken": {"path": "token"}},
                                   {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]}),
        );
        let file = |path: &str, value: Value| VolumeFile {
            path: path.into(),
            mode: 0o644,
            value,
        };
        rp.volumes.insert(
            "conf".into(),
            vec![
                file("app.yaml", Value::plain("port: 80\n")),
                file("sub/x.txt", Value::plain("x")),
            ],
        );
        rp.volumes
            .insert("creds".into(), vec![file("pw", Value::secret("s3cret"))]);
        rp.volumes
            .insert("info".into(), vec![file("name", Value::plain("cfg"))]);
        rp.volumes.insert(
            "kube-api-access".into(),
            vec![
                file("token", Value::secret("eyJhbGciOi")),
                file("ca.crt", Value::plain("-----BEGIN CERTIFICATE-----")),
            ],
        );
        let p = plan(&rp, &settings(), &key()).unwrap();
        let files = p
            .task
            .containers
            .iter()
            .find(|c| c.name == FILES_CONTAINER)
            .unwrap();
        let app = &p.task.containers[0];
        assert_eq!(app.depends_on, [(FILES_CONTAINER.to_owned(), "SUCCESS")]);
        assert!(
            app.mounts.contains(&("v0".into(), "/etc/app".into(), true)),
            "file volumes are read-only"
        );
        assert!(app.mounts.contains(&("v3".into(), "/tmp".into(), false)));
        assert_eq!(
            p.task.volumes,
            ["v0", "v1", "v2", "v3", "v4"],
            "named by position"
        );
        let script = &files.command.as_ref().unwrap()[0];
        assert!(
            script.contains("mkdir -p '/skylet/volumes/v0/sub'"),
            "{script}"
        );
        assert!(
            script.contains("base64 -d > '/skylet/volumes/v0/app.yaml'; chmod 644"),
            "{script}"
        );
        assert!(
            !script.contains("token"),
            "the service-account token is omitted by default: {script}"
        );
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(
            files
                .environment
                .iter()
                .any(|(_, v)| *v == b64("port: 80\n"))
        );
        assert!(
            files
                .environment
                .iter()
                .any(|(_, v)| *v == b64("-----BEGIN CERTIFICATE-----"))
        );
        assert_eq!(
            files.secrets.len(),
            1,
            "the secret file comes from Secrets Manager"
        );
        assert_eq!(
            p.overrides,
            [(
                FILES_CONTAINER.to_owned(),
                vec![("SKYLET_F2_0".to_owned(), b64("cfg"))]
            )],
            "downward API is per pod"
        );
        let sent = everything_sent(&p, "arn:x");
        assert!(!sent.contains(&b64("s3cret")) && !sent.contains("s3cret"));
        // with tokens mounted, the token travels as a secret
        let mut s = settings();
        s.service_account_token = ServiceAccountToken::Mount;
        let p = plan(&rp, &s, &key()).unwrap();
        assert_eq!(p.secret.unwrap().keys().count(), 2);
        let script = &p
            .task
            .containers
            .iter()
            .find(|c| c.name == FILES_CONTAINER)
            .unwrap()
            .command
            .as_ref()
            .unwrap()[0];
        assert!(script.contains("/skylet/volumes/v4/token"), "{script}");
    }

    #[test]
    fn what_fargate_cannot_run_fails_with_a_reason() {
        for (spec, reason, needle) in [
            (
                json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "d", "hostPath": {"path": "/"}}]}),
                "UnsupportedVolume",
                "hostPath",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": true}}]}),
                "UnsupportedPodSpec",
                "privileged",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i"}], "hostNetwork": true}),
                "UnsupportedPodSpec",
                "spec.hostNetwork: Fargate tasks have no host to share",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "e", "mountPath": "/x", "subPath": "y"}]}],
                    "volumes": [{"name": "e", "emptyDir": {}}]}),
                "UnsupportedPodSpec",
                "subPath",
            ),
            (
                json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 9, "protocol": "SCTP"}]}]}),
                "UnsupportedPodSpec",
                "SCTP",
            ),
        ] {
            let e = plan(&pod("p", spec), &settings(), &key()).unwrap_err();
            match &e {
                ProviderError::InvalidPod { reason: r, message } => {
                    assert_eq!(r, reason);
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let mut rp = pod("p", json!({"containers": [{"name": "a", "image": "i"}]}));
        rp.pod.metadata.annotations =
            Some([(ANNOTATION_CAPACITY.to_owned(), "cheap".to_owned())].into());
        assert!(
            plan(&rp, &settings(), &key())
                .unwrap_err()
                .to_string()
                .contains("spot")
        );
        rp.pod.metadata.annotations = Some(
            [
                (ANNOTATION_CAPACITY.to_owned(), "spot".to_owned()),
                (
                    ANNOTATION_TASK_ROLE.to_owned(),
                    "arn:aws:iam::1:role/pod".to_owned(),
                ),
            ]
            .into(),
        );
        let p = plan(&rp, &settings(), &key()).unwrap();
        assert!(p.spot);
        assert_eq!(
            p.task.task_role_arn.as_deref(),
            Some("arn:aws:iam::1:role/pod")
        );
    }

    #[test]
    fn memory_limits_are_hard_limits_above_the_reservation() {
        let rp = pod(
            "p",
            json!({"containers": [
            {"name": "guaranteed", "image": "i", "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}},
            {"name": "burstable", "image": "i", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "1Gi"}}}]}),
        );
        let p = plan(&rp, &settings(), &key()).unwrap();
        assert_eq!(
            (p.task.cpu, p.task.memory),
            (256, 1024),
            "640 MiB of requests"
        );
        let defs = p.task.container_definitions(None).unwrap();
        assert_eq!(
            (defs[0].memory(), defs[0].memory_reservation()),
            (Some(512), None),
            "request = limit: the limit alone"
        );
        assert_eq!(
            (defs[1].memory(), defs[1].memory_reservation()),
            (Some(1024), Some(128))
        );
    }

    #[test]
    fn replicas_with_random_token_volume_names_share_a_template() {
        // the ServiceAccount admission plugin names the volume kube-api-access-<random>
        let replica = |name: &str, suffix: &str| {
            let vol = format!("kube-api-access-{suffix}");
            let mut rp = pod(
                name,
                json!({"containers": [{"name": "a", "image": "i",
                    "volumeMounts": [{"name": vol, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                "volumes": [{"name": vol, "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]}),
            );
            rp.volumes.insert(
                vol,
                vec![
                    VolumeFile {
                        path: "token".into(),
                        mode: 0o644,
                        value: Value::secret(format!("token-of-{name}")),
                    },
                    VolumeFile {
                        path: "namespace".into(),
                        mode: 0o644,
                        value: Value::plain("shop"),
                    },
                ],
            );
            plan(&rp, &settings(), &key()).unwrap()
        };
        let (a, b) = (replica("a", "x7k2p"), replica("b", "q9z4m"));
        assert_eq!(a.family, b.family);
        assert!(a.secret.is_none(), "the token is omitted by default");
    }

    #[test]
    fn oversized_overrides_move_into_the_task_definition() {
        let mut rp = pod(
            "p",
            json!({"containers": [{"name": "web", "image": "i",
            "env": [{"name": "BIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['big']"}}}]}]}),
        );
        rp.env.insert(
            "web".into(),
            vec![("BIG".into(), Value::plain("x".repeat(9000)))],
        );
        let p = plan(&rp, &settings(), &key()).unwrap();
        assert!(p.overrides.is_empty());
        assert_eq!(env_of(&p, "web")["BIG"].len(), 9000);
    }

    // ---- the steps of `plan`, one at a time ----

    fn container(c: serde_json::Value) -> Container {
        serde_json::from_value(c).unwrap()
    }

    fn reason(e: ProviderError) -> String {
        match e {
            ProviderError::InvalidPod { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_options_read_the_annotations_and_bound_the_grace_period() {
        let mut s = settings();
        s.task_role_arn = Some("arn:default".into());
        assert_eq!(task_role(None, &s).unwrap().as_deref(), Some("arn:default"));
        assert_eq!(
            task_role(Some("arn:pod"), &s).unwrap().as_deref(),
            Some("arn:pod")
        );
        assert_eq!(
            reason(task_role(Some("pod"), &s).unwrap_err()),
            "InvalidTaskRole"
        );
        assert!(!spot(None).unwrap() && !spot(Some("on-demand")).unwrap());
        assert!(spot(Some("spot")).unwrap());
        assert_eq!(reason(spot(Some("Spot")).unwrap_err()), "InvalidCapacity");
        let grace = |g: Option<i64>| {
            stop_timeout(&PodSpec {
                termination_grace_period_seconds: g,
                ..PodSpec::default()
            })
        };
        assert_eq!(
            [
                grace(None),
                grace(Some(0)),
                grace(Some(60)),
                grace(Some(3600))
            ],
            [30, 2, 60, MAX_STOP_TIMEOUT]
        );
    }

    #[test]
    fn tags_name_the_pod_and_the_node() {
        let meta = pod("web-a", web()).pod.metadata;
        assert_eq!(
            tags(&meta, "burst-1"),
            [
                ("skylet.io/pod-uid", "uid-web-a"),
                ("skylet.io/pod-namespace", "shop"),
                ("skylet.io/pod-name", "web-a"),
                ("skylet.io/node", "burst-1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn overrides_past_the_limit_move_into_their_containers() {
        let mut task = plan(&pod("p", web()), &settings(), &key()).unwrap().task;
        let small: BTreeMap<_, _> =
            [("web".to_owned(), vec![("A".to_owned(), "a".to_owned())])].into();
        assert_eq!(
            fit_overrides(&mut task.clone(), small.clone()),
            small.into_iter().collect::<Vec<_>>()
        );
        let big: BTreeMap<_, _> = [(
            "web".to_owned(),
            vec![("A".to_owned(), "a".repeat(OVERRIDES_LIMIT))],
        )]
        .into();
        assert!(fit_overrides(&mut task, big).is_empty());
        assert_eq!(
            task.containers[0].environment.last().unwrap().1.len(),
            OVERRIDES_LIMIT
        );
    }

    #[test]
    fn the_secret_payload_is_none_when_empty_and_at_most_what_secrets_manager_holds() {
        assert!(secret_payload(BTreeMap::new()).unwrap().is_none());
        let one: BTreeMap<_, _> = [("k".to_owned(), "v".to_owned())].into();
        assert_eq!(
            secret_payload(one).unwrap().unwrap().to_json(),
            r#"{"k":"v"}"#
        );
        let huge: BTreeMap<_, _> = [("k".to_owned(), "v".repeat(SECRET_LIMIT))].into();
        assert_eq!(reason(secret_payload(huge).unwrap_err()), "SecretTooLarge");
    }

    #[test]
    fn file_volumes_keep_their_variable_numbers_when_tokens_are_left_out() {
        let mut rp = pod(
            "p",
            json!({"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "meta", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}]}),
        );
        let file = |path: &str, value: Value| VolumeFile {
            path: path.into(),
            mode: 0o400,
            value,
        };
        rp.volumes.insert(
            "api".into(),
            vec![
                file("token", Value::secret("t")),
                file("meta/labels", Value::plain("a=b")),
                file("metadata", Value::plain("shared")),
            ],
        );
        let spec = rp.pod.spec.clone().unwrap();
        let mut values = PodValues::default();
        let (layout, files) =
            volume_layout(&rp, &spec, ServiceAccountToken::Omit, &mut values).unwrap();
        assert_eq!(layout.volumes, ["v0", "v1"]);
        assert_eq!(layout.names["api"], "v1");
        assert_eq!(layout.files, BTreeSet::from(["v1".to_owned()]));
        assert!(values.secret.is_empty(), "the token is left out");
        assert_eq!(
            values.overrides[FILES_CONTAINER][0].0, "SKYLET_F1_1",
            "under a downward-API path: per pod; numbered as if the token were there"
        );
        assert_eq!(
            files.environment[0].0, "SKYLET_F1_2",
            "a prefix is no parent"
        );
        assert_eq!(files.script.len(), 2);
        let mut values = PodValues::default();
        volume_layout(&rp, &spec, ServiceAccountToken::Mount, &mut values).unwrap();
        assert_eq!(values.secret.keys().collect::<Vec<_>>(), ["f1.0"]);
        let hostpath = pod(
            "p",
            json!({"containers": [], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
        );
        let spec = hostpath.pod.spec.clone().unwrap();
        let e = volume_layout(&hostpath, &spec, ServiceAccountToken::Omit, &mut values);
        assert_eq!(reason(e.unwrap_err()), "UnsupportedVolume");
    }

    #[test]
    fn file_commands_quote_paths_and_make_parent_directories() {
        assert_eq!(
            file_command("/d", "it's/x", 0o600, "V"),
            r#"mkdir -p '/d/it'\''s'; printf '%s' "$V" | base64 -d > '/d/it'\''s/x'; chmod 600 '/d/it'\''s/x'"#
        );
        assert!(FilesContainer::default().into_spec("busybox", 30).is_none());
    }

    #[test]
    fn every_container_needs_an_image() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "a", "image": "i"}],
            "initContainers": [{"name": "b", "image": ""}, {"name": "c"}]}))
        .unwrap();
        let e = check_images(&spec).unwrap_err();
        assert!(e.to_string().contains("\"b\" has no image"), "{e}");
    }

    #[test]
    fn needs_sum_side_by_side_containers_and_take_the_largest_init_container() {
        let res = |cpu: &str, mem: &str, eph: &str| {
            Resources::of(&container(json!({"name": "c", "resources": {"requests":
                {"cpu": cpu, "memory": mem, "ephemeral-storage": eph}}})))
            .unwrap()
        };
        let mut needs = Needs::default();
        needs.running(&res("500m", "1Gi", "10Gi"), 1024);
        needs.running(&res("500m", "1Gi", "15Gi"), 1024);
        needs.init(&res("1", "1Gi", "1Gi"), 32);
        needs.init(&res("250m", "3Gi", "30Gi"), 32);
        needs.reserve(32);
        assert_eq!(
            (
                needs.cpu,
                needs.init_cpu,
                needs.memory_mib,
                needs.init_memory_mib
            ),
            (1024, 1024, 2048, 3072)
        );
        assert_eq!(needs.reservations_mib, 2048 + 96);
        assert_eq!(
            needs.size().unwrap(),
            TaskSize {
                cpu: 1024,
                memory: 3072,
                ephemeral_gib: Some(30)
            }
        );
        let mut small = Needs::default();
        small.running(&res("1", "1Gi", "20Gi"), 1024);
        assert_eq!(
            small.size().unwrap().ephemeral_gib,
            None,
            "20 GiB are included"
        );
        small.running(&res("1", "1Gi", "181Gi"), 1024);
        assert_eq!(reason(small.size().unwrap_err()), "ResourcesTooLarge");
    }

    #[test]
    fn user_is_uid_and_gid_the_container_over_the_pod() {
        let spec = |sc: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "securityContext": sc})).unwrap()
        };
        let c = container(json!({"name": "c", "securityContext": {"runAsUser": 5}}));
        assert_eq!(user(&c, &spec(json!({}))).as_deref(), Some("5"));
        assert_eq!(
            user(&c, &spec(json!({"runAsUser": 1, "runAsGroup": 2}))).as_deref(),
            Some("5:2")
        );
        let bare = container(json!({"name": "c"}));
        assert_eq!(
            user(&bare, &spec(json!({"runAsGroup": 2}))).as_deref(),
            Some("0:2")
        );
        assert_eq!(user(&bare, &spec(json!({}))), None);
    }

    #[test]
    fn environment_goes_to_the_secret_the_overrides_or_the_task_definition() {
        let mut rp = pod("p", json!({"containers": []}));
        let c = container(json!({"name": "app", "env": [
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "URL", "value": "http://$(ME)"}]}));
        rp.env.insert(
            "app".into(),
            vec![
                ("MODE".into(), Value::plain("dev")),
                ("ME".into(), Value::plain("p")),
                ("PW".into(), Value::secret("pw")),
                ("URL".into(), Value::plain("http://p")),
                ("MODE".into(), Value::plain("prod")),
            ],
        );
        let mut values = PodValues::default();
        let env = environment(&rp, &c, "init_app", &mut values);
        assert_eq!(
            env.environment,
            [("MODE".to_owned(), "prod".to_owned())],
            "the last wins, first place"
        );
        assert_eq!(env.secrets, [("PW".to_owned(), "e.init_app.2".to_owned())]);
        assert_eq!(values.secret["e.init_app.2"], "pw");
        assert_eq!(
            values.overrides["init_app"],
            [("ME", "p"), ("URL", "http://p")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn ports_map_as_is_and_file_volumes_mount_read_only() {
        let c = container(json!({"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 80}, {"containerPort": 53, "protocol": "UDP"}]}));
        assert_eq!(ports(&c).unwrap(), [(80, "tcp"), (53, "udp")]);
        for bad in [
            json!({"containerPort": 80, "hostPort": 8080}),
            json!({"containerPort": 70000}),
        ] {
            let c = container(json!({"name": "c", "ports": [bad]}));
            assert_eq!(reason(ports(&c).unwrap_err()), "UnsupportedPodSpec");
        }
        let layout = VolumeLayout {
            volumes: vec!["v0".into(), "v1".into()],
            names: [("conf", "v0"), ("data", "v1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            files: ["v0".to_owned()].into(),
        };
        let c = container(json!({"name": "c", "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/c"},
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/ro", "readOnly": true}]}));
        assert_eq!(
            mounts(&c, &layout).unwrap(),
            [
                ("v0", "/etc/c", true),
                ("v1", "/data", false),
                ("v1", "/ro", true)
            ]
            .map(|(v, p, ro)| (v.to_owned(), p.to_owned(), ro))
        );
    }
}
