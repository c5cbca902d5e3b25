//! `Provider::stats` of the remote backend: what the remote cluster's
//! metrics pipeline (metrics-server, or any `metrics.k8s.io` provider)
//! measures of this node's remote pods: one list of `PodMetrics` across
//! all namespaces, selected by the node's labels, per call (reused for
//! [`REFRESH`]), the usage rates turned into the cumulative counters the
//! kubelet API reports ([`skylet_provider::usage::Meter`]).
//!
//! Without `metrics.k8s.io` in the remote cluster the call fails and
//! `/stats/summary` answers with that error.
//!
//! RBAC on the remote cluster: `metrics.k8s.io` `pods`: list.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use skylet_provider::{
    ContainerStats, PodRef, PodStats, ProviderError, Result,
    quantity::Quantity,
    usage::{Meter, Sample},
};

use crate::{KubeProvider, classify, translate};

/// The operation of the list in the API metrics (`metrics.k8s.io` has no
/// OpenAPI operationId; this follows the apiserver's naming).
const LIST_POD_METRICS: &str = "listMetricsV1beta1PodMetricsForAllNamespaces";
/// How long a list is reused.
pub(crate) const REFRESH: Duration = Duration::from_secs(10);

/// The meter and the last list.
#[derive(Default)]
pub(crate) struct Top {
    meter: Meter,
    cache: Mutex<Option<(Instant, Vec<Measured>)>>,
}

/// One remote pod's usage.
#[derive(Clone, Debug)]
struct Measured {
    pod: PodRef,
    remote: (String, String),
    containers: Vec<(String, Sample)>,
}

/// `PodMetrics` of `metrics.k8s.io/v1beta1`.
fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    )
}

/// A usage quantity: CPU in cores (`250m`, `123456n`) to nanocores,
/// memory (`1Ki`) to bytes.
fn amount(v: Option<&serde_json::Value>, scale: u128) -> u64 {
    v.and_then(serde_json::Value::as_str)
        .and_then(Quantity::parse)
        .and_then(|q| q.scaled_ceil(scale))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// The home pod and the containers' samples of one `PodMetrics`.
fn measured(m: &DynamicObject) -> Option<Measured> {
    let labels = m.metadata.labels.as_ref()?;
    let pod = PodRef::new(
        labels.get(translate::ORIGIN_NAMESPACE)?.clone(),
        labels.get(translate::ORIGIN_NAME)?.clone(),
        labels.get(translate::ORIGIN_UID)?.clone(),
    );
    let containers = m
        .data
        .get("containers")?
        .as_array()?
        .iter()
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?.to_owned();
            let usage = c.get("usage")?;
            Some((
                name,
                Sample {
                    nano_cores: amount(usage.get("cpu"), 1_000_000_000),
                    memory_bytes: amount(usage.get("memory"), 1),
                },
            ))
        })
        .collect();
    Some(Measured {
        pod,
        remote: (m.namespace().unwrap_or_default(), m.name_any()),
        containers,
    })
}

impl KubeProvider {
    async fn pod_metrics(&self) -> Result<Vec<Measured>> {
        if let Some((at, list)) = self
            .top
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            && at.elapsed() < REFRESH
        {
            return Ok(list.clone());
        }
        let api: Api<DynamicObject> = Api::all_with(self.remote.clone(), &resource());
        let lp = ListParams::default().labels(&self.ctx.selector());
        let list = self
            .calls
            .run(LIST_POD_METRICS, api.list(&lp))
            .await
            .map_err(|e| match e {
                kube::Error::Api(ae) if ae.code == 404 => ProviderError::Unsupported(
                    "the remote cluster serves no metrics.k8s.io (install metrics-server there)"
                        .into(),
                ),
                e => classify("listing the remote pods' metrics", e),
            })?;
        let measured: Vec<Measured> = list.items.iter().filter_map(measured).collect();
        *self
            .top
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), measured.clone()));
        Ok(measured)
    }

    /// Resource use of this node's remote pods.
    pub(crate) async fn usage(&self) -> Result<Vec<PodStats>> {
        let measured = self.pod_metrics().await?;
        let now = Timestamp::now();
        let started = |ns: &str, name: &str| {
            self.running
                .state()
                .iter()
                .find(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == name)
                .and_then(|p| p.status.as_ref()?.start_time.as_ref().map(|t| t.0))
        };
        let out: Vec<PodStats> = measured
            .iter()
            .map(|m| {
                let start = started(&m.remote.0, &m.remote.1);
                PodStats {
                    pod: m.pod.clone(),
                    start_time: start,
                    containers: m
                        .containers
                        .iter()
                        .map(|(name, s)| -> ContainerStats {
                            self.top.meter.observe(&m.pod.uid, name, start, *s, now)
                        })
                        .collect(),
                }
            })
            .collect();
        self.top.meter.retain(
            &measured
                .iter()
                .map(|m| m.pod.uid.as_str())
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
    fn pod_metrics_become_samples_of_the_home_pod() {
        let m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": {"name": "web-1", "namespace": "home-shop", "labels": {
                "skylet.io/origin-namespace": "shop", "skylet.io/origin-name": "web-1",
                "skylet.io/origin-uid": "u1"}},
            "timestamp": "2026-01-01T00:00:00Z",
            "window": "10s",
            "containers": [
                {"name": "web", "usage": {"cpu": "250m", "memory": "20Mi"}},
                {"name": "side", "usage": {"cpu": "1234567n", "memory": "1Ki"}}
            ]
        }))
        .unwrap();
        let got = measured(&m).unwrap();
        assert_eq!(got.pod, PodRef::new("shop", "web-1", "u1"));
        assert_eq!(got.remote, ("home-shop".to_owned(), "web-1".to_owned()));
        assert_eq!(
            got.containers,
            [
                (
                    "web".to_owned(),
                    Sample {
                        nano_cores: 250_000_000,
                        memory_bytes: 20 << 20
                    }
                ),
                (
                    "side".to_owned(),
                    Sample {
                        nano_cores: 1_234_567,
                        memory_bytes: 1024
                    }
                )
            ]
        );
        // not a pod of skylet's
        let foreign: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "y"}, "containers": []
        }))
        .unwrap();
        assert!(measured(&foreign).is_none());
    }
}
