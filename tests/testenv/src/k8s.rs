//! Kubernetes helpers the backend suites share: namespaces, Deployments,
//! waiting for nodes and pods, `kubectl`, and skylet's metrics.

use std::{
    io::{Read, Write},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Namespace, Node, Pod},
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;

use crate::{ControlPlane, Skylet, eventually, unique_name};

/// Creates a fresh namespace named after `base`.
pub async fn namespace(client: &Client, base: &str) -> String {
    let name = unique_name(base);
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

/// Waits until `node` is Ready and returns it.
pub async fn node_ready(client: &Client, node: &str) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("node {node} Ready"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(node).await.ok()?;
            let ready = n
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(n)
        },
    )
    .await
}

/// A pod template for the test node `node`: labels `app`, the nodeSelector
/// and toleration of a skylet node, one container `main` running `sh -c
/// script` with small requests.
pub fn node_template(node: &str, app: &str, script: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]
        }
    })
}

/// A Deployment `name` with `replicas` of `template` (labels `app: name`).
pub async fn deployment(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
    template: serde_json::Value,
) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}
    }))
    .expect("deployment object");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("deployment created");
}

/// Waits for `n` pods labelled `app` that satisfy `ok`, and returns them.
pub async fn pods_where(
    client: &Client,
    ns: &str,
    app: &str,
    n: usize,
    timeout: Duration,
    what: &str,
    ok: fn(&Pod) -> bool,
) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{n} pods of {app} {what}"), timeout, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?
            .items;
        (list.len() == n && list.iter().all(ok)).then_some(list)
    })
    .await
}

/// Whether a pod is Running with an IP.
pub fn running_with_ip(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.pod_ip.as_ref()).is_some()
}

/// Whether a pod is Running with an IP and Ready.
pub fn running_ready(p: &Pod) -> bool {
    running_with_ip(p)
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's phase (`""` when it has none yet).
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The Events of pod `pod` in `ns`.
pub async fn events_of(client: &Client, ns: &str, pod: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits (up to `timeout`) for an Event of pod `pod` in `ns` that
/// satisfies `ok` (`what`, in the failure message), and returns it.
pub async fn event_where(
    client: &Client,
    ns: &str,
    pod: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Event) -> bool,
) -> Event {
    eventually(what, timeout, || async {
        events_of(client, ns, pod).await.into_iter().find(|e| ok(e))
    })
    .await
}

/// Waits until no pod labelled `app` is left.
pub async fn pods_gone(client: &Client, ns: &str, app: &str, timeout: Duration) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(&format!("pods of {app} gone"), timeout, || async {
        pods.list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// Runs kubectl as the admin: (success, stdout, stderr).
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let out = cp.kubectl().args(args).output().expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` with `stdin` written to it (from another thread: the
/// command may answer before it read everything), capturing its output.
///
/// # Panics
/// When the command cannot be started.
pub fn output_with_stdin(mut cmd: std::process::Command, stdin: &[u8]) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("the command's output");
    let _ = writer.join();
    out
}

/// skylet's Prometheus text.
pub fn scrape(s: &Skylet) -> String {
    let mut out = String::new();
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", s.metrics_port)) {
        let _ = c.write_all(b"GET /metrics HTTP/1.0\r\nHost: skylet\r\n\r\n");
        let _ = c.read_to_string(&mut out);
    }
    out
}

/// The value of the first sample whose line contains every needle (0 if none).
pub fn sample(metrics: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample whose line contains every needle.
pub fn sample_sum(metrics: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
