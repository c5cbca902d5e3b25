//! Container programs: what a simulated container runs, taken from its
//! command (see the crate docs for the statements), and running one.
//!
//! A program only writes lines (to the container's log); it has no stdin
//! and no exit status per statement. A program ends with the code of its
//! `exit`, 0 when it runs off its end, 1 when `cat` misses a file.

use std::{future::Future, pin::Pin, time::Duration};

use crate::{
    Sandbox,
    syntax::{self, Statement, Wait},
};

/// The shortest period of `log-every`, and the pause between two rounds of
/// a loop (a body without a `sleep` must not spin).
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// One statement of a program.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `echo WORDS`: a line.
    Echo(String),
    /// `env`, `printenv`: the environment, a line per variable.
    Env,
    /// `cat PATH...`: the files' lines.
    Cat(Vec<String>),
    /// `sleep DURATION`.
    Sleep(Wait),
    /// `log-every SECONDS WORDS`: `WORDS 1`, `WORDS 2`, ... forever.
    LogEvery(Duration, String),
    /// `exit N`.
    Exit(i32),
    /// `load CPU [MEMORY]`: the container uses CPU millicores (and MEMORY
    /// bytes) from now on, as its backend's metrics report.
    Load(u64, Option<u64>),
    /// `while true; do ...; done`: the body, forever.
    Loop(Vec<Stmt>),
    /// Anything else, as written: skipped.
    Unknown(String),
}

/// A parsed program.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    statements: Vec<Stmt>,
}

/// Where a running program's output goes.
pub trait Output: Sync {
    /// A line the program printed.
    fn line(&self, line: String);

    /// A statement that is not understood, as written; it is skipped.
    fn ignored(&self, statement: &str) {
        let _ = statement;
    }

    /// `load`: the container's resource use from now on, in millicores
    /// and, when given, bytes of memory. The default ignores it.
    fn load(&self, millicores: u64, memory_bytes: Option<u64>) {
        let _ = (millicores, memory_bytes);
    }
}

impl Program {
    /// The program of a container whose command and args are `argv`:
    /// the script of `sh -c SCRIPT`, or else `argv` as one statement.
    pub fn parse(argv: &[String]) -> Self {
        let script = match syntax::shell_script(argv) {
            Some(source) => syntax::split(source),
            None if argv.is_empty() => syntax::Script::default(),
            None => syntax::Script {
                statements: vec![Statement {
                    words: argv.to_vec(),
                    text: argv.join(" "),
                }],
                unterminated: None,
            },
        };
        let mut statements = block(&mut script.statements.into_iter(), false);
        statements.extend(script.unterminated.map(Stmt::Unknown));
        Self { statements }
    }

    /// Whether there is no statement at all (no command).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Whether any statement is understood: a program of `nginx -g 'daemon
    /// off;'` is not.
    pub fn understood(&self) -> bool {
        understood(&self.statements)
    }

    /// The statements.
    pub fn statements(&self) -> &[Stmt] {
        &self.statements
    }

    /// Runs the program in `sandbox` to its end; returns its exit code.
    pub async fn run(&self, sandbox: &Sandbox, out: &impl Output) -> i32 {
        run_block(&self.statements, sandbox, out).await.unwrap_or(0)
    }
}

fn understood(statements: &[Stmt]) -> bool {
    statements.iter().any(|s| match s {
        Stmt::Unknown(_) => false,
        Stmt::Loop(body) => understood(body),
        _ => true,
    })
}

/// Parses statements until the end or, inside a loop, `done`. A leading
/// `do`, `then` or `else` is skipped; the body of a loop that is not
/// forever (or understands nothing) runs once.
fn block(statements: &mut impl Iterator<Item = Statement>, in_loop: bool) -> Vec<Stmt> {
    let mut out = Vec::new();
    while let Some(Statement { mut words, text }) = statements.next() {
        let keywords = words
            .iter()
            .take_while(|w| matches!(w.as_str(), "do" | "then" | "else"))
            .count();
        words.drain(..keywords);
        match words.first().map(String::as_str) {
            None => {}
            Some("done") if in_loop => return out,
            Some(keyword @ ("while" | "until")) => {
                let forever = matches!(
                    (keyword, words.get(1).map(String::as_str)),
                    ("while", Some("true" | ":")) | ("until", Some("false"))
                );
                let body = block(statements, true);
                if forever && understood(&body) {
                    out.push(Stmt::Loop(body));
                } else {
                    out.extend(body);
                }
            }
            Some(_) => out.push(statement(&words, text)),
        }
    }
    out
}

fn statement(words: &[String], text: String) -> Stmt {
    let Some((command, args)) = words.split_first() else {
        return Stmt::Unknown(text);
    };
    let parsed = match (syntax::command_name(command), args) {
        ("echo", words) => Some(Stmt::Echo(words.join(" "))),
        ("env" | "printenv", []) => Some(Stmt::Env),
        ("cat", paths) if !paths.is_empty() => Some(Stmt::Cat(paths.to_vec())),
        ("sleep", [arg]) => syntax::duration(arg).map(Stmt::Sleep),
        ("exit", []) => Some(Stmt::Exit(0)),
        ("exit", [code]) => syntax::exit_code(code).map(Stmt::Exit),
        ("load", [cpu]) => syntax::millicores(cpu).map(|m| Stmt::Load(m, None)),
        ("load", [cpu, memory]) => syntax::millicores(cpu)
            .zip(syntax::bytes(memory))
            .map(|(m, b)| Stmt::Load(m, Some(b))),
        ("log-every", [period, words @ ..]) => match syntax::duration(period) {
            Some(Wait::For(d)) => Some(Stmt::LogEvery(
                d.max(MIN_PERIOD),
                if words.is_empty() {
                    "tick".to_owned()
                } else {
                    words.join(" ")
                },
            )),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or(Stmt::Unknown(text))
}

type Run<'a> = Pin<Box<dyn Future<Output = Option<i32>> + Send + 'a>>;

/// Runs statements; `Some(code)` when one ends the program.
fn run_block<'a>(statements: &'a [Stmt], sandbox: &'a Sandbox, out: &'a impl Output) -> Run<'a> {
    Box::pin(async move {
        for statement in statements {
            if let Some(code) = run_statement(statement, sandbox, out).await {
                return Some(code);
            }
        }
        None
    })
}

async fn run_statement(statement: &Stmt, sandbox: &Sandbox, out: &impl Output) -> Option<i32> {
    match statement {
        Stmt::Echo(text) => out.line(text.clone()),
        Stmt::Env => {
            for (k, v) in &sandbox.env {
                out.line(format!("{k}={v}"));
            }
        }
        Stmt::Cat(paths) => {
            for path in paths {
                let Some(data) = sandbox.files.get(path) else {
                    out.line(format!("cat: {path}: No such file or directory"));
                    return Some(1);
                };
                for line in String::from_utf8_lossy(data).lines() {
                    out.line(line.to_owned());
                }
            }
        }
        Stmt::Sleep(wait) => wait.elapse().await,
        Stmt::LogEvery(period, words) => {
            for n in 1u64.. {
                out.line(format!("{words} {n}"));
                tokio::time::sleep(*period).await;
            }
        }
        Stmt::Exit(code) => return Some(*code),
        Stmt::Load(millicores, memory) => out.load(*millicores, *memory),
        Stmt::Loop(body) => loop {
            if let Some(code) = run_block(body, sandbox, out).await {
                return Some(code);
            }
            tokio::time::sleep(MIN_PERIOD).await;
        },
        Stmt::Unknown(text) => out.ignored(text),
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(args: &[&str]) -> Vec<Stmt> {
        Program::parse(&argv(args)).statements
    }

    #[test]
    fn unwraps_sh_c_and_splits_statements() {
        assert_eq!(
            parse(&[
                "/bin/sh",
                "-c",
                "echo 'hello world'; sleep 0.5\nexit 3; echo never"
            ]),
            [
                Stmt::Echo("hello world".into()),
                Stmt::Sleep(Wait::For(Duration::from_millis(500))),
                Stmt::Exit(3),
                Stmt::Echo("never".into()),
            ]
        );
        assert_eq!(parse(&["echo", "a", "b"]), [Stmt::Echo("a b".into())]);
        assert_eq!(parse(&["env"]), [Stmt::Env]);
        assert_eq!(parse(&["sleep", "infinity"]), [Stmt::Sleep(Wait::Forever)]);
        assert_eq!(
            parse(&["sh", "-c", "cat /a /b; log-every 0.001"]),
            [
                Stmt::Cat(argv(&["/a", "/b"])),
                Stmt::LogEvery(MIN_PERIOD, "tick".into())
            ]
        );
        assert!(Program::parse(&[]).is_empty());
        assert_eq!(
            parse(&["sh", "-c", "load 500m; load 2 64Mi; load x"]),
            [
                Stmt::Load(500, None),
                Stmt::Load(2000, Some(64 << 20)),
                Stmt::Unknown("load x".into())
            ]
        );
    }

    #[test]
    fn loops_run_forever_only_when_they_say_so() {
        assert_eq!(
            parse(&["sh", "-c", "while true; do echo tick; sleep 1; done"]),
            [Stmt::Loop(vec![
                Stmt::Echo("tick".into()),
                Stmt::Sleep(Wait::For(Duration::from_secs(1)))
            ])]
        );
        assert_eq!(
            parse(&["sh", "-c", "while test -f x; do echo once; done; exit 1"]),
            [Stmt::Echo("once".into()), Stmt::Exit(1)]
        );
        let idle = Program::parse(&argv(&["sh", "-c", "while :; do nginx; done"]));
        assert_eq!(idle.statements, [Stmt::Unknown("do nginx".into())]);
        assert!(!idle.understood());
    }

    #[test]
    fn what_is_not_understood_is_kept_as_written() {
        let server = Program::parse(&argv(&["nginx", "-g", "daemon off;"]));
        assert_eq!(
            server.statements,
            [Stmt::Unknown("nginx -g daemon off;".into())]
        );
        assert!(!server.understood() && !server.is_empty());
        assert_eq!(
            parse(&["sh", "-c", "sleep soon; exit x; echo 'open"]),
            [
                Stmt::Unknown("sleep soon".into()),
                Stmt::Unknown("exit x".into()),
                Stmt::Unknown("echo 'open".into())
            ]
        );
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl Output for Lines {
        fn line(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }

        fn ignored(&self, statement: &str) {
            self.line(format!("ignored: {statement}"));
        }
    }

    #[tokio::test]
    async fn runs_to_the_first_exit_or_missing_file() {
        let sandbox = Sandbox {
            env: vec![("A".into(), "1".into())],
            files: [("/etc/x".to_owned(), "one\ntwo\n".into())].into(),
        };
        let run = |script: &str| {
            let program = Program::parse(&argv(&["sh", "-c", script]));
            let sandbox = sandbox.clone();
            async move {
                let lines = Lines::default();
                let code = program.run(&sandbox, &lines).await;
                (code, lines.0.into_inner().unwrap())
            }
        };
        assert_eq!(
            run("echo hi; env; cat /etc/x; nope; exit 4; echo never").await,
            (4, argv(&["hi", "A=1", "one", "two", "ignored: nope"]))
        );
        assert_eq!(
            run("cat /etc/x /missing; echo never").await,
            (
                1,
                argv(&["one", "two", "cat: /missing: No such file or directory"])
            )
        );
        assert_eq!(run("echo done").await, (0, argv(&["done"])));
        assert_eq!(
            run("while true; do echo a; exit 7; done").await,
            (7, argv(&["a"]))
        );
    }
}
