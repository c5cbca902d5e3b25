//! One ARM request, retried: [`ArmClient::send`] makes the attempts, each
//! after a token of the rate limits' buckets ([`super::limits`]) (408,
//! 429 and 5xx but 501/505, up to [`ClientConfig::max_attempts`](super::ClientConfig),
//! waiting what `Retry-After` says, else backoff: [`super::retry`];
//! connection failures always, other I/O failures only for idempotent
//! operations, credential failures never) and counts each in the metrics;
//! [`Answer`] is what came back, with its body parsed or turned into an
//! [`ArmError::Status`].

use azure_core::{
    error::ErrorKind,
    http::{
        Context, Method, PipelineSendOptions, Request, Url,
        headers::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, Headers},
    },
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use skylet_provider::metrics::Outcome;

use super::{
    ArmClient, ArmError, CloudError, CloudErrorBody, Op, Plane,
    retry::{self, retry_after},
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");

/// An answer, body read.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Headers,
    pub(super) body: Bytes,
}

/// `value` as the JSON body of a request of `op`.
pub(super) fn json_body<T: Serialize + ?Sized>(op: Op, value: &T) -> Result<Bytes, ArmError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| ArmError::Json {
            operation: op.name,
            source,
        })
}

impl Answer {
    pub(super) fn json<T: DeserializeOwned>(&self, op: Op) -> Result<T, ArmError> {
        serde_json::from_slice(&self.body).map_err(|source| ArmError::Json {
            operation: op.name,
            source,
        })
    }

    /// The [`ArmError::Status`] this answer is.
    pub(super) fn error(&self, op: Op) -> ArmError {
        let body = serde_json::from_slice::<CloudError>(&self.body)
            .ok()
            .and_then(|e| e.error)
            .or_else(|| serde_json::from_slice::<CloudErrorBody>(&self.body).ok())
            .unwrap_or_default();
        let code = body.code.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            azure_core::http::StatusCode::from(self.status)
                .canonical_reason()
                .into_owned()
        });
        let message = body.message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&self.body);
            text.chars().take(300).collect()
        });
        ArmError::Status {
            operation: op.name,
            action: op.action,
            status: self.status,
            code,
            message,
            retry_after: retry_after(&self.headers),
            request_id: self.headers.get_optional_string(&REQUEST_ID),
        }
    }
}

impl ArmClient {
    /// Sends a request, retrying as the module docs say, and returns the
    /// last answer whatever its status.
    pub(super) async fn send(
        &self,
        op: Op,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<Answer, ArmError> {
        let service = op.service();
        let pipeline = match op.plane {
            Plane::Arm => &self.pipeline,
            Plane::Metrics => &self.monitor_pipeline,
        };
        self.metrics.call(service, op.name);
        let mut attempt = 1u32;
        loop {
            self.rate_limits.acquire(op.name).await;
            let mut req = Request::new(url.clone(), method);
            req.insert_header(ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(b) = &body {
                req.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                req.set_body(b.clone());
            }
            let ctx = Context::new();
            let options = PipelineSendOptions {
                skip_checks: true,
                ..PipelineSendOptions::default()
            };
            let outcome = pipeline.send(&ctx, &mut req, Some(options)).await;
            let retry_in = match outcome {
                Ok(rsp) => {
                    let (status, headers, body) = rsp.deconstruct();
                    let status = u16::from(status);
                    self.metrics
                        .request(service, op.name, Outcome::of_status(Some(status)));
                    tracing::debug!(operation = op.name, %method, status, attempt, "ARM answered");
                    let answer = Answer {
                        status,
                        headers,
                        body: body.into(),
                    };
                    if !retry::retryable_status(status) || attempt >= self.max_attempts {
                        return Ok(answer);
                    }
                    let wait = retry::delay(retry_after(&answer.headers), attempt);
                    tracing::warn!(operation = op.name, status, attempt, wait = ?wait, "ARM call failed, retrying");
                    wait
                }
                Err(e) => {
                    let retryable = match e.kind() {
                        ErrorKind::Credential | ErrorKind::HttpResponse { .. } => {
                            return Err(ArmError::Credential {
                                operation: op.name,
                                source: e,
                            });
                        }
                        ErrorKind::Connection => true,
                        ErrorKind::Io => op.idempotent,
                        _ => false,
                    };
                    self.metrics.request(service, op.name, Outcome::network);
                    if !retryable || attempt >= self.max_attempts {
                        return Err(ArmError::Transport {
                            operation: op.name,
                            source: e,
                        });
                    }
                    let wait = retry::delay(None, attempt);
                    tracing::warn!(operation = op.name, attempt, wait = ?wait, error = %e, "ARM request failed, retrying");
                    wait
                }
            };
            tokio::time::sleep(retry_in).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use azure_core::http::headers::RETRY_AFTER;

    use super::*;
    use crate::client::ops::GET_GROUP;

    #[test]
    fn error_bodies_are_parsed() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "3");
        headers.insert(REQUEST_ID, "req-1");
        let answer = Answer {
            status: 429,
            headers,
            body: Bytes::from_static(
                br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
            ),
        };
        match answer.error(GET_GROUP) {
            ArmError::Status {
                code,
                message,
                retry_after,
                request_id,
                status,
                ..
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (429, "TooManyRequests", "slow down")
                );
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert_eq!(request_id.as_deref(), Some("req-1"));
            }
            other => panic!("{other:?}"),
        }
        // not JSON: the reason phrase and the text
        let answer = Answer {
            status: 502,
            headers: Headers::new(),
            body: Bytes::from_static(b"bad gateway"),
        };
        let e = answer.error(GET_GROUP);
        assert_eq!(e.code(), Some("Bad Gateway"));
        assert!(e.to_string().contains("bad gateway"));
    }
}
