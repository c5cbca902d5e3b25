//! Simulated pods at work: a created pod either runs at once (long-running
//! containers without a program, no start latency) or becomes a job, which
//! [`jobs`] (the backend's `Provider::run`) runs in a task of its own: the
//! start latency, then the init containers one by one, then the app
//! containers side by side, each running its program.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use skylet_provider::CancellationToken;
use tokio::task::JoinSet;
use tracing::Instrument;

use k8s_openapi::{
    api::core::v1::ContainerStateTerminated, apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{Inner, logs::LogBuffer, plan::Plan, pod::CState, probe, usage::Usage};

/// Starts a pod just inserted: queues its job, or, on the fast path, marks
/// its containers Running now.
pub(crate) fn start(
    inner: &Arc<Inner>,
    uid: &str,
    plans: Vec<Plan>,
    now: Timestamp,
    stop: CancellationToken,
) {
    let latency = inner.config.start_latency;
    let needs_task = latency > Duration::ZERO
        || plans
            .iter()
            .any(|p| p.init || !p.program.is_empty() || p.probes.any());
    not_run(inner, uid, &plans);
    if !needs_task {
        // The fast path: every container is a long-running one with no
        // script; it is Running as soon as the create returns.
        inner.update(uid, |p| {
            for (c, plan) in p.app.iter_mut().zip(&plans) {
                c.state = CState::Running { since: now };
                c.usage = Arc::new(Usage::starting(now));
                c.logs.push(format!(
                    "mock: started container {} of {}",
                    plan.name, p.pod
                ));
            }
        });
        return;
    }
    // weak while queued: a queue that run() never drains must not keep the
    // backend alive
    let weak = Arc::downgrade(inner);
    let owned = uid.to_owned();
    let job = async move {
        if let Some(inner) = weak.upgrade() {
            run_pod(inner, owned, plans, latency, stop).await;
        }
    };
    // run() has the receiver, or will have it: the send cannot fail while
    // `inner` holds it
    let _ = inner.jobs.send(Box::pin(job));
    inner.publish(uid);
}

/// Runs the queued jobs, each in a task of its own, until `shutdown`;
/// then stops them all and puts the queue back for the next run.
pub(crate) async fn jobs(inner: &Inner, shutdown: CancellationToken) {
    let taken = inner
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
    *inner
        .job_queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(queue);
}

/// Runs a pod's containers: waits out the start latency, then init containers
/// one by one, then the app containers concurrently.
async fn run_pod(
    inner: Arc<Inner>,
    uid: String,
    plans: Vec<Plan>,
    latency: Duration,
    stop: CancellationToken,
) {
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            () = stop.cancelled() => return,
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

/// Warning Events for the probes the simulated backend does not run
/// (`crate::probe`), once, when the pod is created.
fn not_run(inner: &Inner, uid: &str, plans: &[Plan]) {
    let Some(pod) = inner.lock().get(uid).map(|p| p.pod.clone()) else {
        return;
    };
    for plan in plans {
        for field in &plan.probes.not_run {
            probe::warn(
                &inner.sink,
                &pod,
                "ProbeNotSupported",
                format!(
                    "{field} of container {} is not run by the simulated backend; it counts as passing",
                    plan.name
                ),
            );
        }
    }
}

/// Runs one container: its program, again after each restart its restart
/// policy asks for (app containers), with its probes; the code it ended
/// with for good, or `None` when the pod was deleted meanwhile (or, for an
/// app container without a program or probes, never: it runs until then).
async fn run_container(
    inner: &Inner,
    uid: &str,
    init: bool,
    i: usize,
    plan: Plan,
    stop: CancellationToken,
) -> Option<i32> {
    let mut restarts = 0;
    loop {
        let (code, again) = run_once(inner, uid, init, i, &plan, stop.clone(), restarts).await?;
        let Some(wait) = again else {
            return Some(code);
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return None,
        }
        restarts += 1;
        inner.update(uid, |p| {
            let Some(c) = p.app.get_mut(i) else { return };
            let life = p.lives.entry(c.name.clone()).or_default();
            life.restarts = restarts;
            life.backoff = None;
            life.previous_logs = Some(std::mem::take(&mut c.logs));
        });
    }
}

/// One run of a container; its code and, if it restarts, after how long.
async fn run_once(
    inner: &Inner,
    uid: &str,
    init: bool,
    i: usize,
    plan: &Plan,
    stop: CancellationToken,
    restarts: i32,
) -> Option<(i32, Option<Duration>)> {
    let started = Timestamp::now();
    let (out, pod) = {
        let mut pods = inner.lock();
        let p = pods.get_mut(uid)?;
        let pod = p.pod.clone();
        let c = if init {
            p.init.get_mut(i)?
        } else {
            p.app.get_mut(i)?
        };
        c.state = CState::Running { since: started };
        c.usage = Arc::new(Usage::starting(started));
        let out = Out {
            logs: c.logs.clone(),
            usage: c.usage.clone(),
        };
        if plan.probes.any() {
            let life = p.lives.entry(plan.name.clone()).or_default();
            life.started = plan.probes.startup.as_ref().map(|_| false);
            life.ready = plan.probes.readiness.as_ref().map(|_| false);
        }
        (out, pod)
    };
    inner.update(uid, |_| {});
    if plan.program.is_empty() {
        out.logs
            .push(format!("mock: started container {}", plan.name));
        if !init && !plan.probes.any() {
            return None; // runs until deleted
        }
    }
    let program = async {
        if plan.program.is_empty() && !init {
            std::future::pending().await
        } else {
            plan.program.run(&plan.sandbox, &out).await
        }
    };
    let code = tokio::select! {
        code = program => code,
        code = probe::supervise(inner, &pod, &plan.name, &plan.probes, &plan.sandbox), if !init => code,
        () = stop.cancelled() => return None,
    };
    let finished = Timestamp::now();
    let again = (!init && plan.restart.restarts(code)).then(|| probe::backoff(restarts));
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
        if let Some(wait) = again {
            let life = p.lives.entry(plan.name.clone()).or_default();
            life.backoff = Some(wait.as_secs());
            life.last = Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                started_at: Some(Time(started)),
                finished_at: Some(Time(finished)),
                container_id: Some(format!("mock://{uid}/{}", plan.name)),
                ..Default::default()
            });
        }
    });
    Some((code, again))
}

/// Where a container's program writes: its log, and its resource use.
pub(crate) struct Out {
    pub(crate) logs: Arc<LogBuffer>,
    pub(crate) usage: Arc<Usage>,
}

impl skylet_toysh::Output for Out {
    fn line(&self, line: String) {
        self.logs.push(line);
    }

    fn ignored(&self, statement: &str) {
        self.logs
            .push(format!("mock: not understood, ignored: {statement}"));
    }

    fn load(&self, millicores: u64, memory_bytes: Option<u64>) {
        self.usage.set(millicores, memory_bytes, Timestamp::now());
    }
}
