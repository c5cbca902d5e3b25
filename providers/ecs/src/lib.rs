#![warn(missing_docs)]
//! skylet's AWS ECS/Fargate backend: every pod bound to the node is one ECS
//! task on Fargate.
//!
//! | pod | ECS |
//! |---|---|
//! | template (images, commands, resources, ...) | one task definition, family `skylet-<node hash>-<template hash>`, shared by replicas ([`translate`]) |
//! | Secret-derived env and files | one Secrets Manager secret per template and set of values, referenced by `secrets[].valueFrom` |
//! | image pull Secrets | `repositoryCredentials`: a Secrets Manager secret per pull Secret and registry, next to the template's ([`translate::pull`]) |
//! | the pod | a task: RunTask FARGATE (or FARGATE_SPOT), awsvpc, `startedBy` = the node, tags with the pod's UID, namespace, name and node |
//! | status | a sweep: ListTasks (RUNNING and STOPPED) + DescribeTasks per 100 tasks ([`status`]) |
//! | logs | CloudWatch Logs ([`logs`]) |
//! | `kubectl exec` | ECS Exec (`ExecuteCommand`) and the Session Manager data channel ([`exec`]); no attach |
//! | `kubectl top` | CloudWatch Container Insights, GetMetricData for up to 250 containers a call ([`usage`]) |
//! | delete | StopTask; the sweep reports the pod gone once the task is STOPPED, and removes task definitions and secrets no task uses |
//! | a task ECS stopped for a failure | a Warning Event on the pod with ECS's reason ([`failures`]) |
//!
//! # Idempotency and restarts
//! Tasks are found by their `skylet.io/pod-uid` tag among the tasks started
//! by the node, so a restarted skylet adopts what runs. `create_pod` first
//! consults the listing (taking one if this process has none yet) and only
//! then calls RunTask, with `clientToken` = the pod UID as well (ECS honours
//! it for a while; moto ignores it). The sweep stops all but the oldest of
//! duplicate tasks of one pod, should any appear.
//!
//! # Cost per sweep
//! ListTasks twice (desired RUNNING and STOPPED, 100 per page) and
//! DescribeTasks once per 100 tasks that are not known to have stopped: a
//! STOPPED task never changes, so it is described once.
//!
//! # IAM (see `deploy/aws/iam-policy.json`)
//! - `ecs:RunTask`, `ecs:StopTask`, `ecs:ListTasks`, `ecs:DescribeTasks`,
//!   `ecs:TagResource` (tags on RunTask), `ecs:DescribeClusters` (ping)
//! - `ecs:RegisterTaskDefinition`, `ecs:DeregisterTaskDefinition`,
//!   `ecs:DeleteTaskDefinitions`, `ecs:ListTaskDefinitionFamilies`,
//!   `ecs:ListTaskDefinitions`
//! - `iam:PassRole` on the execution and task roles
//! - `secretsmanager:CreateSecret`, `PutSecretValue`, `DeleteSecret`,
//!   `ListSecrets`, `TagResource` on `skylet/<node>/*`
//! - `logs:CreateLogGroup` (once, at start), `logs:GetLogEvents`
//! - `cloudwatch:GetMetricData` (`kubectl top`)
//! - `ecs:ExecuteCommand` (`kubectl exec`; the task role needs
//!   `ssmmessages:*`, see [`exec`])

//!
//! # Modules
//! [`translate`] (pod to task definition), [`status`] (task to pod status),
//! [`logs`], [`client`] (AWS clients and errors); on the provider: `state`
//! (what it remembers), `sweep` (listing), `tasks` (RunTask, StopTask),
//! `templates` (task definitions and secrets), `gc` (their removal).
use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::api::resource::Quantity};
use ring::{hmac, rand::SecureRandom};
use skylet_provider::{
    ApiMetrics, BackendPod, Deleted, ExecIo, ExitStatus, Kind as _, LogOptions, LogStream, PodRef,
    Provider, ProviderError, ResolvedPod, Result,
};

pub mod client;
pub mod cloudmap;
pub mod config;
pub mod exec;
pub mod failures;
pub mod kind;
pub mod logs;
pub mod names;
pub mod status;
pub mod translate;
pub mod usage;

mod gc;
mod limits;
mod state;
mod sweep;
mod tasks;
mod templates;
mod top;
/// The CloudWatch SDK the metrics come from, for tests that publish
/// Container Insights datapoints themselves (moto does not).
pub use aws_sdk_cloudwatch;
pub use config::Config;
pub use kind::Ecs;

use client::{Clients, ECS, LOGS, aws};
use state::State;
use status::Observation;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid ECS configuration: {0}")]
    Config(String),
    /// The AWS clients could not be built.
    #[error("cannot set up the AWS clients")]
    Clients(#[from] client::Error),
    /// No randomness for the secret-name key.
    #[error("no system randomness available")]
    Random,
    /// No TLS configuration for ECS Exec's data channels.
    #[error("cannot set up TLS for ECS Exec")]
    Tls(#[source] rustls::Error),
}

/// The ECS backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct EcsProvider {
    inner: Arc<Inner>,
    /// Cloud Map registration, when configured (run in [`Provider::run`]).
    cloud_map: Option<Arc<cloudmap::CloudMap>>,
    /// Where Events of pods go (probes ECS does not run).
    sink: skylet_provider::Sink,
}

struct Inner {
    config: Config,
    clients: Clients,
    settings: translate::Settings,
    started_by: String,
    secret_prefix: String,
    /// Keys the HMAC of secret values in template hashes; never leaves memory.
    secret_key: hmac::Key,
    /// TLS of ECS Exec's data channels ([`exec`]).
    exec_tls: Arc<rustls::ClientConfig>,
    state: Mutex<State>,
    /// Serializes template registration (rare: once per template).
    register: tokio::sync::Mutex<()>,
    /// Serializes sweeps (the core's and the ones creates trigger).
    sweep: tokio::sync::Mutex<()>,
    /// Cumulative CPU counters of the running containers.
    meter: skylet_provider::usage::Meter,
    /// CloudWatch's last answer.
    usage_cache: Mutex<Option<top::Cached>>,
}

impl EcsProvider {
    /// Connects to AWS with `config`, counting its calls in `metrics` (no
    /// call is made but CreateLogGroup). [`Ecs`]'s `build` calls this.
    ///
    /// # Errors
    /// When the configuration is unusable or no region is known.
    pub async fn new(config: Config, metrics: ApiMetrics) -> Result<Self, Error> {
        config.check().map_err(Error::Config)?;
        let clients = Clients::new(&config, metrics).await?;
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Random)?;
        let node_hash = names::node_hash(&config.cluster, &config.node_name);
        let settings = translate::Settings {
            node: config.node_name.clone(),
            family_prefix: names::family_prefix(&node_hash),
            log_group: config.log_group.clone(),
            region: clients.region.clone(),
            execution_role_arn: config.execution_role_arn.clone(),
            task_role_arn: config.task_role_arn.clone(),
            files_image: config.files_image.clone(),
            service_account_token: config.service_account_token,
        };
        let inner = Inner {
            started_by: names::started_by(&config.node_name),
            secret_prefix: names::secret_prefix(&config.node_name),
            secret_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            exec_tls: exec::tls_config().map_err(Error::Tls)?,
            settings,
            clients,
            config,
            state: Mutex::default(),
            register: tokio::sync::Mutex::new(()),
            sweep: tokio::sync::Mutex::new(()),
            meter: skylet_provider::usage::Meter::new(),
            usage_cache: Mutex::default(),
        };
        let p = Self {
            inner: Arc::new(inner),
            cloud_map: None,
            sink: skylet_provider::Sink::discard(),
        };
        p.ensure_log_group().await;
        Ok(p)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn m(&self) -> &ApiMetrics {
        &self.inner.clients.metrics
    }

    async fn ensure_log_group(&self) {
        let r = self
            .inner
            .clients
            .logs
            .create_log_group()
            .log_group_name(&self.inner.config.log_group)
            .send()
            .await
            .map_err(aws(LOGS, "CreateLogGroup", self.m()));
        match r {
            Ok(_) => tracing::info!(group = %self.inner.config.log_group, "created the log group"),
            Err(e) if e.is("ResourceAlreadyExistsException") => {}
            Err(e) => {
                tracing::warn!(group = %self.inner.config.log_group, error = %e, "cannot create the log group; containers' logs need it to exist")
            }
        }
    }
}

impl EcsProvider {
    /// With Cloud Map registration (`--ecs-cloud-map-namespace-id`).
    #[must_use]
    pub fn with_cloud_map(self, cloud_map: Option<cloudmap::CloudMap>) -> Self {
        Self {
            cloud_map: cloud_map.map(Arc::new),
            ..self
        }
    }

    /// Reporting Events of pods to `sink` (the core's; discarded by default).
    #[must_use]
    pub fn with_sink(self, sink: skylet_provider::Sink) -> Self {
        Self { sink, ..self }
    }
}

impl Provider for EcsProvider {
    fn name(&self) -> &'static str {
        Ecs::NAME
    }

    /// Registers pods in Cloud Map, when configured, until `shutdown`.
    async fn run(&self, shutdown: skylet_provider::CancellationToken) {
        match &self.cloud_map {
            Some(cm) => cm.run(shutdown).await,
            None => shutdown.cancelled().await,
        }
    }

    fn billed_size(&self, pod: &k8s_openapi::api::core::v1::Pod) -> skylet_provider::BilledSize {
        billed_size(pod, &self.inner.settings, &self.inner.secret_key)
    }

    fn configure_node(&self, node: &mut Node) {
        let c = &self.inner.config.capacity;
        let q: std::collections::BTreeMap<String, Quantity> =
            [("cpu", &c.cpu), ("memory", &c.memory), ("pods", &c.pods)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Quantity(v.clone())))
                .collect();
        let status = node.status.get_or_insert_with(Default::default);
        status.capacity = Some(q.clone());
        status.allocatable = Some(q);
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            "topology.kubernetes.io/region".into(),
            self.inner.clients.region.clone(),
        );
        labels.insert("node.kubernetes.io/instance-type".into(), "fargate".into());
        if let [zone] = self.inner.config.zones.as_slice() {
            labels.insert("topology.kubernetes.io/zone".into(), zone.clone());
        }
    }

    async fn ping(&self) -> Result<()> {
        let r = self
            .inner
            .clients
            .ecs
            .describe_clusters()
            .clusters(&self.inner.config.cluster)
            .send()
            .await
            .map_err(aws(ECS, "DescribeClusters", self.m()))?;
        match r.clusters().first().and_then(|c| c.status()) {
            Some("ACTIVE") => Ok(()),
            other => Err(ProviderError::transient(format!(
                "ECS cluster {} is {}",
                self.inner.config.cluster,
                other.map_or_else(|| "not found".to_owned(), |s| format!("in state {s}"))
            ))),
        }
    }

    async fn create_pod(&self, rp: &ResolvedPod) -> Result<()> {
        let pod = rp.pod_ref();
        self.ensure_listed().await?;
        let existing = self
            .state()
            .entries(&pod.uid)
            .into_iter()
            .find(|(_, e)| !matches!(e.observation, Observation::Finished(_)));
        if let Some((arn, _)) = existing {
            tracing::debug!(pod = %pod, task = %arn, "the pod's task exists; nothing to create");
            return Ok(());
        }
        let plan = translate::plan(rp, &self.inner.settings, &self.inner.secret_key)?;
        let exec = exec::enabled(&rp.pod, self.inner.config.exec_enabled)?;
        let td_arn = self.ensure_template(&plan).await?;
        self.run_task(&plan, &td_arn, &pod, exec).await?;
        // after the one RunTask that started the task: once per pod
        for note in rp
            .pod
            .spec
            .as_ref()
            .map(translate::probes::not_run)
            .unwrap_or_default()
        {
            self.sink.event(skylet_provider::PodEvent {
                pod: pod.clone(),
                type_: skylet_provider::EventType::Warning,
                reason: "ProbeNotSupported".into(),
                note,
                action: "Ecs",
                reporter: "skylet-ecs",
            });
        }
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef, _grace: Duration) -> Result<Deleted> {
        self.ensure_listed().await?;
        let entries = self.state().entries(&pod.uid);
        if entries.is_empty() {
            return Ok(Deleted::Gone);
        }
        let reason = format!(
            "{} (pod {}/{})",
            names::STOP_REASON_PREFIX,
            pod.namespace,
            pod.name
        );
        let mut stopping = false;
        for (arn, _) in entries.iter().filter(|(_, e)| !e.stopped) {
            tracing::info!(pod = %pod, task = %arn, "stopping the pod's task");
            if !self.stop_task(arn, &reason).await? {
                stopping = true;
            }
        }
        if stopping {
            return Ok(Deleted::Stopping);
        }
        self.state().released.insert(pod.uid.clone());
        Ok(Deleted::Gone)
    }

    async fn list_pods(&self) -> Result<Vec<BackendPod>> {
        self.sweep().await
    }

    async fn logs(&self, pod: &PodRef, container: &str, opts: LogOptions) -> Result<LogStream> {
        if opts.previous {
            // the kubelet API answers 400 with this, never the current log
            return Err(ProviderError::Unsupported(format!(
                "aws-ecs keeps no log of a previous run of container {container:?}: a container ECS \
                 restarts writes on in the same awslogs stream (its current log spans the restarts); \
                 drop --previous"
            )));
        }
        self.ensure_listed().await?;
        let Some((arn, entry)) = self.state().entries(&pod.uid).into_iter().next() else {
            return Err(ProviderError::NotFound(format!(
                "pod {}/{} has no ECS task",
                pod.namespace, pod.name
            )));
        };
        let init = names::ecs_container(container, true);
        let ecs_name = if entry.containers.contains(&init) {
            init
        } else {
            container.to_owned()
        };
        let me = self.clone();
        let task = arn.clone();
        let source = logs::CloudWatch {
            client: self.inner.clients.logs.clone(),
            metrics: self.m().clone(),
            group: self.inner.config.log_group.clone(),
            stream: names::log_stream(&pod.namespace, &ecs_name, &arn),
            finished: move || me.state().tasks.get(&task).is_none_or(|e| e.stopped),
        };
        logs::stream(source, opts).await
    }

    async fn stats(&self) -> Result<Vec<skylet_provider::PodStats>> {
        self.usage().await
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<ExitStatus> {
        self.exec_command(pod, container, command, io).await
    }

    async fn attach(
        &self,
        _pod: &PodRef,
        _container: &str,
        _io: skylet_provider::AttachIo,
    ) -> Result<ExitStatus> {
        Err(ProviderError::Unsupported(
            "attach is not available on the aws-ecs backend: ECS has no API to attach to a \
             container's main process (ECS Exec starts new processes); use kubectl logs -f for \
             its output, or kubectl exec"
                .into(),
        ))
    }
}

/// What Fargate bills for `pod`: the task size [`translate::plan`] picks,
/// the pod's needs rounded up to a valid CPU/memory pair (1024 CPU units
/// are one vCPU); the pod's requests if it cannot run on Fargate (it is
/// then never billed).
fn billed_size(
    pod: &k8s_openapi::api::core::v1::Pod,
    settings: &translate::Settings,
    key: &hmac::Key,
) -> skylet_provider::BilledSize {
    match translate::plan(&ResolvedPod::bare(pod.clone()), settings, key) {
        Ok(plan) => skylet_provider::BilledSize::new(
            u64::from(plan.task.cpu) * 1000 / 1024,
            u64::from(plan.task.memory) << 20,
        ),
        Err(_) => skylet_provider::BilledSize::requests(pod),
    }
}

#[cfg(test)]
mod billing_tests {
    use serde_json::json;
    use skylet_provider::BilledSize;

    use super::*;

    #[test]
    fn a_pod_is_billed_the_fargate_size_it_runs_as() {
        let settings = translate::Settings {
            node: "burst-1".into(),
            family_prefix: "skylet-abcd1234-".into(),
            log_group: "/skylet/test".into(),
            region: "us-east-1".into(),
            execution_role_arn: None,
            task_role_arn: None,
            files_image: "busybox".into(),
            service_account_token: config::ServiceAccountToken::Omit,
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"test-key");
        let pod = |resources: serde_json::Value| {
            serde_json::from_value(json!({
                "metadata": {"namespace": "shop", "name": "web", "uid": "uid-web"},
                "spec": {"containers": [{"name": "web", "image": "nginx", "resources": resources}]},
            }))
            .unwrap()
        };
        let billed = |resources| billed_size(&pod(resources), &settings, &key);
        // 300m is 308 CPU units: 0.5 vCPU, whose smallest memory is 1 GiB
        assert_eq!(
            billed(json!({"requests": {"cpu": "300m", "memory": "600Mi"}})),
            BilledSize::new(500, 1 << 30)
        );
        assert_eq!(billed(json!({})), BilledSize::new(250, 512 << 20));
        assert_eq!(
            billed(json!({"limits": {"cpu": "2", "memory": "9Gi"}})),
            BilledSize::new(2000, 9 << 30)
        );
        // larger than any Fargate size: never runs, billed its requests
        assert_eq!(
            billed(json!({"requests": {"cpu": "64", "memory": "1Gi"}})),
            BilledSize::new(64_000, 1 << 30)
        );
    }
}
