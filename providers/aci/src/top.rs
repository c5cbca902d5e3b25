//! `Provider::stats` of the ACI backend: the running groups' containers,
//! measured by Azure Monitor ([`crate::client::monitor`]) in one batch
//! call per 50 groups, their rates (millicores) turned into the
//! cumulative counters the kubelet API reports
//! ([`skylet_provider::usage::Meter`]). An answer is reused for
//! [`REFRESH`], so metrics-server's scrapes cost at most one batch each.
//!
//! Azure Monitor publishes a minute's average a minute or two after it:
//! `kubectl top` and autoscalers see ACI's usage that much later.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use skylet_provider::{PodRef, PodStats, Result, usage::Sample};

use crate::{
    AciProvider,
    client::monitor::{self, CPU_USAGE, MEMORY_USAGE},
};

/// How long an answer is reused.
pub(crate) const REFRESH: Duration = Duration::from_secs(15);
/// How far back a query looks for the newest minute.
const LOOKBACK_MINUTES: i64 = 5;

/// The last answer: samples by group name and container.
pub(crate) struct Cached {
    at: Instant,
    samples: HashMap<(String, String), Sample>,
}

/// A running group to measure.
struct Target {
    pod: PodRef,
    group: String,
    start: Timestamp,
    containers: Vec<String>,
}

/// Samples from one batch answer, by (group name, container): the group
/// is the last segment of each value's `resourceid`.
fn samples_of(answer: &monitor::MetricResultsResponse) -> HashMap<(String, String), Sample> {
    let mut out: HashMap<(String, String), Sample> = HashMap::new();
    for v in answer.values.iter().flatten() {
        let Some(group) = v.resourceid.as_deref().and_then(|id| id.rsplit('/').next()) else {
            continue;
        };
        for metric in &v.value {
            for (container, value) in monitor::latest_by_container(metric) {
                let s = out
                    .entry((group.to_ascii_lowercase(), container))
                    .or_default();
                if metric.name.value.eq_ignore_ascii_case(CPU_USAGE) {
                    *s = Sample {
                        nano_cores: (value.max(0.0) * 1e6) as u64,
                        ..*s
                    };
                } else if metric.name.value.eq_ignore_ascii_case(MEMORY_USAGE) {
                    *s = Sample {
                        memory_bytes: value.max(0.0) as u64,
                        ..*s
                    };
                }
            }
        }
    }
    out
}

impl AciProvider {
    fn usage_targets(&self) -> Vec<Target> {
        let mut v: Vec<Target> = self
            .state()
            .groups
            .values()
            .filter_map(|k| {
                Some(Target {
                    pod: k.pod.clone(),
                    group: k.name.clone(),
                    start: k.running_since?,
                    containers: k.app_containers.clone(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.group.cmp(&b.group));
        v
    }

    fn resource_id(&self, group: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups/{group}",
            self.inner.config.subscription_id,
            self.rg()
        )
    }

    async fn usage_samples(&self, targets: &[Target]) -> Result<HashMap<(String, String), Sample>> {
        {
            let cache = self
                .inner
                .usage_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = cache.as_ref()
                && c.at.elapsed() < REFRESH
                && targets.iter().all(|t| {
                    c.samples
                        .keys()
                        .any(|(g, _)| g.eq_ignore_ascii_case(&t.group))
                })
            {
                return Ok(c.samples.clone());
            }
        }
        let ids: Vec<String> = targets.iter().map(|t| self.resource_id(&t.group)).collect();
        let mut samples = HashMap::new();
        for batch in ids.chunks(monitor::MAX_RESOURCES) {
            let answer = self
                .inner
                .client
                .group_metrics(batch, LOOKBACK_MINUTES)
                .await?;
            samples.extend(samples_of(&answer));
        }
        *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            at: Instant::now(),
            samples: samples.clone(),
        });
        Ok(samples)
    }

    /// Resource use of the running pods; a container Azure Monitor has no
    /// data for (yet) is left out, and a pod without any.
    pub(crate) async fn usage(&self) -> Result<Vec<PodStats>> {
        if !self.state().listed {
            self.sweep().await?;
        }
        let targets = self.usage_targets();
        let samples = if targets.is_empty() {
            HashMap::new()
        } else {
            self.usage_samples(&targets).await?
        };
        let now = Timestamp::now();
        let meter = &self.inner.meter;
        let out = targets
            .iter()
            .filter_map(|t| {
                let containers: Vec<_> = t
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let s = samples.get(&(t.group.to_ascii_lowercase(), c.clone()))?;
                        Some(meter.observe(&t.pod.uid, c, Some(t.start), *s, now))
                    })
                    .collect();
                (!containers.is_empty()).then(|| PodStats {
                    pod: t.pod.clone(),
                    start_time: Some(t.start),
                    containers,
                })
            })
            .collect();
        meter.retain(
            &targets
                .iter()
                .map(|t| t.pod.uid.as_str())
                .collect::<HashSet<_>>(),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn samples_by_group_and_container() {
        let series = |c: &str, v: f64| {
            json!({"metadatavalues": [{"name": {"value": "containerName"}, "value": c}],
                   "data": [{"timeStamp": "2026-01-01T00:01:00Z", "average": v}]})
        };
        let metric = |name: &str, unit: &str, ts: Vec<serde_json::Value>| {
            json!({"id": format!("x/{name}"), "type": "Microsoft.Insights/metrics",
                   "name": {"value": name}, "unit": unit, "timeseries": ts})
        };
        let answer: monitor::MetricResultsResponse = serde_json::from_value(json!({"values": [{
            "starttime": "2026-01-01T00:00:00Z", "endtime": "2026-01-01T00:05:00Z",
            "resourceid": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/Skylet-G1",
            "value": [
                metric("CpuUsage", "MilliCores", vec![series("web", 250.0), series("side", 1.5)]),
                metric("MemoryUsage", "Bytes", vec![series("web", 1048576.0)]),
            ]
        }]}))
        .unwrap();
        let s = samples_of(&answer);
        assert_eq!(
            s[&("skylet-g1".to_owned(), "web".to_owned())],
            Sample {
                nano_cores: 250_000_000,
                memory_bytes: 1 << 20
            }
        );
        assert_eq!(
            s[&("skylet-g1".to_owned(), "side".to_owned())].nano_cores,
            1_500_000
        );
    }
}
