//! The meter through what Prometheus sees: the registries are encoded and
//! the numbers parsed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::{encoding::text, registry::Registry};
use serde_json::json;
use skylet_provider::{BilledSize, CancellationToken, PodRef};

use super::*;

const GI: u64 = 1 << 30;

fn fargate() -> Price {
    Price {
        vcpu_hour: 0.04048,
        memory_gib_hour: 0.004445,
        minimum_seconds: 60,
        spot: false,
    }
}

struct Fixture {
    registry: Registry,
    families: CostMetrics,
    meter: CostMeter,
}

fn fixture(price: Price, config: Config) -> Fixture {
    // as skylet's own registry: prefix and a constant label
    let mut registry = Registry::with_prefix_and_labels(
        "skylet",
        [("provider".into(), "aws-ecs".into())].into_iter(),
    );
    let families = CostMetrics::register(&mut registry);
    let meter = families.meter(
        MeterLabels {
            backend: "ecs-east".into(),
            kind: "aws-ecs".into(),
            node: "burst-1".into(),
            region: "us-east-1".into(),
        },
        price,
        config,
    );
    Fixture {
        registry,
        families,
        meter,
    }
}

impl Fixture {
    /// What a scrape returns: skylet's registry, then OpenCost's.
    fn scrape(&self) -> String {
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry).unwrap();
        text::encode_registry(&mut out, &self.families.opencost_registry()).unwrap();
        text::encode_eof(&mut out).unwrap();
        out
    }
}

/// The value of the sample `series` (name and labels, as encoded).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(rest.parse().expect("a number"))
    })
}

const COST: &str = r#"skylet_pod_cost_dollars_total{provider="aws-ecs",namespace="shop",pod="web",backend="ecs-east",region="us-east-1"}"#;
const NODE: &str = r#"{instance="burst-1",node="burst-1",instance_type="aws-ecs",region="us-east-1",provider_id="ecs-east",arch="amd64"}"#;

fn container(name: &str) -> String {
    format!(
        r#"{{namespace="shop",pod="web",container="{name}",instance="burst-1",node="burst-1"}}"#
    )
}

fn web() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "web", "uid": "uid-web"},
        "spec": {"containers": [
            {"name": "app", "resources": {"requests": {"cpu": "750m", "memory": "1536Mi"}}},
            {"name": "proxy", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
        ]},
    }))
    .unwrap()
}

#[test]
fn opencost_series_have_their_exact_names_and_skylets_its_prefix() {
    let f = fixture(
        Price {
            spot: true,
            ..fargate()
        },
        Config::default(),
    );
    let s = f.scrape();
    assert_eq!(
        value(&s, &format!("node_cpu_hourly_cost{NODE}")),
        Some(0.04048),
        "{s}"
    );
    assert_eq!(
        value(&s, &format!("node_ram_hourly_cost{NODE}")),
        Some(0.004445)
    );
    assert_eq!(
        value(&s, &format!("node_total_hourly_cost{NODE}")),
        Some(0.0)
    );
    assert_eq!(
        value(&s, &format!("kubecost_node_is_spot{NODE}")),
        Some(1.0)
    );
    assert!(s.contains("# TYPE node_cpu_hourly_cost gauge\n"), "{s}");
    assert!(!s.contains("skylet_pod_cost"), "no pod, no family: {s}");
    f.meter
        .started_pod(&web(), BilledSize::new(1000, GI), Instant::now());
    let s = f.scrape();
    assert!(
        s.contains("# TYPE skylet_pod_cost_dollars counter\n"),
        "{s}"
    );
    assert!(
        s.contains("# TYPE container_memory_allocation_bytes gauge\n"),
        "{s}"
    );
    assert!(s.contains("# TYPE container_cpu_allocation gauge\n"), "{s}");
    assert!(
        !s.contains("skylet_node_")
            && !s.contains("skylet_container_")
            && !s.contains("skylet_kubecost"),
        "{s}"
    );
    assert!(
        !s.contains("node_cpu_hourly_cost{provider="),
        "no constant label: {s}"
    );
    assert_eq!(s.matches("# EOF").count(), 1);
}

#[test]
fn a_pod_accrues_while_it_runs_and_is_billed_the_minimum_when_it_stops() {
    let f = fixture(fargate(), Config::default());
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let pod = web();
    let r = PodRef::of(&pod);
    // 1 vCPU / 2 GiB: 0.04937 dollars an hour
    f.meter.started_pod(&pod, BilledSize::new(1000, 2 * GI), t0);
    let s = f.scrape();
    assert_eq!(value(&s, COST), Some(0.0), "the series starts at 0: {s}");
    assert_eq!(
        value(&s, &format!("node_total_hourly_cost{NODE}")),
        Some(0.04937)
    );
    assert_eq!(
        value(&s, &format!("container_cpu_allocation{}", container("app"))),
        Some(0.75)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_cpu_allocation{}", container("proxy"))
        ),
        Some(0.25)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_memory_allocation_bytes{}", container("app"))
        ),
        Some(1_610_612_736.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_memory_allocation_bytes{}", container("proxy"))
        ),
        Some(536_870_912.0)
    );

    // a repeated start changes nothing
    assert!(f.meter.is_running(&r));
    f.meter
        .started_pod(&pod, BilledSize::new(4000, 8 * GI), at(5));
    f.meter.accrue(at(10));
    // 10 s: 0.04937 × 10 / 3600 = 0.000137138888…
    assert_eq!(value(&f.scrape(), COST), Some(0.000_137_138_888));
    f.meter.accrue(at(30));
    assert_eq!(value(&f.scrape(), COST), Some(0.000_411_416_666));

    // stops after 40 s: billed 60
    f.meter.stopped(&r, at(40));
    assert!(!f.meter.is_running(&r));
    let s = f.scrape();
    assert_eq!(value(&s, COST), Some(0.000_822_833_333), "{s}");
    assert_eq!(
        value(&s, &format!("node_total_hourly_cost{NODE}")),
        Some(0.0)
    );
    assert!(!s.contains("container_cpu_allocation{"), "{s}");
    assert!(!s.contains("container_memory_allocation_bytes{"), "{s}");

    // stopping again, and accruing, change nothing; the series stays for
    // the linger time (5 minutes), then goes
    f.meter.stopped(&r, at(100));
    f.meter.accrue(at(339));
    assert_eq!(value(&f.scrape(), COST), Some(0.000_822_833_333));
    f.meter.accrue(at(340));
    assert_eq!(value(&f.scrape(), COST), None);
}

#[test]
fn a_long_run_is_billed_its_duration_and_the_series_continues_for_a_new_pod_of_the_name() {
    let f = fixture(fargate(), Config::default());
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let pod = web();
    f.meter.started_pod(&pod, BilledSize::new(1000, 2 * GI), t0);
    f.meter.accrue(at(3600));
    f.meter.stopped(&PodRef::of(&pod), at(3600));
    assert_eq!(value(&f.scrape(), COST), Some(0.04937));

    // web replaced by a pod of the same name (a StatefulSet) before the
    // series went: it continues from 0.04937
    let new = PodRef::new("shop", "web", "uid-web-2");
    f.meter.stopped(&new, at(3601)); // not running: nothing
    f.meter
        .started(&new, BilledSize::new(250, GI / 2), at(3700));
    // a stop for the old pod no longer counts
    f.meter.stopped(&PodRef::of(&pod), at(3710));
    let s = f.scrape();
    assert_eq!(
        value(&s, &format!("node_total_hourly_cost{NODE}")),
        Some(0.012_342_5)
    );
    assert_eq!(
        value(&s, &format!("container_cpu_allocation{}", container(""))),
        Some(0.25)
    );
    f.meter.accrue(at(3700 + 3600));
    // 0.04937 + 0.0123425
    assert_eq!(value(&f.scrape(), COST), Some(0.061_712_5));
    f.meter.accrue(at(20_000));
    assert!(value(&f.scrape(), COST).is_some(), "still running");
}

#[test]
fn a_sweep_stops_pods_the_backend_no_longer_runs() {
    let f = fixture(
        Price {
            minimum_seconds: 0,
            ..fargate()
        },
        Config::default(),
    );
    let t0 = Instant::now();
    let a = PodRef::new("shop", "a", "uid-a");
    let b = PodRef::new("shop", "b", "uid-b");
    f.meter.started(&a, BilledSize::new(1000, 0), t0);
    f.meter.started(&b, BilledSize::new(1000, 0), t0);
    f.meter
        .retain_running(t0 + Duration::from_secs(36), |p| p.uid == "uid-a");
    f.meter.accrue(t0 + Duration::from_secs(72));
    let s = f.scrape();
    let series = |pod: &str| {
        format!(
            r#"skylet_pod_cost_dollars_total{{provider="aws-ecs",namespace="shop",pod="{pod}",backend="ecs-east",region="us-east-1"}}"#
        )
    };
    // 0.04048 × 72 / 3600 and × 36 / 3600
    assert_eq!(value(&s, &series("a")), Some(0.000_809_6));
    assert_eq!(value(&s, &series("b")), Some(0.000_404_8));
    assert_eq!(
        value(&s, &format!("node_total_hourly_cost{NODE}")),
        Some(0.04048)
    );
}

/// Waits up to 10 s for the pod's cost to satisfy `cond`.
async fn within(f: &Fixture, what: &str, cond: impl Fn(Option<f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = value(&f.scrape(), COST);
        if cond(v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {v:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The timer on the real clock (tokio's paused clock needs its
/// `test-util` feature, which this crate's tests do not enable): exact
/// values are the business of the tests above, with injected instants.
#[tokio::test]
async fn the_timer_accrues_while_pods_run_and_removes_the_series_after_the_linger_time() {
    let f = fixture(
        fargate(),
        Config {
            accrue_every: Duration::from_millis(10),
            linger: Duration::from_millis(200),
        },
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(f.meter.clone().run(shutdown.clone()));
    let pod = web();
    f.meter
        .started_pod(&pod, BilledSize::new(16_000, 120 * GI), now());
    within(&f, "accrued while running", |v| v.is_some_and(|v| v > 0.0)).await;
    let stopped = now();
    f.meter.stopped(&PodRef::of(&pod), stopped);
    let billed = value(&f.scrape(), COST).unwrap();
    // at least the minimum: 16 × 0.04048 / 60 + 120 × 0.004445 / 60
    assert!(billed >= 0.019_684_666, "{billed}");
    within(&f, "removed after the linger time", |v| v.is_none()).await;
    assert!(stopped.elapsed() >= Duration::from_millis(200));
    shutdown.cancel();
    task.await.unwrap();
}
