//! A simulated backend: pods "run" in memory, so tests, the demo and the
//! benchmarks exercise the whole core without a cloud.
//!
//! A container runs a tiny script taken from its command and args, in the
//! toy shell of `skylet-toysh` (a leading `sh -c` is unwrapped; statements
//! separated by `;` or newlines): `echo`, `env` (secret values too: it is a
//! test backend), `cat PATH` (files of resolved volumes, by mount path),
//! `sleep`, `log-every SECONDS WORDS`, `exit N` and `while true` loops. What
//! it does not understand it logs as such and skips.
//!
//! A container without a script logs one line and runs until deleted. When all
//! app containers have ended the pod is Succeeded (all exit 0) or Failed.
//! Init containers run first, in order; one that exits non-zero fails the pod.
//!
//! `kubectl exec` runs a small built-in command set (`echo`, `cat`, `env`,
//! `sh -c`, a terminal shell with `stty size`, ...), `kubectl attach` follows
//! the container's log and writes stdin lines into it, and every port of a
//! pod echoes for `kubectl port-forward`; see the `exec` module.
//!
//! Start latency and a transient failure rate are configurable; at zero
//! latency a pod is Running when `create_pod` returns, and every state change
//! is pushed to the core through the [`Sink`] it was built with, so the mock
//! is never the bottleneck of a benchmark. Pods that take time (a start
//! latency, init containers, a script) run in [`Provider::run`].
//!
//! Its settings are the `--mock-*` flags and the `mock:` section of the
//! config file ([`Mock`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, Node, PodIP, PodStatus,
    },
    apimachinery::pkg::api::resource::Quantity,
    apimachinery::pkg::apis::meta::v1::Time,
};
use skylet_provider::{
    AttachIo, BackendPod, CancellationToken, ContainerStats, Deleted, ExecIo, ExitStatus,
    LogOptions, LogStream, PodRef, PodStats, PortStream, Provider, ProviderError, ResolvedPod,
    Result, Sink,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::Instrument;

mod exec;
mod kind;
mod logs;
mod state;

pub use exec::REFUSED_PORT;
pub use kind::{Args, File, Mock};

use logs::LogBuffer;
use skylet_toysh::{Program, Sandbox};

/// Settings of the simulated backend.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a pod takes from create to Running.
    pub start_latency: Duration,
    /// Fraction of creates that fail with a transient error.
    pub failure_rate: f64,
    /// Fraction of creates answered "throttled, retry after 1 s", as a
    /// cloud API over its rate limit.
    pub throttle_rate: f64,
    /// Node capacity (`cpu`, `memory`, `pods`, ...).
    pub capacity: BTreeMap<String, String>,
    /// Where the simulated backend keeps its state, so that it outlives a
    /// skylet process the way a cloud does (restart and adoption tests).
    /// `None`: in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// While this file exists the backend answers no call, as a cloud API
    /// that is down (outage and fail-over tests).
    pub unreachable_file: Option<std::path::PathBuf>,
    /// A file saying how much of the backend's quota others use now,
    /// `pods=N`, read at every create: a cloud account shared with other
    /// workloads whose use skylet cannot see (ECS has no API for the
    /// account's Fargate quota use). Creates beyond `capacity.pods - N` are
    /// refused for lack of capacity; the node keeps advertising its
    /// capacity, as a real backend that has no usage API would.
    pub usage_file: Option<std::path::PathBuf>,
    /// The second octet of the pods' addresses, `10.<block>.x.y`, so that
    /// several simulated backends of one fleet give distinct pod IPs
    /// (derived from the node name by [`Config::ip_block_of`]).
    pub ip_block: u8,
}

impl Config {
    /// The address block of node `name`: 100 to 249, from a hash of the
    /// name (FNV-1a; stable across restarts and builds).
    pub fn ip_block_of(name: &str) -> u8 {
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        100 + u8::try_from(hash % 150).unwrap_or(0)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            start_latency: Duration::ZERO,
            failure_rate: 0.0,
            throttle_rate: 0.0,
            capacity: [("cpu", "1000"), ("memory", "4Ti"), ("pods", "10000")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            state_file: None,
            unreachable_file: None,
            usage_file: None,
            ip_block: 200,
        }
    }
}

/// Pods with this annotation are refused as invalid, with its value as the
/// message: a stand-in for "this pod can never run here" (too large, say).
pub const REJECT_ANNOTATION: &str = "mock.skylet.io/reject";

/// The simulated backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MockProvider {
    inner: Arc<Inner>,
}

/// A simulated pod's containers at work, for [`Provider::run`] to run.
type Job = BoxFuture<'static, ()>;

struct Inner {
    config: Config,
    pods: Mutex<HashMap<String, MockPod>>,
    sink: Sink,
    jobs: mpsc::UnboundedSender<Job>,
    /// Taken by [`Provider::run`] while it runs.
    job_queue: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    next_ip: AtomicU32,
    creates: AtomicU32,
    /// Serializes writes of the state file.
    save_lock: Mutex<()>,
}

struct MockPod {
    pod: PodRef,
    created: Timestamp,
    ip: String,
    phase: &'static str,
    init: Vec<Container>,
    app: Vec<Container>,
    /// Dropped when the pod is deleted: running scripts stop.
    stop: watch::Sender<bool>,
}

struct Container {
    name: String,
    image: String,
    state: CState,
    logs: Arc<LogBuffer>,
    /// Environment and files, for exec.
    sandbox: Arc<Sandbox>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum CState {
    Waiting,
    Running {
        since: Timestamp,
    },
    Exited {
        code: i32,
        started: Timestamp,
        finished: Timestamp,
    },
}

impl MockProvider {
    /// A backend with the given settings, reporting status changes to
    /// `sink` (`Sink::discard()` in tests without a core); with a state
    /// file, it starts with the pods recorded there.
    ///
    /// Pods that take time (a start latency, init containers, a script)
    /// run in [`Provider::run`]: until it runs they stay Pending. Pods of
    /// long-running containers without a script and without latency are
    /// Running when `create_pod` returns, `run` or not.
    pub fn new(config: Config, sink: Sink) -> Self {
        let (jobs, job_queue) = mpsc::unbounded_channel();
        let saved = config
            .state_file
            .as_deref()
            .map(state::load)
            .unwrap_or_default();
        let mut pods = HashMap::new();
        for p in saved.pods {
            let (stop, _) = watch::channel(false);
            let conv = |cs: Vec<state::SavedContainer>| {
                cs.into_iter()
                    .map(|c| Container {
                        name: c.name,
                        image: c.image,
                        state: c.state,
                        logs: Arc::default(),
                        sandbox: Arc::default(),
                    })
                    .collect::<Vec<_>>()
            };
            let mut mp = MockPod {
                pod: PodRef::new(p.namespace, p.name, p.uid),
                created: p.created,
                ip: p.ip,
                phase: "Pending",
                init: conv(p.init),
                app: conv(p.app),
                stop,
            };
            mp.phase = mp.compute_phase();
            pods.insert(mp.pod.uid.clone(), mp);
        }
        Self {
            inner: Arc::new(Inner {
                config,
                pods: Mutex::new(pods),
                sink,
                jobs,
                job_queue: Mutex::new(Some(job_queue)),
                next_ip: AtomicU32::new(saved.next_ip.max(1)),
                creates: AtomicU32::new(saved.creates),
                save_lock: Mutex::new(()),
            }),
        }
    }
}

impl Inner {
    /// An error while the unreachable file exists: a simulated outage, in
    /// which every call fails as a cloud API that does not answer (the
    /// simulated containers keep running, as a cloud's do).
    fn reachable(&self) -> Result<()> {
        match &self.config.unreachable_file {
            Some(f) if f.exists() => Err(ProviderError::transient(format!(
                "simulated outage: {} exists",
                f.display()
            ))),
            _ => Ok(()),
        }
    }

    /// The pods this backend may still hold: its `pods` capacity minus
    /// what the usage file says others use (`None`: no capacity in pods).
    fn pod_quota(&self) -> Option<usize> {
        let capacity: usize = self.config.capacity.get("pods")?.parse().ok()?;
        let others = self
            .config
            .usage_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| {
                text.split(',')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| *k == "pods")
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        Some(capacity.saturating_sub(others))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MockPod>> {
        // A panic while holding the lock would be a bug in this file; the map
        // stays consistent either way, so keep going.
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn allocate_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        format!(
            "10.{}.{}.{}",
            self.config.ip_block,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    /// Writes the state file, if there is one (after every change: the file
    /// must hold a create that happened just before a crash).
    fn save(&self) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let _guard = self
            .save_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let snapshot = {
            let pods = self.lock();
            state::Saved {
                creates: self.creates.load(Ordering::Relaxed),
                next_ip: self.next_ip.load(Ordering::Relaxed),
                pods: pods.values().map(MockPod::saved).collect(),
            }
        };
        state::store(path, &snapshot);
    }

    fn publish(&self, uid: &str) {
        self.save();
        let snapshot = self.lock().get(uid).map(MockPod::backend_pod);
        if let Some(bp) = snapshot {
            self.sink.status(bp);
        }
    }

    /// Applies `f` to a container of a pod, recomputes the phase, pushes the change.
    fn update(&self, uid: &str, f: impl FnOnce(&mut MockPod)) {
        {
            let mut pods = self.lock();
            let Some(p) = pods.get_mut(uid) else { return };
            f(p);
            p.phase = p.compute_phase();
        }
        self.publish(uid);
    }
}

impl MockPod {
    fn saved(&self) -> state::SavedPod {
        let conv = |cs: &[Container]| {
            cs.iter()
                .map(|c| state::SavedContainer {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    state: c.state.clone(),
                })
                .collect()
        };
        state::SavedPod {
            namespace: self.pod.namespace.clone(),
            name: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            created: self.created,
            ip: self.ip.clone(),
            init: conv(&self.init),
            app: conv(&self.app),
        }
    }

    fn compute_phase(&self) -> &'static str {
        if self
            .init
            .iter()
            .any(|c| matches!(c.state, CState::Exited { code, .. } if code != 0))
        {
            return "Failed";
        }
        if self
            .app
            .iter()
            .any(|c| matches!(c.state, CState::Running { .. }))
        {
            return "Running";
        }
        if !self.app.is_empty()
            && self
                .app
                .iter()
                .all(|c| matches!(c.state, CState::Exited { .. }))
        {
            let ok = self
                .app
                .iter()
                .all(|c| matches!(c.state, CState::Exited { code: 0, .. }));
            return if ok { "Succeeded" } else { "Failed" };
        }
        if self
            .app
            .iter()
            .any(|c| matches!(c.state, CState::Exited { .. }))
        {
            return "Running";
        }
        "Pending"
    }

    fn backend_pod(&self) -> BackendPod {
        let statuses =
            |cs: &[Container]| cs.iter().map(|c| c.status(&self.pod)).collect::<Vec<_>>();
        BackendPod {
            pod: self.pod.clone(),
            status: PodStatus {
                phase: Some(self.phase.into()),
                pod_ip: Some(self.ip.clone()),
                pod_ips: Some(vec![PodIP {
                    ip: self.ip.clone(),
                }]),
                start_time: Some(Time(self.created)),
                init_container_statuses: (!self.init.is_empty()).then(|| statuses(&self.init)),
                container_statuses: Some(statuses(&self.app)),
                ..Default::default()
            },
        }
    }
}

impl Container {
    fn status(&self, pod: &PodRef) -> ContainerStatus {
        let (state, ready, started) = match &self.state {
            CState::Waiting => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: None,
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
            CState::Running { since } => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(*since)),
                    }),
                    ..Default::default()
                },
                true,
                true,
            ),
            CState::Exited {
                code,
                started,
                finished,
            } => (
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: *code,
                        reason: Some(if *code == 0 { "Completed" } else { "Error" }.into()),
                        started_at: Some(Time(*started)),
                        finished_at: Some(Time(*finished)),
                        container_id: Some(format!("mock://{}/{}", pod.uid, self.name)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("mock://{}", self.image),
            container_id: Some(format!("mock://{}/{}", pod.uid, self.name)),
            ready,
            started: Some(started),
            restart_count: 0,
            state: Some(state),
            ..Default::default()
        }
    }
}

/// One container to start: its name, program and environment/files.
struct Plan {
    name: String,
    program: Program,
    sandbox: Arc<Sandbox>,
    init: bool,
}

impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn configure_node(&self, node: &mut Node) {
        let q: BTreeMap<String, Quantity> = self
            .inner
            .config
            .capacity
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect();
        let status = node.status.get_or_insert_with(Default::default);
        status.capacity = Some(q.clone());
        status.allocatable = Some(q);
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            "topology.kubernetes.io/region".into(),
            "mock-region-1".into(),
        );
        labels.insert(
            "topology.kubernetes.io/zone".into(),
            "mock-region-1a".into(),
        );
    }

    async fn ping(&self) -> Result<()> {
        self.inner.reachable()
    }

    async fn create_pod(&self, rp: &ResolvedPod) -> Result<()> {
        self.inner.reachable()?;
        let pod = rp.pod_ref();
        if self.inner.lock().contains_key(&pod.uid) {
            return Ok(());
        }
        if let Some(msg) = rp
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REJECT_ANNOTATION))
        {
            return Err(ProviderError::invalid("MockRejected", msg.clone()));
        }
        if let Some(quota) = self.inner.pod_quota()
            && self.inner.lock().len() >= quota
        {
            return Err(ProviderError::Capacity(format!(
                "simulated quota of {quota} pods reached (capacity minus what others use, {})",
                self.inner
                    .config
                    .usage_file
                    .as_deref()
                    .map_or_else(String::new, |f| f.display().to_string())
            )));
        }
        let throttle = self.inner.config.throttle_rate;
        if throttle > 0.0 && fastrand::f64() < throttle {
            return Err(ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        let rate = self.inner.config.failure_rate;
        if rate > 0.0 && fastrand::f64() < rate {
            return Err(ProviderError::transient(
                "simulated transient failure (mock failure rate)",
            ));
        }
        let spec = rp.pod.spec.clone().unwrap_or_default();
        let mut plans = Vec::new();
        for (init, containers) in [
            (true, spec.init_containers.unwrap_or_default()),
            (false, spec.containers),
        ] {
            for c in containers {
                let mut words: Vec<String> = c.command.clone().unwrap_or_default();
                words.extend(c.args.clone().unwrap_or_default());
                let program = Program::parse(&words);
                let env = rp
                    .env
                    .get(&c.name)
                    .map(|vars| {
                        vars.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut files = BTreeMap::new();
                for m in c.volume_mounts.iter().flatten() {
                    for f in rp.volumes.get(&m.name).into_iter().flatten() {
                        let sub = m.sub_path.as_deref().unwrap_or("");
                        let rel = f
                            .path
                            .strip_prefix(sub)
                            .unwrap_or(&f.path)
                            .trim_start_matches('/');
                        if !sub.is_empty() && !f.path.starts_with(sub) {
                            continue;
                        }
                        let path = if rel.is_empty() {
                            m.mount_path.clone()
                        } else {
                            format!("{}/{}", m.mount_path.trim_end_matches('/'), rel)
                        };
                        files.insert(path, f.value.data.clone());
                    }
                }
                plans.push((
                    c.image.clone().unwrap_or_default(),
                    Plan {
                        name: c.name,
                        program,
                        sandbox: Arc::new(Sandbox { env, files }),
                        init,
                    },
                ));
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let now = Timestamp::now();
        let mut init = Vec::new();
        let mut app = Vec::new();
        for (image, p) in &plans {
            let c = Container {
                name: p.name.clone(),
                image: image.clone(),
                state: CState::Waiting,
                logs: Arc::default(),
                sandbox: p.sandbox.clone(),
            };
            if p.init { init.push(c) } else { app.push(c) }
        }
        let ip = self.inner.allocate_ip();
        {
            let mut pods = self.inner.lock();
            if pods.contains_key(&pod.uid) {
                return Ok(());
            }
            pods.insert(
                pod.uid.clone(),
                MockPod {
                    pod: pod.clone(),
                    created: now,
                    ip,
                    phase: "Pending",
                    init,
                    app,
                    stop,
                },
            );
        }
        self.inner.creates.fetch_add(1, Ordering::Relaxed);
        let plans: Vec<Plan> = plans.into_iter().map(|(_, p)| p).collect();
        let latency = self.inner.config.start_latency;
        let needs_task =
            latency > Duration::ZERO || plans.iter().any(|p| p.init || !p.program.is_empty());
        if needs_task {
            // weak while queued: a queue that run() never drains must not
            // keep the backend alive
            let inner = Arc::downgrade(&self.inner);
            let uid = pod.uid.clone();
            let job = async move {
                if let Some(inner) = inner.upgrade() {
                    run_pod(inner, uid, plans, latency, stop_rx).await;
                }
            };
            // run() has the receiver, or will have it: the send cannot fail
            // while `inner` holds it
            let _ = self.inner.jobs.send(Box::pin(job));
            self.inner.publish(&pod.uid);
        } else {
            // The fast path: every container is a long-running one with no
            // script; it is Running as soon as the create returns.
            self.inner.update(&pod.uid, |p| {
                for (c, plan) in p.app.iter_mut().zip(&plans) {
                    c.state = CState::Running { since: now };
                    c.logs.push(format!(
                        "mock: started container {} of {}",
                        plan.name, p.pod
                    ));
                }
            });
        }
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef, _grace: Duration) -> Result<Deleted> {
        self.inner.reachable()?;
        let removed = self.inner.lock().remove(&pod.uid);
        if let Some(p) = removed {
            let _ = p.stop.send(true);
            for c in p.init.iter().chain(&p.app) {
                c.logs.close();
            }
        }
        self.inner.save();
        Ok(Deleted::Gone)
    }

    async fn list_pods(&self) -> Result<Vec<BackendPod>> {
        self.inner.reachable()?;
        Ok(self
            .inner
            .lock()
            .values()
            .map(MockPod::backend_pod)
            .collect())
    }

    /// Runs the simulated containers of the pods created since it started
    /// (and those created before, queued), each in a task of its own;
    /// cancelling `shutdown` stops them all.
    async fn run(&self, shutdown: CancellationToken) {
        let taken = self
            .inner
            .job_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut queue) = taken else {
            tracing::warn!("the simulated backend runs already; this run does nothing");
            shutdown.cancelled().await;
            return;
        };
        let mut pods = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(job) = queue.recv() => {
                    pods.spawn(job.in_current_span());
                }
                Some(ended) = pods.join_next(), if !pods.is_empty() => {
                    if let Err(e) = ended
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "a simulated pod panicked");
                    }
                }
            }
        }
        pods.shutdown().await;
        *self
            .inner
            .job_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(queue);
    }

    async fn logs(&self, pod: &PodRef, container: &str, opts: LogOptions) -> Result<LogStream> {
        let buf = {
            let pods = self.inner.lock();
            let p = pods.get(&pod.uid).ok_or_else(|| {
                ProviderError::NotFound(format!("pod {pod} is not running in the mock backend"))
            })?;
            let c = p
                .init
                .iter()
                .chain(&p.app)
                .find(|c| c.name == container)
                .ok_or_else(|| {
                    ProviderError::NotFound(format!(
                        "container {container:?} is not in pod {}/{}",
                        pod.namespace, pod.name
                    ))
                })?;
            c.logs.clone()
        };
        if opts.previous {
            return Err(ProviderError::NotFound(format!(
                "previous terminated container {container:?} in pod {:?} not found",
                pod.name
            )));
        }
        Ok(logs::stream(buf, opts))
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<ExitStatus> {
        exec::exec(&self.inner, pod, container, command, io).await
    }

    async fn attach(&self, pod: &PodRef, container: &str, io: AttachIo) -> Result<ExitStatus> {
        exec::attach(&self.inner, pod, container, io).await
    }

    async fn port_forward(&self, pod: &PodRef, port: u16) -> Result<PortStream> {
        exec::port_forward(&self.inner, pod, port).await
    }

    async fn stats(&self) -> Result<Vec<PodStats>> {
        let now = Timestamp::now();
        Ok(self
            .inner
            .lock()
            .values()
            .map(|p| PodStats {
                pod: p.pod.clone(),
                start_time: Some(p.created),
                containers: p
                    .app
                    .iter()
                    .filter_map(|c| match c.state {
                        CState::Running { since } => {
                            let secs = (now - since).get_seconds().max(0) as u64 + 1;
                            Some(ContainerStats {
                                name: c.name.clone(),
                                start_time: Some(since),
                                // a steady 5 millicores and 20 MiB per container
                                cpu_usage_core_nanoseconds: secs * 5_000_000,
                                memory_working_set_bytes: 20 << 20,
                            })
                        }
                        _ => None,
                    })
                    .collect(),
            })
            .collect())
    }
}

/// Runs a pod's containers: waits out the start latency, then init containers
/// one by one, then the app containers concurrently.
async fn run_pod(
    inner: Arc<Inner>,
    uid: String,
    plans: Vec<Plan>,
    latency: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = stop.changed() => return,
        }
    }
    let (init, app): (Vec<Plan>, Vec<Plan>) = plans.into_iter().partition(|p| p.init);
    for (i, plan) in init.into_iter().enumerate() {
        let code = run_container(&inner, &uid, true, i, plan, stop.clone()).await;
        if code != Some(0) {
            return;
        }
    }
    // the app containers run side by side, in the pod's task
    let containers = app
        .into_iter()
        .enumerate()
        .map(|(i, plan)| run_container(&inner, &uid, false, i, plan, stop.clone()));
    futures::future::join_all(containers).await;
}

/// Runs one container's script; `None` when the pod was deleted meanwhile.
async fn run_container(
    inner: &Inner,
    uid: &str,
    init: bool,
    i: usize,
    plan: Plan,
    mut stop: watch::Receiver<bool>,
) -> Option<i32> {
    let started = Timestamp::now();
    let logs = {
        let mut pods = inner.lock();
        let p = pods.get_mut(uid)?;
        let c = if init {
            p.init.get_mut(i)?
        } else {
            p.app.get_mut(i)?
        };
        c.state = CState::Running { since: started };
        c.logs.clone()
    };
    inner.update(uid, |_| {});
    if plan.program.is_empty() {
        logs.push(format!("mock: started container {}", plan.name));
        if !init {
            return None; // runs until deleted
        }
    }
    let code = tokio::select! {
        code = plan.program.run(&plan.sandbox, logs.as_ref()) => code,
        _ = stop.changed() => return None,
    };
    let finished = Timestamp::now();
    inner.update(uid, |p| {
        let list = if init { &mut p.init } else { &mut p.app };
        if let Some(c) = list.get_mut(i) {
            c.state = CState::Exited {
                code,
                started,
                finished,
            };
            c.logs.close();
        }
    });
    Some(code)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::TryStreamExt;
    use serde_json::json;
    use skylet_provider::{BackendEvent, SinkReceiver, testing::pod};

    use super::*;

    fn provider() -> (MockProvider, SinkReceiver) {
        let (sink, rx) = Sink::channel();
        (MockProvider::new(Config::default(), sink), rx)
    }

    /// The next status the backend pushed with this phase.
    async fn phase(rx: &mut SinkReceiver, want: &str) -> BackendPod {
        let wait = async {
            loop {
                match rx.recv().await {
                    Some(BackendEvent::Status(bp)) if bp.status.phase.as_deref() == Some(want) => {
                        return *bp;
                    }
                    Some(_) => {}
                    None => panic!("the sink closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no status with phase {want}"))
    }

    async fn log(p: &MockProvider, pod: &PodRef, opts: LogOptions) -> String {
        let chunks: Vec<Bytes> = p
            .logs(pod, "main", opts)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[tokio::test]
    async fn a_plain_pod_is_running_when_create_returns_without_run() {
        let (p, mut rx) = provider();
        let rp = pod("ns", "web").container("main", "nginx").resolved();
        p.create_pod(&rp).await.unwrap();
        let bp = phase(&mut rx, "Running").await;
        assert_eq!(bp.pod, rp.pod_ref());
        assert_eq!(p.list_pods().await.unwrap().len(), 1);
        p.create_pod(&rp).await.unwrap();
        assert_eq!(
            p.list_pods().await.unwrap().len(),
            1,
            "create is idempotent"
        );
    }

    #[tokio::test]
    async fn the_quota_others_use_refuses_creates_for_lack_of_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let usage = dir.path().join("usage");
        let mut config = Config::default();
        config.capacity.insert("pods".into(), "3".into());
        config.usage_file = Some(usage.clone());
        let p = MockProvider::new(config, Sink::discard());
        let allocatable = |p: &MockProvider| {
            let mut n = Node::default();
            p.configure_node(&mut n);
            n.status.unwrap().allocatable.unwrap()["pods"].0.clone()
        };
        assert_eq!(allocatable(&p), "3");
        std::fs::write(&usage, "pods=1").unwrap();
        assert_eq!(allocatable(&p), "3", "others' use is not visible");
        for name in ["a", "b"] {
            p.create_pod(&pod("ns", name).container("main", "i").resolved())
                .await
                .unwrap();
        }
        let third = pod("ns", "c").container("main", "i").resolved();
        let err = p.create_pod(&third).await.unwrap_err();
        assert!(matches!(err, ProviderError::Capacity(_)), "{err:?}");
        std::fs::remove_file(&usage).unwrap();
        p.create_pod(&third).await.unwrap();
    }

    #[tokio::test]
    async fn scripts_run_in_run_and_stop_with_it() {
        let (p, mut rx) = provider();
        let rp = pod("ns", "job")
            .container_json(json!({"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo one; echo two; exit 3"]}))
            .resolved();
        p.create_pod(&rp).await.unwrap();
        phase(&mut rx, "Pending").await;
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (p, shutdown) = (p.clone(), shutdown.clone());
            async move { p.run(shutdown).await }
        });
        let bp = phase(&mut rx, "Failed").await;
        let exit = bp.status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap()
            .exit_code;
        assert_eq!(exit, 3);
        let job = rp.pod_ref();
        assert_eq!(log(&p, &job, LogOptions::default()).await, "one\ntwo\n");
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        };
        assert_eq!(log(&p, &job, opts).await, "one\ntw");
        let opts = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..LogOptions::default()
        };
        let last = log(&p, &job, opts).await;
        let (ts, line) = last.split_once(' ').unwrap();
        assert_eq!(line, "two\n");
        assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");

        // a long-running script stops when run() does
        let rp = pod("ns", "ticker")
            .container_json(json!({"name": "main", "image": "busybox",
                "command": ["sh", "-c", "log-every 0.01 tick"]}))
            .resolved();
        p.create_pod(&rp).await.unwrap();
        phase(&mut rx, "Running").await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
    }
}
