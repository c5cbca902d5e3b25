//! An emulator of the AWS Session Manager data channel, the agent's side of
//! an ECS Exec session, for skylet's tests: moto answers ExecuteCommand
//! with a session whose stream URL points here (hack/moto-server.py), and
//! skylet's aws-ecs backend speaks the channel to it as it would to
//! `ssmmessages.<region>.amazonaws.com`.
//!
//! It speaks the protocol as the open-source session-manager-plugin
//! expects it, decoding and encoding the binary agent messages itself (not
//! with skylet's code, so that a mistake on one side shows):
//!
//! 1. The first WebSocket message must be the text `OpenDataChannelInput`
//!    (`MessageSchemaVersion` "1.0", `RequestId`, `TokenValue`, `ClientId`,
//!    `ClientVersion`); the token is moto's (base64 JSON naming the session,
//!    task, container, command and environment) and its session must be the
//!    one in the URL path (`/v1/data-channel/<sessionId>`).
//! 2. Handshake: a `HandshakeRequest` (session type `InteractiveCommands`),
//!    the client's `HandshakeResponse` (every action must succeed), then
//!    `HandshakeComplete`.
//! 3. The command runs as the agent runs interactive commands, `sh -c
//!    COMMAND` in a terminal, in the toy shell of `skylet-toysh` with the
//!    container's environment; the emulator's own commands are `stty size`
//!    and `hostname` (the task id). As a terminal does, output ends lines
//!    with `\r\n`, stderr is merged into it, input is echoed, Enter (`\r`
//!    or `\n`) ends a line, Ctrl-C interrupts and Ctrl-D at the start of a
//!    line is end of input.
//! 4. Every input message is acknowledged, and handled in sequence order;
//!    every output message must be acknowledged by the client, with its id
//!    and sequence number. With [`Options::reorder`], output messages go
//!    out in swapped pairs, so the client must put them back in order.
//!    Terminal sizes (payload type 3) are recorded; the `TerminateSession`
//!    flag ends the session.
//! 5. When the command ends: `channel_closed`, then the socket closes. No
//!    exit code is sent: interactive sessions of the real agent send none.
//!
//! Anything that breaks the protocol is recorded in [`Stats::errors`].

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use ring::digest;
use serde_json::json;
use skylet_toysh::{Input, Sandbox, Shell};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request, Response},
    },
};

/// What the emulator does beyond the protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Send output messages in swapped pairs.
    pub reorder: bool,
}

/// What the emulator saw, for tests.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Sessions opened (a valid open message).
    pub sessions: u64,
    /// Commands run, as ExecuteCommand gave them.
    pub commands: Vec<String>,
    /// Terminal sizes received, `(cols, rows)`.
    pub sizes: Vec<(u32, u32)>,
    /// Input messages received (duplicates included).
    pub input_messages: u64,
    /// Acknowledgements of output received.
    pub acks: u64,
    /// Output messages sent in swapped order.
    pub reordered: u64,
    /// Output messages never acknowledged when a session ended.
    pub unacknowledged: u64,
    /// Protocol violations.
    pub errors: Vec<String>,
}

struct Shared {
    options: Options,
    stats: Mutex<Stats>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, e: String) {
        tracing::warn!(error = %e, "data channel protocol error");
        self.stats().errors.push(e);
    }
}

/// A running emulator.
pub struct Emulator {
    url: String,
    shared: Arc<Shared>,
}

impl Emulator {
    /// Starts on a free loopback port, on the current runtime.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(options: Options) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (url, shared) = Self::parts(listener.local_addr()?, options);
        tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(Self { url, shared })
    }

    /// Starts on a free loopback port, on a thread of its own that lives
    /// as long as the process (for a harness shared by many tests, each on
    /// its own runtime).
    ///
    /// # Errors
    /// When no port can be bound or no runtime built.
    pub fn start_in_thread(options: Options) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let (url, shared) = Self::parts(std_listener.local_addr()?, options);
        let s = Arc::clone(&shared);
        // the runtime is built on the thread: the caller may be in one
        std::thread::Builder::new()
            .name("ssm-emulator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        s.error(format!("no runtime for the emulator: {e}"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(listener, s).await,
                        Err(e) => s.error(format!("cannot listen: {e}")),
                    }
                });
            })?;
        Ok(Self { url, shared })
    }

    fn parts(addr: std::net::SocketAddr, options: Options) -> (String, Arc<Shared>) {
        let url = format!("ws://{addr}");
        tracing::info!(%url, "Session Manager data channel emulator listening");
        let shared = Arc::new(Shared {
            options,
            stats: Mutex::default(),
        });
        (url, shared)
    }

    /// `ws://127.0.0.1:PORT`, the base of the stream URLs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What it saw so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session(stream, Arc::clone(&shared)));
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The JSON in moto's token.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    session_id: String,
    task: String,
    command: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Open {
    message_schema_version: String,
    request_id: String,
    token_value: String,
    client_id: String,
    #[serde(default)]
    client_version: String,
}

type Ws = WebSocketStream<TcpStream>;

// tungstenite's handshake callback returns its (large) error response type
#[allow(clippy::result_large_err)]
async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let mut path = String::new();
    let accepted = tokio_tungstenite::accept_hdr_async(
        stream,
        |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            path = req.uri().path().to_owned();
            Ok(resp)
        },
    )
    .await;
    let mut ws = match accepted {
        Ok(ws) => ws,
        Err(e) => {
            shared.error(format!("not a WebSocket handshake: {e}"));
            return;
        }
    };
    let Some(token) = open(&mut ws, &path, &shared).await else {
        let _ = ws.close(None).await;
        return;
    };
    {
        let mut st = shared.stats();
        st.sessions += 1;
        st.commands.push(token.command.clone());
    }
    let host = token.task.rsplit('/').next().unwrap_or_default().to_owned();
    let mut agent = Agent {
        ws,
        shared: Arc::clone(&shared),
        out_seq: 0,
        in_expected: 0,
        early: BTreeMap::new(),
        unacked: HashMap::new(),
        held: None,
        line: Vec::new(),
        lines: VecDeque::new(),
        eof: false,
        broken: false,
        handshake: None,
        size: (0, 0),
        host,
    };
    if !agent.handshake().await {
        let _ = agent.ws.close(None).await;
        return;
    }
    let sandbox = Sandbox {
        env: token.env.into_iter().collect(),
        files: BTreeMap::new(),
    };
    let argv = vec!["sh".to_owned(), "-c".to_owned(), token.command];
    Shell::new(&mut agent, &sandbox).run(&argv).await;
    agent.close(&token.session_id).await;
}

/// Reads and checks the open message; the token it carries.
async fn open(ws: &mut Ws, path: &str, shared: &Shared) -> Option<Token> {
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    let Ok(Some(Ok(Message::Text(text)))) = first else {
        shared.error("the first message is not the text OpenDataChannelInput".into());
        return None;
    };
    let open: Open = match serde_json::from_str(text.as_str()) {
        Ok(o) => o,
        Err(e) => {
            shared.error(format!("invalid OpenDataChannelInput: {e}"));
            return None;
        }
    };
    if open.message_schema_version != "1.0"
        || open.request_id.is_empty()
        || open.client_id.is_empty()
    {
        shared.error(format!(
            "OpenDataChannelInput: schema {:?}, request id {:?}, client id {:?}",
            open.message_schema_version, open.request_id, open.client_id
        ));
        return None;
    }
    tracing::debug!(client = %open.client_version, "data channel opened");
    let token: Option<Token> = base64::engine::general_purpose::STANDARD
        .decode(open.token_value.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(token) = token else {
        shared.error("the token is not one moto issued".into());
        return None;
    };
    if path != format!("/v1/data-channel/{}", token.session_id) {
        shared.error(format!(
            "the token is for session {} but the URL path is {path}",
            token.session_id
        ));
        return None;
    }
    Some(token)
}

// --- agent messages, encoded and decoded here independently of skylet ---

const HL: u32 = 116;
const OUTPUT: &str = "output_stream_data";
const INPUT: &str = "input_stream_data";
const ACK: &str = "acknowledge";
const CLOSED: &str = "channel_closed";

struct Msg {
    kind: String,
    seq: i64,
    /// The id as the client formats it for acknowledgements.
    id: String,
    payload_type: u32,
    payload: Vec<u8>,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The id's string: the message holds the UUID's low 8 bytes, then its high 8.
fn id_string(least: u64, most: u64) -> String {
    uuid::Uuid::from_u64_pair(most, least)
        .hyphenated()
        .to_string()
}

fn decode(b: &[u8]) -> Result<Msg, String> {
    if b.len() < 120 {
        return Err(format!("message of {} bytes", b.len()));
    }
    if be_u32(b, 0) != HL {
        return Err(format!("header length {}", be_u32(b, 0)));
    }
    let kind = String::from_utf8_lossy(&b[4..36]).trim().to_owned();
    if be_u32(b, 36) != 1 {
        return Err(format!("schema version {}", be_u32(b, 36)));
    }
    if be_u64(b, 40) == 0 {
        return Err("no created date".into());
    }
    let len = be_u32(b, 116) as usize;
    let payload = &b[120..];
    if payload.len() != len {
        return Err(format!("payload length {len} for {} bytes", payload.len()));
    }
    if digest::digest(&digest::SHA256, payload).as_ref() != &b[80..112] {
        return Err(format!("payload digest of a {kind} message does not match"));
    }
    Ok(Msg {
        kind,
        seq: i64::from_be_bytes(be_u64(b, 48).to_be_bytes()),
        id: id_string(be_u64(b, 64), be_u64(b, 72)),
        payload_type: be_u32(b, 112),
        payload: payload.to_vec(),
    })
}

/// Encodes a message; returns it and its id string.
fn encode(
    kind: &str,
    seq: i64,
    flags: u64,
    payload_type: u32,
    payload: &[u8],
) -> (Vec<u8>, String) {
    let (least, most) = (fastrand::u64(..), fastrand::u64(..));
    let mut b = Vec::with_capacity(120 + payload.len());
    b.extend_from_slice(&HL.to_be_bytes());
    let mut k = [b' '; 32];
    k[..kind.len()].copy_from_slice(kind.as_bytes());
    b.extend_from_slice(&k);
    b.extend_from_slice(&1u32.to_be_bytes());
    let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(1);
    b.extend_from_slice(&now.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&least.to_be_bytes());
    b.extend_from_slice(&most.to_be_bytes());
    b.extend_from_slice(digest::digest(&digest::SHA256, payload).as_ref());
    b.extend_from_slice(&payload_type.to_be_bytes());
    b.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    b.extend_from_slice(payload);
    (b, id_string(least, most))
}

/// The agent's side of one session.
struct Agent {
    ws: Ws,
    shared: Arc<Shared>,
    out_seq: i64,
    in_expected: i64,
    /// Input that came early: payload type and payload by sequence number.
    early: BTreeMap<i64, (u32, Vec<u8>)>,
    /// Output not acknowledged yet: sequence number by id.
    unacked: HashMap<String, i64>,
    /// An output message held back to be sent after the next one.
    held: Option<Vec<u8>>,
    /// The line being typed.
    line: Vec<u8>,
    lines: VecDeque<Input>,
    eof: bool,
    broken: bool,
    handshake: Option<serde_json::Value>,
    /// `(cols, rows)`.
    size: (u32, u32),
    host: String,
}

impl Agent {
    async fn send(&mut self, bytes: Vec<u8>) {
        if self.broken {
            return;
        }
        if self.ws.send(Message::binary(bytes)).await.is_err() {
            self.broken = true;
        }
    }

    /// Sends an output message of `payload_type`.
    async fn output(&mut self, payload_type: u32, payload: &[u8]) {
        let seq = self.out_seq;
        self.out_seq += 1;
        let (bytes, id) = encode(OUTPUT, seq, 0, payload_type, payload);
        self.unacked.insert(id, seq);
        if self.shared.options.reorder && payload_type == 1 {
            match self.held.take() {
                None => {
                    self.held = Some(bytes);
                    return;
                }
                Some(held) => {
                    self.send(bytes).await;
                    self.send(held).await;
                    self.shared.stats().reordered += 1;
                    return;
                }
            }
        }
        self.flush().await;
        self.send(bytes).await;
    }

    async fn flush(&mut self) {
        if let Some(held) = self.held.take() {
            self.send(held).await;
        }
    }

    /// Terminal output: `\n` becomes `\r\n`.
    async fn terminal(&mut self, text: &[u8]) {
        let mut out = Vec::with_capacity(text.len() + 8);
        for b in text {
            if *b == b'\n' && out.last() != Some(&b'\r') {
                out.push(b'\r');
            }
            out.push(*b);
        }
        self.output(1, &out).await;
    }

    /// Handles the next message from the client; false when the socket ended.
    async fn receive(&mut self) -> bool {
        let msg = match self.ws.next().await {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return true,
            Some(Ok(Message::Text(t))) => {
                self.shared.error(format!(
                    "a text message after the open message: {}",
                    t.as_str()
                ));
                return true;
            }
            _ => {
                self.broken = true;
                self.eof = true;
                return false;
            }
        };
        let m = match decode(&msg) {
            Ok(m) => m,
            Err(e) => {
                self.shared.error(e);
                return true;
            }
        };
        match m.kind.as_str() {
            ACK => self.acknowledged(&m),
            INPUT => {
                self.shared.stats().input_messages += 1;
                let ack = json!({
                    "AcknowledgedMessageType": INPUT,
                    "AcknowledgedMessageId": m.id,
                    "AcknowledgedMessageSequenceNumber": m.seq,
                    "IsSequentialMessage": true,
                })
                .to_string();
                let (bytes, _) = encode(ACK, 0, 3, 0, ack.as_bytes());
                self.send(bytes).await;
                if m.seq < self.in_expected {
                    return true;
                }
                self.early.insert(m.seq, (m.payload_type, m.payload));
                while let Some((t, p)) = self.early.remove(&self.in_expected) {
                    self.in_expected += 1;
                    self.input(t, &p).await;
                }
            }
            other => self
                .shared
                .error(format!("unexpected message type {other:?}")),
        }
        true
    }

    fn acknowledged(&mut self, m: &Msg) {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let id = v["AcknowledgedMessageId"].as_str().unwrap_or_default();
        let seq = v["AcknowledgedMessageSequenceNumber"].as_i64();
        match self.unacked.get(id) {
            Some(s) if Some(*s) == seq && v["AcknowledgedMessageType"] == OUTPUT => {
                self.unacked.remove(id);
                self.shared.stats().acks += 1;
            }
            // acknowledged again (a duplicate)
            None if seq.is_some_and(|s| s < self.out_seq) => {}
            _ => self
                .shared
                .error(format!("acknowledgement of an unknown message: {v}")),
        }
    }

    /// Input in sequence.
    async fn input(&mut self, payload_type: u32, payload: &[u8]) {
        match payload_type {
            1 => {
                let mut echo = Vec::new();
                for b in payload {
                    match *b {
                        0x04 if self.line.is_empty() => {
                            self.lines.push_back(Input::Eof);
                        }
                        0x03 => {
                            echo.extend_from_slice(b"^C\r\n");
                            self.line.clear();
                            self.lines.push_back(Input::Interrupt);
                        }
                        b'\r' | b'\n' => {
                            echo.extend_from_slice(b"\r\n");
                            let line = String::from_utf8_lossy(&self.line).into_owned();
                            self.line.clear();
                            self.lines.push_back(Input::Line(line));
                        }
                        0x7f if !self.line.is_empty() => {
                            self.line.pop();
                            echo.extend_from_slice(b"\x08 \x08");
                        }
                        c => {
                            self.line.push(c);
                            echo.push(c);
                        }
                    }
                }
                if !echo.is_empty() {
                    self.flush().await;
                    self.output(1, &echo).await;
                }
            }
            3 => match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(v) => {
                    let cols = u32::try_from(v["cols"].as_u64().unwrap_or(0)).unwrap_or(0);
                    let rows = u32::try_from(v["rows"].as_u64().unwrap_or(0)).unwrap_or(0);
                    self.size = (cols, rows);
                    self.shared.stats().sizes.push((cols, rows));
                }
                Err(e) => self.shared.error(format!("invalid size payload: {e}")),
            },
            6 => self.handshake = serde_json::from_slice(payload).ok(),
            10 => {
                if payload == 2u32.to_be_bytes() {
                    tracing::debug!("TerminateSession");
                    self.lines.push_back(Input::Eof);
                    self.eof = true;
                }
            }
            other => self
                .shared
                .error(format!("unexpected input payload type {other}")),
        }
    }

    /// The handshake; false when it failed.
    async fn handshake(&mut self) -> bool {
        let request = json!({
            "AgentVersion": "3.3.1802.0",
            "RequestedClientActions": [{
                "ActionType": "SessionType",
                "ActionParameters": {"SessionType": "InteractiveCommands", "Properties": null},
            }],
        })
        .to_string();
        self.output(5, request.as_bytes()).await;
        let wait = tokio::time::timeout(Duration::from_secs(10), async {
            while self.handshake.is_none() {
                if !self.receive().await {
                    return;
                }
            }
        });
        let _ = wait.await;
        let Some(response) = self.handshake.take() else {
            self.shared.error("no HandshakeResponse".into());
            return false;
        };
        let ok = response["ProcessedClientActions"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["ActionStatus"] == 1));
        if !ok {
            self.shared
                .error(format!("the client refused the handshake: {response}"));
            return false;
        }
        let complete =
            json!({"HandshakeTimeToComplete": 1_000_000, "CustomerMessage": ""}).to_string();
        self.output(7, complete.as_bytes()).await;
        true
    }

    /// Ends the session: waits a moment for the last acknowledgements, then
    /// `channel_closed` and the close frame.
    async fn close(&mut self, session_id: &str) {
        self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while !self.unacked.is_empty() && !self.broken {
                if !self.receive().await {
                    break;
                }
            }
        })
        .await;
        let left = self.unacked.len() as u64;
        self.shared.stats().unacknowledged += left;
        let closed = json!({
            "MessageId": uuid::Uuid::from_u64_pair(fastrand::u64(..), fastrand::u64(..)).to_string(),
            "CreatedDate": jiff::Timestamp::now().to_string(),
            "DestinationId": self.host,
            "SessionId": session_id,
            "MessageType": CLOSED,
            "SchemaVersion": 1,
            "Output": "",
        })
        .to_string();
        let (bytes, _) = encode(CLOSED, 0, 0, 0, closed.as_bytes());
        self.send(bytes).await;
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

impl skylet_toysh::Session for Agent {
    async fn out(&mut self, bytes: &[u8]) {
        self.terminal(bytes).await;
    }

    async fn err(&mut self, text: &str) {
        self.terminal(text.as_bytes()).await;
    }

    async fn read_line(&mut self) -> Input {
        loop {
            if let Some(input) = self.lines.pop_front() {
                return input;
            }
            if self.eof {
                return Input::Eof;
            }
            self.flush().await;
            if !self.receive().await {
                return Input::Eof;
            }
        }
    }

    async fn cat(&mut self) -> i32 {
        loop {
            match self.read_line().await {
                Input::Line(l) => {
                    let text = format!("{l}\n");
                    self.terminal(text.as_bytes()).await;
                }
                Input::Eof => return 0,
                Input::Interrupt => return 130,
            }
        }
    }

    fn broken(&self) -> bool {
        self.broken
    }

    fn interactive(&self) -> bool {
        true
    }

    async fn command(&mut self, name: &str, args: &[String]) -> Option<i32> {
        let text = match (name, args) {
            ("stty", [a]) if a == "size" => format!("{} {}\n", self.size.1, self.size.0),
            ("hostname", []) => format!("{}\n", self.host),
            _ => return None,
        };
        self.terminal(text.as_bytes()).await;
        Some(0)
    }
}
