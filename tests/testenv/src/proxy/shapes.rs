//! The error answers each API really gives, as the proxy injects them: what
//! a throttled, failing or busy ECS, ARM or Kubernetes API sends back, so
//! that skylet's clients classify them as they would in production.
//!
//! | API | throttled | 500 | 503 | 409 |
//! |---|---|---|---|---|
//! | ECS (awsJson1_1) | 400 `ThrottlingException` (the SDK recognises throttling by code, not status) | `ServerException` | `ServiceUnavailableException` | - |
//! | ARM | 429 `SubscriptionRequestsThrottled`, `Retry-After` | `InternalServerError` | `ServiceUnavailable`, `Retry-After` | `Conflict` (another operation in progress) |
//! | Kubernetes | 429 `Status` `TooManyRequests`, `retryAfterSeconds` and `Retry-After` | `Status` `InternalError` | `Status` `ServiceUnavailable` | - |

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::{Api, Fault};

/// The answer `api` gives for `fault` (one of the answering kinds), with
/// `retry_after` seconds where the API says how long to wait.
pub(super) fn answer(api: Api, fault: Fault, retry_after: u32) -> Response<Bytes> {
    let (status, body, wait) = match api {
        Api::Ecs => ecs(fault),
        Api::Arm => arm(fault, retry_after),
        Api::Kubernetes => kubernetes(fault, retry_after),
    };
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let content_type = match api {
        Api::Ecs => "application/x-amz-json-1.1",
        Api::Arm | Api::Kubernetes => "application/json",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Api::Ecs = api {
        if let Some(t) = body["__type"]
            .as_str()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            h.insert("x-amzn-errortype", t);
        }
        h.insert(
            "x-amzn-requestid",
            HeaderValue::from_static("00000000-0000-0000-0000-00000000fa17"),
        );
    }
    if let Some(secs) = wait {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn ecs(fault: Fault) -> (StatusCode, serde_json::Value, Option<u32>) {
    let (status, ty, message) = match fault {
        Fault::Throttle => (
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Service is temporarily unavailable",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "Service encountered an internal error",
        ),
    };
    (status, json!({"__type": ty, "message": message}), None)
}

fn arm(fault: Fault, retry_after: u32) -> (StatusCode, serde_json::Value, Option<u32>) {
    let (status, code, message, wait) = match fault {
        Fault::Throttle => (
            StatusCode::TOO_MANY_REQUESTS,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of 'write' requests for subscription exceeded. Please try again after '{retry_after}' seconds."
            ),
            Some(retry_after),
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is currently unavailable.".to_owned(),
            Some(retry_after),
        ),
        Fault::Conflict => (
            StatusCode::CONFLICT,
            "Conflict",
            "The operation cannot be completed: another operation on this container group is in progress.".to_owned(),
            None,
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Encountered internal server error.".to_owned(),
            None,
        ),
    };
    (
        status,
        json!({"error": {"code": code, "message": message}}),
        wait,
    )
}

fn kubernetes(fault: Fault, retry_after: u32) -> (StatusCode, serde_json::Value, Option<u32>) {
    let (status, reason, message, wait) = match fault {
        Fault::Throttle => (
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.",
            Some(retry_after),
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: injected by the test proxy",
            None,
        ),
    };
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": status.as_u16(),
    });
    if let Some(secs) = wait {
        body["details"] = json!({"retryAfterSeconds": secs});
    }
    (status, body, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap_or_default()
    }

    #[test]
    fn ecs_throttling_is_a_400_with_the_code() {
        let r = answer(Api::Ecs, Fault::Throttle, 1);
        assert_eq!(r.status(), 400);
        assert_eq!(body(&r)["__type"], "ThrottlingException");
        assert_eq!(r.headers()["x-amzn-errortype"], "ThrottlingException");
        assert!(r.headers().get("retry-after").is_none());
    }

    #[test]
    fn arm_throttling_says_when_to_come_back() {
        let r = answer(Api::Arm, Fault::Throttle, 2);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(body(&r)["error"]["code"], "SubscriptionRequestsThrottled");
        assert_eq!(answer(Api::Arm, Fault::Conflict, 2).status(), 409);
    }

    #[test]
    fn kubernetes_answers_are_status_objects() {
        let r = answer(Api::Kubernetes, Fault::Throttle, 1);
        assert_eq!(r.status(), 429);
        let b = body(&r);
        assert_eq!(b["kind"], "Status");
        assert_eq!(b["details"]["retryAfterSeconds"], 1);
        assert_eq!(r.headers()["retry-after"], "1");
        let b = body(&answer(Api::Kubernetes, Fault::Unavailable, 1));
        assert_eq!(
            (b["code"].as_u64(), b["reason"].as_str()),
            (Some(503), Some("ServiceUnavailable"))
        );
    }
}
