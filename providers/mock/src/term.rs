//! The streams of an exec or attach session as a terminal sees them: with
//! `tty`, a line discipline (echo, backspace, Ctrl-C, Ctrl-D, `\r\n` line
//! ends, stderr merged into stdout, resizes); without, plain pipes. The
//! toy shell runs on it ([`Session`]), with the mock's own `stderr` and
//! `stty size`.

use std::collections::VecDeque;

use skylet_provider::{ExecIo, Reader, TermSize, Writer};
use skylet_toysh::{Input, Session};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

/// Longest input line kept; the rest of a longer line is dropped.
const MAX_LINE: usize = 64 << 10;

/// The streams of a command, with a terminal's line discipline when `tty`.
pub(crate) struct Term {
    pub(crate) stdin: Option<Reader>,
    stdout: Option<Writer>,
    stderr: Option<Writer>,
    tty: bool,
    size: Option<TermSize>,
    resize: Option<mpsc::Receiver<TermSize>>,
    /// Input read but not consumed yet.
    pending: VecDeque<u8>,
    /// The line being typed.
    line: Vec<u8>,
    /// The last input byte was `\r` (a following `\n` belongs to it).
    after_cr: bool,
    /// Writing output failed: the client is gone.
    pub(crate) broken: bool,
}

impl Term {
    pub(crate) fn new(io: ExecIo) -> Self {
        Self {
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            tty: io.tty,
            size: None,
            resize: io.resize,
            pending: VecDeque::new(),
            line: Vec::new(),
            after_cr: false,
            broken: false,
        }
    }

    async fn write(w: &mut Option<Writer>, bytes: &[u8], broken: &mut bool) {
        if let Some(out) = w
            && !*broken
            && (out.write_all(bytes).await.is_err() || out.flush().await.is_err())
        {
            *broken = true;
        }
    }

    /// Output as a terminal shows it: `\n` becomes `\r\n`.
    fn cooked<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.tty && bytes.contains(&b'\n') {
            let mut v = Vec::with_capacity(bytes.len() + 8);
            for &b in bytes {
                if b == b'\n' {
                    v.push(b'\r');
                }
                v.push(b);
            }
            v.into()
        } else {
            bytes.into()
        }
    }

    pub(crate) async fn stdout(&mut self, bytes: &[u8]) {
        let data = self.cooked(bytes).into_owned();
        Self::write(&mut self.stdout, &data, &mut self.broken).await;
    }

    /// Writes to stderr; with a terminal, stderr is the terminal.
    async fn stderr(&mut self, text: &str) {
        if self.tty {
            self.stdout(text.as_bytes()).await;
        } else {
            let mut broken = false;
            Self::write(&mut self.stderr, text.as_bytes(), &mut broken).await;
        }
    }

    /// The terminal size after every resize received so far.
    fn latest_size(&mut self) -> Option<TermSize> {
        if let Some(rx) = &mut self.resize {
            while let Ok(size) = rx.try_recv() {
                self.size = Some(size);
            }
        }
        self.size
    }

    /// Reads more input into `pending`, taking resizes meanwhile; false at
    /// end of input.
    async fn fill(&mut self) -> bool {
        enum Event {
            Data(usize),
            Eof,
            Size(Option<TermSize>),
        }
        let mut buf = [0u8; 4096];
        loop {
            let Some(stdin) = self.stdin.as_mut() else {
                return false;
            };
            let resize = &mut self.resize;
            let event = tokio::select! {
                r = stdin.read(&mut buf) => match r {
                    Ok(0) | Err(_) => Event::Eof,
                    Ok(n) => Event::Data(n),
                },
                size = async {
                    match resize {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => Event::Size(size),
            };
            match event {
                Event::Data(n) => {
                    self.pending.extend(buf.get(..n).unwrap_or_default());
                    return true;
                }
                Event::Eof => {
                    self.stdin = None;
                    return false;
                }
                Event::Size(Some(size)) => self.size = Some(size),
                Event::Size(None) => self.resize = None,
            }
        }
    }

    /// Reads a line. With a terminal it applies the line discipline (echo
    /// when `echo`, backspace, Ctrl-C, Ctrl-D). Cancel-safe: a partial line
    /// stays in `self`.
    pub(crate) async fn line(&mut self, echo: bool) -> Input {
        loop {
            let mut echoed = Vec::new();
            let mut done = None;
            while let Some(b) = self.pending.pop_front() {
                let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
                match b {
                    b'\n' if after_cr => {}
                    b'\r' | b'\n' => {
                        echoed.extend_from_slice(b"\r\n");
                        done = Some(Input::Line(
                            String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned(),
                        ));
                        break;
                    }
                    0x7f | 0x08 if self.tty => {
                        if self.line.pop().is_some() {
                            echoed.extend_from_slice(b"\x08 \x08");
                        }
                    }
                    0x03 if self.tty => {
                        echoed.extend_from_slice(b"^C\r\n");
                        self.line.clear();
                        done = Some(Input::Interrupt);
                        break;
                    }
                    0x04 if self.tty => {
                        if self.line.is_empty() {
                            done = Some(Input::Eof);
                            break;
                        }
                    }
                    _ => {
                        if self.line.len() < MAX_LINE {
                            self.line.push(b);
                            echoed.push(b);
                        }
                    }
                }
            }
            if echo && self.tty && !echoed.is_empty() {
                Self::write(&mut self.stdout, &echoed, &mut self.broken).await;
            }
            if let Some(input) = done {
                return input;
            }
            if !self.fill().await {
                return if self.line.is_empty() {
                    Input::Eof
                } else {
                    Input::Line(
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned(),
                    )
                };
            }
        }
    }

    /// Ends the output streams (end-of-file for the client).
    pub(crate) async fn finish(&mut self) {
        for w in [self.stdout.as_mut(), self.stderr.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = w.shutdown().await;
        }
        self.stdout = None;
        self.stderr = None;
    }
}

/// The toy shell runs on the terminal; `stderr` and `stty` are the mock's.
impl Session for Term {
    async fn out(&mut self, bytes: &[u8]) {
        self.stdout(bytes).await;
    }

    async fn err(&mut self, text: &str) {
        self.stderr(text).await;
    }

    async fn read_line(&mut self) -> Input {
        self.line(true).await
    }

    async fn cat(&mut self) -> i32 {
        if self.tty {
            loop {
                match self.line(true).await {
                    Input::Line(l) => self.stdout(format!("{l}\n").as_bytes()).await,
                    Input::Interrupt => return 130,
                    Input::Eof => return 0,
                }
            }
        }
        loop {
            if !self.pending.is_empty() {
                let chunk: Vec<u8> = self.pending.drain(..).collect();
                self.stdout(&chunk).await;
            }
            if self.broken || !self.fill().await {
                return 0;
            }
        }
    }

    fn broken(&self) -> bool {
        self.broken
    }

    fn interactive(&self) -> bool {
        self.tty
    }

    async fn command(&mut self, name: &str, args: &[String]) -> Option<i32> {
        match (name, args) {
            ("stderr", words) => {
                self.stderr(&format!("{}\n", words.join(" "))).await;
                Some(0)
            }
            ("stty", [size]) if size == "size" => Some(if self.tty {
                let size = self.latest_size().unwrap_or(TermSize {
                    width: 0,
                    height: 0,
                });
                self.stdout(format!("{} {}\n", size.height, size.width).as_bytes())
                    .await;
                0
            } else {
                self.stderr("stty: 'standard input': Inappropriate ioctl for device\n")
                    .await;
                1
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use skylet_toysh::{Sandbox, Shell};
    use tokio::io::{AsyncRead, AsyncWrite};

    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    struct Run {
        stdout: String,
        stderr: String,
        code: i32,
    }

    /// Runs a command on an in-memory `Term`, feeding `input` and `sizes`.
    async fn run(command: &[&str], input: &[u8], tty: bool, sizes: &[TermSize]) -> Run {
        let (stdin_w, stdin_r) = tokio::io::duplex(1 << 16);
        let (stdout_w, mut stdout_r) = tokio::io::duplex(1 << 16);
        let (stderr_w, mut stderr_r) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::channel(8);
        for s in sizes {
            tx.send(*s).await.unwrap();
        }
        fn boxed_r(r: impl AsyncRead + Send + Unpin + 'static) -> Reader {
            Box::new(r)
        }
        fn boxed_w(w: impl AsyncWrite + Send + Unpin + 'static) -> Writer {
            Box::new(w)
        }
        let io = ExecIo {
            stdin: Some(boxed_r(stdin_r)),
            stdout: Some(boxed_w(stdout_w)),
            stderr: (!tty).then(|| boxed_w(stderr_w)),
            tty,
            resize: tty.then_some(rx),
        };
        let mut stdin_w = stdin_w;
        stdin_w.write_all(input).await.unwrap();
        drop(stdin_w);
        let sandbox = Sandbox {
            env: vec![("A".into(), "1".into()), ("B".into(), "two".into())],
            files: Default::default(),
        };
        let mut term = Term::new(io);
        let code = Shell::new(&mut term, &sandbox)
            .run(&w(command))
            .await
            .code();
        term.finish().await;
        drop(term);
        let mut stdout = String::new();
        stdout_r.read_to_string(&mut stdout).await.unwrap();
        let mut stderr = String::new();
        let _ = stderr_r.read_to_string(&mut stderr).await;
        Run {
            stdout,
            stderr,
            code,
        }
    }

    #[tokio::test]
    async fn builtins_print_and_exit_like_a_shell() {
        let r = run(&["echo", "hi", "there"], b"", false, &[]).await;
        assert_eq!((r.stdout.as_str(), r.code), ("hi there\n", 0));
        let r = run(&["cat"], b"piped\ninput", false, &[]).await;
        assert_eq!(r.stdout, "piped\ninput");
        let r = run(&["sh", "-c", "echo a; exit 3; echo b"], b"", false, &[]).await;
        assert_eq!((r.stdout.as_str(), r.code), ("a\n", 3));
        let r = run(&["sh", "-c", "stderr oops; false"], b"", false, &[]).await;
        assert_eq!(
            (r.stdout.as_str(), r.stderr.as_str(), r.code),
            ("", "oops\n", 1)
        );
        let r = run(&["env"], b"", false, &[]).await;
        assert_eq!(r.stdout, "A=1\nB=two\n");
        let r = run(&["printenv", "B"], b"", false, &[]).await;
        assert_eq!(r.stdout, "two\n");
        let r = run(&["nope", "x"], b"", false, &[]).await;
        assert_eq!((r.stderr.as_str(), r.code), ("sh: nope: not found\n", 127));
        let r = run(
            &["sh"],
            b"echo from stdin\nexit 4\necho never\n",
            false,
            &[],
        )
        .await;
        assert_eq!((r.stdout.as_str(), r.code), ("from stdin\n", 4));
        let r = run(&["stty", "size"], b"", false, &[]).await;
        assert_eq!(r.code, 1);
    }

    #[tokio::test]
    async fn tty_shell_echoes_edits_and_reports_the_latest_size() {
        let sizes = [
            TermSize {
                width: 80,
                height: 24,
            },
            TermSize {
                width: 120,
                height: 40,
            },
        ];
        let r = run(
            &["sh"],
            b"echo hx\x7fi\rstty size\rstderr e\r\x03exit 5\r",
            true,
            &sizes,
        )
        .await;
        assert_eq!(r.code, 5);
        assert_eq!(
            r.stdout,
            "$ echo hx\x08 \x08i\r\nhi\r\n$ stty size\r\n40 120\r\n$ stderr e\r\ne\r\n$ ^C\r\n$ exit 5\r\n"
        );
        let r = run(&["sh"], b"\x04", true, &[]).await;
        assert_eq!((r.stdout.as_str(), r.code), ("$ exit\r\n", 0));
    }
}
