//! Container logs of the simulated backend: an append-only buffer per
//! container, read with the kubelet's log options.

use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, stream};
use jiff::Timestamp;
use skylet_provider::{LogOptions, LogStream};
use tokio::sync::watch;

/// Lines of one container, with the time each was written.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    lines: Mutex<Vec<(Timestamp, String)>>,
    /// Number of lines, and whether the container has ended (`usize::MAX`
    /// bit pattern is not used: a separate flag keeps it readable).
    tx: watch::Sender<(usize, bool)>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self {
            lines: Mutex::default(),
            tx: watch::channel((0, false)).0,
        }
    }
}

impl LogBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Timestamp, String)>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn push(&self, line: String) {
        let n = {
            let mut lines = self.lock();
            lines.push((Timestamp::now(), line));
            lines.len()
        };
        self.tx.send_modify(|s| s.0 = n);
    }

    /// The container ended: followers finish.
    pub(crate) fn close(&self) {
        self.tx.send_modify(|s| s.1 = true);
    }

    fn from(&self, start: usize) -> Vec<(Timestamp, String)> {
        self.lock()
            .get(start..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

fn format(ts: Timestamp, line: &str, timestamps: bool) -> String {
    if timestamps {
        // RFC 3339 with nanoseconds, as the kubelet writes them
        format!("{} {line}\n", ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    } else {
        format!("{line}\n")
    }
}

/// The log as a stream of chunks, one per line.
pub(crate) fn stream(buf: std::sync::Arc<LogBuffer>, opts: LogOptions) -> LogStream {
    let all = buf.from(0);
    let mut first: Vec<(Timestamp, String)> = all
        .iter()
        .filter(|(ts, _)| opts.since.is_none_or(|since| *ts >= since))
        .cloned()
        .collect();
    if let Some(n) = opts.tail_lines {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        first = first.split_off(first.len().saturating_sub(n));
    }
    let next = all.len();
    let rx = buf.tx.subscribe();
    let budget = opts.limit_bytes.unwrap_or(u64::MAX);
    let ts = opts.timestamps;
    let initial = stream::iter(first.into_iter().map(move |(t, l)| format(t, &l, ts)));
    let follow = stream::unfold(
        (buf, next, rx, opts.follow),
        move |(buf, mut next, mut rx, follow)| async move {
            if !follow {
                return None;
            }
            loop {
                let lines = buf.from(next);
                if !lines.is_empty() {
                    next += lines.len();
                    let chunk: String = lines.iter().map(|(t, l)| format(*t, l, ts)).collect();
                    return Some((chunk, (buf, next, rx, follow)));
                }
                if rx.borrow_and_update().1 {
                    return None;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    initial
        .chain(follow)
        .scan(budget, |left, chunk| {
            if *left == 0 {
                return std::future::ready(None);
            }
            let bytes = Bytes::from(chunk);
            let take = usize::try_from((*left).min(bytes.len() as u64)).unwrap_or(bytes.len());
            *left -= take as u64;
            std::future::ready(Some(Ok(bytes.slice(..take))))
        })
        .boxed()
}
