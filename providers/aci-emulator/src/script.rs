//! The tiny "program" a simulated container runs, taken from its `command`.
//!
//! `["sh", "-c", "..."]` (also `/bin/sh`, `bash`, `/bin/bash`, `ash`) is
//! unwrapped to its script; any other command is one statement. Statements
//! are split on `;` and newlines (a `;` inside quotes splits too: this is a
//! test double, not a shell) and words with POSIX quoting (`shlex`).
//! Understood: `echo TEXT`, `sleep SECS` (`infinity`, `s`/`m`/`h` suffixes),
//! `exit N`, `env`/`printenv`, and `while true; do ...; done` (also
//! `while :`), whose body repeats forever; a leading `do`/`then`/`else` is
//! skipped. Everything else is ignored. A container with no command, or
//! whose command has no understood statement (`nginx -g 'daemon off;'`), is a
//! server: it keeps running.

use std::time::Duration;

/// One understood statement.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stmt {
    /// Print a line.
    Echo(String),
    /// Wait; `None` is forever.
    Sleep(Option<Duration>),
    /// End with this exit code.
    Exit(i32),
    /// Print the environment.
    Env,
    /// Repeat forever.
    Loop(Vec<Stmt>),
}

/// What a container does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Program {
    /// Runs until stopped (no command, or nothing understood).
    Server,
    /// Runs these statements, then exits 0 unless one exits first.
    Script(Vec<Stmt>),
}

/// The program of a container with this `command`.
pub(crate) fn program(command: &[String]) -> Program {
    let text = match command {
        [] => return Program::Server,
        [sh, flag, script, ..] if is_shell(sh) && flag == "-c" => script.clone(),
        argv => shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" ")),
    };
    let pieces: Vec<Vec<String>> = text
        .split([';', '\n'])
        .filter_map(shlex::split)
        .filter(|words| !words.is_empty())
        .collect();
    let mut iter = pieces.into_iter();
    let stmts = parse_block(&mut iter, false);
    if understood(&stmts) {
        Program::Script(stmts)
    } else {
        Program::Server
    }
}

fn is_shell(arg: &str) -> bool {
    matches!(
        arg,
        "sh" | "/bin/sh" | "bash" | "/bin/bash" | "ash" | "/bin/ash"
    )
}

fn understood(stmts: &[Stmt]) -> bool {
    !stmts.is_empty()
}

/// Parses statements until the end or, inside a loop, `done`.
fn parse_block(iter: &mut impl Iterator<Item = Vec<String>>, in_loop: bool) -> Vec<Stmt> {
    let mut out = Vec::new();
    while let Some(mut words) = iter.next() {
        while matches!(
            words.first().map(String::as_str),
            Some("do" | "then" | "else")
        ) {
            words.remove(0);
        }
        let Some(first) = words.first() else { continue };
        match first.as_str() {
            "done" if in_loop => return out,
            "while" | "until" => {
                let forever = matches!(
                    (first.as_str(), words.get(1).map(String::as_str)),
                    ("while", Some("true" | ":")) | ("until", Some("false"))
                );
                let body = parse_block(iter, true);
                if forever && !body.is_empty() {
                    out.push(Stmt::Loop(body));
                } else {
                    out.extend(body);
                }
            }
            "echo" => out.push(Stmt::Echo(words[1..].join(" "))),
            "sleep" => out.push(Stmt::Sleep(
                words
                    .get(1)
                    .and_then(|s| duration(s))
                    .unwrap_or(Some(Duration::ZERO)),
            )),
            "exit" => out.push(Stmt::Exit(
                words.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
            )),
            "env" | "printenv" if words.len() == 1 => out.push(Stmt::Env),
            _ => {}
        }
    }
    out
}

/// `sleep`'s argument: `Some(None)` is forever.
fn duration(s: &str) -> Option<Option<Duration>> {
    if s == "infinity" || s == "inf" {
        return Some(None);
    }
    let (num, unit) = match s.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        'm' => n * 60.0,
        'h' => n * 3600.0,
        'd' => n * 86400.0,
        _ => n,
    };
    Some(Duration::try_from_secs_f64(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn unwraps_sh_c_and_splits_statements() {
        let p = program(&cmd(&[
            "/bin/sh",
            "-c",
            "echo 'hello world'; sleep 0.5\nexit 3; echo never",
        ]));
        assert_eq!(
            p,
            Program::Script(vec![
                Stmt::Echo("hello world".into()),
                Stmt::Sleep(Some(Duration::from_millis(500))),
                Stmt::Exit(3),
                Stmt::Echo("never".into()),
            ])
        );
    }

    #[test]
    fn loops_and_servers() {
        let p = program(&cmd(&[
            "sh",
            "-c",
            "while true; do echo tick; sleep 1; done",
        ]));
        assert_eq!(
            p,
            Program::Script(vec![Stmt::Loop(vec![
                Stmt::Echo("tick".into()),
                Stmt::Sleep(Some(Duration::from_secs(1)))
            ])])
        );
        assert_eq!(program(&[]), Program::Server);
        assert_eq!(
            program(&cmd(&["nginx", "-g", "daemon off;"])),
            Program::Server
        );
        assert_eq!(
            program(&cmd(&["sleep", "infinity"])),
            Program::Script(vec![Stmt::Sleep(None)])
        );
        assert_eq!(program(&cmd(&["env"])), Program::Script(vec![Stmt::Env]));
        assert_eq!(
            program(&cmd(&["sleep", "2m"])),
            Program::Script(vec![Stmt::Sleep(Some(Duration::from_secs(120)))])
        );
    }
}
