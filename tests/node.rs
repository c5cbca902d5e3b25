#![allow(clippy::unwrap_used)]
//! The virtual node against the real control plane (issue #3): skylet with
//! the simulated backend, the real kube-scheduler and controllers, kubectl.
//!
//! What every backend must do (deploy, logs, delete, restart and orphans,
//! refusals) is the shared scenario list, run for the simulated backend in
//! tests/backends.rs; this file tests the node and the core: registration,
//! scheduling fields, resolution, DaemonSets, the kubelet API and its
//! authorization, certificates, outages of the backend and the apiserver.

use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Node, Pod, Secret},
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    k8s::{event_where, kubectl, namespace, node_ready, pods_where, running_ready},
    unique_name as unique,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// A test's own node: the shared control plane, its admin client, skylet
/// as a node named after `base` with extra `args`, Ready.
async fn started(base: &str, args: &[&str]) -> (&'static ControlPlane, Client, Skylet, String) {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let node = unique(base);
    let s = Skylet::start(cp, bin(), &node, args);
    node_ready(&client, &node).await;
    (cp, client, s, node)
}

/// A pod template that lands on the test's node only.
fn template(node: &str, app: &str, command: &[&str]) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": command}]
        }
    })
}

async fn deployment(
    client: &Client,
    ns: &str,
    node: &str,
    app: &str,
    replicas: i32,
    command: &[&str],
) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}, "template": template(node, app, command)}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn running_pods(client: &Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    let timeout = Duration::from_secs(60);
    pods_where(
        client,
        ns,
        app,
        n,
        timeout,
        "Running and Ready",
        running_ready,
    )
    .await
}

#[tokio::test]
async fn node_registers_with_labels_taint_capacity_and_lease() {
    let (_cp, client, _s, node) = started("vn-register", &["--node-label", "tier=burst"]).await;
    let node = &node;
    let n = node_ready(&client, node).await;
    let labels = n.metadata.labels.unwrap();
    assert_eq!(labels["type"], "virtual-kubelet");
    assert_eq!(labels["kubernetes.io/role"], "agent");
    assert_eq!(labels["skylet.io/provider"], "mock");
    assert_eq!(labels["tier"], "burst");
    let taints = n.spec.unwrap().taints.unwrap();
    assert!(
        taints.iter().any(|t| t.key == "virtual-kubelet.io/provider"
            && t.value.as_deref() == Some("mock")
            && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    let status = n.status.unwrap();
    assert!(status.capacity.unwrap().contains_key("pods"));
    assert_eq!(status.addresses.unwrap()[0].type_, "InternalIP");
    assert!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port
            > 0
    );
    assert!(status.node_info.unwrap().kubelet_version.contains("skylet"));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "kube-node-lease");
    let lease = eventually("the node's Lease", Duration::from_secs(10), || async {
        leases.get(node).await.ok()
    })
    .await;
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(node.as_str())
    );
}

#[tokio::test]
async fn pod_without_toleration_is_not_placed() {
    let (_cp, client, _s, node) = started("vn-taint", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-taint").await;
    let mut t = template(node, "untolerated", &[]);
    t["spec"]["tolerations"] = json!([]);
    t["metadata"]["name"] = json!("untolerated");
    let pod: Pod = serde_json::from_value(t).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = eventually(
        "the scheduler to refuse the pod",
        Duration::from_secs(30),
        || async {
            let p = pods.get("untolerated").await.ok()?;
            let c = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled")?
                .clone();
            (c.status == "False").then_some(c)
        },
    )
    .await;
    assert_eq!(p.reason.as_deref(), Some("Unschedulable"));
    assert!(
        p.message.unwrap_or_default().contains("untolerated taint"),
        "the scheduler names the taint"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        pods.get("untolerated")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none()
    );
}

#[tokio::test]
async fn env_from_configmap_secret_and_field_refs_reaches_the_backend() {
    let (cp, client, _s, node) = started("vn-env", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-env").await;
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "color": "blue"}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let sec: Secret = serde_json::from_value(
        json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3cr3t-value"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sec)
        .await
        .unwrap();
    let mut t = template(
        node,
        "envpod",
        &["sh", "-c", "env; cat /etc/cfg/greeting; log-every 5 alive"],
    );
    t["metadata"]["name"] = json!("envpod");
    t["metadata"]["labels"]["tier"] = json!("gold");
    t["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]);
    t["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MY_TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {"name": "MY_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "MY_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
        {"name": "COMPOSED", "value": "$(GREETING)-$(MY_POD)"}
    ]);
    t["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "64Mi"}});
    t["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/etc/cfg"}]);
    t["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "cfg"}}]);
    let pod: Pod = serde_json::from_value(t).unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    running_pods(&client, ns, "envpod", 1).await;
    let out = eventually(
        "the env dump in the logs",
        Duration::from_secs(20),
        || async {
            let (ok, out, _) = kubectl(cp, &["logs", "-n", ns, "envpod"]);
            (ok && out.contains("alive")).then_some(out)
        },
    )
    .await;
    let my_ns = format!("MY_NS={ns}");
    let my_node = format!("MY_NODE={node}");
    for want in [
        "CFG_greeting=hello",
        "CFG_color=blue",
        "GREETING=hello",
        "PASSWORD=s3cr3t-value",
        "MY_POD=envpod",
        my_ns.as_str(),
        my_node.as_str(),
        "MY_TIER=gold",
        "MY_HOST_IP=127.0.0.1",
        "MY_MEM=64",
        "COMPOSED=hello-envpod",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "{want} missing from:\n{out}"
        );
    }
    assert!(
        out.lines().any(|l| l == "hello"),
        "the configMap volume file reached the backend:\n{out}"
    );
}

#[tokio::test]
async fn missing_configmap_keeps_pod_pending_with_event_until_it_appears() {
    let (_cp, client, _s, node) = started("vn-missing", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-missing").await;
    let mut t = template(node, "waits", &[]);
    t["metadata"]["name"] = json!("waits");
    t["spec"]["containers"][0]["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &serde_json::from_value(t).unwrap())
        .await
        .unwrap();
    eventually(
        "a CreateContainerConfigError status",
        Duration::from_secs(30),
        || async {
            let p = pods.get("waits").await.ok()?;
            let w = p
                .status?
                .container_statuses?
                .first()?
                .state
                .clone()?
                .waiting?;
            (w.reason.as_deref() == Some("CreateContainerConfigError")
                && w.message.unwrap_or_default().contains("later"))
            .then_some(())
        },
    )
    .await;
    event_where(
        &client,
        ns,
        "waits",
        "a Warning event that names the ConfigMap",
        Duration::from_secs(10),
        |e| {
            e.type_.as_deref() == Some("Warning")
                && e.message.as_deref().unwrap_or("").contains("later")
        },
    )
    .await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "later"}, "data": {"x": "1"}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    running_pods(&client, ns, "waits", 1).await;
}

#[tokio::test]
async fn daemonset_pods_are_refused_with_an_event() {
    let (_cp, client, _s, node) = started("vn-ds", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-ds").await;
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template(node, "agent", &[])}
    }))
    .unwrap();
    Api::<DaemonSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let failed = eventually(
        "the DaemonSet pod Failed with DaemonSetPodNotSupported",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=agent"))
                .await
                .ok()?
                .items;
            list.into_iter().find(|p| {
                let s = p.status.as_ref();
                s.and_then(|s| s.phase.as_deref()) == Some("Failed")
                    && s.and_then(|s| s.reason.as_deref()) == Some("DaemonSetPodNotSupported")
            })
        },
    )
    .await;
    let name = failed.metadata.name.unwrap();
    event_where(
        &client,
        ns,
        &name,
        "the DaemonSetPodNotSupported event",
        Duration::from_secs(10),
        |e| e.reason.as_deref() == Some("DaemonSetPodNotSupported"),
    )
    .await;
    let _ = Api::<DaemonSet>::namespaced(client, ns)
        .delete("agent", &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn stop_marks_node_not_ready_and_restart_adopts_pods() {
    let (_cp, client, mut s, node) = started("vn-restart", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-restart").await;
    deployment(&client, ns, node, "kept", 2, &[]).await;
    let before = running_pods(&client, ns, "kept", 2).await;
    let creates = s.backend_creates();
    assert_eq!(creates, 2);

    // a crash: no goodbye; the node lifecycle controller notices the lease expire
    s.kill();
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "the node NotReady and tainted by the node lifecycle controller",
        Duration::from_secs(90),
        || async {
            let n = nodes.get(node).await.ok()?;
            let ready = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            let taint = n
                .spec?
                .taints?
                .into_iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable");
            (ready.status != "True" && taint).then_some(())
        },
    )
    .await;

    s.start_again();
    node_ready(&client, node).await;
    let after = running_pods(&client, ns, "kept", 2).await;
    let uids = |ps: &[Pod]| {
        let mut v: Vec<String> = ps.iter().map(|p| p.metadata.uid.clone().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(uids(&before), uids(&after), "the same pods");
    tokio::time::sleep(Duration::from_secs(3)).await; // a sweep or two
    assert_eq!(
        s.backend_creates(),
        creates,
        "restart adopted the pods without creating them again"
    );
    assert_eq!(s.backend_uids(ns), uids(&after));

    // a graceful stop marks the node NotReady at once
    s.stop();
    let n = nodes.get(node).await.unwrap();
    let ready = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("KubeletStopped"))
    );
}

#[tokio::test]
async fn kubelet_api_authenticates_and_authorizes() {
    let (cp, client, s, _node) = started("vn-auth", &[]).await;
    let ns = &namespace(&client, "node-auth").await;
    let url = format!("https://127.0.0.1:{}/pods", s.port);
    let pki = cp.dir().join("pki");
    let curl = |extra: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&[]), "401", "anonymous");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer not-a-token"]),
        "401",
        "bad token"
    );
    // a user the client CA vouches for, without RBAC on nodes/proxy
    let kc = cp.kubeconfig_for("mallory", &[]).unwrap();
    let _ = kc;
    let (crt, key) = (pki.join("user-mallory.crt"), pki.join("user-mallory.key"));
    assert_eq!(
        curl(&[
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap()
        ]),
        "403",
        "no nodes/proxy"
    );
    // what kube-apiserver presents
    let (crt, key) = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    assert_eq!(
        curl(&[
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap()
        ]),
        "200"
    );
    // a service-account token with the right role passes TokenReview and SAR
    let (ok, _, err) = kubectl(cp, &["create", "serviceaccount", "scraper", "-n", ns]);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        cp,
        &[
            "create",
            "clusterrolebinding",
            ns,
            "--clusterrole=system:kubelet-api-admin",
            &format!("--serviceaccount={ns}:scraper"),
        ],
    );
    assert!(ok, "{err}");
    let (ok, token, err) = kubectl(cp, &["create", "token", "scraper", "-n", ns]);
    assert!(ok, "{err}");
    let auth = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(curl(&["-H", &auth]), "200", "token + RBAC");
}

#[tokio::test]
async fn bad_config_exits_64_with_a_readable_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skylet.yaml");
    std::fs::write(&cfg, "node-name: ok\nnode-taints: [\"x=y:Sometimes\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node-taint") && err.contains("NoSchedule, PreferNoSchedule or NoExecute"),
        "{err}"
    );
    std::fs::write(&cfg, "nodename: typo\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nodename"));
}

#[tokio::test]
async fn kubectl_top_reports_backend_usage_through_metrics_server() {
    let cp = ControlPlane::shared();
    cp.ensure_metrics_server().unwrap();
    let client = cp.client().await.unwrap();
    let node = &unique("vn-top");
    let _s = Skylet::start(cp, bin(), node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "node-top").await;
    deployment(&client, ns, node, "busy", 1, &[]).await;
    let pod = running_pods(&client, ns, "busy", 1).await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    // metrics-server needs two scrapes (10 s apart) before it reports a pod
    let out = eventually(
        "kubectl top pod to report usage",
        Duration::from_secs(90),
        || async {
            let (ok, out, _) = kubectl(cp, &["top", "pod", "-n", ns, "--no-headers"]);
            (ok && out.contains(&pod)).then_some(out)
        },
    )
    .await;
    // the simulated backend reports 5 millicores and 20 MiB per container
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[0], pod);
    assert!(fields[1].ends_with('m') && fields[1] != "0m", "{out}");
    assert_eq!(fields[2], "20Mi", "{out}");
    let (ok, out, err) = kubectl(cp, &["top", "node", node, "--no-headers"]);
    assert!(ok, "{err}");
    assert!(out.starts_with(node.as_str()), "{out}");
}

#[tokio::test]
async fn backend_outage_makes_the_node_not_ready_until_it_answers() {
    let (_cp, client, mut s, node) = started("vn-outage", &[]).await;
    let node = &node;
    let nodes: Api<Node> = Api::all(client.clone());
    let before = conditions(&nodes, node).await;
    // issue #16: a crash and a restart change no condition's status, so
    // no transition time (the restarted skylet writes a new heartbeat)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.kill();
    s.start_again();
    let restarted = eventually(
        "a heartbeat from the restarted skylet",
        Duration::from_secs(40),
        || async {
            let c = conditions(&nodes, node).await;
            (c["Ready"].2 > before["Ready"].2).then_some(c)
        },
    )
    .await;
    for (type_, (status, since, _)) in &before {
        assert_eq!(
            (&restarted[type_].0, &restarted[type_].1),
            (status, since),
            "{type_} across a restart"
        );
    }

    s.set_backend_outage(true);
    let cond = eventually(
        "Ready=False with ProviderUnreachable",
        Duration::from_secs(40),
        || async {
            let n = nodes.get(node).await.ok()?;
            let c = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False" && c.reason.as_deref() == Some("ProviderUnreachable")).then_some(c)
        },
    )
    .await;
    assert!(
        cond.message
            .unwrap_or_default()
            .contains("simulated outage")
    );
    // only Ready transitioned
    let down = conditions(&nodes, node).await;
    assert!(down["Ready"].1 > before["Ready"].1, "{down:?}");
    for type_ in [
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    ] {
        assert_eq!(down[type_].1, before[type_].1, "{type_} while down");
    }
    s.set_backend_outage(false);
    node_ready(&client, node).await;
    let up = conditions(&nodes, node).await;
    assert!(up["Ready"].1 > down["Ready"].1, "{up:?}");
    assert_eq!(up["MemoryPressure"].1, before["MemoryPressure"].1);
}

/// The Node's conditions: type -> (status, lastTransitionTime,
/// lastHeartbeatTime).
async fn conditions(
    nodes: &Api<Node>,
    node: &str,
) -> std::collections::BTreeMap<String, (String, Timestamp, Timestamp)> {
    let n = nodes.get(node).await.expect("the Node");
    let conds = n.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conds.len() >= 5, "the Node's conditions: {conds:?}");
    conds
        .into_iter()
        .map(|c| {
            let at = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.unwrap_or_else(|| panic!("{} has both times", c.type_)).0
            };
            (
                c.type_.clone(),
                (
                    c.status.clone(),
                    at(c.last_transition_time.clone()),
                    at(c.last_heartbeat_time.clone()),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn serving_certificate_comes_from_an_approved_csr() {
    let (cp, client, s, node) = started("vn-csr", &["--serving-cert", "csr"]).await;
    let node = &node;
    let ca = cp.dir().join("pki/ca.crt");
    let pki = cp.dir().join("pki");
    let url = format!("https://127.0.0.1:{}/healthz", s.port);
    let verified = || {
        Command::new("curl")
            .args(["-sf", "--cacert", ca.to_str().unwrap()])
            .args([
                "--cert",
                pki.join("apiserver-kubelet-client.crt").to_str().unwrap(),
            ])
            .args([
                "--key",
                pki.join("apiserver-kubelet-client.key").to_str().unwrap(),
            ])
            .arg(&url)
            .status()
            .is_ok_and(|st| st.success())
    };
    assert!(
        !verified(),
        "before approval the certificate is self-signed"
    );
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        Api::all(client.clone());
    let prefix = format!("skylet-serving-{node}-");
    let name = eventually("skylet's CSR", Duration::from_secs(20), || async {
        let list = csrs.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find_map(|c| c.metadata.name.filter(|n| n.starts_with(&prefix)))
    })
    .await;
    let csr = csrs.get(&name).await.unwrap();
    assert_eq!(csr.spec.signer_name, "kubernetes.io/kubelet-serving");
    let (ok, _, err) = kubectl(cp, &["certificate", "approve", &name]);
    assert!(ok, "{err}");
    eventually(
        "the cluster-signed certificate served",
        Duration::from_secs(30),
        || async { verified().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn survives_an_apiserver_restart() {
    let cp = ControlPlane::start("apirestart").unwrap();
    let client = cp.client().await.unwrap();
    let node = "vn-apirestart";
    let mut s = Skylet::start(&cp, bin(), node, &[]);
    node_ready(&client, node).await;
    let ns = &namespace(&client, "node-apirestart").await;
    deployment(&client, ns, node, "before", 1, &[]).await;
    running_pods(&client, ns, "before", 1).await;
    cp.stop_component("kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cp.start_component("kube-apiserver").unwrap();
    let client = cp.client().await.unwrap();
    node_ready(&client, node).await;
    deployment(&client, ns, node, "after", 2, &[]).await;
    running_pods(&client, ns, "after", 2).await;
    running_pods(&client, ns, "before", 1).await;
    assert!(!s.log_text().contains("panicked"), "no panic in skylet");
    s.stop();
}

#[tokio::test]
async fn kubelet_api_endpoints_answer_like_a_kubelet() {
    let (cp, client, s, node) = started("vn-api", &[]).await;
    let node = &node;
    let ns = &namespace(&client, "node-api").await;
    deployment(
        &client,
        ns,
        node,
        "api",
        1,
        &["sh", "-c", "echo first; echo second; log-every 1 tick"],
    )
    .await;
    let pod = running_pods(&client, ns, "api", 1).await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let pki = cp.dir().join("pki");
    let get = |path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .args([
                "--cert",
                pki.join("apiserver-kubelet-client.crt").to_str().unwrap(),
            ])
            .args([
                "--key",
                pki.join("apiserver-kubelet-client.key").to_str().unwrap(),
            ])
            .arg(format!("https://127.0.0.1:{}{path}", s.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = get("/pods");
    assert_eq!(code, "200");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == name.as_str())
    );
    let (code, body) = get("/runningpods/");
    assert_eq!(code, "200");
    assert!(body.contains(&name));
    let (code, body) = get("/stats/summary");
    assert_eq!(code, "200");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    let p = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == name.as_str())
        .unwrap();
    assert_eq!(p["containers"][0]["memory"]["workingSetBytes"], 20 << 20);
    let (code, body) = get("/metrics/resource");
    assert_eq!(code, "200");
    assert!(body.contains(&format!("container_memory_working_set_bytes{{container=\"main\",namespace=\"{ns}\",pod=\"{name}\"}}")), "{body}");
    let logs = format!("/containerLogs/{ns}/{name}/main");
    let (code, body) = get(&format!("{logs}?limitBytes=8"));
    assert_eq!((code.as_str(), body.as_str()), ("200", "first\nse"));
    let (code, body) = get(&format!("{logs}?timestamps=true&tailLines=1"));
    assert_eq!(code, "200");
    let (ts, line) = body.trim_end().split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{body}");
    assert!(line.starts_with("tick") || line == "second", "{body}");
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    let (code, body) = get(&format!("{logs}?sinceTime={future}"));
    assert_eq!((code.as_str(), body.as_str()), ("200", ""));
    assert_eq!(get(&format!("{logs}?tailLines=abc")).0, "400");
    assert_eq!(
        get(&format!("{logs}?sinceSeconds=5&sinceTime={future}")).0,
        "400"
    );
    assert_eq!(get(&format!("/containerLogs/{ns}/{name}/nope")).0, "404");
    assert_eq!(get(&format!("/containerLogs/{ns}/missing/main")).0, "404");
    assert_eq!(get("/no/such/path").0, "404");
}

/// Under a backlog, pods start in the order they reached the node: none
/// waits behind pods that arrived after it (kube-runtime's own concurrency
/// limit would start held reconciles in hash order, so one pod of a burst
/// could wait for the whole burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_start_in_the_order_they_arrive() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    const N: usize = 150;
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let node = &unique("vn-fifo");
    // one reconcile at a time per lane: a burst of creates is a backlog
    let _s = Skylet::start(
        cp,
        bin(),
        node,
        &["--concurrency", "1", "--status-concurrency", "1"],
    );
    node_ready(&client, node).await;
    let ns = &namespace(&client, "node-fifo").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    // the namespace's pod events, in the API server's order: ADDED is the
    // order in which the pods reach skylet's watch too
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let pods = pods.clone();
        async move {
            let stream = watcher(pods, watcher::Config::default()).touched_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(p)) = stream.next().await {
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if tx
                    .send((p.metadata.name.unwrap_or_default(), running))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    futures::stream::iter(0..N)
        .for_each_concurrent(30, |i| {
            let pods = pods.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{i:03}"), "labels": {"app": "fifo"}},
                    "spec": {
                        "nodeName": node,
                        "automountServiceAccountToken": false,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "main", "image": "busybox"}]
                    }
                }))
                .unwrap();
                pods.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .await;

    let mut arrived: Vec<String> = Vec::new();
    let mut started: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while started.len() < N {
        let (name, running) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("all pods Running in 90 s")
            .unwrap();
        if !arrived.contains(&name) {
            arrived.push(name.clone());
        }
        if running && !started.contains(&name) {
            started.push(name);
        }
    }
    watch.abort();
    // every pod of the first third to arrive was Running before any pod of
    // the last third
    let rank = |name: &String| started.iter().position(|s| s == name).unwrap();
    let first = arrived[..N / 3].iter().map(rank).max().unwrap();
    let last = arrived[N - N / 3..].iter().map(rank).min().unwrap();
    assert!(
        first < last,
        "a pod of the first third to arrive became Running as number {first}, after a pod of the last third (number {last}); order: {started:?}"
    );
}
