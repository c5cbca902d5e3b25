//! The Kubernetes channel protocols over WebSocket, and a WebSocket used as a
//! plain byte stream (for SPDY tunnelled through it).
//!
//! # Channel framing
//!
//! Every message starts with a channel number, followed by that channel's
//! bytes (k8s.io/streaming `wsstream`):
//!
//! | sub-protocol | channel byte | payload | close signal |
//! |---|---|---|---|
//! | `channel.k8s.io`, `v4.channel.k8s.io`, none | `n` | raw bytes | no |
//! | `base64.channel.k8s.io`, `v4.base64.channel.k8s.io` | ASCII `'0' + n` | standard base64 | no |
//! | `v5.channel.k8s.io` | `n` | raw bytes | `[255, n]`: the client closed channel `n` |
//!
//! Binary and text messages are accepted alike (Go's base64 variants send
//! text); skylet sends binary messages, text ones for the base64 variants.
//! Empty messages are ignored, as are data for channels that are not read.
//! Malformed base64 is dropped (Go logs and goes on); a malformed close
//! signal ends the connection.
//!
//! # Design
//!
//! [`Mux::new`] splits the socket and spawns two tasks. The **reader** decodes
//! messages and writes each channel's bytes into that channel's input (an
//! in-memory pipe the session reads); a full pipe makes it wait, so TCP pushes
//! back on the client. A close signal ends the input (end-of-file); a channel
//! whose reader is gone drops its data. The **writer** owns the sink and
//! sends what the [`ChannelWriter`]s and [`Mux::send`] queue, in order, on a
//! bounded queue: writes wait while the client does not read. Pings are
//! answered by tungstenite while the reader reads.
//!
//! # Memory bounds
//!
//! Incoming messages are limited to [`MAX_MESSAGE`] bytes; each channel
//! input buffers what its pipe holds; the outgoing queue holds at most
//! [`OUT_QUEUE`] messages of at most [`MAX_CHUNK`] payload bytes.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream::SplitSink};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tokio_util::sync::{CancellationToken, PollSender, WaitForCancellationFutureOwned};

/// Largest message accepted from a client.
pub(super) const MAX_MESSAGE: usize = 1 << 20;
/// Largest payload of one message sent.
pub(super) const MAX_CHUNK: usize = 32 << 10;
/// Messages queued for the writer before writes wait.
pub(super) const OUT_QUEUE: usize = 16;
/// The v5 close signal's marker byte.
const CLOSE_SIGNAL: u8 = 255;
/// How long closing waits for the queue to drain and for the client's
/// close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel's input: where the reader writes what the client sent on it.
pub(super) type Input = Box<dyn AsyncWrite + Send + Unpin>;

/// Turns an upgraded connection into a server-side WebSocket.
pub(super) async fn accept<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// How channel numbers and payloads are put into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Framing {
    /// ASCII channel digit and base64 payload.
    pub(super) base64: bool,
    /// `[255, n]` half-closes channel `n` (v5).
    pub(super) close_signal: bool,
}

/// A decoded client message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// Nothing (an empty message).
    Empty,
    /// The client closed this channel.
    Close(u8),
    /// Bytes for a channel.
    Data(u8, Bytes),
    /// Undecodable payload; dropped.
    Invalid(&'static str),
    /// A protocol violation that ends the connection.
    Fatal(&'static str),
}

impl Framing {
    /// The message carrying `data` on `channel`.
    pub(super) fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            s.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        }
    }

    /// Decodes the payload of a text or binary message.
    pub(super) fn decode(self, msg: &Bytes) -> Decoded {
        let Some((&first, rest)) = msg.split_first() else {
            return Decoded::Empty;
        };
        if self.close_signal && first == CLOSE_SIGNAL {
            return match rest {
                [channel] => Decoded::Close(*channel),
                _ => Decoded::Fatal("a close signal must name exactly one channel"),
            };
        }
        if self.base64 {
            match base64::engine::general_purpose::STANDARD.decode(rest) {
                Ok(data) => Decoded::Data(first.wrapping_sub(b'0'), data.into()),
                Err(_) => Decoded::Invalid("payload is not valid base64"),
            }
        } else {
            Decoded::Data(first, msg.slice(1..))
        }
    }
}

/// A WebSocket carrying numbered channels (see the module docs).
pub(super) struct Mux {
    tx: mpsc::Sender<Message>,
    framing: Framing,
    /// `None` once closed.
    tasks: Option<(JoinHandle<()>, JoinHandle<()>)>,
    closed: CancellationToken,
}

impl Mux {
    /// Starts serving `ws`; `inputs[n]` receives what the client sends on
    /// channel `n` (`None`: ignored).
    pub(super) fn new<S>(
        ws: WebSocketStream<S>,
        framing: Framing,
        inputs: Vec<Option<Input>>,
    ) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let closed = CancellationToken::new();
        let writer = tokio::spawn(write_loop(sink, rx, closed.clone()));
        let reader = tokio::spawn(read_loop(stream, framing, inputs, closed.clone()));
        Self {
            tx,
            framing,
            tasks: Some((writer, reader)),
            closed,
        }
    }

    /// A writer for channel `n`.
    pub(super) fn writer(&self, channel: u8) -> ChannelWriter {
        ChannelWriter {
            tx: PollSender::new(self.tx.clone()),
            channel,
            framing: self.framing,
        }
    }

    /// Sends one message on `channel` (may be empty); false if the
    /// connection is gone.
    pub(super) async fn send(&self, channel: u8, data: &[u8]) -> bool {
        self.tx
            .send(self.framing.encode(channel, data))
            .await
            .is_ok()
    }

    /// Resolves when the client closed the connection or it failed.
    pub(super) fn closed(&self) -> WaitForCancellationFutureOwned {
        self.closed.clone().cancelled_owned()
    }

    /// Sends what is queued and a normal close frame, waits briefly for the
    /// client's close frame, then drops the connection.
    pub(super) async fn close(mut self) {
        let Some((writer, reader)) = self.tasks.take() else {
            return;
        };
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.tx.send(close)).await;
        let writer_abort = writer.abort_handle();
        if tokio::time::timeout(CLOSE_TIMEOUT, writer).await.is_err() {
            writer_abort.abort();
        }
        let reader_abort = reader.abort_handle();
        if tokio::time::timeout(CLOSE_TIMEOUT, reader).await.is_err() {
            reader_abort.abort();
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // Unless closed, the session was abandoned.
        if let Some((writer, reader)) = self.tasks.take() {
            writer.abort();
            reader.abort();
        }
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

async fn write_loop<S>(
    mut sink: Sink<S>,
    mut rx: mpsc::Receiver<Message>,
    closed: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(msg) = rx.recv().await {
        let is_close = matches!(msg, Message::Close(_));
        if let Err(e) = sink.feed(msg).await {
            tracing::debug!(error = %e, "WebSocket write failed");
            break;
        }
        if (is_close || rx.is_empty())
            && let Err(e) = sink.flush().await
        {
            tracing::debug!(error = %e, "WebSocket flush failed");
            break;
        }
        if is_close {
            break;
        }
    }
    closed.cancel();
}

async fn read_loop<S>(
    mut stream: futures::stream::SplitStream<WebSocketStream<S>>,
    framing: Framing,
    mut inputs: Vec<Option<Input>>,
    closed: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::select! {
            () = closed.cancelled() => break,
            msg = stream.next() => msg,
        };
        let payload = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                break;
            }
        };
        match framing.decode(&payload) {
            Decoded::Empty => {}
            Decoded::Close(channel) => {
                if let Some(mut input) = inputs.get_mut(usize::from(channel)).and_then(Option::take)
                {
                    let _ = input.shutdown().await;
                }
            }
            Decoded::Data(channel, data) => {
                let slot = inputs.get_mut(usize::from(channel));
                if let Some(Some(input)) = slot {
                    let ok = tokio::select! {
                        () = closed.cancelled() => break,
                        r = input.write_all(&data) => r.is_ok(),
                    };
                    if !ok {
                        // Nobody reads this channel any more.
                        if let Some(s) = inputs.get_mut(usize::from(channel)) {
                            *s = None;
                        }
                    }
                }
            }
            Decoded::Invalid(why) => tracing::debug!(why, "WebSocket message dropped"),
            Decoded::Fatal(why) => {
                tracing::debug!(why, "WebSocket protocol error, closing");
                break;
            }
        }
    }
    // Dropping the inputs gives every channel end-of-file.
    drop(inputs);
    closed.cancel();
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket connection closed")
}

/// Writes to one channel of a [`Mux`]; each write sends one message of at
/// most [`MAX_CHUNK`] bytes once the queue has room.
pub(super) struct ChannelWriter {
    tx: PollSender<Message>,
    channel: u8,
    framing: Framing,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let n = buf.len().min(MAX_CHUNK);
        let msg = self
            .framing
            .encode(self.channel, buf.get(..n).unwrap_or(buf));
        self.tx.send_item(msg).map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The channel protocols have no end-of-stream from the server: the
        // client sees end-of-file when the connection closes.
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// A WebSocket as a byte stream: binary messages in, one binary message per
/// write out (SPDY tunnelled through `SPDY/3.1+portforward.k8s.io`, as
/// client-go's `TunnelingConnection` does it). A close frame or the end of
/// the connection is end-of-file; a text message is an error.
pub(super) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    buf: Bytes,
    eof: bool,
}

impl<S> WsBytes<S> {
    pub(super) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            buf: Bytes::new(),
            eof: false,
        }
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.buf.is_empty() {
                let n = this.buf.len().min(out.remaining());
                out.put_slice(&this.buf.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => this.buf = b,
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message in a tunnel",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(ws_error)?;
        let n = buf.len().min(MAX_MESSAGE);
        self.ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(
                buf.get(..n).unwrap_or(buf),
            )))
            .map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.ws.poll_close_unpin(cx)) {
            Ok(())
            | Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            ) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: Framing = Framing {
        base64: false,
        close_signal: false,
    };
    const V5: Framing = Framing {
        base64: false,
        close_signal: true,
    };
    const B64: Framing = Framing {
        base64: true,
        close_signal: false,
    };

    #[test]
    fn binary_framing_prefixes_the_channel_byte() {
        assert_eq!(
            RAW.encode(1, b"hi"),
            Message::Binary(Bytes::from_static(&[1, b'h', b'i']))
        );
        assert_eq!(
            RAW.decode(&Bytes::from_static(&[0, b'x'])),
            Decoded::Data(0, Bytes::from_static(b"x"))
        );
        assert_eq!(RAW.decode(&Bytes::new()), Decoded::Empty);
        // 255 is only a close signal in v5
        assert_eq!(
            RAW.decode(&Bytes::from_static(&[255, 0])),
            Decoded::Data(255, Bytes::from_static(&[0]))
        );
    }

    #[test]
    fn v5_close_signal_names_one_channel() {
        assert_eq!(V5.decode(&Bytes::from_static(&[255, 0])), Decoded::Close(0));
        assert!(matches!(
            V5.decode(&Bytes::from_static(&[255])),
            Decoded::Fatal(_)
        ));
        assert!(matches!(
            V5.decode(&Bytes::from_static(&[255, 0, 1])),
            Decoded::Fatal(_)
        ));
    }

    #[test]
    fn base64_framing_uses_ascii_channels() {
        assert_eq!(B64.encode(1, b"foo\n"), Message::text("1Zm9vCg=="));
        assert_eq!(B64.encode(3, b""), Message::text("3"));
        assert_eq!(
            B64.decode(&Bytes::from_static(b"0Zm9vCg==")),
            Decoded::Data(0, Bytes::from_static(b"foo\n"))
        );
        assert!(matches!(
            B64.decode(&Bytes::from_static(b"0!!")),
            Decoded::Invalid(_)
        ));
    }
}
