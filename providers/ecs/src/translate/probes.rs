//! Probes as an ECS container health check. ECS runs one command per
//! container (`healthCheck`: `CMD` + argv, interval, timeout, retries,
//! start period) and reports `HEALTHY`/`UNHEALTHY` per container, which the
//! pod's Ready follows (`status`). It restarts no container of a standalone
//! task for being unhealthy, and runs no HTTP, TCP or gRPC check.
//!
//! | probe | on ECS |
//! |---|---|
//! | exec `readinessProbe` | the health check: `periodSeconds` → interval (5..=300 s), `timeoutSeconds` → timeout (2..=120 s), `failureThreshold` → retries (1..=10), `initialDelaySeconds` → start period (0..=300 s) |
//! | exec `livenessProbe` | the health check when there is no exec readiness probe (Ready follows it); it restarts nothing: the container restarts when it exits |
//! | exec `startupProbe` | the start period of the health check: its `initialDelaySeconds + periodSeconds × failureThreshold` |
//! | httpGet, tcpSocket, grpc probes | not run |
//!
//! Whatever is not run as Kubernetes would has a note in [`not_run`], which
//! the backend records on the pod as a Warning Event `ProbeNotSupported`.

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use serde::Serialize;

/// An ECS container health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// `["CMD", argv...]`.
    pub command: Vec<String>,
    /// Seconds between checks.
    pub interval: i32,
    /// Seconds a check may take.
    pub timeout: i32,
    /// Failures in a row that make the container UNHEALTHY.
    pub retries: i32,
    /// Seconds after the start during which failures do not count.
    pub start_period: i32,
}

/// The exec command of `p`, if it is an exec probe with one.
fn exec(p: Option<&Probe>) -> Option<&Vec<String>> {
    p?.exec.as_ref()?.command.as_ref().filter(|c| !c.is_empty())
}

/// The health check of `c`, from its exec readiness probe, else its exec
/// liveness probe, with the start period of its startup probe.
pub(super) fn health_check(c: &Container) -> Option<HealthCheck> {
    let (probe, argv) = [c.readiness_probe.as_ref(), c.liveness_probe.as_ref()]
        .into_iter()
        .find_map(|p| Some((p?, exec(p)?)))?;
    let start = match c.startup_probe.as_ref() {
        Some(s) if exec(Some(s)).is_some() => startup_budget(s),
        _ => probe.initial_delay_seconds.unwrap_or(0),
    };
    Some(HealthCheck {
        command: std::iter::once("CMD".to_owned())
            .chain(argv.iter().cloned())
            .collect(),
        interval: probe.period_seconds.unwrap_or(10).clamp(5, 300),
        timeout: probe.timeout_seconds.unwrap_or(1).clamp(2, 120),
        retries: probe.failure_threshold.unwrap_or(3).clamp(1, 10),
        start_period: start.clamp(0, 300),
    })
}

/// `initialDelaySeconds + periodSeconds × failureThreshold` (Kubernetes'
/// defaults: 10 s, 3).
fn startup_budget(p: &Probe) -> i32 {
    let period = p.period_seconds.unwrap_or(10).max(1);
    let failures = p.failure_threshold.unwrap_or(3).max(1);
    p.initial_delay_seconds
        .unwrap_or(0)
        .max(0)
        .saturating_add(period.saturating_mul(failures))
}

/// What of the probes of `spec`'s app containers ECS does not run as
/// Kubernetes would, and what applies instead: one note each.
pub fn not_run(spec: &PodSpec) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        let check = exec(c.readiness_probe.as_ref())
            .map(|_| "readinessProbe")
            .or_else(|| exec(c.liveness_probe.as_ref()).map(|_| "livenessProbe"));
        for (field, p) in [
            ("startupProbe", c.startup_probe.as_ref()),
            ("livenessProbe", c.liveness_probe.as_ref()),
            ("readinessProbe", c.readiness_probe.as_ref()),
        ] {
            let Some(p) = p else { continue };
            let instead = match field {
                "readinessProbe" => "the container counts as ready once running",
                "livenessProbe" => "the container restarts only when it exits",
                _ => "the container counts as started once running",
            };
            if exec(Some(p)).is_none() {
                let kind = if p.http_get.is_some() {
                    "httpGet"
                } else if p.tcp_socket.is_some() {
                    "tcpSocket"
                } else if p.grpc.is_some() {
                    "grpc"
                } else {
                    "exec"
                };
                notes.push(format!(
                    "{path}.{field}.{kind} is not run: ECS health checks run a command in the container \
                     (an exec probe such as `wget -q -O- http://localhost:PORT/PATH` does the same); {instead}"
                ));
            } else if field == "startupProbe" && check.is_none() {
                notes.push(format!(
                    "{path}.startupProbe is not run: on ECS it only delays the health check of an exec \
                     readiness or liveness probe, and there is none; {instead}"
                ));
            } else if field == "livenessProbe" && check == Some("readinessProbe") {
                notes.push(format!(
                    "{path}.livenessProbe is not run: an ECS container has one health check, taken from \
                     the readinessProbe; {instead}"
                ));
            } else if field == "livenessProbe" {
                notes.push(format!(
                    "{path}.livenessProbe runs as the ECS health check: the pod's Ready follows it, but \
                     ECS restarts no container of a standalone task for failing it; {instead}"
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(containers: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({ "containers": containers })).unwrap()
    }

    #[test]
    fn the_exec_readiness_probe_is_the_health_check() {
        let s = spec(json!([{"name": "web",
            "startupProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 10},
            "livenessProbe": {"exec": {"command": ["cat", "/live"]}},
            "readinessProbe": {"exec": {"command": ["cat", "/ready"]}, "periodSeconds": 1, "timeoutSeconds": 200,
                               "failureThreshold": 20}}]));
        assert_eq!(
            health_check(&s.containers[0]),
            Some(HealthCheck {
                command: vec!["CMD".into(), "cat".into(), "/ready".into()],
                interval: 5,
                timeout: 120,
                retries: 10,
                start_period: 25,
            }),
            "clamped to what ECS takes; the startup budget is the start period"
        );
        let notes = not_run(&s);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with(
            "spec.containers[0].livenessProbe is not run: an ECS container has one health check"
        ));
    }

    #[test]
    fn probes_ecs_cannot_run_have_a_note_each() {
        let s = spec(json!([
            {"name": "web", "livenessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 7},
             "readinessProbe": {"httpGet": {"port": 80}}},
            {"name": "db", "startupProbe": {"exec": {"command": ["true"]}},
             "livenessProbe": {"tcpSocket": {"port": 5432}}}]));
        let web = health_check(&s.containers[0]).unwrap();
        assert_eq!(
            (web.command.len(), web.start_period, web.interval),
            (2, 7, 10)
        );
        assert_eq!(health_check(&s.containers[1]), None);
        let notes = not_run(&s);
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert!(
            notes[0].starts_with("spec.containers[0].livenessProbe runs as the ECS health check")
        );
        assert!(notes[1].starts_with("spec.containers[0].readinessProbe.httpGet is not run"));
        assert!(notes[1].ends_with("the container counts as ready once running"));
        assert!(notes[2].starts_with("spec.containers[1].startupProbe is not run"));
        assert!(notes[3].starts_with("spec.containers[1].livenessProbe.tcpSocket is not run"));
    }
}
