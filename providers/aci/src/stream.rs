//! `exec` and `attach` on ACI: the ARM call that opens a session, then its
//! WebSocket bridged to skylet's in-memory streams ([`ExecIo`]).
//!
//! # Exec
//! Containers_ExecuteCommand takes one `command` string that ACI splits on
//! whitespace and runs without a shell, and its WebSocket never says how
//! the command ended. So by default ([`Config::exec_exit_code`]) skylet
//! runs `/bin/sh` and writes as its first input the line `<argv,
//! POSIX-shell-quoted>; printf '\036skylet-exit:%d\036' "$?"; exit`
//! ([`skylet_provider::exit_marker`]): the arguments stay apart and the
//! shell prints the command's exit code in a marker that skylet cuts out
//! of the output and returns. The container then needs a `/bin/sh`; a
//! session that ends without the marker (no shell, or the shell was
//! killed) is an error that says so. With `--aci-exec-exit-code=false`,
//! [`command_line`] sends `a b c` as it is when no argument needs quoting
//! (otherwise `/bin/sh` and `exec <argv, quoted>` as the first input), and
//! the exit code is always 0, whatever the command returned. With a
//! terminal, the shell echoes the line it was given. The client connects
//! to the answer's WebSocket, sends the password as the first text
//! message, then the preamble, then stdin as binary messages; the server's
//! messages are the output.
//!
//! * Output: ACI merges stderr into stdout; everything goes to `stdout`
//!   (drained when the client did not ask for it); `stderr` is closed at once.
//! * Terminal: with `tty`, the size is the client's first resize message,
//!   waited for at most [`RESIZE_WAIT`]; later resizes are ignored (ACI
//!   cannot resize a running session).
//! * End of input: ACI has no way to half-close; with a terminal, end of
//!   stdin is sent as Ctrl-D (the terminal turns it into end-of-file),
//!   without one it cannot be signalled and the command keeps running until
//!   it ends by itself or the client leaves.
//!
//! # Attach
//! Containers_Attach answers a WebSocket and a password sent as the
//! `Authorization` header; the server streams the container's output from
//! then on until the container ends. ACI attach takes no input: stdin is
//! read and discarded.
//!
//! # Errors before the session
//! An empty command or one with a NUL byte fails before the first `.await`.
//! A missing group or container is the ARM call's 404, returned before any
//! WebSocket is opened ([`ProviderError::NotFound`]); after that, failures
//! are transient errors.
//!
//! # RBAC
//! `Microsoft.ContainerInstance/containerGroups/containers/exec/action`,
//! `.../containerGroups/containers/attach/action`.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use skylet_provider::{AttachIo, ExecIo, ExitStatus, ProviderError, Reader, Result, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

use skylet_provider::exit_marker;

use crate::client::{ArmClient, Session};
#[cfg(doc)]
use crate::config::Config;

/// How long exec waits for the client's first terminal size.
pub const RESIZE_WAIT: Duration = Duration::from_secs(1);

/// How long opening the WebSocket may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Ctrl-D: end of input on a terminal.
const EOT: u8 = 0x04;

/// The `command` of Containers_ExecuteCommand for `argv`, and the bytes to
/// write first to its stdin, if any (see the module docs).
///
/// NUL bytes cannot be passed to a process and are dropped.
pub fn command_line(argv: &[String]) -> (String, Option<String>) {
    let plain = argv
        .iter()
        .all(|a| !a.is_empty() && !a.contains(char::is_whitespace));
    if plain {
        return (argv.join(" "), None);
    }
    let cleaned: Vec<String> = argv.iter().map(|a| a.replace('\0', "")).collect();
    // without NULs, quoting cannot fail; `unwrap_or_default` is never used
    let quoted = shlex::try_join(cleaned.iter().map(String::as_str)).unwrap_or_default();
    ("/bin/sh".to_owned(), Some(format!("exec {quoted}\n")))
}

fn transient(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient(format!("{what}: {e}"))
}

/// The `command` and first input line that run `argv` under `/bin/sh`,
/// printing its exit code in the marker (see the module docs).
pub fn wrapped_command_line(argv: &[String]) -> (String, String) {
    (
        "/bin/sh".to_owned(),
        format!("{}; exit\n", exit_marker::script(argv)),
    )
}

/// Runs `argv` in `container` of `group`, wired to `io`; with
/// `exit_code`, under `/bin/sh` so that its exit code is known.
///
/// # Errors
/// See the module docs.
pub async fn exec(
    client: &ArmClient,
    rg: &str,
    target: (&str, &str),
    argv: &[String],
    exit_code: bool,
    io: ExecIo,
) -> Result<ExitStatus> {
    let (group, container) = target;
    if argv.is_empty() || argv.iter().all(String::is_empty) {
        return Err(ProviderError::Unsupported(
            "exec needs a command".to_owned(),
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ProviderError::Unsupported(
            "exec arguments cannot contain NUL bytes".to_owned(),
        ));
    }
    let (command, preamble) = if exit_code {
        let (command, line) = wrapped_command_line(argv);
        (command, Some(line))
    } else {
        command_line(argv)
    };
    let ExecIo {
        stdin,
        stdout,
        stderr,
        tty,
        mut resize,
    } = io;
    drop(stderr);
    let mut size = None;
    if tty
        && let Some(rx) = resize.as_mut()
        && let Ok(Some(s)) = tokio::time::timeout(RESIZE_WAIT, rx.recv()).await
    {
        size = Some((s.height, s.width));
    }
    let session = client.exec(rg, group, container, &command, size).await?;
    tracing::debug!(uri = %session.uri, tty, preamble = preamble.is_some(), "exec session opened");
    let mut ws = connect(client, &session, false).await?;
    ws.send(Message::text(session.password.as_str()))
        .await
        .map_err(|e| transient("could not send the exec password", e))?;
    if let Some(p) = preamble {
        ws.send(Message::binary(p.into_bytes()))
            .await
            .map_err(|e| transient("could not send the exec command", e))?;
    }
    let filter = exit_code.then(exit_marker::Filter::new);
    pump(ws, stdin, stdout, Input::Forward { tty }, resize, filter).await
}

/// Attaches `io` to the output of `container` in `group` (no input: see
/// the module docs).
///
/// # Errors
/// See the module docs.
pub async fn attach(
    client: &ArmClient,
    rg: &str,
    group: &str,
    container: &str,
    io: AttachIo,
) -> Result<ExitStatus> {
    let AttachIo {
        stdin,
        stdout,
        stderr,
        resize,
        ..
    } = io;
    drop(stderr);
    let session = client.attach(rg, group, container).await?;
    if stdin.is_some() {
        tracing::debug!("ACI attach takes no input; stdin is discarded");
    }
    tracing::debug!(uri = %session.uri, "attach session opened");
    let ws = connect(client, &session, true).await?;
    pump(ws, stdin, stdout, Input::Discard, resize, None).await
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the session's WebSocket, trusting the ARM client's roots; with
/// `authorization`, the password goes in the `Authorization` header.
async fn connect(client: &ArmClient, session: &Session, authorization: bool) -> Result<Ws> {
    let mut request = session
        .uri
        .as_str()
        .into_client_request()
        .map_err(|e| transient("invalid WebSocket URI from ACI", e))?;
    if authorization {
        let mut value = HeaderValue::from_str(&session.password).map_err(|_| {
            ProviderError::transient("the attach password is not a valid header value")
        })?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    let connector = Connector::Rustls(client.tls());
    let connecting = connect_async_tls_with_config(request, None, true, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(transient("could not open the ACI WebSocket", e)),
        Err(_) => Err(ProviderError::transient(
            "timed out opening the ACI WebSocket",
        )),
    }
}

/// What to do with the client's input.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// Send it as binary messages (Ctrl-D at its end with a terminal).
    Forward { tty: bool },
    /// Read and drop it.
    Discard,
}

async fn read_some(r: &mut Option<Reader>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// How a session ended.
enum End {
    /// The server closed the socket.
    Closed,
    /// The client went away.
    Gone,
}

/// Copies between the WebSocket and the streams until the server closes
/// the socket or the client goes away; with `filter`, the exit code is its
/// marker's.
async fn pump(
    mut ws: Ws,
    mut stdin: Option<Reader>,
    mut stdout: Option<Writer>,
    input: Input,
    mut resize: Option<tokio::sync::mpsc::Receiver<skylet_provider::TermSize>>,
    mut filter: Option<exit_marker::Filter>,
) -> Result<ExitStatus> {
    let mut buf = vec![0u8; 16 * 1024];
    let outcome: Result<End> = loop {
        tokio::select! {
            msg = ws.next() => {
                let data: Bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Text(t))) => Bytes::from(t),
                    Some(Ok(Message::Close(_))) | None => break Ok(End::Closed),
                    Some(Ok(_)) => continue,
                    Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                        break Ok(End::Closed);
                    }
                    Some(Err(e)) => break Err(transient("the ACI WebSocket failed", e)),
                };
                let data = match filter.as_mut() {
                    Some(f) => f.push(&data).into_owned().into(),
                    None => data,
                };
                if let Some(out) = stdout.as_mut()
                    && out.write_all(&data).await.is_err()
                {
                    tracing::debug!("client gone, closing the ACI WebSocket");
                    let _ = ws.close(None).await;
                    break Ok(End::Gone);
                }
                if let Some(out) = stdout.as_mut() {
                    let _ = out.flush().await;
                }
            }
            n = read_some(&mut stdin, &mut buf), if stdin.is_some() => {
                let n = n.unwrap_or(0);
                let Input::Forward { tty } = input else {
                    if n == 0 {
                        stdin = None;
                    }
                    continue;
                };
                let chunk = if n == 0 {
                    stdin = None;
                    if !tty {
                        continue;
                    }
                    Bytes::from_static(&[EOT])
                } else {
                    Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())
                };
                if let Err(e) = ws.send(Message::Binary(chunk)).await {
                    break match e {
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Ok(End::Closed),
                        e => Err(transient("could not send input to ACI", e)),
                    };
                }
            }
            size = recv_resize(&mut resize), if resize.is_some() => {
                if size.is_none() {
                    resize = None;
                }
                // ACI cannot resize a running session
            }
        }
    };
    let held = filter.as_mut().map(exit_marker::Filter::flush);
    if let Some(mut out) = stdout {
        if let Some(held) = held.filter(|h| !h.is_empty()) {
            let _ = out.write_all(&held).await;
        }
        let _ = out.shutdown().await;
    }
    match (outcome?, filter.map(|f| f.code())) {
        (_, None) | (End::Gone, _) => Ok(ExitStatus::Code(0)),
        (End::Closed, Some(Some(code))) => Ok(ExitStatus::Code(code)),
        (End::Closed, Some(None)) => Err(ProviderError::transient(
            "the command ended without reporting its exit code: skylet runs it under /bin/sh \
             to learn the code, which ACI does not report; if the image has no /bin/sh, run \
             skylet with --aci-exec-exit-code=false (the exit code is then always 0)",
        )),
    }
}

async fn recv_resize(
    rx: &mut Option<tokio::sync::mpsc::Receiver<skylet_provider::TermSize>>,
) -> Option<skylet_provider::TermSize> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    /// What a POSIX shell makes of the preamble: `shlex::split` follows the
    /// same rules.
    fn shell_words(preamble: &str) -> Vec<String> {
        let line = preamble
            .strip_prefix("exec ")
            .unwrap()
            .strip_suffix('\n')
            .unwrap();
        shlex::split(line).unwrap()
    }

    #[test]
    fn the_wrapped_command_is_one_shell_line_that_prints_the_code() {
        let a = argv(&["printf", "%s\n", "a  b"]);
        let (cmd, line) = wrapped_command_line(&a);
        assert_eq!(cmd, "/bin/sh");
        let (script, end) = line.rsplit_once("; printf").unwrap();
        assert_eq!(shlex::split(script).unwrap(), a);
        assert_eq!(
            end,
            concat!(r#" '\036skylet-exit:%d\036' "$?"; exit"#, "\n")
        );
    }

    #[test]
    fn plain_arguments_are_sent_as_they_are() {
        assert_eq!(
            command_line(&argv(&["ls", "-l", "/tmp"])),
            ("ls -l /tmp".to_owned(), None)
        );
        // no shell runs them, so shell characters need no quoting
        assert_eq!(
            command_line(&argv(&["echo", "$HOME;", "'q'"])),
            ("echo $HOME; 'q'".to_owned(), None)
        );
    }

    #[test]
    fn spaces_need_the_shell() {
        let a = argv(&["sh", "-c", "echo hello world"]);
        let (cmd, pre) = command_line(&a);
        assert_eq!(cmd, "/bin/sh");
        let pre = pre.unwrap();
        assert!(pre.starts_with("exec ") && pre.ends_with('\n'));
        assert_eq!(shell_words(&pre), a);
    }

    #[test]
    fn quotes_and_specials_round_trip() {
        for a in [
            argv(&["printf", "%s\n", "it's", "a \"b\""]),
            argv(&["echo", "", "x"]),
            argv(&["a\tb", "$(rm -rf /)", "`x`", "new\nline", "back\\slash"]),
        ] {
            let (cmd, pre) = command_line(&a);
            assert_eq!(cmd, "/bin/sh", "{a:?}");
            assert_eq!(shell_words(&pre.unwrap()), a);
        }
    }

    #[test]
    fn empty_arguments_are_kept() {
        let a = argv(&["test", "-n", ""]);
        let (_, pre) = command_line(&a);
        assert_eq!(shell_words(&pre.unwrap()), a);
    }

    #[test]
    fn nul_bytes_are_dropped() {
        let (_, pre) = command_line(&argv(&["a b", "c\0d"]));
        assert_eq!(shell_words(&pre.unwrap()), argv(&["a b", "cd"]));
    }
}
