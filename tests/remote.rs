#![allow(clippy::unwrap_used)]
//! The remote-Kubernetes backend on two real control planes (issue #8): a
//! home cluster where skylet is a node, and a remote cluster whose nodes are
//! simulated by kwok v0.8.0, plus a second skylet (simulated backend) as a
//! remote node that serves logs.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Node, Pod},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    k8s::{event_where, pods_where, running_with_ip},
    kwok::kwok_nodes,
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

async fn namespace(client: &Client, base: &str) -> String {
    let name = unique_name(base);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

async fn node_ready(client: &Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("node {node} Ready"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(node).await.ok()?;
            n.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

fn deployment(
    node: &str,
    app: &str,
    replicas: i32,
    tolerate_kwok: bool,
    volume_cm: Option<&str>,
) -> Deployment {
    let mut tolerations = vec![
        json!({"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if tolerate_kwok {
        tolerations.push(
            json!({"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}),
        );
    }
    let mut spec = json!({
        "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
        "tolerations": tolerations,
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo remote-hello; log-every 0.5 tick"]}]
    });
    if let Some(cm) = volume_cm {
        spec["volumes"] = json!([{"name": "cfg", "configMap": {"name": cm}}]);
        spec["containers"][0]["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/cfg"}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": spec}}
    }))
    .unwrap()
}

/// `n` pods of `app` Running with an IP (`cluster`: which, for the
/// failure message), within 90 s.
async fn running_pods(client: &Client, ns: &str, app: &str, n: usize, cluster: &str) -> Vec<Pod> {
    let what = format!("Running with an IP {cluster}");
    pods_where(
        client,
        ns,
        app,
        n,
        Duration::from_secs(90),
        &what,
        running_with_ip,
    )
    .await
}

#[tokio::test]
async fn pods_run_in_the_remote_cluster_with_reflection_logs_and_outage_recovery() {
    let home = ControlPlane::shared();
    let remote = ControlPlane::start("remote").unwrap();
    let home_client = home.client().await.unwrap();
    let remote_client = remote.client().await.unwrap();
    let _kwok = kwok_nodes(&remote, &[]).await;
    // a simulated-backend skylet as a remote node without a taint: it serves logs
    let remote_vn = Skylet::start(&remote, Path::new(BIN), "remote-vn", &["--no-taint"]);
    node_ready(&remote_client, "remote-vn").await;
    node_ready(&remote_client, "kwok-0").await;

    let node = &unique_name("vn-remote");
    let remote_kc = remote.kubeconfig.to_str().unwrap().to_owned();
    let s = Skylet::start(
        home,
        Path::new(BIN),
        node,
        &[
            "--provider",
            "kubernetes",
            "--remote-kubeconfig",
            &remote_kc,
            "--cluster-id",
            "home",
            "--remote-service-account",
            "home-token",
        ],
    );
    node_ready(&home_client, node).await;
    // capacity is the remote cluster's: 2 kwok nodes of 32 cores, plus the remote skylet
    let n = Api::<Node>::all(home_client.clone())
        .get(node)
        .await
        .unwrap();
    let cpu = n.status.as_ref().unwrap().allocatable.as_ref().unwrap()["cpu"]
        .0
        .clone();
    let cores = match cpu.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().unwrap() / 1000.0,
        None => cpu.parse::<f64>().unwrap(),
    };
    assert!(cores >= 64.0, "remote capacity {cpu}");
    let pods_before: u64 = n.status.as_ref().unwrap().allocatable.as_ref().unwrap()["pods"]
        .0
        .parse()
        .unwrap();

    let ns = &namespace(&home_client, "remote").await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"mode": "v1"}}))
            .unwrap();
    Api::<ConfigMap>::namespaced(home_client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(home_client.clone(), ns);
    deploys
        .create(
            &PostParams::default(),
            &deployment(node, "burst", 2, true, Some("settings")),
        )
        .await
        .unwrap();
    deploys
        .create(
            &PostParams::default(),
            &deployment(node, "logs", 1, false, None),
        )
        .await
        .unwrap();

    // remote pods Running (kwok or the remote skylet), home pods Running with their IPs
    let remote_pods = running_pods(&remote_client, ns, "burst", 2, "in the remote cluster").await;
    for p in &remote_pods {
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l["skylet.io/cluster-id"], "home");
        assert!(
            p.spec
                .as_ref()
                .unwrap()
                .node_name
                .as_deref()
                .is_some_and(|n| n != node.as_str())
        );
    }
    let home_pods = running_pods(&home_client, ns, "burst", 2, "at home").await;
    for hp in &home_pods {
        let uid = hp.metadata.uid.clone().unwrap();
        let rp = remote_pods
            .iter()
            .find(|p| p.metadata.labels.as_ref().unwrap()["skylet.io/origin-uid"] == uid)
            .unwrap();
        assert_eq!(
            hp.status.as_ref().unwrap().pod_ip,
            rp.status.as_ref().unwrap().pod_ip,
            "home pod shows the remote IP"
        );
    }

    // the node's capacity shrinks by what now runs remotely
    let home_nodes: Api<Node> = Api::all(home_client.clone());
    eventually(
        "allocatable pods to drop by the 3 remote pods",
        Duration::from_secs(40),
        || async {
            let n = home_nodes.get(node).await.ok()?;
            let pods: u64 = n.status?.allocatable?.get("pods")?.0.parse().ok()?;
            (pods + 3 <= pods_before).then_some(())
        },
    )
    .await;

    // the home service-account token travels as a Secret mounted in its place
    let remote_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(remote_client.clone(), ns);
    for rp in &remote_pods {
        let name = rp.metadata.name.clone().unwrap();
        let secret = remote_secrets
            .get(&format!("{name}-home-token"))
            .await
            .unwrap();
        let data = secret.data.unwrap();
        assert!(
            !data["token"].0.is_empty()
                && data.contains_key("ca.crt")
                && data["namespace"].0 == ns.as_bytes()
        );
        let vol = rp
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name.starts_with("kube-api-access-"))
            .unwrap();
        assert_eq!(
            vol.secret.as_ref().unwrap().secret_name.as_deref(),
            Some(format!("{name}-home-token").as_str())
        );
    }

    // the remote scheduler's Event reaches the home pod
    let first = home_pods[0].metadata.name.clone().unwrap();
    event_where(
        &home_client,
        ns,
        &first,
        "the remote Scheduled event on the home pod",
        Duration::from_secs(20),
        |e| {
            e.reason.as_deref() == Some("Scheduled")
                && e.message.as_deref().unwrap_or("").starts_with("remote: ")
        },
    )
    .await;

    // the referenced ConfigMap is reflected and kept in sync
    let remote_cms: Api<ConfigMap> = Api::namespaced(remote_client.clone(), ns);
    let copy = eventually(
        "the reflected ConfigMap",
        Duration::from_secs(20),
        || async { remote_cms.get_opt("settings").await.ok()? },
    )
    .await;
    assert_eq!(copy.data.unwrap()["mode"], "v1");
    assert_eq!(
        copy.metadata.owner_references.unwrap().len(),
        2,
        "owned by both remote pods"
    );
    let patch = json!({"data": {"mode": "v2"}});
    Api::<ConfigMap>::namespaced(home_client.clone(), ns)
        .patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "the change to reach the remote copy",
        Duration::from_secs(20),
        || async {
            (remote_cms.get("settings").await.ok()?.data?.get("mode")? == "v2").then_some(())
        },
    )
    .await;

    // logs through home kubectl -> skylet -> remote apiserver -> remote skylet
    let logs_pod = running_pods(&home_client, ns, "logs", 1, "at home")
        .await
        .remove(0);
    let name = logs_pod.metadata.name.unwrap();
    let out = eventually("remote logs at home", Duration::from_secs(20), || async {
        let o = home
            .kubectl()
            .args(["logs", "-n", ns, &name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.starts_with("remote-hello\n").then_some(text)
    })
    .await;
    assert!(out.contains("tick"), "{out}");
    // exec through home kubectl -> skylet -> remote apiserver -> remote skylet
    let o = home
        .kubectl()
        .args(["exec", "-n", ns, &name, "--", "echo", "from", "afar"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from afar\n");
    let o = home
        .kubectl()
        .args(["exec", "-n", ns, &name, "--", "sh", "-c", "exit 4"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "the remote exit code reaches kubectl"
    );
    // logs -f keeps streaming from the remote pod
    let kubectl = skylet_testenv::k8s_bin().join("kubectl");
    let o = Command::new("timeout")
        .args([
            "3",
            kubectl.to_str().unwrap(),
            "logs",
            "-f",
            "--tail=0",
            "-n",
            ns,
            &name,
        ])
        .env("KUBECONFIG", &home.kubeconfig)
        .output()
        .unwrap();
    let followed = String::from_utf8_lossy(&o.stdout);
    assert!(
        followed.lines().filter(|l| l.starts_with("tick")).count() >= 2,
        "followed: {followed:?}"
    );
    // port-forward at home reaches the remote pod's port (the remote skylet echoes)
    let mut pf = home
        .kubectl()
        .args(["-n", ns, "port-forward", &format!("pod/{name}"), ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(pf.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let local: u16 = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {first}"));
    std::thread::spawn(move || for _ in lines {});
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // no half-close: kube-rs's WebSocket port-forward (the hop to the remote
    // apiserver) ends the whole connection when one side closes its writes
    std::io::Write::write_all(&mut tcp, b"across clusters\n").unwrap();
    let mut back = [0u8; 16];
    std::io::Read::read_exact(&mut tcp, &mut back).unwrap();
    assert_eq!(&back, b"across clusters\n");
    let _ = pf.kill();
    let _ = pf.wait();

    // the remote apiserver goes away: the node goes NotReady, and comes back
    // without a duplicate remote pod
    remote.stop_component("kube-apiserver").unwrap();
    let nodes: Api<Node> = Api::all(home_client.clone());
    eventually(
        "the home node NotReady",
        Duration::from_secs(40),
        || async {
            let n = nodes.get(node).await.ok()?;
            let c = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some(())
        },
    )
    .await;
    remote.start_component("kube-apiserver").unwrap();
    node_ready(&home_client, node).await;
    let remote_client = remote.client().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all: Api<Pod> = Api::namespaced(remote_client.clone(), ns);
    assert_eq!(
        all.list(&ListParams::default().labels("app=burst"))
            .await
            .unwrap()
            .items
            .len(),
        2,
        "no duplicates"
    );

    // delete at home -> remote pods and the reflected ConfigMap are gone
    let (ok, _, err) = {
        let o = home
            .kubectl()
            .args(["delete", "deployment", "burst", "-n", ns, "--wait=true"])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(ok, "{err}");
    eventually("remote pods gone", Duration::from_secs(60), || async {
        all.list(&ListParams::default().labels("app=burst"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let home_pods: Api<Pod> = Api::namespaced(home_client.clone(), ns);
    eventually("home pods gone", Duration::from_secs(30), || async {
        home_pods
            .list(&ListParams::default().labels("app=burst"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let remote_cms: Api<ConfigMap> = Api::namespaced(remote_client, ns);
    eventually(
        "the reflected ConfigMap garbage-collected",
        Duration::from_secs(60),
        || async {
            remote_cms
                .get_opt("settings")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    drop(s);
    drop(remote_vn);
}
