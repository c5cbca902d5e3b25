//! Log plumbing every backend shares: rendering lines as the kubelet does,
//! `limitBytes`, and following a log by polling for backends whose cloud
//! has no streaming log API.

use std::{io, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;

use crate::{LogOptions, LogStream, ProviderError};

/// Appends one log line to `out` as `kubectl logs` shows it: with the
/// RFC 3339 timestamp (nanoseconds, UTC) first when `timestamps`, and a
/// newline at the end unless `text` has one.
pub fn push_line(out: &mut String, time: Timestamp, text: &str, timestamps: bool) {
    if timestamps {
        out.push_str(&time.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string());
        out.push(' ');
    }
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// Cuts `stream` after `max` bytes (`limitBytes`); the stream ends there.
pub fn limit_bytes(stream: LogStream, max: u64) -> LogStream {
    futures::stream::unfold((stream, max), |(mut s, left)| async move {
        if left == 0 {
            return None;
        }
        match s.next().await? {
            Ok(mut b) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(b.len());
                b.truncate(take);
                Some((Ok(b), (s, left - take as u64)))
            }
            Err(e) => Some((Err(e), (s, 0))),
        }
    })
    .boxed()
}

/// `stream` with the request's `limitBytes` applied, if it has one.
pub fn limited(stream: LogStream, opts: &LogOptions) -> LogStream {
    match opts.limit_bytes {
        Some(max) => limit_bytes(stream, max),
        None => stream,
    }
}

/// What one poll of a followed log found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// New output.
    Data(Bytes),
    /// Nothing new yet.
    Nothing,
    /// The log has ended (the container is gone): the follow ends.
    End,
}

/// A log that is followed by polling: each call returns what is new since
/// the last one.
pub trait Poll: Send + 'static {
    /// The output written since the last call. An error is retried at the
    /// next interval; [`ProviderError::NotFound`] ends the follow quietly.
    fn poll(&mut self) -> impl Future<Output = Result<Polled, ProviderError>> + Send;
}

/// Follows a log by calling `source` every `every`, after `first` (what
/// the initial request found, sent at once). After `max_failures` failed
/// polls in a row the stream ends with the last error; a success resets
/// the count. The caller applies `limitBytes` ([`limited`]) to the result.
///
/// Lines reach the client up to one interval after they were written.
pub fn follow<P: Poll>(first: Bytes, source: P, every: Duration, max_failures: u32) -> LogStream {
    struct State<P> {
        source: P,
        first: Option<Bytes>,
        failures: u32,
        done: bool,
    }
    let state = State {
        source,
        first: Some(first).filter(|b| !b.is_empty()),
        failures: 0,
        done: false,
    };
    futures::stream::unfold(state, move |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        loop {
            if st.done {
                return None;
            }
            tokio::time::sleep(every).await;
            match st.source.poll().await {
                Ok(Polled::Data(b)) if !b.is_empty() => {
                    st.failures = 0;
                    return Some((Ok(b), st));
                }
                Ok(Polled::Data(_) | Polled::Nothing) => st.failures = 0,
                Ok(Polled::End) | Err(ProviderError::NotFound(_)) => return None,
                Err(e) => {
                    st.failures += 1;
                    if st.failures >= max_failures {
                        st.done = true;
                        return Some((Err(io::Error::other(e)), st));
                    }
                    tracing::warn!(error = %e, failures = st.failures, "log poll failed; retrying");
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures::TryStreamExt;

    use super::*;

    fn bytes_of(chunks: &[&'static str]) -> LogStream {
        let chunks: Vec<io::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn limit_bytes_cuts_inside_a_chunk_and_ends() {
        let out: Vec<Bytes> = limit_bytes(bytes_of(&["abc\n", "def\n", "ghi\n"]), 6)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(out.concat(), b"abc\nde");
    }

    #[test]
    fn lines_render_like_the_kubelet() {
        let t: Timestamp = "2026-01-02T03:04:05.000000006Z".parse().unwrap();
        let mut out = String::new();
        push_line(&mut out, t, "hello", true);
        push_line(&mut out, t, "again\n", false);
        assert_eq!(out, "2026-01-02T03:04:05.000000006Z hello\nagain\n");
    }

    struct Script(VecDeque<Result<Polled, ProviderError>>);

    impl Poll for Script {
        async fn poll(&mut self) -> Result<Polled, ProviderError> {
            self.0.pop_front().unwrap_or(Ok(Polled::End))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follow_sends_new_output_retries_errors_and_ends() {
        let script = Script(VecDeque::from([
            Ok(Polled::Nothing),
            Ok(Polled::Data(Bytes::from_static(b"b\n"))),
            Err(ProviderError::transient("flaky")),
            Ok(Polled::Data(Bytes::from_static(b"c\n"))),
            Err(ProviderError::NotFound("gone".into())),
        ]));
        let out: Vec<Bytes> = follow(
            Bytes::from_static(b"a\n"),
            script,
            Duration::from_secs(2),
            3,
        )
        .try_collect()
        .await
        .unwrap();
        assert_eq!(out.concat(), b"a\nb\nc\n");
    }

    #[tokio::test(start_paused = true)]
    async fn follow_gives_up_after_repeated_failures() {
        let script = Script(
            (0..3)
                .map(|_| Err(ProviderError::transient("down")))
                .collect(),
        );
        let r: Result<Vec<Bytes>, _> = follow(Bytes::new(), script, Duration::from_secs(1), 3)
            .try_collect()
            .await;
        assert!(r.unwrap_err().to_string().contains("down"));
    }
}
