//! The toy shell of skylet's simulated containers: one small language for
//! what the simulated backend (`skylet-mock`) and the ACI emulator
//! (`skylet-aci-emulator`) run, so that a container's command means the same
//! in both. It is a test double, not a shell: no variables, no pipes, no
//! redirections.
//!
//! - [`syntax`]: words and statements as sh splits them (quotes,
//!   backslashes, `;` and newlines, `#` comments), `sh -c SCRIPT`
//!   unwrapping, the arguments of `sleep` and `exit`.
//! - [`program`]: what a container runs, from its command; its output is
//!   the container's log. Statements:
//!
//!   | statement | effect |
//!   |---|---|
//!   | `echo WORDS` | prints WORDS |
//!   | `env`, `printenv` | prints the environment, one `NAME=value` a line |
//!   | `cat PATH...` | prints files of the sandbox; a missing one prints `cat: PATH: No such file or directory` and ends the program with code 1 |
//!   | `sleep DURATION` | waits: seconds (fractions allowed), `s`/`m`/`h`/`d` suffixes, `infinity` |
//!   | `log-every SECONDS WORDS` | prints `WORDS 1`, `WORDS 2`, ... every SECONDS (at least 10 ms), forever |
//!   | `exit N` | ends the program with code N (modulo 256) |
//!   | `load CPU [MEMORY]` | the container uses CPU (`500m`, `2`) and MEMORY (`64Mi`) from now on, as the backend's metrics report it ([`Output::load`]) |
//!   | `while true; do ...; done` | repeats its body forever (also `while :`, `until false`); another loop's body runs once |
//!
//!   A leading `do`, `then` or `else` is skipped; anything else is not
//!   understood and skipped ([`program::Output::ignored`]).
//! - [`exec`]: a command run in a running container, with stdin, stdout
//!   and stderr ([`exec::Session`]) and exit codes; its users add their
//!   own commands and error wording through the session.
//!
//! Both run against a [`Sandbox`]: the container's environment and files.

use std::collections::BTreeMap;

use bytes::Bytes;

pub mod exec;
pub mod program;
pub mod syntax;

pub use exec::{Flow, Input, Session, Shell};
pub use program::{Output, Program};

/// What a simulated container sees: its environment and its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sandbox {
    /// `NAME=value` pairs, in order (`env` prints them so).
    pub env: Vec<(String, String)>,
    /// File contents by absolute path.
    pub files: BTreeMap<String, Bytes>,
}
