//! `skylet-bench`: the load generator and measurer of `hack/bench`.
//!
//! `run` creates pods (with `spec.nodeName` preset: scenarios `burst` and
//! `steady`) or one Deployment (`deployment`: the real scheduler places its
//! pods), watches them, and records for each pod when its create returned
//! (client side; for a Deployment, when the watch first saw the pod) and when
//! the watch first saw it Running. Once all are Running it holds them for
//! `--hold` seconds, then deletes everything and times how long until every
//! pod is gone. Meanwhile it samples the RSS and CPU time of the processes
//! given with `--sample NAME=PID` every second. It writes one JSON document,
//! with the time windows of the run in Unix time: `to_running`, `hold`,
//! `settled` (the hold without its first minute, or first half if shorter),
//! `delete` and `run`.
//!
//! With several `--node-name`s (a fleet: several virtual nodes of one
//! skylet), pod `i` goes to node `i mod n`, and the document has each
//! node's numbers too. `--down-node NODE --down-file PATH --down-after N`
//! takes one node's backend down mid-burst: once `N` pods are Running, the
//! file is created (the simulated backend's "unreachable" file); that
//! node's pods are left out of "all Running", and the file is removed
//! before the deletion so that the backend confirms its pods gone.
//!
//! `audit` adds to such a document the apiserver requests of each of its time
//! windows, counted from the audit log.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use skylet_bench::{
    audit::{self, Window},
    client_from, init_tracing, key_value, now_unix,
    procstat::{self, Sampler},
    stats::{self, Summary},
};
use tokio::sync::Notify;

#[derive(Parser)]
#[command(
    name = "skylet-bench",
    about = "Load generator and measurer for hack/bench"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create pods or a Deployment, measure them to Running, hold, delete.
    Run(Box<RunArgs>),
    /// Count the apiserver requests in the windows of a `run` result.
    Audit(AuditArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N pods with spec.nodeName preset, created at once.
    Burst,
    /// One Deployment of N replicas, placed by kube-scheduler.
    Deployment,
    /// Like burst, then held Running for --hold seconds.
    Steady,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Burst => "burst",
            Self::Deployment => "deployment",
            Self::Steady => "steady",
        }
    }
}

#[derive(Parser)]
struct RunArgs {
    /// kubeconfig of the load generator's identity.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Which scenario.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Pods (or replicas).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// spec.nodeName of the pods (burst, steady); repeated, the pods are
    /// spread over the nodes in turn.
    #[arg(long = "node-name")]
    node_names: Vec<String>,
    /// The node whose backend is taken down mid-burst (with --down-file).
    #[arg(long, requires = "down_file")]
    down_node: Option<String>,
    /// The file whose existence takes that node's backend down.
    #[arg(long, requires = "down_node")]
    down_file: Option<PathBuf>,
    /// How many pods Running before the backend is taken down.
    #[arg(long, default_value_t = 0)]
    down_after: usize,
    /// nodeSelector entry key=value (repeatable).
    #[arg(long = "node-selector")]
    node_selector: Vec<String>,
    /// Toleration key[=value]:Effect (repeatable); without a value the
    /// operator is Exists.
    #[arg(long = "toleration")]
    tolerations: Vec<String>,
    /// Namespace for the pods (created if missing).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds to hold the pods Running before deleting them.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Seconds to wait for all pods Running, and again for all gone.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Container image (never pulled by a virtual node).
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    image: String,
    /// A process to sample, NAME=PID (repeatable).
    #[arg(long = "sample")]
    samples: Vec<String>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
    /// Do not delete the pods at the end.
    #[arg(long)]
    keep: bool,
    /// Extra key=value recorded under "meta" (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
    /// Where to write the JSON result.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Parser)]
struct AuditArgs {
    /// The apiserver's audit log (JSON lines).
    #[arg(long)]
    log: PathBuf,
    /// A `run` result; its windows are counted and the counts added to it.
    #[arg(long)]
    result: PathBuf,
}

fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            let complete = rt.block_on(run(*args))?;
            if !complete {
                std::process::exit(3);
            }
            Ok(())
        }
        Cmd::Audit(args) => add_audit(&args),
    }
}

/// When the watch saw a pod.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    first: Option<f64>,
    running: Option<f64>,
    gone: Option<f64>,
}

/// What the pod watch has seen so far.
#[derive(Default)]
struct Tracker {
    pods: Mutex<HashMap<String, Seen>>,
    changed: Notify,
    /// Pods left out of the Running count (those of a node taken down).
    excluded: std::collections::HashSet<String>,
}

impl Tracker {
    fn counts(&self) -> (usize, usize, usize) {
        let m = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = m
            .iter()
            .filter(|(name, s)| s.running.is_some() && !self.excluded.contains(*name))
            .count();
        let gone = m.values().filter(|s| s.gone.is_some()).count();
        (m.len(), running, gone)
    }

    fn observe(&self, pod: &Pod, deleted: bool) {
        let t = now_unix();
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let mut m = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = m.entry(pod.name_any()).or_default();
        s.first.get_or_insert(t);
        if running && s.running.is_none() {
            s.running = Some(t);
        }
        if deleted && s.gone.is_none() {
            s.gone = Some(t);
        }
        drop(m);
        self.changed.notify_waiters();
    }

    /// Waits until `done(seen, running, gone)` holds or `deadline` passes
    /// (and says so at warn level if `warn`).
    async fn wait(
        &self,
        deadline: tokio::time::Instant,
        what: &str,
        warn: bool,
        done: impl Fn(usize, usize, usize) -> bool,
    ) -> bool {
        let mut last_log = tokio::time::Instant::now();
        loop {
            let notified = self.changed.notified();
            let (seen, running, gone) = self.counts();
            if done(seen, running, gone) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if warn {
                    tracing::warn!(seen, running, gone, "timed out waiting for {what}");
                }
                return false;
            }
            if now.duration_since(last_log) >= Duration::from_secs(5) {
                tracing::info!(seen, running, gone, "waiting for {what}");
                last_log = now;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let client = client_from(&args.kubeconfig).await?;
    let started = now_unix();
    let run_id = format!("{}-{}", args.scenario.name(), started as u64);
    let selector = format!("skylet-bench/run={run_id}");
    ensure_namespace(&client, &args.namespace).await?;

    let procs: Vec<(String, u32)> = args
        .samples
        .iter()
        .map(|s| {
            let (n, p) = key_value(s)?;
            Ok((
                n,
                p.parse()
                    .with_context(|| format!("--sample {s}: not a pid"))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let sampler = Sampler::start(procs.clone(), args.clk_tck, Duration::from_secs(1));

    // which node each pod goes to (burst, steady)
    let node_of = |i: usize| -> Option<&str> {
        (!args.node_names.is_empty()).then(|| args.node_names[i % args.node_names.len()].as_str())
    };
    let pod_name = |i: usize| format!("bench-{i:05}");
    let excluded: std::collections::HashSet<String> = match &args.down_node {
        Some(down) => (0..args.count)
            .filter(|&i| node_of(i) == Some(down.as_str()))
            .map(pod_name)
            .collect(),
        None => Default::default(),
    };
    let expected = args.count - excluded.len();

    // The watch is listed before the first create, so no pod is missed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let tracker = Arc::new(Tracker {
        excluded,
        ..Tracker::default()
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch_task = tokio::spawn(watch_pods(
        pods.clone(),
        selector.clone(),
        tracker.clone(),
        ready_tx,
    ));
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .context("the pod watch did not start")??;

    let outage = args
        .down_file
        .clone()
        .map(|file| Outage::start(tracker.clone(), file, args.down_after));
    let template = pod_template(&args, &run_id)?;
    let count = args.count;
    let t_create = now_unix();
    let mut created: HashMap<String, f64> = HashMap::new();
    let mut create_errors = 0u64;
    match args.scenario {
        Scenario::Burst | Scenario::Steady => {
            let results: Vec<(String, anyhow::Result<(f64, u32)>)> =
                futures::stream::iter(0..count)
                    .map(|i| {
                        let mut pod = template.clone();
                        let name = pod_name(i);
                        pod.metadata.name = Some(name.clone());
                        if let Some(spec) = pod.spec.as_mut() {
                            spec.node_name = node_of(i).map(str::to_owned);
                        }
                        let pods = pods.clone();
                        async move { (name, create_with_retry(&pods, &pod).await) }
                    })
                    .buffer_unordered(args.concurrency.max(1))
                    .collect()
                    .await;
            for (name, r) in results {
                match r {
                    Ok((t, retries)) => {
                        created.insert(name, t);
                        create_errors += u64::from(retries);
                    }
                    Err(e) => {
                        create_errors += 1;
                        tracing::error!(
                            pod = name,
                            error = format!("{e:#}"),
                            "create failed for good"
                        );
                    }
                }
            }
        }
        Scenario::Deployment => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
            // a failed create is recorded, never the end of the run
            if let Err(e) = deployments
                .create(
                    &PostParams::default(),
                    &deployment(&template, &run_id, count)?,
                )
                .await
            {
                create_errors += 1;
                tracing::error!(error = %e, "creating the Deployment failed");
            }
        }
    }
    let t_created = now_unix();
    tracing::info!(count, seconds = t_created - t_create, "creates returned");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let all_running = tracker
        .wait(deadline, "all pods Running", true, |_, running, _| {
            running >= expected
        })
        .await;
    let t_running = now_unix();
    let down_at = outage.as_ref().and_then(|o| o.at());
    if let Some(f) = &args.down_file {
        // the backend answers again, so that its pods can be deleted
        if let Err(e) = std::fs::remove_file(f)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(file = %f.display(), error = %e, "cannot bring the backend back");
        }
    }
    if let Some(o) = outage {
        o.task.abort();
    }

    let mut windows = vec![Window {
        name: "to_running".into(),
        from: t_create,
        to: t_running,
    }];
    if all_running && args.hold > 0 {
        tracing::info!(seconds = args.hold, "holding the pods Running");
        let from = now_unix();
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        let to = now_unix();
        windows.push(Window {
            name: "hold".into(),
            from,
            to,
        });
        // the hold without its start, where the last writes of the way to
        // Running may still land: what a node costs once its pods are settled
        let settle = (args.hold as f64 / 2.0).min(60.0);
        windows.push(Window {
            name: "settled".into(),
            from: from + settle,
            to,
        });
    }

    let mut delete = Value::Null;
    if !args.keep {
        let t_del = now_unix();
        // a failed delete is recorded, never the end of the run: the
        // measurements so far are kept
        let mut delete_errors = 0usize;
        match args.scenario {
            Scenario::Deployment => {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
                if let Err(e) = deployments
                    .delete(&run_id, &DeleteParams::background())
                    .await
                {
                    delete_errors += 1;
                    tracing::error!(error = %e, "deleting the Deployment failed");
                }
            }
            _ => {
                // one delete per pod, `concurrency` at a time, each retried:
                // a DeleteCollection of 10,000 pods outlives kube-apiserver's
                // 60 s request timeout and ends in a broken connection
                let names: Vec<String> = created.keys().cloned().collect();
                delete_errors = futures::stream::iter(names)
                    .map(|name| {
                        let pods = pods.clone();
                        async move { delete_with_retry(&pods, &name).await }
                    })
                    .buffer_unordered(args.concurrency.max(1))
                    .filter(|r| std::future::ready(r.is_err()))
                    .count()
                    .await;
            }
        }
        if delete_errors > 0 {
            tracing::error!(
                delete_errors,
                "some deletes failed for good; waiting for the rest"
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        let all_gone = wait_gone(&pods, &selector, &tracker, deadline).await;
        let t_gone = now_unix();
        tracing::info!(all_gone, seconds = t_gone - t_del, "deleted");
        windows.push(Window {
            name: "delete".into(),
            from: t_del,
            to: t_gone,
        });
        delete = json!({"all_gone": all_gone, "seconds": t_gone - t_del, "pods_per_s": count as f64 / (t_gone - t_del), "errors": delete_errors});
    }
    let finished = now_unix();
    windows.push(Window {
        name: "run".into(),
        from: started,
        to: finished,
    });
    watch_task.abort();
    let series = sampler.finish(&procs, args.clk_tck);

    // per-pod latency: create returned (or first seen) -> first seen Running
    let seen = tracker
        .pods
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut latencies = Vec::with_capacity(count);
    let mut negative = 0usize;
    let mut last_running = t_create;
    for (name, s) in &seen {
        let Some(running) = s.running else { continue };
        last_running = last_running.max(running);
        let Some(from) = created.get(name).copied().or(s.first) else {
            continue;
        };
        let ms = (running - from) * 1000.0;
        if ms < 0.0 {
            negative += 1;
        }
        latencies.push(ms.max(0.0));
    }
    let running_count = latencies.len();
    let nodes = per_node(&args, &seen, &created, t_create);
    let latency: Summary = stats::summarize(&mut latencies);
    let span = (last_running - t_create).max(1e-9);
    let processes: BTreeMap<String, Value> = series
        .iter()
        .map(|(name, samples)| {
            let usage: BTreeMap<&str, procstat::Usage> = windows
                .iter()
                .map(|w| (w.name.as_str(), procstat::usage(samples, w.from, w.to)))
                .collect();
            let pid = procs.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
            let compact: Vec<[f64; 3]> = samples
                .iter()
                .map(|s| [s.t - started, s.rss_kib as f64 / 1024.0, s.cpu_s])
                .collect();
            let hwm = samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
            (
                name.clone(),
                json!({"pid": pid, "hwm_mib": hwm, "usage": usage, "samples": compact}),
            )
        })
        .collect();
    let meta: BTreeMap<String, String> = args
        .meta
        .iter()
        .map(|m| key_value(m))
        .collect::<anyhow::Result<_>>()?;
    let result = json!({
        "meta": meta,
        "scenario": args.scenario.name(),
        "run_id": run_id,
        "count": count,
        "namespace": args.namespace,
        "started_unix": started,
        "create": {
            "seconds": t_created - t_create,
            "pods_per_s": if args.scenario == Scenario::Deployment { Value::Null } else { json!(created.len() as f64 / (t_created - t_create).max(1e-9)) },
            "errors_and_retries": create_errors,
            "concurrency": args.concurrency,
        },
        "running": {
            "all_running": all_running,
            "count": running_count,
            "seconds": span,
            "pods_per_s": running_count as f64 / span,
            "latency_ms": latency,
            "negative_latencies_clamped": negative,
        },
        "delete": delete,
        "nodes": nodes,
        "outage": args.down_node.as_ref().map(|n| json!({"node": n, "after_running": args.down_after, "at_unix": down_at, "excluded_pods": count - expected})),
        "windows": windows,
        "processes": processes,
        "latencies_ms": latencies,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    tracing::info!(
        scenario = args.scenario.name(),
        running = running_count,
        pods_per_s = format!("{:.1}", running_count as f64 / span),
        p50_ms = format!("{:.0}", latency.p50),
        p99_ms = format!("{:.0}", latency.p99),
        out = %args.out.display(),
        "done"
    );
    Ok(all_running)
}

/// Takes a backend down (creates its file) once enough pods are Running.
struct Outage {
    task: tokio::task::JoinHandle<()>,
    at: Arc<Mutex<Option<f64>>>,
}

impl Outage {
    fn start(tracker: Arc<Tracker>, file: PathBuf, after: usize) -> Self {
        let at = Arc::new(Mutex::new(None));
        let when = at.clone();
        let task = tokio::spawn(async move {
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            // every Running pod counts here, the down node's too
            tracker
                .wait(far, "the outage", false, |_, _, _| {
                    let m = tracker
                        .pods
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    m.values().filter(|s| s.running.is_some()).count() >= after
                })
                .await;
            match std::fs::write(&file, b"down\n") {
                Ok(()) => {
                    tracing::info!(file = %file.display(), after, "backend taken down");
                    *when
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now_unix());
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "cannot take the backend down")
                }
            }
        });
        Self { task, at }
    }

    fn at(&self) -> Option<f64> {
        *self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Each node's pods: how many Running, pods/s (from the first create to
/// its last pod Running) and latency.
fn per_node(
    args: &RunArgs,
    seen: &HashMap<String, Seen>,
    created: &HashMap<String, f64>,
    t_create: f64,
) -> BTreeMap<String, Value> {
    let n = args.node_names.len();
    if n < 2 {
        return BTreeMap::new();
    }
    args.node_names
        .iter()
        .enumerate()
        .map(|(k, node)| {
            let mut lat = Vec::new();
            let mut last = t_create;
            let mut pods = 0usize;
            for i in (k..args.count).step_by(n) {
                pods += 1;
                let name = format!("bench-{i:05}");
                let Some(s) = seen.get(&name) else { continue };
                let Some(running) = s.running else { continue };
                last = last.max(running);
                if let Some(from) = created.get(&name).copied().or(s.first) {
                    lat.push(((running - from) * 1000.0).max(0.0));
                }
            }
            let running = lat.len();
            let span = (last - t_create).max(1e-9);
            let summary = stats::summarize(&mut lat);
            (
                node.clone(),
                json!({"pods": pods, "running": running, "seconds": span, "pods_per_s": running as f64 / span, "latency_ms": summary}),
            )
        })
        .collect()
}

async fn ensure_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    match namespaces.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("cannot create the namespace"),
    }
    // pods are refused until the service-account controller made "default"
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for _ in 0..300 {
        if sas.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("service account {ns}/default did not appear within 30s")
}

/// Creates `pod`, retrying what the apiserver may refuse under load (429,
/// 5xx, connection errors). Returns when the create returned and how many
/// attempts failed first.
async fn create_with_retry(pods: &Api<Pod>, pod: &Pod) -> anyhow::Result<(f64, u32)> {
    let mut failures = 0u32;
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return Ok((now_unix(), failures)),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok((now_unix(), failures)),
            Err(kube::Error::Api(s)) if s.code < 429 => return Err(anyhow::anyhow!("{s:?}")),
            Err(e) if failures >= 10 => return Err(e.into()),
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "create failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
            }
        }
    }
}

/// Deletes pod `name`, retrying what the apiserver may refuse under load;
/// a pod already gone is deleted.
async fn delete_with_retry(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let mut failures = 0u32;
    loop {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code < 429 => return Err(anyhow::anyhow!("{s:?}")),
            Err(e) if failures >= 10 => return Err(e.into()),
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "delete failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
            }
        }
    }
}

async fn watch_pods(
    pods: Api<Pod>,
    selector: String,
    tracker: Arc<Tracker>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let stream = watcher(pods, watcher::Config::default().labels(&selector)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                tracker.observe(&p, false)
            }
            Ok(watcher::Event::Delete(p)) => tracker.observe(&p, true),
            Ok(watcher::Event::InitDone) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => tracing::warn!(error = %e, "pod watch error; retrying"),
        }
    }
}

/// Waits until every pod the watch saw is gone; a list now and then guards
/// against deletions the watch missed while it was re-listing.
async fn wait_gone(
    pods: &Api<Pod>,
    selector: &str,
    tracker: &Tracker,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        let step = (tokio::time::Instant::now() + Duration::from_secs(5)).min(deadline);
        if tracker
            .wait(step, "all pods gone", false, |seen, _, gone| gone >= seen)
            .await
        {
            return true;
        }
        match pods
            .list_metadata(&ListParams::default().labels(selector).limit(1))
            .await
        {
            Ok(l) if l.items.is_empty() => return true,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot list pods"),
        }
        if tokio::time::Instant::now() >= deadline {
            let (seen, _, gone) = tracker.counts();
            tracing::warn!(seen, gone, "timed out waiting for all pods gone");
            return false;
        }
    }
}

/// The pod every contender gets: the same spec, only placement differs.
fn pod_template(args: &RunArgs, run_id: &str) -> anyhow::Result<Pod> {
    let selector: BTreeMap<String, String> = args
        .node_selector
        .iter()
        .map(|s| key_value(s))
        .collect::<anyhow::Result<_>>()?;
    let tolerations: Vec<Value> = args
        .tolerations
        .iter()
        .map(|t| toleration(t))
        .collect::<anyhow::Result<_>>()?;
    let node_name = match args.scenario {
        Scenario::Deployment => None,
        _ => Some(
            args.node_names
                .first()
                .cloned()
                .context("--node-name is needed for burst and steady")?,
        ),
    };
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "containers": [{"name": "app", "image": args.image}],
        "tolerations": tolerations,
    });
    if !selector.is_empty() {
        spec["nodeSelector"] = json!(selector);
    }
    if let Some(n) = node_name {
        spec["nodeName"] = json!(n);
    }
    Ok(serde_json::from_value(json!({
        "metadata": {"labels": {"app": "skylet-bench", "skylet-bench/run": run_id}},
        "spec": spec,
    }))?)
}

fn deployment(template: &Pod, run_id: &str, replicas: usize) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": run_id},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"skylet-bench/run": run_id}},
            "template": {"metadata": template.metadata, "spec": template.spec},
        },
    }))?)
}

/// `key[=value]:Effect` as a toleration.
fn toleration(spec: &str) -> anyhow::Result<Value> {
    let (kv, effect) = spec
        .rsplit_once(':')
        .with_context(|| format!("toleration {spec:?}: no :Effect"))?;
    Ok(match kv.split_once('=') {
        Some((k, v)) => json!({"key": k, "operator": "Equal", "value": v, "effect": effect}),
        None => json!({"key": kv, "operator": "Exists", "effect": effect}),
    })
}

fn add_audit(args: &AuditArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.result)
        .with_context(|| format!("cannot read {}", args.result.display()))?;
    let mut result: Value = serde_json::from_str(&text)?;
    let windows: Vec<Window> =
        serde_json::from_value(result["windows"].clone()).context("the result has no windows")?;
    let counts = audit::count(&args.log, &windows)?;
    let by_window: BTreeMap<String, Value> = counts
        .into_iter()
        .map(|c| Ok((c.window.name.clone(), serde_json::to_value(&c)?)))
        .collect::<anyhow::Result<_>>()?;
    result["audit"] = json!(by_window);
    std::fs::write(&args.result, serde_json::to_vec_pretty(&result)?)?;
    Ok(())
}
