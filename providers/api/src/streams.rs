//! The byte streams of exec, attach and port-forward, as the kubelet API
//! server hands them to a backend.
//!
//! The core owns the wire protocols (SPDY/3.1 or WebSocket channels) and
//! hands a backend plain in-memory pipes: a backend reads the client's input
//! from [`ExecIo::stdin`] until end-of-file (the client closed its stdin),
//! writes output to [`ExecIo::stdout`] and [`ExecIo::stderr`], and drops
//! them when the command ends. Writes fail once the client is gone.

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};

/// A boxed reader.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed writer.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size, from the client's resize stream (JSON objects
/// `{"Width":80,"Height":24}`, as `kubectl` sends them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of an exec session. A stream is `None` when the client did not
/// ask for it; with `tty`, stderr is merged into stdout and is `None`.
pub struct ExecIo {
    /// What the client types.
    pub stdin: Option<Reader>,
    /// The command's standard output.
    pub stdout: Option<Writer>,
    /// The command's standard error.
    pub stderr: Option<Writer>,
    /// Whether the client asked for a terminal.
    pub tty: bool,
    /// Terminal size changes (only with `tty`): the first arrives when the
    /// client starts, the others when its terminal is resized.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// Attach has the same streams as exec: `stdin` feeds the main process's
/// input, `stdout`/`stderr` receive its output from now on.
pub type AttachIo = ExecIo;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code (0 is success).
    Code(i32),
}

impl ExitStatus {
    /// Whether the command succeeded.
    pub fn success(self) -> bool {
        matches!(self, Self::Code(0))
    }
}

/// A bidirectional byte stream (a forwarded TCP connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connection to a pod's port.
pub type PortStream = Box<dyn Duplex>;
