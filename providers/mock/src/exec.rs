//! `exec`, `attach` and `port-forward` in the simulated backend.
//!
//! # exec
//!
//! A command runs in the toy shell of `skylet-toysh` (`echo`, `cat`, `env`,
//! `printenv`, `sleep`, `exit`, `exec`, `true`, `false`, `sh -c SCRIPT`,
//! `sh`; see `skylet_toysh::exec`), with the container's resolved
//! environment and volume files, plus two commands of the mock's own:
//!
//! | command | effect |
//! |---|---|
//! | `stderr WORDS` | prints WORDS to stderr (to test that stream) |
//! | `stty size` | prints `ROWS COLS` of the terminal, from the latest resize |
//!
//! `cat` copies stdin until end-of-file (with a terminal: line by line until
//! Ctrl-D); `sh` with a terminal prompts `$ ` and runs each line typed
//! (echoing input, with backspace, Ctrl-C and Ctrl-D). Anything else prints
//! `sh: CMD: not found` to stderr and exits 127. With a terminal, output
//! lines end in `\r\n` and stderr is merged into stdout, as on a real pty.
//! Deleting the pod ends a running command with code 137.
//!
//! # attach
//!
//! Attaching follows the container's log: every line the container logs from
//! then on goes to stdout. Each line read from stdin is written into the
//! container's log (so it shows up in the attached output and in
//! `kubectl logs`). The session ends when the container ends, when the pod
//! is deleted, when stdin reaches end-of-file (after the lines written so
//! far are delivered), or when the client detaches.
//!
//! # port-forward
//!
//! Every port of a running pod echoes back the bytes it receives, over a
//! real TCP connection on 127.0.0.1 served by a task of its own, except port
//! [`REFUSED_PORT`], which refuses connections (to test error reporting).

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use skylet_provider::{
    AttachIo, ExecIo, ExitStatus, LogOptions, PodRef, PortStream, ProviderError, Result,
};
use skylet_toysh::{Input, Sandbox, Shell};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};

use crate::{Inner, logs::LogBuffer, pod::CState, term::Term};

/// The port that refuses port-forwarded connections.
pub const REFUSED_PORT: u16 = 1;

/// Exit code of a command ended because its pod was deleted (SIGKILL).
const KILLED: i32 = 137;

/// A running container of a pod, as exec and attach need it.
struct Target {
    sandbox: Arc<Sandbox>,
    logs: Arc<LogBuffer>,
    stop: skylet_provider::CancellationToken,
}

/// Finds a running container, or says why there is none.
fn target(inner: &Inner, pod: &PodRef, container: &str) -> Result<Target> {
    let pods = inner.lock();
    let p = pods.get(&pod.uid).ok_or_else(|| {
        ProviderError::NotFound(format!(
            "pod {}/{} is not running in the mock backend",
            pod.namespace, pod.name
        ))
    })?;
    let c = p.container(container)?;
    if !matches!(c.state, CState::Running { .. }) {
        return Err(ProviderError::NotFound(format!(
            "container {container:?} of pod {}/{} is not running",
            pod.namespace, pod.name
        )));
    }
    Ok(Target {
        sandbox: c.sandbox.clone(),
        logs: c.logs.clone(),
        stop: p.stop.clone(),
    })
}

/// Resolves when the pod is deleted.
async fn stopped(stop: skylet_provider::CancellationToken) {
    stop.cancelled().await;
}

/// Runs `command` in a running container (see the module docs).
pub(crate) async fn exec(
    inner: &Inner,
    pod: &PodRef,
    container: &str,
    command: Vec<String>,
    io: ExecIo,
) -> Result<ExitStatus> {
    let t = target(inner, pod, container)?;
    let mut term = Term::new(io);
    let code = {
        let mut shell = Shell::new(&mut term, &t.sandbox);
        tokio::select! {
            flow = shell.run(&command) => flow.code(),
            () = stopped(t.stop) => KILLED,
        }
    };
    term.finish().await;
    Ok(ExitStatus::Code(code))
}

/// Attaches to a running container (see the module docs).
pub(crate) async fn attach(
    inner: &Inner,
    pod: &PodRef,
    container: &str,
    io: AttachIo,
) -> Result<ExitStatus> {
    let t = target(inner, pod, container)?;
    let mut term = Term::new(io);
    let opts = LogOptions {
        follow: true,
        tail_lines: Some(0),
        ..LogOptions::default()
    };
    let mut follow = crate::logs::stream(t.logs.clone(), opts);
    let mut stop = std::pin::pin!(stopped(t.stop));
    let reading = term.stdin.is_some();
    enum Event {
        Log(Option<Bytes>),
        Input(Input),
        Stop,
    }
    loop {
        let event = tokio::select! {
            chunk = follow.next() => Event::Log(chunk.and_then(std::result::Result::ok)),
            input = term.line(false), if reading => Event::Input(input),
            () = &mut stop => Event::Stop,
        };
        match event {
            Event::Log(Some(chunk)) => term.stdout(&chunk).await,
            Event::Log(None) | Event::Stop => break,
            Event::Input(Input::Line(line)) => t.logs.push(line),
            Event::Input(Input::Interrupt) => {}
            Event::Input(Input::Eof) => {
                // Deliver what was logged up to now, then detach.
                while let Some(Some(Ok(chunk))) = follow.next().now_or_never() {
                    term.stdout(&chunk).await;
                }
                break;
            }
        }
        if term.broken {
            break;
        }
    }
    term.finish().await;
    Ok(ExitStatus::Code(0))
}

/// Opens a connection to `port` of a running pod: an echo server.
pub(crate) async fn port_forward(inner: &Inner, pod: &PodRef, port: u16) -> Result<PortStream> {
    let running = inner
        .lock()
        .get(&pod.uid)
        .is_some_and(|p| p.phase == "Running");
    if !running {
        return Err(ProviderError::NotFound(format!(
            "pod {}/{} is not running in the mock backend",
            pod.namespace, pod.name
        )));
    }
    if port == REFUSED_PORT {
        return Err(ProviderError::transient(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused"),
        )));
    }
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(ProviderError::transient)?;
    let addr = listener.local_addr().map_err(ProviderError::transient)?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.map_err(ProviderError::transient)?;
    let (server, _) = accepted.map_err(ProviderError::transient)?;
    tokio::spawn(async move {
        let (mut r, mut w) = server.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    Ok(Box::new(client))
}
