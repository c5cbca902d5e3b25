//! A server-side SPDY/3.1 connection: accepts the streams a client opens and
//! exposes each as an `AsyncRead + AsyncWrite` [`Stream`].
//!
//! # Design
//!
//! [`Connection::new`] splits the transport into its read and write halves
//! and spawns two tasks that own them:
//!
//! * The **reader** decodes frames with a [`FrameDecoder`] and acts on
//!   them. A SYN_STREAM with a valid (odd, increasing) id is answered with a
//!   SYN_REPLY and the new [`Stream`] is then queued for
//!   [`Connection::accept`]; invalid ids are answered with RST_STREAM
//!   `PROTOCOL_ERROR`, and streams over [`Config::max_streams`] or arriving
//!   after a GOAWAY with `REFUSED_STREAM`. DATA goes to the stream's
//!   receive buffer; FIN or RST_STREAM end it. PINGs with the client's
//!   (odd) parity are echoed. SETTINGS, WINDOW_UPDATE, HEADERS and
//!   SYN_REPLY are ignored, as spdystream ignores them. A GOAWAY from the
//!   peer ends [`accept`](Connection::accept) but leaves open streams
//!   running. A decoding error sends GOAWAY `PROTOCOL_ERROR` and closes the
//!   connection.
//! * The **writer** owns the [`FrameEncoder`] and is the only task that
//!   writes. Everything else sends it frames over one queue, so frames go out
//!   in the order they were queued: a stream's SYN_REPLY is queued before the
//!   stream is handed to the application and therefore precedes all DATA on
//!   it. The writer batches what is queued and flushes when the queue runs
//!   dry.
//!
//! # Memory bounds and back-pressure
//!
//! SPDY/3.1 flow control is not used (spdystream neither honours nor sends
//! WINDOW_UPDATE). Instead:
//!
//! * Each stream buffers at most [`Config::stream_receive_buffer`] bytes of
//!   received DATA (a single larger frame is let through on its own). When a
//!   stream's buffer is full, the reader waits, so it stops reading the
//!   socket and TCP pushes back on the peer. This stalls the other streams of
//!   the connection too, exactly as spdystream's unbuffered channels do: an
//!   application must keep reading every stream it accepted, or drop its
//!   [`RecvStream`] (whose further data is then discarded).
//! * All streams together buffer at most
//!   [`Config::connection_receive_buffer`] bytes (again, one larger frame
//!   on its own), so the memory of a connection does not grow with the
//!   number of its streams; a full budget makes the reader wait as well.
//! * At most [`Config::accept_backlog`] accepted streams wait for
//!   [`Connection::accept`]; beyond that the reader waits too.
//! * At most [`Config::max_streams`] streams are open at once, and with
//!   [`Config::stream_rate`] new streams beyond a token bucket's rate are
//!   refused with RST_STREAM `REFUSED_STREAM`: a client cannot make the
//!   application do unbounded work by opening and resetting streams.
//! * Frames queued for the writer are limited to [`Config::write_buffer`]
//!   bytes: [`SendStream`] writes wait for room, and so do the reader's
//!   replies (SYN_REPLY, PING), so a peer that floods PINGs without reading
//!   the answers ends up blocked by TCP. RST_STREAM and FIN frames queued
//!   when a handle is dropped, and the final GOAWAY, are exempt; there is at
//!   most one of each per stream.
//! * Frames are limited by the decoder's [`Limits`].
//!
//! # Lifecycle
//!
//! [`Connection::close`] queues GOAWAY, waits until the writer has flushed it
//! and shut the transport's write side down, and stops the reader; streams
//! then see end-of-file and their writes fail. Dropping the [`Connection`]
//! does the same without waiting, so keep it alive while its streams are in
//! use. Either way the transport is dropped after [`Config::close_timeout`]
//! even if the peer does not read what is left to write. When the peer closes the transport (or a transport error occurs),
//! the writer flushes what is queued and shuts down as well;
//! [`Connection::closed`] resolves in every case.
//!
//! [`FrameDecoder`]: crate::frame::FrameDecoder
//! [`FrameEncoder`]: crate::frame::FrameEncoder

mod driver;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

pub use stream::{RecvStream, SendStream, Stream};

use crate::Error;
use crate::frame::{Frame, GoAwayStatus, Limits, StreamId};

/// Tuning of a [`Connection`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Size limits enforced on incoming frames.
    pub limits: Limits,
    /// Received bytes buffered per stream before the connection stops
    /// reading (default 256 KiB).
    pub stream_receive_buffer: usize,
    /// Received bytes buffered by all streams together before the
    /// connection stops reading (default 4 MiB).
    pub connection_receive_buffer: usize,
    /// Bytes of outgoing frames queued before writers wait (default 256 KiB).
    pub write_buffer: usize,
    /// Largest DATA payload a single write produces (default 32 KiB).
    pub max_write_frame: usize,
    /// Accepted streams that may wait for [`Connection::accept`] (default 16).
    pub accept_backlog: usize,
    /// Streams open at once; more are refused (default 1024).
    pub max_streams: usize,
    /// How fast the client may open streams; streams over the rate are
    /// refused (default `None`: no limit, as spdystream).
    pub stream_rate: Option<StreamRate>,
    /// How long [`Connection::close`] (or dropping the connection) waits for
    /// queued frames and GOAWAY to be written before the transport is
    /// dropped regardless, e.g. because the peer stopped reading
    /// (default 10 s).
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            stream_receive_buffer: 256 << 10,
            connection_receive_buffer: 4 << 20,
            write_buffer: 256 << 10,
            max_write_frame: 32 << 10,
            accept_backlog: 16,
            max_streams: 1024,
            stream_rate: None,
            close_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Clamps the sizes into the ranges the implementation relies on: at
    /// least 1, at most `u32::MAX` where they count semaphore permits, and a
    /// write frame no larger than the write buffer.
    fn normalized(mut self) -> Self {
        let permits = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        self.stream_receive_buffer = permits(self.stream_receive_buffer);
        self.connection_receive_buffer = permits(self.connection_receive_buffer);
        self.write_buffer = permits(self.write_buffer);
        self.max_write_frame = self
            .max_write_frame
            .clamp(1, crate::frame::MAX_FRAME_LEN)
            .min(self.write_buffer);
        self.accept_backlog = self.accept_backlog.max(1);
        self.max_streams = self.max_streams.max(1);
        if let Some(rate) = &mut self.stream_rate {
            rate.burst = rate.burst.max(1);
        }
        self
    }
}

/// A token bucket for new streams: `burst` streams at once, then
/// `per_second` more each second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRate {
    /// Streams added to the bucket per second.
    pub per_second: u32,
    /// Size of the bucket (at least 1): streams that may be opened at once.
    pub burst: u32,
}

/// What the writer task is asked to do.
enum Command {
    /// Write a frame. The permit, if any, holds write-buffer room until the
    /// frame is written.
    Frame {
        frame: Frame,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// Write this GOAWAY, flush, shut the transport down and stop; report
    /// the outcome if asked to.
    Close {
        goaway: Frame,
        done: Option<oneshot::Sender<Result<(), Error>>>,
    },
}

/// State shared by the connection handle, its tasks and its streams.
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    /// Room in the writer's queue, in bytes.
    write_budget: Arc<Semaphore>,
    /// Cancelled once the connection is unusable.
    closed: CancellationToken,
    state: Mutex<State>,
    max_write_frame: usize,
}

#[derive(Default)]
struct State {
    /// GOAWAY has been queued; no more streams are accepted.
    closing: bool,
    /// The last stream handed to the application.
    last_accepted: StreamId,
}

impl Shared {
    /// Queues `frame` for the writer; false if the writer is gone.
    fn send(&self, frame: Frame, permit: Option<OwnedSemaphorePermit>) -> bool {
        self.commands.send(Command::Frame { frame, permit }).is_ok()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection as closing and returns the GOAWAY to send, or
    /// `None` if that already happened.
    fn begin_close(&self, status: GoAwayStatus) -> Option<Frame> {
        let mut state = self.state();
        if state.closing {
            return None;
        }
        state.closing = true;
        Some(Frame::GoAway {
            last_good_stream_id: state.last_accepted,
            status,
        })
    }

    /// Makes the connection unusable: writes fail and waiting writers wake.
    fn mark_closed(&self) {
        self.closed.cancel();
        self.write_budget.close();
    }

    /// Queues GOAWAY and the shutdown behind it, unless already closing.
    /// Returns whether a close was queued.
    fn queue_close(
        &self,
        status: GoAwayStatus,
        done: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> bool {
        match self.begin_close(status) {
            Some(goaway) => self.commands.send(Command::Close { goaway, done }).is_ok(),
            None => false,
        }
    }
}

/// The server side of a SPDY/3.1 connection.
///
/// See the [module documentation](self) for how it works.
pub struct Connection {
    incoming: mpsc::Receiver<Stream>,
    shared: Arc<Shared>,
    reader: AbortHandle,
    writer: AbortHandle,
    close_timeout: Duration,
}

impl Connection {
    /// Starts serving SPDY on `io` with the default [`Config`].
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn new<T>(io: T) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::with_config(io, Config::default())
    }

    /// Starts serving SPDY on `io`.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub fn with_config<T>(io: T, config: Config) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let config = config.normalized();
        let (read_half, write_half) = tokio::io::split(io);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(config.accept_backlog);
        let shared = Arc::new(Shared {
            commands,
            write_budget: Arc::new(Semaphore::new(config.write_buffer)),
            closed: CancellationToken::new(),
            state: Mutex::new(State::default()),
            max_write_frame: config.max_write_frame,
        });
        let close_timeout = config.close_timeout;
        let writer = tokio::spawn(driver::write_loop(
            write_half,
            command_rx,
            Arc::clone(&shared),
        ));
        let reader = tokio::spawn(
            driver::Reader::new(Arc::clone(&shared), incoming_tx, config).run(read_half),
        );
        Self {
            incoming,
            shared,
            reader: reader.abort_handle(),
            writer: writer.abort_handle(),
            close_timeout,
        }
    }

    /// The next stream the client opened, already answered with SYN_REPLY.
    ///
    /// Returns `None` once the connection is closed or the peer sent GOAWAY
    /// and the streams accepted before are taken.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Polling form of [`accept`](Self::accept).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Stream>> {
        self.incoming.poll_recv(cx)
    }

    /// Sends GOAWAY, flushes, shuts the transport down and stops reading.
    ///
    /// Streams still open see end-of-file and their writes fail. If the
    /// frames cannot be written within [`Config::close_timeout`] the
    /// transport is dropped anyway and a `TimedOut` error returned. Calling
    /// it again, or on a connection that already ended, is a no-op.
    pub async fn close(&self) -> Result<(), Error> {
        let (done, outcome) = oneshot::channel();
        let result = if self.shared.queue_close(GoAwayStatus::OK, Some(done)) {
            match tokio::time::timeout(self.close_timeout, outcome).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(Error::ConnectionClosed),
                Err(_) => Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out writing GOAWAY",
                ))),
            }
        } else {
            // Closing already, by another call or after an error.
            let _ = tokio::time::timeout(self.close_timeout, self.shared.closed.cancelled()).await;
            Ok(())
        };
        self.reader.abort();
        self.writer.abort();
        self.shared.mark_closed();
        result
    }

    /// Resolves once the connection is closed: by [`close`](Self::close),
    /// by the peer, or by an error.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.queue_close(GoAwayStatus::OK, None);
        self.reader.abort();
        // Give the writer `close_timeout` to send what is queued and GOAWAY.
        let writer = self.writer.clone();
        let shared = Arc::clone(&self.shared);
        let close_timeout = self.close_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let closed = shared.closed.clone();
                    if tokio::time::timeout(close_timeout, closed.cancelled())
                        .await
                        .is_err()
                    {
                        writer.abort();
                        shared.mark_closed();
                    }
                });
            }
            Err(_) => {
                writer.abort();
                shared.mark_closed();
            }
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
