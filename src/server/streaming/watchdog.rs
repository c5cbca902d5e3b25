//! The idle timeout and the maximum duration of an upgraded session: the
//! session's connection is wrapped in [`Tracked`], which notes when a byte
//! last went either way, and [`Cutoff::wait`] resolves when the session
//! should end; each transport then closes as it would when the client left
//! (SPDY: GOAWAY; WebSocket: a close frame), and the backend's call is
//! dropped.
//!
//! Any byte counts, as for the kubelet's `streamingConnectionIdleTimeout`
//! (spdystream resets its idle timer on every frame, wsstream on every read
//! and write): pings too, and output the client does not read once the
//! socket is full does not.

use std::{
    fmt, io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use crate::server::limits::{Limits, enabled};

/// When a byte last went through a [`Tracked`] connection.
#[derive(Clone)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A connection that records its [`Activity`].
pub(super) struct Tracked<T> {
    io: T,
    activity: Activity,
}

impl<T> Tracked<T> {
    pub(super) fn new(io: T) -> Self {
        Self {
            io,
            activity: Activity::new(),
        }
    }

    pub(super) fn activity(&self) -> Activity {
        self.activity.clone()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// When a session must end.
pub(super) struct Cutoff {
    activity: Activity,
    idle: Option<Duration>,
    end: Option<Instant>,
}

/// Why a session was ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    /// No byte went either way for this long.
    Idle(Duration),
    /// The session lasted this long.
    MaxDuration(Duration),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle(d) => write!(f, "idle for {d:?}"),
            Self::MaxDuration(d) => write!(f, "open for {d:?}, the maximum"),
        }
    }
}

impl Cutoff {
    /// The cutoff of a session over `activity`'s connection, starting now.
    pub(super) fn new(activity: Activity, limits: &Limits) -> Self {
        Self {
            activity,
            idle: enabled(limits.stream_idle_timeout),
            end: enabled(limits.stream_max_duration).map(|d| Instant::now() + d),
        }
    }

    /// Resolves when the session must end (never, with both timeouts off).
    pub(super) async fn wait(self) -> Reason {
        let started = Instant::now();
        loop {
            let idle_at = self.idle.map(|d| self.activity.last() + d);
            let next = match (idle_at, self.end) {
                (Some(a), Some(b)) => a.min(b),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => std::future::pending().await,
            };
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if let Some(end) = self.end
                && now >= end
            {
                return Reason::MaxDuration(end - started);
            }
            if let Some(idle) = self.idle
                && self.activity.last() + idle <= now
            {
                return Reason::Idle(idle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn limits(idle_ms: u64, max_ms: u64) -> Limits {
        Limits {
            stream_idle_timeout: Duration::from_millis(idle_ms),
            stream_max_duration: Duration::from_millis(max_ms),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn traffic_either_way_postpones_the_idle_cutoff() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Tracked::new(a);
        let cutoff = tokio::spawn(Cutoff::new(a.activity(), &limits(300, 0)).wait());
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if i % 2 == 0 {
                a.write_all(b"x").await.unwrap();
                b.read_u8().await.unwrap();
            } else {
                b.write_all(b"y").await.unwrap();
                a.read_u8().await.unwrap();
            }
        }
        assert!(!cutoff.is_finished(), "cut while bytes were flowing");
        let started = Instant::now();
        let reason = cutoff.await.unwrap();
        assert_eq!(reason, Reason::Idle(Duration::from_millis(300)));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn the_maximum_duration_holds_however_busy() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Tracked::new(a);
        let cutoff = tokio::spawn(Cutoff::new(a.activity(), &limits(200, 500)).wait());
        let started = Instant::now();
        while !cutoff.is_finished() {
            a.write_all(b"x").await.unwrap();
            b.read_u8().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(cutoff.await.unwrap(), Reason::MaxDuration(_)));
        assert!(started.elapsed() >= Duration::from_millis(450));
    }
}
