//! A terminal for `kubectl exec -it`: the tests that check what a shell
//! sees of the terminal's size drive kubectl on a pseudo-terminal.

use std::process::{Command, Output};

use crate::ControlPlane;

/// Drives `kubectl exec -it … -- sh` on a pseudo-terminal (python's pty):
/// reads the prompt, asks `stty size` (24 80), resizes the terminal to 40
/// rows and 120 columns, asks again, exits with 7; prints the transcript
/// and exits with kubectl's code (99 when an expected text never came).
pub const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    size(0, 24, 80)
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
def expect(pattern, timeout=20):
    global out
    end = time.time() + timeout
    while pattern not in out:
        left = end - time.time()
        if left <= 0:
            sys.stdout.write(out.decode(errors="replace"))
            sys.stdout.write("\nTIMEOUT waiting for %r\n" % pattern)
            sys.exit(99)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            out += data
expect(b"$ ")
os.write(fd, b"stty size\r")
expect(b"24 80")
expect(b"$ ")
size(fd, 40, 120)
time.sleep(1)
os.write(fd, b"stty size\r")
expect(b"40 120")
os.write(fd, b"exit 7\r")
expect(b"exit 7\r\n")
_, status = os.waitpid(pid, 0)
try:
    while True:
        data = os.read(fd, 4096)
        if not data:
            break
        out += data
except OSError:
    pass
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// `kubectl exec -it -n NS POD -- sh` driven by [`PTY_DRIVER`], with `env`.
///
/// # Panics
/// When python3 cannot be run.
pub fn kubectl_exec_tty(cp: &ControlPlane, ns: &str, pod: &str, env: &[(&str, &str)]) -> Output {
    Command::new("python3")
        .args(["-c", PTY_DRIVER])
        .arg(cp.kubectl().get_program())
        .args(["-n", ns, "exec", "-it", pod, "--", "sh"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs")
}
