//! How an ARM call fails: [`ArmError`] (after retries), ARM's error body
//! ([`CloudError`]), and how an error is classified for the core
//! (`impl From<ArmError> for ProviderError`):
//!
//! | ARM answer | class |
//! |---|---|
//! | 404 | `NotFound` |
//! | 429 | `Throttled` (with `Retry-After`) |
//! | a quota code (`ContainerGroupQuotaReached`: the `ContainerGroups`, `StandardCores`, `StandardSpotCores` or a GPU cores quota) | `Capacity` ([`is_capacity_error`]) |
//! | 409 `ServiceUnavailable` ("the requested resource ... is not available in the location ... at this moment") | `Capacity` |
//! | another 400 about the body | `InvalidPod` |
//! | 401/403 | a transient [`AccessDenied`] naming the RBAC action |
//! | the rest (5xx, 503 `ServiceUnavailable`, 409 `Conflict`, network) | `Transient` |
//!
//! Capacity is not the pod's fault: the location has no room for it now.
//! The core fails a pod that a controller owns (it is replaced, on another
//! node) and retries a bare one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use skylet_provider::ProviderError;

#[cfg(doc)]
use {super::ArmClient, skylet_provider::ApiMetrics};

/// `CloudError`: the body of every ARM error answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CloudError {
    /// The error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CloudErrorBody>,
}

/// `CloudErrorBody` (also the shape of the ARM common `ErrorDetail` in
/// operation status results).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CloudErrorBody {
    /// Machine-readable code (`ResourceNotFound`, `InvalidRequestContent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the error is about (a property path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<CloudErrorBody>,
}

/// A failed ARM call, after retries.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with an error status.
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Status {
        /// The operation.
        operation: &'static str,
        /// The RBAC action it needs.
        action: &'static str,
        /// HTTP status.
        status: u16,
        /// ARM error code (or the status's reason phrase).
        code: String,
        /// ARM's message.
        message: String,
        /// What `Retry-After` said.
        retry_after: Option<Duration>,
        /// `x-ms-request-id`, for support cases.
        request_id: Option<String>,
    },
    /// No access token (wrong secret, no identity, ...).
    #[error("{operation}: could not get an Azure access token")]
    Credential {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: azure_core::Error,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("{operation}: request to ARM failed")]
    Transport {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: azure_core::Error,
    },
    /// A body that is not what the spec says.
    #[error("{operation}: unexpected JSON")]
    Json {
        /// The operation.
        operation: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// An answer that breaks the protocol (a link to another host, a loop).
    #[error("{operation}: {message}")]
    Protocol {
        /// The operation.
        operation: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A long-running operation ended other than `Succeeded`.
    #[error("long-running operation {status}: {code}: {message}")]
    OperationFailed {
        /// `Failed`, `Canceled`.
        status: String,
        /// ARM error code.
        code: String,
        /// ARM's message.
        message: String,
    },
    /// [`ArmClient::wait`] gave up.
    #[error("long-running operation still running after {0:?}")]
    Timeout(Duration),
}

impl ArmError {
    /// The HTTP status, for [`ArmError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The ARM error code, for [`ArmError::Status`] and
    /// [`ArmError::OperationFailed`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } | Self::OperationFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether ARM said 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The `code` label of the error in [`ApiMetrics::error`]: ARM's error
    /// code (`ResourceNotFound`, `TooManyRequests`), else what kind of
    /// failure it was (`credential`, `network`, `invalid_json`,
    /// `protocol`). `None` for [`ArmError::Timeout`]: skylet's own deadline
    /// passed, no call failed.
    pub fn metric_code(&self) -> Option<&str> {
        Some(match self {
            Self::Status { code, .. } => code,
            Self::OperationFailed { code, status, .. } => {
                if code.is_empty() {
                    status
                } else {
                    code
                }
            }
            Self::Credential { .. } => "credential",
            Self::Transport { .. } => "network",
            Self::Json { .. } => "invalid_json",
            Self::Protocol { .. } => "protocol",
            Self::Timeout(_) => return None,
        })
    }
}

/// 400 codes that are about the call or the configuration, not about the
/// pod: retried by the core (after the operator fixes things), not a pod
/// failure.
const NOT_CONTENT_CODES: &[&str] = &[
    "MissingApiVersionParameter",
    "InvalidApiVersionParameter",
    "NoRegisteredProviderFound",
    "InvalidSubscriptionId",
    "SubscriptionNotFound",
    "MissingSubscriptionRegistration",
    "InvalidResourceNamespace",
    "InvalidResourceType",
    "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenAudience",
    "AuthenticationFailed",
    "ResourceGroupNotFound",
];

/// Whether a 400 with this ARM code means the pod's content was rejected
/// (a bad image name, resources out of range, an invalid name): everything
/// except protocol/configuration codes and quota codes.
pub fn is_content_error(code: &str) -> bool {
    !(NOT_CONTENT_CODES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
        || code.to_ascii_lowercase().contains("quota"))
}

/// Whether an ARM error with `status`, `code` and `message` says the
/// location has no room for the group now: a quota is used up
/// (`ContainerGroupQuotaReached`, or any code that names a quota), or the
/// requested resources are not available in the location (409
/// `ServiceUnavailable`, or that message with another status but 503,
/// which is ARM itself being unavailable).
pub fn is_capacity_error(status: u16, code: &str, message: &str) -> bool {
    if status == 429 || status == 404 {
        return false;
    }
    let quota = code.to_ascii_lowercase().contains("quota");
    let unavailable_here = code.eq_ignore_ascii_case("ServiceUnavailable")
        && (status == 409
            || (status != 503
                && message
                    .to_ascii_lowercase()
                    .contains("not available in the location")));
    quota || unavailable_here
}

/// A 401/403: names the RBAC action to grant.
#[derive(Debug, thiserror::Error)]
#[error("Azure denied {operation}: the identity needs RBAC action {action} on the resource group")]
pub struct AccessDenied {
    /// The operation.
    pub operation: &'static str,
    /// The action to grant.
    pub action: &'static str,
    /// ARM's answer.
    pub source: ArmError,
}

impl From<ArmError> for ProviderError {
    fn from(e: ArmError) -> Self {
        match e {
            ArmError::Status {
                status: 404,
                message,
                code,
                ..
            } => ProviderError::NotFound(if message.is_empty() { code } else { message }),
            ArmError::Status {
                status: 429,
                retry_after,
                ..
            } => ProviderError::Throttled { retry_after },
            ArmError::Status {
                status,
                ref code,
                ref message,
                ..
            } if is_capacity_error(status, code, message) => {
                ProviderError::Capacity(format!("ACI answered HTTP {status} {code}: {message}"))
            }
            ArmError::OperationFailed {
                ref code,
                ref message,
                ..
            } if is_capacity_error(409, code, message) => {
                ProviderError::Capacity(format!("ACI provisioning failed with {code}: {message}"))
            }
            ArmError::Status {
                status: 400,
                ref code,
                ref message,
                ..
            } if is_content_error(code) => ProviderError::invalid("AciRejected", message.clone()),
            ArmError::Status {
                status: 401 | 403,
                operation,
                action,
                ..
            } => ProviderError::transient(AccessDenied {
                operation,
                action,
                source: e,
            }),
            other => ProviderError::transient(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: &str) -> ArmError {
        ArmError::Status {
            operation: "ContainerGroups_CreateOrUpdate",
            action: "Microsoft.ContainerInstance/containerGroups/write",
            status,
            code: code.to_owned(),
            message: format!("message of {code}"),
            retry_after: Some(Duration::from_secs(4)),
            request_id: None,
        }
    }

    #[test]
    fn not_found_maps_to_not_found() {
        let e: ProviderError = status(404, "ResourceNotFound").into();
        assert!(
            matches!(&e, ProviderError::NotFound(m) if m.contains("ResourceNotFound")),
            "{e:?}"
        );
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let e: ProviderError = status(429, "TooManyRequests").into();
        assert!(
            matches!(e, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(4))
        );
    }

    #[test]
    fn content_errors_fail_the_pod_with_arms_message() {
        for code in [
            "InvalidRequestContent",
            "InvalidContainerName",
            "InaccessibleImage",
            "SomethingNew",
        ] {
            let e: ProviderError = status(400, code).into();
            match e {
                ProviderError::InvalidPod { reason, message } => {
                    assert_eq!(reason, "AciRejected");
                    assert_eq!(message, format!("message of {code}"));
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn protocol_400s_are_transient() {
        for code in ["MissingApiVersionParameter", "InvalidApiVersionParameter"] {
            let e: ProviderError = status(400, code).into();
            assert!(matches!(e, ProviderError::Transient(_)), "{code}: {e:?}");
        }
    }

    fn answer(status: u16, code: &str, message: &str) -> ArmError {
        ArmError::Status {
            operation: "ContainerGroups_CreateOrUpdate",
            action: "Microsoft.ContainerInstance/containerGroups/write",
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after: None,
            request_id: None,
        }
    }

    #[test]
    fn quotas_reached_are_capacity_naming_the_quota() {
        for (s, quota) in [
            (409, "ContainerGroups"),
            (409, "StandardCores"),
            (400, "StandardSpotCores"),
            (409, "StandardK80Cores"),
            (403, "StandardV100Cores"),
        ] {
            let message = format!(
                "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota '{quota}' exceeded in region 'westeurope'. Limit: '10', Usage: '10', Requested: '1'."
            );
            let e: ProviderError = answer(s, "ContainerGroupQuotaReached", &message).into();
            let ProviderError::Capacity(text) = &e else {
                panic!("{s} {quota}: {e:?}")
            };
            assert!(text.contains(&format!("quota '{quota}'")), "{text}");
            assert!(text.contains("ContainerGroupQuotaReached"), "{text}");
        }
        // any code that names a quota
        let e: ProviderError = answer(400, "QuotaExceeded", "m").into();
        assert!(matches!(e, ProviderError::Capacity(_)), "{e:?}");
    }

    #[test]
    fn resources_unavailable_in_the_location_are_capacity() {
        let message = "The requested resource with 'cpu: 4, memoryInGB: 16' is not available in the location 'westeurope' at this moment. Please retry with a different resource request or in another location.";
        let e: ProviderError = answer(409, "ServiceUnavailable", message).into();
        let ProviderError::Capacity(text) = &e else {
            panic!("{e:?}")
        };
        assert!(
            text.contains("not available in the location 'westeurope'"),
            "{text}"
        );
        // the code at 409 whatever the wording
        let e: ProviderError = answer(409, "ServiceUnavailable", "try later").into();
        assert!(matches!(e, ProviderError::Capacity(_)), "{e:?}");
        // a provisioning that failed the same way
        let e: ProviderError = ArmError::OperationFailed {
            status: "Failed".into(),
            code: "ServiceUnavailable".into(),
            message: message.into(),
        }
        .into();
        assert!(matches!(e, ProviderError::Capacity(_)), "{e:?}");
    }

    #[test]
    fn throttling_and_arm_outages_are_not_capacity() {
        // 429 stays throttled even when it names a quota (ARM's request quota)
        let e: ProviderError =
            answer(429, "SubscriptionRequestsThrottled", "quota of reads").into();
        assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
        // 503 is ARM (or ACI) itself being unavailable: retry in place
        let e: ProviderError = answer(
            503,
            "ServiceUnavailable",
            "The requested resource is not available in the location 'westeurope'.",
        )
        .into();
        assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
        assert!(!is_capacity_error(404, "ContainerGroupQuotaReached", ""));
    }

    #[test]
    fn denied_names_the_rbac_action() {
        for s in [401, 403] {
            let e: ProviderError = status(s, "AuthorizationFailed").into();
            let ProviderError::Transient(inner) = &e else {
                panic!("{e:?}")
            };
            let text = inner.to_string();
            assert!(
                text.contains("Microsoft.ContainerInstance/containerGroups/write"),
                "{text}"
            );
            assert!(text.contains("ContainerGroups_CreateOrUpdate"), "{text}");
        }
    }

    #[test]
    fn server_errors_and_the_rest_are_transient() {
        for e in [
            status(500, "InternalServerError"),
            status(503, "ServiceUnavailable"),
            status(409, "Conflict"),
            ArmError::Timeout(Duration::from_secs(1)),
            ArmError::OperationFailed {
                status: "Failed".into(),
                code: "X".into(),
                message: "y".into(),
            },
        ] {
            let e: ProviderError = e.into();
            assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
        }
    }

    #[test]
    fn metric_codes() {
        assert_eq!(
            status(429, "TooManyRequests").metric_code(),
            Some("TooManyRequests")
        );
        assert_eq!(ArmError::Timeout(Duration::ZERO).metric_code(), None);
        let failed = |code: &str| ArmError::OperationFailed {
            status: "Canceled".into(),
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(failed("Conflict").metric_code(), Some("Conflict"));
        assert_eq!(failed("").metric_code(), Some("Canceled"));
    }
}
