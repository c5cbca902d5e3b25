//! `exec` and `attach`: one command session between a client and the
//! backend, over SPDY or WebSocket.
//!
//! # Design
//!
//! The backend is started *before* the connection is upgraded ([`start`]),
//! with in-memory pipes for its streams: the first poll of its future tells
//! whether it can run the command at all (no such container, unsupported),
//! which the handler turns into an HTTP status. After the upgrade, the
//! transport gives the session the client's streams ([`Client`]) and
//! [`run`] copies between them and the pipes:
//!
//! 1. client stdin → backend stdin (end-of-file when the client closes it:
//!    SPDY FIN, v5 close signal); resize JSON objects → `ExecIo::resize`;
//!    backend stdout/stderr → client, then end-of-stream (SPDY FIN).
//!    With a terminal, stdin waits for the client's first size (at most
//!    [`FIRST_SIZE_WAIT`]): client-go sends the initial size and the
//!    keystrokes from separate goroutines on separate streams, so without
//!    the wait a command typed at once may see a 0×0 terminal.
//! 2. When the backend returns, what it wrote is delivered first (bounded
//!    by [`DRAIN_TIMEOUT`]), then the status goes to the error stream.
//! 3. The transport is closed by its caller. If the client goes away
//!    first, the backend's future is dropped.
//!
//! # Error stream
//!
//! | protocol | success | exit code N ≠ 0 | backend error |
//! |---|---|---|---|
//! | v4, v5 (SPDY and WebSocket) | `{"metadata":{},"status":"Success"}` | Status `Failure`, reason `NonZeroExitCode`, cause `ExitCode` = N | Status `Failure`, reason `InternalError`, code 500 |
//! | v1–v3 | nothing | the message as plain text | the message as plain text |
//!
//! The exit-code message is the one containerd's streaming server gives,
//! `command terminated with non-zero exit code: error executing command
//! [sh -c exit 3], exit code 3`, so `kubectl exec` exits with N.

use std::{sync::Arc, time::Duration};

use futures::task::Poll;
use serde_json::json;
use skylet_provider::{
    ExecIo, ExitStatus, PodRef, Provider, ProviderError, Reader, TermSize, Writer,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream},
    sync::{mpsc, oneshot},
    task::JoinSet,
};

use super::{Kind, Options, websocket};
use crate::{metrics::timed, server::State};

/// Buffer of each pipe between the session and the backend.
pub(super) const PIPE: usize = 64 << 10;
/// How long the client may take to open the streams it asked for.
pub(super) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the backend's last output may take to reach the client after
/// the command ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Resize events waiting for the backend (then the resize stream waits).
const RESIZE_QUEUE: usize = 8;
/// Longest resize object accepted.
const MAX_RESIZE_JSON: usize = 4096;
/// How long stdin waits for a terminal's first size.
const FIRST_SIZE_WAIT: Duration = Duration::from_secs(2);

/// SPDY sub-protocols of exec/attach, most preferred first. v5 behaves as v4
/// over SPDY (its close signal exists only on WebSocket).
pub(super) const SPDY_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// WebSocket sub-protocols of exec/attach (`""`: the client named none).
pub(super) const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];

/// How the final status is written to the error stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatusFormat {
    /// A metav1.Status JSON object (v4 and later).
    Json,
    /// Plain text, nothing on success (v1 to v3).
    Text,
}

/// The status format and whether a resize stream is expected, for a SPDY
/// sub-protocol.
pub(super) fn spdy_behaviour(protocol: &str) -> (StatusFormat, bool) {
    match protocol {
        "v5.channel.k8s.io" | "v4.channel.k8s.io" => (StatusFormat::Json, true),
        "v3.channel.k8s.io" => (StatusFormat::Text, true),
        _ => (StatusFormat::Text, false),
    }
}

/// The framing and status format of a WebSocket sub-protocol.
pub(super) fn ws_behaviour(protocol: &str) -> (websocket::Framing, StatusFormat) {
    let base64 = protocol.contains("base64");
    let close_signal = protocol == "v5.channel.k8s.io";
    let format = if protocol.starts_with("v4.") || close_signal {
        StatusFormat::Json
    } else {
        StatusFormat::Text
    };
    (
        websocket::Framing {
            base64,
            close_signal,
        },
        format,
    )
}

/// How the backend call ended.
type Outcome = Result<ExitStatus, ProviderError>;

/// The session's ends of the pipes to the backend.
pub(super) struct Pipes {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
}

fn pipes(opts: &Options) -> (ExecIo, Pipes) {
    fn pipe() -> (DuplexStream, DuplexStream) {
        tokio::io::duplex(PIPE)
    }
    let (stdin, stdin_backend) = if opts.stdin {
        split_some(pipe())
    } else {
        (None, None)
    };
    let (stdout_backend, stdout) = if opts.stdout {
        split_some(pipe())
    } else {
        (None, None)
    };
    let (stderr_backend, stderr) = if opts.stderr {
        split_some(pipe())
    } else {
        (None, None)
    };
    let (resize, resize_rx) = if opts.tty {
        let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let io = ExecIo {
        stdin: stdin_backend.map(|r| Box::new(r) as Reader),
        stdout: stdout_backend.map(|w| Box::new(w) as Writer),
        stderr: stderr_backend.map(|w| Box::new(w) as Writer),
        tty: opts.tty,
        resize: resize_rx,
    };
    (
        io,
        Pipes {
            stdin,
            stdout,
            stderr,
            resize,
        },
    )
}

fn split_some<A, B>((a, b): (A, B)) -> (Option<A>, Option<B>) {
    (Some(a), Some(b))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A backend call that got past its first poll.
pub(super) struct Started {
    pub(super) pipes: Pipes,
    done: oneshot::Receiver<Outcome>,
    _task: AbortOnDrop,
}

/// Starts the backend's exec or attach and polls it once.
///
/// # Errors
/// What the backend returned if it failed on its first poll.
pub(super) async fn start<P: Provider>(
    state: &Arc<State<P>>,
    kind: Kind,
    pod: PodRef,
    container: String,
    opts: &Options,
) -> Result<Started, ProviderError> {
    let (io, pipes) = pipes(opts);
    let (first_tx, first_rx) = oneshot::channel::<Result<(), ProviderError>>();
    let (done_tx, done) = oneshot::channel();
    let state = Arc::clone(state);
    let command = opts.command.clone();
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let provider = &state.provider;
        let call: futures::future::BoxFuture<'_, Outcome> = match kind {
            Kind::Exec => Box::pin(timed(
                &state.metrics,
                "exec",
                provider.exec(&pod, &container, command, io),
            )),
            Kind::Attach => Box::pin(timed(
                &state.metrics,
                "attach",
                provider.attach(&pod, &container, io),
            )),
        };
        let mut call = call;
        let outcome = match futures::poll!(call.as_mut()) {
            Poll::Ready(Err(e)) => {
                let _ = first_tx.send(Err(e));
                return;
            }
            Poll::Ready(Ok(status)) => {
                let _ = first_tx.send(Ok(()));
                Ok(status)
            }
            Poll::Pending => {
                let _ = first_tx.send(Ok(()));
                call.await
            }
        };
        let _ = done_tx.send(outcome);
    }));
    let task = AbortOnDrop(task.abort_handle());
    match first_rx.await {
        Ok(Ok(())) => Ok(Started {
            pipes,
            done,
            _task: task,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProviderError::transient(
            "the backend call ended without a result",
        )),
    }
}

/// A boxed reader of a client stream.
pub(super) type ClientRead = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed writer of a client stream.
pub(super) type ClientWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The client's streams, as the transport provides them.
pub(super) struct Client {
    /// Stdin, when the client sends it.
    pub(super) stdin: Option<ClientRead>,
    pub(super) stdout: Option<ClientWrite>,
    pub(super) stderr: Option<ClientWrite>,
    /// Resize JSON objects.
    pub(super) resize: Option<ClientRead>,
    /// Where the final status goes.
    pub(super) error: ClientWrite,
    pub(super) format: StatusFormat,
}

/// Runs a session to its end (see the module docs); `closed` resolves when
/// the client's connection is gone.
pub(super) async fn run(
    started: Started,
    client: Client,
    command: &[String],
    closed: impl Future<Output = ()>,
) -> Option<Outcome> {
    let Started {
        mut pipes,
        done,
        _task,
    } = started;
    let mut inputs = JoinSet::new();
    // Fires when the first size reached the backend, or the resize stream
    // ended; dropped unfired when there is no terminal.
    let (sized_tx, sized) = oneshot::channel();
    if let (Some(from), Some(tx)) = (client.resize, pipes.resize.take()) {
        inputs.spawn(resizes(from, tx, sized_tx));
    } else {
        drop(sized_tx);
    }
    if let (Some(mut from), Some(mut to)) = (client.stdin, pipes.stdin.take()) {
        inputs.spawn(async move {
            let _ = tokio::time::timeout(FIRST_SIZE_WAIT, sized).await;
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        });
    }
    let mut outputs = JoinSet::new();
    for (pipe, sink) in [
        (pipes.stdout.take(), client.stdout),
        (pipes.stderr.take(), client.stderr),
    ] {
        match (pipe, sink) {
            (Some(mut from), Some(mut to)) => {
                outputs.spawn(async move {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                });
            }
            (None, Some(mut to)) => {
                let _ = to.shutdown().await;
            }
            _ => {}
        }
    }
    tokio::pin!(closed);
    let outcome = tokio::select! {
        r = done => r.unwrap_or_else(|_| Err(ProviderError::transient("the backend call ended without a result"))),
        () = &mut closed => {
            tracing::debug!("client went away, stopping the command");
            return None;
        }
    };
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while outputs.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("output not delivered in time, dropping the rest");
        outputs.abort_all();
    }
    let mut error = client.error;
    if let Some(bytes) = status(client.format, &outcome, command) {
        let _ = error.write_all(&bytes).await;
    }
    let _ = error.shutdown().await;
    inputs.abort_all();
    Some(outcome)
}

/// Decodes successive `{"Width":W,"Height":H}` objects and passes them on;
/// ends at end-of-file, on malformed input, or when nobody listens. `sized`
/// fires once the first size is passed on (or is dropped when it ends).
async fn resizes(mut from: ClientRead, tx: mpsc::Sender<TermSize>, sized: oneshot::Sender<()>) {
    let mut sized = Some(sized);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut consumed = 0;
        let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    consumed = stream.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                    if let Some(sized) = sized.take() {
                        let _ = sized.send(());
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "malformed resize event, ignoring further resizes");
                    return;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if buf.len() > MAX_RESIZE_JSON {
            tracing::debug!("resize event too large, ignoring further resizes");
            return;
        }
    }
}

/// What to write to the error stream for `outcome`.
pub(super) fn status(
    format: StatusFormat,
    outcome: &Outcome,
    command: &[String],
) -> Option<Vec<u8>> {
    let failure = match outcome {
        Ok(ExitStatus::Code(0)) => None,
        Ok(ExitStatus::Code(code)) => {
            let message = format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            );
            Some(json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }))
        }
        Err(e) => Some(json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {e}"),
            "reason": "InternalError",
            "code": 500,
        })),
    };
    match (format, failure) {
        (StatusFormat::Json, None) => Some(br#"{"metadata":{},"status":"Success"}"#.to_vec()),
        (StatusFormat::Json, Some(v)) => serde_json::to_vec(&v).ok(),
        (StatusFormat::Text, None) => None,
        (StatusFormat::Text, Some(v)) => v["message"].as_str().map(|m| m.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Vec<String> {
        ["sh", "-c", "exit 3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn v4_status_carries_the_exit_code_as_kubectl_reads_it() {
        let ok = status(StatusFormat::Json, &Ok(ExitStatus::Code(0)), &cmd()).unwrap();
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
        let failed: serde_json::Value = serde_json::from_slice(
            &status(StatusFormat::Json, &Ok(ExitStatus::Code(3)), &cmd()).unwrap(),
        )
        .unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let internal: serde_json::Value = serde_json::from_slice(
            &status(
                StatusFormat::Json,
                &Err(ProviderError::transient("boom")),
                &cmd(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (internal["reason"].as_str(), internal["code"].as_i64()),
            (Some("InternalError"), Some(500))
        );
    }

    #[test]
    fn pre_v4_status_is_text_and_silent_on_success() {
        assert_eq!(
            status(StatusFormat::Text, &Ok(ExitStatus::Code(0)), &cmd()),
            None
        );
        let text = status(StatusFormat::Text, &Ok(ExitStatus::Code(2)), &cmd()).unwrap();
        assert!(String::from_utf8(text).unwrap().ends_with("exit code 2"));
    }

    #[test]
    fn protocols_map_to_their_behaviour() {
        assert_eq!(
            spdy_behaviour("v5.channel.k8s.io"),
            (StatusFormat::Json, true)
        );
        assert_eq!(
            spdy_behaviour("v3.channel.k8s.io"),
            (StatusFormat::Text, true)
        );
        assert_eq!(
            spdy_behaviour("v2.channel.k8s.io"),
            (StatusFormat::Text, false)
        );
        let (f, s) = ws_behaviour("v4.base64.channel.k8s.io");
        assert!(f.base64 && !f.close_signal && s == StatusFormat::Json);
        let (f, s) = ws_behaviour("v5.channel.k8s.io");
        assert!(!f.base64 && f.close_signal && s == StatusFormat::Json);
        let (f, s) = ws_behaviour("");
        assert!(!f.base64 && !f.close_signal && s == StatusFormat::Text);
    }

    #[tokio::test]
    async fn resize_objects_are_decoded_across_reads() {
        let (mut w, r) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(8);
        let (sized_tx, mut sized) = oneshot::channel();
        let task = tokio::spawn(resizes(Box::new(r), tx, sized_tx));
        w.write_all(br#"{"Width":8"#).await.unwrap();
        tokio::task::yield_now().await;
        assert!(sized.try_recv().is_err(), "no size yet");
        w.write_all(br#"0,"Height":24}{"Width":1"#).await.unwrap();
        sized.await.expect("the first size is signalled");
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        w.write_all(b"20,\"Height\":40}\n").await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 120,
                height: 40
            })
        );
        w.write_all(b"garbage").await.unwrap();
        task.await.unwrap();
        assert_eq!(rx.recv().await, None);
    }

    /// The client types before its first size arrives (separate streams):
    /// the backend still sees the size before the keystrokes.
    #[tokio::test]
    async fn a_terminal_gets_its_first_size_before_stdin() {
        let opts = Options {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
            command: vec!["sh".to_owned()],
        };
        let (io, pipes) = pipes(&opts);
        let (done_tx, done) = oneshot::channel();
        let backend = tokio::spawn(async move {
            // All of it: its stdout ends with it.
            let mut io = io;
            let mut stdin = io.stdin.take().unwrap();
            let mut resize = io.resize.take().unwrap();
            let mut byte = [0u8; 1];
            stdin.read_exact(&mut byte).await.unwrap();
            let size = resize.try_recv().ok();
            let _ = done_tx.send(Ok(ExitStatus::Code(0)));
            size
        });
        let idle = tokio::spawn(async {});
        let started = Started {
            pipes,
            done,
            _task: AbortOnDrop(idle.abort_handle()),
        };
        let (mut keys, stdin) = tokio::io::duplex(64);
        let (mut sizes, resize) = tokio::io::duplex(64);
        keys.write_all(b"stty size\r").await.unwrap();
        let (error, _status) = tokio::io::duplex(1024);
        let (stdout, _screen) = tokio::io::duplex(1024);
        let client = Client {
            stdin: Some(Box::new(stdin)),
            stdout: Some(Box::new(stdout)),
            stderr: None,
            resize: Some(Box::new(resize)),
            error: Box::new(error),
            format: StatusFormat::Json,
        };
        let late_size = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sizes
                .write_all(br#"{"Width":80,"Height":24}"#)
                .await
                .unwrap();
            std::future::pending::<()>().await;
        };
        let session = run(started, client, &opts.command, std::future::pending());
        tokio::select! {
            outcome = session => assert!(matches!(outcome, Some(Ok(ExitStatus::Code(0))))),
            () = late_size => unreachable!(),
        }
        assert_eq!(
            backend.await.unwrap(),
            Some(TermSize {
                width: 80,
                height: 24
            }),
            "the size came first"
        );
    }
}
