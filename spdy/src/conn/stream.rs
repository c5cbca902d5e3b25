//! The streams of a [`Connection`](super::Connection): [`Stream`] and its
//! halves [`RecvStream`] and [`SendStream`].
//!
//! A [`RecvStream`] reads the DATA the client sends, from a queue the
//! connection's reader fills; it reaches end-of-file when the client sends
//! FIN or resets the stream, when the stream is reset locally, or when the
//! connection ends. A [`SendStream`] turns writes into DATA frames of at most
//! [`Config::max_write_frame`](super::Config::max_write_frame) bytes for the
//! writer task; [`shutdown`](tokio::io::AsyncWriteExt::shutdown) sends an
//! empty DATA frame with FIN. Writes are complete once queued: the writer
//! flushes the transport whenever its queue runs dry, so `flush` has nothing
//! to wait for.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::PollSemaphore;

use super::Shared;
use crate::frame::{Frame, Headers, RstStatus, StreamId};

/// Received data on its way from the reader task to a [`RecvStream`]. The
/// permits hold the stream's and the connection's receive-buffer room until
/// the data is read.
pub(super) struct Chunk {
    pub(super) data: Bytes,
    pub(super) _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Per-stream state shared by the two halves and the reader task.
#[derive(Default)]
pub(super) struct StreamState {
    /// The peer sent RST_STREAM.
    remote_reset: AtomicBool,
    /// We sent RST_STREAM.
    local_reset: AtomicBool,
    /// Wakes a [`RecvStream`] blocked on its queue when the stream is reset
    /// locally.
    recv_waker: AtomicWaker,
}

impl StreamState {
    pub(super) fn set_remote_reset(&self) {
        self.remote_reset.store(true, Ordering::Release);
    }

    pub(super) fn is_locally_reset(&self) -> bool {
        self.local_reset.load(Ordering::Acquire)
    }

    fn is_reset(&self) -> bool {
        self.remote_reset.load(Ordering::Acquire) || self.is_locally_reset()
    }
}

/// A stream opened by the client.
///
/// Reads return the client's data, writes send data to it; see
/// [`RecvStream`] and [`SendStream`] for the details, and
/// [`into_split`](Self::into_split) to use the directions from different
/// tasks.
pub struct Stream {
    headers: Headers,
    recv: RecvStream,
    send: SendStream,
}

impl Stream {
    pub(super) fn new(
        id: StreamId,
        headers: Headers,
        shared: Arc<Shared>,
        state: Arc<StreamState>,
        data: mpsc::UnboundedReceiver<Chunk>,
        unidirectional: bool,
    ) -> Self {
        let budget = PollSemaphore::new(Arc::clone(&shared.write_budget));
        Self {
            headers,
            recv: RecvStream {
                id,
                data,
                current: None,
                state: Arc::clone(&state),
            },
            send: SendStream {
                id,
                shared,
                state,
                budget,
                // A unidirectional stream may only be sent on by its opener.
                finished: unidirectional,
            },
        }
    }

    /// The stream id (odd: client-initiated).
    pub fn id(&self) -> StreamId {
        self.recv.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name`, e.g.
    /// [`HEADER_STREAM_TYPE`](crate::HEADER_STREAM_TYPE).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Whether either side reset the stream.
    pub fn is_reset(&self) -> bool {
        self.recv.is_reset()
    }

    /// Aborts the stream with RST_STREAM; see [`SendStream::reset`].
    pub fn reset(&mut self, status: RstStatus) {
        self.send.reset(status);
    }

    /// Splits the stream into its receiving and sending halves.
    pub fn into_split(self) -> (RecvStream, SendStream) {
        (self.recv, self.send)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

/// The receiving half of a [`Stream`].
///
/// Reads end (return 0 bytes) when the client sent FIN, when either side
/// reset the stream, or when the connection ended; data received before a
/// FIN or a remote reset is still delivered first. Dropping it discards
/// whatever the client sends on the stream from then on.
pub struct RecvStream {
    id: StreamId,
    data: mpsc::UnboundedReceiver<Chunk>,
    current: Option<Chunk>,
    state: Arc<StreamState>,
}

impl RecvStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Whether either side reset the stream.
    pub fn is_reset(&self) -> bool {
        self.state.is_reset()
    }
}

impl fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.state.recv_waker.register(cx.waker());
        loop {
            if this.state.is_locally_reset() {
                this.current = None;
                this.data.close();
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(chunk) = &mut this.current {
                let n = chunk.data.len().min(buf.remaining());
                buf.put_slice(&chunk.data.split_to(n));
                if chunk.data.is_empty() {
                    // Frees the chunk's room in the receive buffer.
                    this.current = None;
                }
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            match ready!(this.data.poll_recv(cx)) {
                Some(chunk) => this.current = Some(chunk),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The sending half of a [`Stream`].
///
/// Each write queues one DATA frame of up to
/// [`Config::max_write_frame`](super::Config::max_write_frame) bytes and
/// waits while the connection's write buffer is full. `shutdown` sends FIN;
/// dropping the half without shutting it down sends FIN too, unless the
/// stream was reset. Writes fail with `BrokenPipe` after shutdown or when the
/// connection is closed, and with `ConnectionReset` after the client reset
/// the stream.
pub struct SendStream {
    id: StreamId,
    shared: Arc<Shared>,
    state: Arc<StreamState>,
    budget: PollSemaphore,
    /// FIN or RST_STREAM was sent (or the stream is unidirectional).
    finished: bool,
}

impl SendStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Whether either side reset the stream.
    pub fn is_reset(&self) -> bool {
        self.state.is_reset()
    }

    /// Aborts the stream: sends RST_STREAM with `status` (unless the stream
    /// was already reset) and ends reading on the [`RecvStream`] half.
    pub fn reset(&mut self, status: RstStatus) {
        if !self.state.is_reset() {
            self.shared.send(
                Frame::RstStream {
                    stream_id: self.id,
                    status,
                },
                None,
            );
        }
        self.finished = true;
        self.state.local_reset.store(true, Ordering::Release);
        self.state.recv_waker.wake();
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.shared.closed.is_cancelled() {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            ))
        } else if self.state.remote_reset.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream reset by peer",
            ))
        } else if self.finished {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream already finished",
            ))
        } else {
            Ok(())
        }
    }

    /// Sends FIN once, if the stream is still open for sending.
    fn finish(&mut self) {
        if !self.finished && !self.state.is_reset() && !self.shared.closed.is_cancelled() {
            self.shared.send(
                Frame::Data {
                    stream_id: self.id,
                    fin: true,
                    data: Bytes::new(),
                },
                None,
            );
        }
        self.finished = true;
    }
}

impl fmt::Debug for SendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendStream")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_writable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(this.shared.max_write_frame);
        // `max_write_frame` is normalized to fit in a u32 and to be no larger
        // than the write budget, so the acquisition can succeed.
        let permits = u32::try_from(len).unwrap_or(u32::MAX);
        let Some(permit) = ready!(this.budget.poll_acquire_many(cx, permits)) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            )));
        };
        // The stream or connection may have ended while we waited.
        this.check_writable()?;
        let data = Bytes::copy_from_slice(buf.get(..len).unwrap_or(buf));
        let frame = Frame::Data {
            stream_id: this.id,
            fin: false,
            data,
        };
        if this.shared.send(frame, Some(permit)) {
            Poll::Ready(Ok(len))
        } else {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            )))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        self.finish();
    }
}
