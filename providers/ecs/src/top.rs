//! `Provider::stats` of the ECS backend: the running tasks' containers,
//! measured by CloudWatch ([`crate::usage`]) in as few GetMetricData calls
//! as the API allows, their rates turned into the cumulative counters the
//! kubelet API reports ([`skylet_provider::usage::Meter`]).

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use jiff::Timestamp;
use skylet_provider::{PodStats, Result, usage::Sample};

use crate::{
    EcsProvider,
    client::{CLOUDWATCH, aws},
    names::{self, ContainerKind},
    status::Observation,
    usage::{self, Target},
};

/// The last answer of CloudWatch: samples by task id and container.
pub(crate) struct Cached {
    at: Instant,
    samples: HashMap<(String, String), Sample>,
}

impl EcsProvider {
    /// The running tasks and their app containers.
    fn usage_targets(&self) -> Vec<Target> {
        let st = self.state();
        let mut targets: Vec<Target> = st
            .tasks
            .iter()
            .filter(|(_, e)| !e.stopped)
            .filter_map(|(arn, e)| {
                let Observation::Pod(bp) = &e.observation else {
                    return None;
                };
                if bp.status.phase.as_deref() != Some("Running") {
                    return None;
                }
                Some(Target {
                    pod: e.pod.clone(),
                    start: bp.status.start_time.as_ref().map(|t| t.0),
                    task_id: names::task_id(arn).to_owned(),
                    family: usage::family(&e.td_arn).to_owned(),
                    containers: e
                        .containers
                        .iter()
                        .filter(|c| matches!(names::container_kind(c), ContainerKind::App(_)))
                        .cloned()
                        .collect(),
                })
            })
            .collect();
        targets.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        targets
    }

    /// Samples of `targets`' containers: the cached answer while it is
    /// fresh and covers them, else one GetMetricData per batch.
    async fn usage_samples(&self, targets: &[Target]) -> Result<HashMap<(String, String), Sample>> {
        let wanted: Vec<(String, String)> = usage::keys(targets)
            .into_iter()
            .map(|(t, c)| (t.task_id.clone(), c.to_owned()))
            .collect();
        {
            let cache = self.cache();
            if let Some(c) = cache.as_ref()
                && c.at.elapsed() < usage::REFRESH
                && wanted.iter().all(|k| c.samples.contains_key(k))
            {
                return Ok(c.samples.clone());
            }
        }
        let end = aws_sdk_cloudwatch::primitives::DateTime::from_secs(Timestamp::now().as_second());
        let start = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            Timestamp::now().as_second() - usage::LOOKBACK_SECS,
        );
        let mut values = HashMap::new();
        for batch in usage::batches(&self.inner.config.cluster, targets) {
            let mut token = None;
            loop {
                let r = self
                    .inner
                    .clients
                    .cloudwatch
                    .get_metric_data()
                    .set_metric_data_queries(Some(batch.clone()))
                    .start_time(start)
                    .end_time(end)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(aws(CLOUDWATCH, "GetMetricData", self.m()))?;
                values.extend(usage::latest(r.metric_data_results()));
                token = r.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        let samples: HashMap<(String, String), Sample> = wanted
            .into_iter()
            .enumerate()
            .filter_map(|(n, k)| usage::sample(&values, n).map(|s| (k, s)))
            .collect();
        *self.cache() = Some(Cached {
            at: Instant::now(),
            samples: samples.clone(),
        });
        Ok(samples)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.inner
            .usage_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resource use of the running pods; a pod CloudWatch has no data for
    /// (yet) is left out, as a kubelet leaves out a pod it has not measured.
    pub(crate) async fn usage(&self) -> Result<Vec<PodStats>> {
        self.ensure_listed().await?;
        let targets = self.usage_targets();
        let samples = if targets.is_empty() {
            HashMap::new()
        } else {
            self.usage_samples(&targets).await?
        };
        let now = Timestamp::now();
        let meter = &self.inner.meter;
        let out: Vec<PodStats> = targets
            .iter()
            .filter_map(|t| {
                let containers: Vec<_> = t
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let s = samples.get(&(t.task_id.clone(), c.clone()))?;
                        Some(meter.observe(&t.pod.uid, c, t.start, *s, now))
                    })
                    .collect();
                (!containers.is_empty()).then(|| PodStats {
                    pod: t.pod.clone(),
                    start_time: t.start,
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
