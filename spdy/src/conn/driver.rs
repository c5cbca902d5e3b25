//! The two tasks behind a [`Connection`](super::Connection): the reader,
//! which decodes and dispatches incoming frames, and the writer, which
//! encodes and writes outgoing ones.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::stream::{Chunk, Stream, StreamState};
use super::{Command, Config, Shared, StreamRate};
use crate::Error;
use crate::frame::{Frame, FrameDecoder, FrameEncoder, GoAwayStatus, Headers, RstStatus, StreamId};

/// Write-budget cost charged for a control frame the reader queues (about
/// the size of an encoded SYN_REPLY, PING or RST_STREAM).
const CONTROL_FRAME_COST: u32 = 64;

/// The writer writes once this much is encoded, even if more is queued.
const WRITE_BATCH: usize = 64 * 1024;

/// Initial read buffer of the reader.
const READ_BUFFER: usize = 16 * 1024;

/// Encodes queued commands and writes them to the transport until told to
/// close, the connection ends, or a write fails.
pub(super) async fn write_loop<W>(
    mut io: W,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) where
    W: AsyncWrite + Unpin,
{
    let mut writer = Writer {
        encoder: FrameEncoder::new(),
        buf: BytesMut::with_capacity(WRITE_BATCH),
        permits: Vec::new(),
    };
    let result = writer.run(&mut io, &mut commands, &shared).await;
    if let Err(e) = &result {
        tracing::debug!(error = %e, "SPDY writer stopped");
    }
    // From here on, writes fail and waiting writers wake up.
    shared.mark_closed();
    commands.close();
    while let Ok(command) = commands.try_recv() {
        if let Command::Close {
            done: Some(done), ..
        } = command
        {
            let _ = done.send(Err(Error::ConnectionClosed));
        }
    }
}

struct Writer {
    encoder: FrameEncoder,
    buf: BytesMut,
    /// Write-budget permits of the frames in `buf`.
    permits: Vec<OwnedSemaphorePermit>,
}

impl Writer {
    async fn run<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        shared: &Shared,
    ) -> Result<(), Error> {
        loop {
            let command = tokio::select! {
                biased;
                command = commands.recv() => command,
                () = shared.closed.cancelled() => None,
            };
            let Some(mut command) = command else {
                // Everybody is gone, or the reader ended: write what is
                // still queued (up to a GOAWAY) and close our side.
                let mut done = None;
                while let Ok(command) = commands.try_recv() {
                    match command {
                        Command::Frame { frame, .. } => {
                            self.encoder.encode(&frame, &mut self.buf)?;
                        }
                        Command::Close { goaway, done: d } => {
                            self.encoder.encode(&goaway, &mut self.buf)?;
                            done = d;
                            break;
                        }
                    }
                }
                let result = self.finish(io).await;
                return match done {
                    Some(done) => {
                        let _ = done.send(result);
                        Ok(())
                    }
                    None => result,
                };
            };
            loop {
                match command {
                    Command::Frame { frame, permit } => {
                        self.encoder.encode(&frame, &mut self.buf)?;
                        self.permits.extend(permit);
                    }
                    Command::Close { goaway, done } => {
                        self.encoder.encode(&goaway, &mut self.buf)?;
                        let result = self.finish(io).await;
                        return match done {
                            Some(done) => {
                                let _ = done.send(result);
                                Ok(())
                            }
                            None => result,
                        };
                    }
                }
                if self.buf.len() >= WRITE_BATCH {
                    break;
                }
                match commands.try_recv() {
                    Ok(next) => command = next,
                    Err(_) => break,
                }
            }
            self.write_out(io).await?;
            if commands.is_empty() {
                io.flush().await?;
            }
        }
    }

    /// Writes what is encoded, flushes and shuts the transport's write side
    /// down.
    async fn finish<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<(), Error> {
        self.write_out(io).await?;
        io.flush().await?;
        io.shutdown().await?;
        Ok(())
    }

    async fn write_out<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<(), Error> {
        io.write_all(&self.buf).await?;
        self.buf.clear();
        self.permits.clear();
        Ok(())
    }
}

/// Bookkeeping of one stream the reader delivers data to.
struct Entry {
    data: mpsc::UnboundedSender<Chunk>,
    state: Arc<StreamState>,
    /// Room in the stream's receive buffer, in bytes.
    receive_budget: Arc<Semaphore>,
}

/// Why the reader stopped.
enum Stop {
    /// The peer closed the transport, or the connection was closed.
    Done,
    /// The peer violated the protocol.
    Protocol(Error),
    /// The transport failed or the writer is gone.
    Broken(Error),
}

/// The reader task's state.
pub(super) struct Reader {
    shared: Arc<Shared>,
    /// `None` after the peer's GOAWAY.
    incoming: Option<mpsc::Sender<Stream>>,
    streams: HashMap<StreamId, Entry>,
    /// The last stream id the client used.
    last_stream_id: StreamId,
    /// Room in the receive buffers of all streams together, in bytes.
    receive_budget: Arc<Semaphore>,
    /// New streams allowed ([`Config::stream_rate`]).
    bucket: Option<Bucket>,
    config: Config,
}

/// A token bucket for new streams.
struct Bucket {
    rate: StreamRate,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: StreamRate) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.saturating_duration_since(self.last).as_secs_f64()
            * f64::from(self.rate.per_second);
        self.last = now;
        self.tokens = (self.tokens + refill).min(f64::from(self.rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Reader {
    pub(super) fn new(shared: Arc<Shared>, incoming: mpsc::Sender<Stream>, config: Config) -> Self {
        Self {
            shared,
            incoming: Some(incoming),
            streams: HashMap::new(),
            last_stream_id: 0,
            receive_budget: Arc::new(Semaphore::new(config.connection_receive_buffer)),
            bucket: config.stream_rate.map(Bucket::new),
            config,
        }
    }

    pub(super) async fn run<R: AsyncRead + Unpin>(mut self, io: R) {
        let decoder = FrameDecoder::with_limits(self.config.limits);
        let mut frames = FramedRead::with_capacity(io, decoder, READ_BUFFER);
        let closed = self.shared.closed.clone();
        let stop = loop {
            let next = tokio::select! {
                biased;
                () = closed.cancelled() => break Stop::Done,
                next = frames.next() => next,
            };
            let frame = match next {
                None => break Stop::Done,
                Some(Ok(frame)) => frame,
                Some(Err(Error::Io(e))) => break Stop::Broken(Error::Io(e)),
                Some(Err(e)) => break Stop::Protocol(e),
            };
            tracing::trace!(frame = frame.name(), stream = ?frame.stream_id(), "SPDY frame received");
            let handled = tokio::select! {
                biased;
                () = closed.cancelled() => break Stop::Done,
                handled = self.handle(frame) => handled,
            };
            if let Err(e) = handled {
                break Stop::Broken(e);
            }
        };
        match stop {
            Stop::Done => tracing::debug!("SPDY connection ended"),
            Stop::Protocol(e) => {
                tracing::debug!(error = %e, "SPDY protocol error, closing connection");
                self.shared.queue_close(GoAwayStatus::PROTOCOL_ERROR, None);
            }
            Stop::Broken(e) => tracing::debug!(error = %e, "SPDY connection failed"),
        }
        // Dropping the entries ends every stream's data; cancelling makes
        // the writer flush what is queued and shut down.
        self.streams.clear();
        self.shared.closed.cancel();
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                unidirectional,
                headers,
                ..
            } => self.open(stream_id, fin, unidirectional, headers).await,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                self.data(stream_id, fin, data).await;
                Ok(())
            }
            Frame::RstStream { stream_id, status } => {
                tracing::debug!(stream_id, ?status, "SPDY stream reset by peer");
                if let Some(entry) = self.streams.remove(&stream_id) {
                    entry.state.set_remote_reset();
                }
                Ok(())
            }
            // Client pings are odd; even ids answer pings of ours (we send
            // none).
            Frame::Ping { id } if id % 2 == 1 => self.send_control(Frame::Ping { id }).await,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                tracing::debug!(last_good_stream_id, ?status, "SPDY GOAWAY received");
                self.incoming = None;
                Ok(())
            }
            Frame::Ping { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. } => Ok(()),
        }
    }

    async fn open(
        &mut self,
        stream_id: StreamId,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    ) -> Result<(), Error> {
        if stream_id.is_multiple_of(2) || stream_id <= self.last_stream_id {
            tracing::debug!(
                stream_id,
                last = self.last_stream_id,
                "SPDY stream id out of sequence"
            );
            return self.refuse(stream_id, RstStatus::PROTOCOL_ERROR).await;
        }
        self.last_stream_id = stream_id;
        let incoming = match &self.incoming {
            Some(tx) if !tx.is_closed() && !self.shared.state().closing => tx.clone(),
            _ => return self.refuse(stream_id, RstStatus::REFUSED_STREAM).await,
        };
        if let Some(bucket) = &mut self.bucket
            && !bucket.take()
        {
            tracing::debug!(stream_id, "SPDY stream rate exceeded");
            return self.refuse(stream_id, RstStatus::REFUSED_STREAM).await;
        }
        if self.streams.len() >= self.config.max_streams {
            // Forget streams whose receiving half the application dropped.
            self.streams.retain(|_, entry| !entry.data.is_closed());
            if self.streams.len() >= self.config.max_streams {
                tracing::debug!(stream_id, "SPDY stream limit reached");
                return self.refuse(stream_id, RstStatus::REFUSED_STREAM).await;
            }
        }

        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let state = Arc::new(StreamState::default());
        if !fin {
            self.streams.insert(
                stream_id,
                Entry {
                    data: data_tx,
                    state: Arc::clone(&state),
                    receive_budget: Arc::new(Semaphore::new(self.config.stream_receive_buffer)),
                },
            );
        }
        self.shared.state().last_accepted = stream_id;
        // Queued before the application can see the stream, so it precedes
        // any DATA the application sends on it.
        self.send_control(Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::new(),
        })
        .await?;
        tracing::debug!(stream_id, ?headers, "SPDY stream accepted");
        let stream = Stream::new(
            stream_id,
            headers,
            Arc::clone(&self.shared),
            state,
            data_rx,
            unidirectional,
        );
        if let Err(mpsc::error::SendError(mut stream)) = incoming.send(stream).await {
            stream.reset(RstStatus::REFUSED_STREAM);
        }
        Ok(())
    }

    async fn data(&mut self, stream_id: StreamId, fin: bool, data: bytes::Bytes) {
        let Some(entry) = self.streams.get(&stream_id) else {
            tracing::trace!(stream_id, "SPDY data for unknown stream dropped");
            return;
        };
        if entry.state.is_locally_reset() {
            self.streams.remove(&stream_id);
            return;
        }
        if !data.is_empty() && !entry.data.is_closed() {
            // A frame larger than a whole buffer takes all of it.
            let permits = |buffer: usize| u32::try_from(data.len().min(buffer)).unwrap_or(u32::MAX);
            let (stream_want, connection_want) = (
                permits(self.config.stream_receive_buffer),
                permits(self.config.connection_receive_buffer),
            );
            let stream_budget = Arc::clone(&entry.receive_budget);
            let connection_budget = Arc::clone(&self.receive_budget);
            let acquire = async move {
                let stream = stream_budget.acquire_many_owned(stream_want).await.ok()?;
                let connection = connection_budget
                    .acquire_many_owned(connection_want)
                    .await
                    .ok()?;
                Some((stream, connection))
            };
            let permits = tokio::select! {
                permits = acquire => permits,
                () = entry.data.closed() => None,
            };
            if let Some(permits) = permits {
                let _ = entry.data.send(Chunk {
                    data,
                    _permits: permits,
                });
            }
        }
        if fin {
            self.streams.remove(&stream_id);
        }
    }

    async fn refuse(&self, stream_id: StreamId, status: RstStatus) -> Result<(), Error> {
        self.send_control(Frame::RstStream { stream_id, status })
            .await
    }

    /// Queues a control frame once the write buffer has room for it.
    async fn send_control(&self, frame: Frame) -> Result<(), Error> {
        // The budget may be configured smaller than the nominal cost.
        let cost = u32::try_from(self.config.write_buffer)
            .unwrap_or(u32::MAX)
            .min(CONTROL_FRAME_COST);
        let permit = Arc::clone(&self.shared.write_budget)
            .acquire_many_owned(cost)
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        if self.shared.send(frame, Some(permit)) {
            Ok(())
        } else {
            Err(Error::ConnectionClosed)
        }
    }
}
