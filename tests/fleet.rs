#![allow(clippy::unwrap_used)]
//! A fleet of backends in one skylet (issue #14), against the real control
//! plane: one virtual node per backend, capacity and labels as configured,
//! refusals that move pods, outages that fail over with fencing.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    k8s::{deployment, namespace, node_ready, sample, sample_sum, scrape},
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// A backend entry of the simulated kind named `name`, labelled
/// `skylet-test=<fleet>` so that a test's pods land on its own fleet only.
fn mock(fleet: &str, name: &str, region: &str, extra: &str) -> String {
    mock_labelled(fleet, name, region, "", extra)
}

/// As [`mock`], with more labels (`key: value, ...`).
fn mock_labelled(fleet: &str, name: &str, region: &str, labels: &str, extra: &str) -> String {
    format!(
        "- {{name: {name}, provider: mock, region: {region}, labels: {{skylet-test: {fleet}, {labels}}}, {extra}}}\n"
    )
}

/// A pod template for `fleet`: labels `app`, the selector and toleration
/// of its virtual nodes, `spec` merged in.
fn template(fleet: &str, app: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut t = json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": fleet},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "nginx"}]
        }
    });
    if let (Some(s), Some(extra)) = (t["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    t
}

/// Preferring the nodes of backend `name` (weight 100).
fn prefer(name: &str) -> serde_json::Value {
    json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [name]}]}}]}})
}

/// Waits until `node` is Ready and the node lifecycle controller has lifted
/// its `node.kubernetes.io/not-ready` taint (until then the scheduler
/// leaves the node out, and a test's pods would all land elsewhere).
async fn schedulable(client: &Client, node: &str) -> Node {
    node_ready(client, node).await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("node {node} without the not-ready taint"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(node).await.ok()?;
            let tainted = taint_keys(&n)
                .iter()
                .any(|k| k.starts_with("node.kubernetes.io/"));
            (!tainted).then_some(n)
        },
    )
    .await
}

async fn pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn running(p: &Pod) -> bool {
    phase(p) == "Running" && p.metadata.deletion_timestamp.is_none()
}

/// Running pods of `app` per node.
async fn running_per_node(client: &Client, ns: &str, app: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods(client, ns, app).await.iter().filter(|p| running(p)) {
        *m.entry(node_of(p)).or_default() += 1;
    }
    m
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect()
}

async fn events(client: &Client, ns: &str, reason: &str) -> Vec<CoreEvent> {
    Api::<CoreEvent>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .unwrap()
        .items
}

/// The pods a simulated backend holds, from its state file.
fn held(dir: &Path, backend: &str) -> usize {
    std::fs::read(dir.join(format!("state-{backend}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pods"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_fleet_is_one_ready_node_per_backend_with_its_labels_capacity_and_port() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("fl");
    let (a, b, c) = (
        format!("{fleet}-a"),
        format!("{fleet}-b"),
        format!("{fleet}-c"),
    );
    let backends = [
        mock_labelled(
            &fleet,
            &a,
            "eu-west-1",
            "skylet.io/tier: '1'",
            "zone: eu-west-1a, mock: {capacity: 'cpu=16,memory=64Gi,pods=5'}",
        ),
        mock(
            &fleet,
            &b,
            "us-east-1",
            "mock: {capacity: 'cpu=8,memory=32Gi,pods=3'}",
        ),
        mock(
            &fleet,
            &c,
            "ap-south-1",
            "capacity: 'cpu=2,memory=4Gi,pods=7'",
        ),
    ]
    .concat();
    let s = Skylet::start_fleet(cp, bin(), &backends, "");
    let mut ports = Vec::new();
    for (name, region, pods, cpu) in [
        (&a, "eu-west-1", "5", "16"),
        (&b, "us-east-1", "3", "8"),
        (&c, "ap-south-1", "7", "2"),
    ] {
        let n = schedulable(&client, name).await;
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["topology.kubernetes.io/region"], region, "{name}");
        assert_eq!(labels["skylet.io/backend"], *name);
        assert_eq!(labels["skylet.io/provider"], "mock");
        assert_eq!(labels["skylet-test"], fleet);
        let status = n.status.clone().unwrap();
        let alloc = status.allocatable.unwrap();
        assert_eq!(
            (alloc["pods"].0.as_str(), alloc["cpu"].0.as_str()),
            (pods, cpu),
            "{name}"
        );
        ports.push(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
        );
        // (the node lifecycle controller's not-ready taint of a new node
        // may still be there)
        let ours: Vec<String> = taint_keys(&n)
            .into_iter()
            .filter(|k| !k.starts_with("node.kubernetes.io/"))
            .collect();
        assert_eq!(ours, ["virtual-kubelet.io/provider"]);
    }
    let na: Node = Api::all(client.clone()).get(&a).await.unwrap();
    let la = na.metadata.labels.unwrap();
    assert_eq!(
        (
            la["topology.kubernetes.io/zone"].as_str(),
            la["skylet.io/tier"].as_str()
        ),
        ("eu-west-1a", "1")
    );
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each virtual node has its own kubelet port");
    let m = scrape(&s);
    for name in [&a, &b, &c] {
        assert_eq!(
            sample(&m, &["skylet_backend_up{", &format!("backend=\"{name}\"")]),
            1.0,
            "{m}"
        );
    }
}

#[tokio::test]
async fn topology_spread_over_regions_is_even() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("fs");
    let names: Vec<String> = ["eu", "us", "ap"]
        .iter()
        .map(|r| format!("{fleet}-{r}"))
        .collect();
    let backends: String = names
        .iter()
        .zip(["eu-west-1", "us-east-1", "ap-south-1"])
        .map(|(n, r)| mock(&fleet, n, r, ""))
        .collect();
    let _s = Skylet::start_fleet(cp, bin(), &backends, "");
    for n in &names {
        schedulable(&client, n).await;
    }
    let ns = namespace(&client, "spread").await;
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/region", "whenUnsatisfiable": "DoNotSchedule",
        "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
    deployment(
        &client,
        &ns,
        "spread",
        6,
        template(&fleet, "spread", spread),
    )
    .await;
    let per_node = eventually("6 pods Running", Duration::from_secs(60), || async {
        let m = running_per_node(&client, &ns, "spread").await;
        (m.values().sum::<usize>() == 6).then_some(m)
    })
    .await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );
}

#[tokio::test]
async fn a_capacity_refusal_fails_owned_pods_moves_them_and_taints_the_node_for_the_cooldown() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("fc");
    let (a, b) = (format!("{fleet}-a"), format!("{fleet}-b"));
    let backends = [
        mock(&fleet, &a, "eu-west-1", &format!("mock: {{capacity: 'cpu=100,memory=400Gi,pods=20', usage-file: '{{dir}}/usage-{a}'}}")),
        mock(&fleet, &b, "us-east-1", ""),
    ]
    .concat();
    let s = Skylet::start_fleet(
        cp,
        bin(),
        &backends,
        "failover: {capacity-cooldown-min: 6, capacity-cooldown-max: 12}",
    );
    schedulable(&client, &a).await;
    schedulable(&client, &b).await;
    // others take all but one pod of a's quota, unseen by skylet (as with
    // an ECS account's Fargate quota): the scheduler still sees room on a
    std::fs::write(s.dir().join(format!("usage-{a}")), "pods=19").unwrap();
    let ns = namespace(&client, "capacity").await;
    deployment(
        &client,
        &ns,
        "web",
        4,
        template(&fleet, "web", json!({"affinity": prefer(&a)})),
    )
    .await;

    // pods a refused fail, the node is tainted, replacements run on b
    let failed = eventually(
        "a pod Failed with BackendCapacityUnavailable",
        Duration::from_secs(60),
        || async {
            let list = pods(&client, &ns, "web").await;
            let failed: Vec<Pod> = list
                .into_iter()
                .filter(|p| {
                    phase(p) == "Failed"
                        && p.status.as_ref().and_then(|s| s.reason.as_deref())
                            == Some("BackendCapacityUnavailable")
                })
                .collect();
            (!failed.is_empty()).then_some(failed)
        },
    )
    .await;
    let message = failed[0]
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&a) && message.contains("quota"),
        "{message}"
    );
    assert!(failed.iter().all(|p| node_of(p) == a));
    let per_node = eventually("4 pods Running", Duration::from_secs(60), || async {
        let m = running_per_node(&client, &ns, "web").await;
        (m.values().sum::<usize>() == 4).then_some(m)
    })
    .await;
    assert_eq!(
        per_node.get(&a),
        Some(&1),
        "a runs what its quota allows: {per_node:?}"
    );
    assert_eq!(
        per_node.get(&b),
        Some(&3),
        "the rest moved to b: {per_node:?}"
    );
    let nodes: Api<Node> = Api::all(client.clone());
    // the taint may already be gone if the pods took long: the Events and
    // the metric show it was set
    let ev = events(&client, &ns, "BackendCapacityUnavailable").await;
    assert!(!ev.is_empty(), "a Warning Event on the refused pods");
    let m = scrape(&s);
    assert!(
        sample(
            &m,
            &[
                "skylet_pods_displaced_total{",
                &format!("backend=\"{a}\""),
                "reason=\"capacity\""
            ]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        s.log_text()
            .contains("node taints updated capacity_exhausted=true"),
        "the taint was set"
    );
    let moves = sample_sum(
        &m,
        &[
            "skylet_failovers_total{",
            &format!("from=\"{a}\""),
            &format!("to=\"{b}\""),
            "reason=\"capacity\"",
        ],
    );
    assert!(
        moves >= 1.0,
        "the replacements on b count as fail-overs from a: {m}"
    );
    eventually(
        "the taint lifted after the cooldown",
        Duration::from_secs(40),
        || async {
            let n = nodes.get(&a).await.ok()?;
            (!taint_keys(&n)
                .iter()
                .any(|k| k == "skylet.io/capacity-exhausted"))
            .then_some(())
        },
    )
    .await;
    // while the shortage lasts, a new pod refused again taints the node
    std::fs::write(s.dir().join(format!("usage-{a}")), "pods=20").unwrap();
    deployment(
        &client,
        &ns,
        "more",
        1,
        template(
            &fleet,
            "more",
            json!({"nodeSelector": {"skylet.io/backend": a.clone()}}),
        ),
    )
    .await;
    eventually(
        "the node tainted again",
        Duration::from_secs(40),
        || async {
            let n = nodes.get(&a).await.ok()?;
            taint_keys(&n)
                .iter()
                .any(|k| k == "skylet.io/capacity-exhausted")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_throttled_create_is_retried_in_place_without_a_taint() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("ft");
    let a = format!("{fleet}-a");
    let s = Skylet::start_fleet(
        cp,
        bin(),
        &mock(&fleet, &a, "eu-west-1", "mock: {throttle-rate: 0.6}"),
        "",
    );
    schedulable(&client, &a).await;
    let ns = namespace(&client, "throttle").await;
    deployment(&client, &ns, "web", 5, template(&fleet, "web", json!({}))).await;
    eventually(
        "5 pods Running on the throttled backend",
        Duration::from_secs(90),
        || async {
            let m = running_per_node(&client, &ns, "web").await;
            (m.get(&a) == Some(&5)).then_some(())
        },
    )
    .await;
    let failed = pods(&client, &ns, "web")
        .await
        .iter()
        .filter(|p| phase(p) == "Failed")
        .count();
    assert_eq!(failed, 0, "throttling fails no pod");
    let m = scrape(&s);
    assert!(
        sample_sum(
            &m,
            &[
                "skylet_provider_throttles_total{",
                &format!("backend=\"{a}\"")
            ]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        !s.log_text().contains("capacity_exhausted=true"),
        "no taint for throttling"
    );
    let n: Node = Api::all(client.clone()).get(&a).await.unwrap();
    assert!(
        !taint_keys(&n)
            .iter()
            .any(|k| k == "skylet.io/capacity-exhausted")
    );
}

#[tokio::test]
async fn a_backend_outage_fails_over_and_fences_old_pods_until_the_backend_returns() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("fo");
    let (a, b) = (format!("{fleet}-a"), format!("{fleet}-b"));
    let files = |n: &str| {
        format!(
            "mock: {{state-file: '{{dir}}/state-{n}.json', unreachable-file: '{{dir}}/down-{n}'}}"
        )
    };
    // regions of their own: the node lifecycle controller taints NotReady
    // nodes at a rate per zone, and other tests leave NotReady nodes in
    // theirs
    let (ra, rb) = (format!("{fleet}-r1"), format!("{fleet}-r2"));
    let backends = [
        mock(&fleet, &a, &ra, &files(&a)),
        mock(&fleet, &b, &rb, &files(&b)),
    ]
    .concat();
    let s = Skylet::start_fleet(cp, bin(), &backends, "");
    schedulable(&client, &a).await;
    schedulable(&client, &b).await;
    let ns = namespace(&client, "outage").await;
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    let spec = json!({
        "affinity": prefer(&a),
        "tolerations": [
            {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"},
            toleration("node.kubernetes.io/not-ready"), toleration("node.kubernetes.io/unreachable")],
    });
    deployment(&client, &ns, "api", 2, template(&fleet, "api", spec)).await;
    // the first pod goes to a, which it prefers; the second to a or b
    let old: Vec<String> = eventually(
        "2 pods Running, at least one on a",
        Duration::from_secs(60),
        || async {
            let list = pods(&client, &ns, "api").await;
            let on_a: Vec<String> = list
                .iter()
                .filter(|p| running(p) && node_of(p) == a)
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (list.iter().filter(|p| running(p)).count() == 2 && !on_a.is_empty()).then_some(on_a)
        },
    )
    .await;
    assert_eq!(held(s.dir(), &a), old.len());

    // a stops answering: NotReady, the pods are evicted after 5 s and
    // replaced on b; the old ones stay Terminating, their instances running
    std::fs::write(s.dir().join(format!("down-{a}")), "down").unwrap();
    let t0 = std::time::Instant::now();
    eventually(
        "2 replacements Running on b",
        Duration::from_secs(5 + 30 + 25),
        || async {
            (running_per_node(&client, &ns, "api").await.get(&b) == Some(&2)).then_some(())
        },
    )
    .await;
    let failover = t0.elapsed();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for name in &old {
        let p = api.get(name).await.unwrap();
        assert!(
            p.metadata.deletion_timestamp.is_some(),
            "{name} is being deleted"
        );
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for name in &old {
        assert!(
            api.get_opt(name).await.unwrap().is_some(),
            "{name} stays Terminating while its backend is down"
        );
    }
    assert_eq!(
        held(s.dir(), &a),
        2,
        "the old instances are not confirmed gone"
    );
    let unconfirmed = events(&client, &ns, "FencingUnconfirmed").await;
    assert!(!unconfirmed.is_empty());
    let m = scrape(&s);
    assert_eq!(
        sample(&m, &["skylet_backend_up{", &format!("backend=\"{a}\"")]),
        0.0
    );

    // a answers again: the stale instances are stopped, the pods finalized
    std::fs::remove_file(s.dir().join(format!("down-{a}"))).unwrap();
    eventually("the old pods gone", Duration::from_secs(60), || async {
        for name in &old {
            if api.get_opt(name).await.ok()?.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(held(s.dir(), &a), 0, "no orphan left on a");
    assert_eq!(
        running_per_node(&client, &ns, "api").await.get(&b),
        Some(&2)
    );
    assert!(!events(&client, &ns, "FencingConfirmed").await.is_empty());
    let m = scrape(&s);
    let moves = sample_sum(
        &m,
        &[
            "skylet_failovers_total{",
            &format!("from=\"{a}\""),
            &format!("to=\"{b}\""),
            "reason=\"outage\"",
        ],
    );
    assert_eq!(
        moves,
        old.len() as f64,
        "each evicted pod's replacement is a fail-over: {m}"
    );
    let node_events = Api::<CoreEvent>::namespaced(client.clone(), "default");
    let by_node = ListParams::default().fields(&format!("involvedObject.name={a}"));
    eventually(
        "BackendDown and BackendRecovered on node a",
        Duration::from_secs(20),
        || async {
            let reasons: Vec<String> = node_events
                .list(&by_node)
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            (reasons.iter().any(|r| r == "BackendDown")
                && reasons.iter().any(|r| r == "BackendRecovered"))
            .then_some(())
        },
    )
    .await;
    eprintln!("fail-over took {failover:?}");
    let _ = api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
}

#[tokio::test]
async fn a_pod_costs_exactly_its_billed_size_times_the_price_with_the_minimum_duration() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("fp");
    let a = format!("{fleet}-a");
    // the Fargate us-east-1 Linux/x86 price, billed for at least 60 s
    let price = "price: {vcpu-hour: 0.04048, memory-gib-hour: 0.004445, minimum-seconds: 60}";
    let s = Skylet::start_fleet(cp, bin(), &mock(&fleet, &a, "us-east-1", price), "");
    let n = schedulable(&client, &a).await;
    let ann = n.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get("skylet.io/price-vcpu-hour").map(String::as_str),
        Some("0.04048")
    );
    assert_eq!(
        ann.get("skylet.io/price-memory-gib-hour")
            .map(String::as_str),
        Some("0.004445")
    );
    let ns = namespace(&client, "cost").await;
    let sized = json!({"containers": [{"name": "main", "image": "nginx",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]});
    deployment(&client, &ns, "web", 1, template(&fleet, "web", sized)).await;
    eventually("the pod Running", Duration::from_secs(60), || async {
        (running_per_node(&client, &ns, "web").await.get(&a) == Some(&1)).then_some(())
    })
    .await;
    let pod = pods(&client, &ns, "web").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let series = [
        "skylet_pod_cost_dollars_total{",
        &format!("namespace=\"{ns}\""),
        &format!("pod=\"{name}\""),
        &format!("backend=\"{a}\""),
    ];
    let m = scrape(&s);
    assert_eq!(
        sample(&m, &["node_cpu_hourly_cost{", &format!("node=\"{a}\"")]),
        0.04048,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &["container_cpu_allocation{", &format!("pod=\"{name}\"")]
        ),
        1.0,
        "{m}"
    );
    // running for less than the minimum, then stopped: billed exactly 60 s
    tokio::time::sleep(Duration::from_secs(3)).await;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let expected = (1.0 * 0.04048 + 2.0 * 0.004445) * 60.0 / 3600.0;
    let got = eventually("the final cost", Duration::from_secs(60), || async {
        let m = scrape(&s);
        let v = sample(&m, &series);
        ((v - expected).abs() < 1e-12).then_some(v)
    })
    .await;
    assert!((got - 0.000822833333).abs() < 1e-9, "{got}");
}

// the ACI emulator serves from this test's runtime, also while the test
// blocks on kubectl: more than one thread
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_on_moto_aci_on_the_emulator_and_a_mock_run_side_by_side_in_one_process() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let moto = skylet_testenv::Moto::shared();
    let emu_config = skylet_aci_emulator::Config::default();
    let emu = skylet_aci_emulator::Emulator::start(emu_config.clone())
        .await
        .unwrap();
    let fleet = unique_name("fk");
    let (e, z, m) = (
        format!("{fleet}-ecs"),
        format!("{fleet}-aci"),
        format!("{fleet}-mock"),
    );
    let secrets = tempfile::tempdir().unwrap();
    let ca = secrets.path().join("ca.pem");
    emu.write_ca(&ca).unwrap();
    let secret = secrets.path().join("client-secret");
    std::fs::write(&secret, &emu_config.client_secret).unwrap();
    let url = emu.url();
    let backends = format!(
        "- name: {e}\n  provider: aws-ecs\n  region: {region}\n  labels: {{skylet-test: {fleet}}}\n  \
           ecs: {{cluster: {cluster}, region: {region}, endpoint-url: '{endpoint}', subnets: [{subnet}], \
           security-groups: [{sg}], zones: [{zone}], log-group: '{lg}'}}\n\
         - name: {z}\n  provider: azure-aci\n  region: {location}\n  labels: {{skylet-test: {fleet}}}\n  \
           aci: {{subscription-id: {sub}, resource-group: {rg}, location: {location}, arm-endpoint: '{url}', \
           authority-host: '{url}', ca-file: '{ca}', auth: client-secret, tenant-id: {tenant}, \
           client-id: {client}, client-secret-file: '{secret}', log-poll-interval: 0.5}}\n{mock}",
        region = moto.region,
        cluster = moto.cluster,
        endpoint = moto.endpoint,
        subnet = moto.subnet,
        sg = moto.security_group,
        zone = moto.zone,
        lg = moto.log_group,
        location = emu_config.location,
        sub = emu_config.subscription_id,
        rg = emu_config.resource_groups[0],
        ca = ca.display(),
        tenant = emu_config.tenant_id,
        client = emu_config.client_id,
        secret = secret.display(),
        mock = mock(&fleet, &m, "mock-region", ""),
    );
    let env = moto.skylet_env();
    let s = Skylet::start_fleet_with_env(cp, bin(), &backends, "", &env);
    for (name, provider) in [(&e, "aws-ecs"), (&z, "azure-aci"), (&m, "mock")] {
        let n = schedulable(&client, name).await;
        assert_eq!(n.metadata.labels.unwrap()["skylet.io/provider"], provider);
    }
    let ns = namespace(&client, "kinds").await;
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "skylet.io/backend", "whenUnsatisfiable": "DoNotSchedule",
        "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": {"app": "web"}}}],
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello; sleep 3600"],
                        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}]});
    deployment(&client, &ns, "web", 6, template(&fleet, "web", spread)).await;
    let per_node = eventually(
        "6 pods Running, 2 per backend kind",
        Duration::from_secs(120),
        || async {
            let m = running_per_node(&client, &ns, "web").await;
            (m.values().sum::<usize>() == 6).then_some(m)
        },
    )
    .await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );
    let groups = |node: &str| {
        emu.groups()
            .into_iter()
            .filter(|g| g["tags"]["skylet-node"] == node)
            .count()
    };
    assert_eq!(groups(&z), 2, "two container groups in the ACI emulator");
    let metrics = scrape(&s);
    assert!(
        sample_sum(
            &metrics,
            &[
                "skylet_backend_api_calls_total{",
                &format!("backend=\"{e}\""),
                "operation=\"RunTask\""
            ]
        ) >= 2.0,
        "{metrics}"
    );
    // one kubelet API per node: logs come from each backend's own API
    for p in pods(&client, &ns, "web").await {
        let name = p.metadata.name.clone().unwrap();
        let (ok, out, err) = skylet_testenv::k8s::kubectl(cp, &["logs", "-n", &ns, &name]);
        if node_of(&p) != e {
            // (moto's CloudWatch holds no task output: ECS logs are tested in tests/ecs.rs)
            assert!(
                ok && out.contains("hello"),
                "{name} on {}: {out} {err}",
                node_of(&p)
            );
        }
    }
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("every instance gone", Duration::from_secs(120), || async {
        (pods(&client, &ns, "web").await.is_empty() && groups(&z) == 0).then_some(())
    })
    .await;
}
