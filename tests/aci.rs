#![allow(clippy::unwrap_used)]
//! The azure-aci backend (issue #7) against the real control plane and
//! skylet's ACI emulator (providers/aci-emulator: ARM semantics, every body
//! checked against the official spec), through skylet's own ARM client with
//! a real Entra ID client-secret sign-in: the scheduler places pods on the
//! ACI node, container groups run in the emulator, status, Events, logs,
//! exec, deletion, secrets, restarts, sweep cost and throttling behave as
//! documented.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Pod, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skylet_aci_emulator::{Config as EmulatorConfig, Emulator};
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    k8s::{
        deployment, kubectl, namespace, node_ready, node_template, pods_gone, pods_where,
        running_with_ip, sample, sample_sum, scrape,
    },
    unique_name as unique,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// An emulator and the files skylet needs to reach it.
struct Azure {
    emu: Emulator,
    config: EmulatorConfig,
    dir: tempfile::TempDir,
}

impl Azure {
    async fn start(page_size: usize) -> Self {
        Self::start_with(EmulatorConfig {
            page_size,
            container_group_quota: 1000,
            core_quota: 1000,
            ..EmulatorConfig::default()
        })
        .await
    }

    async fn start_with(config: EmulatorConfig) -> Self {
        let emu = Emulator::start(config.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        emu.write_ca(dir.path().join("ca.pem")).unwrap();
        Self { emu, config, dir }
    }

    /// skylet as node `node` on this emulator, signing in with a client secret.
    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        let c = &self.config;
        let ca = self.dir.path().join("ca.pem").display().to_string();
        let url = self.emu.url();
        let mut args = vec![
            "--provider",
            "azure-aci",
            "--aci-subscription-id",
            &c.subscription_id,
            "--aci-resource-group",
            &c.resource_groups[0],
            "--aci-location",
            &c.location,
            "--aci-arm-endpoint",
            &url,
            "--aci-authority-host",
            &url,
            "--aci-ca-file",
            &ca,
            "--aci-auth",
            "client-secret",
            "--aci-tenant-id",
            &c.tenant_id,
            "--aci-client-id",
            &c.client_id,
            "--aci-log-poll-interval",
            "0.5",
        ];
        args.extend_from_slice(extra);
        Skylet::start_with_env(
            cp,
            Path::new(BIN),
            node,
            &args,
            &[("AZURE_CLIENT_SECRET", &c.client_secret)],
        )
    }

    /// The groups of `node` as the emulator stores them (write-only values included).
    fn groups_of(&self, node: &str) -> Vec<serde_json::Value> {
        self.emu
            .groups()
            .into_iter()
            .filter(|g| g["tags"]["skylet-node"] == node)
            .collect()
    }

    fn calls(&self, op: &str) -> u64 {
        self.emu.stats().requests.get(op).copied().unwrap_or(0)
    }
}

/// A pod with a port, so ACI gives its group an IP.
fn template(node: &str, app: &str, script: &str) -> serde_json::Value {
    let mut t = node_template(node, app, script);
    t["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
    t
}

fn running_ready(p: &Pod) -> bool {
    running_with_ip(p)
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn events_of(client: &Client, ns: &str, pod: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_deployment_runs_as_container_groups_with_logs_exec_events_and_cleanup() {
    let cp = ControlPlane::shared();
    let az = Azure::start(100).await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-deploy");
    let s = az.skylet(cp, node, &[]);
    let n = node_ready(&client, node).await;
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["skylet.io/provider"], "azure-aci");
    assert_eq!(labels["topology.kubernetes.io/region"], az.config.location);
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
    for body in az.emu.requests("ContainerGroups_CreateOrUpdate") {
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

    // logs: all, --tail, -f (new lines arrive by polling)
    let (ok, out, err) = kubectl(cp, &["logs", "-n", ns, &pod]);
    assert!(ok, "{err}");
    assert!(out.contains("hello from aci\nsecond line\n"), "{out}");
    let (ok, out, _) = kubectl(cp, &["logs", "-n", ns, &pod, "--tail=1"]);
    assert!(ok && out.trim_end().lines().count() == 1, "{out}");
    let (ok, out, _) = kubectl(cp, &["logs", "-n", ns, &pod, "--timestamps"]);
    assert!(
        ok && out.lines().all(|l| l
            .split_once(' ')
            .is_some_and(|(t, _)| t.parse::<jiff::Timestamp>().is_ok())),
        "{out}"
    );

    let fresh = "follow";
    deployment(
        &client,
        ns,
        fresh,
        1,
        template(
            node,
            fresh,
            "echo first; sleep 3; echo after a while; sleep 3600",
        ),
    )
    .await;
    let fp = pods_where(
        &client,
        ns,
        fresh,
        1,
        Duration::from_secs(60),
        "Running",
        running_with_ip,
    )
    .await;
    let fname = fp[0].metadata.name.clone().unwrap();
    let mut follow = cp
        .kubectl()
        .args(["logs", "-f", "-n", ns, &fname])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = tokio::task::spawn_blocking({
        let stdout = follow.stdout.take().unwrap();
        move || {
            BufReader::new(stdout)
                .lines()
                .take(2)
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        }
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("logs -f shows the later line")
        .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(lines, ["first", "after a while"]);

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

    // delete: pods and groups go
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deps.delete("web", &DeleteParams::default()).await.unwrap();
    deps.delete(fresh, &DeleteParams::default()).await.unwrap();
    pods_gone(&client, ns, "web", Duration::from_secs(60)).await;
    pods_gone(&client, ns, fresh, Duration::from_secs(60)).await;
    eventually(
        "no group left for the node",
        Duration::from_secs(30),
        || async { az.groups_of(node).is_empty().then_some(()) },
    )
    .await;
    assert!(
        az.calls("ContainerGroups_Stop") >= 3,
        "graceful delete stops first: {:?}",
        az.emu.stats()
    );
    assert_eq!(
        az.emu.stats().invalid_responses,
        0,
        "every emulator answer matched the spec"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_unsupported_field_fails_the_pod_with_an_event_naming_it() {
    let cp = ControlPlane::shared();
    let az = Azure::start(100).await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-bad");
    let _s = az.skylet(cp, node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-bad").await;
    let mut t = template(node, "hostnet", "sleep 3600");
    t["spec"]["hostNetwork"] = json!(true);
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "hostnet", "labels": {"app": "hostnet"}}, "spec": t["spec"]}),
    )
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let failed = pods_where(
        &client,
        ns,
        "hostnet",
        1,
        Duration::from_secs(60),
        "Failed",
        |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"),
    )
    .await;
    let message = failed[0]
        .status
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains("hostNetwork"),
        "the status names the field: {message}"
    );
    let evs = events_of(&client, ns, "hostnet").await;
    assert!(
        evs.iter().any(|e| e.type_.as_deref() == Some("Warning")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("hostNetwork"))),
        "{evs:#?}"
    );
    assert_eq!(
        az.calls("ContainerGroups_CreateOrUpdate"),
        0,
        "nothing was sent to Azure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_quota_exceeded_keeps_pods_pending_with_an_event_and_backs_off() {
    let cp = ControlPlane::shared();
    let az = Azure::start_with(EmulatorConfig {
        container_group_quota: 3,
        ..EmulatorConfig::default()
    })
    .await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-quota");
    let _s = az.skylet(
        cp,
        node,
        &["--aci-capacity", "cpu=100,memory=400Gi,pods=100"],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-quota").await;
    deployment(&client, ns, "q", 5, template(node, "q", "sleep 3600")).await;
    let pods = eventually(
        "3 Running and 2 Pending",
        Duration::from_secs(60),
        || async {
            let list = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels("app=q"))
                .await
                .ok()?
                .items;
            let phase = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default()
            };
            let running = list.iter().filter(|p| running_with_ip(p)).count();
            let pending: Vec<Pod> = list
                .iter()
                .filter(|p| phase(p) == "Pending")
                .cloned()
                .collect();
            (running == 3 && pending.len() == 2).then_some(pending)
        },
    )
    .await;
    let name = pods[0].metadata.name.clone().unwrap();
    eventually(
        "a Warning Event that names the quota",
        Duration::from_secs(30),
        || async {
            let evs = events_of(&client, ns, &name).await;
            evs.iter()
                .any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.message.as_deref().is_some_and(|m| m.contains("quota"))
                })
                .then_some(())
        },
    )
    .await;
    // retries back off (1 s, 2 s, 4 s, ...): after 20 s of refusals the two
    // pods cost a few PUTs per 10 s, not one per sweep each
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = az.calls("ContainerGroups_CreateOrUpdate");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let puts = az.calls("ContainerGroups_CreateOrUpdate") - before;
    assert!(puts <= 6, "{puts} PUTs in 10 s for 2 pods that cannot fit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_crash_after_put_and_restart_leaves_exactly_one_group_per_pod() {
    let cp = ControlPlane::shared();
    let az = Azure::start(100).await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-crash");
    let mut s = az.skylet(cp, node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "aci-crash").await;
    deployment(
        &client,
        ns,
        "crash",
        6,
        template(node, "crash", "sleep 3600"),
    )
    .await;
    // kill -9 as soon as the first PUT reached Azure: some groups exist, the
    // core has not seen them yet, others were never sent
    eventually("a first PUT", Duration::from_secs(60), || async {
        (az.calls("ContainerGroups_CreateOrUpdate") > 0).then_some(())
    })
    .await;
    s.kill();
    s.start_again();
    let pods = pods_where(
        &client,
        ns,
        "crash",
        6,
        Duration::from_secs(90),
        "Running and Ready",
        running_ready,
    )
    .await;
    let groups = az.groups_of(node);
    assert_eq!(groups.len(), 6, "exactly one group per pod: {groups:#?}");
    for p in &pods {
        let uid = p.metadata.uid.as_deref().unwrap();
        assert_eq!(
            groups
                .iter()
                .filter(|g| g["tags"]["skylet-pod-uid"] == uid)
                .count(),
            1,
            "{uid}"
        );
    }
    // a pod deleted while skylet is down: its group is swept after the restart
    s.kill();
    let victim = pods[0].metadata.name.clone().unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            "crash",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    s.start_again();
    eventually(
        "the orphaned group swept",
        Duration::from_secs(60),
        || async {
            let groups = az.groups_of(node);
            (groups.len() == 5
                && !groups
                    .iter()
                    .any(|g| g["tags"]["skylet-pod-name"] == victim.as_str()))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aci_300_pods_cost_one_list_call_per_sweep_and_survive_a_429_storm() {
    let cp = ControlPlane::shared();
    // pages of 100: one ListByResourceGroup is 3 page requests for 300 groups
    let az = Azure::start(100).await;
    let client = cp.client().await.unwrap();
    let node = &unique("aci-scale");
    let s = az.skylet(
        cp,
        node,
        &["--aci-capacity", "cpu=1000,memory=4Ti,pods=1000"],
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
    az.emu.throttle(60, Duration::from_secs(1));
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
    assert!(az.emu.stats().throttled >= 60, "{:?}", az.emu.stats());
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
