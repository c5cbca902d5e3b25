//! Exec: a command run against a [`Session`] (its streams, and what its
//! user adds to the language), with the container's [`Sandbox`].
//!
//! | command | effect |
//! |---|---|
//! | `echo WORDS` | prints WORDS and a newline |
//! | `cat` | copies stdin to stdout ([`Session::cat`]) |
//! | `cat PATH...` | prints files of the sandbox; a missing one is an error, exit 1 |
//! | `env`, `printenv [NAME...]` | prints the environment, or the named variables (exit 1 if one is unset) |
//! | `sleep DURATION` | waits (as in a program: `0.5`, `2m`, `infinity`) |
//! | `exit [N]` | ends the shell with code N (0 by default) |
//! | `exec CMD...` | runs CMD, then ends the shell with its code |
//! | `true`, `:`, `false` | exit 0, 0, 1 |
//! | `printf FORMAT [ARG...]` | prints FORMAT with `%s`, `%d` and `%%` taking ARGs in turn, and the escapes `\n`, `\r`, `\t`, `\\` and `\NNN` (octal) |
//! | `sh -c SCRIPT` | runs SCRIPT's statements; its code is the last one's |
//! | `sh` | runs the lines read from stdin; prompts `$ ` when [`Session::interactive`] |
//!
//! A command may be given with a path (`/bin/echo`); `sh` is any shell
//! (`bash`, `/bin/ash`, ...). Then come the session's own commands
//! ([`Session::command`]); anything else is [`Session::not_found`], exit
//! 127. A script with an open quote is a syntax error (exit 2) and runs
//! nothing.
//!
//! The one expansion is `$?`, outside single quotes as in sh: the code of
//! the previous statement of the script, or of the previous line of `sh`.

use std::{future::Future, pin::Pin};

use crate::{
    Sandbox,
    syntax::{self, command_name},
};

/// What a command ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// It exited with this code; a script goes on.
    Next(i32),
    /// `exit N` (or `exec`): the whole shell ends.
    Exit(i32),
}

impl Flow {
    /// The exit code.
    pub fn code(self) -> i32 {
        match self {
            Self::Next(c) | Self::Exit(c) => c,
        }
    }
}

/// A line of input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A line, without its end.
    Line(String),
    /// Ctrl-C on a terminal.
    Interrupt,
    /// End of input.
    Eof,
}

/// The streams of an exec session, and what its user adds to the language.
pub trait Session: Send {
    /// Writes to stdout.
    fn out(&mut self, bytes: &[u8]) -> impl Future<Output = ()> + Send;

    /// Writes to stderr.
    fn err(&mut self, text: &str) -> impl Future<Output = ()> + Send;

    /// Reads a line of stdin (for `sh`).
    fn read_line(&mut self) -> impl Future<Output = Input> + Send;

    /// `cat` without arguments: copies stdin to stdout; returns the code.
    fn cat(&mut self) -> impl Future<Output = i32> + Send;

    /// Whether the client is gone: scripts stop.
    fn broken(&self) -> bool;

    /// Whether `sh` prompts (`$ `) and says `exit` at the end of input.
    fn interactive(&self) -> bool {
        false
    }

    /// The error for a command that does not exist.
    fn not_found(&self, command: &str) -> String {
        format!("sh: {command}: not found\n")
    }

    /// Runs a command of the session's own (`name` without its path), or
    /// `None` when it has none of that name.
    fn command(&mut self, name: &str, args: &[String]) -> impl Future<Output = Option<i32>> + Send {
        let _ = (name, args);
        async { None }
    }
}

/// Runs commands on a session.
pub struct Shell<'a, S> {
    io: &'a mut S,
    sandbox: &'a Sandbox,
    /// The code of the last statement (`$?`).
    status: i32,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<'a, S: Session> Shell<'a, S> {
    /// A shell on `io` in `sandbox`.
    pub fn new(io: &'a mut S, sandbox: &'a Sandbox) -> Self {
        Self {
            io,
            sandbox,
            status: 0,
        }
    }

    /// Runs a command given as argv.
    pub fn run<'s>(&'s mut self, argv: &'s [String]) -> Boxed<'s, Flow> {
        Box::pin(async move {
            let Some((command, args)) = argv.split_first() else {
                self.io.err("sh: no command given\n").await;
                return Flow::Next(127);
            };
            let code = match command_name(command) {
                "echo" => {
                    self.out(&format!("{}\n", args.join(" "))).await;
                    0
                }
                "cat" if args.is_empty() => self.io.cat().await,
                "cat" => self.cat(args).await,
                "env" | "printenv" if args.is_empty() => self.env().await,
                "printenv" => self.printenv(args).await,
                "sleep" => self.sleep(args).await,
                "exit" => return self.exit(args).await,
                "exec" if !args.is_empty() => return Flow::Exit(self.run(args).await.code()),
                "printf" if let Some((format, rest)) = args.split_first() => {
                    self.out(&printf(format, rest)).await;
                    0
                }
                "true" | ":" | "exec" => 0,
                "false" => 1,
                name if syntax::is_shell(name) => self.sh(args).await,
                name => match self.io.command(name, args).await {
                    Some(code) => code,
                    None => {
                        let message = self.io.not_found(command);
                        self.io.err(&message).await;
                        127
                    }
                },
            };
            Flow::Next(code)
        })
    }

    /// Runs a script: its statements, until one exits.
    pub async fn script(&mut self, source: &str) -> Flow {
        let script = syntax::split_marking_status(source);
        if script.unterminated.is_some() {
            self.io
                .err("sh: syntax error: unterminated quoted string\n")
                .await;
            return Flow::Next(2);
        }
        let mut last = 0;
        for statement in &script.statements {
            let status = self.status.to_string();
            let words: Vec<String> = statement
                .words
                .iter()
                .map(|w| w.replace(syntax::STATUS, &status))
                .collect();
            let flow = self.run(&words).await;
            self.status = flow.code();
            match flow {
                Flow::Exit(code) => return Flow::Exit(code),
                Flow::Next(code) => last = code,
            }
            if self.io.broken() {
                break;
            }
        }
        Flow::Next(last)
    }

    /// `sh` without arguments: runs the lines read from stdin.
    pub async fn shell(&mut self) -> i32 {
        let mut last = 0;
        loop {
            if self.io.interactive() {
                self.out("$ ").await;
            }
            match self.io.read_line().await {
                Input::Eof => {
                    if self.io.interactive() {
                        self.out("exit\n").await;
                    }
                    return last;
                }
                Input::Interrupt => {
                    last = 130;
                    self.status = 130;
                }
                Input::Line(line) => match self.script(&line).await {
                    Flow::Exit(code) => return code,
                    Flow::Next(code) => last = code,
                },
            }
            if self.io.broken() {
                return last;
            }
        }
    }

    async fn out(&mut self, text: &str) {
        self.io.out(text.as_bytes()).await;
    }

    async fn sh(&mut self, args: &[String]) -> i32 {
        match args {
            [flag, script, ..] if flag == "-c" => self.script(script).await.code(),
            [] => self.shell().await,
            [other, ..] => {
                let message = format!("sh: can't open '{other}': No such file or directory\n");
                self.io.err(&message).await;
                2
            }
        }
    }

    async fn cat(&mut self, paths: &[String]) -> i32 {
        let mut code = 0;
        for path in paths {
            match self.sandbox.files.get(path) {
                Some(data) => self.io.out(data).await,
                None => {
                    let message = format!("cat: {path}: No such file or directory\n");
                    self.io.err(&message).await;
                    code = 1;
                }
            }
        }
        code
    }

    async fn env(&mut self) -> i32 {
        let text: String = self
            .sandbox
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        self.out(&text).await;
        0
    }

    async fn printenv(&mut self, names: &[String]) -> i32 {
        let mut code = 0;
        for name in names {
            match self.sandbox.env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => {
                    let line = format!("{v}\n");
                    self.out(&line).await;
                }
                None => code = 1,
            }
        }
        code
    }

    async fn sleep(&mut self, args: &[String]) -> i32 {
        match args.first().and_then(|a| syntax::duration(a)) {
            Some(wait) => {
                wait.elapse().await;
                0
            }
            None => {
                let message = format!("sleep: invalid time interval '{}'\n", args.join(" "));
                self.io.err(&message).await;
                1
            }
        }
    }

    async fn exit(&mut self, args: &[String]) -> Flow {
        match args.first().map(|a| syntax::exit_code(a)) {
            None => Flow::Exit(0),
            Some(Some(code)) => Flow::Exit(code),
            Some(None) => {
                let message = format!("sh: exit: Illegal number: {}\n", args.join(" "));
                self.io.err(&message).await;
                Flow::Exit(2)
            }
        }
    }
}

/// `printf FORMAT ARGS...` (see the module docs); a missing argument is
/// empty (`%s`) or 0 (`%d`), extra ones are ignored.
fn printf(format: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(d @ '0'..='7') => {
                    let mut n = d.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek().and_then(|c| c.to_digit(8)) {
                            Some(v) => {
                                n = n * 8 + v;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    out.extend(char::from_u32(n));
                }
                Some(other) => {
                    if other != '\\' {
                        out.push('\\');
                    }
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '%' => match chars.next() {
                Some('s') => out.push_str(args.next().map_or("", String::as_str)),
                Some('d') => {
                    let n = args.next().and_then(|a| a.trim().parse::<i64>().ok());
                    out.push_str(&n.unwrap_or(0).to_string());
                }
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A session in memory: stdin lines, and what was written.
    #[derive(Default)]
    struct Memory {
        stdin: VecDeque<Input>,
        stdout: String,
        stderr: String,
        interactive: bool,
    }

    impl Session for Memory {
        async fn out(&mut self, bytes: &[u8]) {
            self.stdout.push_str(&String::from_utf8_lossy(bytes));
        }

        async fn err(&mut self, text: &str) {
            self.stderr.push_str(text);
        }

        async fn read_line(&mut self) -> Input {
            self.stdin.pop_front().unwrap_or(Input::Eof)
        }

        async fn cat(&mut self) -> i32 {
            while let Some(Input::Line(l)) = self.stdin.pop_front() {
                self.stdout.push_str(&l);
            }
            0
        }

        fn broken(&self) -> bool {
            false
        }

        fn interactive(&self) -> bool {
            self.interactive
        }

        async fn command(&mut self, name: &str, _: &[String]) -> Option<i32> {
            (name == "hostname").then(|| {
                self.stdout.push_str("box\n");
                0
            })
        }
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn run(args: &[&str], stdin: &[&str]) -> (Memory, i32) {
        let mut io = Memory {
            stdin: stdin.iter().map(|l| Input::Line((*l).to_owned())).collect(),
            ..Memory::default()
        };
        let sandbox = Sandbox {
            env: vec![("A".into(), "1".into()), ("B".into(), "two".into())],
            files: [("/f".to_owned(), "file\n".into())].into(),
        };
        let code = Shell::new(&mut io, &sandbox).run(&argv(args)).await.code();
        (io, code)
    }

    #[tokio::test]
    async fn builtins_print_and_exit_like_a_shell() {
        let (io, code) = run(&["/bin/echo", "a  b", "c"], &[]).await;
        assert_eq!((io.stdout.as_str(), code), ("a  b c\n", 0));
        let (io, code) = run(&["sh", "-c", "echo a; exit 3; echo b"], &[]).await;
        assert_eq!((io.stdout.as_str(), code), ("a\n", 3));
        let (io, code) = run(&["printenv", "B", "C"], &[]).await;
        assert_eq!((io.stdout.as_str(), code), ("two\n", 1));
        let (io, code) = run(&["cat", "/f", "/g"], &[]).await;
        assert_eq!(
            (io.stdout.as_str(), io.stderr.as_str(), code),
            ("file\n", "cat: /g: No such file or directory\n", 1)
        );
        let (io, code) = run(&["nope", "x"], &[]).await;
        assert_eq!((io.stderr.as_str(), code), ("sh: nope: not found\n", 127));
        let (io, code) = run(&["hostname"], &[]).await;
        assert_eq!((io.stdout.as_str(), code), ("box\n", 0));
        let (io, code) = run(&["sh", "-c", "echo 'open; exit 4"], &[]).await;
        assert_eq!(
            (io.stderr.as_str(), code),
            ("sh: syntax error: unterminated quoted string\n", 2)
        );
        let (io, code) = run(&["sleep", "x"], &[]).await;
        assert_eq!(
            (io.stderr.as_str(), code),
            ("sleep: invalid time interval 'x'\n", 1)
        );
    }

    #[tokio::test]
    async fn printf_and_the_last_status() {
        let (io, code) = run(
            &[
                "sh",
                "-c",
                r#"false; printf '\036x:%d\036%s\n' "$?" a; exit 3"#,
            ],
            &[],
        )
        .await;
        assert_eq!((io.stdout.as_str(), code), ("\u{1e}x:1\u{1e}a\n", 3));
        let (io, _) = run(&["sh"], &["exit 4", "echo never"]).await;
        assert_eq!(io.stdout, "");
        let (io, code) = run(&["sh"], &["sh -c 'exit 5'", "printf '%d%%' $?"]).await;
        assert_eq!((io.stdout.as_str(), code), ("5%", 0));
        // quoted for a nested shell: expanded there, after its command
        let (io, _) = run(
            &[
                "sh",
                "-c",
                r#"sh -c "sh -c 'exit 6'; echo \$? '\$?'"; echo '$?'"#,
            ],
            &[],
        )
        .await;
        assert_eq!(io.stdout, "6 $?\n$?\n");
    }

    #[tokio::test]
    async fn a_shell_runs_stdin_lines_until_exit_or_exec() {
        let (io, code) = run(&["bash"], &["env; false", "exit 4", "echo never"]).await;
        assert_eq!((io.stdout.as_str(), code), ("A=1\nB=two\n", 4));
        let (io, code) = run(&["sh"], &["exec echo 'x y'", "echo never"]).await;
        assert_eq!((io.stdout.as_str(), code), ("x y\n", 0));
        let (io, code) = run(&["sh"], &["false"]).await;
        assert_eq!((io.stdout.as_str(), code), ("", 1));
        let mut io = Memory {
            interactive: true,
            stdin: [Input::Line(":".into()), Input::Interrupt].into(),
            ..Memory::default()
        };
        let code = Shell::new(&mut io, &Sandbox::default()).shell().await;
        assert_eq!((io.stdout.as_str(), code), ("$ $ $ exit\n", 130));
    }
}
