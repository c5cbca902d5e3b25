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
//! A container without a script logs one line and runs until deleted. An app
//! container that ends restarts per the pod's `restartPolicy`, after the
//! kubelet's back-off; when all app containers have ended for good the pod
//! is Succeeded (all exit 0) or Failed. Init containers run first, in order;
//! one that exits non-zero fails the pod. Exec and tcpSocket probes run as
//! the kubelet runs them (the `probe` module): readiness sets Ready, a
//! failed liveness or startup probe restarts the container, and
//! `kubectl logs --previous` shows the run before the last restart.
//!
//! `kubectl exec` runs a small built-in command set (`echo`, `cat`, `env`,
//! `sh -c`, a terminal shell with `stty size`, ...), `kubectl attach` follows
//! the container's log and writes stdin lines into it, and every port of a
//! pod echoes for `kubectl port-forward`; see the `exec` module.
//!
//! Modules: [`config`] and [`kind`] (settings), [`pod`] (a pod's state and
//! status), [`plan`] (what its containers run), [`provider`] (the
//! [`skylet_provider::Provider`] calls), [`run`] (pods at work), [`exec`]
//! and [`term`] (exec, attach, port-forward), [`logs`], [`state`] (the
//! state file).
//!
//! Start latency and a transient failure rate are configurable; at zero
//! latency a pod is Running when `create_pod` returns, and every state change
//! is pushed to the core through the [`Sink`] it was built with, so the mock
//! is never the bottleneck of a benchmark. Pods that take time (a start
//! latency, init containers, a script) run in [`Provider::run`].
//!
//! Its settings are the `--mock-*` flags and the `mock:` section of the
//! config file ([`Mock`]).
//!
//! [`Provider::run`]: skylet_provider::Provider::run

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use futures::future::BoxFuture;
use skylet_provider::{ProviderError, Result, Sink};
use tokio::sync::mpsc;

mod config;
mod ephemeral;
mod exec;
mod kind;
mod logs;
mod plan;
mod pod;
mod probe;
mod provider;
mod run;
mod state;
mod term;
#[cfg(test)]
mod tests;
mod usage;

pub use config::Config;
pub use exec::REFUSED_PORT;
pub use kind::{Args, File, Mock};

use pod::MockPod;

/// Pods with this annotation are refused as invalid, with its value as the
/// message: a stand-in for "this pod can never run here" (too large, say).
pub const REJECT_ANNOTATION: &str = "mock.skylet.io/reject";

/// The simulated backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MockProvider {
    inner: Arc<Inner>,
}

/// A simulated pod's containers at work, for [`Provider::run`] to run.
///
/// [`Provider::run`]: skylet_provider::Provider::run
type Job = BoxFuture<'static, ()>;

struct Inner {
    config: Config,
    /// By UID; boxed, so that the map's spare room (a third of it after
    /// it grows) costs a pointer per slot, not a whole `MockPod`.
    pods: Mutex<HashMap<String, Box<MockPod>>>,
    sink: Sink,
    jobs: mpsc::UnboundedSender<Job>,
    /// Taken by `Provider::run` while it runs.
    job_queue: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    next_ip: AtomicU32,
    creates: AtomicU32,
    /// Serializes writes of the state file.
    save_lock: Mutex<()>,
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
    ///
    /// [`Provider::run`]: skylet_provider::Provider::run
    pub fn new(config: Config, sink: Sink) -> Self {
        let (jobs, job_queue) = mpsc::unbounded_channel();
        let saved = config
            .state_file
            .as_deref()
            .map(state::load)
            .unwrap_or_default();
        let pods = saved
            .pods
            .into_iter()
            .map(|saved| Box::new(MockPod::restored(saved)))
            .map(|p| (p.pod.uid.clone(), p))
            .collect();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Box<MockPod>>> {
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
                pods: pods.values().map(|p| p.saved()).collect(),
            }
        };
        state::store(path, &snapshot);
    }

    fn publish(&self, uid: &str) {
        self.save();
        let snapshot = self.lock().get(uid).map(|p| p.backend_pod());
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
