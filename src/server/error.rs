//! Errors of kubelet API handlers and their HTTP status: the one place a
//! provider failure becomes an HTTP code. Bodies are plain text, as the
//! kubelet writes them; kube-apiserver passes them on to kubectl.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use skylet_provider::ProviderError;

/// An HTTP error with a message for the user.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: who is asking is unknown.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            format!("Unauthorized: {}", message.into()),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, for failures of skylet's own dependencies (the apiserver).
    pub fn internal(e: impl std::error::Error) -> Self {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        let status = match &e {
            ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
            ProviderError::InvalidPod { .. } => StatusCode::BAD_REQUEST,
            ProviderError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProviderError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProviderError::Transient(_) | ProviderError::Capacity(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let retry_after = match &e {
            ProviderError::Throttled { retry_after } => {
                Some(retry_after.map_or(1, |d| d.as_secs().max(1)))
            }
            _ => None,
        };
        Self {
            status,
            message: e.to_string(),
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// 404 for unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("{} is not a kubelet API path", uri.path()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn provider_errors_map_to_http() {
        let cases = [
            (ProviderError::NotFound("x".into()), 404),
            (ProviderError::invalid("R", "m"), 400),
            (ProviderError::Unsupported("u".into()), 501),
            (
                ProviderError::Throttled {
                    retry_after: Some(Duration::from_secs(7)),
                },
                429,
            ),
            (ProviderError::transient("t"), 503),
        ];
        for (e, code) in cases {
            let resp = ApiError::from(e).into_response();
            assert_eq!(resp.status().as_u16(), code);
            if code == 429 {
                assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
            }
        }
    }
}
