#![allow(clippy::unwrap_used)]
//! The azure-aci backend (issue #7) against the real control plane and
//! skylet's ACI emulator (providers/aci-emulator: ARM semantics, every body
//! checked against the official spec), through skylet's own ARM client with
//! a real Entra ID client-secret sign-in: the scheduler places pods on the
//! ACI node, container groups run in the emulator, status, Events, logs,
//! exec, deletion, secrets, restarts, sweep cost and throttling behave as
//! documented.
//!
//! The scenarios every backend shares (deployment, logs, delete, restart,
//! orphans, an unsupported spec, a quota used up) run here through
//! [`Aci`]'s hooks (`skylet_testenv::backends`, shared with the crash and
//! fault suites; scenarios in `skylet_testenv::suite`, tests `suite::*`); the
//! tests below are ACI's own: secure values, ACI events, attach, exec
//! quoting, the cost of a sweep and a 429 storm, and a burst kept under
//! ARM's and ACI's rate limits by skylet's own buckets (#19).

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use skylet_aci_emulator::Config as EmulatorConfig;
use skylet_testenv::{
    ControlPlane,
    backends::Aci,
    eventually,
    k8s::{
        deployment, events_of, kubectl, namespace, node_ready, node_template, pods_gone,
        pods_where, running_ready, running_with_ip, sample, sample_sum, scrape,
    },
    suite::BackendUnderTest,
    unique_name as unique,
};

skylet_testenv::backend_suite!(Aci =>
    probes_restarts_and_previous_logs_follow_the_backend,
    deployment_runs_one_instance_per_pod_and_delete_removes_them,
    logs_plain_tail_timestamps_limit_and_follow,
    restart_adopts_and_the_sweep_removes_orphans,
    unsupported_spec_fails_the_pod_with_an_event,
    capacity_refusal_fails_owned_pods_taints_the_node_and_keeps_bare_pods_pending,
    top_and_cpu_autoscaling_follow_the_backend_load,
    active_deadline_fails_the_pod_and_stops_its_instance,
    changes_after_creation_apply_or_say_why_not,
);

/// A pod with a port, so ACI gives its group an IP.
fn template(node: &str, app: &str, script: &str) -> serde_json::Value {
    let mut t = node_template(node, app, script);
    t["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_deployment_keeps_secrets_in_secure_values_with_events_attach_exec_and_cleanup() {
    let cp = ControlPlane::shared();
    let az = Aci::start().await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-deploy");
    let s = az.skylet(cp, node, &[]);
    let n = node_ready(&client, node).await;
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["skylet.io/provider"], "azure-aci");
    assert_eq!(
        labels["topology.kubernetes.io/region"],
        az.config().location
    );
    let capacity = n.status.unwrap().capacity.unwrap();
    assert!(
        capacity.contains_key("cpu") && capacity.contains_key("pods"),
        "{capacity:?}"
    );

    let ns = &namespace(&client, "aci-deploy").await;
    let password = format!("hunter2-{}", unique("pw"));
    let sec: Secret =
        serde_json::from_value(json!({"metadata": {"name": "db"}, "stringData": {"pw": password}}))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sec)
        .await
        .unwrap();
    let mut t = template(
        node,
        "web",
        "echo hello from aci; echo second line; sleep 2; echo later; sleep 3600",
    );
    t["spec"]["containers"][0]["env"] = json!([
        {"name": "MODE", "value": "prod"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
    ]);
    deployment(&client, ns, "web", 2, t).await;
    let pods = pods_where(
        &client,
        ns,
        "web",
        2,
        Duration::from_secs(90),
        "Running and Ready with an IP",
        running_ready,
    )
    .await;

    // one group per pod, tagged with its UID and the node
    let groups = az.groups_of(node);
    assert_eq!(groups.len(), 2, "{groups:#?}");
    for p in &pods {
        let uid = p.metadata.uid.as_deref().unwrap();
        let g = groups
            .iter()
            .find(|g| g["tags"]["skylet-pod-uid"] == uid)
            .unwrap_or_else(|| panic!("no group for {uid}"));
        assert_eq!(g["tags"]["skylet-pod-namespace"], ns.as_str());
        assert_eq!(
            g["tags"]["skylet-pod-name"],
            p.metadata.name.as_deref().unwrap()
        );
        let env = &g["properties"]["containers"][0]["properties"]["environmentVariables"];
        let pw = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "PASSWORD")
            .unwrap();
        assert_eq!(
            pw["secureValue"],
            password.as_str(),
            "Secret values go into secureValue"
        );
        assert!(pw.get("value").is_none(), "never into value: {pw}");
        assert!(p.status.as_ref().unwrap().pod_ip.is_some());
    }
    // the Secret is in no other place of any request skylet sent, nor in its log
    for body in az.emulator().requests("ContainerGroups_CreateOrUpdate") {
        let text = body.to_string();
        assert_eq!(
            text.matches(&password).count(),
            1,
            "the password once, as secureValue: {text}"
        );
    }
    assert!(
        !s.log_text().contains(&password),
        "skylet logged a Secret value"
    );

    // ACI instance-view events reach the pod, once each
    let pod = pods[0].metadata.name.clone().unwrap();
    let evs = eventually("ACI events on the pod", Duration::from_secs(30), || async {
        let evs = events_of(&client, ns, &pod).await;
        let from_aci: Vec<Event> = evs
            .into_iter()
            .filter(|e| e.reporting_component.as_deref() == Some("skylet-aci"))
            .collect();
        from_aci
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started"))
            .then_some(from_aci)
    })
    .await;
    for reason in ["Pulling", "Pulled", "Started"] {
        let n = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>();
        assert_eq!(n, 1, "{reason} recorded once: {evs:#?}");
    }

    // attach: the main process's output from now on
    let tick = "tick";
    deployment(
        &client,
        ns,
        tick,
        1,
        template(node, tick, "while true; do echo tick; sleep 1; done"),
    )
    .await;
    let tp = pods_where(
        &client,
        ns,
        tick,
        1,
        Duration::from_secs(60),
        "Running",
        running_with_ip,
    )
    .await;
    let tname = tp[0].metadata.name.clone().unwrap();
    let mut attach = cp
        .kubectl()
        .args(["attach", "-n", ns, &tname, "-c", "main"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = tokio::task::spawn_blocking({
        let stdout = attach.stdout.take().unwrap();
        move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find(|l| l == "tick")
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("kubectl attach streams output")
        .unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert_eq!(first.as_deref(), Some("tick"));
    Api::<Deployment>::namespaced(client.clone(), ns)
        .delete(tick, &DeleteParams::default())
        .await
        .unwrap();

    // exec: arguments stay apart (two spaces survive), the output comes back
    let (ok, out, err) = kubectl(cp, &["exec", "-n", ns, &pod, "--", "echo", "a  b", "c"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "a  b c");
    let (ok, out, err) = kubectl(cp, &["exec", "-n", ns, &pod, "--", "hostname"]);
    assert!(ok, "{err}");
    let group = az
        .groups_of(node)
        .into_iter()
        .find(|g| g["tags"]["skylet-pod-name"] == pod.as_str())
        .unwrap();
    assert_eq!(out.trim_end(), group["name"].as_str().unwrap());
    // exec: the command's exit code reaches kubectl, though ACI reports none
    // (skylet runs it under /bin/sh and cuts the code's marker out)
    let run = cp
        .kubectl()
        .args([
            "exec",
            "-n",
            ns,
            &pod,
            "--",
            "sh",
            "-c",
            "echo failing; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "failing\n");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("command terminated with exit code 3"),
        "{run:?}"
    );

    // delete: pods and groups go
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deps.delete("web", &DeleteParams::default()).await.unwrap();
    pods_gone(&client, ns, "web", Duration::from_secs(60)).await;
    eventually(
        "no group left for the node",
        Duration::from_secs(30),
        || async { az.groups_of(node).is_empty().then_some(()) },
    )
    .await;
    assert!(
        az.calls("ContainerGroups_Stop") >= 3,
        "graceful delete stops first: {:?}",
        az.emulator().stats()
    );
    assert_eq!(
        az.emulator().stats().invalid_responses,
        0,
        "every emulator answer matched the spec"
    );
}

/// Issue #16: a native sidecar (an init container with `restartPolicy:
/// Always`) runs as a regular container of the group; the pod is
/// Initialized and Ready once it and the app run, and the sidecar's status
/// is among the init containers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_native_sidecar_runs_as_a_container_of_the_group() {
    let cp = ControlPlane::shared();
    let az = Aci::start().await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-sidecar");
    let _s = az.skylet(cp, node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-sidecar").await;
    let mut t = template(node, "side", "echo app; sleep 3600");
    t["spec"]["initContainers"] = json!([
        {"name": "setup", "image": "busybox", "command": ["sh", "-c", "echo setup"]},
        {"name": "proxy", "image": "busybox", "restartPolicy": "Always",
         "command": ["sh", "-c", "echo proxy; sleep 3600"],
         "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}
    ]);
    deployment(&client, ns, "side", 1, t).await;
    let pods = pods_where(
        &client,
        ns,
        "side",
        1,
        Duration::from_secs(90),
        "Running and Ready with an IP",
        running_ready,
    )
    .await;
    let status = pods[0].status.clone().unwrap();
    let initialized = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Initialized")
        .map(|c| c.status.clone());
    assert_eq!(initialized.as_deref(), Some("True"));
    let proxy = status
        .init_container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "proxy")
        .expect("the sidecar's status");
    assert!(
        proxy.state.as_ref().is_some_and(|s| s.running.is_some()),
        "{proxy:?}"
    );
    let groups = az.groups_of(node);
    let g = &groups[0]["properties"];
    let names = |k: &str| -> Vec<String> {
        g[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names("containers"), ["main", "proxy"]);
    assert_eq!(names("initContainers"), ["setup"]);
    az.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_300_pods_cost_one_list_call_per_sweep_and_survive_a_429_storm() {
    let cp = ControlPlane::shared();
    // pages of 100: one ListByResourceGroup is 3 page requests for 300 groups
    let az = Aci::start().await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-scale");
    // a subscription whose ACI create and delete limits were raised (the
    // defaults, 100 per 5 minutes, would spread 300 creates and 300
    // deletes over 10 minutes each)
    let s = az.skylet(
        cp,
        node,
        &[
            "--aci-capacity",
            "cpu=1000,memory=4Ti,pods=1000",
            "--aci-rate-limit",
            "creates-5m=off,creates-1h=off,deletes-5m=off,deletes-1h=off",
        ],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-scale").await;
    let mut t = template(node, "many", "sleep 3600");
    t["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}});
    deployment(&client, ns, "many", 300, t).await;
    // a storm of 429s while the creates run
    eventually("creates started", Duration::from_secs(60), || async {
        (az.calls("ContainerGroups_CreateOrUpdate") >= 20).then_some(())
    })
    .await;
    az.emulator().throttle(60, Duration::from_secs(1));
    pods_where(
        &client,
        ns,
        "many",
        300,
        Duration::from_secs(300),
        "Running with an IP",
        running_with_ip,
    )
    .await;
    assert_eq!(az.groups_of(node).len(), 300);
    assert!(
        az.emulator().stats().throttled >= 60,
        "{:?}",
        az.emulator().stats()
    );
    let m = scrape(&s);
    assert!(
        sample_sum(
            &m,
            &[
                "skylet_backend_api_requests_total",
                "service=\"arm\"",
                "outcome=\"throttled\""
            ]
        ) >= 1.0,
        "throttling is counted: {m}"
    );

    // steady state: per sweep (every 2 s) one list of 3 pages, and no per-pod GET
    let (lists, gets) = (
        az.calls("ContainerGroups_ListByResourceGroup"),
        az.calls("ContainerGroups_Get"),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lists = az.calls("ContainerGroups_ListByResourceGroup") - lists;
    let gets = az.calls("ContainerGroups_Get") - gets;
    assert_eq!(gets, 0, "status comes from the list, never one GET per pod");
    let sweeps = lists as f64 / 3.0;
    assert!(
        (3.0..=7.0).contains(&sweeps),
        "one list (3 pages) per 2 s sweep over 10 s, got {lists} page requests"
    );
    assert_eq!(
        sample(
            &scrape(&s),
            &[
                "skylet_backend_sweep_api_calls",
                "service=\"arm\"",
                "operation=\"ContainerGroups_ListByResourceGroup\""
            ]
        ),
        3.0,
        "the gauge agrees"
    );
    node_ready(&client, node).await;

    Api::<Deployment>::namespaced(client.clone(), ns)
        .delete("many", &DeleteParams::default())
        .await
        .unwrap();
    pods_gone(&client, ns, "many", Duration::from_secs(240)).await;
    eventually("no group left", Duration::from_secs(60), || async {
        az.groups_of(node).is_empty().then_some(())
    })
    .await;
}

/// Issue #19: with ARM's and ACI's rate limits enforced by the emulator
/// (small buckets, so the burst outlasts them) and skylet's buckets of the
/// same sizes, a burst of pods all run and all go with fewer than 1% of
/// skylet's calls throttled, and a pod's lifecycle costs a bounded number
/// of calls: one PUT, a Stop and a Delete, no GET (status and the end of a
/// deletion come from the sweep's list).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_a_burst_kept_under_the_rate_limits_runs_without_throttling() {
    use skylet_aci_emulator::limits::{Covers, RateLimit};
    let cp = ControlPlane::shared();
    let az = Aci::start_with(EmulatorConfig {
        container_group_quota: 1000,
        core_quota: 1000,
        rate_limits: vec![
            RateLimit::new("reads", Covers::Reads, 250, 25.0),
            RateLimit::new("writes", Covers::Writes, 10, 4.0),
            RateLimit::new("deletes", Covers::Deletes, 10, 4.0),
            RateLimit::new("creates-5m", Covers::GroupCreates, 8, 2.0),
            RateLimit::new("deletes-5m", Covers::GroupDeletes, 8, 2.0),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-limits");
    let s = az.skylet(
        cp,
        node,
        &[
            "--aci-capacity",
            "cpu=1000,memory=4Ti,pods=1000",
            "--aci-rate-limit",
            "writes=10:4,deletes=10:4,creates-5m=8:2,creates-1h=off,deletes-5m=8:2,deletes-1h=off",
        ],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-limits").await;
    let pods: i32 = 40;
    let mut t = template(node, "burst", "sleep 3600");
    t["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}});
    deployment(&client, ns, "burst", pods, t).await;
    pods_where(
        &client,
        ns,
        "burst",
        usize::try_from(pods).unwrap(),
        Duration::from_secs(180),
        "Running with an IP",
        running_with_ip,
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deps.delete("burst", &DeleteParams::default())
        .await
        .unwrap();
    pods_gone(&client, ns, "burst", Duration::from_secs(180)).await;
    eventually("no group left", Duration::from_secs(60), || async {
        az.groups_of(node).is_empty().then_some(())
    })
    .await;

    let stats = az.emulator().stats();
    // the buckets were really in the way: every create took a token
    let pods = u64::try_from(pods).unwrap();
    assert_eq!(stats.limits["creates-5m"].admitted, pods, "{stats:?}");
    let m = scrape(&s);
    let arm = |outcome: &str| {
        sample_sum(
            &m,
            &[
                "skylet_backend_api_requests_total",
                "service=\"arm\"",
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    let all = sample_sum(
        &m,
        &["skylet_backend_api_requests_total", "service=\"arm\""],
    );
    assert!(
        arm("throttled") * 100.0 < all,
        "throttled {} of {all} ARM requests: {stats:?}",
        arm("throttled")
    );
    assert!(stats.throttled * 100 < stats.requests.values().sum::<u64>());
    // bounded calls per pod: one create, at most a stop and a delete, no
    // GET (skylet's calls: a throttled attempt's retry is the same call)
    let calls = |op: &str| {
        sample_sum(
            &m,
            &[
                "skylet_backend_api_calls_total",
                "service=\"arm\"",
                &format!("operation=\"{op}\""),
            ],
        )
    };
    let pods_f = f64::from(u32::try_from(pods).unwrap());
    assert_eq!(calls("ContainerGroups_CreateOrUpdate"), pods_f, "{m}");
    assert!(calls("ContainerGroups_Stop") <= pods_f, "{m}");
    assert!(calls("ContainerGroups_Delete") <= pods_f, "{m}");
    assert_eq!(az.calls("ContainerGroups_Get"), 0, "{stats:?}");
    assert_eq!(stats.invalid_responses, 0);
}
