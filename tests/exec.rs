#![allow(clippy::unwrap_used)]
//! The kubelet streaming API end to end (issue #5): `kubectl exec`,
//! `attach` and `port-forward` v1.36.3 through the real kube-apiserver to
//! skylet with the simulated backend, over every client protocol:
//!
//! * kubectl's default WebSocket client, which kube-apiserver passes through
//!   untranslated because the Node declares `ExtendWebSocketsToKubelet`
//!   (exec: `v5.channel.k8s.io`; port-forward: `SPDY/3.1+portforward.k8s.io`);
//! * the same with the feature not declared (`SKYLET_WEBSOCKET_TO_KUBELET=false`):
//!   the apiserver translates to SPDY;
//! * kubectl's SPDY client (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
//!   `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`);
//! * kube-rs (WebSocket `v5`/`v4.channel.k8s.io`, port-forward over channels).
//!
//! Which path a session took is read from skylet's log (`transport=…`).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{AttachParams, PostParams},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet, eventually, k8s::output_with_stdin, tty::kubectl_exec_tty,
    unique_name as unique,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// The WebSocket-to-kubelet switch of skylet's Node (see `src/node`).
const NO_WEBSOCKET: (&str, &str) = ("SKYLET_WEBSOCKET_TO_KUBELET", "false");
/// kubectl's switches back to its SPDY clients.
const SPDY_EXEC: (&str, &str) = ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
const SPDY_PORT_FORWARD: (&str, &str) = ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");

/// A skylet with one running pod (`main` logs `tick N` twice a second).
struct Fixture {
    cp: &'static ControlPlane,
    client: Client,
    skylet: Skylet,
    ns: String,
    pod: String,
}

impl Fixture {
    async fn start(base: &str, env: &[(&str, &str)]) -> Fixture {
        let cp = ControlPlane::shared();
        let client = cp.client().await.unwrap();
        let node = unique(&format!("vn-{base}"));
        let skylet = Skylet::start_with_env(cp, Path::new(BIN), &node, &[], env);
        let nodes: Api<Node> = Api::all(client.clone());
        eventually(
            &format!("node {node} Ready"),
            Duration::from_secs(30),
            || async {
                let n = nodes.get(&node).await.ok()?;
                n.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
        let ns = unique(base);
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let pod = "shell".to_owned();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod},
            "spec": {
                "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": "busybox",
                    "command": ["sh", "-c", "log-every 0.5 tick"],
                    "env": [{"name": "GREETING", "value": "hello from the pod"}],
                    "ports": [{"containerPort": 80}],
                }]
            }
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &p).await.unwrap();
        eventually("the pod Running", Duration::from_secs(60), || async {
            let p = pods.get(&pod).await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        Fixture {
            cp,
            client,
            skylet,
            ns,
            pod,
        }
    }

    /// `kubectl -n NS ARGS` with `env`, feeding `stdin`.
    fn kubectl(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let mut cmd = self.cp.kubectl();
        cmd.args(["-n", &self.ns])
            .args(args)
            .envs(env.iter().copied());
        run(cmd, stdin)
    }

    /// Waits until skylet logged a line containing all of `parts`.
    async fn logged(&self, parts: &[&str]) {
        eventually(
            &format!("skylet to log {parts:?}"),
            Duration::from_secs(10),
            || async {
                self.skylet
                    .log_text()
                    .lines()
                    .any(|l| parts.iter().all(|p| l.contains(p)))
                    .then_some(())
            },
        )
        .await;
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: Command, stdin: &[u8]) -> Out {
    let out = output_with_stdin(cmd, stdin);
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// exec over every kubectl client protocol, checking what the skylet saw.
async fn exec_basics(f: &Fixture, env: &[(&str, &str)], transport: &str) {
    let pod = f.pod.as_str();
    let out = f.kubectl(&["exec", pod, "--", "echo", "hi"], env, b"");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "hi\n"),
        "{}",
        out.stderr
    );

    let out = f.kubectl(
        &["exec", "-i", pod, "--", "cat"],
        env,
        b"piped\nthrough cat\n",
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "piped\nthrough cat\n"),
        "{}",
        out.stderr
    );

    // More than every buffer on the way, both ways at once.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let out = f.kubectl(&["exec", "-i", pod, "--", "cat"], env, &big);
    assert_eq!(
        (out.code, out.stdout.len()),
        (Some(0), big.len()),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.as_bytes() == big.as_slice(),
        "3 MB came back unchanged"
    );

    let out = f.kubectl(
        &[
            "exec",
            pod,
            "--",
            "sh",
            "-c",
            "echo out; stderr err; exit 3",
        ],
        env,
        b"",
    );
    assert_eq!(
        out.code,
        Some(3),
        "kubectl exits with the command's code: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "out\n");
    assert!(
        out.stderr.starts_with("err\n"),
        "stderr is its own stream: {:?}",
        out.stderr
    );
    assert!(
        out.stderr.contains("command terminated with exit code 3"),
        "{:?}",
        out.stderr
    );

    let out = f.kubectl(&["exec", pod, "--", "printenv", "GREETING"], env, b"");
    assert_eq!(
        out.stdout, "hello from the pod\n",
        "the container's env: {}",
        out.stderr
    );

    let out = f.kubectl(&["exec", pod, "--", "no-such-tool"], env, b"");
    assert_eq!(out.code, Some(127));
    assert!(
        out.stderr.contains("sh: no-such-tool: not found"),
        "{}",
        out.stderr
    );

    f.logged(&["session ended", "kind=\"exec\"", transport, "Code(3)"])
        .await;
}

#[tokio::test]
async fn exec_over_websocket_straight_to_skylet() {
    let f = Fixture::start("exec-ws", &[]).await;
    exec_basics(
        &f,
        &[],
        "transport=\"websocket\" protocol=\"v5.channel.k8s.io\"",
    )
    .await;
}

#[tokio::test]
async fn exec_over_spdy_and_translated_websocket() {
    // The Node does not declare ExtendWebSocketsToKubelet: kubectl's
    // WebSocket requests reach skylet translated to SPDY by the apiserver.
    let f = Fixture::start("exec-spdy", &[NO_WEBSOCKET]).await;
    exec_basics(&f, &[], "transport=\"spdy\" protocol=\"v5.channel.k8s.io\"").await;
    // kubectl's own SPDY client
    exec_basics(&f, &[SPDY_EXEC], "transport=\"spdy\"").await;
}

/// `kubectl exec -it … -- sh` on a pseudo-terminal ([`PTY_DRIVER`](skylet_testenv::tty::PTY_DRIVER)).
fn tty_session(f: &Fixture, env: &[(&str, &str)]) {
    let out = kubectl_exec_tty(f.cp, &f.ns, &f.pod, env);
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(
        out.code,
        Some(7),
        "kubectl exits with the shell's code; transcript:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("$ stty size\r\n24 80\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("$ stty size\r\n40 120\r\n"),
        "the resize reached the shell: {}",
        out.stdout
    );
}

#[tokio::test]
async fn exec_tty_shell_sees_the_terminal_size_and_its_resize() {
    let f = Fixture::start("exec-tty", &[]).await;
    tty_session(&f, &[]);
    tty_session(&f, &[SPDY_EXEC]);
    f.logged(&[
        "session ended",
        "transport=\"websocket\"",
        "tty=true",
        "Code(7)",
    ])
    .await;
    f.logged(&["session ended", "transport=\"spdy\"", "tty=true", "Code(7)"])
        .await;
}

#[tokio::test]
async fn attach_streams_the_containers_output_and_feeds_stdin_to_it() {
    let f = Fixture::start("attach", &[]).await;
    for env in [&[][..], &[SPDY_EXEC][..]] {
        // Without stdin: the container's new output, until we detach.
        let mut cmd = Command::new("timeout");
        cmd.args(["3"])
            .arg(f.cp.kubectl().get_program())
            .args(["-n", &f.ns, "attach", &f.pod]);
        cmd.env("KUBECONFIG", &f.cp.kubeconfig)
            .envs(env.iter().copied());
        let out = run(cmd, b"");
        let ticks = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("tick "))
            .count();
        assert!(
            ticks >= 3,
            "attach streams new log lines: {:?} {}",
            out.stdout,
            out.stderr
        );

        // With stdin: each line goes into the container's log; end of
        // input detaches.
        let marker = unique("typed-into-attach");
        let out = f.kubectl(
            &["attach", "-i", &f.pod],
            env,
            format!("{marker}\n").as_bytes(),
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.lines().any(|l| l == marker),
            "the line comes back as output: {:?}",
            out.stdout
        );
        let logs = f.kubectl(&["logs", &f.pod], &[], b"");
        assert!(
            logs.stdout.lines().any(|l| l == marker),
            "and is in the container log"
        );
    }
    f.logged(&[
        "session ended",
        "kind=\"attach\"",
        "transport=\"websocket\"",
    ])
    .await;
    f.logged(&["session ended", "kind=\"attach\"", "transport=\"spdy\""])
        .await;
}

/// `kubectl port-forward pod/NAME :REMOTE`: returns the process and the
/// local port it listens on.
fn port_forward(f: &Fixture, remote: u16, env: &[(&str, &str)]) -> (std::process::Child, u16) {
    let mut child =
        f.cp.kubectl()
            .args([
                "-n",
                &f.ns,
                "port-forward",
                &format!("pod/{}", f.pod),
                &format!(":{remote}"),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    // "Forwarding from 127.0.0.1:40123 -> 80"
    let local = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {first}"));
    std::thread::spawn(move || for _ in lines {});
    (child, local)
}

fn echo_round_trip(local: u16, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", local)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(payload).unwrap();
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).unwrap();
    back
}

async fn port_forward_round_trips(f: &Fixture, env: &[(&str, &str)], transport: &str) {
    let (mut child, local) = port_forward(f, 80, env);
    assert_eq!(
        echo_round_trip(local, b"ping through the tunnel\n"),
        b"ping through the tunnel\n"
    );
    // a second connection over the same forwarder, larger than a frame
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_round_trip(local, &big), big);
    let _ = child.kill();
    let _ = child.wait();
    f.logged(&["port-forward connection open", transport, "port=80"])
        .await;
}

#[tokio::test]
async fn port_forward_round_trips_tcp_over_every_transport() {
    let f = Fixture::start("pf", &[]).await;
    port_forward_round_trips(
        &f,
        &[],
        "transport=\"websocket\" protocol=\"SPDY/3.1+portforward.k8s.io\"",
    )
    .await;
    port_forward_round_trips(
        &f,
        &[SPDY_PORT_FORWARD],
        "transport=\"spdy\" protocol=\"portforward.k8s.io\"",
    )
    .await;

    // An error of the backend reaches kubectl through the error stream.
    let (mut child, local) = port_forward(&f, skylet_mock::REFUSED_PORT, &[]);
    assert_eq!(
        echo_round_trip(local, b"x"),
        b"",
        "the connection is closed"
    );
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("error forwarding port 1 to pod shell")
            && stderr.contains("connection refused"),
        "{stderr}"
    );
}

#[tokio::test]
async fn translated_port_forward_when_websockets_are_not_declared() {
    let f = Fixture::start("pf-spdy", &[NO_WEBSOCKET]).await;
    // kubectl tunnels SPDY through a WebSocket; the apiserver unwraps it.
    port_forward_round_trips(
        &f,
        &[],
        "transport=\"spdy\" protocol=\"portforward.k8s.io\"",
    )
    .await;
}

#[tokio::test]
async fn kube_rs_exec_and_port_forward_over_websocket_channels() {
    let f = Fixture::start("kube-rs", &[]).await;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &f.ns);
    let params = AttachParams::default().stdin(true).stderr(false);
    let mut attached = pods
        .exec(&f.pod, ["sh", "-c", "cat; exit 4"], &params)
        .await
        .unwrap();
    let mut stdin = attached.stdin().unwrap();
    let mut stdout = attached.stdout().unwrap();
    let status = attached.take_status().unwrap();
    stdin.write_all(b"over kube-rs\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "over kube-rs\n");
    let status = status.await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status.details.unwrap().causes.unwrap()[0].message.clone();
    assert_eq!(code.as_deref(), Some("4"));
    attached.join().await.unwrap();
    f.logged(&[
        "session ended",
        "transport=\"websocket\" protocol=\"v5.channel.k8s.io\"",
        "Code(4)",
    ])
    .await;

    let mut pf = pods.portforward(&f.pod, &[80]).await.unwrap();
    let mut stream = pf.take_stream(80).unwrap();
    stream.write_all(b"echo via channels").await.unwrap();
    let mut buf = vec![0u8; 17];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, b"echo via channels");
    drop(stream);
    pf.abort();
    f.logged(&[
        "port-forward connection open",
        "transport=\"websocket\" protocol=\"v4.channel.k8s.io\"",
        "port=80",
    ])
    .await;
}

#[tokio::test]
async fn users_need_pods_exec_and_the_kubelet_port_needs_credentials() {
    let f = Fixture::start("exec-authz", &[]).await;
    // A user who may read pods but not exec into them.
    let user = unique("viewer");
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": f.ns},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pod-reader", "namespace": f.ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "User", "name": user}]
    });
    for obj in [role, binding] {
        let out = f.kubectl(&["apply", "-f", "-"], &[], obj.to_string().as_bytes());
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let kubeconfig = f.cp.kubeconfig_for(&user, &[]).unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let out = f.kubectl(&["--kubeconfig", kc, "get", "pod", &f.pod], &[], b"");
    assert_eq!(
        out.code,
        Some(0),
        "the user can read the pod: {}",
        out.stderr
    );
    for env in [&[][..], &[SPDY_EXEC][..]] {
        let out = f.kubectl(
            &["--kubeconfig", kc, "exec", &f.pod, "--", "echo", "hi"],
            env,
            b"",
        );
        assert_ne!(out.code, Some(0));
        assert!(
            out.stderr.contains("forbidden") && out.stderr.contains("pods/exec"),
            "{}",
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }

    // Straight to the kubelet port without credentials: 401, nothing runs.
    let url = format!(
        "https://127.0.0.1:{}/exec/{}/{}/main?command=echo&command=hi&output=1",
        f.skylet.port, f.ns, f.pod
    );
    let out = run(
        {
            let mut c = Command::new("curl");
            c.args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                &url,
            ]);
            c
        },
        b"",
    );
    assert_eq!(out.stdout, "401", "{}", out.stderr);
    assert!(
        !f.skylet.log_text().contains("kind=\"exec\""),
        "no session started"
    );
}

/// `curl` to skylet's port as kube-apiserver (its kubelet client
/// certificate), with extra headers; returns the status line, headers and body.
fn curl_as_apiserver(f: &Fixture, path: &str, headers: &[&str]) -> String {
    let pki = f.cp.dir().join("pki");
    let mut c = Command::new("curl");
    c.args(["-sk", "-i", "--http1.1", "-X", "POST", "--max-time", "10"])
        .arg("--cert")
        .arg(pki.join("apiserver-kubelet-client.crt"))
        .arg("--key")
        .arg(pki.join("apiserver-kubelet-client.key"));
    for h in headers {
        c.args(["-H", h]);
    }
    c.arg(format!("https://127.0.0.1:{}{path}", f.skylet.port));
    let out = run(c, b"");
    out.stdout
}

#[tokio::test]
async fn kubelet_port_refuses_bad_streaming_requests_before_upgrading() {
    let f = Fixture::start("exec-errors", &[]).await;
    let spdy = [
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
    ];
    let ns = &f.ns;
    let r = curl_as_apiserver(
        &f,
        &format!("/exec/{ns}/shell/nope?command=echo&output=1"),
        &spdy,
    );
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("container \"nope\" is not in pod"),
        "{r}"
    );
    let r = curl_as_apiserver(
        &f,
        &format!("/exec/{ns}/ghost/main?command=echo&output=1"),
        &spdy,
    );
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("is not on this node"),
        "{r}"
    );
    let r = curl_as_apiserver(
        &f,
        &format!(
            "/exec/{ns}/shell/00000000-0000-0000-0000-000000000000/main?command=echo&output=1"
        ),
        &spdy,
    );
    assert!(r.starts_with("HTTP/1.1 404"), "another UID: {r}");
    let r = curl_as_apiserver(&f, &format!("/exec/{ns}/shell/main?command=echo"), &spdy);
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("at least 1 of stdin, stdout, stderr"),
        "{r}"
    );
    let r = curl_as_apiserver(
        &f,
        &format!("/exec/{ns}/shell/main?command=echo&output=1"),
        &[],
    );
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("Upgrade request required"),
        "{r}"
    );
    let old = [
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "X-Stream-Protocol-Version: v9.channel.k8s.io",
    ];
    let r = curl_as_apiserver(
        &f,
        &format!("/exec/{ns}/shell/main?command=echo&output=1"),
        &old,
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{r}"
    );
    let r = curl_as_apiserver(
        &f,
        &format!("/portForward/{ns}/ghost"),
        &[
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: portforward.k8s.io",
        ],
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}
