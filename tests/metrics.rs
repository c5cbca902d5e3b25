#![allow(clippy::unwrap_used)]
//! Every core metric of src/metrics.rs (and README's list) has its value
//! asserted after a known workload on a fleet of simulated backends, against
//! the real control plane (issue #20). The backends' own API metrics
//! (`skylet_backend_api_*`, `skylet_backend_sweep_api_calls`) need a real
//! API and are asserted in tests/ecs.rs (moto) and tests/aci.rs (the ARM
//! emulator); the cost series' arithmetic in tests/fleet.rs.

use std::{path::Path, process::Command, time::Duration};

use kube::Api;
use serde_json::{Value, json};
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    fleet::{self, cordon, node_of, pods, running, running_on},
    k8s::{deployment, kubectl, namespace, node_ready, phase, sample, sample_sum, scrape},
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// The Fargate us-east-1 price.
const PRICE: &str = "price: {vcpu-hour: 0.04048, memory-gib-hour: 0.004445}";

fn mock(fleet: &str, name: &str, region: &str, extra: &str) -> String {
    format!(
        "- {{name: {name}, provider: mock, region: {region}, labels: {{skylet-test: {fleet}}}, {extra}}}\n"
    )
}

fn template(fleet: &str, app: &str, spec: Value) -> Value {
    fleet::template(
        fleet,
        app,
        json!({"image": "busybox", "command": ["sh", "-c", "echo hello; sleep 3600"]}),
        spec,
    )
}

fn on(backend: &str) -> Value {
    json!({"nodeSelector": {"skylet.io/backend": backend}})
}

/// The value of `name{...}` of `backend` with the other `labels`.
fn of(m: &str, name: &str, backend: &str, labels: &[&str]) -> f64 {
    let mut needles = vec![format!("{name}{{"), format!("backend=\"{backend}\"")];
    needles.extend(labels.iter().map(|l| (*l).to_owned()));
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    sample_sum(m, &needles)
}

/// Every series of the families skylet registers for a node, present (at
/// 0) before anything happened.
#[tokio::test]
async fn a_new_node_exports_every_family_at_its_initial_value() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("mz");
    let a = format!("{fleet}-a");
    let s = Skylet::start_fleet(cp, Path::new(BIN), &mock(&fleet, &a, "r0", PRICE), "");
    node_ready(&client, &a).await;
    let m = eventually(
        "the first sweep counted phases",
        Duration::from_secs(30),
        || async {
            let m = scrape(&s);
            m.contains(&format!(
                "skylet_pods{{backend=\"{a}\",provider=\"mock\",phase=\"Running\"}} 0"
            ))
            .then_some(m)
        },
    )
    .await;
    for (name, value) in [
        ("skylet_backend_up", 1.0),
        ("skylet_backend_pods", 0.0),
        ("skylet_backend_capacity_exhausted", 0.0),
        ("skylet_pods_awaiting_fencing", 0.0),
        ("skylet_reconcile_queue_depth", 0.0),
        ("skylet_reconciles_total", 0.0),
        ("skylet_pod_status_writes_total", 0.0),
        ("skylet_provider_throttles_total", 0.0),
        ("skylet_orphans_deleted_total", 0.0),
    ] {
        let line = format!("{name}{{backend=\"{a}\",provider=\"mock\"}} {value}");
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        assert_eq!(
            of(&m, "skylet_pods", &a, &[&format!("phase=\"{phase}\"")]),
            0.0
        );
    }
    assert_eq!(
        sample(&m, &["node_cpu_hourly_cost{", &format!("node=\"{a}\"")]),
        0.04048
    );
    assert_eq!(
        sample(&m, &["node_ram_hourly_cost{", &format!("node=\"{a}\"")]),
        0.004445
    );
    assert_eq!(
        sample(&m, &["node_total_hourly_cost{", &format!("node=\"{a}\"")]),
        0.0
    );
    assert_eq!(
        sample(&m, &["kubecost_node_is_spot{", &format!("node=\"{a}\"")]),
        0.0
    );
    // pings happened, none failed
    assert!(
        of(
            &m,
            "skylet_provider_call_duration_seconds_count",
            &a,
            &["op=\"ping\""]
        ) >= 1.0
    );
    assert_eq!(of(&m, "skylet_provider_errors_total", &a, &[]), 0.0);
}

/// Pods running, a capacity refusal, throttling, kubelet API requests, an
/// orphan: each metric counts exactly what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_gives_known_values() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("mw");
    let (a, b, c) = (
        format!("{fleet}-a"),
        format!("{fleet}-b"),
        format!("{fleet}-c"),
    );
    let backends = [
        mock(
            &fleet,
            &a,
            "r1",
            &format!("{PRICE}, mock: {{capacity: 'cpu=100,memory=400Gi,pods=3', usage-file: '{{dir}}/usage-a', state-file: '{{dir}}/state-a.json'}}"),
        ),
        mock(&fleet, &b, "r2", &format!("{PRICE}, mock: {{state-file: '{{dir}}/state-b.json'}}")),
        // every create throttled: its pod stays Pending
        mock(&fleet, &c, "r3", "mock: {throttle-rate: 1.0}"),
    ]
    .concat();
    let mut s = Skylet::start_fleet(
        cp,
        Path::new(BIN),
        &backends,
        "failover: {capacity-cooldown-min: 300, capacity-cooldown-max: 300}",
    );
    for n in [&a, &b, &c] {
        node_ready(&client, n).await;
    }
    let ns = namespace(&client, "metrics").await;

    // two pods on a, sized 1 vCPU and 2 GiB
    deployment(&client, &ns, "web", 2, template(&fleet, "web", on(&a))).await;
    running_on(&client, &ns, "web", &a, 2, Duration::from_secs(60)).await;
    // a pod on c, throttled for ever
    deployment(&client, &ns, "slow", 1, template(&fleet, "slow", on(&c))).await;

    let m = eventually(
        "a: 2 Running pods held; c: 1 Pending, throttled twice",
        Duration::from_secs(60),
        || async {
            let m = scrape(&s);
            let ok = of(&m, "skylet_pods", &a, &["phase=\"Running\""]) == 2.0
                && of(&m, "skylet_backend_pods", &a, &[]) == 2.0
                && of(&m, "skylet_pods", &c, &["phase=\"Pending\""]) == 1.0
                && of(&m, "skylet_provider_throttles_total", &c, &[]) >= 2.0;
            ok.then_some(m)
        },
    )
    .await;
    assert_eq!(of(&m, "skylet_backend_up", &a, &[]), 1.0);
    assert_eq!(
        of(
            &m,
            "skylet_provider_call_duration_seconds_count",
            &a,
            &["op=\"create\""]
        ),
        2.0,
        "one create per pod: {m}"
    );
    assert!(
        of(
            &m,
            "skylet_provider_call_duration_seconds_count",
            &a,
            &["op=\"list\""]
        ) >= 1.0
    );
    assert_eq!(of(&m, "skylet_provider_errors_total", &a, &[]), 0.0);
    // every throttle is a create error of class throttled; throttling
    // never taints
    assert_eq!(
        of(&m, "skylet_provider_throttles_total", &c, &[]),
        of(
            &m,
            "skylet_provider_errors_total",
            &c,
            &["op=\"create\"", "class=\"throttled\""]
        ),
    );
    assert_eq!(of(&m, "skylet_backend_capacity_exhausted", &c, &[]), 0.0);
    assert_eq!(of(&m, "skylet_backend_pods", &c, &[]), 0.0);
    // each pod: at least one reconcile and one status write (Pending ->
    // Running is at least one write with the IP and the Ready condition)
    assert!(of(&m, "skylet_reconciles_total", &a, &[]) >= 2.0, "{m}");
    assert!(
        of(&m, "skylet_pod_status_writes_total", &a, &[]) >= 2.0,
        "{m}"
    );
    // the cost of a's two running pods
    let web: Vec<String> = pods(&client, &ns, "web")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for p in &web {
        assert_eq!(
            sample(&m, &["container_cpu_allocation{", &format!("pod=\"{p}\"")]),
            1.0
        );
        assert_eq!(
            sample(
                &m,
                &[
                    "container_memory_allocation_bytes{",
                    &format!("pod=\"{p}\"")
                ]
            ),
            2.0 * 1024.0 * 1024.0 * 1024.0
        );
        assert!(
            sample(
                &m,
                &[
                    "skylet_pod_cost_dollars_total{",
                    &format!("pod=\"{p}\""),
                    &format!("backend=\"{a}\"")
                ]
            ) >= 0.0
        );
    }
    let hourly = sample(&m, &["node_total_hourly_cost{", &format!("node=\"{a}\"")]);
    assert!(
        (hourly - 2.0 * (0.04048 + 2.0 * 0.004445)).abs() < 1e-9,
        "{hourly}"
    );

    // the kubelet API: one `kubectl logs`, one unauthenticated request
    let (ok, out, err) = kubectl(cp, &["logs", "-n", &ns, &web[0]]);
    assert!(ok && out.contains("hello"), "{out} {err}");
    let a_port = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get(&a)
        .await
        .unwrap()
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    let curl = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{a_port}/pods"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "401");
    let m = scrape(&s);
    assert_eq!(
        of(
            &m,
            "skylet_kubelet_api_requests_total",
            &a,
            &["route=\"containerLogs\"", "code=\"200\""]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        of(
            &m,
            "skylet_kubelet_api_requests_total",
            &a,
            &["route=\"pods\"", "code=\"401\""]
        ),
        1.0,
        "{m}"
    );

    // a capacity refusal: others take 1 pod of a's quota of 3, skylet holds
    // 2: a pod of "more" the scheduler puts on a (it prefers a, which
    // shows room for 1) is refused, fails and is replaced on b
    std::fs::write(s.dir().join("usage-a"), "pods=1").unwrap();
    let prefer_a = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [a.clone()]}]}}]}},
        "nodeSelector": {"type": "virtual-kubelet", "skylet-test": fleet.clone()}});
    let mut t = template(&fleet, "more", prefer_a);
    t["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [a.clone(), b.clone()]}]}]});
    deployment(&client, &ns, "more", 2, t).await;
    running_on(&client, &ns, "more", &b, 2, Duration::from_secs(60)).await;
    let refused = pods(&client, &ns, "more")
        .await
        .iter()
        .filter(|p| {
            phase(p) == "Failed"
                && p.status.as_ref().and_then(|s| s.reason.as_deref())
                    == Some("BackendCapacityUnavailable")
        })
        .count() as f64;
    assert!(refused >= 1.0);
    let m = eventually("the refusals counted", Duration::from_secs(30), || async {
        let m = scrape(&s);
        (sample_sum(
            &m,
            &[
                "skylet_failovers_total{",
                &format!("from=\"{a}\""),
                &format!("to=\"{b}\""),
            ],
        ) == refused)
            .then_some(m)
    })
    .await;
    assert_eq!(
        of(
            &m,
            "skylet_provider_errors_total",
            &a,
            &["op=\"create\"", "class=\"capacity\""]
        ),
        refused
    );
    assert_eq!(
        of(
            &m,
            "skylet_pods_displaced_total",
            &a,
            &["reason=\"capacity\""]
        ),
        refused
    );
    assert_eq!(
        sample(
            &m,
            &[
                "skylet_failovers_total{",
                &format!("from=\"{a}\""),
                &format!("to=\"{b}\""),
                "reason=\"capacity\""
            ]
        ),
        refused
    );
    assert_eq!(
        of(&m, "skylet_backend_capacity_exhausted", &a, &[]),
        1.0,
        "the cooldown is 300 s"
    );
    eventually(
        "the refused pods counted Failed on a",
        Duration::from_secs(10),
        || async {
            (of(&scrape(&s), "skylet_pods", &a, &["phase=\"Failed\""]) == refused).then_some(())
        },
    )
    .await;

    // an orphan: a pod force-deleted while skylet is down leaves its
    // instance behind; the sweep deletes it once skylet is back (its
    // counters start again at 0)
    fleet::orphan(&client, &mut s, &ns, "more", &b).await;
    eventually("1 orphan deleted on b", Duration::from_secs(30), || async {
        (of(&scrape(&s), "skylet_orphans_deleted_total", &b, &[]) == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        of(&scrape(&s), "skylet_orphans_deleted_total", &a, &[]),
        0.0
    );
}

/// A backend outage: up 0, pods awaiting fencing, displaced and failed over
/// for the outage; all back to normal when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_in_up_fencing_displaced_and_failovers() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("mo");
    let (a, b) = (format!("{fleet}-a"), format!("{fleet}-b"));
    let files = "mock: {state-file: '{dir}/state-a.json', unreachable-file: '{dir}/down-a'}";
    // regions of their own: the node lifecycle controller evicts at a rate
    // per zone
    let backends = [
        mock(&fleet, &a, &format!("{fleet}-r1"), files),
        mock(&fleet, &b, &format!("{fleet}-r2"), ""),
    ]
    .concat();
    let s = Skylet::start_fleet(cp, Path::new(BIN), &backends, "");
    node_ready(&client, &a).await;
    node_ready(&client, &b).await;
    let ns = namespace(&client, "outage").await;
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    let mut t = template(&fleet, "api", json!({}));
    t["spec"]["tolerations"] = json!([
        {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"},
        toleration("node.kubernetes.io/not-ready"), toleration("node.kubernetes.io/unreachable")]);
    t["spec"]["affinity"] = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [a.clone()]}]}}]}});
    // both on a: b is cordoned while they are placed
    cordon(&client, &b, true).await;
    deployment(&client, &ns, "api", 2, t).await;
    let on_a = eventually(
        "2 pods Running, some on a",
        Duration::from_secs(60),
        || async {
            let list = pods(&client, &ns, "api").await;
            let n = list
                .iter()
                .filter(|p| running(p) && node_of(p) == a)
                .count();
            (list.iter().filter(|p| running(p)).count() == 2 && n > 0).then_some(n as f64)
        },
    )
    .await;
    cordon(&client, &b, false).await;
    std::fs::write(s.dir().join("down-a"), "down").unwrap();
    let m = eventually(
        "a down, its pods awaiting fencing, replaced on b",
        Duration::from_secs(90),
        || async {
            let m = scrape(&s);
            let ok = of(&m, "skylet_backend_up", &a, &[]) == 0.0
                && of(&m, "skylet_pods_awaiting_fencing", &a, &[]) == on_a
                && sample_sum(
                    &m,
                    &[
                        "skylet_failovers_total{",
                        &format!("from=\"{a}\""),
                        "reason=\"outage\"",
                    ],
                ) == on_a;
            ok.then_some(m)
        },
    )
    .await;
    assert_eq!(
        of(
            &m,
            "skylet_pods_displaced_total",
            &a,
            &["reason=\"outage\""]
        ),
        on_a
    );
    assert_eq!(of(&m, "skylet_backend_up", &b, &[]), 1.0);
    assert!(
        of(&m, "skylet_provider_errors_total", &a, &["op=\"ping\""]) >= 2.0,
        "{m}"
    );
    std::fs::remove_file(s.dir().join("down-a")).unwrap();
    eventually(
        "a up, nothing awaiting fencing",
        Duration::from_secs(60),
        || async {
            let m = scrape(&s);
            (of(&m, "skylet_backend_up", &a, &[]) == 1.0
                && of(&m, "skylet_pods_awaiting_fencing", &a, &[]) == 0.0
                && of(&m, "skylet_backend_pods", &a, &[]) == 0.0)
                .then_some(())
        },
    )
    .await;
}
