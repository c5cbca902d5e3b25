#![allow(clippy::unwrap_used, clippy::expect_used)]
//! skylet installed as an operator would (#18): its image (built by
//! `hack/image`, no registry) imported into a real node (kubelet v1.36.3,
//! containerd, runc: `hack/node`) of a control plane of its own, the chart
//! linted, dry-run for every example and installed with helm; then the
//! virtual node runs a Deployment through the simulated backend, and
//! `kubectl logs/exec/port-forward` and the apiserver's node proxy reach it
//! (the client CA from the cluster, the pod IP as node IP); `helm upgrade`
//! rolls skylet keeping every pod; `helm uninstall` leaves the node NotReady,
//! or removed when configured so; with two replicas and leader election,
//! deleting the leader's pod moves the node to the other within 15 s.
//!
//! The remote-Kubernetes backend runs real containers too, on a real node of
//! its remote cluster.
//!
//! Needs root and what `hack/setup test` installs; `hack/test` builds the
//! image first (`hack/image skylet`).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{Api, Client, api::ListParams};
use skylet_testenv::{
    ControlPlane, Skylet, client_from, eventually, hack_dir,
    k8s::{self, running_ready},
    repo_root, unique_name,
};

const RELEASE: &str = "burst";
const NS: &str = "skylet";

/// The cluster and the node, torn down on drop (and by their watchers when
/// the test binary exits).
struct Env {
    cluster: String,
    kubeconfig: PathBuf,
    state: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new(hack_dir().join("node"))
            .args(["down", &self.cluster])
            .status();
        let _ = Command::new(hack_dir().join("cluster"))
            .args(["down", &self.cluster])
            .status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Runs `cmd`; its stdout, or a panic with its stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Env {
    fn kubectl(&self) -> Command {
        let mut c = Command::new(skylet_testenv::k8s_bin().join("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    fn helm(&self) -> Command {
        let bin = run(Command::new(hack_dir().join("tools/build.sh")).args(["--bin", "helm"]));
        let mut c = Command::new(Path::new(bin.trim()).join("helm"));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }
}

fn chart() -> PathBuf {
    repo_root().join("deploy/helm/skylet")
}

/// The reference of the image `hack/image skylet` wrote.
fn skylet_image() -> (PathBuf, String) {
    let images = std::env::var("SKYLET_IMAGES")
        .map_or_else(|_| repo_root().join("target/images"), PathBuf::from);
    let tar = images.join("skylet.tar");
    assert!(
        tar.exists(),
        "{} is missing: run hack/image skylet (hack/test does)",
        tar.display()
    );
    let index = run(Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("./index.json"));
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap()
        .to_owned();
    (tar, name)
}

/// Whether node `name` has condition Ready `status`.
async fn node_ready_is(nodes: &Api<Node>, name: &str, status: &str) -> Option<Node> {
    let n = nodes.get(name).await.ok()?;
    let ready = n
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == status);
    ready.then_some(n)
}

/// The pod of skylet's release, Running and Ready.
async fn skylet_pod(client: &Client) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    eventually(
        "skylet's pod Running and Ready",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(
                    &ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                )
                .await
                .ok()?
                .items;
            let live: Vec<Pod> = list
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == 1 && running_ready(&live[0])).then(|| live[0].clone())
        },
    )
    .await
}

fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.metadata.uid.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_skylet_onto_a_real_node() {
    let pid = std::process::id().to_string();
    let cluster = format!("install-{pid}");
    // the real kubelet reports a Hostname address: never look it up in DNS
    let kubeconfig = run(Command::new(hack_dir().join("cluster"))
        .args(["up", &cluster, "--owner-pid", &pid])
        .env(
            "SKYLET_APISERVER_ARGS",
            "--kubelet-preferred-address-types InternalIP",
        ));
    let state = std::env::temp_dir().join(format!("skylet-install-{pid}"));
    let env = Env {
        cluster: cluster.clone(),
        kubeconfig: PathBuf::from(kubeconfig.trim()),
        state: state.clone(),
    };
    let real_node =
        run(Command::new(hack_dir().join("node")).args(["up", &cluster, "--owner-pid", &pid]))
            .trim()
            .to_owned();
    let (tar, image) = skylet_image();
    run(Command::new(hack_dir().join("node"))
        .args(["load", &cluster])
        .arg(&tar));
    let client = client_from(&env.kubeconfig).await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    run(env.kubectl().args(["create", "namespace", NS]));

    // the chart: lint --strict and a server-side dry run of every example
    let mut examples: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    examples.sort();
    assert!(examples.len() >= 3);
    run(env.helm().args(["lint", "--strict"]).arg(chart()));
    for ex in &examples {
        run(env
            .helm()
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("-f")
            .arg(ex));
        let rendered = run(env
            .helm()
            .args(["template", RELEASE, "--namespace", NS, "--include-crds"])
            .arg(chart())
            .arg("-f")
            .arg(ex));
        let mut apply = env
            .kubectl()
            .args(["apply", "--dry-run=server", "--validate=strict", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        apply
            .stdin
            .take()
            .unwrap()
            .write_all(rendered.as_bytes())
            .unwrap();
        let out = apply.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "server-side dry run of {}: {}",
            ex.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // install: the mock backend's state on the host (a hostPath), so that a
    // new skylet adopts the pods of the old one
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new("chown").arg("65532:65532").arg(&state));
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let values = state.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image: {{repository: {repo}, tag: \"{tag}\", pullPolicy: Never}}\n\
             config:\n  mock: {{state-file: /var/lib/skylet/mock-state.json}}\n\
             extraVolumes: [{{name: state, hostPath: {{path: {}, type: Directory}}}}]\n\
             extraVolumeMounts: [{{name: state, mountPath: /var/lib/skylet}}]\n",
            state.display()
        ),
    )
    .unwrap();
    let install_start = std::time::Instant::now();
    run(env
        .helm()
        .args([
            "install",
            RELEASE,
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "3m",
        ])
        .arg(chart())
        .arg("-f")
        .arg(chart().join("examples/mock.yaml"))
        .arg("-f")
        .arg(&values));
    let pod = skylet_pod(&client).await;
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(real_node.as_str()));
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let vnode = eventually("virtual node Ready", Duration::from_secs(60), || {
        node_ready_is(&nodes, RELEASE, "True")
    })
    .await;
    tracing::info!(elapsed = ?install_start.elapsed(), "skylet installed, its node Ready");
    let addresses = vnode.status.unwrap().addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == pod_ip),
        "the node IP is the pod IP {pod_ip}: {addresses:?}"
    );

    // a Deployment on the virtual node, through the simulated backend
    let ns = k8s::namespace(&client, "install").await;
    let mut template = k8s::node_template(
        RELEASE,
        "hello",
        "echo hello from $(POD_NAME); log-every 1 tick",
    );
    template["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": RELEASE});
    template["spec"]["containers"][0]["env"] = serde_json::json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]);
    k8s::deployment(&client, &ns, "hello", 3, template).await;
    let pods = k8s::pods_where(
        &client,
        &ns,
        "hello",
        3,
        Duration::from_secs(60),
        "Running and Ready",
        running_ready,
    )
    .await;
    let before = uids(&pods);
    let name = pods[0].metadata.name.clone().unwrap();

    // kubectl logs, exec and port-forward through kube-apiserver
    let logs = run(env.kubectl().args(["logs", "-n", &ns, &name]));
    assert!(logs.contains(&format!("hello from {name}")), "{logs}");
    let exec = run(env
        .kubectl()
        .args(["exec", "-n", &ns, &name, "--", "echo", "exec-ok"]));
    assert_eq!(exec.trim(), "exec-ok");
    port_forward(&env, &ns, &name);

    // the apiserver's node proxy: the node's address is not loopback any more
    for path in ["pods", "stats/summary", "runningpods/"] {
        let out = run(env.kubectl().args([
            "get",
            "--raw",
            &format!("/api/v1/nodes/{RELEASE}/proxy/{path}"),
        ]));
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("proxy/{path} is not JSON ({e}): {out}"));
        match path {
            "stats/summary" => assert_eq!(v["node"]["nodeName"], RELEASE, "{out}"),
            _ => assert!(
                v["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["metadata"]["name"] == name.as_str()),
                "proxy/{path}: {out}"
            ),
        }
    }

    // helm upgrade with a changed value: a new skylet, the same pods
    run(env
        .helm()
        .args([
            "upgrade",
            RELEASE,
            "--namespace",
            NS,
            "--reuse-values",
            "--wait",
            "--timeout",
            "3m",
        ])
        .args(["--set", "config.node-labels.skylet\\.io/upgraded=yes"])
        .arg(chart()));
    let new_pod = eventually("a new skylet pod", Duration::from_secs(120), || async {
        let p = skylet_pod(&client).await;
        (p.metadata.uid != pod.metadata.uid).then_some(p)
    })
    .await;
    eventually(
        "the upgraded node labelled",
        Duration::from_secs(60),
        || async {
            let n = node_ready_is(&nodes, RELEASE, "True").await?;
            (n.metadata.labels?.get("skylet.io/upgraded")? == "yes").then_some(())
        },
    )
    .await;
    // three sweeps later the pods are still the same three, Running
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = k8s::pods_where(
        &client,
        &ns,
        "hello",
        3,
        Duration::from_secs(60),
        "Running and Ready after the upgrade",
        running_ready,
    )
    .await;
    assert_eq!(
        uids(&after),
        before,
        "pods were lost or replaced by the upgrade"
    );
    let log =
        run(env
            .kubectl()
            .args(["logs", "-n", NS, new_pod.metadata.name.as_deref().unwrap()]));
    assert!(
        log.contains(r#""pods":3"#) && log.contains("backend holds pods for this node"),
        "the new skylet adopted the three pods from the state file: {log}"
    );
    // logs still reach the pods through the new skylet
    run(env.kubectl().args(["logs", "-n", &ns, &name]));

    // helm uninstall: the node stays, NotReady (node-on-shutdown: keep).
    // helm deletes skylet's RBAC with its Deployment, so skylet's own last
    // write may be refused; the node lifecycle controller then marks the
    // node, whose lease is no longer renewed
    run(env
        .helm()
        .args(["uninstall", RELEASE, "--namespace", NS, "--wait"]));
    eventually(
        "the node NotReady after uninstall",
        Duration::from_secs(90),
        || async {
            let n = nodes.get(RELEASE).await.ok()?;
            let ready = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status != "True").then_some(())
        },
    )
    .await;

    // node-on-shutdown: delete removes the node when skylet stops (scaled
    // to 0 before the uninstall, while its RBAC is there)
    run(env
        .helm()
        .args([
            "install",
            "gone",
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "3m",
        ])
        .args([
            "--set",
            &format!("image.repository={repo}"),
            "--set",
            &format!("image.tag={tag}"),
        ])
        .args([
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "config.node-on-shutdown=delete",
        ])
        .arg(chart()));
    eventually("node gone Ready", Duration::from_secs(60), || {
        node_ready_is(&nodes, "gone", "True")
    })
    .await;
    run(env
        .helm()
        .args([
            "upgrade",
            "gone",
            "--namespace",
            NS,
            "--reuse-values",
            "--wait",
        ])
        .args(["--set", "replicaCount=0"])
        .arg(chart()));
    eventually("node gone removed", Duration::from_secs(60), || async {
        matches!(nodes.get_opt("gone").await, Ok(None)).then_some(())
    })
    .await;
    run(env
        .helm()
        .args(["uninstall", "gone", "--namespace", NS, "--wait"]));

    two_replicas_hand_over(&env, &client, &state, repo, tag).await;
    drop(env);
}

/// Two replicas with leader election (and a PodDisruptionBudget): deleting
/// the leading replica's pod moves the node's leadership to the other
/// within 15 s, the node then points at it, and the workload is untouched.
async fn two_replicas_hand_over(env: &Env, client: &Client, state: &Path, repo: &str, tag: &str) {
    let values = state.join("ha.yaml");
    std::fs::write(
        &values,
        format!(
            "image: {{repository: {repo}, tag: \"{tag}\", pullPolicy: Never}}\n\
             replicaCount: 2\nleaderElection: {{enabled: true}}\n\
             podDisruptionBudget: {{enabled: true}}\n\
             config:\n  mock: {{state-file: /var/lib/skylet/ha-state.json}}\n\
             extraVolumes: [{{name: state, hostPath: {{path: {}, type: Directory}}}}]\n\
             extraVolumeMounts: [{{name: state, mountPath: /var/lib/skylet}}]\n",
            state.display()
        ),
    )
    .unwrap();
    run(env
        .helm()
        .args([
            "install",
            "ha",
            "--namespace",
            NS,
            "--wait",
            "--timeout",
            "3m",
        ])
        .arg(chart())
        .arg("-f")
        .arg(&values));
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("node ha Ready", Duration::from_secs(60), || {
        node_ready_is(&nodes, "ha", "True")
    })
    .await;
    let ns = k8s::namespace(client, "ha").await;
    let mut template = k8s::node_template("ha", "steady", "log-every 1 tick");
    template["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": "ha"});
    k8s::deployment(client, &ns, "steady", 2, template).await;
    let before = uids(
        &k8s::pods_where(
            client,
            &ns,
            "steady",
            2,
            Duration::from_secs(60),
            "Running",
            running_ready,
        )
        .await,
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let holder = |l: Lease| {
        l.spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    };
    let leader = eventually("a leader of node ha", Duration::from_secs(30), || async {
        holder(leases.get("skylet-ha").await.ok()?)
    })
    .await;
    // the identity is the pod name, the process id and a random suffix
    let leader_pod = leader.split('_').next().unwrap().to_owned();
    let skylets: Api<Pod> = Api::namespaced(client.clone(), NS);
    skylets
        .delete(&leader_pod, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("deleting the leader's pod {leader_pod}: {e}"));
    let started = std::time::Instant::now();
    let new_leader = eventually("leadership moved", Duration::from_secs(15), || async {
        let h = holder(leases.get("skylet-ha").await.ok()?)?;
        (!h.starts_with(&format!("{leader_pod}_"))).then_some(h)
    })
    .await;
    tracing::info!(elapsed = ?started.elapsed(), from = %leader, to = %new_leader, "leadership moved");
    let new_pod = skylets
        .get(new_leader.split('_').next().unwrap())
        .await
        .unwrap();
    let new_ip = new_pod.status.unwrap().pod_ip.unwrap();
    eventually(
        "node ha points at the new leader",
        Duration::from_secs(30),
        || async {
            let n = node_ready_is(&nodes, "ha", "True").await?;
            n.status?
                .addresses?
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == new_ip)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = k8s::pods_where(
        client,
        &ns,
        "steady",
        2,
        Duration::from_secs(60),
        "Running",
        running_ready,
    )
    .await;
    assert_eq!(uids(&after), before, "the workload changed with the leader");
    run(env
        .helm()
        .args(["uninstall", "ha", "--namespace", NS, "--wait"]));
}

/// `kubectl port-forward` to the pod's port 8080, where the simulated
/// backend echoes: what is sent comes back.
fn port_forward(env: &Env, ns: &str, pod: &str) {
    let mut child = env
        .kubectl()
        .args(["port-forward", "-n", ns, pod, ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    // "Forwarding from 127.0.0.1:PORT -> 8080"; the rest is read so that
    // kubectl never writes into a closed pipe
    let port: u16 = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {first}"));
    std::thread::spawn(move || for _ in lines {});
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping through port-forward\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(back, b"ping through port-forward\n");
}

/// The remote-Kubernetes backend on real containers (#18): the remote
/// cluster has a real node, so a home pod becomes a busybox container there,
/// and `kubectl logs` and `exec` in the home cluster reach the real process
/// (its output names the machine's kernel, which no simulation knows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_backend_runs_real_containers() {
    let pid = std::process::id().to_string();
    let remote = format!("remote-real-{pid}");
    let kubeconfig = run(Command::new(hack_dir().join("cluster"))
        .args(["up", &remote, "--owner-pid", &pid])
        .env(
            "SKYLET_APISERVER_ARGS",
            "--kubelet-preferred-address-types InternalIP",
        ));
    let env = Env {
        cluster: remote.clone(),
        kubeconfig: PathBuf::from(kubeconfig.trim()),
        state: std::env::temp_dir().join(format!("skylet-remote-real-{pid}")),
    };
    let real_node =
        run(Command::new(hack_dir().join("node")).args(["up", &remote, "--owner-pid", &pid]))
            .trim()
            .to_owned();

    let home = ControlPlane::start("home-real").unwrap();
    let home_client = home.client().await.unwrap();
    let node = unique_name("vn-real");
    let remote_kc = env.kubeconfig.to_str().unwrap().to_owned();
    let _skylet = Skylet::start(
        &home,
        Path::new(env!("CARGO_BIN_EXE_skylet")),
        &node,
        &[
            "--provider",
            "kubernetes",
            "--remote-kubeconfig",
            &remote_kc,
            "--cluster-id",
            "home",
        ],
    );
    k8s::node_ready(&home_client, &node).await;
    let ns = k8s::namespace(&home_client, "real").await;
    let mut template = k8s::node_template(
        &node,
        "real",
        "echo real container on $(uname -r); sleep 3600",
    );
    template["spec"]["containers"][0]["image"] = "localhost/busybox:1.35".into();
    template["spec"]["containers"][0]["imagePullPolicy"] = "Never".into();
    k8s::deployment(&home_client, &ns, "real", 1, template).await;
    let pods = k8s::pods_where(
        &home_client,
        &ns,
        "real",
        1,
        Duration::from_secs(120),
        "Running and Ready",
        running_ready,
    )
    .await;
    let name = pods[0].metadata.name.clone().unwrap();
    let uid = pods[0].metadata.uid.clone().unwrap();

    // in the remote cluster: a container of containerd on the real node
    let remote_client = client_from(&env.kubeconfig).await.unwrap();
    let remote_pods: Api<Pod> = Api::all(remote_client);
    let (remote_pod, container_id) = eventually(
        "the remote pod's container",
        Duration::from_secs(30),
        || async {
            let l = remote_pods
                .list(&ListParams::default().labels(&format!("skylet.io/origin-uid={uid}")))
                .await
                .ok()?
                .items;
            let p = l.into_iter().next()?;
            let id = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .container_id
                .clone()?;
            Some((p, id))
        },
    )
    .await;
    assert_eq!(
        remote_pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(real_node.as_str())
    );
    assert!(container_id.starts_with("containerd://"), "{container_id}");

    // through the home cluster: the real process's output
    let kernel = run(Command::new("uname").arg("-r")).trim().to_owned();
    let logs = eventually("the container's log", Duration::from_secs(30), || async {
        let out = home
            .kubectl()
            .args(["logs", "-n", &ns, &name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("real container").then_some(text)
    })
    .await;
    assert_eq!(logs.trim(), format!("real container on {kernel}"));
    let exec = run(home
        .kubectl()
        .args(["exec", "-n", &ns, &name, "--", "uname", "-r"]));
    assert_eq!(exec.trim(), kernel);
    // the container's own process table: the shell exec'd its last command
    let ps = run(home
        .kubectl()
        .args(["exec", "-n", &ns, &name, "--", "cat", "/proc/1/cmdline"]));
    assert_eq!(ps, "sleep\u{0}3600\u{0}");
    drop(env);
}
