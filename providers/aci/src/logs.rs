//! Container logs from Containers_ListLogs, which answers the container's
//! whole log (ACI keeps up to about 4 MB) or its last `tail` lines as one
//! text, each line prefixed with its RFC 3339 timestamp (nanoseconds) when
//! asked.
//!
//! | kubelet option | here |
//! |---|---|
//! | `tailLines=N` | `tail=N` on the first call (server side) |
//! | `sinceSeconds`/`sinceTime` | lines whose timestamp is before `since` are dropped |
//! | `timestamps` | the calls always ask for timestamps; the prefix is kept only when asked |
//! | `limitBytes` | output cut after N bytes, then the stream ends |
//! | `previous` | [`ProviderError::Unsupported`]: ACI keeps no log of an earlier instance |
//! | `follow` | polled every `poll` (see below) until the container is gone (404) or the client leaves |
//!
//! # Following
//! ACI has no streaming log API, so a follower polls
//! ([`skylet_provider::logs::follow`] with a `Poll` of its own): every `poll` it
//! fetches the last [`WINDOW`] lines (all of them when the window does not
//! reach back to what was already sent) and sends the lines newer than the
//! last one sent: by timestamp, and among lines with the same timestamp by
//! how many of them were already sent. **Lines therefore reach a follower
//! up to one poll interval after the container wrote them.** The follow
//! ends when the group or container is gone (404); a container that exited
//! but whose group still exists keeps the follower polling (ACI's log stays
//! readable) until the client leaves. Other errors are retried on the next
//! poll; after [`MAX_FAILURES`] in a row the stream ends with the error.
//! `limitBytes` applies to the whole stream, first answer and polls
//! ([`skylet_provider::logs::limited`]).
//!
//! # RBAC
//! `Microsoft.ContainerInstance/containerGroups/containers/logs/read`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use skylet_provider::{
    LogOptions, LogStream, ProviderError, Result,
    logs::{Poll, Polled, follow, limited},
};

use crate::client::{ArmClient, ArmError};

/// Lines a follower's poll asks for.
pub const WINDOW: u64 = 1000;

/// Failed polls in a row after which a follow ends with an error.
pub const MAX_FAILURES: u32 = 5;

/// Where the log text comes from (a trait so the follow logic is tested
/// without a server).
pub trait Source: Send + Sync + 'static {
    /// The log, the last `tail` lines if set, with timestamps.
    fn fetch(&self, tail: Option<u64>) -> impl Future<Output = Result<String, ArmError>> + Send;
}

/// A container's log on ARM.
#[derive(Clone, Debug)]
pub struct ArmSource {
    /// The client.
    pub client: Arc<ArmClient>,
    /// Resource group.
    pub resource_group: String,
    /// Container group.
    pub group: String,
    /// Container.
    pub container: String,
}

impl Source for ArmSource {
    async fn fetch(&self, tail: Option<u64>) -> Result<String, ArmError> {
        self.client
            .logs(
                &self.resource_group,
                &self.group,
                &self.container,
                tail,
                true,
            )
            .await
    }
}

/// The log of `container` in `group` as a byte stream, per `opts`; a
/// follower polls every `poll`.
///
/// # Errors
/// [`ProviderError::Unsupported`] for `previous`; the first call's error
/// (404: [`ProviderError::NotFound`]) before any stream exists.
pub async fn logs(
    client: Arc<ArmClient>,
    rg: &str,
    group: &str,
    container: &str,
    opts: LogOptions,
    poll: Duration,
) -> Result<LogStream> {
    let source = ArmSource {
        client,
        resource_group: rg.to_owned(),
        group: group.to_owned(),
        container: container.to_owned(),
    };
    stream(source, opts, poll).await
}

/// [`logs`] over any [`Source`].
///
/// # Errors
/// As [`logs`].
pub async fn stream<S: Source>(source: S, opts: LogOptions, poll: Duration) -> Result<LogStream> {
    if opts.previous {
        return Err(ProviderError::Unsupported(
            "Azure Container Instances keeps no log of a previous container instance; \
             drop --previous (the current log spans restarts)"
                .to_owned(),
        ));
    }
    let text = source
        .fetch(opts.tail_lines)
        .await
        .map_err(ProviderError::from)?;
    let mut cursor = Cursor::default();
    let lines = cursor.advance(&text);
    let first = Bytes::from(render(&lines, opts.since, opts.timestamps));
    let stream = if opts.follow {
        let poller = Poller {
            source,
            cursor,
            since: opts.since,
            timestamps: opts.timestamps,
        };
        follow(first, poller, poll, MAX_FAILURES)
    } else {
        futures::stream::iter((!first.is_empty()).then_some(Ok(first))).boxed()
    };
    Ok(limited(stream, &opts))
}

/// A followed log: each poll fetches the last [`WINDOW`] lines (the whole
/// log when the window does not reach back to the cursor) and answers the
/// lines after the cursor, rendered.
struct Poller<S> {
    source: S,
    cursor: Cursor,
    since: Option<Timestamp>,
    timestamps: bool,
}

impl<S: Source> Poll for Poller<S> {
    async fn poll(&mut self) -> Result<Polled, ProviderError> {
        let mut text = self.source.fetch(Some(WINDOW)).await?;
        if !self.cursor.window_reaches(&text, WINDOW) {
            text = self.source.fetch(None).await?;
        }
        let lines = self.cursor.advance(&text);
        if lines.is_empty() {
            return Ok(Polled::Nothing);
        }
        let rendered = render(&lines, self.since, self.timestamps);
        Ok(Polled::Data(Bytes::from(rendered)))
    }
}

/// One log line: its timestamp (if its prefix is one) and text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// When it was written; `None` without a parsable prefix.
    pub time: Option<Timestamp>,
    /// The timestamp as ACI wrote it.
    pub prefix: &'a str,
    /// The text, without timestamp and newline.
    pub text: &'a str,
}

/// Splits a line of a `timestamps=true` log into timestamp and text; a
/// line without a parsable RFC 3339 prefix is all text.
pub fn parse_line(line: &str) -> Line<'_> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some((prefix, text)) = line.split_once(' ')
        && let Ok(time) = prefix.parse::<Timestamp>()
    {
        return Line {
            time: Some(time),
            prefix,
            text,
        };
    }
    Line {
        time: None,
        prefix: "",
        text: line,
    }
}

/// The lines of a log text (a last line without newline included).
pub fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .filter(|_| !text.is_empty())
        .map(parse_line)
}

/// Where a follower is in the log: the time of the last line sent, and how
/// many lines with exactly that time it has sent.
///
/// A line without a timestamp counts at the time of the line before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    last: Option<Timestamp>,
    seen_at_last: usize,
}

impl Cursor {
    /// The lines of `text` after the cursor, which moves past them.
    pub fn advance<'a>(&mut self, text: &'a str) -> Vec<Line<'a>> {
        let mut out = Vec::new();
        let mut current: Option<Timestamp> = None;
        let mut run = 0usize;
        // key and run of the last line sent now: the log is in time order,
        // so that is the last line of `text`, and `run` counts every line
        // of `text` at its instant
        let mut moved_to = None;
        for line in lines(text) {
            let key = line.time.or(current);
            if key == current {
                run += 1;
            } else {
                current = key;
                run = 1;
            }
            let new = match key.cmp(&self.last) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => run > self.seen_at_last,
                std::cmp::Ordering::Less => false,
            };
            if new {
                out.push(line);
                moved_to = Some((key, run));
            }
        }
        if let Some((key, run)) = moved_to {
            if key == self.last {
                self.seen_at_last = self.seen_at_last.max(run);
            } else {
                self.last = key;
                self.seen_at_last = run;
            }
        }
        out
    }

    /// Whether a text fetched with `tail = window` certainly reaches back
    /// past the cursor (or holds the whole log): otherwise lines may have
    /// been missed, or a run of equal timestamps cut, and the whole log is
    /// needed.
    pub fn window_reaches(&self, text: &str, window: u64) -> bool {
        let mut it = lines(text);
        let Some(first) = it.next() else { return true };
        let count = 1 + it.count() as u64;
        if count < window {
            return true;
        }
        match (first.time, self.last) {
            (Some(first), Some(last)) => first < last,
            _ => false,
        }
    }
}

/// The lines as the client gets them: dropped if before `since`, the
/// timestamp prefix kept only with `timestamps`, newline-terminated.
pub fn render(lines: &[Line<'_>], since: Option<Timestamp>, timestamps: bool) -> String {
    let mut out = String::new();
    for line in lines {
        if let (Some(since), Some(time)) = (since, line.time)
            && time < since
        {
            continue;
        }
        if timestamps && !line.prefix.is_empty() {
            out.push_str(line.prefix);
            out.push(' ');
        }
        out.push_str(line.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The texts of the lines `c` advances over in `text`.
    fn texts<'a>(c: &mut Cursor, text: &'a str) -> Vec<&'a str> {
        c.advance(text).iter().map(|l| l.text).collect()
    }

    #[test]
    fn prefix_is_split_off() {
        let l = parse_line("2026-11-25T21:40:00.123456789Z hello world");
        assert_eq!(l.time, Some(ts("2026-11-25T21:40:00.123456789Z")));
        assert_eq!(l.prefix, "2026-11-25T21:40:00.123456789Z");
        assert_eq!(l.text, "hello world");
        // no timestamp: all text
        let l = parse_line("hello world");
        assert_eq!((l.time, l.prefix, l.text), (None, "", "hello world"));
        // an empty line after the timestamp
        let l = parse_line("2026-11-25T21:40:00Z ");
        assert_eq!(l.text, "");
        assert!(l.time.is_some());
    }

    #[test]
    fn render_strips_or_keeps_timestamps() {
        let text = "2026-11-25T21:40:00.1Z a\n2026-11-25T21:40:01.2Z b\n";
        let ls: Vec<_> = lines(text).collect();
        assert_eq!(render(&ls, None, false), "a\nb\n");
        assert_eq!(render(&ls, None, true), text);
    }

    #[test]
    fn since_drops_older_lines() {
        let text = "2026-11-25T21:40:00Z a\n2026-11-25T21:40:05Z b\n2026-11-25T21:40:06Z c\n";
        let ls: Vec<_> = lines(text).collect();
        assert_eq!(
            render(&ls, Some(ts("2026-11-25T21:40:05Z")), false),
            "b\nc\n"
        );
        assert_eq!(render(&ls, Some(ts("2026-11-25T21:41:00Z")), false), "");
    }

    #[test]
    fn empty_text_has_no_lines() {
        assert_eq!(lines("").count(), 0);
        assert_eq!(lines("\n").count(), 1);
        assert_eq!(lines("a").count(), 1);
    }

    #[test]
    fn dedup_across_polls() {
        let mut c = Cursor::default();
        let t1 = "2026-11-25T21:40:00Z a\n2026-11-25T21:40:01Z b\n";
        assert_eq!(texts(&mut c, t1), ["a", "b"]);
        // the same text again: nothing new
        assert!(c.advance(t1).is_empty());
        // more lines, some at the same instant as the last sent one
        let t2 = "2026-11-25T21:40:00Z a\n2026-11-25T21:40:01Z b\n2026-11-25T21:40:01Z b2\n2026-11-25T21:40:02Z c\n";
        assert_eq!(texts(&mut c, t2), ["b2", "c"]);
        assert!(c.advance(t2).is_empty());
        // a tail window that no longer shows the oldest lines
        let t3 = "2026-11-25T21:40:02Z c\n2026-11-25T21:40:03Z d\n";
        assert_eq!(texts(&mut c, t3), ["d"]);
    }

    #[test]
    fn equal_timestamps_count_lines_already_seen() {
        let mut c = Cursor::default();
        let t = "2026-11-25T21:40:00Z x\n2026-11-25T21:40:00Z x\n";
        assert_eq!(c.advance(t).len(), 2);
        let t = "2026-11-25T21:40:00Z x\n2026-11-25T21:40:00Z x\n2026-11-25T21:40:00Z x\n";
        // identical text, but a third line at the same instant is new
        assert_eq!(c.advance(t).len(), 1);
        assert!(c.advance(t).is_empty());
    }

    #[test]
    fn lines_without_timestamps_follow_the_line_before() {
        let mut c = Cursor::default();
        let t = "2026-11-25T21:40:00Z start\ncontinued\n";
        assert_eq!(c.advance(t).len(), 2);
        let t = "2026-11-25T21:40:00Z start\ncontinued\nmore\n";
        assert_eq!(texts(&mut c, t), ["more"]);
    }

    #[test]
    fn window_must_reach_back() {
        let mut c = Cursor::default();
        c.advance("2026-11-25T21:40:05Z a\n");
        // fewer lines than the window: the whole log
        assert!(c.window_reaches("2026-11-25T21:40:06Z b\n", 3));
        // a full window starting before the cursor
        assert!(c.window_reaches(
            "2026-11-25T21:40:04Z z\n2026-11-25T21:40:05Z a\n2026-11-25T21:40:06Z b\n",
            3
        ));
        // a full window starting at or after the cursor may have missed lines
        assert!(!c.window_reaches(
            "2026-11-25T21:40:05Z a\n2026-11-25T21:40:06Z b\n2026-11-25T21:40:07Z c\n",
            3
        ));
        assert!(!c.window_reaches(
            "2026-11-25T21:40:06Z b\n2026-11-25T21:40:07Z c\n2026-11-25T21:40:08Z d\n",
            3
        ));
    }

    /// A log that grows by `per_fetch` lines per fetch and disappears
    /// after `gone_after` fetches.
    struct Growing {
        log: Mutex<Vec<String>>,
        fetches: Mutex<Vec<Option<u64>>>,
        gone_after: usize,
        per_fetch: usize,
    }

    impl Source for Arc<Growing> {
        async fn fetch(&self, tail: Option<u64>) -> Result<String, ArmError> {
            let n = {
                let mut f = self.fetches.lock().unwrap();
                f.push(tail);
                f.len()
            };
            if n > self.gone_after {
                return Err(ArmError::Status {
                    operation: "Containers_ListLogs",
                    action: "x",
                    status: 404,
                    code: "ResourceNotFound".into(),
                    message: "gone".into(),
                    retry_after: None,
                    request_id: None,
                });
            }
            let mut log = self.log.lock().unwrap();
            // a poll that fetches the whole log after a window does not add lines
            if tail.is_some() || n == 1 || self.per_fetch == 1 {
                for _ in 0..self.per_fetch {
                    let i = log.len() + 1;
                    log.push(format!("2026-11-25T21:40:00.{i:09}Z line {i}"));
                }
            }
            let skip = tail.map_or(0, |t| log.len().saturating_sub(usize::try_from(t).unwrap()));
            Ok(log[skip..].iter().map(|l| format!("{l}\n")).collect())
        }
    }

    fn growing(gone_after: usize) -> Arc<Growing> {
        growing_by(gone_after, 1)
    }

    fn growing_by(gone_after: usize, per_fetch: usize) -> Arc<Growing> {
        Arc::new(Growing {
            log: Mutex::new(Vec::new()),
            fetches: Mutex::new(Vec::new()),
            gone_after,
            per_fetch,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_larger_than_the_window_is_fetched_whole() {
        let per = usize::try_from(WINDOW).unwrap() + 500;
        let src = growing_by(3, per);
        let opts = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let out = read(&src, opts).await;
        let got: Vec<&str> = out.lines().collect();
        let want: Vec<String> = (1..=2 * per).map(|i| format!("line {i}")).collect();
        assert_eq!(got, want);
        assert_eq!(
            *src.fetches.lock().unwrap(),
            vec![None, Some(WINDOW), None, Some(WINDOW)]
        );
    }

    async fn collect(stream: LogStream) -> String {
        let chunks: Vec<_> = stream.collect().await;
        chunks
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect()
    }

    /// All that a stream of `src` with `opts` (polling every second) sends.
    async fn read(src: &Arc<Growing>, opts: LogOptions) -> String {
        collect(
            stream(Arc::clone(src), opts, Duration::from_secs(1))
                .await
                .unwrap(),
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn follow_sends_each_line_once_and_ends_on_404() {
        let src = growing(4);
        let opts = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let out = read(&src, opts).await;
        assert_eq!(out, "line 1\nline 2\nline 3\nline 4\n");
    }

    #[tokio::test(start_paused = true)]
    async fn no_follow_is_one_fetch_with_server_side_tail() {
        let src = growing(10);
        let opts = LogOptions {
            tail_lines: Some(7),
            timestamps: true,
            ..LogOptions::default()
        };
        let out = read(&src, opts).await;
        assert_eq!(out, "2026-11-25T21:40:00.000000001Z line 1\n");
        assert_eq!(*src.fetches.lock().unwrap(), vec![Some(7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn limit_bytes_ends_a_follow() {
        let src = growing(100);
        let opts = LogOptions {
            follow: true,
            limit_bytes: Some(10),
            ..LogOptions::default()
        };
        let out = read(&src, opts).await;
        assert_eq!(out, "line 1\nlin");
    }

    #[tokio::test]
    async fn first_error_and_previous_come_up_front() {
        let src = growing(0);
        let e = stream(
            Arc::clone(&src),
            LogOptions::default(),
            Duration::from_secs(1),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(e, ProviderError::NotFound(_)), "{e:?}");
        let opts = LogOptions {
            previous: true,
            ..LogOptions::default()
        };
        let e = stream(growing(1), opts, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ProviderError::Unsupported(_)), "{e:?}");
    }
}
