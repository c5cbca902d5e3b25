#![allow(clippy::unwrap_used)]
//! `kubectl skylet` against the real control plane (issue #20): a skylet
//! fleet of simulated backends runs in this process (the skylet library),
//! the plugin binary is run as kubectl runs it, with the admin kubeconfig,
//! and what it prints is checked against the cluster.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Node, policy::v1::PodDisruptionBudget};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use skylet_testenv::{
    ControlPlane, eventually,
    fleet::{self, cordon, node_of, pods, running, running_on},
    free_port,
    k8s::{deployment, namespace, node_ready},
    unique_name,
};
use tokio_util::sync::CancellationToken;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-skylet");
const PRICE: &str = "price: {vcpu-hour: 0.04048, memory-gib-hour: 0.004445}";

/// A skylet fleet in this process, stopped when dropped.
struct Fleet {
    shutdown: CancellationToken,
    metrics_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fleet(cp: &ControlPlane, backends: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let file = dir.path().join("skylet.yaml");
    std::fs::write(
        &file,
        format!(
            "failover: {{capacity-cooldown-min: 300, capacity-cooldown-max: 300}}\nbackends:\n{}",
            backends.replace("{dir}", &d)
        ),
    )
    .unwrap();
    let metrics_port = free_port();
    let ca = cp.dir().join("pki/ca.crt");
    let config = skylet::Config::parse_from([
        "skylet".to_owned(),
        "--config".into(),
        file.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--node-ip".into(),
        "127.0.0.1".into(),
        "--client-ca-file".into(),
        ca.display().to_string(),
        "--sweep-interval".into(),
        "2".into(),
    ])
    .unwrap();
    let client = cp.client().await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(skylet::run(config, client, shutdown.clone()));
    Fleet {
        shutdown,
        metrics_port,
        dir,
    }
}

fn mock(fleet: &str, name: &str, region: &str, extra: &str) -> String {
    format!(
        "- {{name: {name}, provider: mock, region: {region}, labels: {{skylet-test: {fleet}, skylet.io/tier: '1'}}, {extra}}}\n"
    )
}

fn template(fleet: &str, app: &str, spec: Value) -> Value {
    fleet::template(fleet, app, json!({"image": "nginx"}), spec)
}

fn prefer(backend: &str) -> Value {
    json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [backend]}]}}]}}})
}

/// Runs the plugin: (success, stdout, stderr).
fn plugin(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PLUGIN)
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The plugin's `-o json` output.
fn json_of(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, out, err) = plugin(cp, &all);
    assert!(ok, "kubectl-skylet {}: {err}", args.join(" "));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cost_and_explain_show_the_fleet() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let name = unique_name("ps");
    let (a, b) = (format!("{name}-a"), format!("{name}-b"));
    let backends = [
        mock(
            &name,
            &a,
            "eu-west-1",
            &format!("{PRICE}, mock: {{capacity: 'cpu=64,memory=256Gi,pods=3', usage-file: '{{dir}}/usage-a'}}"),
        ),
        mock(&name, &b, "us-east-1", PRICE),
    ]
    .concat();
    let f = fleet(cp, &backends).await;
    node_ready(&client, &a).await;
    node_ready(&client, &b).await;
    let ns = namespace(&client, "plugin").await;
    let on_a = json!({"nodeSelector": {"type": "virtual-kubelet", "skylet.io/backend": a.clone()}});
    deployment(&client, &ns, "web", 2, template(&name, "web", on_a)).await;
    running_on(&client, &ns, "web", &a, 2, Duration::from_secs(60)).await;

    // status: both nodes, as the cluster has them
    let status = eventually("a's pods counted", Duration::from_secs(10), || async {
        let s = json_of(cp, &["status"]);
        let of_a = s
            .as_array()?
            .iter()
            .find(|n| n["backend"] == a.as_str())?
            .clone();
        (of_a["pods"]["Running"] == 2).then_some(s)
    })
    .await;
    let nodes = status.as_array().unwrap();
    let get = |n: &str| nodes.iter().find(|x| x["node"] == n).unwrap().clone();
    let (sa, sb) = (get(&a), get(&b));
    assert_eq!(sa["provider"], "mock");
    assert_eq!(sa["region"], "eu-west-1");
    assert_eq!(sb["region"], "us-east-1");
    assert_eq!(sa["tier"], "1");
    assert_eq!(sa["health"], "Ready");
    assert_eq!(sa["capacity"]["pods"], "3");
    assert_eq!(sa["capacity"]["cpu"], "64");
    let taint = sa["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "virtual-kubelet.io/provider")
        .unwrap();
    assert!(
        taint["why"].as_str().unwrap().contains("tolerate"),
        "{taint}"
    );
    let (ok, table, _) = plugin(cp, &["status"]);
    assert!(ok);
    assert!(table.starts_with("BACKEND "), "{table}");
    let line = table.lines().find(|l| l.starts_with(&a)).unwrap();
    assert!(
        line.contains("Ready") && line.contains("Running=2") && line.contains("eu-west-1"),
        "{line}"
    );

    // a capacity refusal: others take 1 of a's 3 pods; a third pod that
    // the scheduler puts on a is refused and replaced on b
    std::fs::write(f.dir.path().join("usage-a"), "pods=1").unwrap();
    deployment(&client, &ns, "more", 1, template(&name, "more", prefer(&a))).await;
    let moved = eventually("more Running on b", Duration::from_secs(60), || async {
        pods(&client, &ns, "more")
            .await
            .into_iter()
            .find(|p| running(p) && node_of(p) == b)
    })
    .await;
    let status = json_of(cp, &["status"]);
    let sa = status
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["node"] == a.as_str())
        .unwrap()
        .clone();
    let why = sa["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "skylet.io/capacity-exhausted")
        .unwrap_or_else(|| panic!("the capacity taint on a: {sa}"))["why"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.contains("lack of capacity") && why.contains(&a),
        "{why}"
    );

    // explain: the replacement is on b because its predecessor was refused
    let moved_name = moved.metadata.name.clone().unwrap();
    let e = json_of(cp, &["explain", &moved_name, "-n", &ns]);
    assert_eq!(e["node"], b.as_str());
    assert_eq!(e["region"], "us-east-1");
    assert!(
        e["placement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains(&format!(
                "preferred (weight 100): skylet.io/backend In [{a}]"
            ))),
        "{e}"
    );
    let reasons = e["reasons"].to_string();
    assert!(
        reasons.contains("refused by its backend for lack of capacity"),
        "{reasons}"
    );
    let (ok, text, _) = plugin(cp, &["explain", &moved_name, "-n", &ns]);
    assert!(ok && text.contains("BackendCapacityUnavailable"), "{text}");

    // cost from the pods: 2 pods of 1 vCPU and 2 GiB on a for as long as
    // they ran, plus the replacement on b
    let web = pods(&client, &ns, "web").await;
    let t0 = jiff::Timestamp::now();
    let c = json_of(cp, &["cost", "--by", "pod", "-n", &ns]);
    assert_eq!(c["source"], "pods");
    let rate = 0.04048 + 2.0 * 0.004445;
    for p in &web {
        let started = p.status.as_ref().unwrap().start_time.as_ref().unwrap().0;
        let hours = t0.duration_since(started).as_secs_f64() / 3600.0;
        let line = c["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["pod"] == p.metadata.name.clone().unwrap().as_str())
            .unwrap()
            .clone();
        assert_eq!(line["backend"], a.as_str());
        let dollars = line["dollars"].as_f64().unwrap();
        // the plugin ran within a second or two of t0
        assert!(
            (dollars - rate * hours).abs() <= rate * 3.0 / 3600.0,
            "{dollars} vs {}",
            rate * hours
        );
    }
    let by_backend = json_of(cp, &["cost", "--by", "backend", "-n", &ns]);
    let backends: Vec<&str> = by_backend["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["backend"].as_str().unwrap())
        .collect();
    assert!(
        backends.contains(&a.as_str()) && backends.contains(&b.as_str()),
        "{by_backend}"
    );

    // cost from Prometheus: skylet's own series, scraped
    let prom = Prometheus::start(f.metrics_port);
    let url = format!("http://127.0.0.1:{}", prom.port);
    let c = eventually(
        "the cost series in Prometheus",
        Duration::from_secs(60),
        || async {
            let (ok, out, _) = plugin(
                cp,
                &[
                    "cost",
                    "--prometheus",
                    &url,
                    "--window",
                    "10m",
                    "-n",
                    &ns,
                    "-o",
                    "json",
                ],
            );
            let c: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let line = c["lines"].as_array()?.first()?.clone();
            (line["namespace"] == ns.as_str() && line["dollars"].as_f64()? > 0.0).then_some(c)
        },
    )
    .await;
    assert_eq!(c["source"], "prometheus");
    // no more than the pods could have cost so far
    let most = 3.0
        * rate
        * (t0
            .duration_since(web[0].metadata.creation_timestamp.clone().unwrap().0)
            .as_secs_f64()
            + 60.0)
        / 3600.0;
    assert!(c["total"].as_f64().unwrap() <= most, "{c} > {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_through_the_eviction_api_and_honours_the_budget() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let name = unique_name("pd");
    let (a, b) = (format!("{name}-a"), format!("{name}-b"));
    // b starts pods in 3 s: the budget forbids the second eviction until
    // the first pod's replacement runs
    let backends = [
        mock(&name, &a, "r1", ""),
        mock(&name, &b, "r2", "mock: {start-latency: 3}"),
    ]
    .concat();
    let _f = fleet(cp, &backends).await;
    node_ready(&client, &a).await;
    node_ready(&client, &b).await;
    let ns = namespace(&client, "drain").await;
    // both pods on a: b is cordoned while they are placed
    cordon(&client, &b, true).await;
    deployment(&client, &ns, "api", 2, template(&name, "api", prefer(&a))).await;
    running_on(&client, &ns, "api", &a, 2, Duration::from_secs(60)).await;
    cordon(&client, &b, false).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}
    }))
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    eventually(
        "the budget allows 1 disruption",
        Duration::from_secs(30),
        || async {
            let p = pdbs.get("api").await.ok()?;
            (p.status?.disruptions_allowed == Some(1)).then_some(())
        },
    )
    .await;

    let t0 = Instant::now();
    let (ok, out, err) = plugin(
        cp,
        &[
            "drain",
            &a,
            "--retry-every",
            "1",
            "--timeout",
            "120",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{out} {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["node"], a.as_str());
    let outcomes = report["pods"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{report}");
    assert!(
        outcomes.iter().all(|o| o["result"] == "evicted"),
        "{report}"
    );
    let refusals: u64 = outcomes
        .iter()
        .map(|o| o["refused_by_budget"].as_u64().unwrap())
        .sum();
    assert!(refusals >= 1, "the budget held one eviction back: {report}");
    eprintln!("drain took {:?}", t0.elapsed());

    let n: Node = Api::all(client.clone()).get(&a).await.unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true), "cordoned");
    let list = pods(&client, &ns, "api").await;
    assert!(list.iter().all(|p| node_of(p) != a), "nothing left on a");
    running_on(&client, &ns, "api", &b, 2, Duration::from_secs(30)).await;
    // the evictions are the API's: Events say so
    let (ok, text, _) = plugin(cp, &["drain", &a, "--timeout", "5"]);
    assert!(ok, "a second drain finds nothing to do");
    assert!(text.starts_with("NAMESPACE"), "{text}");
}

/// A Prometheus server (Debian's, installed by hack/setup) on loopback,
/// scraping one target every second; stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let bin = PathBuf::from("/usr/bin/prometheus");
        assert!(bin.exists(), "prometheus is missing: run hack/setup test");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: skylet\n  static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}/prometheus.yml",
                dir.path().display()
            ))
            .arg(format!("--storage.tsdb.path={}/data", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
