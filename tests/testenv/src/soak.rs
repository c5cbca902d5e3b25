//! The soak (issue #15; `hack/soak`, not in CI): long-lived replicas under
//! steady churn, with the leader killed -9 at intervals and API faults.
//!
//! Three lanes run at once on a control plane of the soak's own, each a
//! virtual node led by one of two replicas (leader election with the
//! standard timings, 15 s / 10 s / 2 s):
//!
//! | lane | backend | faults |
//! |---|---|---|
//! | `mock` | the simulated backend (its state file shared by the replicas) | none |
//! | `ecs` | ECS on moto, behind a [`FaultProxy`] | `share` of the requests |
//! | `aci` | ACI on the in-repo emulator, behind a [`FaultProxy`] | `share` of the requests |
//!
//! Each lane creates a bare pod every `churn` and deletes the oldest
//! beyond `window`, and kills its leader every `kill_every` (the lanes
//! staggered), starting the killed replica again at once as its Deployment
//! would; the standby's take-over time is measured from the kill until the
//! Lease names it. Every `sample` the resident memory and open file
//! descriptors of each replica and the pods of each lane are written to
//! `samples.csv`. At the end: no instance twice, no pod without one; every
//! pod deleted; after one sweep no instance left.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};

use crate::{
    ControlPlane, Skylet,
    backends::{Aci, Ecs},
    crash::{
        Census, bare_pod, holder, leader_index, list, mock_instances, replica, within_one_sweep,
    },
    k8s::{namespace, node_ready},
    proxy::{Fault, FaultProxy, Faults},
    suite::{BackendUnderTest, BehindProxy, Instance},
    unique_name,
};

/// How the soak runs.
#[derive(Clone, Debug)]
pub struct SoakPlan {
    /// How long the churn lasts.
    pub duration: Duration,
    /// One create (and one delete once `window` pods exist) per lane this often.
    pub churn: Duration,
    /// Pods each lane keeps.
    pub window: usize,
    /// Each lane's leader is killed this often.
    pub kill_every: Duration,
    /// The share of the ECS and ACI requests that get a fault.
    pub faults: f64,
    /// Resources sampled this often.
    pub sample: Duration,
    /// The seed of the fault draws.
    pub seed: u64,
    /// Where `samples.csv` and `report.txt` go.
    pub out: PathBuf,
}

/// One lane's backend.
enum Backend {
    Mock(PathBuf),
    Ecs(Box<Ecs>, FaultProxy),
    Aci(Box<Aci>, FaultProxy),
}

impl Backend {
    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        match self {
            Self::Mock(state) => mock_instances(state),
            Self::Ecs(b, _) => b.instances(s).await,
            Self::Aci(b, _) => b.instances(s).await,
        }
    }

    /// Every instance it ever ran for the node that it still shows (ECS
    /// keeps STOPPED tasks for a while).
    async fn instances_ever(&self, s: &Skylet) -> Vec<Instance> {
        match self {
            Self::Mock(state) => mock_instances(state),
            Self::Ecs(b, _) => b.instances_ever(s).await,
            Self::Aci(b, _) => b.instances_ever(s).await,
        }
    }

    fn faults(&self) -> u64 {
        match self {
            Self::Mock(_) => 0,
            Self::Ecs(_, p) | Self::Aci(_, p) => p.stats().faults(),
        }
    }
}

/// What one lane saw.
#[derive(Debug, Default)]
pub struct LaneReport {
    /// The lane.
    pub lane: &'static str,
    /// Pods created.
    pub created: usize,
    /// Leader kills.
    pub kills: usize,
    /// Seconds from each kill until the standby held the Lease.
    pub takeovers: Vec<f64>,
    /// Replicas that exited by themselves (a lost Lease: exit 75).
    pub self_exits: usize,
    /// Faults the proxy injected.
    pub faults: u64,
    /// The census before the final delete.
    pub before_delete: Census,
    /// Pods with more than one instance the backend ever showed.
    pub created_twice: Vec<(String, usize)>,
    /// Instances left after one sweep once every pod was gone.
    pub orphans_after_sweep: usize,
}

struct Lane {
    name: &'static str,
    node: String,
    backend: Backend,
    replicas: Vec<Skylet>,
}

const LEADER: &[&str] = &["--leader-elect=true", "--leader-elect-namespace", "default"];

fn faults(share: f64, seed: u64) -> Faults {
    Faults::share(
        share,
        &[
            Fault::Throttle,
            Fault::Internal,
            Fault::Unavailable,
            Fault::Delay,
            Fault::Reset,
        ],
        seed,
    )
}

async fn lanes(cp: &ControlPlane, bin: &Path, plan: &SoakPlan, dir: &Path) -> Vec<Lane> {
    let standard = (15, 10, 2);
    let node = unique_name("soak-mock");
    let state = dir.join("mock-backend.json");
    let mock = Lane {
        replicas: vec![
            replica(cp, bin, &node, &state, "soak-mock-a", standard),
            replica(cp, bin, &node, &state, "soak-mock-b", standard),
        ],
        name: "mock",
        node,
        backend: Backend::Mock(state),
    };
    let ecs = Ecs::start().await;
    let proxy = ecs.proxy(faults(plan.faults, plan.seed));
    let node = unique_name("soak-ecs");
    let replicas = (0..2)
        .map(|_| ecs.skylet_through(cp, &node, &proxy, LEADER))
        .collect();
    let ecs = Lane {
        name: "ecs",
        node,
        backend: Backend::Ecs(Box::new(ecs), proxy),
        replicas,
    };
    let aci = Aci::start().await;
    let proxy = aci.proxy(faults(plan.faults, plan.seed + 1));
    let node = unique_name("soak-aci");
    let replicas = (0..2)
        .map(|_| aci.skylet_through(cp, &node, &proxy, LEADER))
        .collect();
    let aci = Lane {
        name: "aci",
        node,
        backend: Backend::Aci(Box::new(aci), proxy),
        replicas,
    };
    vec![mock, ecs, aci]
}

/// One sample line per replica: `secs,lane,replica,pid,rss_mib,fds,pods,running`.
fn sample(lane: &mut Lane, t: f64, pods: &[Pod], csv: &mut String) {
    let running = pods
        .iter()
        .filter(|p| crate::k8s::phase(p) == "Running")
        .count();
    for (i, r) in lane.replicas.iter().enumerate() {
        if let (Some(pid), Some((rss, fds))) = (r.pid(), r.rss_and_fds()) {
            let mib = rss as f64 / 1048576.0;
            let _ = writeln!(
                csv,
                "{t:.0},{},{i},{pid},{mib:.1},{fds},{},{running}",
                lane.name,
                pods.len()
            );
        }
    }
}

/// The churn of one lane until `until`, then its final census, delete and
/// sweep.
async fn run_lane(
    mut lane: Lane,
    client: Client,
    plan: SoakPlan,
    offset: Duration,
    t0: Instant,
    csv: std::sync::Arc<std::sync::Mutex<String>>,
) -> LaneReport {
    let mut report = LaneReport {
        lane: lane.name,
        ..LaneReport::default()
    };
    node_ready(&client, &lane.node).await;
    let ns = namespace(&client, &format!("soak-{}", lane.name)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let app = "soak";
    let mut live: VecDeque<String> = VecDeque::new();
    let mut next_kill = t0 + offset + plan.kill_every;
    let mut next_sample = t0;
    // the take-over under way: a task that watches the Lease's holder
    let mut pending: Option<tokio::task::JoinHandle<f64>> = None;
    let mut tick = tokio::time::interval(plan.churn);
    while t0.elapsed() < plan.duration {
        tick.tick().await;
        for r in &mut lane.replicas {
            if !r.is_running() {
                report.self_exits += 1;
                r.start_again();
            }
        }
        let name = format!("{app}-{:05}", report.created);
        if pods
            .create(&PostParams::default(), &bare_pod(&lane.node, app, &name))
            .await
            .is_ok()
        {
            report.created += 1;
            live.push_back(name);
        }
        if live.len() > plan.window
            && let Some(old) = live.pop_front()
        {
            let _ = pods.delete(&old, &DeleteParams::default()).await;
        }
        if pending
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(t) = pending.take()
            && let Ok(secs) = t.await
        {
            report.takeovers.push(secs);
        }
        if pending.is_none() && Instant::now() >= next_kill {
            if let Some(h) = holder(&client, &lane.node).await
                && let Some(i) = leader_index(&lane.replicas, &h)
            {
                lane.replicas[i].kill();
                pending = Some(tokio::spawn(takeover(client.clone(), lane.node.clone(), h)));
                report.kills += 1;
                lane.replicas[i].start_again();
            }
            next_kill += plan.kill_every;
        }
        if Instant::now() >= next_sample {
            let all = list(&client, &ns, app).await;
            let mut lines = String::new();
            sample(&mut lane, t0.elapsed().as_secs_f64(), &all, &mut lines);
            csv.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_str(&lines);
            next_sample += plan.sample;
        }
    }
    if let Some(t) = pending
        && let Ok(secs) = t.await
    {
        report.takeovers.push(secs);
    }
    finish(&mut lane, &client, &ns, app, &mut report).await;
    report
}

/// Seconds from now (the kill of `old`) until another replica holds
/// `node`'s Lease, polled every 100 ms.
async fn takeover(client: Client, node: String, old: String) -> f64 {
    let killed = Instant::now();
    loop {
        if holder(&client, &node).await.is_some_and(|h| h != old) {
            return killed.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which of the lane's replicas leads now.
async fn leader(client: &Client, lane: &Lane) -> Option<usize> {
    let h = holder(client, &lane.node).await?;
    leader_index(&lane.replicas, &h)
}

/// The end of a lane: the census with the pods settled, every pod
/// deleted, one sweep.
async fn finish(lane: &mut Lane, client: &Client, ns: &str, app: &str, report: &mut LaneReport) {
    // a take-over still under way settles first
    let i = crate::eventually("a leader at the end", Duration::from_secs(60), || {
        leader(client, lane)
    })
    .await;
    let settled = crate::eventually(
        "every live pod Running with its instance",
        Duration::from_secs(240),
        || async {
            let pods = list(client, ns, app).await;
            let c = Census::of(&pods, &lane.backend.instances(&lane.replicas[i]).await);
            (c.running == c.pods && c.missing.is_empty()).then_some(c)
        },
    )
    .await;
    report.before_delete = settled;
    let ever = lane.backend.instances_ever(&lane.replicas[i]).await;
    let pods = list(client, ns, app).await;
    report.created_twice = Census::of(&pods, &ever).duplicates;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in &pods {
        if let Some(n) = &p.metadata.name {
            let _ = api.delete(n, &DeleteParams::default()).await;
        }
    }
    crate::eventually("every pod gone", Duration::from_secs(300), || async {
        list(client, ns, app).await.is_empty().then_some(())
    })
    .await;
    let i = crate::eventually("a leader", Duration::from_secs(60), || leader(client, lane)).await;
    let s = &lane.replicas[i];
    report.orphans_after_sweep = within_one_sweep(s, || lane.backend.instances(s))
        .await
        .len();
    report.faults = lane.backend.faults();
}

/// Runs the soak; writes `samples.csv` and `report.txt` to `plan.out`;
/// panics (after writing them) on a duplicate, a lost pod or an orphan.
pub async fn soak(bin: &Path, plan: &SoakPlan) -> Vec<LaneReport> {
    std::fs::create_dir_all(&plan.out).expect("the output directory");
    let cp = ControlPlane::start("soak").expect("a control plane");
    let client = cp.client().await.expect("a client");
    let dir = tempfile::tempdir().expect("a tempdir");
    let lanes = lanes(&cp, bin, plan, dir.path()).await;
    let csv = std::sync::Arc::new(std::sync::Mutex::new(String::from(
        "secs,lane,replica,pid,rss_mib,fds,pods,running\n",
    )));
    let t0 = Instant::now();
    let n = lanes.len() as u32;
    let mut set = tokio::task::JoinSet::new();
    for (k, lane) in lanes.into_iter().enumerate() {
        let offset = plan.kill_every * u32::try_from(k).unwrap_or(0) / n;
        set.spawn(run_lane(
            lane,
            client.clone(),
            plan.clone(),
            offset,
            t0,
            csv.clone(),
        ));
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        reports.push(r.expect("a lane"));
    }
    reports.sort_by_key(|r| r.lane);
    let text = csv
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    std::fs::write(plan.out.join("samples.csv"), &text).expect("samples.csv");
    let summary = summary(&reports, &text, t0.elapsed());
    std::fs::write(plan.out.join("report.txt"), &summary).expect("report.txt");
    eprintln!("{summary}");
    for r in &reports {
        let c = &r.before_delete;
        assert!(
            c.duplicates.is_empty() && c.missing.is_empty() && c.orphans.is_empty(),
            "{}: {c:?}",
            r.lane
        );
        assert!(
            r.created_twice.is_empty(),
            "{}: created twice {:?}",
            r.lane,
            r.created_twice
        );
        assert_eq!(
            r.orphans_after_sweep, 0,
            "{}: orphans after one sweep",
            r.lane
        );
    }
    reports
}

/// One process's resident memory and descriptors, its first sample after
/// 5 minutes of its life against its last.
struct Growth {
    lane: String,
    pid: String,
    minutes: f64,
    rss_mib: (f64, f64),
    fds: (f64, f64),
}

/// [`Growth`] of each process that lived 20 minutes or more.
fn growth(csv: &str) -> Vec<Growth> {
    type Samples = Vec<(f64, f64, f64)>;
    let mut by_pid: std::collections::BTreeMap<(String, String), Samples> =
        std::collections::BTreeMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if let [t, lane, _, pid, rss, fds, ..] = f[..] {
            let num = |s: &str| s.parse::<f64>().unwrap_or_default();
            by_pid
                .entry((lane.to_owned(), pid.to_owned()))
                .or_default()
                .push((num(t), num(rss), num(fds)));
        }
    }
    by_pid
        .into_iter()
        .filter_map(|((lane, pid), s)| {
            let start = s.first()?.0;
            let end = s.last()?;
            let warm = s.iter().find(|x| x.0 >= start + 300.0)?;
            let minutes = (end.0 - start) / 60.0;
            (minutes >= 20.0).then_some(Growth {
                lane,
                pid,
                minutes,
                rss_mib: (warm.1, end.1),
                fds: (warm.2, end.2),
            })
        })
        .collect()
}

fn summary(reports: &[LaneReport], csv: &str, elapsed: Duration) -> String {
    let mut out = format!("soak: {:.0} minutes\n", elapsed.as_secs_f64() / 60.0);
    let mut all = Vec::new();
    for r in reports {
        all.extend(r.takeovers.iter().copied());
        let _ = writeln!(
            out,
            "{}: {} pods created, {} leader kills, take-overs {:?}, {} self-exits, {} faults injected; before delete {} pods ({} Running), {} instances, duplicates {}, missing {}, orphans {}; created twice {}; orphans after one sweep {}",
            r.lane,
            r.created,
            r.kills,
            r.takeovers
                .iter()
                .map(|t| (t * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            r.self_exits,
            r.faults,
            r.before_delete.pods,
            r.before_delete.running,
            r.before_delete.instances,
            r.before_delete.duplicates.len(),
            r.before_delete.missing.len(),
            r.before_delete.orphans.len(),
            r.created_twice.len(),
            r.orphans_after_sweep,
        );
    }
    all.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "take-overs: {} , p50 {:.1}s, max {:.1}s",
        all.len(),
        all.get(all.len() / 2).copied().unwrap_or_default(),
        all.last().copied().unwrap_or_default()
    );
    for g in growth(csv) {
        let _ = writeln!(
            out,
            "process {}/{}: {:.0} min, RSS {:.1} -> {:.1} MiB, fds {} -> {}",
            g.lane, g.pid, g.minutes, g.rss_mib.0, g.rss_mib.1, g.fds.0, g.fds.1
        );
    }
    out
}
