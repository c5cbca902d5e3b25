//! Words and statements, as sh splits them: statements end at `;` and
//! newlines, words at blanks; single quotes keep everything, double quotes
//! keep everything but `\$`, `` \` ``, `\"`, `\\` and `\<newline>`, a
//! backslash outside quotes keeps the next character (`\<newline>` joins
//! lines), and `#` at the start of a word comments out the rest of the line.
//! There are no expansions, redirections or operators: `$HOME`, `>` and
//! `&&` are ordinary characters.
//!
//! This is what [`shlex`](https://docs.rs/shlex) splits (skylet's ACI
//! backend quotes exec commands with it), plus the statement separators.
//! Also here: the arguments of `sleep`, `exit` and `load`, and the names of the
//! shells whose `-c SCRIPT` is a script.

use std::time::Duration;

/// One statement: its words and the source text they came from (trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The words, quotes removed; never empty.
    pub words: Vec<String>,
    /// The statement as written (for messages).
    pub text: String,
}

/// A script split into statements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// The statements in order; blank and comment-only ones are skipped.
    pub statements: Vec<Statement>,
    /// The text of a last statement whose quote (or trailing backslash)
    /// never ends: it is not in `statements`.
    pub unterminated: Option<String>,
}

/// What `$?` becomes in the words of [`split_marking_status`]: a
/// character of Unicode's private use area, for exec to replace with the
/// last code.
pub const STATUS: char = '\u{E000}';

/// Splits `source` into statements of words.
pub fn split(source: &str) -> Script {
    split_with(source, false)
}

/// Splits `source` as [`split`] does, with each `$?` outside single quotes
/// (and not escaped) replaced by [`STATUS`], as sh would expand it.
pub fn split_marking_status(source: &str) -> Script {
    split_with(source, true)
}

fn split_with(source: &str, status: bool) -> Script {
    let mut script = Script::default();
    let mut chars = source.char_indices().peekable();
    let mut start = 0;
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    while let Some((i, c)) = chars.next() {
        let complete = match c {
            ';' | '\n' => {
                words.extend(word.take());
                if !words.is_empty() {
                    script.statements.push(Statement {
                        words: std::mem::take(&mut words),
                        text: source[start..i].trim().to_owned(),
                    });
                }
                start = i + 1;
                true
            }
            ' ' | '\t' => {
                words.extend(word.take());
                true
            }
            '#' if word.is_none() => {
                while chars.next_if(|&(_, c)| c != '\n').is_some() {}
                true
            }
            '\'' => single_quoted(&mut chars, word.get_or_insert_default()),
            '"' => double_quoted(&mut chars, word.get_or_insert_default(), status),
            '$' if status && chars.next_if(|&(_, c)| c == '?').is_some() => {
                word.get_or_insert_default().push(STATUS);
                true
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => true,
                Some((_, next)) => {
                    word.get_or_insert_default().push(next);
                    true
                }
                None => false,
            },
            c => {
                word.get_or_insert_default().push(c);
                true
            }
        };
        if !complete {
            script.unterminated = Some(source[start..].trim().to_owned());
            return script;
        }
    }
    words.extend(word);
    if !words.is_empty() {
        script.statements.push(Statement {
            words,
            text: source[start..].trim().to_owned(),
        });
    }
    script
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// The rest of a single-quoted string into `word`; false if it never ends.
fn single_quoted(chars: &mut Chars<'_>, word: &mut String) -> bool {
    for (_, c) in chars.by_ref() {
        if c == '\'' {
            return true;
        }
        word.push(c);
    }
    false
}

/// The rest of a double-quoted string into `word` (`$?` as [`STATUS`] with
/// `status`); false if it never ends.
fn double_quoted(chars: &mut Chars<'_>, word: &mut String, status: bool) -> bool {
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => return true,
            '$' if status && chars.next_if(|&(_, c)| c == '?').is_some() => word.push(STATUS),
            '\\' => match chars.next() {
                Some((_, next @ ('$' | '`' | '"' | '\\'))) => word.push(next),
                Some((_, '\n')) => {}
                Some((_, next)) => {
                    word.push('\\');
                    word.push(next);
                }
                None => return false,
            },
            c => word.push(c),
        }
    }
    false
}

/// How long `sleep` waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// This long.
    For(Duration),
    /// Until stopped (`sleep infinity`).
    Forever,
}

impl Wait {
    /// Waits.
    pub async fn elapse(self) {
        match self {
            Self::For(d) => tokio::time::sleep(d).await,
            Self::Forever => std::future::pending().await,
        }
    }
}

/// `sleep`'s argument: seconds, fractions allowed, with an optional `s`,
/// `m`, `h` or `d` suffix, or `infinity` (`inf`); `None` if it is none of
/// these. A wait too long to represent is forever.
pub fn duration(arg: &str) -> Option<Wait> {
    if arg == "infinity" || arg == "inf" {
        return Some(Wait::Forever);
    }
    let (number, unit) = match arg.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&arg[..i], c),
        _ => (arg, 's'),
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        'm' => n * 60.0,
        'h' => n * 3600.0,
        'd' => n * 86400.0,
        _ => n,
    };
    Some(Duration::try_from_secs_f64(secs).map_or(Wait::Forever, Wait::For))
}

/// `exit`'s argument: an integer, taken modulo 256 as a process's exit
/// status is; `None` if it is not an integer.
pub fn exit_code(arg: &str) -> Option<i32> {
    let n: i64 = arg.parse().ok()?;
    i32::try_from(n.rem_euclid(256)).ok()
}

/// `load`'s CPU argument in millicores: `500m`, `0.5`, `2` (cores), as
/// Kubernetes writes CPU quantities; `None` if it is none of these.
pub fn millicores(arg: &str) -> Option<u64> {
    let (number, scale) = match arg.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (arg, 1000.0),
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some((n * scale).round() as u64)
}

/// `load`'s memory argument in bytes: a number with an optional binary
/// (`Ki`, `Mi`, `Gi`) or decimal (`k`, `M`, `G`) suffix, as Kubernetes
/// writes memory quantities; `None` if it is none of these.
pub fn bytes(arg: &str) -> Option<u64> {
    const UNITS: [(&str, f64); 6] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(suffix, scale)| arg.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((arg, 1.0));
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some((n * scale).round() as u64)
}

/// A command's name without its directory: `/bin/echo` is `echo`.
pub fn command_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Whether `word` names a shell (`sh`, `/bin/bash`, `ash`, ...).
pub fn is_shell(word: &str) -> bool {
    matches!(command_name(word), "sh" | "bash" | "ash" | "dash" | "zsh")
}

/// The script of `sh -c SCRIPT [NAME ARGS...]`, of any shell.
pub fn shell_script(argv: &[String]) -> Option<&str> {
    match argv {
        [shell, flag, script, ..] if is_shell(shell) && flag == "-c" => Some(script),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(source: &str) -> Vec<Vec<String>> {
        split(source)
            .statements
            .into_iter()
            .map(|s| s.words)
            .collect()
    }

    #[test]
    fn statements_end_at_semicolons_and_newlines_outside_quotes() {
        let script = split("echo a; echo 'b;c'\n\n exit 3 ;");
        let texts: Vec<&str> = script.statements.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["echo a", "echo 'b;c'", "exit 3"]);
        assert_eq!(script.statements[1].words, ["echo", "b;c"]);
        assert_eq!(script.unterminated, None);
        assert_eq!(words("  ;\n# only a comment\n"), Vec::<Vec<String>>::new());
    }

    #[test]
    fn words_are_quoted_as_in_sh() {
        assert_eq!(
            words(r#"echo "a b" 'c d' e\ f "\$x\n" it\'s"#),
            [["echo", "a b", "c d", "e f", "$x\\n", "it's"]]
        );
        assert_eq!(words("echo ''"), [["echo", ""]]);
        assert_eq!(
            words("echo a#b # c; d\necho e"),
            [["echo", "a#b"], ["echo", "e"]]
        );
        assert_eq!(words("echo a\\\nb"), [["echo", "ab"]]);
    }

    #[test]
    fn an_open_quote_leaves_the_rest_unterminated() {
        let script = split("echo ok; echo 'never; closed");
        assert_eq!(script.statements.len(), 1);
        assert_eq!(script.unterminated.as_deref(), Some("echo 'never; closed"));
        assert!(split("echo \"x").unterminated.is_some());
        assert!(split("echo x\\").unterminated.is_some());
    }

    #[test]
    fn what_shlex_quotes_splits_back() {
        let argv = [
            "echo",
            "a  b",
            "it's",
            "\"q\"",
            "$HOME;",
            "back\\slash",
            "",
            "#hash",
            "new\nline",
            "tab\there",
            "ünï",
        ];
        let line = shlex::try_join(argv).unwrap();
        assert_eq!(words(&line), [argv.map(str::to_owned)]);
    }

    #[test]
    fn sleep_and_exit_arguments() {
        assert_eq!(duration("0.5"), Some(Wait::For(Duration::from_millis(500))));
        assert_eq!(duration("2m"), Some(Wait::For(Duration::from_secs(120))));
        assert_eq!(duration("infinity"), Some(Wait::Forever));
        assert_eq!(duration("1e300h"), Some(Wait::Forever));
        assert_eq!(duration("-1"), None);
        assert_eq!(duration("soon"), None);
        assert_eq!(exit_code("3"), Some(3));
        assert_eq!(exit_code("300"), Some(44));
        assert_eq!(exit_code("-1"), Some(255));
        assert_eq!(exit_code("x"), None);
    }

    #[test]
    fn shells_and_their_scripts() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            shell_script(&argv(&["/bin/sh", "-c", "echo"])),
            Some("echo")
        );
        assert_eq!(shell_script(&argv(&["bash", "-c", "x", "name"])), Some("x"));
        assert_eq!(shell_script(&argv(&["sh", "script.sh"])), None);
        assert_eq!(shell_script(&argv(&["echo", "-c", "x"])), None);
        assert_eq!(command_name("/usr/bin/env"), "env");
    }
}
