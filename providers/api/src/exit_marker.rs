//! Exit codes from backends whose exec reports none (ACI's exec WebSocket,
//! ECS Exec's interactive sessions): the command runs under `/bin/sh`,
//! which prints a marker with `$?` after it, and the marker is cut out of
//! the output.
//!
//! The marker is `RS skylet-exit:CODE RS` (RS is the byte 0x1e), printed
//! by `printf '\036skylet-exit:%d\036' "$?"`: the script as written (which
//! a terminal echoes) holds the escape `\036`, never the byte, so only
//! the shell's output can match. [`Filter`] passes output through, holding
//! back only bytes that may start the marker until they can tell.
//!
//! The container then needs a `/bin/sh`; a backend offers a way to turn
//! the wrapping off (and says that the exit code is then unknown).

use std::borrow::Cow;

/// What starts the marker.
const START: &[u8] = b"\x1eskylet-exit:";
/// What ends it.
const END: u8 = 0x1e;
/// Digits of a code at most (`-2147483648`).
const MAX_DIGITS: usize = 11;

/// The statement that prints the marker with the previous statement's code.
pub const PRINT_STATUS: &str = r#"printf '\036skylet-exit:%d\036' "$?""#;

/// `argv` quoted for a POSIX shell (NUL bytes dropped: no process can get
/// them).
pub fn quote(argv: &[String]) -> String {
    let cleaned: Vec<String> = argv.iter().map(|a| a.replace('\0', "")).collect();
    // without NULs, quoting cannot fail; `unwrap_or_default` is never used
    shlex::try_join(cleaned.iter().map(String::as_str)).unwrap_or_default()
}

/// The script that runs `argv` and then prints its exit code: for
/// `sh -c SCRIPT`, or as a line of input to a shell.
pub fn script(argv: &[String]) -> String {
    format!("{}; {PRINT_STATUS}", quote(argv))
}

/// Cuts the marker out of a command's output, remembering its code.
#[derive(Debug, Default)]
pub struct Filter {
    held: Vec<u8>,
    code: Option<i32>,
}

/// How `held` (starting with 0x1e) compares with the marker.
enum Match {
    /// It is a whole marker of this many bytes with this code.
    Whole(usize, i32),
    /// It may become one with more bytes.
    Partial,
    /// It is not one.
    No,
}

fn compare(held: &[u8]) -> Match {
    let n = held.len().min(START.len());
    if held.get(..n) != START.get(..n) {
        return Match::No;
    }
    if held.len() <= START.len() {
        return Match::Partial;
    }
    let rest = held.get(START.len()..).unwrap_or_default();
    for (i, b) in rest.iter().enumerate() {
        let digit = b.is_ascii_digit() || (i == 0 && *b == b'-');
        if *b == END && i > 0 {
            let code = std::str::from_utf8(rest.get(..i).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse::<i32>().ok());
            return match code {
                Some(c) => Match::Whole(START.len() + i + 1, c),
                None => Match::No,
            };
        }
        if !digit || i >= MAX_DIGITS {
            return Match::No;
        }
    }
    Match::Partial
}

impl Filter {
    /// A filter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next output bytes; returns what to pass on now.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if self.held.is_empty() && !data.contains(&START[0]) {
            return Cow::Borrowed(data);
        }
        self.held.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.held.len());
        let mut i = 0;
        while i < self.held.len() {
            let rest = self.held.get(i..).unwrap_or_default();
            let Some(pos) = rest.iter().position(|b| *b == START[0]) else {
                out.extend_from_slice(rest);
                i = self.held.len();
                break;
            };
            out.extend_from_slice(rest.get(..pos).unwrap_or_default());
            i += pos;
            match compare(self.held.get(i..).unwrap_or_default()) {
                Match::Whole(len, code) => {
                    self.code = Some(code);
                    i += len;
                }
                Match::Partial => break,
                Match::No => {
                    out.push(START[0]);
                    i += 1;
                }
            }
        }
        self.held.drain(..i);
        Cow::Owned(out)
    }

    /// The bytes still held back (output that ended on a partial marker).
    pub fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// The code of the last marker seen, if any.
    pub fn code(&self) -> Option<i32> {
        self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<i32>) {
        let mut f = Filter::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&f.push(c));
        }
        out.extend(f.flush());
        (out, f.code())
    }

    #[test]
    fn the_marker_is_cut_out_wherever_the_chunks_split_it() {
        let whole = b"hello\n\x1eskylet-exit:3\x1e".to_vec();
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(run(&[a, b]), (b"hello\n".to_vec(), Some(3)), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(run(&bytes), (b"hello\n".to_vec(), Some(3)));
    }

    #[test]
    fn other_output_passes_as_it_is() {
        assert_eq!(
            run(&[b"a\x1eb", b"\x1eskylet-x"]),
            (b"a\x1eb\x1eskylet-x".to_vec(), None)
        );
        assert_eq!(
            run(&[b"\x1eskylet-exit:12a\x1e"]),
            (b"\x1eskylet-exit:12a\x1e".to_vec(), None)
        );
        // what a terminal echoes of the script is not the marker
        let echoed = script(&["true".to_owned()]);
        assert_eq!(
            run(&[echoed.as_bytes()]),
            (echoed.clone().into_bytes(), None)
        );
    }

    #[test]
    fn quoting_keeps_arguments_apart() {
        let argv: Vec<String> = ["echo", "a  b", "", "it's", "$HOME"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let quoted = quote(&argv);
        assert_eq!(shlex::split(&quoted).unwrap(), argv);
        assert_eq!(
            script(&argv[..1]),
            r#"echo; printf '\036skylet-exit:%d\036' "$?""#
        );
    }
}
