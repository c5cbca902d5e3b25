//! One list of scenarios that every backend runs, against the real control
//! plane, with per-backend hooks (after virtual-kubelet's test/e2e suite):
//! the scenarios say what a user sees on any virtual node; a backend says,
//! through [`BackendUnderTest`], how to start it, how to list its
//! instances and count its create calls, and what it cannot run.
//!
//! | scenario | what it shows |
//! |---|---|
//! | [`deployment_runs_one_instance_per_pod_and_delete_removes_them`] | node labels and capacity; a Deployment is one instance per pod, tagged with the pod, Running (and Ready) with the instance's IP; deleting it leaves no instance, and no pod object outlives its instance |
//! | [`logs_plain_tail_timestamps_limit_and_follow`] | `kubectl logs`, `--tail`, `--timestamps`, `--limit-bytes`, `-f` |
//! | [`restart_adopts_and_the_sweep_removes_orphans`] | a crash right after the first create, a restart: exactly one instance per pod; a pod deleted while skylet is down: its instance is removed by the sweep, the others are kept |
//! | [`unsupported_spec_fails_the_pod_with_an_event`] | a spec the backend cannot run: Failed naming the field, a Warning Event |
//! | [`probes_restarts_and_previous_logs_follow_the_backend`] | a container that ends restarts with `restartCount` and `lastState`, `kubectl logs --previous` shows the run before (or a 400 where the backend keeps no such log, never the current log), a failing exec readiness probe keeps a Running pod not Ready, a probe the backend cannot run gets a Warning Event `ProbeNotSupported` naming it (issue #16; per backend: [`Probing`]) |
//! | [`top_and_cpu_autoscaling_follow_the_backend_load`] | `kubectl top pod` and `top node`, `/stats/summary`, through metrics-server, from the backend's own metrics API; a CPU HorizontalPodAutoscaler scales a Deployment up under load and down when it stops (issue #16) |
//! | [`capacity_refusal_fails_owned_pods_taints_the_node_and_keeps_bare_pods_pending`] | a quota used up: a Deployment's pods beyond it Failed `BackendCapacityUnavailable`, the node tainted `skylet.io/capacity-exhausted:NoSchedule` and their replacements unschedulable meanwhile, a bare pod Pending with a Warning Event, creates backed off (backends that implement [`WithQuota`]) |
//!
//! Two more suites drive every backend through these hooks (plus
//! [`BackendUnderTest::instances_ever`] and, for a backend with an API of
//! its own, [`BehindProxy`]): kill -9 during a 200-pod burst and delete
//! ([`crate::crash`], tests/crash.rs) and injected API faults
//! ([`crate::faults`], tests/faults.rs), on the backends of
//! [`crate::backends`].
//!
//! A test binary runs the scenarios its backend supports with
//! [`backend_suite!`](crate::backend_suite), each as a test of its own
//! (`suite::<scenario>`): tests/ecs.rs (moto cannot refuse a task for
//! capacity), tests/aci.rs and tests/backends.rs (the simulated backend).
//! Backend-specific tests stay beside them in those files.
//!
//! Changes after creation (issue #16), with per-backend expectations
//! ([`BackendUnderTest::CHANGES`]):
//!
//! | scenario | what it shows |
//! |---|---|
//! | [`active_deadline_fails_the_pod_and_stops_its_instance`] | `activeDeadlineSeconds`: the pod Failed `DeadlineExceeded` with a Warning Event, its instance stopped |
//! | [`changes_after_creation_apply_or_say_why_not`] | an image change restarts the container, or a Warning Event says why not; `kubectl debug` runs an ephemeral container, or its status says why it cannot (and `kubectl debug -i` returns); an in-place resize is passed on, or the pod gets `PodResizePending` `Infeasible` |

use std::{
    future::Future,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    ControlPlane, Skylet, eventually,
    k8s::{
        deployment, events_of, kubectl, namespace, node_ready, node_template, phase, pods_gone,
        pods_where, running_ready, running_with_ip,
    },
    proxy::{Api as ProxyApi, FaultProxy, Faults},
    unique_name,
};

/// One instance (task, container group, simulated pod) a backend runs for
/// a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The pod's UID, from the instance's tags.
    pub uid: String,
    /// The pod's namespace, from its tags.
    pub namespace: String,
    /// The pod's name, from its tags.
    pub name: String,
    /// The instance's IP, when the backend's listing shows it.
    pub ip: Option<String>,
}

/// A backend as the shared scenarios drive it.
pub trait BackendUnderTest: Sized + Send + Sync + 'static {
    /// Its `--provider` (the `skylet.io/provider` label).
    const PROVIDER: &'static str;
    /// A short prefix for node and namespace names.
    const SHORT: &'static str;
    /// Whether its pods become Ready (moto never starts ECS containers).
    const READY: bool = true;
    /// Whether a spec it cannot run is refused before any create call (a
    /// cloud API); the simulated backend refuses in its create.
    const CHECKS_SPEC_BEFORE_CALLING: bool = true;
    /// Which changes to a running pod it applies (issue #16); it refuses
    /// the others, saying so on the pod.
    const CHANGES: Changes = Changes::REFUSED;

    /// Starts the backend's emulator (or takes the test binary's).
    fn start() -> impl Future<Output = Self> + Send;

    /// Starts skylet as `node` on this backend, with `extra` flags.
    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet;

    /// The region and zone labels its node has.
    fn node_labels(&self) -> Vec<(&'static str, String)>;

    /// The instances of `s`'s node that run or are starting (not stopped,
    /// not deleted).
    fn instances(&self, s: &Skylet) -> impl Future<Output = Vec<Instance>> + Send;

    /// How many create calls reached the backend's API so far (refused
    /// ones included).
    fn creates(&self, s: &Skylet) -> impl Future<Output = u64> + Send;

    /// Makes `pod`'s container `main` have logged `lines`, for a backend
    /// whose containers do not run (ECS on moto: written as the awslogs
    /// driver would). Backends that run the container's script do nothing:
    /// the script printed them.
    fn emit_logs(&self, s: &Skylet, pod: &Pod, lines: &[&str]) -> impl Future<Output = ()> + Send {
        let _ = (s, pod, lines);
        async {}
    }

    /// Makes `pod` (a Pod object) one this backend cannot run; returns what
    /// the refusal must name.
    fn make_unsupported(&self, pod: &mut Value) -> &'static str;

    /// The backend's own copy of `pod` where that is a Kubernetes pod (the
    /// remote backend's remote pod), to check what was passed on to it;
    /// `None` elsewhere.
    fn remote_pod(&self, s: &Skylet, pod: &Pod) -> impl Future<Output = Option<Pod>> + Send {
        let _ = (s, pod);
        async { None }
    }

    /// Checks what the backend shows of the instances of `uids`, which
    /// skylet removed (ECS: stopped with skylet's reason).
    fn check_removed(&self, s: &Skylet, uids: &[String]) -> impl Future<Output = ()> + Send {
        let _ = (s, uids);
        async {}
    }

    /// Checks on the backend at the end of every scenario (the ACI
    /// emulator: every answer matched the spec).
    fn verify(&self) {}

    /// What it does with probes and restarts.
    const PROBING: Probing = Probing {
        readiness: false,
        restarts: false,
        previous_logs: false,
    };

    /// A probe it does not run (merged into a container) and what the
    /// Warning Event `ProbeNotSupported` it records names.
    fn probe_not_run(&self) -> Option<(Value, &'static str)> {
        None
    }

    /// Makes `pod`'s container `main` use `millicores` of CPU (and 64 MiB)
    /// as the backend's metrics API reports it, for a backend whose
    /// containers do not run (ECS on moto: CloudWatch datapoints as
    /// Container Insights would publish them). Backends whose containers
    /// run the `load` statement of their script do nothing.
    fn emit_load(&self, s: &Skylet, pod: &Pod, millicores: u64) -> impl Future<Output = ()> + Send {
        let _ = (s, pod, millicores);
        async {}
    }

    /// Every instance the backend ran for `s`'s node that it still shows,
    /// stopped or terminating ones included (ECS keeps STOPPED tasks for
    /// a while): two of one pod here is a pod created twice, even if one
    /// was stopped since. The crash suite ([`crate::crash`]) counts them.
    fn instances_ever(&self, s: &Skylet) -> impl Future<Output = Vec<Instance>> + Send {
        self.instances(s)
    }
}

/// A backend with an API of its own that a [`FaultProxy`] can sit in
/// front of (the fault suite, [`crate::faults`]).
pub trait BehindProxy: BackendUnderTest {
    /// Whose error shapes the proxy answers with.
    const API: ProxyApi;

    /// A proxy in front of the backend's API with `faults` (the backend
    /// may narrow which requests are eligible: ACI's token endpoint is
    /// not ARM).
    fn proxy(&self, faults: Faults) -> FaultProxy;

    /// skylet as `node` on this backend, reaching its API through `proxy`.
    fn skylet_through(
        &self,
        cp: &ControlPlane,
        node: &str,
        proxy: &FaultProxy,
        extra: &[&str],
    ) -> Skylet;
}

/// What a backend does with probes and restarts
/// ([`probes_restarts_and_previous_logs_follow_the_backend`]).
#[derive(Clone, Copy, Debug)]
pub struct Probing {
    /// A container's readiness follows its exec readiness probe.
    pub readiness: bool,
    /// A container that ends restarts (restartPolicy Always), with
    /// `restartCount` and `lastState`.
    pub restarts: bool,
    /// `kubectl logs --previous` shows the run before the last restart
    /// (else it answers 400).
    pub previous_logs: bool,
}

/// A backend whose quota can be set below what its node advertises (a
/// cloud account shared with other workloads).
pub trait WithQuota: BackendUnderTest {
    /// The backend with room for `pods` pods; its node advertises 100.
    fn start_with_quota(pods: u32) -> impl Future<Output = Self> + Send;
}

/// Runs `scenario::<Backend>` as a test of its own for each scenario named,
/// in a module `suite`; `Backend` names a type in scope.
///
/// For example, in tests/aci.rs:
///
/// ```text
/// skylet_testenv::backend_suite!(Aci => deployment_runs_one_instance_per_pod_and_delete_removes_them);
/// ```
#[macro_export]
macro_rules! backend_suite {
    ($backend:ident => $($scenario:ident),+ $(,)?) => {
        /// The shared scenarios (`skylet_testenv::suite`) on this backend.
        mod suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    $crate::suite::$scenario::<super::$backend>().await;
                }
            )+
        }
    };
}

/// A scenario's skylet, node and namespace.
struct Run<B> {
    b: B,
    cp: &'static ControlPlane,
    client: Client,
    node: String,
    s: Skylet,
    ns: String,
}

async fn run<B: BackendUnderTest>(b: B, what: &str, extra: &[&str]) -> Run<B> {
    let cp = ControlPlane::shared();
    let client = cp.client().await.expect("a client");
    let node = unique_name(&format!("{}-{what}", B::SHORT));
    let s = b.skylet(cp, &node, extra);
    node_ready(&client, &node).await;
    let ns = namespace(&client, &format!("{}-{what}", B::SHORT)).await;
    Run {
        b,
        cp,
        client,
        node,
        s,
        ns,
    }
}

impl<B: BackendUnderTest> Run<B> {
    /// A pod template for the node, with a port (so that ACI gives the
    /// group an IP).
    fn template(&self, app: &str, script: &str) -> Value {
        let mut t = node_template(&self.node, app, script);
        t["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}]);
        t
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn list(&self, app: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// `n` pods of `app` Running with an IP, and Ready if the backend
    /// reports readiness.
    async fn running(&self, app: &str, n: usize, timeout: Duration) -> Vec<Pod> {
        let (what, ok): (&str, fn(&Pod) -> bool) = if B::READY {
            ("Running and Ready with an IP", running_ready)
        } else {
            ("Running with an IP", running_with_ip)
        };
        pods_where(&self.client, &self.ns, app, n, timeout, what, ok).await
    }

    async fn instances(&self) -> Vec<Instance> {
        let mut v = self.b.instances(&self.s).await;
        v.sort_by(|a, b| a.uid.cmp(&b.uid));
        v
    }

    async fn instance_uids(&self) -> Vec<String> {
        self.instances().await.into_iter().map(|i| i.uid).collect()
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        kubectl(self.cp, args)
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The node's labels and capacity; a Deployment of 2 runs as one instance
/// per pod, tagged with the pod, with the pod's IP; deleting it removes
/// every instance before the pods are gone.
pub async fn deployment_runs_one_instance_per_pod_and_delete_removes_them<B: BackendUnderTest>() {
    let r = run(B::start().await, "deploy", &[]).await;
    let n = node_ready(&r.client, &r.node).await;
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["skylet.io/provider"], B::PROVIDER);
    for (k, v) in r.b.node_labels() {
        assert_eq!(labels.get(k), Some(&v), "label {k}: {labels:?}");
    }
    let capacity = n.status.and_then(|s| s.capacity).unwrap_or_default();
    assert!(
        capacity.contains_key("cpu") && capacity.contains_key("pods"),
        "{capacity:?}"
    );

    deployment(&r.client, &r.ns, "web", 2, r.template("web", "sleep 3600")).await;
    let pods = r.running("web", 2, Duration::from_secs(90)).await;
    let instances = r.instances().await;
    assert_eq!(instances.len(), 2, "one instance per pod: {instances:#?}");
    for p in &pods {
        let i = instances
            .iter()
            .find(|i| i.uid == uid(p))
            .unwrap_or_else(|| panic!("no instance for pod {}: {instances:#?}", name(p)));
        assert_eq!(i.name, name(p));
        assert_eq!(i.namespace, r.ns);
        let pod_ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        assert!(pod_ip.is_some(), "the pod has an IP");
        if i.ip.is_some() {
            assert_eq!(pod_ip, i.ip, "the pod IP is the instance's");
        }
    }

    let (ok, _, err) = r.kubectl(&["delete", "deployment", "web", "-n", &r.ns]);
    assert!(ok, "{err}");
    pods_gone(&r.client, &r.ns, "web", Duration::from_secs(60)).await;
    // a pod object is removed only once the backend no longer reports its
    // instance: none may be left when the pods are gone
    assert_eq!(
        r.instances().await,
        [],
        "no instance outlives its pod object"
    );
    let uids: Vec<String> = pods.iter().map(uid).collect();
    r.b.check_removed(&r.s, &uids).await;
    r.b.verify();
}

/// `kubectl logs` in full, with `--tail`, `--timestamps` and
/// `--limit-bytes`, and `-f`, which shows a line written while it waits.
pub async fn logs_plain_tail_timestamps_limit_and_follow<B: BackendUnderTest>() {
    let r = run(B::start().await, "logs", &[]).await;
    // line-4 comes late enough for the checks before the follow, even on
    // a busy machine
    let script = "echo line-1; echo line-2; echo line-3; sleep 25; echo line-4; sleep 3600";
    deployment(&r.client, &r.ns, "logs", 1, r.template("logs", script)).await;
    let pods = pods_where(
        &r.client,
        &r.ns,
        "logs",
        1,
        Duration::from_secs(90),
        "Running with an IP",
        running_with_ip,
    )
    .await;
    let pod = name(&pods[0]);
    r.b.emit_logs(&r.s, &pods[0], &["line-1", "line-2", "line-3"])
        .await;
    let ns = r.ns.as_str();
    eventually(
        "the three lines in kubectl logs",
        Duration::from_secs(20),
        || async {
            let (ok, out, _) = r.kubectl(&["logs", "-n", ns, &pod]);
            (ok && out == "line-1\nline-2\nline-3\n").then_some(())
        },
    )
    .await;
    let (ok, out, err) = r.kubectl(&["logs", "-n", ns, &pod]);
    assert!(ok, "{err}");
    assert_eq!(out, "line-1\nline-2\nline-3\n");

    let (ok, out, err) = r.kubectl(&["logs", "-n", ns, &pod, "--tail", "1", "--timestamps"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(
        out.ends_with(" line-3\n") && out.starts_with("20"),
        "{out:?}"
    );
    let (ok, out, err) = r.kubectl(&["logs", "-n", ns, &pod, "--timestamps"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out:?}");
    for l in out.lines() {
        let (t, line) = l.split_once(' ').unwrap_or_default();
        assert!(
            t.parse::<Timestamp>().is_ok() && line.starts_with("line-"),
            "a timestamp, then the line: {l:?}"
        );
    }
    let (ok, out, err) = r.kubectl(&["logs", "-n", ns, &pod, "--limit-bytes", "9"]);
    assert!(ok, "{err}");
    assert_eq!(out, "line-1\nli");

    // follow from the last line: line-4 arrives while the client waits
    let mut follow =
        r.cp.kubectl()
            .args(["logs", "-f", "-n", ns, &pod, "--tail=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
    let stdout = follow.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_default()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.b.emit_logs(&r.s, &pods[0], &["line-4"]).await;
    let lines = tokio::time::timeout(Duration::from_secs(60), lines).await;
    let _ = follow.kill();
    let _ = follow.wait();
    let lines = lines
        .expect("logs -f shows the line written while it waits")
        .expect("the reader ends");
    assert_eq!(lines, ["line-3", "line-4"]);
    r.b.verify();
}

/// A crash right after the first create reached the backend and a
/// restart: exactly one instance per pod (nothing duplicated, nothing
/// lost). A pod deleted while skylet is down: the sweep after the restart
/// removes its instance (found by the pod UID tag) and keeps the others.
pub async fn restart_adopts_and_the_sweep_removes_orphans<B: BackendUnderTest>() {
    let mut r = run(B::start().await, "restart", &[]).await;
    deployment(
        &r.client,
        &r.ns,
        "crash",
        6,
        r.template("crash", "sleep 3600"),
    )
    .await;
    eventually("a first instance", Duration::from_secs(60), || async {
        (!r.b.instances(&r.s).await.is_empty()).then_some(())
    })
    .await;
    r.s.kill();
    let before = r.instances().await.len();
    r.s.start_again();
    let pods = r.running("crash", 6, Duration::from_secs(120)).await;
    // a few sweeps later, still exactly one instance per pod
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        r.instance_uids().await,
        sorted(pods.iter().map(uid).collect()),
        "exactly one instance per pod ({before} existed at the crash)"
    );

    r.s.kill();
    let victim = &pods[0];
    r.pods()
        .delete(&name(victim), &DeleteParams::default().grace_period(0))
        .await
        .expect("the pod deleted");
    Api::<Deployment>::namespaced(r.client.clone(), &r.ns)
        .patch(
            "crash",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("the deployment scaled");
    r.s.start_again();
    let kept: Vec<String> = pods.iter().skip(1).map(uid).collect();
    let left = eventually(
        "the orphaned instance removed, the others kept",
        Duration::from_secs(60),
        || async {
            let uids = r.instance_uids().await;
            (!uids.contains(&uid(victim)) && uids.len() == 5).then_some(uids)
        },
    )
    .await;
    assert_eq!(left, sorted(kept), "the sweep removes only the orphan");
    r.b.check_removed(&r.s, &[uid(victim)]).await;
    r.b.verify();
}

/// A pod the backend cannot run fails at once with a status and a Warning
/// Event that name the field, and nothing runs.
pub async fn unsupported_spec_fails_the_pod_with_an_event<B: BackendUnderTest>() {
    let r = run(B::start().await, "bad", &[]).await;
    let t = r.template("bad", "sleep 3600");
    let mut pod = json!({"metadata": {"name": "bad", "labels": {"app": "bad"}}, "spec": t["spec"]});
    let field = r.b.make_unsupported(&mut pod);
    let pod: Pod = serde_json::from_value(pod).expect("a pod");
    r.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("the pod created");
    let failed = pods_where(
        &r.client,
        &r.ns,
        "bad",
        1,
        Duration::from_secs(60),
        "Failed",
        |p| phase(p) == "Failed",
    )
    .await;
    let message = failed[0]
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(field),
        "the status names {field}: {message}"
    );
    let evs = eventually(
        "a Warning Event naming the field",
        Duration::from_secs(30),
        || async {
            let evs = events_of(&r.client, &r.ns, "bad").await;
            evs.iter()
                .any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.message.as_deref().is_some_and(|m| m.contains(field))
                })
                .then_some(evs)
        },
    )
    .await;
    assert!(!evs.is_empty());
    if B::CHECKS_SPEC_BEFORE_CALLING {
        assert_eq!(
            r.b.creates(&r.s).await,
            0,
            "nothing was sent to the backend"
        );
    }
    assert_eq!(r.instances().await, [], "nothing runs");
    r.b.verify();
}

/// The backend's quota leaves room for 3 pods while its node advertises
/// 100. A Deployment of 5: 3 run, the 2 beyond the quota fail with reason
/// `BackendCapacityUnavailable` and a message naming the backend and the
/// quota (their ReplicaSet replaces them), the node gets the
/// `skylet.io/capacity-exhausted:NoSchedule` taint for a cooldown (5 s
/// doubling to 10 here) and the replacements stay unschedulable while it
/// is on (no other node); a bare pod beyond the quota stays Pending with a
/// Warning Event, retried with backoff: creates stay few.
pub async fn capacity_refusal_fails_owned_pods_taints_the_node_and_keeps_bare_pods_pending<
    B: WithQuota,
>() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let config: PathBuf = dir.path().join("skylet.yaml");
    std::fs::write(
        &config,
        "failover: {capacity-cooldown-min: 5, capacity-cooldown-max: 10}\n",
    )
    .expect("the config file");
    let config = config.display().to_string();
    let r = run(
        B::start_with_quota(3).await,
        "quota",
        &["--config", &config],
    )
    .await;
    deployment(&r.client, &r.ns, "q", 5, r.template("q", "sleep 3600")).await;
    let failed = eventually(
        "3 Running and 2 Failed with BackendCapacityUnavailable",
        Duration::from_secs(90),
        || async {
            let list = r.list("q").await;
            let running = list.iter().filter(|p| running_with_ip(p)).count();
            let failed: Vec<Pod> = list.into_iter().filter(|p| phase(p) == "Failed").collect();
            (running == 3 && failed.len() >= 2).then_some(failed)
        },
    )
    .await;
    for p in &failed {
        let s = p.status.as_ref().expect("a status");
        assert_eq!(
            s.reason.as_deref(),
            Some("BackendCapacityUnavailable"),
            "{s:?}"
        );
        let message = s.message.as_deref().unwrap_or_default();
        assert!(
            message.contains(&r.node) && message.contains(B::PROVIDER) && message.contains("quota"),
            "the message names the backend and the quota: {message}"
        );
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(r.node.as_str())
        );
    }

    // the taint, and the replacements unschedulable under it
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(r.client.clone());
    let tainted = || async {
        let n = nodes.get(&r.node).await.ok()?;
        n.spec?
            .taints?
            .into_iter()
            .find(|t| t.key == "skylet.io/capacity-exhausted")
    };
    let taint = eventually(
        "the node tainted and 2 replacements unschedulable",
        Duration::from_secs(60),
        || async {
            let taint = tainted().await?;
            let waiting: Vec<Pod> = r
                .list("q")
                .await
                .into_iter()
                .filter(|p| !matches!(phase(p), "Failed" | "Running"))
                .collect();
            let unschedulable = |p: &Pod| {
                p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c.type_ == "PodScheduled"
                                    && c.status == "False"
                                    && c.reason.as_deref() == Some("Unschedulable")
                            })
                        })
            };
            let ok = waiting.len() == 2 && waiting.iter().all(unschedulable);
            // still tainted after the listing: the pods were looked at under it
            (ok && tainted().await.is_some()).then_some(taint)
        },
    )
    .await;
    assert_eq!(taint.effect, "NoSchedule");

    // a bare pod beyond the quota (it tolerates the taint, so it reaches
    // the node) stays Pending with a Warning Event, retried
    let mut t = r.template("solo", "sleep 3600");
    t["metadata"]["name"] = json!("solo");
    t["spec"]["tolerations"]
        .as_array_mut()
        .expect("tolerations")
        .push(json!({"key": "skylet.io/capacity-exhausted", "operator": "Exists", "effect": "NoSchedule"}));
    let solo: Pod = serde_json::from_value(t).expect("a pod");
    r.pods()
        .create(&PostParams::default(), &solo)
        .await
        .expect("the pod created");
    eventually(
        "a Warning Event BackendCapacityUnavailable on the bare pod",
        Duration::from_secs(60),
        || async {
            let evs = events_of(&r.client, &r.ns, "solo").await;
            evs.iter()
                .any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("BackendCapacityUnavailable")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains(&r.node) && m.contains("quota"))
                })
                .then_some(())
        },
    )
    .await;
    // retries back off (1 s, 2 s, 4 s, ...) and replacements wait for the
    // cooldown: after 20 s of refusals, a few creates per 10 s, not one per
    // sweep per pod
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = r.b.creates(&r.s).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let creates = r.b.creates(&r.s).await - before;
    assert!(
        creates <= 6,
        "{creates} creates in 10 s for pods that cannot fit"
    );
    let solo = r.pods().get("solo").await.expect("the bare pod");
    assert_eq!(
        phase(&solo),
        "Pending",
        "a bare pod is not failed: {:?}",
        solo.status
    );
    assert_eq!(
        r.list("q")
            .await
            .iter()
            .filter(|p| running_with_ip(p))
            .count(),
        3,
        "the pods that fit keep running"
    );
    r.b.verify();
}

/// How long a pod of [`top_and_cpu_autoscaling_follow_the_backend_load`]
/// is busy after it starts.
const BUSY: Duration = Duration::from_secs(100);

/// Issue #16: the backend's own metrics reach `kubectl top` and the
/// HorizontalPodAutoscaler through metrics-server. Each pod of a
/// Deployment (250m requested) uses 600m for its first 100 s, then 2m:
/// `kubectl top pod` shows it busy, `/stats/summary` reports its rate,
/// `kubectl top node` shows the node; a CPU HPA (100% of requests, 1 to
/// 3 replicas, no stabilization) scales the Deployment to 3 and, once the
/// pods are idle, back to 1.
pub async fn top_and_cpu_autoscaling_follow_the_backend_load<B: BackendUnderTest>() {
    let r = run(B::start().await, "hpa", &[]).await;
    r.cp.ensure_metrics_server().expect("metrics-server");
    let script = format!(
        "load 600m 64Mi; sleep {}; load 2m; sleep infinity",
        BUSY.as_secs()
    );
    deployment(&r.client, &r.ns, "busy", 1, r.template("busy", &script)).await;
    let pod = name(&r.running("busy", 1, Duration::from_secs(90)).await[0]);
    let ns = r.ns.as_str();

    // kubectl top pod: about 600m (metrics-server needs two scrapes)
    let top = r
        .fed(
            "kubectl top pod to show the pod busy",
            Duration::from_secs(150),
            || async {
                let (ok, out, _) = r.kubectl(&["top", "pod", "-n", ns, "--no-headers"]);
                let line = out.lines().find(|l| l.starts_with(&pod))?.to_owned();
                let fields: Vec<&str> = line.split_whitespace().collect();
                let milli: u64 = fields.get(1)?.strip_suffix('m')?.parse().ok()?;
                (ok && (400..=800).contains(&milli)).then_some(line)
            },
        )
        .await;
    assert_eq!(
        top.split_whitespace().nth(2),
        Some("64Mi"),
        "the memory the backend reports: {top}"
    );
    // /stats/summary, as kube-apiserver's kubelet client reads it: the
    // pod's current rate
    let pki = r.cp.dir().join("pki");
    let out = std::process::Command::new("curl")
        .args(["-sfk", "--cert"])
        .arg(pki.join("apiserver-kubelet-client.crt"))
        .arg("--key")
        .arg(pki.join("apiserver-kubelet-client.key"))
        .arg(format!("https://127.0.0.1:{}/stats/summary", r.s.port))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(&out).expect("a summary");
    let entry = summary["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == pod.as_str()))
        .unwrap_or_else(|| panic!("the pod in /stats/summary: {summary}"));
    let nano = entry["cpu"]["usageNanoCores"].as_u64().unwrap_or_default();
    assert!(
        nano >= 300_000_000,
        "usageNanoCores is the backend's rate: {entry}"
    );
    assert!(entry["containers"][0]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0));
    let (ok, out, err) = r.kubectl(&["top", "node", &r.node, "--no-headers"]);
    assert!(ok && out.starts_with(r.node.as_str()), "{out}{err}");

    // a CPU autoscaler: up to 3 while busy, down to 1 once idle
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "busy"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 100}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0},
                         "scaleUp": {"stabilizationWindowSeconds": 0}}
        }
    });
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(r.client.clone(), ns);
    hpas.create(
        &PostParams::default(),
        &serde_json::from_value(hpa).expect("an HPA"),
    )
    .await
    .expect("the HPA created");
    let replicas = || async {
        let h = hpas.get("busy").await.ok()?;
        h.status.map(|s| s.desired_replicas)
    };
    r.fed(
        "the HPA to scale up to 3",
        Duration::from_secs(120),
        || async { (replicas().await == Some(3)).then_some(()) },
    )
    .await;
    r.running("busy", 3, Duration::from_secs(90)).await;
    // each pod is busy for BUSY after it starts, then idle
    r.fed(
        "the HPA to scale down to 1 once the pods are idle",
        BUSY + Duration::from_secs(180),
        || async { (replicas().await == Some(1)).then_some(()) },
    )
    .await;
    pods_where(
        &r.client,
        ns,
        "busy",
        1,
        Duration::from_secs(60),
        "left after the scale-down",
        |p| p.metadata.deletion_timestamp.is_none(),
    )
    .await;
    r.b.verify();
}

impl<B: BackendUnderTest> Run<B> {
    /// Feeds every pod of `busy` its load by its age ([`BackendUnderTest::emit_load`]:
    /// 600m for [`BUSY`], then 2m).
    async fn feed_load(&self) {
        let now = Timestamp::now();
        for p in self.list("busy").await {
            if p.metadata.deletion_timestamp.is_some() || phase(&p) != "Running" {
                continue;
            }
            let age = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(Duration::ZERO, |t| now.duration_since(t.0).unsigned_abs());
            let load = if age < BUSY { 600 } else { 2 };
            self.b.emit_load(&self.s, &p, load).await;
        }
    }

    /// [`eventually`], feeding the load every 5 s meanwhile.
    async fn fed<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.feed_load().await;
            let next = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < next {
                if let Some(v) = check().await {
                    return v;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Which changes to a running pod a backend applies (issue #16).
#[derive(Clone, Copy, Debug)]
pub struct Changes {
    /// An image change restarts the container with the new image.
    pub image: bool,
    /// `kubectl debug` runs an ephemeral container.
    pub ephemeral: bool,
    /// An in-place resize is passed on to the backend (whose answer the
    /// pod shows).
    pub resize: bool,
}

impl Changes {
    /// None: each is refused, and the pod says so.
    pub const REFUSED: Self = Self {
        image: false,
        ephemeral: false,
        resize: false,
    };
}

/// A bare pod `name` (labels `app: name`) of `r`'s template, with `extra`
/// merged into its spec; created, then Running (and Ready where the
/// backend reports readiness).
async fn bare_pod<B: BackendUnderTest>(r: &Run<B>, name: &str, script: &str, extra: Value) -> Pod {
    let mut spec = r.template(name, script)["spec"].clone();
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let pod = json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": spec});
    let pod: Pod = serde_json::from_value(pod).expect("a pod");
    r.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("the pod created");
    r.running(name, 1, Duration::from_secs(90)).await.remove(0)
}

/// Waits for an Event on pod `name` of `type_` and `reason`; returns its
/// message.
async fn event_with<B>(r: &Run<B>, name: &str, type_: &str, reason: &str) -> String {
    eventually(
        &format!("a {type_} Event {reason} on {name}"),
        Duration::from_secs(60),
        || async {
            events_of(&r.client, &r.ns, name)
                .await
                .into_iter()
                .find(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
                .map(|e| e.message.unwrap_or_default())
        },
    )
    .await
}

/// A pod with `activeDeadlineSeconds: 15` runs, then fails with reason
/// `DeadlineExceeded` and a Warning Event, and its instance is stopped
/// (the pod object stays, Failed, as the kubelet leaves it).
pub async fn active_deadline_fails_the_pod_and_stops_its_instance<B: BackendUnderTest>() {
    let r = run(B::start().await, "deadline", &[]).await;
    let pod = bare_pod(&r, "dl", "sleep 3600", json!({"activeDeadlineSeconds": 15})).await;
    assert!(
        r.instance_uids().await.contains(&uid(&pod)),
        "the pod runs on the backend first"
    );
    let failed = pods_where(
        &r.client,
        &r.ns,
        "dl",
        1,
        Duration::from_secs(60),
        "Failed with DeadlineExceeded",
        |p| {
            phase(p) == "Failed"
                && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("DeadlineExceeded")
        },
    )
    .await;
    let started = pod.status.as_ref().and_then(|s| s.start_time.clone());
    let message = failed[0].status.as_ref().and_then(|s| s.message.clone());
    assert_eq!(
        message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    let note = event_with(&r, "dl", "Warning", "DeadlineExceeded").await;
    assert!(note.contains("deadline"), "{note}");
    eventually("the instance stopped", Duration::from_secs(60), || async {
        (!r.instance_uids().await.contains(&uid(&pod))).then_some(())
    })
    .await;
    let took = failed[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.clone())
        .zip(started)
        .map(|(end, start)| end.0.duration_since(start.0).as_secs());
    println!("failed {took:?} s after its start (deadline 15 s)");
    r.b.verify();
}

/// A running pod's image, ephemeral containers and resources change;
/// each is applied where [`BackendUnderTest::CHANGES`] says the backend
/// can, and refused visibly elsewhere.
pub async fn changes_after_creation_apply_or_say_why_not<B: BackendUnderTest>() {
    let r = run(B::start().await, "changes", &[]).await;
    let ns = r.ns.clone();
    let pod = bare_pod(&r, "chg", "echo started; sleep 3600", json!({})).await;

    // an image change
    let (ok, _, err) = r.kubectl(&["set", "image", "-n", &ns, "pod/chg", "main=busybox:1.37"]);
    assert!(ok, "{err}");
    if B::CHANGES.image {
        let note = event_with(&r, "chg", "Normal", "ImageChanged").await;
        assert!(note.contains("main=busybox:1.37"), "{note}");
        eventually(
            "the container restarted with the new image",
            Duration::from_secs(60),
            || async {
                let p = r.pods().get("chg").await.ok()?;
                let c = p.status?.container_statuses?.into_iter().next()?;
                (c.image == "busybox:1.37" && c.restart_count >= 1 && c.state?.running.is_some())
                    .then_some(())
            },
        )
        .await;
    } else {
        let note = event_with(&r, "chg", "Warning", "ImageChangeNotApplied").await;
        assert!(
            note.contains("main=busybox:1.37") && note.contains("delete the pod"),
            "the Event says what and what to do: {note}"
        );
    }

    // an ephemeral container (kubectl debug)
    let (ok, _, err) = r.kubectl(&[
        "debug",
        "-n",
        &ns,
        "chg",
        "--image=busybox",
        "-c",
        "dbg",
        "--",
        "sh",
        "-c",
        "echo debugging; sleep 3600",
    ]);
    assert!(ok, "{err}");
    let state = eventually(
        "the ephemeral container's status",
        Duration::from_secs(60),
        || async {
            let p = r.pods().get("chg").await.ok()?;
            let s = p.status?.ephemeral_container_statuses?.into_iter().next()?;
            let st = s.state?;
            (st.running.is_some() || st.terminated.is_some()).then_some(st)
        },
    )
    .await;
    if B::CHANGES.ephemeral {
        assert!(state.running.is_some(), "{state:?}");
        eventually(
            "the ephemeral container's log",
            Duration::from_secs(30),
            || async {
                let (ok, out, _) = r.kubectl(&["logs", "-n", &ns, "chg", "-c", "dbg"]);
                (ok && out.contains("debugging")).then_some(())
            },
        )
        .await;
    } else {
        let t = state.terminated.expect("terminated: it cannot start");
        assert_eq!(t.reason.as_deref(), Some("EphemeralContainersNotSupported"));
        assert!(
            t.message
                .as_deref()
                .is_some_and(|m| m.contains("--copy-to")),
            "the status says what to do instead: {t:?}"
        );
        // kubectl debug -i waits for the container: it must return
        let started = std::time::Instant::now();
        let mut debug =
            r.cp.kubectl()
                .args([
                    "debug",
                    "-i",
                    "-n",
                    &ns,
                    "chg",
                    "--image=busybox",
                    "-c",
                    "dbg2",
                    "--",
                    "true",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl runs");
        let ended = eventually("kubectl debug -i returns", Duration::from_secs(60), || {
            let ended = debug.try_wait().ok().flatten();
            async move { ended }
        })
        .await;
        let mut err = String::new();
        if let Some(mut e) = debug.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        println!(
            "kubectl debug -i returned in {:?} ({ended}): {}",
            started.elapsed(),
            err.trim()
        );
    }

    // an in-place resize
    let resize = json!({"spec": {"containers": [{"name": "main",
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]}});
    let (ok, _, err) = r.kubectl(&[
        "patch",
        "-n",
        &ns,
        "pod/chg",
        "--subresource",
        "resize",
        "-p",
        &resize.to_string(),
    ]);
    assert!(ok, "{err}");
    if B::CHANGES.resize {
        eventually("the resize passed on", Duration::from_secs(60), || async {
            let remote = r.b.remote_pod(&r.s, &pod).await?;
            let c = remote.spec?.containers.into_iter().next()?;
            let cpu = c.resources?.requests?.get("cpu")?.0.clone();
            (cpu == "500m").then_some(())
        })
        .await;
    }
    // the backend's answer (a remote cluster's kubelet answers for itself)
    let condition = eventually(
        "PodResizePending Infeasible",
        Duration::from_secs(60),
        || async {
            let p = r.pods().get("chg").await.ok()?;
            p.status?.conditions?.into_iter().find(|c| {
                c.type_ == "PodResizePending" && c.reason.as_deref() == Some("Infeasible")
            })
        },
    )
    .await;
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains("resize")),
        "{condition:?}"
    );
    if !B::CHANGES.resize {
        let note = event_with(&r, "chg", "Warning", "ResizeInfeasible").await;
        assert!(note.contains("delete the pod"), "{note}");
    }
    assert_eq!(
        phase(&r.pods().get("chg").await.expect("the pod")),
        "Running"
    );
    r.b.verify();
}

/// Issue #16: probes and restarts as the backend runs them ([`Probing`]):
/// a container that prints `first-run` and exits 3 (restartPolicy Always)
/// restarts with `restartCount` and `lastState`; `kubectl logs --previous`
/// shows that run (its lines no later than it finished) or answers 400
/// without the log; an exec readiness probe that fails keeps its Running
/// pod not Ready, with a Warning Event `Unhealthy`; a probe the backend
/// cannot run gets a Warning Event `ProbeNotSupported` naming it.
pub async fn probes_restarts_and_previous_logs_follow_the_backend<B: BackendUnderTest>() {
    let r = run(B::start().await, "prb", &[]).await;
    let ns = r.ns.as_str();
    let probing = B::PROBING;
    let create = |name: &str, script: &str, container: Value| {
        let t = r.template(name, script);
        let mut pod =
            json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": t["spec"]});
        if let (Some(c), Some(extra)) = (
            pod["spec"]["containers"][0].as_object_mut(),
            container.as_object(),
        ) {
            c.extend(extra.clone());
        }
        let pod: Pod = serde_json::from_value(pod).expect("a pod");
        let pods = r.pods();
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("the pod created");
        }
    };
    let ready_probe = |command: &[&str]| json!({"readinessProbe": {"exec": {"command": command}, "periodSeconds": 1, "failureThreshold": 1}});
    create(
        "crash",
        "echo first-run; sleep 3; exit 3",
        ready_probe(&["true"]),
    )
    .await;
    create(
        "unready",
        "sleep infinity",
        ready_probe(&["cat", "/nonexistent"]),
    )
    .await;
    let not_run = r.b.probe_not_run();
    if let Some((probe, _)) = &not_run {
        create("odd", "sleep infinity", probe.clone()).await;
    }

    if let Some((_, named)) = not_run {
        eventually(
            "a Warning Event ProbeNotSupported naming the probe",
            Duration::from_secs(90),
            || async {
                events_of(&r.client, ns, "odd").await.into_iter().find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("ProbeNotSupported")
                        && e.message.as_deref().is_some_and(|m| m.contains(named))
                })
            },
        )
        .await;
    }
    let previous = || r.kubectl(&["logs", "-n", ns, "crash", "--previous", "--timestamps"]);
    if B::READY && probing.restarts {
        let pods = r.pods();
        let last = eventually(
            "the container restarted after exiting 3",
            Duration::from_secs(120),
            || async {
                let p = pods.get("crash").await.ok()?;
                let c = p.status?.container_statuses?.into_iter().next()?;
                let t = c.last_state?.terminated?;
                (c.restart_count >= 1 && t.exit_code == 3).then_some(t)
            },
        )
        .await;
        assert_eq!(last.reason.as_deref(), Some("Error"), "{last:?}");
        if probing.previous_logs {
            let finished = last.finished_at.expect("lastState.finishedAt").0;
            let (ok, out, err) = previous();
            assert!(
                ok && out.contains("first-run"),
                "logs --previous: {out}{err}"
            );
            for line in out.lines() {
                let at: Timestamp = line
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("a timestamped line: {line}"));
                assert!(
                    at.as_second() <= finished.as_second(),
                    "a line of the previous run, not the current one: {line} (it finished {finished})"
                );
            }
        }
    }
    if !probing.previous_logs {
        let (ok, out, err) = previous();
        assert!(
            !ok && err.contains("BadRequest") && !out.contains("first-run"),
            "logs --previous is a 400 without the log: {out}{err}"
        );
    }
    if B::READY && probing.readiness {
        let pods = r.pods();
        eventually(
            "a Warning Event Unhealthy for the failing readiness probe",
            Duration::from_secs(90),
            || async {
                events_of(&r.client, ns, "unready")
                    .await
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("Unhealthy")
                            && e.message
                                .as_deref()
                                .is_some_and(|m| m.contains("Readiness probe failed"))
                    })
            },
        )
        .await;
        for _ in 0..10 {
            let p = pods.get("unready").await.expect("the pod");
            assert_eq!(phase(&p), "Running");
            let ready = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status);
            assert_eq!(
                ready.as_deref(),
                Some("False"),
                "not Ready while its probe fails"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    r.b.verify();
}
