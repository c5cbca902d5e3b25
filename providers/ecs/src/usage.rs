//! Resource use of the node's tasks for `kubectl top` and autoscalers,
//! from CloudWatch Container Insights (with enhanced observability, which
//! publishes per-container metrics of every task): `ContainerCpuUtilized`
//! (CPU units, 1024 a vCPU) and `ContainerMemoryUtilized` (MiB) in
//! namespace `ECS/ContainerInsights`, dimensions `ClusterName`,
//! `TaskDefinitionFamily`, `TaskId` and `ContainerName`.
//!
//! # Cost
//! One GetMetricData per 250 containers (two queries each, 500 a call),
//! the latest minute of each; the answer is kept for [`REFRESH`], so
//! metrics-server's scrapes every 10-60 s cost at most one batch each.
//!
//! # Caveats
//! The cluster needs Container Insights with enhanced observability
//! (`containerInsights=enhanced`); without it there is no per-task data
//! and the pods are missing from `kubectl top`. CloudWatch publishes a
//! minute's average about a minute later, so usage lags by one to two
//! minutes, as on EKS Fargate.

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat};
use jiff::Timestamp;
use skylet_provider::{PodRef, usage::Sample};

/// The Container Insights namespace.
pub const NAMESPACE: &str = "ECS/ContainerInsights";
/// CPU units a container uses (1024 are one vCPU).
pub const CPU_METRIC: &str = "ContainerCpuUtilized";
/// MiB of memory a container uses.
pub const MEMORY_METRIC: &str = "ContainerMemoryUtilized";
/// GetMetricData's limit of queries per call.
pub const MAX_QUERIES: usize = 500;
/// How far back a query looks for the latest datapoint.
pub const LOOKBACK_SECS: i64 = 300;
/// How long an answer is reused.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// One running task whose containers are measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The pod it runs.
    pub pod: PodRef,
    /// When the pod started.
    pub start: Option<Timestamp>,
    /// Its id (the last part of its ARN).
    pub task_id: String,
    /// Its task definition's family.
    pub family: String,
    /// Its app containers (ECS names, which are the pod's).
    pub containers: Vec<String>,
}

/// The cluster's name from a name or an ARN (the `ClusterName` dimension).
pub fn cluster_name(cluster: &str) -> &str {
    cluster.rsplit('/').next().unwrap_or(cluster)
}

/// The family of a task definition ARN (`.../task-definition/FAMILY:REV`).
pub fn family(td_arn: &str) -> &str {
    let tail = td_arn.rsplit('/').next().unwrap_or(td_arn);
    tail.split(':').next().unwrap_or(tail)
}

/// The queries for `targets`, two per container, in batches of at most
/// [`MAX_QUERIES`]; a query's id is `c<n>` (CPU) or `m<n>` (memory), `n`
/// indexing [`keys`].
pub fn batches(cluster: &str, targets: &[Target]) -> Vec<Vec<MetricDataQuery>> {
    let mut queries = Vec::new();
    for (n, (t, container)) in keys(targets).into_iter().enumerate() {
        for (prefix, metric) in [("c", CPU_METRIC), ("m", MEMORY_METRIC)] {
            let dims = [
                ("ClusterName", cluster_name(cluster)),
                ("TaskDefinitionFamily", t.family.as_str()),
                ("TaskId", t.task_id.as_str()),
                ("ContainerName", container),
            ];
            let metric = Metric::builder()
                .namespace(NAMESPACE)
                .metric_name(metric)
                .set_dimensions(Some(
                    dims.iter()
                        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                        .collect(),
                ))
                .build();
            queries.push(
                MetricDataQuery::builder()
                    .id(format!("{prefix}{n}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric)
                            .period(60)
                            .stat("Average")
                            .build(),
                    )
                    .return_data(true)
                    .build(),
            );
        }
    }
    queries
        .chunks(MAX_QUERIES)
        .map(<[MetricDataQuery]>::to_vec)
        .collect()
}

/// Every (task, container) measured, in query order.
pub fn keys(targets: &[Target]) -> Vec<(&Target, &str)> {
    targets
        .iter()
        .flat_map(|t| t.containers.iter().map(move |c| (t, c.as_str())))
        .collect()
}

/// The latest value of each answered query, by id.
pub fn latest(results: &[MetricDataResult]) -> HashMap<String, f64> {
    results
        .iter()
        .filter_map(|r| {
            let id = r.id()?;
            let newest = r
                .timestamps()
                .iter()
                .zip(r.values())
                .max_by_key(|(t, _)| (t.secs(), t.subsec_nanos()))
                .map(|(_, v)| *v)?;
            Some((id.to_owned(), newest))
        })
        .collect()
}

/// The sample of container `n` of [`keys`] from the latest values: CPU
/// units to nanocores (1024 units are 1e9), MiB to bytes. `None` when
/// CloudWatch has no CPU datapoint for it (yet).
pub fn sample(values: &HashMap<String, f64>, n: usize) -> Option<Sample> {
    let units = *values.get(&format!("c{n}"))?;
    let mib = values.get(&format!("m{n}")).copied().unwrap_or(0.0);
    Some(Sample {
        nano_cores: (units.max(0.0) * 1e9 / 1024.0) as u64,
        memory_bytes: (mib.max(0.0) * 1_048_576.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::DateTime;

    use super::*;

    fn target(task: &str, containers: &[&str]) -> Target {
        Target {
            pod: PodRef::new("ns", task, format!("uid-{task}")),
            start: None,
            task_id: task.into(),
            family: "skylet-abcd-1234".into(),
            containers: containers.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn names_from_arns() {
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/burst"),
            "burst"
        );
        assert_eq!(cluster_name("burst"), "burst");
        assert_eq!(
            family("arn:aws:ecs:us-east-1:123456789012:task-definition/skylet-ab-cd:3"),
            "skylet-ab-cd"
        );
    }

    #[test]
    fn two_queries_per_container_in_batches_of_500() {
        let targets: Vec<Target> = (0..130)
            .map(|i| target(&format!("t{i}"), &["web", "side"]))
            .collect();
        let b = batches("arn:aws:ecs:r:1:cluster/burst", &targets);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            [500, 20],
            "260 containers, 520 queries"
        );
        let q = &b[0][3];
        assert_eq!(q.id(), Some("m1"));
        let stat = q.metric_stat().unwrap();
        assert_eq!((stat.period(), stat.stat()), (Some(60), Some("Average")));
        let m = stat.metric().unwrap();
        assert_eq!(
            (m.namespace(), m.metric_name()),
            (Some(NAMESPACE), Some(MEMORY_METRIC))
        );
        let dims: Vec<(&str, &str)> = m
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap(), d.value().unwrap()))
            .collect();
        assert_eq!(
            dims,
            [
                ("ClusterName", "burst"),
                ("TaskDefinitionFamily", "skylet-abcd-1234"),
                ("TaskId", "t0"),
                ("ContainerName", "side")
            ]
        );
    }

    #[test]
    fn the_newest_datapoint_becomes_the_sample() {
        let result = |id: &str, points: &[(i64, f64)]| {
            MetricDataResult::builder()
                .id(id)
                .set_timestamps(Some(
                    points
                        .iter()
                        .map(|(t, _)| DateTime::from_secs(*t))
                        .collect(),
                ))
                .set_values(Some(points.iter().map(|(_, v)| *v).collect()))
                .build()
        };
        let values = latest(&[
            result("c0", &[(120, 512.0), (60, 10.0)]),
            result("m0", &[(60, 1.0), (120, 64.0)]),
            result("c1", &[]),
        ]);
        assert_eq!(
            sample(&values, 0),
            Some(Sample {
                nano_cores: 500_000_000,
                memory_bytes: 64 << 20
            })
        );
        assert_eq!(sample(&values, 1), None, "no datapoint yet");
    }
}
