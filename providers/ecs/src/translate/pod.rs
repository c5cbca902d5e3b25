//! Pod-level checks and settings, read before any container: host
//! namespaces, the task role and capacity annotations, the stop timeout;
//! and the task's tags.

use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use skylet_provider::{ProviderError, checks};

use super::{MAX_STOP_TIMEOUT, Settings, invalid};
use crate::names::{self, ANNOTATION_CAPACITY, ANNOTATION_TASK_ROLE};

/// What the pod as a whole asks of its task.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PodOptions {
    /// The task role: the pod's annotation, else the default.
    pub(super) task_role_arn: Option<String>,
    /// Run on FARGATE_SPOT.
    pub(super) spot: bool,
    /// Every container's stop timeout.
    pub(super) stop_timeout: u32,
}

/// Pod-level checks and settings, before any container: no host
/// namespaces, the task role and capacity annotations, the stop timeout.
pub(super) fn pod_options(
    meta: &ObjectMeta,
    spec: &PodSpec,
    settings: &Settings,
) -> Result<PodOptions, ProviderError> {
    checks::refuse_host_namespaces(spec, "Fargate tasks")?;
    let annotation = |name: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(name))
            .map(String::as_str)
    };
    Ok(PodOptions {
        task_role_arn: task_role(annotation(ANNOTATION_TASK_ROLE), settings)?,
        spot: spot(annotation(ANNOTATION_CAPACITY))?,
        stop_timeout: stop_timeout(spec),
    })
}

/// The task role: the annotation when it is an ARN, the default without one.
pub(super) fn task_role(
    annotation: Option<&str>,
    settings: &Settings,
) -> Result<Option<String>, ProviderError> {
    match annotation {
        Some(a) if a.starts_with("arn:") => Ok(Some(a.to_owned())),
        Some(a) => Err(invalid(
            "InvalidTaskRole",
            format!(
                "annotation {ANNOTATION_TASK_ROLE}={a:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ),
        )),
        None => Ok(settings.task_role_arn.clone()),
    }
}

/// Whether the capacity annotation asks for FARGATE_SPOT.
pub(super) fn spot(annotation: Option<&str>) -> Result<bool, ProviderError> {
    match annotation {
        None | Some("on-demand") => Ok(false),
        Some("spot") => Ok(true),
        Some(other) => Err(invalid(
            "InvalidCapacity",
            format!(
                "annotation {ANNOTATION_CAPACITY}={other:?}: use \"spot\" (FARGATE_SPOT) or \"on-demand\" (FARGATE)"
            ),
        )),
    }
}

/// `terminationGracePeriodSeconds` (30 by default) within
/// 2..=[`MAX_STOP_TIMEOUT`].
pub(super) fn stop_timeout(spec: &PodSpec) -> u32 {
    // at least 2 s: ECS documents no minimum, and a kill without any
    // SIGTERM window gains nothing on Fargate
    u32::try_from(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(2, i64::from(MAX_STOP_TIMEOUT)),
    )
    .unwrap_or(MAX_STOP_TIMEOUT)
}

/// The task's tags: the pod's UID, namespace and name, and the node.
pub(super) fn tags(meta: &ObjectMeta, node: &str) -> Vec<(String, String)> {
    vec![
        (
            names::TAG_POD_UID.to_owned(),
            meta.uid.clone().unwrap_or_default(),
        ),
        (
            names::TAG_POD_NAMESPACE.to_owned(),
            meta.namespace.clone().unwrap_or_default(),
        ),
        (
            names::TAG_POD_NAME.to_owned(),
            meta.name.clone().unwrap_or_default(),
        ),
        (names::TAG_NODE.to_owned(), node.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::{pod, reason, settings, web};

    #[test]
    fn pod_options_read_the_annotations_and_bound_the_grace_period() {
        let mut s = settings();
        s.task_role_arn = Some("arn:default".into());
        assert_eq!(task_role(None, &s).unwrap().as_deref(), Some("arn:default"));
        assert_eq!(
            task_role(Some("arn:pod"), &s).unwrap().as_deref(),
            Some("arn:pod")
        );
        assert_eq!(
            reason(task_role(Some("pod"), &s).unwrap_err()),
            "InvalidTaskRole"
        );
        assert!(!spot(None).unwrap() && !spot(Some("on-demand")).unwrap());
        assert!(spot(Some("spot")).unwrap());
        assert_eq!(reason(spot(Some("Spot")).unwrap_err()), "InvalidCapacity");
        let grace = |g: Option<i64>| {
            stop_timeout(&PodSpec {
                termination_grace_period_seconds: g,
                ..PodSpec::default()
            })
        };
        assert_eq!(
            [
                grace(None),
                grace(Some(0)),
                grace(Some(60)),
                grace(Some(3600))
            ],
            [30, 2, 60, MAX_STOP_TIMEOUT]
        );
    }

    #[test]
    fn tags_name_the_pod_and_the_node() {
        let meta = pod("web-a", web()).pod.metadata;
        assert_eq!(
            tags(&meta, "burst-1"),
            [
                ("skylet.io/pod-uid", "uid-web-a"),
                ("skylet.io/pod-namespace", "shop"),
                ("skylet.io/pod-name", "web-a"),
                ("skylet.io/node", "burst-1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
