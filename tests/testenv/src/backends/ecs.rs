//! ECS on moto: the tasks the node started, found by `startedBy` and told
//! apart by their `skylet.io/pod-uid` tag; listings paginate (100 a page).
//!
//! moto runs no container: what a container would have logged goes where
//! the awslogs driver writes it, and its CPU use where Container Insights
//! publishes it, through CloudWatch behind a CBOR shim ([`super::cloudwatch`]).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{DesiredStatus, Task, TaskField};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use skylet_ecs::aws_sdk_cloudwatch as cloudwatch;

use super::skylet_bin;
use crate::{
    ControlPlane, Moto, Skylet,
    k8s::{sample, scrape},
    proxy::{Api, FaultProxy, Faults, Upstream},
    suite::{BackendUnderTest, BehindProxy, Instance},
};

/// What skylet writes in a task it stopped for a deleted pod.
const STOPPED_BY_SKYLET: &str = "Deleted by skylet (pod ";

/// ECS on the test binary's moto, CloudWatch behind the CBOR shim.
pub struct Ecs {
    moto: &'static Moto,
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    cloudwatch: cloudwatch::Client,
    /// The shim's URL, skylet's `--ecs-cloudwatch-endpoint-url`.
    cloudwatch_url: String,
}

impl std::fmt::Debug for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecs")
            .field("endpoint", &self.moto.endpoint)
            .finish_non_exhaustive()
    }
}

/// The value of ECS task `t`'s tag `key`.
pub fn task_tag<'a>(t: &'a Task, key: &str) -> Option<&'a str> {
    t.tags()
        .iter()
        .find(|x| x.key() == Some(key))
        .and_then(|x| x.value())
}

fn instance(t: &Task) -> Instance {
    let tag = |k| task_tag(t, k).unwrap_or_default().to_owned();
    Instance {
        uid: tag("skylet.io/pod-uid"),
        namespace: tag("skylet.io/pod-namespace"),
        name: tag("skylet.io/pod-name"),
        ip: skylet_ecs::status::pod_ip(t),
    }
}

impl Ecs {
    /// The tasks `node` started with desired status `desired`, described
    /// with their tags.
    ///
    /// # Panics
    /// If moto does not answer.
    pub async fn tasks(&self, node: &str, desired: DesiredStatus) -> Vec<Task> {
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let r = self
                .ecs
                .list_tasks()
                .cluster(&self.moto.cluster)
                .started_by(skylet_ecs::names::started_by(node))
                .desired_status(desired.clone())
                .set_next_token(next.take())
                .send()
                .await
                .expect("moto ListTasks");
            arns.extend(r.task_arns().iter().cloned());
            match r.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let r = self
                .ecs
                .describe_tasks()
                .cluster(&self.moto.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .expect("moto DescribeTasks");
            out.extend(r.tasks().iter().cloned());
        }
        out
    }

    /// skylet's flags for this moto, its ECS endpoint replaced by `endpoint`.
    fn args(&self, endpoint: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut args = self.moto.skylet_args();
        if let Some(e) = endpoint
            && let Some(i) = args.iter().position(|a| a == "--ecs-endpoint-url")
        {
            args[i + 1] = e.to_owned();
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    fn start_skylet(&self, cp: &ControlPlane, node: &str, args: &[String]) -> Skylet {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Skylet::start_with_env(cp, &skylet_bin(), node, &args, &self.moto.skylet_env())
    }

    /// The running task of pod `uid` on `node`.
    ///
    /// # Panics
    /// If there is none.
    async fn task_of(&self, node: &str, uid: &str) -> Task {
        self.tasks(node, DesiredStatus::Running)
            .await
            .into_iter()
            .find(|t| task_tag(t, "skylet.io/pod-uid") == Some(uid))
            .expect("a task for the pod")
    }

    /// Publishes a minute of container `main` of `task` using `millicores`
    /// and 64 MiB, as Container Insights (enhanced observability) would.
    async fn put_usage(&self, task: &Task, millicores: u64) {
        let arn = |a: Option<&str>| a.expect("a task's ARNs").to_owned();
        let dims = [
            ("ClusterName", self.moto.cluster.clone()),
            (
                "TaskDefinitionFamily",
                skylet_ecs::usage::family(&arn(task.task_definition_arn())).to_owned(),
            ),
            (
                "TaskId",
                skylet_ecs::names::task_id(&arn(task.task_arn())).to_owned(),
            ),
            ("ContainerName", "main".to_owned()),
        ];
        let datum = |metric: &str, value: f64| {
            cloudwatch::types::MetricDatum::builder()
                .metric_name(metric)
                .set_dimensions(Some(
                    dims.iter()
                        .map(|(k, v)| {
                            cloudwatch::types::Dimension::builder()
                                .name(*k)
                                .value(v)
                                .build()
                        })
                        .collect(),
                ))
                .timestamp(cloudwatch::primitives::DateTime::from(SystemTime::now()))
                .value(value)
                .build()
        };
        self.cloudwatch
            .put_metric_data()
            .namespace(skylet_ecs::usage::NAMESPACE)
            .metric_data(datum(
                skylet_ecs::usage::CPU_METRIC,
                millicores as f64 * 1024.0 / 1000.0,
            ))
            .metric_data(datum(skylet_ecs::usage::MEMORY_METRIC, 64.0))
            .send()
            .await
            .expect("CloudWatch PutMetricData");
    }

    /// Puts lines into a container's log stream, as the awslogs driver would.
    async fn put_logs(&self, stream: &str, lines: &[&str]) {
        let group = &self.moto.log_group;
        // it may exist already: a second batch of the same container
        let _ = self
            .logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let now = i64::try_from(now).expect("milliseconds in an i64");
        let n = lines.len();
        let events = lines.iter().enumerate().map(|(i, l)| {
            let ago = i64::try_from((n - i) * 10).expect("a small number");
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now - ago)
                .message(*l)
                .build()
                .expect("a log event")
        });
        self.logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events.collect()))
            .send()
            .await
            .expect("CloudWatch Logs PutLogEvents");
    }
}

impl BackendUnderTest for Ecs {
    const PROVIDER: &'static str = "aws-ecs";
    const SHORT: &'static str = "ecs";
    const READY: bool = false;

    async fn start() -> Self {
        let moto = Moto::shared();
        let cloudwatch_url = super::cloudwatch::start(&moto.endpoint).await.url;
        let shared = moto.sdk_config();
        let cloudwatch = cloudwatch::Client::from_conf(
            cloudwatch::config::Builder::from(&shared)
                .endpoint_url(&cloudwatch_url)
                .build(),
        );
        Self {
            moto,
            ecs: aws_sdk_ecs::Client::new(&shared),
            logs: aws_sdk_cloudwatchlogs::Client::new(&shared),
            cloudwatch,
            cloudwatch_url,
        }
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        let mut args = vec![
            "--ecs-cloudwatch-endpoint-url",
            self.cloudwatch_url.as_str(),
        ];
        args.extend_from_slice(extra);
        self.start_skylet(cp, node, &self.args(None, &args))
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("topology.kubernetes.io/region", self.moto.region.clone()),
            ("topology.kubernetes.io/zone", self.moto.zone.clone()),
        ]
    }

    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        self.tasks(&s.node, DesiredStatus::Running)
            .await
            .iter()
            .map(instance)
            .collect()
    }

    /// Running and stopped tasks (moto keeps STOPPED ones).
    async fn instances_ever(&self, s: &Skylet) -> Vec<Instance> {
        let mut v = self.instances(s).await;
        v.extend(
            self.tasks(&s.node, DesiredStatus::Stopped)
                .await
                .iter()
                .map(instance),
        );
        v
    }

    async fn creates(&self, s: &Skylet) -> u64 {
        let calls = sample(
            &scrape(s),
            &[
                "skylet_backend_api_calls_total",
                "service=\"ecs\"",
                "operation=\"RunTask\"",
            ],
        );
        calls as u64
    }

    /// moto runs no container: the lines go where the awslogs driver
    /// would write them.
    async fn emit_logs(&self, s: &Skylet, pod: &Pod, lines: &[&str]) {
        let uid = pod.metadata.uid.as_deref().expect("the pod's UID");
        let ns = pod
            .metadata
            .namespace
            .as_deref()
            .expect("the pod's namespace");
        let task = self.task_of(&s.node, uid).await;
        let arn = task.task_arn().expect("the task's ARN");
        let stream = skylet_ecs::names::log_stream(ns, "main", arn);
        self.put_logs(&stream, lines).await;
    }

    fn probe_not_run(&self) -> Option<(Value, &'static str)> {
        Some((
            json!({"readinessProbe": {"httpGet": {"port": 8080}}}),
            "readinessProbe.httpGet",
        ))
    }

    fn make_unsupported(&self, pod: &mut Value) -> &'static str {
        pod["spec"]["hostNetwork"] = json!(true);
        "hostNetwork"
    }

    /// moto runs no container and Container Insights is not in moto:
    /// the datapoints go where Container Insights would publish them.
    async fn emit_load(&self, s: &Skylet, pod: &Pod, millicores: u64) {
        let uid = pod.metadata.uid.as_deref().expect("the pod's UID");
        let tasks = self.tasks(&s.node, DesiredStatus::Running).await;
        if let Some(task) = tasks
            .iter()
            .find(|t| task_tag(t, "skylet.io/pod-uid") == Some(uid))
        {
            self.put_usage(task, millicores).await;
        }
    }

    /// The tasks are STOPPED, with skylet's reason.
    async fn check_removed(&self, s: &Skylet, uids: &[String]) {
        let mut tasks = self.tasks(&s.node, DesiredStatus::Running).await;
        tasks.extend(self.tasks(&s.node, DesiredStatus::Stopped).await);
        for uid in uids {
            let of_pod: Vec<&Task> = tasks
                .iter()
                .filter(|t| task_tag(t, "skylet.io/pod-uid") == Some(uid.as_str()))
                .collect();
            assert!(!of_pod.is_empty(), "a task of pod {uid}");
            for t in of_pod {
                assert_eq!(t.last_status(), Some("STOPPED"), "{t:?}");
                assert!(
                    t.stopped_reason()
                        .unwrap_or_default()
                        .starts_with(STOPPED_BY_SKYLET),
                    "{:?}",
                    t.stopped_reason()
                );
            }
        }
    }
}

impl BehindProxy for Ecs {
    const API: Api = Api::Ecs;

    fn proxy(&self, faults: Faults) -> FaultProxy {
        let upstream = Upstream::http(&self.moto.endpoint).expect("moto's endpoint");
        FaultProxy::start(Api::Ecs, upstream, false, None, faults).expect("a fault proxy")
    }

    fn skylet_through(
        &self,
        cp: &ControlPlane,
        node: &str,
        proxy: &FaultProxy,
        extra: &[&str],
    ) -> Skylet {
        self.start_skylet(cp, node, &self.args(Some(&proxy.url()), extra))
    }
}
