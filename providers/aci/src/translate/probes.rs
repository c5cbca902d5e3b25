//! Liveness and readiness probes: `exec`, or `httpGet` with path, scheme
//! and headers (a named port is looked up in the container's ports), with
//! their timings. `httpGet.host` is refused. ACI has no tcpSocket, grpc or
//! startup probes: those are not sent, and [`not_run`] says so and what
//! applies instead (a Warning Event `ProbeNotSupported` on the pod):
//!
//! | probe | instead |
//! |---|---|
//! | startupProbe | the liveness probe waits out the startup probe's budget: its `initialDelaySeconds` grows by the startup probe's `initialDelaySeconds + periodSeconds × failureThreshold` ([`startup_budget`]) |
//! | tcpSocket, grpc readinessProbe | none: the container is ready once running (and its `initialDelaySeconds` passed) |
//! | tcpSocket, grpc livenessProbe | none: the container restarts only when it exits |

use k8s_openapi::{
    api::core::v1::{Container as KubeContainer, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use skylet_provider::{ProviderError, checks::unsupported};

use crate::models::{ContainerExec, ContainerHttpGet, ContainerProbe, HttpHeader, Scheme};

/// What ACI does not run of `c`'s probes, and what applies instead, one
/// note each (`path` names the container: `spec.containers[0]`).
pub(super) fn not_run(c: &KubeContainer, path: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(p) = &c.startup_probe {
        let instead = if c.liveness_probe.is_some() {
            format!(
                "the liveness probe starts {} s later instead (the startup probe's initialDelaySeconds + periodSeconds x failureThreshold)",
                startup_budget(p)
            )
        } else {
            "nothing instead: the container counts as started once running".to_owned()
        };
        notes.push(format!(
            "{path}.startupProbe is not run: ACI has no startup probes; {instead}"
        ));
    }
    for (field, probe, instead) in [
        (
            "livenessProbe",
            &c.liveness_probe,
            "the container restarts only when it exits",
        ),
        (
            "readinessProbe",
            &c.readiness_probe,
            "the container counts as ready once running",
        ),
    ] {
        let Some(p) = probe else { continue };
        let kind = if p.tcp_socket.is_some() {
            "tcpSocket"
        } else if p.grpc.is_some() {
            "grpc"
        } else {
            continue;
        };
        notes.push(format!(
            "{path}.{field}.{kind} is not run: ACI probes are exec or httpGet only \
             (an exec probe such as `nc -z localhost PORT` or grpc_health_probe does the same); {instead}"
        ));
    }
    notes
}

/// How long a startup probe may take to pass: `initialDelaySeconds +
/// periodSeconds × failureThreshold` (Kubernetes' defaults: 10 s, 3).
pub(super) fn startup_budget(p: &Probe) -> i32 {
    let delay = p.initial_delay_seconds.unwrap_or(0).max(0);
    let period = p.period_seconds.unwrap_or(10).max(1);
    let failures = p.failure_threshold.unwrap_or(3).max(1);
    delay.saturating_add(period.saturating_mul(failures))
}

/// The ACI probe of `p`; `None` for a kind ACI does not run ([`not_run`]).
pub(super) fn probe(
    p: &Probe,
    path: &str,
    c: &KubeContainer,
) -> Result<Option<ContainerProbe>, ProviderError> {
    if p.tcp_socket.is_some() || p.grpc.is_some() {
        return Ok(None);
    }
    let exec = p.exec.as_ref().map(|e| ContainerExec {
        command: e.command.clone().unwrap_or_default(),
    });
    if exec.as_ref().is_some_and(|e| e.command.is_empty()) {
        return Err(unsupported(format!(
            "{path}.exec.command: empty; name the command to run"
        )));
    }
    let http_get = match &p.http_get {
        None => None,
        Some(h) => {
            if h.host.as_deref().is_some_and(|h| !h.is_empty()) {
                return Err(unsupported(format!(
                    "{path}.httpGet.host: ACI probes the container itself; remove host"
                )));
            }
            let port = match &h.port {
                IntOrString::Int(n) => *n,
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .or_else(|| name.parse().ok())
                    .ok_or_else(|| {
                        unsupported(format!(
                            "{path}.httpGet.port: container {:?} has no port named {name:?}",
                            c.name
                        ))
                    })?,
            };
            let scheme = match h.scheme.as_deref() {
                None => None,
                Some(s) if s.eq_ignore_ascii_case("http") => Some(Scheme::Http),
                Some(s) if s.eq_ignore_ascii_case("https") => Some(Scheme::Https),
                Some(other) => {
                    return Err(unsupported(format!(
                        "{path}.httpGet.scheme: {other:?} is not HTTP or HTTPS"
                    )));
                }
            };
            Some(ContainerHttpGet {
                path: h.path.clone().filter(|p| !p.is_empty()),
                port,
                scheme,
                http_headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| HttpHeader {
                        name: Some(h.name.clone()),
                        value: Some(h.value.clone()),
                    })
                    .collect(),
            })
        }
    };
    if exec.is_none() && http_get.is_none() {
        return Err(unsupported(format!(
            "{path}: the probe has no handler; give it exec or httpGet"
        )));
    }
    Ok(Some(ContainerProbe {
        exec,
        http_get,
        initial_delay_seconds: p.initial_delay_seconds,
        period_seconds: p.period_seconds,
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
        timeout_seconds: p.timeout_seconds,
    }))
}
