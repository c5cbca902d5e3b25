//! The one error type backends return, classified so the core can decide
//! once, in one place each, what a failure means for the pod's status,
//! Events and retries (`pods::policy` in the core) and for the HTTP status
//! of a kubelet API call (`server::error`).

use std::time::Duration;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`ProviderError`].
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// A backend failure.
///
/// Messages are shown to users in Events and pod status: they say what went
/// wrong and, for [`ProviderError::InvalidPod`] and
/// [`ProviderError::Unsupported`], what to change.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The pod, container or resource does not exist in the backend.
    /// Deleting it is done; reading from it is a 404.
    #[error("{0}")]
    NotFound(String),
    /// The pod can never run on this backend as specified (too large, a
    /// field the backend cannot honour). Terminal: the pod fails with
    /// `reason` and is not retried.
    #[error("{message}")]
    InvalidPod {
        /// PascalCase reason for the pod status and Event (`ResourcesTooLarge`).
        reason: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// The operation is not implemented by this backend (HTTP 501).
    #[error("{0}")]
    Unsupported(String),
    /// The backend has no room for the pod now: a quota is used up, the
    /// region or zone has no capacity (ECS `RESOURCE:*` failures, "Capacity
    /// is unavailable", ACI `ContainerGroupQuotaReached`). Not the pod's
    /// fault: it may run on another backend. The core fails a pod that a
    /// controller owns (so it is replaced elsewhere), retries a bare pod,
    /// and taints the node for a cooldown.
    #[error("{0}")]
    Capacity(String),
    /// The backend asked us to slow down; retried after `retry_after` (or the
    /// core's backoff).
    #[error("throttled by the backend{}", .retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    Throttled {
        /// How long the backend asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Anything else: network errors, 5xx, timeouts. Retried with backoff.
    #[error("transient backend error: {0}")]
    Transient(#[source] BoxError),
}

/// The class of a [`ProviderError`], for metrics labels and policy tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// [`ProviderError::NotFound`].
    NotFound,
    /// [`ProviderError::InvalidPod`].
    InvalidPod,
    /// [`ProviderError::Unsupported`].
    Unsupported,
    /// [`ProviderError::Capacity`].
    Capacity,
    /// [`ProviderError::Throttled`].
    Throttled,
    /// [`ProviderError::Transient`].
    Transient,
}

impl ErrorClass {
    /// A snake_case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidPod => "invalid_pod",
            Self::Unsupported => "unsupported",
            Self::Capacity => "capacity",
            Self::Throttled => "throttled",
            Self::Transient => "transient",
        }
    }
}

impl ProviderError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NotFound(_) => ErrorClass::NotFound,
            Self::InvalidPod { .. } => ErrorClass::InvalidPod,
            Self::Unsupported(_) => ErrorClass::Unsupported,
            Self::Capacity(_) => ErrorClass::Capacity,
            Self::Throttled { .. } => ErrorClass::Throttled,
            Self::Transient(_) => ErrorClass::Transient,
        }
    }

    /// An [`ProviderError::InvalidPod`].
    pub fn invalid(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidPod {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A [`ProviderError::Transient`] from any error.
    pub fn transient(e: impl Into<BoxError>) -> Self {
        Self::Transient(e.into())
    }
}
