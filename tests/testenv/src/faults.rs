//! The fault suite (issue #15): skylet against APIs that fail.
//!
//! | scenario | what it shows |
//! |---|---|
//! | [`backend_under_faults`] | a backend behind a [`FaultProxy`] that answers `share` of the requests with the API's own throttling, 500, 503 (and ARM's 409), delays them, resets connections or loses answers: every pod of a burst Running, each created once, calls per pod bounded, `Retry-After` honoured; then every pod deleted and no instance left |
//! | [`apf_rejects_skylet`] | the home apiserver's API Priority and Fairness rejecting skylet's user with 429 (a priority level with no seats, [`APF`]): the burst Running and deleted all the same, `Retry-After` honoured (through a proxy that passes everything and watches) |
//! | [`home_restart_mid_burst`] | kube-apiserver or etcd of the home cluster stopped mid-burst and started again: every pod Running, each created once |
//!
//! Figures (faults by kind, requests per pod as skylet's
//! `skylet_backend_api_*` metrics and the proxy count them, waits after a
//! `Retry-After`) are printed with each report.

use std::{
    fmt,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;

use crate::{
    ControlPlane, SKYLET_USER, Skylet,
    crash::{Census, create_pods, delete_pods, list, one_more_sweep, within_one_sweep},
    k8s::{namespace, node_ready, sample_sum, scrape},
    proxy::{Api, Fault, FaultProxy, Faults, Stats, Upstream},
    suite::{BackendUnderTest, BehindProxy},
    unique_name,
};

/// How a fault scenario runs.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Pods in the burst.
    pub pods: usize,
    /// Share of requests faulted.
    pub share: f64,
    /// The seed of the draws.
    pub seed: u64,
    /// How long the pods may take to be Running, and to be gone.
    pub timeout: Duration,
}

impl FaultPlan {
    /// The CI plan: 100 pods, 30% of the requests faulted.
    pub fn ci(seed: u64) -> Self {
        Self {
            pods: 100,
            share: 0.3,
            seed,
            timeout: Duration::from_secs(300),
        }
    }
}

/// The kinds the proxy injects for `api`: all that the API has (409 only
/// on ARM); lost answers only where creates are idempotent by name (ARM,
/// Kubernetes: moto ignores ECS's `clientToken`).
pub fn kinds(api: Api) -> Vec<Fault> {
    let mut v = vec![
        Fault::Throttle,
        Fault::Internal,
        Fault::Unavailable,
        Fault::Delay,
        Fault::Reset,
    ];
    match api {
        Api::Arm => v.extend([Fault::Conflict, Fault::LostAnswer]),
        Api::Kubernetes => v.push(Fault::LostAnswer),
        Api::Ecs => {}
    }
    v
}

/// skylet's view of its backend API use (`skylet_backend_api_*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiUse {
    /// Operations skylet called.
    pub calls: f64,
    /// Requests sent, retries included.
    pub requests: f64,
    /// Of them, throttled.
    pub throttled: f64,
    /// Operations that failed after their retries.
    pub errors: f64,
}

impl ApiUse {
    /// From a scrape of `s`.
    pub fn of(s: &Skylet) -> Self {
        let m = scrape(s);
        Self {
            calls: sample_sum(&m, &["skylet_backend_api_calls_total{"]),
            requests: sample_sum(&m, &["skylet_backend_api_requests_total{"]),
            throttled: sample_sum(
                &m,
                &[
                    "skylet_backend_api_requests_total{",
                    "outcome=\"throttled\"",
                ],
            ),
            errors: sample_sum(&m, &["skylet_backend_api_errors_total{"]),
        }
    }
}

/// What a fault scenario saw.
#[derive(Clone, Debug, Default)]
pub struct FaultReport {
    /// Which scenario and backend.
    pub what: String,
    /// Pods.
    pub pods: usize,
    /// Seconds until every pod was Running.
    pub burst_secs: f64,
    /// Seconds until every pod was gone.
    pub delete_secs: f64,
    /// The census once every pod was Running.
    pub census: Census,
    /// Pods with more than one instance ever.
    pub created_twice: usize,
    /// skylet's API use once every pod was Running, and at the end.
    pub api_burst: ApiUse,
    /// skylet's API use at the end.
    pub api_end: ApiUse,
    /// The proxy's counts once every pod was Running, and at the end.
    pub proxy_burst: Stats,
    /// The proxy's counts at the end.
    pub proxy_end: Stats,
    /// Instances left after a sweep that followed the delete.
    pub left: usize,
    /// Free text (APF rejections, restart times).
    pub note: String,
}

fn per(n: f64, pods: usize) -> f64 {
    n / pods.max(1) as f64
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.pods;
        let (b, e) = (&self.proxy_burst, &self.proxy_end);
        let creates: u64 = b.creates_forwarded.values().map(|n| u64::from(*n)).sum();
        write!(
            f,
            "faults {}: {p} pods Running after {:.1}s, gone after {:.1}s; running {}/{}, duplicates {}, missing {}, orphans {}, created twice {}, left {}; \
             faults injected {} ({}) of {} requests; skylet per pod: burst {:.2} calls {:.2} requests ({:.0} throttled, {:.0} failed ops), whole run {:.2} calls {:.2} requests; \
             proxy per pod: burst {:.2} received {:.2} forwarded, whole run {:.2} received; creates forwarded per pod {:.2}, accepted twice {} (idempotent repeats after a lost answer); \
             Retry-After: {} followed, {} too early, shortest wait {:?}; API's own 429s {}{}",
            self.what,
            self.burst_secs,
            self.delete_secs,
            self.census.running,
            self.census.pods,
            self.census.duplicates.len(),
            self.census.missing.len(),
            self.census.orphans.len(),
            self.created_twice,
            self.left,
            e.faults(),
            e.injected_line(),
            e.received,
            per(self.api_burst.calls, p),
            per(self.api_burst.requests, p),
            self.api_burst.throttled,
            self.api_burst.errors,
            per(self.api_end.calls, p),
            per(self.api_end.requests, p),
            per(b.received as f64, p),
            per(b.forwarded as f64, p),
            per(e.received as f64, p),
            per(creates as f64, p),
            e.accepted_twice().len(),
            e.retry_after_checks,
            e.retry_after_violations,
            e.retry_after_min_wait,
            e.upstream_throttled,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("; {}", self.note)
            }
        )
    }
}

fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| crate::k8s::phase(p) == "Running")
        .count()
}

/// Bursts `n` pods of `app` onto `node`, waits for all Running: the pods
/// and the seconds it took.
async fn burst(
    client: &kube::Client,
    ns: &str,
    node: &str,
    app: &str,
    n: usize,
    timeout: Duration,
    during: impl std::future::Future<Output = ()>,
) -> (Vec<Pod>, f64) {
    let t0 = Instant::now();
    let creating = create_pods(client, ns, node, app, n);
    during.await;
    creating.await.expect("the creates");
    let pods = crate::eventually(&format!("{n} pods Running"), timeout, || async {
        let pods = list(client, ns, app).await;
        (pods.len() == n && running(&pods) == n).then_some(pods)
    })
    .await;
    (pods, t0.elapsed().as_secs_f64())
}

/// Deletes every pod of `app`, waits until they are gone: the seconds.
async fn delete_all(
    client: &kube::Client,
    ns: &str,
    app: &str,
    pods: &[Pod],
    timeout: Duration,
) -> f64 {
    let t0 = Instant::now();
    let names = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    delete_pods(client, ns, names, 50)
        .await
        .expect("the deletes");
    crate::eventually("every pod gone", timeout, || async {
        list(client, ns, app).await.is_empty().then_some(())
    })
    .await;
    t0.elapsed().as_secs_f64()
}

/// The fault scenario on backend `b` (see the module docs); panics when a
/// pod does not run, is created twice, is left behind, or a
/// `Retry-After` is not honoured.
pub async fn backend_under_faults<B: BehindProxy>(b: &B, plan: &FaultPlan) -> FaultReport {
    let cp = ControlPlane::shared();
    let client = cp.client().await.expect("a client");
    let node = unique_name(&format!("{}-faults", B::SHORT));
    let mut faults = Faults::share(plan.share, &kinds(B::API), plan.seed);
    faults.delay = Duration::from_millis(800);
    let proxy = b.proxy(faults);
    let s = b.skylet_through(cp, &node, &proxy, &[]);
    node_ready(&client, &node).await;
    let ns = namespace(&client, &format!("{}-faults", B::SHORT)).await;
    let app = "faults";
    let (pods, burst_secs) =
        burst(&client, &ns, &node, app, plan.pods, plan.timeout, async {}).await;
    one_more_sweep(&s, Duration::from_secs(60)).await;
    let mut report = FaultReport {
        what: format!("{} ({:.0}% of requests)", B::PROVIDER, plan.share * 100.0),
        pods: plan.pods,
        burst_secs,
        census: Census::of(&pods, &b.instances(&s).await),
        created_twice: Census::of(&pods, &b.instances_ever(&s).await)
            .duplicates
            .len(),
        api_burst: ApiUse::of(&s),
        proxy_burst: proxy.stats(),
        ..FaultReport::default()
    };
    report.delete_secs = delete_all(&client, &ns, app, &pods, plan.timeout).await;
    report.left = within_one_sweep(&s, || b.instances(&s)).await.len();
    report.api_end = ApiUse::of(&s);
    report.proxy_end = proxy.stats();
    eprintln!("{report}");
    // a lost answer makes the client send the create again: ARM's PUT by
    // name updates the same group (counted by created_twice), Kubernetes
    // answers 409; only a create that is not idempotent must never be
    // accepted twice (ECS's RunTask, whose lost answers are not injected)
    check(&report, plan.pods, B::API == Api::Ecs);
    b.verify();
    report
}

/// What every fault scenario must show (`once`: no create accepted
/// twice by the API either).
fn check(r: &FaultReport, n: usize, once: bool) {
    let c = &r.census;
    assert_eq!((c.running, c.instances), (n, n), "{c:?}");
    assert!(
        c.duplicates.is_empty() && c.missing.is_empty() && c.orphans.is_empty(),
        "{c:?}"
    );
    assert_eq!(r.created_twice, 0, "no pod created twice");
    if once {
        assert_eq!(
            r.proxy_end.accepted_twice(),
            [],
            "no create accepted twice by the API"
        );
    }
    assert_eq!(r.left, 0, "no instance left");
    assert_eq!(
        r.proxy_end.retry_after_violations, 0,
        "Retry-After honoured"
    );
}

/// API Priority and Fairness for `user`: a priority level without seats
/// of its own that rejects at once, and a FlowSchema sending every request
/// of the user there (kube-apiserver answers 429 with `Retry-After`).
pub const APF: &str = r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: skylet-starved}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 0
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse: {type: Reject}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: skylet-starved}
spec:
  priorityLevelConfiguration: {name: skylet-starved}
  matchingPrecedence: 500
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects: [{kind: User, user: {name: USER}}]
    resourceRules:
    - {verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"], clusterScope: true}
    nonResourceRules:
    - {verbs: ["*"], nonResourceURLs: ["*"]}
"#;

/// kube-apiserver's count of requests it rejected at priority level `level`.
pub fn apf_rejections(cp: &ControlPlane, level: &str) -> f64 {
    let (ok, out, _) = crate::k8s::kubectl(cp, &["get", "--raw", "/metrics"]);
    if !ok {
        return 0.0;
    }
    sample_sum(
        &out,
        &[
            "apiserver_flowcontrol_rejected_requests_total{",
            &format!("priority_level=\"{level}\""),
        ],
    )
}

fn apply(cp: &ControlPlane, yaml: &str) {
    use std::io::Write;
    let mut child = cp
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kubectl runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(yaml.as_bytes()).expect("kubectl's stdin");
    }
    assert!(
        child.wait().is_ok_and(|s| s.success()),
        "kubectl apply failed"
    );
}

/// The APF scenario on `cp` (a control plane of the test's own: the
/// flow schema starves skylet's test user), with the simulated backend:
/// skylet reaches the apiserver through a proxy that injects nothing and
/// watches `Retry-After`.
pub async fn apf_rejects_skylet(
    cp: &ControlPlane,
    bin: &std::path::Path,
    pods: usize,
) -> FaultReport {
    let client = cp.client().await.expect("a client");
    apply(cp, &APF.replace("USER", SKYLET_USER));
    let upstream = Upstream::from_kubeconfig(
        &cp.kubeconfig_for(SKYLET_USER, &[])
            .expect("skylet's kubeconfig"),
    )
    .expect("the apiserver");
    let proxy =
        FaultProxy::start(Api::Kubernetes, upstream, true, None, Faults::none()).expect("a proxy");
    let node = unique_name("apf");
    let kc = proxy
        .kubeconfig(&cp.kubeconfig, &format!("apf-{node}"))
        .expect("a kubeconfig through the proxy");
    let kc = kc.display().to_string();
    let s = Skylet::start_with_env(cp, bin, &node, &[], &[("KUBECONFIG", &kc)]);
    let before = apf_rejections(cp, "skylet-starved");
    node_ready(&client, &node).await;
    let ns = namespace(&client, "apf").await;
    let timeout = Duration::from_secs(300);
    let (pods, burst_secs) = burst(&client, &ns, &node, "apf", pods, timeout, async {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut report = FaultReport {
        what: "home apiserver, APF rejecting skylet's user".into(),
        pods: pods.len(),
        burst_secs,
        census: Census::of(&pods, &crate::backends::Mock::default().instances(&s).await),
        proxy_burst: proxy.stats(),
        ..FaultReport::default()
    };
    let rejected_burst = apf_rejections(cp, "skylet-starved") - before;
    report.delete_secs = delete_all(&client, &ns, "apf", &pods, timeout).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.left = crate::backends::Mock::default().instances(&s).await.len();
    report.proxy_end = proxy.stats();
    let rejected = apf_rejections(cp, "skylet-starved") - before;
    report.note = format!(
        "apiserver rejected {rejected_burst:.0} of skylet's requests in the burst, {rejected:.0} in all"
    );
    eprintln!("{report}");
    check(&report, report.pods, true);
    assert!(rejected > 0.0, "APF rejected some of skylet's requests");
    drop(s);
    let _ = crate::k8s::kubectl(
        cp,
        &[
            "delete",
            "flowschema,prioritylevelconfiguration",
            "skylet-starved",
        ],
    );
    report
}

/// Stops `component` of `cp` after `after`, starts it again `down` later,
/// during a burst of `pods` on the simulated backend: every pod Running,
/// each created once, then deleted.
pub async fn home_restart_mid_burst(
    cp: &ControlPlane,
    bin: &std::path::Path,
    component: &str,
    pods: usize,
    after: Duration,
    down: Duration,
) -> FaultReport {
    let client = cp.client().await.expect("a client");
    let node = unique_name(&format!("restart-{}", component.replace("kube-", "")));
    let s = Skylet::start(cp, bin, &node, &[]);
    node_ready(&client, &node).await;
    let ns = namespace(&client, "restart").await;
    let timeout = Duration::from_secs(300);
    let restart = async {
        tokio::time::sleep(after).await;
        cp.stop_component(component).expect("stopped");
        tokio::time::sleep(down).await;
        let t = Instant::now();
        cp.start_component(component).expect("started");
        t.elapsed()
    };
    let ready_after = std::sync::Mutex::new(Duration::ZERO);
    let (pods, burst_secs) = burst(&client, &ns, &node, "r", pods, timeout, async {
        let t = restart.await;
        *ready_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let instances = crate::backends::Mock::default().instances(&s).await;
    let mut report = FaultReport {
        what: format!("home {component} restarted mid-burst"),
        pods: pods.len(),
        burst_secs,
        census: Census::of(&pods, &instances),
        ..FaultReport::default()
    };
    report.delete_secs = delete_all(&client, &ns, "r", &pods, timeout).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.left = crate::backends::Mock::default().instances(&s).await.len();
    let creates = s.backend_creates();
    let ready = *ready_after
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.note = format!(
        "stopped {after:?} into the burst for {down:?}, ready again {ready:.1?} after its start; backend creates {creates}"
    );
    eprintln!("{report}");
    check(&report, report.pods, true);
    assert_eq!(
        creates,
        u64::try_from(report.pods).unwrap_or(0),
        "each pod created once"
    );
    report
}
