//! The tiny command language of simulated containers (see the crate docs).

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;

use crate::logs::LogBuffer;

/// One statement of a container script.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Statement {
    Echo(String),
    Env,
    Cat(String),
    Sleep(Duration),
    LogEvery(Duration, String),
    Exit(i32),
    /// Anything else: logged as not understood, then ignored.
    Unknown(String),
}

/// Parses a container's command and args. `sh -c SCRIPT` (and `bash -c`) is
/// unwrapped; otherwise the words form one statement.
pub(crate) fn parse(words: &[String]) -> Vec<Statement> {
    let text = match words {
        [] => return Vec::new(),
        [sh, c, script, ..] if (sh.ends_with("sh")) && c == "-c" => script.clone(),
        _ => words.join(" "),
    };
    text.split([';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(statement)
        .collect()
}

fn statement(s: &str) -> Statement {
    let (cmd, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    let rest = rest.trim();
    let secs = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Duration::from_secs_f64)
    };
    match cmd {
        "echo" => Statement::Echo(rest.trim_matches(|c| c == '"' || c == '\'').to_owned()),
        "env" | "printenv" if rest.is_empty() => Statement::Env,
        "cat" if !rest.is_empty() => Statement::Cat(rest.to_owned()),
        "sleep" => secs(rest).map_or_else(|| Statement::Unknown(s.to_owned()), Statement::Sleep),
        "exit" => rest.parse().map_or_else(
            |_| Statement::Unknown(s.to_owned()),
            |n: i32| Statement::Exit(n & 0xff),
        ),
        "log-every" => {
            let (n, words) = rest
                .split_once(char::is_whitespace)
                .unwrap_or((rest, "tick"));
            secs(n).map_or_else(
                || Statement::Unknown(s.to_owned()),
                |d| Statement::LogEvery(d.max(Duration::from_millis(10)), words.trim().to_owned()),
            )
        }
        _ => Statement::Unknown(s.to_owned()),
    }
}

/// What a script can see.
pub(crate) struct Ctx<'a> {
    pub(crate) env: &'a [(String, String)],
    pub(crate) files: &'a BTreeMap<String, Bytes>,
    pub(crate) logs: &'a LogBuffer,
}

/// Runs a script to its end; returns the exit code (0 when it runs off the end).
pub(crate) async fn run(script: &[Statement], ctx: &Ctx<'_>) -> Option<i32> {
    for st in script {
        match st {
            Statement::Echo(s) => ctx.logs.push(s.clone()),
            Statement::Env => {
                for (k, v) in ctx.env {
                    ctx.logs.push(format!("{k}={v}"));
                }
            }
            Statement::Cat(path) => match ctx.files.get(path) {
                Some(data) => {
                    for line in String::from_utf8_lossy(data).lines() {
                        ctx.logs.push(line.to_owned());
                    }
                }
                None => {
                    ctx.logs
                        .push(format!("cat: {path}: No such file or directory"));
                    return Some(1);
                }
            },
            Statement::Sleep(d) => tokio::time::sleep(*d).await,
            Statement::LogEvery(d, words) => {
                let mut n = 0u64;
                loop {
                    n += 1;
                    ctx.logs.push(format!("{words} {n}"));
                    tokio::time::sleep(*d).await;
                }
            }
            Statement::Exit(code) => return Some(*code),
            Statement::Unknown(s) => ctx.logs.push(format!("mock: not understood, ignored: {s}")),
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_sh_c_scripts_and_plain_commands() {
        assert_eq!(
            parse(&w(&["sh", "-c", "echo hi; sleep 0.5\nexit 3"])),
            vec![
                Statement::Echo("hi".into()),
                Statement::Sleep(Duration::from_millis(500)),
                Statement::Exit(3)
            ]
        );
        assert_eq!(
            parse(&w(&["echo", "a", "b"])),
            vec![Statement::Echo("a b".into())]
        );
        assert_eq!(parse(&w(&["env"])), vec![Statement::Env]);
        assert_eq!(
            parse(&w(&["nginx", "-g", "daemon off"])),
            vec![Statement::Unknown("nginx -g daemon off".into())]
        );
        assert!(parse(&[]).is_empty());
    }
}
