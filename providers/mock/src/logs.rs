//! Container logs of the simulated backend: an append-only buffer per
//! container, read with the kubelet's log options (lines rendered and
//! `limitBytes` applied by `skylet_provider::logs`).

use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, stream};
use jiff::Timestamp;
use skylet_provider::{
    LogOptions, LogStream,
    logs::{limited, push_line},
};
use tokio::sync::watch;

/// Lines of one container, with the time each was written.
///
/// Most containers' logs are never followed (a benchmark holds 10,000 of
/// them): the channel that wakes followers is made by the first follower.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    inner: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<(Timestamp, String)>,
    closed: bool,
    /// Number of lines, and whether the container has ended; `None` until
    /// someone follows.
    tx: Option<watch::Sender<(usize, bool)>>,
}

impl LogBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn push(&self, line: String) {
        let mut l = self.lock();
        if l.lines.is_empty() {
            // one line is all most simulated containers ever write
            l.lines.reserve_exact(1);
        }
        l.lines.push((Timestamp::now(), line));
        let n = l.lines.len();
        if let Some(tx) = &l.tx {
            tx.send_modify(|s| s.0 = n);
        }
    }

    /// The container ended: followers finish.
    pub(crate) fn close(&self) {
        let mut l = self.lock();
        l.closed = true;
        if let Some(tx) = &l.tx {
            tx.send_modify(|s| s.1 = true);
        }
    }

    /// A receiver of (lines, ended), up to date.
    fn subscribe(&self) -> watch::Receiver<(usize, bool)> {
        let mut l = self.lock();
        let now = (l.lines.len(), l.closed);
        l.tx.get_or_insert_with(|| watch::channel(now).0)
            .subscribe()
    }

    fn from(&self, start: usize) -> Vec<(Timestamp, String)> {
        self.lock()
            .lines
            .get(start..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

/// Lines as `kubectl logs` shows them, in one chunk.
fn render(lines: &[(Timestamp, String)], timestamps: bool) -> Bytes {
    let mut out = String::new();
    for (t, l) in lines {
        push_line(&mut out, *t, l, timestamps);
    }
    Bytes::from(out)
}

/// The log as a stream of chunks: one per line already written, then one
/// per batch of lines written while following.
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
    let rx = buf.subscribe();
    let ts = opts.timestamps;
    let initial = stream::iter(
        first
            .into_iter()
            .map(move |line| Ok(render(std::slice::from_ref(&line), ts))),
    );
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
                    return Some((Ok(render(&lines, ts)), (buf, next, rx, follow)));
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
    limited(initial.chain(follow).boxed(), &opts)
}

/// A container's program writes its lines into the container's log.
impl skylet_toysh::Output for LogBuffer {
    fn line(&self, line: String) {
        self.push(line);
    }

    fn ignored(&self, statement: &str) {
        self.push(format!("mock: not understood, ignored: {statement}"));
    }
}
