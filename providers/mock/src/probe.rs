//! Probes and restarts of simulated app containers, as the kubelet runs
//! them (pkg/kubelet/prober, `kuberuntime` backoff):
//!
//! | probe | simulated |
//! |---|---|
//! | `exec` | the command runs in the container's toy shell (the exec command set: `true`, `false`, `cat PATH`, `sh -c`, ...); exit 0 passes |
//! | `tcpSocket` | passes: every port of a simulated pod answers |
//! | `httpGet`, `grpc` | not run: a Warning Event `ProbeNotSupported` when the pod is created, and the probe counts as passing |
//!
//! A startup probe holds the others back until it passes (`started`
//! false meanwhile); `failureThreshold` failures in a row of a startup or
//! liveness probe kill the container (exit 137, Warning Events `Unhealthy`
//! and `Killing`); the readiness probe sets the container's `ready`
//! (`successThreshold` passes in a row, `failureThreshold` failures).
//! `initialDelaySeconds`, `periodSeconds` and `timeoutSeconds` apply.
//!
//! An app container that ended restarts per the pod's `restartPolicy`
//! (`Always`; `OnFailure` on a non-zero code; never with `Never`) after the
//! kubelet's back-off (10 s, doubling, at most 5 minutes), waiting
//! `CrashLoopBackOff` meanwhile; its `restartCount` counts the restarts,
//! `lastState` is the run that ended, and its log is kept for
//! `kubectl logs --previous`. Init containers run once (one that fails
//! fails the pod).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Probe,
};
use skylet_provider::{EventType, PodEvent, PodRef, Sink};
use skylet_toysh::{Input, Sandbox, Session, Shell};

use crate::{Inner, logs::LogBuffer};

/// Exit code of a container killed by a failed probe (SIGKILL).
pub(crate) const KILLED: i32 = 137;

/// The first restart back-off, doubled per restart.
const BACKOFF: Duration = Duration::from_secs(10);
/// The longest restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The pod's `restartPolicy`, for its app containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    pub(crate) fn of(policy: Option<&str>) -> Self {
        match policy {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    /// Whether a container that ended with `code` runs again.
    pub(crate) fn restarts(self, code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => code != 0,
            Self::Never => false,
        }
    }
}

/// The back-off before restart number `restarts` (0: the first).
pub(crate) fn backoff(restarts: i32) -> Duration {
    let doublings = u32::try_from(restarts.clamp(0, 5)).unwrap_or(5);
    (BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// How a probe checks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Handler {
    Exec(Vec<String>),
    /// Passes (`tcpSocket`: every port answers; `httpGet`, `grpc`: not
    /// run, see the module docs).
    Pass,
}

/// One probe of a container.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Check {
    /// `livenessProbe`, ...
    pub(crate) field: &'static str,
    pub(crate) handler: Handler,
    pub(crate) initial_delay: Duration,
    pub(crate) period: Duration,
    pub(crate) timeout: Duration,
    pub(crate) success_threshold: u32,
    pub(crate) failure_threshold: u32,
}

/// A container's probes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Probes {
    pub(crate) startup: Option<Check>,
    pub(crate) liveness: Option<Check>,
    pub(crate) readiness: Option<Check>,
    /// The probes that are not run (`readinessProbe.httpGet`, ...).
    pub(crate) not_run: Vec<String>,
}

impl Probes {
    pub(crate) fn of(c: &Container) -> Self {
        let mut not_run = Vec::new();
        let mut check = |field: &'static str, p: Option<&Probe>| {
            let p = p?;
            let handler = if let Some(exec) = &p.exec {
                Handler::Exec(exec.command.clone().unwrap_or_default())
            } else {
                let kind = if p.tcp_socket.is_some() {
                    None
                } else if p.http_get.is_some() {
                    Some("httpGet")
                } else if p.grpc.is_some() {
                    Some("grpc")
                } else {
                    Some("(no handler)")
                };
                if let Some(kind) = kind {
                    not_run.push(format!("{field}.{kind}"));
                }
                Handler::Pass
            };
            let secs = |v: Option<i32>, default: i32, min: i32| {
                Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
            };
            let count = |v: Option<i32>, default: i32| {
                u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1)
            };
            Some(Check {
                field,
                handler,
                initial_delay: secs(p.initial_delay_seconds, 0, 0),
                period: secs(p.period_seconds, 10, 1),
                timeout: secs(p.timeout_seconds, 1, 1),
                success_threshold: count(p.success_threshold, 1),
                failure_threshold: count(p.failure_threshold, 3),
            })
        };
        let startup = check("startupProbe", c.startup_probe.as_ref());
        let liveness = check("livenessProbe", c.liveness_probe.as_ref());
        let readiness = check("readinessProbe", c.readiness_probe.as_ref());
        Self {
            startup,
            liveness,
            readiness,
            not_run,
        }
    }

    /// Whether any probe is run.
    pub(crate) fn any(&self) -> bool {
        self.startup.is_some() || self.liveness.is_some() || self.readiness.is_some()
    }
}

/// Runs a probe once: `Err` says why it failed.
pub(crate) async fn probe(check: &Check, sandbox: &Sandbox) -> Result<(), String> {
    let Handler::Exec(argv) = &check.handler else {
        return Ok(());
    };
    let mut out = Captured::default();
    let run = async {
        let mut shell = Shell::new(&mut out, sandbox);
        shell.run(argv).await.code()
    };
    let code = match tokio::time::timeout(check.timeout, run).await {
        Ok(code) => code,
        Err(_) => return Err(format!("command timed out after {:?}", check.timeout)),
    };
    if code == 0 {
        Ok(())
    } else {
        Err(format!(
            "command {argv:?} exited with {code}: {}",
            out.text.trim_end()
        ))
    }
}

/// A probe command's output (kept short, for the Event).
#[derive(Default)]
struct Captured {
    text: String,
}

impl Captured {
    fn add(&mut self, s: &str) {
        if self.text.len() < 512 {
            self.text.push_str(s);
        }
    }
}

impl Session for Captured {
    async fn out(&mut self, bytes: &[u8]) {
        self.add(&String::from_utf8_lossy(bytes));
    }

    async fn err(&mut self, text: &str) {
        self.add(text);
    }

    async fn read_line(&mut self) -> Input {
        Input::Eof
    }

    async fn cat(&mut self) -> i32 {
        0
    }

    fn broken(&self) -> bool {
        false
    }
}

/// What probes and restarts add to a simulated app container's status.
#[derive(Clone, Debug, Default)]
pub(crate) struct Life {
    /// `Some(false)` until its startup probe passed.
    pub(crate) started: Option<bool>,
    /// What its readiness probe says (`None`: it has none).
    pub(crate) ready: Option<bool>,
    /// How often it was restarted.
    pub(crate) restarts: i32,
    /// The run that ended last.
    pub(crate) last: Option<ContainerStateTerminated>,
    /// Seconds of back-off while it waits to restart.
    pub(crate) backoff: Option<u64>,
    /// The log of the run that ended last.
    pub(crate) previous_logs: Option<Arc<LogBuffer>>,
}

impl Life {
    /// Applies it to the status the container's state gives.
    pub(crate) fn apply(&self, s: &mut ContainerStatus, pod: &PodRef) {
        s.restart_count = s.restart_count.saturating_add(self.restarts);
        s.last_state = self.last.clone().map(|t| ContainerState {
            terminated: Some(t),
            ..Default::default()
        });
        if let Some(secs) = self.backoff {
            s.state = Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: Some(format!(
                        "back-off {secs}s restarting failed container={} pod={}_{}({})",
                        s.name, pod.name, pod.namespace, pod.uid
                    )),
                }),
                ..Default::default()
            });
            s.ready = false;
            s.started = Some(false);
        } else if s.state.as_ref().is_some_and(|st| st.running.is_some()) {
            let started = self.started.unwrap_or(true);
            s.started = Some(started);
            s.ready = started && self.ready.unwrap_or(true);
        }
    }
}

/// Runs `name`'s probes while it runs (see the module docs): returns
/// [`KILLED`] once a startup or liveness probe failed for good; updates
/// its readiness meanwhile.
pub(crate) async fn supervise(
    inner: &Inner,
    pod: &PodRef,
    name: &str,
    probes: &Probes,
    sandbox: &Sandbox,
) -> i32 {
    let set = |f: &dyn Fn(&mut Life)| {
        inner.update(&pod.uid, |p| f(p.lives.entry(name.to_owned()).or_default()));
    };
    let kill = |check: &Check, why: String| {
        let what = check.field.trim_end_matches("Probe");
        let what = format!("{}{}", what[..1].to_uppercase(), &what[1..]);
        warn(
            &inner.sink,
            pod,
            "Unhealthy",
            format!("{what} probe failed: {why}"),
        );
        warn(
            &inner.sink,
            pod,
            "Killing",
            format!(
                "Container {name} failed {} probe, will be restarted",
                what.to_lowercase()
            ),
        );
        KILLED
    };
    if let Some(s) = &probes.startup {
        tokio::time::sleep(s.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe(s, sandbox).await {
                Ok(()) => break,
                Err(why) => {
                    failures += 1;
                    if failures >= s.failure_threshold {
                        return kill(s, why);
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
        set(&|l| l.started = Some(true));
    }
    let live = async {
        let Some(l) = &probes.liveness else {
            return std::future::pending().await;
        };
        tokio::time::sleep(l.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe(l, sandbox).await {
                Ok(()) => failures = 0,
                Err(why) => {
                    failures += 1;
                    if failures >= l.failure_threshold {
                        return kill(l, why);
                    }
                }
            }
            tokio::time::sleep(l.period).await;
        }
    };
    tokio::select! {
        code = live => code,
        () = readiness(inner, pod, probes.readiness.as_ref(), sandbox, &set) => KILLED,
    }
}

/// Runs the readiness probe forever, setting `ready` as it passes and
/// fails (a Warning Event `Unhealthy` when it starts failing).
async fn readiness(
    inner: &Inner,
    pod: &PodRef,
    check: Option<&Check>,
    sandbox: &Sandbox,
    set: &impl Fn(&dyn Fn(&mut Life)),
) {
    let Some(r) = check else {
        return std::future::pending().await;
    };
    tokio::time::sleep(r.initial_delay).await;
    let (mut passes, mut failures, mut now) = (0, 0, None);
    loop {
        match probe(r, sandbox).await {
            Ok(()) => {
                (passes, failures) = (passes + 1, 0);
                if passes >= r.success_threshold && now != Some(true) {
                    now = Some(true);
                    set(&|l| l.ready = Some(true));
                }
            }
            Err(why) => {
                (passes, failures) = (0, failures + 1);
                if failures >= r.failure_threshold && now != Some(false) {
                    now = Some(false);
                    set(&|l| l.ready = Some(false));
                    warn(
                        &inner.sink,
                        pod,
                        "Unhealthy",
                        format!("Readiness probe failed: {why}"),
                    );
                }
            }
        }
        tokio::time::sleep(r.period).await;
    }
}

/// Records a Warning Event on `pod`.
pub(crate) fn warn(sink: &Sink, pod: &PodRef, reason: &str, note: String) {
    sink.event(PodEvent {
        pod: pod.clone(),
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note,
        action: "Probe",
        reporter: "skylet-mock",
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn probes_from_the_container() {
        let c: Container = serde_json::from_value(json!({
            "name": "main",
            "startupProbe": {"tcpSocket": {"port": 80}},
            "livenessProbe": {"exec": {"command": ["cat", "/ok"]}, "periodSeconds": 2, "failureThreshold": 1},
            "readinessProbe": {"httpGet": {"port": 80}}
        }))
        .unwrap();
        let p = Probes::of(&c);
        assert_eq!(p.startup.unwrap().handler, Handler::Pass);
        let live = p.liveness.unwrap();
        assert_eq!(
            live.handler,
            Handler::Exec(vec!["cat".into(), "/ok".into()])
        );
        assert_eq!(
            (live.period, live.failure_threshold, live.timeout),
            (Duration::from_secs(2), 1, Duration::from_secs(1))
        );
        assert_eq!(p.not_run, ["readinessProbe.httpGet"]);
    }

    #[tokio::test]
    async fn an_exec_probe_passes_on_exit_0() {
        let c: Container = serde_json::from_value(json!({"name": "main",
            "readinessProbe": {"exec": {"command": ["cat", "/ready"]}}}))
        .unwrap();
        let check = Probes::of(&c).readiness.unwrap();
        let mut sandbox = Sandbox::default();
        let err = probe(&check, &sandbox).await.unwrap_err();
        assert!(
            err.contains("exited with 1") && err.contains("/ready"),
            "{err}"
        );
        sandbox.files.insert("/ready".into(), "yes".into());
        probe(&check, &sandbox).await.unwrap();
    }

    #[test]
    fn restart_policy_and_backoff() {
        assert!(Restart::of(None).restarts(0));
        assert!(!Restart::of(Some("OnFailure")).restarts(0));
        assert!(Restart::of(Some("OnFailure")).restarts(1));
        assert!(!Restart::of(Some("Never")).restarts(1));
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(40));
        assert_eq!(backoff(9), Duration::from_secs(300));
    }
}
