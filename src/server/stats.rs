//! `GET /stats/summary` and `GET /metrics/resource`: resource usage of the
//! pods, from the provider, in the shapes metrics-server and dashboards read
//! (k8s.io/kubelet/pkg/apis/stats/v1alpha1, and the kubelet's resource
//! metrics in Prometheus text format). Node usage is the sum of its pods'.

use std::{fmt::Write as _, sync::Arc};

use axum::{
    Json,
    extract::State as AxState,
    http::header,
    response::{IntoResponse, Response},
};
use jiff::Timestamp;
use serde_json::{Value, json};
use skylet_provider::{PodStats, Provider};

use super::{State, error::ApiError};
use crate::metrics::timed;

fn usage_nano_cores(cumulative_ns: u64, start: Option<Timestamp>, now: Timestamp) -> u64 {
    let secs = start.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
    if secs <= 0.0 {
        0
    } else {
        (cumulative_ns as f64 / secs) as u64
    }
}

pub(crate) async fn summary<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
) -> Result<Json<Value>, ApiError> {
    let stats = timed(&state.metrics, "stats", state.provider.stats()).await?;
    let now = Timestamp::now();
    let (mut node_cpu, mut node_mem, mut node_nano_cores) = (0u64, 0u64, 0u64);
    let pods: Vec<Value> = stats
        .iter()
        .map(|p| {
            let cpu: u64 = p.containers.iter().map(|c| c.cpu_usage_core_nanoseconds).sum();
            let mem: u64 = p.containers.iter().map(|c| c.memory_working_set_bytes).sum();
            // the backend's current rate where it reports one, else the
            // average since the start
            let nano_cores = |c: &skylet_provider::ContainerStats| {
                c.usage_nano_cores.unwrap_or_else(|| {
                    usage_nano_cores(c.cpu_usage_core_nanoseconds, c.start_time, now)
                })
            };
            let pod_nano_cores = if p.containers.iter().all(|c| c.usage_nano_cores.is_some()) {
                p.containers.iter().map(nano_cores).sum()
            } else {
                usage_nano_cores(cpu, p.start_time, now)
            };
            node_cpu += cpu;
            node_mem += mem;
            node_nano_cores += pod_nano_cores;
            json!({
                "podRef": {"name": p.pod.name, "namespace": p.pod.namespace, "uid": p.pod.uid},
                "startTime": p.start_time,
                "containers": p.containers.iter().map(|c| json!({
                    "name": c.name,
                    "startTime": c.start_time,
                    "cpu": {"time": now, "usageCoreNanoSeconds": c.cpu_usage_core_nanoseconds,
                            "usageNanoCores": nano_cores(c)},
                    "memory": {"time": now, "workingSetBytes": c.memory_working_set_bytes, "usageBytes": c.memory_working_set_bytes},
                })).collect::<Vec<_>>(),
                "cpu": {"time": now, "usageCoreNanoSeconds": cpu, "usageNanoCores": pod_nano_cores},
                "memory": {"time": now, "workingSetBytes": mem, "usageBytes": mem},
            })
        })
        .collect();
    Ok(Json(json!({
        "node": {
            "nodeName": state.config.node_name,
            "startTime": state.started,
            "cpu": {"time": now, "usageCoreNanoSeconds": node_cpu, "usageNanoCores": node_nano_cores},
            "memory": {"time": now, "workingSetBytes": node_mem, "usageBytes": node_mem},
        },
        "pods": pods,
    })))
}

/// Renders the kubelet's resource metrics; metrics-server needs the
/// timestamps (milliseconds) and drops pods with a zero sample.
pub(crate) fn render_resource_metrics(stats: &[PodStats], now: Timestamp) -> String {
    let ts = now.as_millisecond();
    let mut out = String::new();
    let mut node_cpu = 0u64;
    let mut node_mem = 0u64;
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    for p in stats {
        for c in &p.containers {
            node_cpu += c.cpu_usage_core_nanoseconds;
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                c.name,
                p.pod.namespace,
                p.pod.name,
                c.cpu_usage_core_nanoseconds as f64 / 1e9
            );
        }
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    for p in stats {
        for c in &p.containers {
            node_mem += c.memory_working_set_bytes;
            let _ = writeln!(
                out,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                c.name, p.pod.namespace, p.pod.name, c.memory_working_set_bytes
            );
        }
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    for p in stats {
        for c in &p.containers {
            if let Some(start) = c.start_time {
                let _ = writeln!(
                    out,
                    "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ts}",
                    c.name,
                    p.pod.namespace,
                    p.pod.name,
                    start.as_second()
                );
            }
        }
    }
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    for p in stats {
        let cpu: u64 = p
            .containers
            .iter()
            .map(|c| c.cpu_usage_core_nanoseconds)
            .sum();
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {ts}",
            p.pod.namespace,
            p.pod.name,
            cpu as f64 / 1e9
        );
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    for p in stats {
        let mem: u64 = p
            .containers
            .iter()
            .map(|c| c.memory_working_set_bytes)
            .sum();
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {mem} {ts}",
            p.pod.namespace, p.pod.name
        );
    }
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
    );
    let _ = writeln!(
        out,
        "node_cpu_usage_seconds_total {} {ts}",
        node_cpu as f64 / 1e9
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
    );
    let _ = writeln!(out, "node_memory_working_set_bytes {node_mem} {ts}");
    family(
        &mut out,
        "scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "scrape_error 0");
    out
}

pub(crate) async fn resource_metrics<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
) -> Result<Response, ApiError> {
    let stats = timed(&state.metrics, "stats", state.provider.stats()).await?;
    let body = render_resource_metrics(&stats, Timestamp::now());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

#[cfg(test)]
mod tests {
    use skylet_provider::{ContainerStats, PodRef};

    use super::*;

    #[test]
    fn resource_metrics_carry_labels_values_and_timestamps() {
        let now: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let stats = vec![PodStats {
            pod: PodRef::new("ns", "p", "u"),
            start_time: None,
            containers: vec![ContainerStats {
                name: "c".into(),
                start_time: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                cpu_usage_core_nanoseconds: 2_500_000_000,
                memory_working_set_bytes: 1024,
                usage_nano_cores: None,
            }],
        }];
        let text = render_resource_metrics(&stats, now);
        let ts = now.as_millisecond();
        assert!(text.contains(&format!("container_cpu_usage_seconds_total{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 2.5 {ts}")), "{text}");
        assert!(text.contains(&format!("container_memory_working_set_bytes{{container=\"c\",namespace=\"ns\",pod=\"p\"}} 1024 {ts}")));
        assert!(text.contains(&format!("node_memory_working_set_bytes 1024 {ts}")));
        assert!(text.contains(
            "container_start_time_seconds{container=\"c\",namespace=\"ns\",pod=\"p\"} 1767225600"
        ));
    }
}
