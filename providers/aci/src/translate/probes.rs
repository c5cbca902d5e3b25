//! Liveness and readiness probes: `exec`, or `httpGet` with path, scheme
//! and headers (a named port is looked up in the container's ports), with
//! their timings. tcpSocket and grpc probes and `httpGet.host` are refused:
//! ACI has no equivalent.

use k8s_openapi::{
    api::core::v1::{Container as KubeContainer, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use skylet_provider::{ProviderError, checks::unsupported};

use crate::models::{ContainerExec, ContainerHttpGet, ContainerProbe, HttpHeader, Scheme};

pub(super) fn probe(
    p: &Probe,
    path: &str,
    c: &KubeContainer,
) -> Result<ContainerProbe, ProviderError> {
    if p.tcp_socket.is_some() {
        return Err(unsupported(format!(
            "{path}.tcpSocket: ACI probes are exec or httpGet only; use an exec probe (e.g. `nc -z localhost PORT`) or httpGet"
        )));
    }
    if p.grpc.is_some() {
        return Err(unsupported(format!(
            "{path}.grpc: ACI probes are exec or httpGet only; use an exec probe (e.g. grpc_health_probe)"
        )));
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
    Ok(ContainerProbe {
        exec,
        http_get,
        initial_delay_seconds: p.initial_delay_seconds,
        period_seconds: p.period_seconds,
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
        timeout_seconds: p.timeout_seconds,
    })
}
