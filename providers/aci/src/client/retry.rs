//! When to retry an ARM call and how long to wait first.
//!
//! ARM answers 429 (throttled) and 5xx with a `Retry-After` header in
//! seconds (RFC 9110 also allows an HTTP date), and some Azure services send
//! `retry-after-ms` / `x-ms-retry-after-ms` in milliseconds; the first of
//! those present wins, clamped to [`MAX_RETRY_AFTER`] so a bad header cannot
//! park a reconcile for hours. Without a header the wait is exponential
//! backoff with jitter ([`backoff`], on the workspace's [`Backoff`]).

use std::time::Duration;

use azure_core::http::headers::{Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use skylet_provider::Backoff;

/// The longest wait a `Retry-After` header can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// First backoff step (the longest wait after the first failure).
const BASE: Duration = Duration::from_millis(500);

/// Longest backoff step.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a response with this HTTP status is worth another attempt:
/// 408, 429 and 5xx except 501 (Not Implemented) and 505.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..600).contains(&status) && !matches!(status, 501 | 505))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (IMF-fixdate,
/// and the obsolete forms RFC 2822 parsing accepts), relative to `now`.
/// A date in the past is a zero wait; anything else unparsable is `None`.
/// The result is clamped to [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // a huge number of seconds does not fit u64: that is "very long"
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    // HTTP dates are RFC 2822 dates with zone "GMT"; jiff parses them, so no
    // extra crate is needed.
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = now.duration_until(at);
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Parses a millisecond header (`retry-after-ms`), clamped like
/// [`parse_retry_after`].
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_millis(ms).min(MAX_RETRY_AFTER))
}

/// The schedule of waits when the server did not say: after failure n
/// (1-based) a step of `BASE * 2^(n-1)`, capped at 30 s, with "equal
/// jitter" (half fixed, half random) so that many pods throttled at once do
/// not come back in lockstep. As a [`Backoff`]: half a step doubling to half
/// the cap, plus up to as much again at random.
pub fn backoff() -> Backoff {
    Backoff::new(BASE / 2, MAX_BACKOFF / 2, 1.0)
}

/// The wait before attempt `attempt + 1` after `attempt` failed (1-based):
/// the server's, else [`backoff`]'s.
pub fn delay(server: Option<Duration>, attempt: u32) -> Duration {
    server.unwrap_or_else(|| backoff().delay(attempt))
}

/// What a header says about waiting: `retry-after-ms`,
/// `x-ms-retry-after-ms`, then `Retry-After`.
pub(crate) fn retry_after(headers: &Headers) -> Option<Duration> {
    [RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS]
        .iter()
        .find_map(|h| headers.get_optional_str(h).and_then(parse_retry_after_ms))
        .or_else(|| {
            headers
                .get_optional_str(&RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-25T21:40:00Z".parse().unwrap()
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn seconds_are_clamped() {
        assert_eq!(parse_retry_after("3600", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn http_date() {
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 21:40:12 GMT", now()),
            Some(Duration::from_secs(12))
        );
        // in the past: retry at once
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 21:39:00 GMT", now()),
            Some(Duration::ZERO)
        );
        // far future: clamped
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 21:40:00 GMT", now()),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn garbage_is_none() {
        for v in ["", "soon", "-3", "1.5", "Wed, 99 Nov 2026"] {
            assert_eq!(parse_retry_after(v, now()), None, "{v:?}");
        }
    }

    #[test]
    fn milliseconds() {
        assert_eq!(
            parse_retry_after_ms("1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after_ms("600000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after_ms("x"), None);
    }

    #[test]
    fn backoff_grows_within_bounds() {
        for attempt in 1..40 {
            let d = delay(None, attempt);
            let exp = attempt.saturating_sub(1).min(16);
            let step = BASE.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
            assert!(
                d >= step / 2 && d <= step,
                "attempt {attempt}: {d:?} vs {step:?}"
            );
        }
        assert!(delay(None, 100) <= MAX_BACKOFF);
    }

    #[test]
    fn server_delay_wins() {
        assert_eq!(
            delay(Some(Duration::from_secs(3)), 5),
            Duration::from_secs(3)
        );
        assert!(delay(None, 1) <= BASE);
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 201, 204, 400, 401, 403, 404, 409, 501, 505] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_ms_headers_win() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "9");
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(9)));
        headers.insert(RETRY_AFTER_MS, "250");
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    }
}
