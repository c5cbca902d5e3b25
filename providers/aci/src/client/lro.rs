//! Long-running operations: what an answer announces
//! (`Azure-AsyncOperation`, else `Location`: [`Operation`]) and
//! [`ArmClient::wait`], which polls it until it ends or the timeout passes.

use std::time::{Duration, Instant};

use azure_core::http::{
    Method,
    headers::{HeaderName, Headers},
};
use serde::{Deserialize, Serialize};

use super::{ArmClient, ArmError, CloudErrorBody, ops::GET_OPERATION, retry::retry_after};

/// How often [`ArmClient::wait`] polls when the server gives no `Retry-After`.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
const AZURE_ASYNCOPERATION: HeaderName = HeaderName::from_static("azure-asyncoperation");
const LOCATION: HeaderName = HeaderName::from_static("location");

/// The status of a long-running operation (ARM common
/// `OperationStatusResult`, as an `Azure-AsyncOperation` URL answers).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// Resource id of the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Operation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub status: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Progress, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CloudErrorBody>,
}

/// How a long-running operation is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// An `Azure-AsyncOperation` URL: GET answers an [`OperationStatus`].
    AsyncOperation,
    /// A `Location` URL: GET answers 202 while in progress, 200/204 when done.
    Location,
}

/// A long-running operation to follow with [`ArmClient::wait`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The URL to poll.
    pub url: String,
    /// What the URL answers.
    pub kind: OperationKind,
    /// The `Retry-After` of the answer that started it.
    pub retry_after: Option<Duration>,
}

impl Operation {
    /// The operation an answer's headers announce: `Azure-AsyncOperation`
    /// preferred, else `Location`.
    pub(super) fn from_headers(headers: &Headers) -> Option<Self> {
        let retry_after = retry_after(headers);
        let header = |name: &HeaderName| {
            headers
                .get_optional_str(name)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        if let Some(url) = header(&AZURE_ASYNCOPERATION) {
            return Some(Self {
                url: url.to_owned(),
                kind: OperationKind::AsyncOperation,
                retry_after,
            });
        }
        header(&LOCATION).map(|url| Self {
            url: url.to_owned(),
            kind: OperationKind::Location,
            retry_after,
        })
    }
}

impl ArmClient {
    /// Follows a long-running operation until it ends or `timeout` passes,
    /// waiting what each answer's `Retry-After` says (else [`DEFAULT_POLL`]).
    ///
    /// # Errors
    /// [`ArmError::OperationFailed`], [`ArmError::Timeout`], or a failed poll.
    pub async fn wait(&self, operation: &Operation, timeout: Duration) -> Result<(), ArmError> {
        let op = GET_OPERATION;
        let result = async {
            let url = self.follow(op, &operation.url)?;
            let deadline = Instant::now() + timeout;
            let mut next = operation.retry_after.unwrap_or(DEFAULT_POLL);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ArmError::Timeout(timeout));
                }
                tokio::time::sleep(next.min(left)).await;
                let answer = self.send(op, Method::Get, &url, None).await?;
                next = retry_after(&answer.headers).unwrap_or(DEFAULT_POLL);
                match (operation.kind, answer.status) {
                    (OperationKind::AsyncOperation, 200) => {
                        let status: OperationStatus = answer.json(op)?;
                        match status.status.to_ascii_lowercase().as_str() {
                            "succeeded" => return Ok(()),
                            "failed" | "canceled" | "cancelled" => {
                                let error = status.error.unwrap_or_default();
                                return Err(ArmError::OperationFailed {
                                    status: status.status,
                                    code: error.code.unwrap_or_default(),
                                    message: error.message.unwrap_or_default(),
                                });
                            }
                            other => tracing::trace!(status = other, "operation in progress"),
                        }
                    }
                    (OperationKind::AsyncOperation, 202) | (OperationKind::Location, 202) => {}
                    (OperationKind::Location, 200 | 201 | 204) => return Ok(()),
                    _ => return Err(answer.error(op)),
                }
            }
        }
        .await;
        self.counted(op, result)
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::headers::RETRY_AFTER;

    use super::*;

    #[test]
    fn operations_prefer_azure_async_operation() {
        let mut headers = Headers::new();
        headers.insert(LOCATION, "https://arm/loc");
        let op = Operation::from_headers(&headers).unwrap();
        assert_eq!(
            (op.kind, op.url.as_str()),
            (OperationKind::Location, "https://arm/loc")
        );
        headers.insert(AZURE_ASYNCOPERATION, "https://arm/async");
        headers.insert(RETRY_AFTER, "1");
        let op = Operation::from_headers(&headers).unwrap();
        assert_eq!(
            (op.kind, op.url.as_str()),
            (OperationKind::AsyncOperation, "https://arm/async")
        );
        assert_eq!(op.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(Operation::from_headers(&Headers::new()), None);
    }
}
