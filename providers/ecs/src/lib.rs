#![warn(missing_docs)]
//! skylet's AWS ECS/Fargate backend: every pod bound to the node is one ECS
//! task on Fargate.
//!
//! | pod | ECS |
//! |---|---|
//! | template (images, commands, resources, ...) | one task definition, family `skylet-<node hash>-<template hash>`, shared by replicas ([`translate`]) |
//! | Secret-derived env and files | one Secrets Manager secret per template and set of values, referenced by `secrets[].valueFrom` |
//! | the pod | a task: RunTask FARGATE (or FARGATE_SPOT), awsvpc, `startedBy` = the node, tags with the pod's UID, namespace, name and node |
//! | status | a sweep: ListTasks (RUNNING and STOPPED) + DescribeTasks per 100 tasks ([`status`]) |
//! | logs | CloudWatch Logs ([`logs`]) |
//! | delete | StopTask; the sweep reports the pod gone once the task is STOPPED, and removes task definitions and secrets no task uses |
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

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    DesiredStatus, LaunchType, NetworkConfiguration, NetworkMode, Tag, TaskField, TaskOverride,
};
use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::api::resource::Quantity};
use ring::{hmac, rand::SecureRandom};
use skylet_provider::{
    ApiMetrics, BackendPod, Deleted, ExecIo, ExitStatus, Kind as _, LogOptions, LogStream, PodRef,
    Provider, ProviderError, ResolvedPod, Result,
};

pub mod client;
pub mod config;
pub mod kind;
pub mod logs;
pub mod names;
pub mod status;
pub mod translate;

pub use config::Config;
pub use kind::Ecs;

use client::{AwsError, Clients, ECS, LOGS, SECRETS, aws};
use status::Observation;
use translate::Plan;

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
}

/// How long a task that RunTask returned is kept in the cache even when a
/// listing lacks it (ListTasks is eventually consistent).
const FRESH: Duration = Duration::from_secs(60);

/// The ECS backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct EcsProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    clients: Clients,
    settings: translate::Settings,
    started_by: String,
    secret_prefix: String,
    /// Keys the HMAC of secret values in template hashes; never leaves memory.
    secret_key: hmac::Key,
    state: Mutex<State>,
    /// Serializes template registration (rare: once per template).
    register: tokio::sync::Mutex<()>,
    /// Serializes sweeps (the core's and the ones creates trigger).
    sweep: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Tasks by ARN.
    tasks: HashMap<String, TaskEntry>,
    /// Tasks without skylet's tags.
    foreign: HashSet<String>,
    /// Whether a full listing was taken by this process.
    listed: bool,
    /// Pods whose stopped task the core has deleted.
    released: HashSet<String>,
    /// Registered templates by key.
    templates: HashMap<String, Template>,
    /// Task definitions of this node, by ARN.
    owned_tds: HashMap<String, Owned>,
    /// Secrets of this node, by template key.
    owned_secrets: HashMap<String, Owned>,
    /// Whether existing task definitions and secrets were looked up.
    discovered: bool,
}

#[derive(Clone, Debug)]
struct TaskEntry {
    pod: PodRef,
    td_arn: String,
    /// ECS container names.
    containers: Vec<String>,
    /// What the last description said; final once the task has stopped.
    observation: Observation,
    stopped: bool,
    seen: Instant,
    /// `createdAt` (seconds), to tell the first of duplicates.
    created_at: i64,
}

#[derive(Clone, Debug)]
struct Template {
    td_arn: String,
}

#[derive(Clone, Debug)]
struct Owned {
    /// For task definitions: the template key; for secrets: the ARN.
    id: String,
    last_used: Instant,
}

impl State {
    /// Entries of a pod, live ones first, then newest.
    fn entries(&self, uid: &str) -> Vec<(String, TaskEntry)> {
        let mut v: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.pod.uid == uid)
            .map(|(a, e)| (a.clone(), e.clone()))
            .collect();
        v.sort_by_key(|(_, e)| (e.stopped, std::cmp::Reverse(e.seen)));
        v
    }
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
            settings,
            clients,
            config,
            state: Mutex::default(),
            register: tokio::sync::Mutex::new(()),
            sweep: tokio::sync::Mutex::new(()),
        };
        let p = Self {
            inner: Arc::new(inner),
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

    /// Every task ARN of the node with this desired status, all pages;
    /// adds the ListTasks calls made to `calls`.
    async fn list_tasks(
        &self,
        desired: DesiredStatus,
        calls: &mut u64,
    ) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            *calls += 1;
            let r = self
                .inner
                .clients
                .ecs
                .list_tasks()
                .cluster(&self.inner.config.cluster)
                .started_by(&self.inner.started_by)
                .desired_status(desired.clone())
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(aws(ECS, "ListTasks", self.m()))?;
            out.extend(r.task_arns().iter().cloned());
            token = r.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// DescribeTasks for `arns`, 100 at a time, with tags.
    async fn describe(&self, arns: &[String]) -> Result<Vec<aws_sdk_ecs::types::Task>, AwsError> {
        let mut out = Vec::with_capacity(arns.len());
        for chunk in arns.chunks(100) {
            let r = self
                .inner
                .clients
                .ecs
                .describe_tasks()
                .cluster(&self.inner.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(aws(ECS, "DescribeTasks", self.m()))?;
            out.extend(r.tasks().iter().cloned());
        }
        Ok(out)
    }

    /// One sweep: refreshes the task cache, stops duplicates, collects
    /// garbage, and returns the listing.
    async fn sweep(&self) -> Result<Vec<BackendPod>> {
        let _g = self.inner.sweep.lock().await;
        let started = Instant::now();
        let mut list_calls = 0;
        let mut arns = self
            .list_tasks(DesiredStatus::Running, &mut list_calls)
            .await?;
        arns.extend(
            self.list_tasks(DesiredStatus::Stopped, &mut list_calls)
                .await?,
        );
        let listed: HashSet<String> = arns.iter().cloned().collect();
        let to_describe: Vec<String> = {
            let st = self.state();
            let mut seen = HashSet::new();
            arns.into_iter()
                .filter(|a| seen.insert(a.clone()))
                .filter(|a| !st.foreign.contains(a) && !st.tasks.get(a).is_some_and(|e| e.stopped))
                .collect()
        };
        let described = self.describe(&to_describe).await?;
        let describe_calls = u64::try_from(to_describe.len().div_ceil(100)).unwrap_or(u64::MAX);
        self.m().sweep_calls(ECS, "ListTasks", list_calls);
        self.m().sweep_calls(ECS, "DescribeTasks", describe_calls);

        let (listing, duplicates, garbage) = {
            let mut st = self.state();
            for t in &described {
                let Some(arn) = t.task_arn() else { continue };
                let obs = status::observe(t);
                let pod = match &obs {
                    Observation::Pod(bp) => bp.pod.clone(),
                    Observation::Finished(p) => p.clone(),
                    Observation::Foreign => {
                        st.foreign.insert(arn.to_owned());
                        continue;
                    }
                };
                st.tasks.insert(
                    arn.to_owned(),
                    TaskEntry {
                        pod,
                        td_arn: t.task_definition_arn().unwrap_or_default().to_owned(),
                        containers: t
                            .containers()
                            .iter()
                            .filter_map(|c| c.name().map(str::to_owned))
                            .collect(),
                        observation: obs,
                        stopped: status::is_stopped(t),
                        seen: Instant::now(),
                        created_at: t
                            .created_at()
                            .map_or(i64::MAX, aws_smithy_types::DateTime::secs),
                    },
                );
            }
            // forget what ECS no longer lists (unless just created)
            st.tasks.retain(|arn, e| {
                listed.contains(arn) || e.seen >= started || e.seen.elapsed() < FRESH
            });
            st.foreign.retain(|a| listed.contains(a));
            let uids: HashSet<String> = st.tasks.values().map(|e| e.pod.uid.clone()).collect();
            st.released.retain(|u| uids.contains(u));
            st.listed = true;
            let listing = listing_of(&st);
            let duplicates = duplicates_of(&st);
            let garbage = if st.discovered {
                collect_garbage(&mut st, self.inner.config.gc_grace)
            } else {
                Garbage::default()
            };
            (listing, duplicates, garbage)
        };
        for arn in duplicates {
            tracing::warn!(task = %arn, "stopping a duplicate task of a pod");
            let _ = self
                .stop_task(&arn, "Deleted by skylet (duplicate task of one pod)")
                .await;
        }
        if !self.state().discovered {
            self.discover().await;
        }
        self.remove_garbage(garbage).await;
        Ok(listing)
    }

    /// Finds the task definitions and secrets a previous run left, so the
    /// sweep removes those no task uses. Best effort: what cannot be listed
    /// is left alone (and said so), and garbage collection of this run's
    /// own templates goes on regardless.
    async fn discover(&self) {
        let (tds, secrets) = match self.leftovers().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for task definitions and secrets of previous runs; they are not removed");
                (Vec::new(), Vec::new())
            }
        };
        let mut st = self.state();
        let now = Instant::now();
        for (arn, key) in tds {
            st.owned_tds.entry(arn).or_insert(Owned {
                id: key,
                last_used: now,
            });
        }
        for (key, arn) in secrets {
            st.owned_secrets.entry(key).or_insert(Owned {
                id: arn,
                last_used: now,
            });
        }
        tracing::info!(
            task_definitions = st.owned_tds.len(),
            secrets = st.owned_secrets.len(),
            "known task definitions and secrets"
        );
        st.discovered = true;
    }

    /// Active task definitions (ARN, template key) and secrets (key, ARN)
    /// of this node.
    async fn leftovers(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>), AwsError> {
        let c = &self.inner.clients;
        let prefix = self.inner.settings.family_prefix.as_str();
        let mut families = Vec::new();
        let mut token = None;
        loop {
            let r = c
                .ecs
                .list_task_definition_families()
                .family_prefix(prefix)
                .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .map_err(aws(ECS, "ListTaskDefinitionFamilies", self.m()))?;
            families.extend(
                r.families()
                    .iter()
                    .filter(|f| f.starts_with(prefix))
                    .cloned(),
            );
            token = r.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let mut tds = Vec::new();
        for fam in families {
            let key = fam.strip_prefix(prefix).unwrap_or(&fam).to_owned();
            let mut token = None;
            loop {
                let r = c
                    .ecs
                    .list_task_definitions()
                    .family_prefix(&fam)
                    .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(aws(ECS, "ListTaskDefinitions", self.m()))?;
                tds.extend(
                    r.task_definition_arns()
                        .iter()
                        .map(|a| (a.clone(), key.clone())),
                );
                token = r.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        let mut secrets = Vec::new();
        let mut token = None;
        loop {
            let r = c
                .secrets
                .list_secrets()
                .filters(
                    aws_sdk_secretsmanager::types::Filter::builder()
                        .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                        .values(&self.inner.secret_prefix)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(aws(SECRETS, "ListSecrets", self.m()))?;
            for s in r.secret_list() {
                if let (Some(name), Some(arn)) = (s.name(), s.arn())
                    && let Some(key) = name.strip_prefix(self.inner.secret_prefix.as_str())
                {
                    secrets.push((key.to_owned(), arn.to_owned()));
                }
            }
            token = r.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok((tds, secrets))
    }

    async fn remove_garbage(&self, g: Garbage) {
        let c = &self.inner.clients;
        for arn in &g.tds {
            tracing::info!(task_definition = %arn, "deregistering an unused task definition");
            if let Err(e) = c
                .ecs
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(aws(ECS, "DeregisterTaskDefinition", self.m()))
            {
                tracing::warn!(task_definition = %arn, error = %e, "cannot deregister");
            }
        }
        for chunk in g.tds.chunks(10) {
            let r = c
                .ecs
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws(ECS, "DeleteTaskDefinitions", self.m()));
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot delete deregistered task definitions (they stay INACTIVE)");
            }
        }
        for arn in &g.secrets {
            tracing::info!(secret = %arn, "deleting an unused secret");
            let r = c
                .secrets
                .delete_secret()
                .secret_id(arn)
                .force_delete_without_recovery(true)
                .send()
                .await
                .map_err(aws(SECRETS, "DeleteSecret", self.m()));
            match r {
                Ok(_) => {}
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => tracing::warn!(secret = %arn, error = %e, "cannot delete secret"),
            }
        }
    }

    /// Sweeps if this process has not listed the backend yet.
    async fn ensure_listed(&self) -> Result<()> {
        if !self.state().listed {
            self.sweep().await?;
        }
        Ok(())
    }

    async fn stop_task(&self, arn: &str, reason: &str) -> Result<bool> {
        let r = self
            .inner
            .clients
            .ecs
            .stop_task()
            .cluster(&self.inner.config.cluster)
            .task(arn)
            .reason(reason)
            .send()
            .await
            .map_err(aws(ECS, "StopTask", self.m()));
        match r {
            Ok(out) => {
                let stopped = out.task().is_some_and(status::is_stopped);
                if let Some(t) = out.task() {
                    let mut st = self.state();
                    if let Some(e) = st.tasks.get_mut(arn) {
                        e.observation = status::observe(t);
                        e.stopped = stopped;
                    }
                }
                Ok(stopped)
            }
            // the task is gone (ECS forgets stopped tasks after about an hour)
            Err(e) if e.is("InvalidParameterException") && e.message().contains("not found") => {
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The task definition ARN for a plan: cached, or registered now (with
    /// its secret).
    async fn ensure_template(&self, plan: &Plan) -> Result<String> {
        let cached = |st: &mut State| {
            let arn = st.templates.get(&plan.key).map(|t| t.td_arn.clone())?;
            if let Some(o) = st.owned_tds.get_mut(&arn) {
                o.last_used = Instant::now();
            }
            Some(arn)
        };
        if let Some(arn) = cached(&mut self.state()) {
            return Ok(arn);
        }
        let _g = self.inner.register.lock().await;
        if let Some(arn) = cached(&mut self.state()) {
            return Ok(arn);
        }
        let secret_arn = match &plan.secret {
            Some(payload) => Some(self.put_secret(&plan.key, payload).await?),
            None => None,
        };
        let c = &self.inner.clients;
        let task = &plan.task;
        let defs = task
            .container_definitions(secret_arn.as_deref())
            .map_err(ProviderError::transient)?;
        let r = c
            .ecs
            .register_task_definition()
            .family(&plan.family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(task.cpu.to_string())
            .memory(task.memory.to_string())
            .set_container_definitions(Some(defs))
            .set_volumes(Some(task.task_volumes()))
            .set_task_role_arn(task.task_role_arn.clone())
            .set_execution_role_arn(task.execution_role_arn.clone())
            .set_ephemeral_storage(task.ephemeral_storage())
            .tags(
                Tag::builder()
                    .key(names::TAG_NODE)
                    .value(&self.inner.config.node_name)
                    .build(),
            )
            .send()
            .await
            .map_err(aws(ECS, "RegisterTaskDefinition", self.m()));
        let arn = match r {
            Ok(out) => out
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .unwrap_or_default()
                .to_owned(),
            // ECS refuses the definition itself: the pod cannot run here as is.
            // (ClientException stays transient: it is as often skylet's
            // configuration, e.g. a missing execution role, as the pod.)
            Err(e) if e.is("InvalidParameterException") => {
                return Err(ProviderError::invalid(
                    "TaskDefinitionRejected",
                    format!("ECS refused the pod's task definition: {}", e.message()),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(family = %plan.family, task_definition = %arn, "registered a task definition");
        let mut st = self.state();
        let now = Instant::now();
        st.templates.insert(
            plan.key.clone(),
            Template {
                td_arn: arn.clone(),
            },
        );
        st.owned_tds.insert(
            arn.clone(),
            Owned {
                id: plan.key.clone(),
                last_used: now,
            },
        );
        if let Some(s) = secret_arn {
            st.owned_secrets.insert(
                plan.key.clone(),
                Owned {
                    id: s,
                    last_used: now,
                },
            );
        }
        Ok(arn)
    }

    /// Stores a template's secret values; returns the secret's ARN.
    async fn put_secret(&self, key: &str, payload: &translate::SecretPayload) -> Result<String> {
        let name = format!("{}{key}", self.inner.secret_prefix);
        let c = &self.inner.clients.secrets;
        let r = c
            .create_secret()
            .name(&name)
            .description("Secret values of pods run by skylet; removed when no task uses them")
            .secret_string(payload.to_json())
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(names::TAG_NODE)
                    .value(&self.inner.config.node_name)
                    .build(),
            )
            .send()
            .await
            .map_err(aws(SECRETS, "CreateSecret", self.m()));
        match r {
            Ok(out) => Ok(out.arn().unwrap_or_default().to_owned()),
            Err(e) if e.is("ResourceExistsException") => {
                let out = c
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(payload.to_json())
                    .send()
                    .await
                    .map_err(aws(SECRETS, "PutSecretValue", self.m()))?;
                Ok(out.arn().unwrap_or_default().to_owned())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The pods of a state: per pod its live task (else its newest), minus
/// finished and released ones.
fn listing_of(st: &State) -> Vec<BackendPod> {
    let mut best: HashMap<&str, &TaskEntry> = HashMap::new();
    for e in st.tasks.values() {
        if !matches!(e.observation, Observation::Pod(_))
            || (e.stopped && st.released.contains(&e.pod.uid))
        {
            continue;
        }
        let better = best.get(e.pod.uid.as_str()).is_none_or(|b| {
            (e.stopped, std::cmp::Reverse(e.seen)) < (b.stopped, std::cmp::Reverse(b.seen))
        });
        if better {
            best.insert(&e.pod.uid, e);
        }
    }
    best.values()
        .filter_map(|e| match &e.observation {
            Observation::Pod(bp) => Some(BackendPod::clone(bp)),
            _ => None,
        })
        .collect()
}

/// Live tasks beyond the first of each pod.
fn duplicates_of(st: &State) -> Vec<String> {
    let mut live: HashMap<&str, Vec<(&String, &TaskEntry)>> = HashMap::new();
    for (arn, e) in &st.tasks {
        if !e.stopped && matches!(e.observation, Observation::Pod(_)) {
            live.entry(&e.pod.uid).or_default().push((arn, e));
        }
    }
    let mut out = Vec::new();
    for (_, mut v) in live {
        if v.len() > 1 {
            // keep the one created first (then by ARN, for stability)
            v.sort_by_key(|(a, e)| (e.created_at, (*a).clone()));
            out.extend(v.into_iter().skip(1).map(|(a, _)| a.clone()));
        }
    }
    out
}

#[derive(Debug, Default, PartialEq)]
struct Garbage {
    tds: Vec<String>,
    secrets: Vec<String>,
}

/// Task definitions no live task uses for `grace`, and secrets of templates
/// that have no task definition left; removed from the state (the caller
/// deletes them in AWS).
fn collect_garbage(st: &mut State, grace: Duration) -> Garbage {
    let now = Instant::now();
    let used: HashSet<&str> = st
        .tasks
        .values()
        .filter(|e| !e.stopped)
        .map(|e| e.td_arn.as_str())
        .collect();
    let mut g = Garbage::default();
    let mut dead = Vec::new();
    for (arn, o) in &mut st.owned_tds {
        if used.contains(arn.as_str()) {
            o.last_used = now;
        } else if now.duration_since(o.last_used) > grace {
            dead.push(arn.clone());
        }
    }
    for arn in dead {
        st.owned_tds.remove(&arn);
        st.templates.retain(|_, t| t.td_arn != arn);
        g.tds.push(arn);
    }
    let live_keys: HashSet<String> = st.owned_tds.values().map(|o| o.id.clone()).collect();
    let mut dead = Vec::new();
    for (key, o) in &mut st.owned_secrets {
        if live_keys.contains(key) {
            o.last_used = now;
        } else if now.duration_since(o.last_used) > grace {
            dead.push(key.clone());
        }
    }
    for key in dead {
        if let Some(o) = st.owned_secrets.remove(&key) {
            st.templates.remove(&key);
            g.secrets.push(o.id);
        }
    }
    g.tds.sort();
    g.secrets.sort();
    g
}

impl Provider for EcsProvider {
    fn name(&self) -> &'static str {
        Ecs::NAME
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
        let td_arn = self.ensure_template(&plan).await?;
        let cfg = &self.inner.config;
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(cfg.subnets.clone()))
            .set_security_groups(
                (!cfg.security_groups.is_empty()).then(|| cfg.security_groups.clone()),
            )
            .assign_public_ip(if cfg.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(ProviderError::transient)?;
        let mut req = self
            .inner
            .clients
            .ecs
            .run_task()
            .cluster(&cfg.cluster)
            .task_definition(&td_arn)
            .count(1)
            .started_by(&self.inner.started_by)
            .client_token(&pod.uid)
            .enable_execute_command(false)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .set_platform_version(cfg.platform_version.clone())
            .set_tags(Some(
                plan.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ));
        if !plan.overrides.is_empty() {
            req = req.overrides(
                TaskOverride::builder()
                    .set_container_overrides(Some(plan.container_overrides()))
                    .build(),
            );
        }
        req = if plan.spot {
            req.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(1)
                    .build()
                    .map_err(ProviderError::transient)?,
            )
        } else {
            req.launch_type(LaunchType::Fargate)
        };
        let out = match req.send().await.map_err(aws(ECS, "RunTask", self.m())) {
            Ok(out) => out,
            Err(e)
                if e.is("InvalidParameterException")
                    && e.message().contains("TaskDefinition is inactive") =>
            {
                // removed under our feet: register again next time
                self.state().templates.remove(&plan.key);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(f) = out.failures().first() {
            return Err(ProviderError::transient(format!(
                "RunTask could not place the task: {} {}",
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default()
            )));
        }
        let mut st = self.state();
        for t in out.tasks() {
            let Some(arn) = t.task_arn() else { continue };
            tracing::info!(pod = %pod, task = %arn, family = %plan.family, "started a task");
            let mut obs = status::observe(t);
            if matches!(obs, Observation::Foreign) {
                // tags not echoed: the pod is known anyway
                obs = Observation::Pod(Box::new(BackendPod {
                    pod: pod.clone(),
                    status: status::pod_status(t),
                }));
            }
            st.tasks.insert(
                arn.to_owned(),
                TaskEntry {
                    pod: pod.clone(),
                    td_arn: td_arn.clone(),
                    containers: t
                        .containers()
                        .iter()
                        .filter_map(|c| c.name().map(str::to_owned))
                        .collect(),
                    stopped: status::is_stopped(t),
                    observation: obs,
                    seen: Instant::now(),
                    created_at: t
                        .created_at()
                        .map_or(i64::MAX, aws_smithy_types::DateTime::secs),
                },
            );
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
        for (arn, e) in entries.iter().filter(|(_, e)| !e.stopped) {
            tracing::info!(pod = %pod, task = %arn, "stopping the pod's task");
            let _ = e;
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

    async fn exec(
        &self,
        _pod: &PodRef,
        _container: &str,
        _command: Vec<String>,
        _io: ExecIo,
    ) -> Result<ExitStatus> {
        Err(ProviderError::Unsupported(
            "exec is not available on the aws-ecs backend: ECS Exec runs through AWS Systems Manager (SSM), \
             which skylet does not configure (tasks start with enableExecuteCommand=false); use `aws ecs execute-command` \
             with a task role that allows ssmmessages:*"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, td: &str, stopped: bool, obs: Option<Observation>) -> TaskEntry {
        let pod = PodRef::new("ns", uid, uid);
        TaskEntry {
            observation: obs.unwrap_or_else(|| {
                Observation::Pod(Box::new(BackendPod {
                    pod: pod.clone(),
                    status: Default::default(),
                }))
            }),
            pod,
            td_arn: td.into(),
            containers: vec![],
            stopped,
            seen: Instant::now(),
            created_at: 0,
        }
    }

    #[test]
    fn listing_hides_finished_and_released_tasks_and_prefers_live_ones() {
        let mut st = State::default();
        st.tasks.insert("t1".into(), entry("a", "td1", false, None));
        st.tasks.insert("t0".into(), entry("a", "td1", true, None));
        st.tasks.insert(
            "t2".into(),
            entry(
                "b",
                "td1",
                true,
                Some(Observation::Finished(PodRef::new("ns", "b", "b"))),
            ),
        );
        st.tasks.insert("t3".into(), entry("c", "td1", true, None));
        st.released.insert("c".into());
        let l = listing_of(&st);
        assert_eq!(
            l.iter().map(|b| b.pod.uid.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(duplicates_of(&st).is_empty());
        let mut later = entry("a", "td1", false, None);
        later.created_at = 10;
        st.tasks.insert("t4".into(), later);
        assert_eq!(
            duplicates_of(&st),
            ["t4"],
            "the later of two live tasks is the duplicate"
        );
    }

    #[test]
    fn garbage_is_what_no_live_task_used_for_the_grace_period() {
        let mut st = State::default();
        let old = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap();
        st.owned_tds.insert(
            "td-used".into(),
            Owned {
                id: "k1".into(),
                last_used: old,
            },
        );
        st.owned_tds.insert(
            "td-unused".into(),
            Owned {
                id: "k2".into(),
                last_used: old,
            },
        );
        st.owned_tds.insert(
            "td-new".into(),
            Owned {
                id: "k3".into(),
                last_used: Instant::now(),
            },
        );
        st.owned_secrets.insert(
            "k1".into(),
            Owned {
                id: "sec1".into(),
                last_used: old,
            },
        );
        st.owned_secrets.insert(
            "k2".into(),
            Owned {
                id: "sec2".into(),
                last_used: old,
            },
        );
        st.templates.insert(
            "k2".into(),
            Template {
                td_arn: "td-unused".into(),
            },
        );
        st.tasks
            .insert("t".into(), entry("a", "td-used", false, None));
        st.tasks
            .insert("s".into(), entry("b", "td-unused", true, None));
        let g = collect_garbage(&mut st, Duration::from_secs(30));
        assert_eq!(
            g,
            Garbage {
                tds: vec!["td-unused".into()],
                secrets: vec!["sec2".into()]
            }
        );
        assert!(st.templates.is_empty(), "a removed template is not reused");
        assert!(st.owned_tds.contains_key("td-used") && st.owned_tds.contains_key("td-new"));
        assert_eq!(
            collect_garbage(&mut st, Duration::from_secs(30)),
            Garbage::default(),
            "nothing twice"
        );
    }
}
