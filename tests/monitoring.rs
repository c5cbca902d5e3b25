#![allow(clippy::unwrap_used)]
//! The monitoring of deploy/monitoring/ (issue #20): the rules pass
//! `promtool test rules` on synthetic series, the chart renders the same
//! rules and dashboard, and a real Prometheus (Debian's, started here on
//! loopback) scraping a skylet fleet under a known workload gives the
//! expected values from the recording rules and a non-empty result for
//! every expression of the dashboard. The dashboard's query results are
//! written to `target/monitoring/panels.json`, from which `hack/panels`
//! draws docs/monitoring/.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::{Value, json};
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    fleet::{self, node_of, pods as pods_of, running},
    free_port,
    k8s::{deployment, namespace, node_ready, sample, sample_sum, scrape},
    repo_root, unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

fn monitoring() -> PathBuf {
    repo_root().join("deploy/monitoring")
}

/// A tool from Debian's prometheus package (installed by hack/setup).
fn debian_tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run hack/setup test (it installs Debian's prometheus package)",
        p.display()
    );
    p
}

#[test]
fn the_rules_pass_promtool_on_synthetic_series() {
    let promtool = debian_tool("promtool");
    for args in [
        vec!["check", "rules", "skylet-rules.yaml"],
        vec!["test", "rules", "rules-test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(monitoring())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// helm, built by hack/setup (hack/tools/build.sh).
fn helm() -> Command {
    let out = Command::new(repo_root().join("hack/tools/build.sh"))
        .args(["--bin", "helm"])
        .output()
        .unwrap();
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
    assert!(
        bin.exists(),
        "{} is missing: run hack/setup test",
        bin.display()
    );
    Command::new(bin)
}

/// The chart's PrometheusRule has the groups of the plain rules file and its
/// ConfigMap the dashboard, under the sidecar's label; both are off by
/// default.
#[test]
fn the_chart_renders_the_same_rules_and_dashboard() {
    let chart = repo_root().join("deploy/helm/skylet");
    let render = |sets: &[&str]| {
        let mut c = helm();
        c.args(["template", "mon"]).arg(&chart);
        for s in sets {
            c.args(["--set", s]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let docs = |text: &str| -> Vec<serde_yaml_ng::Value> {
        text.split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d).ok())
            .filter(|d| d.get("kind").is_some())
            .collect()
    };
    let kinds = |text: &str| -> Vec<String> {
        docs(text)
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let plain = render(&[]);
    assert!(!kinds(&plain).contains(&"PrometheusRule".to_owned()));
    let on = render(&[
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
    ]);
    let all = docs(&on);
    let rule = all
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(monitoring().join("skylet-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule["spec"]["groups"], file["groups"],
        "templates/prometheusrule.yaml and deploy/monitoring/skylet-rules.yaml disagree"
    );
    let cm = all
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard: \"1\"");
    let in_chart: Value =
        serde_json::from_str(cm["data"]["skylet.json"].as_str().unwrap()).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("skylet-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        in_chart, dashboard,
        "templates/grafana-dashboard.yaml and deploy/monitoring/skylet-dashboard.json disagree"
    );
    // budgets per namespace come from the values
    let budget = render(&[
        "monitoring.prometheusRule.enabled=true",
        "monitoring.costBudget.dollarsPerDay=7",
        "monitoring.costBudget.namespaces.team-a=3",
    ]);
    assert!(budget.contains("expr: vector(7)"), "{budget}");
    assert!(
        budget.contains("expr: vector(3)\n      labels: {namespace: \"team-a\"}"),
        "{budget}"
    );
}

/// A Prometheus server on loopback with skylet's rules, scraping targets
/// every second; stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[u16]) -> Prometheus {
        let bin = debian_tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n- job_name: skylet\n  static_configs: [{{targets: [{}]}}]\n",
            monitoring().join("skylet-rules.yaml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(p.port, "/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/<path>` with `params`: the `data`, or the error.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/{path}?{}", query.join("&")));
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{status}: {} {}", v["errorType"], v["error"]))
        }
    }

    /// The instant vector of `expr` now.
    fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)])
            .unwrap_or_else(|e| panic!("{expr}: {e}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of the one series of `expr` now, if there is one.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        assert!(r.len() <= 1, "{expr}: more than one series: {r:?}");
        r.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Firing alerts named `name`.
    fn firing(&self, name: &str) -> Vec<Value> {
        self.api("alerts", &[]).unwrap()["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
    }
}

/// GET `path` over HTTP/1.0 from 127.0.0.1:`port`: (status, body); (0, "")
/// when nothing answers.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = write!(c, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn mock(fleet: &str, name: &str, region: &str, extra: &str) -> String {
    format!(
        "- {{name: {name}, provider: mock, region: {region}, labels: {{skylet-test: {fleet}}}, \
         price: {{vcpu-hour: 0.04048, memory-gib-hour: 0.004445, minimum-seconds: 60}}, {extra}}}\n"
    )
}

fn template(fleet: &str, app: &str, spec: Value) -> Value {
    fleet::template(fleet, app, json!({"image": "nginx"}), spec)
}

/// The expressions of the dashboard's panels: (panel title, expr, legend).
fn dashboard_exprs() -> Vec<(String, String, String)> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("skylet-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
                t["legendFormat"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

/// Grafana's variables as the dashboard's defaults give them: every
/// backend, a rate window of four scrapes (of the test's 1 s).
fn grafana_vars(expr: &str) -> String {
    expr.replace("$backend", ".+")
        .replace("$__rate_interval", "15s")
}

// Prometheus and skylet's scrapes run while the test waits: more than one
// thread
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_fleet_and_the_rules_and_dashboard_show_the_workload() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let fleet = unique_name("mon");
    let (a, b) = (format!("{fleet}-a"), format!("{fleet}-b"));
    let backends = [
        mock(
            &fleet,
            &a,
            &format!("{fleet}-r1"),
            &format!("mock: {{capacity: 'cpu=100,memory=400Gi,pods=20', usage-file: '{{dir}}/usage-{a}', state-file: '{{dir}}/state-a.json'}}"),
        ),
        mock(
            &fleet,
            &b,
            &format!("{fleet}-r2"),
            "mock: {throttle-rate: 0.7, start-latency: 0.5, state-file: '{dir}/state-b.json'}",
        ),
    ]
    .concat();
    let mut s = Skylet::start_fleet(
        cp,
        Path::new(BIN),
        &backends,
        "failover: {capacity-cooldown-min: 6, capacity-cooldown-max: 12}",
    );
    let prom = Prometheus::start(&[s.metrics_port]);
    let start = unix_now();
    node_ready(&client, &a).await;
    node_ready(&client, &b).await;
    // a's quota is nearly used up by others: 1 pod fits
    std::fs::write(s.dir().join(format!("usage-{a}")), "pods=19").unwrap();
    let ns = namespace(&client, "mon").await;
    let prefer_a = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "skylet.io/backend", "operator": "In", "values": [a.clone()]}]}}]}}});
    deployment(
        &client,
        &ns,
        "web",
        4,
        template(&fleet, "web", prefer_a.clone()),
    )
    .await;
    eventually(
        "4 pods of web Running, 1 on a",
        Duration::from_secs(180),
        || async {
            let list = pods_of(&client, &ns, "web").await;
            let run: Vec<&Pod> = list.iter().filter(|p| running(p)).collect();
            (run.len() == 4 && run.iter().filter(|p| node_of(p) == a).count() == 1).then_some(())
        },
    )
    .await;
    // a pod that stays Pending on b: its ConfigMap does not exist
    let pending = json!({"nodeSelector": {"skylet.io/backend": b.clone()},
        "containers": [{"name": "main", "image": "nginx",
            "envFrom": [{"configMapRef": {"name": "missing"}}]}]});
    deployment(&client, &ns, "stuck", 1, template(&fleet, "stuck", pending)).await;
    // one more pod, refused by a once Prometheus knows a's failure and
    // fail-over series (so that they increase within a window, not only
    // appear): when a's capacity taint is lifted, a's quota is full
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    eventually(
        "a's capacity taint lifted",
        Duration::from_secs(60),
        || async {
            let n = nodes.get(&a).await.ok()?;
            let tainted = n
                .spec?
                .taints
                .unwrap_or_default()
                .iter()
                .any(|t| t.key == "skylet.io/capacity-exhausted");
            (!tainted).then_some(())
        },
    )
    .await;
    std::fs::write(s.dir().join(format!("usage-{a}")), "pods=20").unwrap();
    deployment(&client, &ns, "more", 1, template(&fleet, "more", prefer_a)).await;
    // a pod that runs briefly on b costs exactly its minimum: 60 s of 1 vCPU
    // and 2 GiB
    let costly = namespace(&client, "mon-cost").await;
    let only_b = json!({"nodeSelector": {"skylet.io/backend": b.clone()}});
    deployment(
        &client,
        &costly,
        "once",
        1,
        template(&fleet, "once", only_b),
    )
    .await;
    eventually("once Running", Duration::from_secs(60), || async {
        pods_of(&client, &costly, "once")
            .await
            .iter()
            .any(running)
            .then_some(())
    })
    .await;
    Api::<Deployment>::namespaced(client.clone(), &costly)
        .delete("once", &DeleteParams::default())
        .await
        .unwrap();
    // the recording rules, against what the workload did
    let by = |rule: &str, labels: &str| format!("{rule}{{{labels}}}");
    let sel = |backend: &str, phase: &str| {
        by(
            "skylet:pods:sum",
            &format!("backend=\"{backend}\", phase=\"{phase}\""),
        )
    };
    eventually(
        "pods by phase: a 1 Running; b 4 Running, 1 Pending",
        Duration::from_secs(60),
        || async {
            let got = (
                prom.value(&sel(&a, "Running")),
                prom.value(&sel(&b, "Running")),
                prom.value(&sel(&b, "Pending")),
            );
            (got == (Some(1.0), Some(4.0), Some(1.0))).then_some(())
        },
    )
    .await;
    let expected = (0.04048 + 2.0 * 0.004445) * 60.0 / 3600.0;
    eventually(
        "the namespace's cost: exactly the minimum of its one pod",
        Duration::from_secs(60),
        || async {
            let v = prom.value(&format!(
                "skylet:namespace_cost_dollars:sum{{namespace=\"{costly}\"}}"
            ))?;
            ((v - expected).abs() < 1e-12).then_some(())
        },
    )
    .await;
    let by_backend = prom
        .value(&format!(
            "skylet:backend_cost_dollars:sum{{backend=\"{b}\"}}"
        ))
        .unwrap();
    assert!(by_backend >= expected, "{by_backend}");
    eventually(
        "a capacity fail-over from a to b",
        Duration::from_secs(30),
        || async {
            let v = prom.value(&by(
                "skylet:failovers:increase1h",
                &format!("from=\"{a}\", to=\"{b}\", reason=\"capacity\""),
            ))?;
            (v > 0.0).then_some(())
        },
    )
    .await;
    eventually(
        "create failures of class capacity on a, in the last 10 minutes",
        Duration::from_secs(60),
        || async {
            let v = prom.value(&by(
                "skylet:create_errors:increase10m",
                &format!("backend=\"{a}\", class=\"capacity\""),
            ))?;
            (v >= 1.0).then_some(())
        },
    )
    .await;
    let m = scrape(&s);
    let throttles = sample_sum(
        &m,
        &[
            "skylet_provider_throttles_total{",
            &format!("backend=\"{b}\""),
        ],
    );
    let rate = prom
        .value(&by(
            "skylet:provider_throttles:rate5m",
            &format!("backend=\"{b}\""),
        ))
        .unwrap();
    assert_eq!(
        rate > 0.0,
        throttles > 0.0,
        "b was throttled {throttles} times"
    );
    let p95 = prom
        .value(&by(
            "skylet:provider_call_duration_seconds:p95_5m",
            &format!("backend=\"{b}\", op=\"create\""),
        ))
        .unwrap();
    assert!(p95 > 0.0 && p95 <= 10.0, "{p95}");

    // an orphan: a pod force-deleted while skylet is down leaves its
    // instance behind, which the sweep deletes once skylet is back
    fleet::orphan(&client, &mut s, &ns, "web", &b).await;
    // the orphan: counted, and its alert fires (it has no `for`)
    eventually(
        "SkyletOrphansDeleted firing for b",
        Duration::from_secs(60),
        || async {
            prom.firing("SkyletOrphansDeleted")
                .iter()
                .any(|a| a["labels"]["backend"] == b.as_str())
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sample(
            &scrape(&s),
            &["skylet_orphans_deleted_total{", &format!("backend=\"{b}\"")]
        ),
        1.0
    );
    assert!(
        prom.firing("SkyletBackendDown").is_empty(),
        "no backend is down"
    );

    // every expression of the dashboard, over the whole workload
    let end = unix_now();
    let mut panels = Vec::new();
    for (title, expr, legend) in dashboard_exprs() {
        let q = grafana_vars(&expr);
        let data = prom
            .api(
                "query_range",
                &[
                    ("query", &q),
                    ("start", &format!("{start:.3}")),
                    ("end", &format!("{end:.3}")),
                    ("step", "1"),
                ],
            )
            .unwrap_or_else(|e| panic!("panel {title}: {q}: {e}"));
        // only the series of this test's fleet and namespaces
        let series: Vec<Value> = data["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["metric"].as_object().unwrap().values().any(|v| {
                    v.as_str()
                        .is_some_and(|v| v.starts_with(&fleet) || v == ns || v == costly)
                })
            })
            .cloned()
            .collect();
        assert!(
            !series.is_empty(),
            "panel {title}: {q} returned nothing under the workload: {data}"
        );
        panels.push(
            json!({"title": title, "expr": q, "legend": legend, "series": series,
                           "start": start, "end": end}),
        );
    }
    let out = repo_root().join("target/monitoring");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("panels.json"),
        serde_json::to_string_pretty(&json!({
            "fleet": fleet,
            // readable names for the pictures
            "namespaces": {ns.clone(): "shop", costly.clone(): "batch"},
            "panels": panels,
        }))
        .unwrap(),
    )
    .unwrap();
    for ns in [&ns, &costly] {
        let _ = Api::<Deployment>::namespaced(client.clone(), ns)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
}

/// Jaeger v1.75.0 (its all-in-one binary, built by hack/setup) on loopback:
/// OTLP/HTTP in, the query API out, spans in memory; stopped when dropped.
struct Jaeger {
    child: Child,
    otlp_port: u16,
    query_port: u16,
    dir: tempfile::TempDir,
}

impl Jaeger {
    fn start() -> Jaeger {
        let out = Command::new(repo_root().join("hack/tools/build.sh"))
            .args(["--bin", "jaeger"])
            .output()
            .unwrap();
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("jaeger");
        assert!(
            bin.exists(),
            "{} is missing: run hack/setup test",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let (otlp_port, query_port, grpc_port) = (free_port(), free_port(), free_port());
        let config = format!(
            "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      \
             receivers: [otlp]\n      processors: [batch]\n      exporters: [jaeger_storage_exporter]\n  \
             telemetry:\n    metrics: {{level: none}}\n    logs: {{level: info}}\n\
             extensions:\n  jaeger_query:\n    storage: {{traces: mem}}\n    \
             http: {{endpoint: '127.0.0.1:{query_port}'}}\n    grpc: {{endpoint: '127.0.0.1:{grpc_port}'}}\n  \
             jaeger_storage:\n    backends:\n      mem: {{memory: {{max_traces: 10000}}}}\n\
             receivers:\n  otlp:\n    protocols:\n      http: {{endpoint: '127.0.0.1:{otlp_port}'}}\n\
             processors:\n  batch: {{timeout: 200ms}}\n\
             exporters:\n  jaeger_storage_exporter: {{trace_storage: mem}}\n"
        );
        std::fs::write(dir.path().join("jaeger.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("jaeger.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config={}",
                dir.path().join("jaeger.yaml").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let j = Jaeger {
            child,
            otlp_port,
            query_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(j.query_port, "/api/services").0 != 200 {
            assert!(Instant::now() < deadline, "jaeger not ready: {}", j.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        j
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jaeger.log")).unwrap_or_default()
    }

    /// The spans of trace `id` (32 hex digits), with their tags as a map.
    fn spans(&self, id: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
        let (status, body) = http_get(self.query_port, &format!("/api/traces/{id}"));
        if status != 200 {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"][0]["spans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let tags = s["tags"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone())))
                    .collect();
                (
                    s["operationName"].as_str().unwrap_or_default().to_owned(),
                    tags,
                )
            })
            .collect()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- jaeger log ----\n{}", self.log());
        }
    }
}

/// With --otlp-endpoint, a pod's life reaches Jaeger as one trace whose ID
/// is the pod's UID: reconcile spans with the pod's names, backend and
/// outcome, and under them the backend's create and delete calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_life_is_one_trace_in_jaeger() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let jaeger = Jaeger::start();
    let fleet = unique_name("tr");
    let a = format!("{fleet}-a");
    let endpoint = format!("http://127.0.0.1:{}", jaeger.otlp_port);
    let s = Skylet::start_fleet_with_env(
        cp,
        Path::new(BIN),
        &format!("- {{name: {a}, provider: mock, region: r1, labels: {{skylet-test: {fleet}}}}}\n"),
        "",
        &[
            ("SKYLET_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    node_ready(&client, &a).await;
    let ns = namespace(&client, "traces").await;
    let spec = json!({"nodeSelector": {"type": "virtual-kubelet", "skylet-test": fleet.clone()}});
    deployment(&client, &ns, "web", 1, template(&fleet, "web", spec)).await;
    let pod = eventually("the pod Running", Duration::from_secs(60), || async {
        pods_of(&client, &ns, "web").await.into_iter().find(running)
    })
    .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let name = pod.metadata.name.clone().unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod gone", Duration::from_secs(60), || async {
        pods_of(&client, &ns, "web").await.is_empty().then_some(())
    })
    .await;
    let trace_id = uid.replace('-', "");
    let spans = eventually(
        "the pod's trace in Jaeger with its create and delete calls",
        Duration::from_secs(30),
        || async {
            let spans = jaeger.spans(&trace_id);
            let op = |o: &str| {
                spans
                    .iter()
                    .any(|(n, t)| n == "provider_call" && t.get("op") == Some(&json!(o)))
            };
            (op("create") && op("delete")).then_some(spans)
        },
    )
    .await;
    eprintln!("{} spans in the trace of {uid}", spans.len());
    let reconciles: Vec<_> = spans.iter().filter(|(n, _)| n == "reconcile").collect();
    assert!(reconciles.len() >= 2, "{spans:?}");
    for (_, tags) in &reconciles {
        assert_eq!(tags["pod.uid"], json!(uid));
        assert_eq!(tags["pod.name"], json!(name));
        assert_eq!(tags["pod.namespace"], json!(ns));
        assert_eq!(tags["backend"], json!(a));
        assert!(tags.contains_key("outcome"), "{tags:?}");
    }
    for (_, tags) in spans.iter().filter(|(n, _)| n == "provider_call") {
        assert_eq!(tags["backend"], json!(a));
        assert_eq!(tags["provider"], json!("mock"));
        assert_eq!(tags["outcome"], json!("ok"), "{tags:?}");
    }
    let (_, services) = http_get(jaeger.query_port, "/api/services");
    assert!(services.contains("\"skylet\""), "{services}");
    drop(s);
}
