//! The client side of a Session Manager data channel, as the open-source
//! session-manager-plugin (`src/datachannel/streaming.go`) speaks it,
//! bridged to skylet's in-memory streams.
//!
//! 1. Open: the first WebSocket message is text, the JSON
//!    `OpenDataChannelInput` (`MessageSchemaVersion` "1.0", a `RequestId`,
//!    the session's `TokenValue`, a `ClientId`, a `ClientVersion`).
//! 2. Handshake: the agent sends a `HandshakeRequest` payload (its
//!    version, and the actions it asks for: `SessionType`, maybe
//!    `KMSEncryption`); the client answers a `HandshakeResponse` with a
//!    status per action (1 success; KMS encryption is refused: skylet does
//!    not implement it, so sessions whose preferences demand it fail with
//!    the agent's message), and the agent ends with `HandshakeComplete`.
//!    Input waits until then.
//! 3. Streams: `output_stream_data` messages carry the terminal output
//!    (payload type 1; 11 is stderr and 12 `EXIT_CODE: N` in sessions that
//!    keep them apart); each is acknowledged (`acknowledge`, JSON naming
//!    its type, id and sequence number) and handled in sequence order,
//!    later ones buffered until the gap is filled, earlier ones
//!    acknowledged again and dropped. stdin goes out as
//!    `input_stream_data` (payload type 1) numbered from 0; until the
//!    agent acknowledges a message it is sent again every [`RESEND_AFTER`],
//!    at most [`MAX_RESENDS`] times. Terminal sizes go out as payload type
//!    3, `{"cols":C,"rows":R}`. `pause_publication` holds input until
//!    `start_publication`.
//! 4. End: `channel_closed` (its `Output` is the reason) or the socket
//!    closing. When the client goes away first, skylet sends the
//!    `TerminateSession` flag (payload type 10) and closes the socket.
//!
//! ECS Exec sessions run in a terminal on the agent's side, so output
//! ends lines with `\r\n` and stderr is merged into it: when the client
//! did not ask for a terminal, `\r\n` becomes `\n`. End of stdin is sent
//! as Ctrl-D (the terminal turns it into end-of-file).

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use skylet_provider::{ExitStatus, ProviderError, Reader, Result, TermSize, Writer, exit_marker};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{self, Message};

use super::message::{AgentMessage, PayloadType, kind, random_uuid};

/// How long an input message may go unacknowledged before it is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How often an input message is sent again before the session is given up.
pub const MAX_RESENDS: u32 = 30;
/// How often a ping keeps the socket open (the plugin's interval).
const PING_EVERY: Duration = Duration::from_secs(300);
/// Ctrl-D: end of input on a terminal.
const EOT: u8 = 0x04;
/// `TerminateSession`, the flag payload that ends the session.
const TERMINATE_SESSION: u32 = 2;

/// What the session's streams are.
pub struct Streams {
    /// The client's input.
    pub stdin: Option<Reader>,
    /// Output.
    pub stdout: Option<Writer>,
    /// Standard error, for the payloads that carry it apart.
    pub stderr: Option<Writer>,
    /// Whether the client has a terminal.
    pub tty: bool,
    /// Its size changes.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OpenDataChannelInput<'a> {
    message_schema_version: &'a str,
    request_id: String,
    token_value: &'a str,
    client_id: String,
    client_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandshakeRequest {
    #[serde(default)]
    agent_version: String,
    #[serde(default)]
    requested_client_actions: Vec<RequestedAction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestedAction {
    action_type: String,
    #[serde(default)]
    action_parameters: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandshakeComplete {
    #[serde(default)]
    customer_message: String,
}

#[derive(Deserialize)]
struct Acknowledge {
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    sequence_number: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChannelClosed {
    #[serde(default)]
    output: String,
}

/// An input message not acknowledged yet.
struct Unacked {
    seq: i64,
    bytes: Vec<u8>,
    sent: Instant,
    resends: u32,
}

/// How the session ended.
enum End {
    /// The agent closed the channel (with its reason).
    Closed(String),
    /// The client went away.
    Gone,
}

/// The state of one session.
struct Channel<S> {
    ws: S,
    out: Output,
    /// Next sequence number of our input.
    next_seq: i64,
    /// Next sequence number of the agent's output.
    expected: i64,
    /// Output that came early, by sequence number.
    early: BTreeMap<i64, AgentMessage>,
    unacked: VecDeque<Unacked>,
    /// The handshake is complete: input may flow.
    ready: bool,
    /// The agent asked us to hold input.
    paused: bool,
    /// `EXIT_CODE: N` from the agent, if it sent one.
    exit_code: Option<i32>,
}

/// Where output goes.
struct Output {
    stdout: Option<Writer>,
    stderr: Option<Writer>,
    tty: bool,
    filter: exit_marker::Filter,
    /// A `\r` at the end of the last chunk (without a terminal).
    cr: bool,
    gone: bool,
}

impl Output {
    /// Writes `data` of the terminal to stdout: the exit marker cut out
    /// and, without a terminal, `\r\n` made `\n`.
    async fn terminal(&mut self, data: &[u8]) {
        let data = self.filter.push(data).into_owned();
        let data = if self.tty { data } else { self.crlf(&data) };
        write(&mut self.stdout, &data, &mut self.gone).await;
    }

    fn crlf(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1);
        for b in data {
            if std::mem::take(&mut self.cr) && *b != b'\n' {
                out.push(b'\r');
            }
            if *b == b'\r' {
                self.cr = true;
            } else {
                out.push(*b);
            }
        }
        out
    }

    async fn stderr(&mut self, data: &[u8]) {
        if self.stderr.is_some() {
            write(&mut self.stderr, data, &mut self.gone).await;
        } else {
            self.terminal(data).await;
        }
    }

    async fn finish(&mut self) {
        let mut rest = self.filter.flush();
        if std::mem::take(&mut self.cr) {
            rest.push(b'\r');
        }
        if !rest.is_empty() {
            write(&mut self.stdout, &rest, &mut self.gone).await;
        }
        for w in [self.stdout.as_mut(), self.stderr.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = w.shutdown().await;
        }
    }
}

async fn write(w: &mut Option<Writer>, data: &[u8], gone: &mut bool) {
    if data.is_empty() {
        return;
    }
    if let Some(out) = w.as_mut()
        && (out.write_all(data).await.is_err() || out.flush().await.is_err())
    {
        *gone = true;
    }
}

fn transient(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient(format!("{what}: {e}"))
}

async fn read_some(r: &mut Option<Reader>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_resize(rx: &mut Option<mpsc::Receiver<TermSize>>) -> Option<TermSize> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs a session on `ws` (opened to the session's stream URL) with
/// `token`, wired to `streams`, until the channel closes or the client
/// goes away; returns the command's exit code: the agent's, or else the
/// [`exit_marker`]'s.
///
/// # Errors
/// Transient errors when the socket fails, the agent stops acknowledging
/// input, or the session ends without an exit code.
pub async fn run<S>(ws: S, token: &str, streams: Streams) -> Result<ExitStatus>
where
    S: futures::Sink<Message, Error = tungstenite::Error>
        + futures::Stream<Item = std::result::Result<Message, tungstenite::Error>>
        + Unpin,
{
    let Streams {
        mut stdin,
        stdout,
        stderr,
        tty,
        mut resize,
    } = streams;
    let mut ch = Channel {
        ws,
        out: Output {
            stdout,
            stderr,
            tty,
            filter: exit_marker::Filter::new(),
            cr: false,
            gone: false,
        },
        next_seq: 0,
        expected: 0,
        early: BTreeMap::new(),
        unacked: VecDeque::new(),
        ready: false,
        paused: false,
        exit_code: None,
    };
    let open = serde_json::to_string(&OpenDataChannelInput {
        message_schema_version: "1.0",
        request_id: random_uuid().to_string(),
        token_value: token,
        client_id: random_uuid().to_string(),
        client_version: format!("skylet-{}", env!("CARGO_PKG_VERSION")),
    })
    .map_err(ProviderError::transient)?;
    ch.ws
        .send(Message::text(open))
        .await
        .map_err(|e| transient("could not open the ECS Exec data channel", e))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut tick = tokio::time::interval(RESEND_AFTER / 4);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let end = loop {
        if ch.out.gone {
            break Ok(End::Gone);
        }
        let input_open = ch.ready && !ch.paused;
        tokio::select! {
            msg = ch.ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => match ch.on_message(&b).await {
                    Ok(Some(reason)) => break Ok(End::Closed(reason)),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                },
                Some(Ok(Message::Close(_))) | None => break Ok(End::Closed(String::new())),
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    break Ok(End::Closed(String::new()));
                }
                Some(Err(e)) => break Err(transient("the ECS Exec data channel failed", e)),
            },
            n = read_some(&mut stdin, &mut buf), if input_open && stdin.is_some() => {
                let chunk = match n {
                    Ok(n) if n > 0 => buf.get(..n).unwrap_or_default().to_vec(),
                    _ => {
                        stdin = None;
                        vec![EOT]
                    }
                };
                if let Err(e) = ch.send_input(PayloadType::Output, chunk).await {
                    break Err(e);
                }
            }
            size = recv_resize(&mut resize), if input_open && resize.is_some() => {
                let Some(size) = size else {
                    resize = None;
                    continue;
                };
                let payload = json!({"cols": size.width, "rows": size.height}).to_string();
                if let Err(e) = ch.send_input(PayloadType::Size, payload.into_bytes()).await {
                    break Err(e);
                }
            }
            _ = tick.tick() => {
                if let Err(e) = ch.resend().await {
                    break Err(e);
                }
            }
            _ = ping.tick() => {
                let _ = ch.ws.send(Message::Ping(Vec::new().into())).await;
            }
        }
    };
    ch.out.finish().await;
    match end? {
        End::Gone => {
            tracing::debug!("exec client gone, terminating the ECS Exec session");
            let flag = TERMINATE_SESSION.to_be_bytes().to_vec();
            let _ = ch.send_input(PayloadType::Flag, flag).await;
            let _ = ch.ws.close().await;
            Ok(ExitStatus::Code(0))
        }
        End::Closed(reason) => {
            let _ = ch.ws.close().await;
            match ch.exit_code.or(ch.out.filter.code()) {
                Some(code) => Ok(ExitStatus::Code(code)),
                None => Err(ProviderError::transient(format!(
                    "the ECS Exec session ended without reporting the command's exit code{}: \
                     skylet runs the command under /bin/sh to learn it (ECS Exec reports none), \
                     so the image needs a /bin/sh",
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" (the agent said: {reason})")
                    }
                ))),
            }
        }
    }
}

impl<S> Channel<S>
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    /// Sends `payload` as the next input message and keeps it until
    /// acknowledged.
    async fn send_input(&mut self, payload_type: PayloadType, payload: Vec<u8>) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = AgentMessage::new(kind::INPUT, seq, 0, payload_type, payload).encode();
        self.ws
            .send(Message::binary(bytes.clone()))
            .await
            .map_err(|e| transient("could not send input to ECS Exec", e))?;
        self.unacked.push_back(Unacked {
            seq,
            bytes,
            sent: Instant::now(),
            resends: 0,
        });
        Ok(())
    }

    /// Sends again what went unacknowledged for [`RESEND_AFTER`].
    async fn resend(&mut self) -> Result<()> {
        for u in &mut self.unacked {
            if u.sent.elapsed() < RESEND_AFTER {
                continue;
            }
            if u.resends >= MAX_RESENDS {
                return Err(ProviderError::transient(format!(
                    "the ECS Exec agent did not acknowledge input message {} after {} attempts",
                    u.seq,
                    MAX_RESENDS + 1
                )));
            }
            u.resends += 1;
            u.sent = Instant::now();
            self.ws
                .send(Message::binary(u.bytes.clone()))
                .await
                .map_err(|e| transient("could not send input to ECS Exec", e))?;
        }
        Ok(())
    }

    async fn ack(&mut self, m: &AgentMessage) -> Result<()> {
        let payload = json!({
            "AcknowledgedMessageType": m.message_type,
            "AcknowledgedMessageId": m.message_id.hyphenated().to_string(),
            "AcknowledgedMessageSequenceNumber": m.sequence_number,
            "IsSequentialMessage": true,
        })
        .to_string();
        let bytes =
            AgentMessage::new(kind::ACK, 0, 3, PayloadType::None, payload.into_bytes()).encode();
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(|e| transient("could not acknowledge ECS Exec output", e))
    }

    /// Handles one message from the agent; `Some(reason)` when the channel
    /// closed.
    async fn on_message(&mut self, bytes: &[u8]) -> Result<Option<String>> {
        let m = match AgentMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                // not acknowledged: the agent sends it again
                tracing::debug!(error = %e, "dropping a damaged ECS Exec message");
                return Ok(None);
            }
        };
        match m.message_type.as_str() {
            kind::ACK => {
                if let Ok(a) = serde_json::from_slice::<Acknowledge>(&m.payload) {
                    self.unacked.retain(|u| u.seq != a.sequence_number);
                }
            }
            kind::CHANNEL_CLOSED => {
                let reason = serde_json::from_slice::<ChannelClosed>(&m.payload)
                    .map(|c| c.output)
                    .unwrap_or_default();
                return Ok(Some(reason));
            }
            kind::PAUSE_PUBLICATION => self.paused = true,
            kind::START_PUBLICATION => self.paused = false,
            kind::OUTPUT => {
                self.ack(&m).await?;
                if m.sequence_number < self.expected {
                    return Ok(None);
                }
                if m.sequence_number > self.expected {
                    self.early.insert(m.sequence_number, m);
                    return Ok(None);
                }
                self.expected += 1;
                self.handle(m).await?;
                while let Some(next) = self.early.remove(&self.expected) {
                    self.expected += 1;
                    self.handle(next).await?;
                }
            }
            other => tracing::debug!(message_type = other, "ignoring an ECS Exec message"),
        }
        Ok(None)
    }

    /// Handles an output message in sequence.
    async fn handle(&mut self, m: AgentMessage) -> Result<()> {
        match m.payload_kind() {
            Some(PayloadType::Output) => self.out.terminal(&m.payload).await,
            Some(PayloadType::StdErr | PayloadType::Error) => self.out.stderr(&m.payload).await,
            Some(PayloadType::ExitCode) => {
                let text = String::from_utf8_lossy(&m.payload);
                self.exit_code = text
                    .trim()
                    .strip_prefix("EXIT_CODE:")
                    .and_then(|c| c.trim().parse().ok());
            }
            Some(PayloadType::HandshakeRequest) => self.handshake(&m.payload).await?,
            Some(PayloadType::HandshakeComplete) => {
                if let Ok(c) = serde_json::from_slice::<HandshakeComplete>(&m.payload)
                    && !c.customer_message.is_empty()
                {
                    tracing::info!(message = %c.customer_message, "ECS Exec agent message");
                }
                self.ready = true;
            }
            _ => tracing::debug!(
                payload_type = m.payload_type,
                "ignoring an ECS Exec payload"
            ),
        }
        Ok(())
    }

    /// Answers the agent's handshake request.
    async fn handshake(&mut self, payload: &[u8]) -> Result<()> {
        let req: HandshakeRequest = serde_json::from_slice(payload)
            .map_err(|e| transient("invalid ECS Exec handshake request", e))?;
        tracing::debug!(agent = %req.agent_version, "ECS Exec handshake");
        let mut errors = Vec::new();
        let processed: Vec<serde_json::Value> = req
            .requested_client_actions
            .iter()
            .map(|a| match a.action_type.as_str() {
                "SessionType" => {
                    let session_type = a.action_parameters["SessionType"].as_str().unwrap_or("");
                    tracing::debug!(session_type, "ECS Exec session type");
                    json!({"ActionType": a.action_type, "ActionStatus": 1, "ActionResult": null, "Error": ""})
                }
                other => {
                    let error = format!(
                        "skylet does not support the session action {other} (KMS encryption of \
                         ECS Exec sessions): turn it off in the cluster's execute command configuration"
                    );
                    errors.push(error.clone());
                    json!({"ActionType": other, "ActionStatus": 3, "ActionResult": null, "Error": error})
                }
            })
            .collect();
        let response = json!({
            "ClientVersion": format!("skylet-{}", env!("CARGO_PKG_VERSION")),
            "ProcessedClientActions": processed,
            "Errors": errors,
        })
        .to_string();
        self.send_input(PayloadType::HandshakeResponse, response.into_bytes())
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures::channel::mpsc as fmpsc;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// One end of an in-memory WebSocket: the test plays the agent.
    struct Pipe {
        rx: fmpsc::UnboundedReceiver<Message>,
        tx: fmpsc::UnboundedSender<Message>,
    }

    impl futures::Stream for Pipe {
        type Item = std::result::Result<Message, tungstenite::Error>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.rx.poll_next_unpin(cx).map(|m| m.map(Ok))
        }
    }

    impl futures::Sink<Message> for Pipe {
        type Error = tungstenite::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), Self::Error> {
            self.tx
                .unbounded_send(m)
                .map_err(|_| tungstenite::Error::ConnectionClosed)
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn output(seq: i64, t: PayloadType, payload: &[u8]) -> Message {
        Message::binary(AgentMessage::new(kind::OUTPUT, seq, 0, t, payload.to_vec()).encode())
    }

    /// The next binary message from the client, decoded.
    async fn next(from: &mut fmpsc::UnboundedReceiver<Message>) -> AgentMessage {
        loop {
            match from.next().await.unwrap() {
                Message::Binary(b) => return AgentMessage::decode(&b).unwrap(),
                Message::Ping(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next input message, checking the acknowledgements on the way
    /// (their sequence numbers are pushed to `acked`).
    async fn next_input(
        from: &mut fmpsc::UnboundedReceiver<Message>,
        acked: &mut Vec<i64>,
    ) -> AgentMessage {
        loop {
            let m = next(from).await;
            if m.message_type == kind::ACK {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["AcknowledgedMessageType"], kind::OUTPUT);
                acked.push(v["AcknowledgedMessageSequenceNumber"].as_i64().unwrap());
                continue;
            }
            assert_eq!(m.message_type, kind::INPUT);
            return m;
        }
    }

    fn ack(m: &AgentMessage) -> Message {
        let payload = json!({
            "AcknowledgedMessageType": kind::INPUT,
            "AcknowledgedMessageId": m.message_id.to_string(),
            "AcknowledgedMessageSequenceNumber": m.sequence_number,
            "IsSequentialMessage": true,
        })
        .to_string();
        Message::binary(
            AgentMessage::new(kind::ACK, 0, 3, PayloadType::None, payload.into_bytes()).encode(),
        )
    }

    /// The agent's side, scripted: handshake, output out of order, a
    /// duplicate and a damaged message, an input left unacknowledged until
    /// it is sent again, the exit code, the end.
    #[tokio::test]
    async fn a_session_reorders_deduplicates_resends_and_ends_with_the_code() {
        let (to_client, rx) = fmpsc::unbounded();
        let (tx, mut from_client) = fmpsc::unbounded();
        let (mut stdin_w, stdin_r) = tokio::io::duplex(64);
        let (stdout_w, mut stdout_r) = tokio::io::duplex(1024);
        let streams = Streams {
            stdin: Some(Box::new(stdin_r)),
            stdout: Some(Box::new(stdout_w)),
            stderr: None,
            tty: false,
            resize: None,
        };
        let session = tokio::spawn(run(Pipe { rx, tx }, "the-token", streams));

        let Message::Text(open) = from_client.next().await.unwrap() else {
            panic!("the first message is text");
        };
        let open: serde_json::Value = serde_json::from_str(open.as_str()).unwrap();
        assert_eq!(open["TokenValue"], "the-token");
        assert_eq!(open["MessageSchemaVersion"], "1.0");

        let mut acked = Vec::new();
        let request = json!({"AgentVersion": "3", "RequestedClientActions": [
            {"ActionType": "SessionType", "ActionParameters": {"SessionType": "InteractiveCommands"}}
        ]});
        to_client
            .unbounded_send(output(
                0,
                PayloadType::HandshakeRequest,
                request.to_string().as_bytes(),
            ))
            .unwrap();
        let response = next_input(&mut from_client, &mut acked).await;
        assert_eq!(
            response.payload_kind(),
            Some(PayloadType::HandshakeResponse)
        );
        assert_eq!(response.sequence_number, 0);
        let v: serde_json::Value = serde_json::from_slice(&response.payload).unwrap();
        assert_eq!(v["ProcessedClientActions"][0]["ActionStatus"], 1);
        to_client.unbounded_send(ack(&response)).unwrap();
        to_client
            .unbounded_send(output(1, PayloadType::HandshakeComplete, b"{}"))
            .unwrap();

        // output 3 before 2, 2 twice, and a damaged copy of 4
        to_client
            .unbounded_send(output(3, PayloadType::Output, b"world\r\n"))
            .unwrap();
        to_client
            .unbounded_send(output(2, PayloadType::Output, b"hello "))
            .unwrap();
        to_client
            .unbounded_send(output(2, PayloadType::Output, b"hello "))
            .unwrap();
        let Message::Binary(b) = output(4, PayloadType::Output, b"lost") else {
            unreachable!()
        };
        let mut damaged = b.to_vec();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        to_client.unbounded_send(Message::binary(damaged)).unwrap();

        // input: sent again when not acknowledged
        stdin_w.write_all(b"hi").await.unwrap();
        let first = next_input(&mut from_client, &mut acked).await;
        assert_eq!(
            (first.sequence_number, first.payload.as_slice()),
            (1, &b"hi"[..])
        );
        let again = next_input(&mut from_client, &mut acked).await;
        assert_eq!(
            again.message_id, first.message_id,
            "the same message, resent"
        );
        to_client.unbounded_send(ack(&again)).unwrap();
        drop(stdin_w);
        let eot = next_input(&mut from_client, &mut acked).await;
        assert_eq!(
            (eot.sequence_number, eot.payload.as_slice()),
            (2, &[EOT][..])
        );
        to_client.unbounded_send(ack(&eot)).unwrap();

        to_client
            .unbounded_send(output(4, PayloadType::ExitCode, b"EXIT_CODE: 5"))
            .unwrap();
        let closed = json!({"MessageType": "channel_closed", "Output": "", "SchemaVersion": 1});
        to_client
            .unbounded_send(Message::binary(
                AgentMessage::new(
                    kind::CHANNEL_CLOSED,
                    0,
                    0,
                    PayloadType::None,
                    closed.to_string().into_bytes(),
                )
                .encode(),
            ))
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(status, ExitStatus::Code(5));
        let mut out = String::new();
        stdout_r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world\n", "in order, once, \\r\\n made \\n");
        while let Ok(m) = from_client.try_recv() {
            if let Message::Binary(b) = m
                && let Ok(m) = AgentMessage::decode(&b)
                && m.message_type == kind::ACK
            {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                acked.push(v["AcknowledgedMessageSequenceNumber"].as_i64().unwrap());
            }
        }
        acked.sort_unstable();
        acked.dedup();
        assert_eq!(acked, vec![0, 1, 2, 3, 4], "every output acknowledged");
    }
}
