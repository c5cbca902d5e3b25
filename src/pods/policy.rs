//! What a failure means, decided once: for a provider error, what happens
//! to the pod ([`on_provider_error`]); for a failed reconcile, when it runs
//! again ([`retry_after`]).
//!
//! | class | pod status | Event | retry |
//! |---|---|---|---|
//! | `InvalidPod` | Failed, the provider's reason | Warning, the provider's reason | never |
//! | `Unsupported` | Failed, `ProviderUnsupported` | Warning | never |
//! | `Capacity`, pod owned by a controller | Failed, `BackendCapacityUnavailable` | Warning | never here: its controller replaces it and the scheduler picks another node (the node is tainted `skylet.io/capacity-exhausted` for a cooldown) |
//! | `Capacity`, bare pod | unchanged (Pending) | Warning `BackendCapacityUnavailable` | backoff (a bare pod is not moved) |
//! | `Throttled` | unchanged | none | after `retry_after`, else backoff |
//! | `Transient` | unchanged (Pending) | Warning `ProviderCreateFailed` | exponential backoff, 1 s to 5 min |
//! | `NotFound` | (on delete: done) | Warning `ProviderCreateFailed` on create | backoff |
//!
//! A 429 from the API server waits as long as it asks, without counting as a
//! failure; a missing ConfigMap or Secret is looked for again at least every
//! 20 s, so the pod starts soon after someone creates it.

use std::{sync::LazyLock, time::Duration};

use skylet_provider::{Backoff, PodRef, ProviderError};

use super::resolve;

/// Why a reconcile failed; [`retry_after`] says when it runs again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider call failed.
    #[error("provider {op} failed for pod {pod}")]
    Provider {
        op: &'static str,
        pod: PodRef,
        source: ProviderError,
    },
    /// Writing the pod status failed.
    #[error("failed to write the status of pod {pod}")]
    WriteStatus { pod: PodRef, source: kube::Error },
    /// Deleting the pod object failed.
    #[error("failed to delete pod {pod}")]
    Delete { pod: PodRef, source: kube::Error },
    /// Reading the whole pod again (its store keeps the slim record) failed.
    #[error("failed to read pod {pod}")]
    Get { pod: PodRef, source: kube::Error },
    /// A reference could not be resolved yet (the status says which).
    #[error("pod {pod} waits for {source}")]
    Resolve { pod: PodRef, source: resolve::Error },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a provider error on `op` means for the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The pod can never run here: it fails, with a Warning Event.
    Fail { reason: String, message: String },
    /// Retry later; record a Warning Event first if `event` says so.
    Retry {
        event: Option<(&'static str, String)>,
    },
}

/// The reason of a pod refused for lack of capacity.
pub(crate) const CAPACITY_REASON: &str = "BackendCapacityUnavailable";

/// The policy table of the module docs, for an error of `op` on `backend`
/// (`name (kind)`), for a pod that a controller `owned` or a bare one.
pub(crate) fn on_provider_error(
    op: &str,
    backend: &str,
    owned: bool,
    e: &ProviderError,
) -> Outcome {
    match e {
        ProviderError::Capacity(why) if owned => Outcome::Fail {
            reason: CAPACITY_REASON.into(),
            message: format!(
                "backend {backend} has no capacity for this pod now: {why}; \
                 its controller replaces it and the scheduler picks another node"
            ),
        },
        ProviderError::Capacity(why) => Outcome::Retry {
            event: Some((
                CAPACITY_REASON,
                format!(
                    "backend {backend} has no capacity for this pod now: {why}; retrying here \
                     (a pod without a controller is not moved: give it one to fail over)"
                ),
            )),
        },
        ProviderError::InvalidPod { reason, message } => Outcome::Fail {
            reason: reason.clone(),
            message: message.clone(),
        },
        ProviderError::Unsupported(message) => Outcome::Fail {
            reason: "ProviderUnsupported".into(),
            message: message.clone(),
        },
        ProviderError::Throttled { .. } => Outcome::Retry { event: None },
        ProviderError::Transient(_) | ProviderError::NotFound(_) => Outcome::Retry {
            event: Some((
                "ProviderCreateFailed",
                format!("{op} in backend {backend} failed, will retry: {e}"),
            )),
        },
    }
}

/// Reconcile retries: 1 s, 2 s, 4 s ... capped at 5 minutes, with up to 10%
/// jitter so that failures of many pods at once do not retry in lockstep.
static RETRY: LazyLock<Backoff> =
    LazyLock::new(|| Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 0.1));

/// When a reconcile that failed with `err`, its `failures`-th failure in a
/// row, runs again; and whether this failure counts towards the backoff (a
/// 429 from the API server does not).
pub(crate) fn retry_after(err: &Error, failures: u32) -> (Duration, bool) {
    if let Error::Provider {
        source: ProviderError::Throttled {
            retry_after: Some(d),
        },
        ..
    } = err
    {
        return (*d, true);
    }
    if let Some(d) = apiserver_retry_after(err) {
        // kube-rs does not retry a 429 from the API server (priority and
        // fairness); wait as long as it asks, without escalating the backoff
        return (d, false);
    }
    let delay = match err {
        Error::Resolve { .. } => RETRY.delay(failures).min(Duration::from_secs(20)),
        _ => RETRY.delay(failures),
    };
    (delay, true)
}

/// How long the API server asked skylet to wait, for a 429 on a status
/// write, a delete or a read (`details.retryAfterSeconds`, else 1 s).
fn apiserver_retry_after(err: &Error) -> Option<Duration> {
    let (Error::WriteStatus {
        source: kube::Error::Api(s),
        ..
    }
    | Error::Delete {
        source: kube::Error::Api(s),
        ..
    }
    | Error::Get {
        source: kube::Error::Api(s),
        ..
    }) = err
    else {
        return None;
    };
    (s.code == 429).then(|| {
        let secs = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
        Duration::from_secs(u64::from(secs.clamp(1, 60)))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn api_error(code: u16, retry: Option<u32>) -> kube::Error {
        let mut s = kube::core::Status::failure("slow down", "TooManyRequests").with_code(code);
        s.details = retry.map(|r| {
            serde_json::from_value(json!({"retryAfterSeconds": r}))
                .unwrap_or_else(|e| panic!("{e}"))
        });
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn apiserver_429_waits_as_asked_without_counting() {
        let pod = PodRef::new("ns", "p", "u");
        let write = |code, retry| Error::WriteStatus {
            pod: pod.clone(),
            source: api_error(code, retry),
        };
        assert_eq!(
            retry_after(&write(429, Some(3)), 4),
            (Duration::from_secs(3), false)
        );
        assert_eq!(
            retry_after(&write(429, None), 1),
            (Duration::from_secs(1), false)
        );
        let delete = Error::Delete {
            pod: pod.clone(),
            source: api_error(429, Some(900)),
        };
        assert_eq!(retry_after(&delete, 1), (Duration::from_secs(60), false));
        let (d, counts) = retry_after(&write(500, None), 3);
        assert!(
            counts && d >= Duration::from_secs(4) && d <= Duration::from_millis(4400),
            "{d:?}"
        );
    }

    #[test]
    fn throttled_backends_are_waited_for_as_they_ask() {
        let err = Error::Provider {
            op: "create",
            pod: PodRef::new("ns", "p", "u"),
            source: ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
        };
        assert_eq!(retry_after(&err, 9), (Duration::from_secs(7), true));
    }

    #[test]
    fn capacity_fails_owned_pods_and_retries_bare_ones() {
        let full = ProviderError::Capacity("ContainerGroupQuotaReached: 10 of 10".into());
        match on_provider_error("create", "aci-weu (azure-aci)", true, &full) {
            Outcome::Fail { reason, message } => {
                assert_eq!(reason, CAPACITY_REASON);
                assert!(
                    message.contains("aci-weu (azure-aci)") && message.contains("10 of 10"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        match on_provider_error("create", "aci-weu (azure-aci)", false, &full) {
            Outcome::Retry {
                event: Some((reason, message)),
            } => {
                assert_eq!(reason, CAPACITY_REASON);
                assert!(message.contains("not moved"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn provider_errors_by_class() {
        let cases = [
            (
                ProviderError::invalid("ResourcesTooLarge", "64 vCPU is more than 16"),
                Outcome::Fail {
                    reason: "ResourcesTooLarge".into(),
                    message: "64 vCPU is more than 16".into(),
                },
            ),
            (
                ProviderError::Unsupported("no GPUs here".into()),
                Outcome::Fail {
                    reason: "ProviderUnsupported".into(),
                    message: "no GPUs here".into(),
                },
            ),
            (
                ProviderError::Throttled { retry_after: None },
                Outcome::Retry { event: None },
            ),
            (
                ProviderError::transient("connection reset"),
                Outcome::Retry {
                    event: Some((
                        "ProviderCreateFailed",
                        "create in backend aws-ecs failed, will retry: transient backend error: connection reset".into(),
                    )),
                },
            ),
        ];
        for (e, want) in cases {
            assert_eq!(
                on_provider_error("create", "aws-ecs", true, &e),
                want,
                "{e}"
            );
        }
    }
}
