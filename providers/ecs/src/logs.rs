//! Container logs from CloudWatch Logs, where the awslogs driver writes
//! them (one event per line, stream `<namespace>/<container>/<task id>`).
//!
//! | kubelet option | GetLogEvents |
//! |---|---|
//! | `tailLines=N` | `startFromHead=false`, `limit=N` (at most 10 000) |
//! | `sinceSeconds`/`sinceTime` | `startTime` (milliseconds) |
//! | `timestamps` | each line prefixed with the event's timestamp, RFC 3339 |
//! | `limitBytes` | output cut after N bytes |
//! | `follow` | after the first page, `GetLogEvents` with the forward token every [`POLL`] until the task has stopped (and a last poll found nothing) or the client leaves; a failed poll is retried, [`FOLLOW_FAILURES`] in a row end the follow with the error |
//!
//! Lines reach a follower up to [`POLL`] after CloudWatch has them, which is
//! itself a few seconds after the container wrote them (the awslogs driver
//! batches). A stream that does not exist yet (the container has not
//! started) is an empty log, or, when following, one to wait for.
//!
//! # IAM
//! `logs:GetLogEvents` on the log group.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use skylet_provider::{
    ApiMetrics, LogOptions, LogStream, ProviderError,
    logs::{self, Poll, Polled},
};

use crate::client::{AwsError, LOGS, aws};

/// How often a follower polls.
pub const POLL: Duration = Duration::from_secs(1);

/// Failed polls in a row after which a follow ends with the error.
pub const FOLLOW_FAILURES: u32 = 3;

/// Events per page when reading from the head.
const PAGE: i32 = 10_000;

/// One log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The line, without its newline.
    pub message: String,
}

/// Renders events as the kubelet does ([`logs::push_line`]): one line
/// each, optionally prefixed with the event's RFC 3339 timestamp.
fn render(events: &[Event], timestamps: bool) -> Bytes {
    let mut out = String::new();
    for e in events {
        let time =
            jiff::Timestamp::from_millisecond(e.timestamp).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        logs::push_line(&mut out, time, &e.message, timestamps);
    }
    Bytes::from(out)
}

/// One page of a log stream: events and the forward token; `None` when the
/// stream does not exist (yet).
pub type Page = Option<(Vec<Event>, Option<String>)>;

/// What a log source answers (a trait so the streaming logic is tested
/// without AWS).
pub trait Source: Send + Sync + 'static {
    /// One GetLogEvents call: events and the forward token; `None` when the
    /// stream does not exist (yet).
    fn page(
        &self,
        token: Option<String>,
        from_head: bool,
        start_ms: Option<i64>,
        limit: Option<i32>,
    ) -> impl Future<Output = Result<Page, ProviderError>> + Send;

    /// Whether the task has stopped (no more lines will come).
    fn finished(&self) -> bool;
}

/// A [`Source`] on CloudWatch Logs.
pub struct CloudWatch<F> {
    /// Client.
    pub client: aws_sdk_cloudwatchlogs::Client,
    /// Counters.
    pub metrics: ApiMetrics,
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// Whether the task has stopped.
    pub finished: F,
}

impl<F: Fn() -> bool + Send + Sync + 'static> Source for CloudWatch<F> {
    async fn page(
        &self,
        token: Option<String>,
        from_head: bool,
        start_ms: Option<i64>,
        limit: Option<i32>,
    ) -> Result<Page, ProviderError> {
        let r = self
            .client
            .get_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .start_from_head(from_head)
            .set_start_time(if token.is_none() { start_ms } else { None })
            .set_limit(limit)
            .set_next_token(token)
            .send()
            .await
            .map_err(aws(LOGS, "GetLogEvents", &self.metrics));
        match r {
            Ok(out) => {
                let events = out
                    .events()
                    .iter()
                    .map(|e| Event {
                        timestamp: e.timestamp().unwrap_or(0),
                        message: e.message().unwrap_or_default().to_owned(),
                    })
                    .collect();
                Ok(Some((events, out.next_forward_token().map(str::to_owned))))
            }
            Err(e) if e.is("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(AwsError::into(e)),
        }
    }

    fn finished(&self) -> bool {
        (self.finished)()
    }
}

/// A followed log: GetLogEvents with the forward token at every poll,
/// until a poll that started after the task had stopped finds nothing.
struct Follow<S> {
    source: Arc<S>,
    token: Option<String>,
    start_ms: Option<i64>,
    timestamps: bool,
}

impl<S: Source> Poll for Follow<S> {
    async fn poll(&mut self) -> Result<Polled, ProviderError> {
        // decide before polling: a poll after the stop catches the last lines
        let finished = self.source.finished();
        let start_ms = if self.token.is_none() {
            self.start_ms
        } else {
            None
        };
        let page = self
            .source
            .page(self.token.clone(), true, start_ms, Some(PAGE))
            .await?;
        let Some((events, next)) = page else {
            return Ok(if finished {
                Polled::End
            } else {
                Polled::Nothing
            });
        };
        if next.is_some() {
            self.token = next;
        }
        Ok(if !events.is_empty() {
            Polled::Data(render(&events, self.timestamps))
        } else if finished {
            Polled::End
        } else {
            Polled::Nothing
        })
    }
}

/// The log as a byte stream, per the module docs.
///
/// # Errors
/// The first page's error (a follow retries later ones, and ends with an
/// I/O error after [`FOLLOW_FAILURES`] in a row).
pub async fn stream<S: Source>(source: S, opts: LogOptions) -> Result<LogStream, ProviderError> {
    let source = Arc::new(source);
    let start_ms = opts.since.map(|t| t.as_millisecond());
    // first page(s): what exists now
    let (mut events, token) = match opts.tail_lines {
        Some(0) => {
            // only new lines: skip to the end
            let (_, token) = last_page(&*source, start_ms, 1).await?;
            (Vec::new(), token)
        }
        Some(n) => {
            last_page(
                &*source,
                start_ms,
                i32::try_from(n.min(10_000)).unwrap_or(10_000),
            )
            .await?
        }
        None => all_pages(&*source, start_ms).await?,
    };
    if let Some(n) = opts.tail_lines {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if events.len() > n {
            events.drain(..events.len() - n);
        }
    }
    let first = render(&events, opts.timestamps);
    let body: LogStream = if opts.follow {
        let follow = Follow {
            source,
            token,
            start_ms,
            timestamps: opts.timestamps,
        };
        logs::follow(first, follow, POLL, FOLLOW_FAILURES)
    } else {
        futures::stream::iter((!first.is_empty()).then_some(Ok(first))).boxed()
    };
    Ok(logs::limited(body, &opts))
}

async fn last_page<S: Source>(
    source: &S,
    start_ms: Option<i64>,
    n: i32,
) -> Result<(Vec<Event>, Option<String>), ProviderError> {
    Ok(source
        .page(None, false, start_ms, Some(n))
        .await?
        .unwrap_or_default())
}

async fn all_pages<S: Source>(
    source: &S,
    start_ms: Option<i64>,
) -> Result<(Vec<Event>, Option<String>), ProviderError> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let Some((page, next)) = source
            .page(token.clone(), true, start_ms, Some(PAGE))
            .await?
        else {
            return Ok((events, token));
        };
        let empty = page.is_empty();
        events.extend(page);
        // the end: no events, or the same token again
        if empty || next.is_none() || next == token {
            return Ok((events, next.or(token)));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    /// A stream of events that grows, with CloudWatch's token semantics
    /// (`f/<index of the last event returned>`).
    #[derive(Default)]
    struct Fake {
        events: Mutex<Vec<Event>>,
        exists: AtomicBool,
        finished: AtomicBool,
    }

    impl Source for Arc<Fake> {
        async fn page(
            &self,
            token: Option<String>,
            from_head: bool,
            start_ms: Option<i64>,
            limit: Option<i32>,
        ) -> Result<Page, ProviderError> {
            if !self.exists.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let all: Vec<Event> = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| start_ms.is_none_or(|s| e.timestamp >= s))
                .cloned()
                .collect();
            let limit = usize::try_from(limit.unwrap_or(10_000)).unwrap();
            let (start, end) = match token {
                Some(t) => {
                    let i: i64 = t[2..].parse().unwrap();
                    let s = usize::try_from(i + 1).unwrap();
                    (s, (s + limit).min(all.len()))
                }
                None if from_head => (0, limit.min(all.len())),
                None => (all.len().saturating_sub(limit), all.len()),
            };
            let start = start.min(all.len());
            let page = all[start..end.max(start)].to_vec();
            let last = i64::try_from(end.max(start)).unwrap() - 1;
            Ok(Some((page, Some(format!("f/{last}")))))
        }

        fn finished(&self) -> bool {
            self.finished.load(Ordering::SeqCst)
        }
    }

    fn fake(lines: &[(&str, i64)]) -> Arc<Fake> {
        let f = Arc::new(Fake::default());
        f.exists.store(true, Ordering::SeqCst);
        f.events
            .lock()
            .unwrap()
            .extend(lines.iter().map(|(m, t)| Event {
                timestamp: *t,
                message: (*m).to_owned(),
            }));
        f
    }

    /// Everything `stream` yields for `opts`, as text.
    async fn read(f: &Arc<Fake>, opts: LogOptions) -> String {
        let chunks: Vec<_> = stream(f.clone(), opts).await.unwrap().collect().await;
        chunks
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn tail_since_timestamps_and_limit_bytes() {
        let f = fake(&[("one", 1_000), ("two", 2_000), ("three", 3_000)]);
        let all = read(&f, LogOptions::default()).await;
        assert_eq!(all, "one\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read(&f, tail).await, "two\nthree\n");
        let since = LogOptions {
            since: Some(jiff::Timestamp::from_millisecond(2_000).unwrap()),
            ..Default::default()
        };
        assert_eq!(read(&f, since).await, "two\nthree\n");
        let timestamps = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(
            read(&f, timestamps).await,
            "1970-01-01T00:00:03.000000000Z three\n"
        );
        let cut = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(&f, cut).await, "one\ntw");
    }

    #[tokio::test(start_paused = true)]
    async fn follow_streams_new_lines_until_the_task_stops() {
        let f = fake(&[("old", 1)]);
        let mut s = stream(
            f.clone(),
            LogOptions {
                follow: true,
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        f.events.lock().unwrap().push(Event {
            timestamp: 2,
            message: "new-1".into(),
        });
        assert_eq!(s.next().await.unwrap().unwrap(), "new-1\n");
        f.events.lock().unwrap().push(Event {
            timestamp: 3,
            message: "new-2".into(),
        });
        f.finished.store(true, Ordering::SeqCst);
        assert_eq!(
            s.next().await.unwrap().unwrap(),
            "new-2\n",
            "lines written before the stop still arrive"
        );
        assert!(
            s.next().await.is_none(),
            "the stream ends once the task has stopped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_does_not_exist_yet_is_empty_or_awaited() {
        let f = Arc::new(Fake::default());
        assert_eq!(read(&f, LogOptions::default()).await, "");
        let mut s = stream(
            f.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        f.exists.store(true, Ordering::SeqCst);
        f.events.lock().unwrap().push(Event {
            timestamp: 5,
            message: "hello".into(),
        });
        assert_eq!(s.next().await.unwrap().unwrap(), "hello\n");
    }
}
