#![allow(clippy::unwrap_used)]
//! The aws-ecs backend (issue #4) against the real control plane and moto
//! (an AWS emulator on loopback, started by the harness), through the real
//! aws-sdk-rust: the scheduler places pods on the ECS node, tasks run in
//! moto, status, logs, deletion, secrets and restarts behave as documented.
//!
//! The scenarios every backend shares (deployment, logs, delete, restart,
//! orphans, an unsupported spec) run here through [`Ecs`]'s hooks
//! (`skylet_testenv::backends`, shared with the crash and fault suites;
//! scenarios in `skylet_testenv::suite`, tests `suite::*`); the tests
//! below are ECS's
//! own: task definitions and secrets, Fargate sizes, Spot and task roles,
//! the cost of a sweep.
//!
//! CloudWatch (`kubectl top`) is moto's behind a CBOR shim
//! (tests/testenv/src/backends/cloudwatch.rs: moto speaks only awsQuery/JSON to CloudWatch
//! clients, the SDK only CBOR), and the tests publish the Container
//! Insights datapoints moto does not make ([`BackendUnderTest::emit_load`]).
//!
//! moto cannot show everything (one container per task, no `clientToken`
//! idempotency, RunTask never answers with a
//! `failures[]` entry, so no capacity refusal): the translation, status
//! mapping and failure classification are unit-tested in `providers/ecs`
//! for the rest.

use std::{path::Path, time::Duration};

use aws_sdk_ecs::types::{DesiredStatus, Task};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, Client, api::PostParams};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Moto, Skylet,
    backends::{Ecs, task_tag as tag},
    eventually,
    k8s::{
        deployment, events_of, kubectl, namespace, node_ready, node_template, pods_gone,
        pods_where, running_with_ip, sample, scrape,
    },
    suite::BackendUnderTest,
    unique_name as unique,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// Clients of moto's ECS and Secrets Manager, and ECS as the shared
/// scenarios drive it (its task listings).
struct Aws {
    backend: Ecs,
    ecs: aws_sdk_ecs::Client,
    secrets: aws_sdk_secretsmanager::Client,
    cluster: String,
}

impl Aws {
    async fn new(m: &Moto) -> Self {
        let shared = m.sdk_config();
        Self {
            backend: Ecs::start().await,
            ecs: aws_sdk_ecs::Client::new(&shared),
            secrets: aws_sdk_secretsmanager::Client::new(&shared),
            cluster: m.cluster.clone(),
        }
    }

    /// Every task the node started (RUNNING and STOPPED), described with tags.
    async fn tasks(&self, node: &str) -> Vec<Task> {
        let mut tasks = self.live_tasks(node).await;
        tasks.extend(self.backend.tasks(node, DesiredStatus::Stopped).await);
        tasks
    }

    async fn live_tasks(&self, node: &str) -> Vec<Task> {
        self.backend.tasks(node, DesiredStatus::Running).await
    }

    async fn secret_names(&self, node: &str) -> Vec<String> {
        let r = self
            .secrets
            .list_secrets()
            .filters(
                aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                    .values(skylet_ecs::names::secret_prefix(node))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        r.secret_list()
            .iter()
            .filter_map(|s| s.name().map(str::to_owned))
            .collect()
    }
}

skylet_testenv::backend_suite!(Ecs =>
    probes_restarts_and_previous_logs_follow_the_backend,
    deployment_runs_one_instance_per_pod_and_delete_removes_them,
    logs_plain_tail_timestamps_limit_and_follow,
    restart_adopts_and_the_sweep_removes_orphans,
    unsupported_spec_fails_the_pod_with_an_event,
    top_and_cpu_autoscaling_follow_the_backend_load,
    active_deadline_fails_the_pod_and_stops_its_instance,
    changes_after_creation_apply_or_say_why_not,
);

fn start(cp: &ControlPlane, moto: &Moto, node: &str, extra: &[&str]) -> Skylet {
    let mut args = moto.skylet_args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Skylet::start_with_env(cp, Path::new(BIN), node, &args, &moto.skylet_env())
}

fn template(node: &str, app: &str) -> serde_json::Value {
    node_template(node, app, "sleep 3600")
}

/// `n` pods of `app` in phase Running with a pod IP (moto never reports
/// containers as started, so they are not Ready).
async fn running_pods(
    client: &Client,
    ns: &str,
    app: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Pod> {
    pods_where(
        client,
        ns,
        app,
        n,
        timeout,
        "Running with an IP",
        running_with_ip,
    )
    .await
}

#[tokio::test]
async fn ecs_deployment_shares_a_task_definition_keeps_secrets_out_and_cleans_up() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let aws = Aws::new(moto).await;
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-deploy");
    let s = start(cp, moto, node, &["--ecs-gc-grace", "2"]);
    let n = node_ready(&client, node).await;
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["skylet.io/provider"], "aws-ecs");
    assert_eq!(labels["topology.kubernetes.io/region"], "us-east-1");
    assert_eq!(labels["topology.kubernetes.io/zone"], "us-east-1a");

    let ns = &namespace(&client, "ecs-deploy").await;
    let password = format!("hunter2-{}", unique("pw"));
    let sec: Secret =
        serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"pw": password}}))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sec)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "conf"}, "data": {"app.yaml": "port: 80\n"}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let mut t = template(node, "web");
    t["spec"]["containers"][0]["env"] = json!([
        {"name": "MODE", "value": "prod"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
    ]);
    t["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "conf", "mountPath": "/etc/app"}]);
    t["spec"]["volumes"] = json!([{"name": "conf", "configMap": {"name": "conf"}}]);
    deployment(&client, ns, "web", 2, t).await;
    let pods = running_pods(&client, ns, "web", 2, Duration::from_secs(90)).await;

    // one task per pod, tagged, sharing one task definition
    let tasks = aws.live_tasks(node).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for p in &pods {
        let uid = p.metadata.uid.as_deref().unwrap();
        let task = tasks
            .iter()
            .find(|t| tag(t, "skylet.io/pod-uid") == Some(uid))
            .expect("a task for the pod");
        assert_eq!(tag(task, "skylet.io/pod-name"), p.metadata.name.as_deref());
        assert_eq!(tag(task, "skylet.io/pod-namespace"), Some(ns.as_str()));
        assert_eq!(tag(task, "skylet.io/node"), Some(node.as_str()));
        let ip = skylet_ecs::status::pod_ip(task);
        assert_eq!(
            p.status.as_ref().unwrap().pod_ip,
            ip,
            "the pod IP is the task's ENI address"
        );
    }
    assert_eq!(
        tasks[0].task_definition_arn(),
        tasks[1].task_definition_arn(),
        "replicas share a task definition"
    );
    let td_arn = tasks[0].task_definition_arn().unwrap().to_owned();
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(&td_arn)
        .send()
        .await
        .unwrap();
    let td = td.task_definition().unwrap();
    assert!(td.family().unwrap().starts_with("skylet-"));
    assert_eq!(
        (td.cpu(), td.memory()),
        (Some("256"), Some("512")),
        "250m/256Mi rounds to the smallest Fargate size"
    );
    let text = format!("{td:?}");
    assert!(
        !text.contains(&password),
        "the Secret value is not in the task definition"
    );
    let main = td
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some("main"))
        .unwrap();
    assert!(
        main.environment()
            .iter()
            .any(|e| e.name() == Some("MODE") && e.value() == Some("prod"))
    );
    assert!(
        !main
            .environment()
            .iter()
            .any(|e| e.name() == Some("POD_NAME")),
        "per-pod values travel in overrides"
    );
    let secret_ref = main
        .secrets()
        .iter()
        .find(|x| x.name() == "PASSWORD")
        .expect("PASSWORD from Secrets Manager");
    assert!(
        secret_ref
            .value_from()
            .starts_with("arn:aws:secretsmanager:"),
        "{}",
        secret_ref.value_from()
    );
    assert!(
        td.container_definitions()
            .iter()
            .any(|c| c.name() == Some(skylet_ecs::names::FILES_CONTAINER))
    );
    let secret_arn = secret_ref.value_from().split(":e.").next().unwrap();
    let stored = aws
        .secrets
        .get_secret_value()
        .secret_id(secret_arn)
        .send()
        .await
        .unwrap();
    assert!(
        stored.secret_string().unwrap().contains(&password),
        "the value is in Secrets Manager"
    );
    assert_eq!(
        aws.secret_names(node).await.len(),
        1,
        "one secret for the template"
    );

    // exec without ECS Exec is refused, saying how to turn it on
    // (logs: the shared scenario; exec itself: tests/ecs_exec.rs)
    let pod = pods[0].metadata.name.clone().unwrap();
    let (ok, _, err) = kubectl(cp, &["exec", "-n", ns, &pod, "--", "true"]);
    assert!(
        !ok && err.contains("ECS Exec is off") && err.contains("skylet.io/ecs-exec"),
        "{err}"
    );

    let m = scrape(&s);
    assert!(
        sample(
            &m,
            &[
                "skylet_backend_api_calls_total",
                "service=\"ecs\"",
                "operation=\"RunTask\""
            ]
        ) >= 2.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            &[
                "skylet_backend_api_calls_total",
                "service=\"ecs\"",
                "operation=\"RegisterTaskDefinition\""
            ]
        ) == 1.0,
        "{m}"
    );

    // delete: tasks stopped, pods gone, task definition and secret removed
    let (ok, _, err) = kubectl(cp, &["delete", "deployment", "web", "-n", ns]);
    assert!(ok, "{err}");
    pods_gone(&client, ns, "web", Duration::from_secs(60)).await;
    let all = aws.tasks(node).await;
    assert_eq!(all.len(), 2);
    for t in &all {
        assert_eq!(t.last_status(), Some("STOPPED"));
        assert!(
            t.stopped_reason()
                .unwrap_or_default()
                .starts_with("Deleted by skylet (pod "),
            "{:?}",
            t.stopped_reason()
        );
    }
    eventually(
        "task definition and secret removed",
        Duration::from_secs(60),
        || async {
            let td = aws
                .ecs
                .describe_task_definition()
                .task_definition(&td_arn)
                .send()
                .await;
            let td_gone = td.map_or(true, |o| {
                o.task_definition()
                    .and_then(|t| t.status())
                    .is_some_and(|s| s.as_str() != "ACTIVE")
            });
            (td_gone && aws.secret_names(node).await.is_empty()).then_some(())
        },
    )
    .await;
    assert!(
        !s.log_text().contains(&password),
        "skylet never logs a Secret value"
    );
}

#[tokio::test]
async fn ecs_pod_larger_than_any_fargate_size_fails_with_the_valid_sizes() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-big");
    let _s = start(
        cp,
        moto,
        node,
        &["--ecs-capacity", "cpu=64,memory=1Ti,pods=100"],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-big").await;
    let mut t = template(node, "big");
    t["metadata"]["name"] = json!("big");
    t["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "2", "memory": "200Gi"}});
    let pod: Pod = serde_json::from_value(t).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = eventually("the pod to fail", Duration::from_secs(60), || async {
        let s = pods.get("big").await.ok()?.status?;
        (s.phase.as_deref() == Some("Failed")).then_some(s)
    })
    .await;
    assert_eq!(status.reason.as_deref(), Some("ResourcesTooLarge"));
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("16 vCPU with 32-120 GiB")
    );
}

#[tokio::test]
async fn ecs_annotations_choose_spot_capacity_and_the_task_role() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let aws = Aws::new(moto).await;
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-spot");
    let _s = start(cp, moto, node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-spot").await;
    let role = "arn:aws:iam::123456789012:role/skylet-task-reports";
    let mut t = template(node, "spot");
    t["metadata"]["annotations"] =
        json!({"skylet.io/aws-capacity": "spot", "skylet.io/aws-task-role-arn": role});
    deployment(&client, ns, "spot", 1, t).await;
    running_pods(&client, ns, "spot", 1, Duration::from_secs(60)).await;
    let task = aws.live_tasks(node).await.pop().unwrap();
    assert_eq!(task.capacity_provider_name(), Some("FARGATE_SPOT"));
    assert_ne!(
        task.launch_type(),
        Some(&aws_sdk_ecs::types::LaunchType::Fargate),
        "a capacity provider strategy, not a launch type"
    );
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(td.task_definition().unwrap().task_role_arn(), Some(role));
}

/// Issue #16: an exec readiness probe is the container's ECS health check
/// (clamped to ECS's ranges); the exec liveness probe it leaves out gets a
/// Warning Event saying so.
#[tokio::test]
async fn ecs_exec_probes_become_the_container_health_check() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let aws = Aws::new(moto).await;
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-probe");
    let _s = start(cp, moto, node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-probe").await;
    let mut t = template(node, "probed");
    t["spec"]["containers"][0]["readinessProbe"] = json!({"exec": {"command": ["cat", "/tmp/ready"]},
        "initialDelaySeconds": 7, "periodSeconds": 15, "failureThreshold": 4});
    t["spec"]["containers"][0]["livenessProbe"] = json!({"exec": {"command": ["true"]}});
    deployment(&client, ns, "probed", 1, t).await;
    let pod = running_pods(&client, ns, "probed", 1, Duration::from_secs(60))
        .await
        .remove(0);
    let task = aws.live_tasks(node).await.pop().unwrap();
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    let main = td
        .task_definition()
        .unwrap()
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some("main"))
        .unwrap();
    let hc = main.health_check().expect("a health check");
    assert_eq!(hc.command(), ["CMD", "cat", "/tmp/ready"]);
    assert_eq!(
        (hc.interval(), hc.timeout(), hc.retries(), hc.start_period()),
        (Some(15), Some(2), Some(4), Some(7)),
        "periodSeconds, timeoutSeconds (1, ECS's minimum is 2), failureThreshold, initialDelaySeconds"
    );
    let name = pod.metadata.name.clone().unwrap();
    eventually(
        "a Warning Event for the liveness probe left out",
        Duration::from_secs(30),
        || async {
            events_of(&client, ns, &name).await.into_iter().find(|e| {
                e.reason.as_deref() == Some("ProbeNotSupported")
                    && e.message.as_deref().is_some_and(|m| {
                        m.contains(
                            "livenessProbe is not run: an ECS container has one health check",
                        )
                    })
            })
        },
    )
    .await;
}

#[tokio::test]
async fn ecs_sweep_of_300_pods_costs_at_most_3_describe_tasks() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let aws = Aws::new(moto).await;
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-300");
    let s = start(
        cp,
        moto,
        node,
        &["--ecs-capacity", "cpu=1000,memory=4Ti,pods=1000"],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-300").await;
    let started = std::time::Instant::now();
    deployment(&client, ns, "wide", 300, template(node, "wide")).await;
    running_pods(&client, ns, "wide", 300, Duration::from_secs(300)).await;
    let up = started.elapsed();
    assert_eq!(aws.live_tasks(node).await.len(), 300);

    let before = scrape(&s);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after = scrape(&s);
    let delta = |needles: &[&str]| sample(&after, needles) - sample(&before, needles);
    let sweeps = delta(&["skylet_provider_call_duration_seconds_count", "op=\"list\""]);
    let describes = delta(&[
        "skylet_backend_api_calls_total",
        "service=\"ecs\"",
        "operation=\"DescribeTasks\"",
    ]);
    let lists = delta(&[
        "skylet_backend_api_calls_total",
        "service=\"ecs\"",
        "operation=\"ListTasks\"",
    ]);
    eprintln!(
        "300 pods Running in {up:?}; {sweeps} sweeps cost {describes} DescribeTasks and {lists} ListTasks"
    );
    assert!(sweeps >= 2.0, "sweeps ran: {sweeps}");
    // the last sweep's own account, and the counters (a sweep may straddle
    // either scrape, hence one sweep of slack)
    assert_eq!(sample(&after, &["skylet_backend_pods"]), 300.0);
    assert_eq!(
        sample(
            &after,
            &[
                "skylet_backend_sweep_api_calls{",
                "service=\"ecs\"",
                "operation=\"DescribeTasks\""
            ]
        ),
        3.0
    );
    assert!(
        describes <= 3.0 * (sweeps + 1.0),
        "{describes} DescribeTasks in {sweeps} sweeps"
    );
    assert!(
        lists <= 2.0 * (sweeps + 1.0),
        "{lists} ListTasks in {sweeps} sweeps (one page each for RUNNING and STOPPED)"
    );

    let (ok, _, err) = kubectl(cp, &["delete", "deployment", "wide", "-n", ns]);
    assert!(ok, "{err}");
    pods_gone(&client, ns, "wide", Duration::from_secs(180)).await;
}

/// A moto server of its own whose ECS enforces ECS's and Fargate's rate
/// limits with `limits` changed (`SKYLET_MOTO_RATE_LIMITS`,
/// hack/moto_limits.py); stopped when the test binary exits.
fn moto_with_limits(limits: &str) -> (Moto, String) {
    let name = unique("limits");
    let out = std::process::Command::new(skylet_testenv::hack_dir().join("moto"))
        .args(["up", &name, "--owner-pid", &std::process::id().to_string()])
        .env("SKYLET_MOTO_RATE_LIMITS", format!("published,{limits}"))
        .output()
        .expect("hack/moto runs");
    assert!(
        out.status.success(),
        "hack/moto up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), name)
}

/// moto's `GET /_skylet/limits`.
fn moto_limits(m: &Moto) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-fsS", &format!("{}/_skylet/limits", m.endpoint)])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue #19: with ECS's and Fargate's rate limits enforced by moto (small
/// launch and RunTask/StopTask buckets, so the burst outlasts them) and
/// skylet's buckets of the same sizes, a burst of pods all run and all go
/// with fewer than 1% of skylet's ECS calls throttled, and each pod costs
/// one RunTask and at most one StopTask (status from the sweep).
#[tokio::test]
async fn ecs_a_burst_kept_under_the_rate_limits_runs_without_throttling() {
    let cp = ControlPlane::shared();
    let changes = "fargate-launch=8:2,cluster-resource-modify=10:4";
    let (moto, name) = moto_with_limits(changes);
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-limits");
    let s = start(
        cp,
        &moto,
        node,
        &[
            "--ecs-capacity",
            "cpu=1000,memory=4Ti,pods=1000",
            "--ecs-rate-limit",
            changes,
        ],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-limits").await;
    let pods = 40;
    deployment(&client, ns, "burst", pods, template(node, "burst")).await;
    running_pods(&client, ns, "burst", 40, Duration::from_secs(180)).await;
    let (ok, _, err) = kubectl(cp, &["delete", "deployment", "burst", "-n", ns]);
    assert!(ok, "{err}");
    pods_gone(&client, ns, "burst", Duration::from_secs(180)).await;

    let limits = moto_limits(&moto);
    // the buckets were in the way: every task took a launch token
    assert_eq!(
        limits["buckets"]["fargate-launch"]["admitted"], 40,
        "{limits}"
    );
    let m = scrape(&s);
    let ecs = |extra: &[&str]| {
        let mut needles = vec!["skylet_backend_api_requests_total", "service=\"ecs\""];
        needles.extend_from_slice(extra);
        skylet_testenv::k8s::sample_sum(&m, &needles)
    };
    let (throttled, all) = (ecs(&["outcome=\"throttled\""]), ecs(&[]));
    assert!(
        throttled * 100.0 < all,
        "throttled {throttled} of {all} ECS requests: {limits}"
    );
    // one RunTask per pod, at most two StopTasks (skylet's calls: a
    // throttled attempt's retry is the same call)
    let calls = |op: &str| {
        skylet_testenv::k8s::sample_sum(
            &m,
            &[
                "skylet_backend_api_calls_total",
                "service=\"ecs\"",
                &format!("operation=\"{op}\""),
            ],
        )
    };
    assert_eq!(calls("RunTask"), 40.0, "{m}");
    assert!(calls("StopTask") <= 80.0, "{m}");
    let _ = std::process::Command::new(skylet_testenv::hack_dir().join("moto"))
        .args(["down", &name])
        .output();
}

/// Issue #16: an image pull Secret becomes the container's
/// `repositoryCredentials`: a Secrets Manager secret of the node holding
/// `{"username", "password"}` for the image's registry, tagged with the
/// node and the pull Secret, its value never in skylet's log, removed
/// once no task uses it. A task ECS stops for a failure (here: an image
/// that cannot be pulled) is a Warning Event on the pod with ECS's reason.
#[tokio::test]
async fn ecs_pull_secrets_are_repository_credentials_and_failures_are_events() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let aws = Aws::new(moto).await;
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-pull");
    let s = start(cp, moto, node, &["--ecs-gc-grace", "2"]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-pull").await;
    let password = format!("s3cret-{}", unique("pw"));
    let config =
        json!({"auths": {"registry.example.com": {"username": "robot", "password": password}}});
    let regcred: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &regcred)
        .await
        .unwrap();
    let mut t = template(node, "priv");
    t["spec"]["containers"][0]["image"] = json!("registry.example.com/team/app:1");
    t["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "priv", "labels": {"app": "priv"}}, "spec": t["spec"]}),
    )
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    running_pods(&client, ns, "priv", 1, Duration::from_secs(90)).await;

    let task = aws.live_tasks(node).await.remove(0);
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().unwrap())
        .send()
        .await
        .unwrap();
    let main = td
        .task_definition()
        .unwrap()
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some("main"))
        .unwrap()
        .clone();
    let arn = main
        .repository_credentials()
        .expect("repositoryCredentials")
        .credentials_parameter()
        .to_owned();
    assert!(
        !format!("{td:?}").contains(&password),
        "the password is not in the task definition"
    );
    let stored = aws
        .secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    assert_eq!(doc, json!({"username": "robot", "password": password}));
    let described = aws
        .secrets
        .describe_secret()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    let tags: Vec<(String, String)> = described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("skylet.io/node".into(), node.clone())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("skylet.io/pull-secret".into(), format!("{ns}/regcred"))),
        "{tags:?}"
    );
    let name = described.name().unwrap_or_default().to_owned();
    assert!(
        name.starts_with(&skylet_ecs::names::secret_prefix(node)) && name.contains("-pull-"),
        "{name}"
    );

    // ECS stops the task: the image cannot be pulled
    let why = "CannotPullContainerError: pull access denied for registry.example.com/team/app";
    aws.ecs
        .stop_task()
        .cluster(&aws.cluster)
        .task(task.task_arn().unwrap())
        .reason(why)
        .send()
        .await
        .unwrap();
    let note = eventually(
        "a Warning Event ErrImagePull with ECS's reason",
        Duration::from_secs(60),
        || async {
            events_of(&client, ns, "priv")
                .await
                .into_iter()
                .find_map(|e| {
                    (e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("ErrImagePull"))
                    .then(|| e.message.unwrap_or_default())
                })
        },
    )
    .await;
    assert!(note.contains(why), "{note}");

    // the pod deleted: the credentials go with the template
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete("priv", &Default::default())
        .await
        .unwrap();
    pods_gone(&client, ns, "priv", Duration::from_secs(60)).await;
    eventually(
        "the registry credentials removed",
        Duration::from_secs(60),
        || async {
            (!aws
                .secret_names(node)
                .await
                .iter()
                .any(|n| n.contains("-pull-")))
            .then_some(())
        },
    )
    .await;
    assert!(
        !s.log_text().contains(&password),
        "the password is never in skylet's log"
    );
}
