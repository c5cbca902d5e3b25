//! Amazon ECS's and AWS Fargate's published API rate limits, kept on
//! skylet's side ([`skylet_provider::ratelimit`]): every attempt of an ECS
//! call first takes a token of each bucket covering its operation, so a
//! burst of pods is spread at the rate ECS admits instead of being answered
//! `ThrottlingException` and retried.
//!
//! | bucket | capacity | refill/s | operations skylet calls |
//! |---|---|---|---|
//! | `cluster-read` | 50 | 20 | `DescribeClusters` |
//! | `cluster-resource-modify` | 100 | 40 | `RunTask`, `StopTask` |
//! | `cluster-resource-read` | 100 | 20 | `DescribeTasks`, `ListTasks` |
//! | `task-definition-modify` | 20 | 1 | `RegisterTaskDefinition`, `DeregisterTaskDefinition` |
//! | `task-definition-read` | 50 | 20 | `DescribeTaskDefinition`, `ListTaskDefinitions`, `ListTaskDefinitionFamilies` |
//! | `task-definition-delete` | 5 | 1 | `DeleteTaskDefinitions` |
//! | `tag-modify` | 20 | 10 | `TagResource`, `UntagResource` |
//! | `fargate-launch` | 100 | 20 | each task `RunTask` starts on `FARGATE` |
//! | `fargate-spot-launch` | 100 | 20 | each task `RunTask` starts on `FARGATE_SPOT` |
//!
//! Sources: "Request throttling for the Amazon ECS API"
//! (docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html,
//! per account and Region; a category's actions share its bucket) and "AWS
//! Fargate throttling quotas"
//! (docs.aws.amazon.com/AmazonECS/latest/developerguide/throttling.html:
//! tasks launched, on demand and Spot, 100 at once and 20 per second).
//! Accounts whose quotas were raised change a bucket by name
//! (`--ecs-rate-limit fargate-launch=500:100`) or turn it off (`=off`).
//!
//! The buckets sit in the ECS client's HTTP connector ([`limited`]): the
//! operation is the `X-Amz-Target` header's, the tasks a `RunTask` starts
//! are its body's `count` and launch type (or capacity provider), and a
//! retry takes tokens again, as it does in ECS.

use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
        http_client_fn,
    },
    orchestrator::HttpRequest,
};
use skylet_provider::ratelimit::{BucketSpec, Buckets};

/// The pseudo-operation of one task launched on Fargate.
const FARGATE_LAUNCH: &str = "FargateLaunch";
/// The pseudo-operation of one task launched on Fargate Spot.
const FARGATE_SPOT_LAUNCH: &str = "FargateSpotLaunch";

/// The published buckets (see the module docs).
pub(crate) const PUBLISHED: &[BucketSpec] = &[
    BucketSpec {
        name: "cluster-read",
        capacity: 50,
        refill_per_second: 20.0,
        operations: &["DescribeClusters", "ListClusters"],
    },
    BucketSpec {
        name: "cluster-resource-modify",
        capacity: 100,
        refill_per_second: 40.0,
        operations: &["RunTask", "StartTask", "StopTask", "ExecuteCommand"],
    },
    BucketSpec {
        name: "cluster-resource-read",
        capacity: 100,
        refill_per_second: 20.0,
        operations: &[
            "DescribeTasks",
            "ListTasks",
            "DescribeContainerInstances",
            "ListContainerInstances",
        ],
    },
    BucketSpec {
        name: "task-definition-modify",
        capacity: 20,
        refill_per_second: 1.0,
        operations: &["RegisterTaskDefinition", "DeregisterTaskDefinition"],
    },
    BucketSpec {
        name: "task-definition-read",
        capacity: 50,
        refill_per_second: 20.0,
        operations: &[
            "DescribeTaskDefinition",
            "ListTaskDefinitions",
            "ListTaskDefinitionFamilies",
        ],
    },
    BucketSpec {
        name: "task-definition-delete",
        capacity: 5,
        refill_per_second: 1.0,
        operations: &["DeleteTaskDefinitions"],
    },
    BucketSpec {
        name: "tag-modify",
        capacity: 20,
        refill_per_second: 10.0,
        operations: &["TagResource", "UntagResource"],
    },
    BucketSpec {
        name: "fargate-launch",
        capacity: 100,
        refill_per_second: 20.0,
        operations: &[FARGATE_LAUNCH],
    },
    BucketSpec {
        name: "fargate-spot-launch",
        capacity: 100,
        refill_per_second: 20.0,
        operations: &[FARGATE_SPOT_LAUNCH],
    },
];

/// The operations one request takes tokens for: its own (from
/// `X-Amz-Target`, `AmazonEC2ContainerServiceV20141113.RunTask`), and for a
/// `RunTask` one launch per task it starts on Fargate or Fargate Spot.
fn operations(target: &str, body: Option<&[u8]>) -> Vec<String> {
    let Some((_, op)) = target.rsplit_once('.') else {
        return Vec::new();
    };
    let mut ops = vec![op.to_owned()];
    if op == "RunTask" {
        let v: serde_json::Value = body
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let count = v["count"].as_u64().unwrap_or(1).clamp(1, 10);
        let spot = v["capacityProviderStrategy"]
            .as_array()
            .is_some_and(|s| s.iter().any(|p| p["capacityProvider"] == "FARGATE_SPOT"));
        let fargate = v["launchType"] == "FARGATE"
            || v["capacityProviderStrategy"]
                .as_array()
                .is_some_and(|s| s.iter().any(|p| p["capacityProvider"] == "FARGATE"));
        let launch = if spot {
            Some(FARGATE_SPOT_LAUNCH)
        } else if fargate {
            Some(FARGATE_LAUNCH)
        } else {
            None
        };
        if let Some(l) = launch {
            ops.extend((0..count).map(|_| l.to_owned()));
        }
    }
    ops
}

/// Waits for the request's tokens, then sends it with `inner`.
#[derive(Debug)]
struct Limited {
    inner: SharedHttpConnector,
    buckets: Buckets,
}

impl HttpConnector for Limited {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let ops = operations(
            request.headers().get("x-amz-target").unwrap_or_default(),
            request.body().bytes(),
        );
        let (inner, buckets) = (self.inner.clone(), self.buckets.clone());
        HttpConnectorFuture::new(async move {
            for op in &ops {
                buckets.acquire(op).await;
            }
            inner.call(request).await
        })
    }
}

/// `http` with every request first taking its tokens of `buckets`.
pub(crate) fn limited(http: SharedHttpClient, buckets: Buckets) -> SharedHttpClient {
    http_client_fn(move |settings, components| {
        SharedHttpConnector::new(Limited {
            inner: http.http_connector(settings, components),
            buckets: buckets.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECS: &str = "AmazonEC2ContainerServiceV20141113";

    #[test]
    fn a_run_task_takes_a_launch_per_task_on_its_capacity() {
        let ops = |op: &str, body: &str| operations(&format!("{ECS}.{op}"), Some(body.as_bytes()));
        assert_eq!(ops("StopTask", "{}"), ["StopTask"]);
        assert_eq!(
            ops("RunTask", r#"{"launchType":"FARGATE","count":2}"#),
            ["RunTask", FARGATE_LAUNCH, FARGATE_LAUNCH]
        );
        assert_eq!(
            ops(
                "RunTask",
                r#"{"capacityProviderStrategy":[{"capacityProvider":"FARGATE_SPOT","weight":1}]}"#
            ),
            ["RunTask", FARGATE_SPOT_LAUNCH]
        );
        assert_eq!(ops("RunTask", r#"{"launchType":"EC2"}"#), ["RunTask"]);
        assert!(operations("", None).is_empty());
        // every operation named is in exactly one bucket
        for b in PUBLISHED {
            for op in b.operations {
                let n = PUBLISHED
                    .iter()
                    .filter(|o| o.operations.contains(op))
                    .count();
                assert_eq!(n, 1, "{op}");
            }
        }
    }
}
