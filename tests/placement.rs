#![allow(clippy::unwrap_used)]
//! Placement by policy against the real control plane (issue #14): the
//! PlacementPolicy CRD, skylet's mutating webhook and its controllers, with
//! several single-backend skylets (simulated backend) as the virtual nodes
//! of the tiers and kwok nodes as the cluster's own.
//!
//! Every test has its own namespace, labelled `placement-test=<namespace>`,
//! its own nodes (labelled the same) and its own webhook configuration,
//! whose skylet only acts in namespaces with that label, so the tests of
//! this file (and the other suites) run side by side.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Node, Pod},
    events::v1::Event,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skylet_testenv::{ControlPlane, Skylet, eventually, repo_root, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// The CRD, applied once per control plane and Established.
fn install_crd(cp: &ControlPlane) {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if done.contains(&cp.name) {
        return;
    }
    let crd = repo_root().join("deploy/crds/placementpolicies.skylet.io.yaml");
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(&crd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply CRD: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cp
        .kubectl()
        .args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/placementpolicies.skylet.io",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CRD not Established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    done.push(cp.name.clone());
}

/// Removes what a test made outside its namespace (nodes, the webhook
/// configuration) and the namespace, when dropped (declared first, so
/// dropped after the skylets).
struct Cleanup<'a> {
    cp: &'a ControlPlane,
    ns: String,
    nodes: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = self
                .cp
                .kubectl()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&[
            "delete",
            "mutatingwebhookconfiguration",
            &hook_name(&self.ns),
            "--ignore-not-found",
        ]);
        for n in &self.nodes {
            quiet(&["delete", "node", n, "--ignore-not-found", "--wait=false"]);
        }
        quiet(&[
            "delete",
            "namespace",
            &self.ns,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

fn hook_name(ns: &str) -> String {
    format!("placement-{ns}")
}

/// A namespace labelled for this test's webhook.
async fn namespace(client: &Client, base: &str) -> String {
    let name = unique_name(base);
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"placement-test": name}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// A virtual node (simulated backend) of tier `tier` for the test of
/// namespace `ns`; `webhook`: it also serves placement for that namespace.
fn virtual_node(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    tier: &str,
    capacity: &str,
    webhook: bool,
) -> Skylet {
    let group = format!("placement-test={ns}");
    let tier = format!("skylet.io/tier={tier}");
    let hook = hook_name(ns);
    let mut args = vec![
        "--provider",
        "mock",
        "--node-label",
        &group,
        "--node-label",
        &tier,
        "--mock-capacity",
        capacity,
    ];
    if webhook {
        args.extend([
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-configuration-name",
            &hook,
            "--placement-namespace-selector",
            &group,
        ]);
    }
    Skylet::start(cp, bin(), name, &args)
}

async fn node_ready(client: &Client, node: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        &format!("node {node} Ready"),
        Duration::from_secs(60),
        || async {
            nodes
                .get(node)
                .await
                .ok()?
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// A policy `name` of `ns` from YAML (its spec).
async fn policy(client: &Client, ns: &str, name: &str, spec: &str) {
    let spec: serde_json::Value = serde_yaml_ng::from_str(spec).unwrap();
    let obj = json!({
        "apiVersion": "skylet.io/v1alpha1",
        "kind": "PlacementPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    });
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &policy_resource());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .unwrap();
}

fn policy_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "skylet.io".into(),
        version: "v1alpha1".into(),
        api_version: "skylet.io/v1alpha1".into(),
        kind: "PlacementPolicy".into(),
        plural: "placementpolicies".into(),
    }
}

/// Waits until the policy's Ready condition has `status` and a message
/// containing `expect`, and returns the message.
async fn policy_ready(client: &Client, ns: &str, name: &str, status: &str, expect: &str) -> String {
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &policy_resource());
    eventually(
        &format!("policy {name} Ready={status} saying {expect:?}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            let conds = p.data["status"]["conditions"].as_array()?.clone();
            let c = conds.iter().find(|c| c["type"] == "Ready")?;
            let msg = c["message"].as_str().unwrap_or_default().to_owned();
            (c["status"] == status && msg.contains(expect)).then_some(msg)
        },
    )
    .await
}

/// A pod template with labels `app`, small requests, no toleration and no
/// node selector: where it may run is the policy's business.
fn template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "log-every 5 tick"],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]
        }
    })
}

async fn deployment(
    client: &Client,
    ns: &str,
    app: &str,
    replicas: i32,
    template: serde_json::Value,
) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}, "template": template}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn scale(client: &Client, ns: &str, app: &str, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            app,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// Waits until the webhook mutates a pod labelled `labels` (a server-side
/// dry run, so nothing is created).
async fn webhook_ready(client: &Client, ns: &str, labels: serde_json::Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "probe-", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(
        "the placement webhook mutates pods",
        Duration::from_secs(60),
        || async {
            let p = pods.create(&pp, &probe).await.ok()?;
            p.annotations()
                .contains_key("skylet.io/placement-policy")
                .then_some(())
        },
    )
    .await;
}

fn running(p: &Pod) -> bool {
    let s = p.status.as_ref();
    p.metadata.deletion_timestamp.is_none()
        && s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Running pods of `app` per node.
fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods.iter().filter(|p| running(p)) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *m.entry(n).or_default() += 1;
        }
    }
    m
}

/// Waits until exactly `want` (node, count) Running pods of `app` exist
/// and nothing else (no other pods, none Terminating).
async fn placed(
    client: &Client,
    ns: &str,
    app: &str,
    want: &[(&str, usize)],
    timeout: Duration,
) -> Vec<Pod> {
    let want: BTreeMap<String, usize> = want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    let total: usize = want.values().sum();
    let deadline = Instant::now() + timeout;
    loop {
        let pods = pods_of(client, ns, app).await;
        let last = per_node(&pods);
        if pods.len() == total && last == want {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "pods of {app} per node: want {want:?}, have {last:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn annotate_price(client: &Client, node: &str, vcpu: f64, gib: f64) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "skylet.io/price-vcpu-hour": vcpu.to_string(),
                "skylet.io/price-memory-gib-hour": gib.to_string(),
            }}})),
        )
        .await
        .unwrap();
}

async fn events_for(client: &Client, ns: &str, pod: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .collect()
}

#[tokio::test]
async fn ordered_policy_fills_tier_1_then_overflows_and_cost_aware_scale_in_removes_tier_2_first() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-ordered").await;
    let (t1, t2) = (unique_name("pl-t1"), unique_name("pl-t2"));
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![t1.clone(), t2.clone()],
    };
    let _s1 = virtual_node(cp, ns, &t1, "1", "cpu=4,memory=8Gi,pods=3", false);
    let _s2 = virtual_node(cp, ns, &t2, "2", "cpu=100,memory=400Gi,pods=100", true);
    node_ready(&client, &t1).await;
    node_ready(&client, &t2).await;
    annotate_price(&client, &t2, 0.04048, 0.004445).await;
    policy(
        &client,
        ns,
        "burst",
        &format!(
            "selector: {{matchLabels: {{app: web}}}}\n\
             tiers:\n\
             - {{name: first, nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '1'}}}}}}\n\
             - {{name: overflow, nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '2'}}}}}}\n\
             scaleIn: CostAware\n"
        ),
    )
    .await;
    policy_ready(
        &client,
        ns,
        "burst",
        "True",
        "in force: first (1 node), overflow (1 node)",
    )
    .await;
    webhook_ready(&client, ns, json!({"app": "web"})).await;

    // tier 1 takes pods while the scheduler sees room (3 pod slots)
    deployment(&client, ns, "web", 3, template("web")).await;
    let pods = placed(&client, ns, "web", &[(&t1, 3)], Duration::from_secs(60)).await;
    let spec = pods[0].spec.as_ref().unwrap();
    let na = spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap();
    let weights: Vec<i32> = na
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.weight)
        .collect();
    assert_eq!(weights, vec![100, 1]);
    assert!(
        spec.tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("virtual-kubelet.io/provider")
                && t.value.as_deref() == Some("mock")),
        "{:?}",
        spec.tolerations
    );

    // full: the next two overflow to tier 2 within 30 s
    scale(&client, ns, "web", 5).await;
    placed(
        &client,
        ns,
        "web",
        &[(&t1, 3), (&t2, 2)],
        Duration::from_secs(30),
    )
    .await;

    // deletion costs: tier 1 above tier 2 (priced), on every pod
    let costs = eventually(
        "deletion costs on all 5 pods",
        Duration::from_secs(30),
        || async {
            let pods = pods_of(&client, ns, "web").await;
            let c: Vec<(String, i64)> = pods
                .iter()
                .filter_map(|p| {
                    let v = p
                        .annotations()
                        .get("controller.kubernetes.io/pod-deletion-cost")?
                        .parse()
                        .ok()?;
                    Some((p.spec.as_ref()?.node_name.clone()?, v))
                })
                .collect();
            (c.len() == 5).then_some(c)
        },
    )
    .await;
    for (node, cost) in &costs {
        // 0.25 vCPU and 0.25 GiB at the Fargate price: $0.0112/h = 112
        let want = if *node == t1 { 200_000 } else { 100_000 - 112 };
        assert_eq!(*cost, want, "{node}: {costs:?}");
    }

    // scale-in removes the two tier-2 replicas
    scale(&client, ns, "web", 3).await;
    placed(&client, ns, "web", &[(&t1, 3)], Duration::from_secs(60)).await;
}

/// kwok, managing the nodes annotated `kwok.x-k8s.io/node=<value>`; killed
/// on drop.
struct Kwok(Child);

impl Drop for Kwok {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kwok v0.8.0 as `hack/setup test` builds it (`$KWOK_BIN/kwok`).
fn kwok_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/hack/lib.sh && echo \"$KWOK_BIN\"",
            repo_root().display()
        ))
        .output()
        .unwrap();
    let bin = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("kwok");
    assert!(
        bin.is_file(),
        "kwok is not installed at {}: run hack/setup test",
        bin.display()
    );
    bin
}

/// A kwok node `name` of the test of `ns` (the cluster's own), `pods`
/// slots, tainted `placement-test=<ns>:NoSchedule` so that no other
/// test's pod lands there.
async fn kwok_node(cp: &ControlPlane, client: &Client, ns: &str, name: &str, pods: u32) -> Kwok {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": ns},
                     "labels": {"type": "kwok", "placement-test": ns, "topology.kubernetes.io/region": "home"}},
        "spec": {"taints": [{"key": "placement-test", "value": ns, "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "32", "memory": "64Gi", "pods": pods.to_string()},
                   "capacity": {"cpu": "32", "memory": "64Gi", "pods": pods.to_string()}}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
    let child = Command::new(kwok_bin())
        .args(["--kubeconfig", cp.kubeconfig.to_str().unwrap()])
        .args([
            "--manage-all-nodes=false",
            &format!("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node={ns}"),
        ])
        .args([
            "--cidr=10.89.0.0/16",
            "--node-ip=10.89.0.1",
            "--node-lease-duration-seconds=40",
        ])
        .args([
            "-c",
            repo_root().join("hack/kwok/stages.yaml").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Kwok(child)
}

#[tokio::test]
async fn own_nodes_first_then_the_cheapest_cloud() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-own").await;
    let (own, dear, cheap) = (
        unique_name("pl-own"),
        unique_name("pl-dear"),
        unique_name("pl-cheap"),
    );
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![own.clone(), dear.clone(), cheap.clone()],
    };
    let _kwok = kwok_node(cp, &client, ns, &own, 2).await;
    let _dear = virtual_node(
        cp,
        ns,
        &dear,
        "cloud",
        "cpu=100,memory=400Gi,pods=100",
        true,
    );
    let _cheap = virtual_node(
        cp,
        ns,
        &cheap,
        "cloud",
        "cpu=100,memory=400Gi,pods=100",
        false,
    );
    for n in [&own, &dear, &cheap] {
        node_ready(&client, n).await;
    }
    annotate_price(&client, &dear, 0.0405, 0.00445).await;
    annotate_price(&client, &cheap, 0.012, 0.0013).await;
    policy(
        &client,
        ns,
        "home-first",
        &format!(
            "selector: {{matchLabels: {{app: api}}}}\n\
             strategy: Cheapest\n\
             tiers:\n\
             - name: own\n  nodeSelector:\n    matchLabels: {{placement-test: {ns}}}\n    matchExpressions: [{{key: type, operator: NotIn, values: [virtual-kubelet]}}]\n\
             - name: cloud\n  nodeSelector: {{matchLabels: {{placement-test: {ns}, type: virtual-kubelet}}}}\n"
        ),
    )
    .await;
    policy_ready(
        &client,
        ns,
        "home-first",
        "True",
        "in force: own (1 node), cloud (2 nodes)",
    )
    .await;
    webhook_ready(&client, ns, json!({"app": "api"})).await;
    // the nodes' prices reach skylet's cache before the pods are compiled
    tokio::time::sleep(Duration::from_secs(1)).await;

    // the pods tolerate the own node's taint themselves (kept by the webhook)
    let mut t = template("api");
    t["spec"]["tolerations"] =
        json!([{"key": "placement-test", "operator": "Exists", "effect": "NoSchedule"}]);
    deployment(&client, ns, "api", 4, t).await;
    let pods = placed(
        &client,
        ns,
        "api",
        &[(&own, 2), (&cheap, 2)],
        Duration::from_secs(60),
    )
    .await;
    let spec = pods[0].spec.as_ref().unwrap();
    let tol = spec.tolerations.as_ref().unwrap();
    assert!(
        tol.iter()
            .any(|t| t.key.as_deref() == Some("placement-test")),
        "{tol:?}"
    );
    let pref = spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    let order: Vec<(i32, String)> = pref
        .iter()
        .map(|t| {
            (
                t.weight,
                t.preference.match_fields.as_ref().unwrap()[0]
                    .values
                    .as_ref()
                    .unwrap()[0]
                    .clone(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![(100, own.clone()), (51, cheap.clone()), (1, dear.clone())]
    );
}

#[tokio::test]
async fn a_pod_no_tier_can_run_is_refused_with_a_message_and_invalid_policies_are_reported() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-refuse").await;
    let vn = unique_name("pl-cpu");
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![vn.clone()],
    };
    let _s = virtual_node(cp, ns, &vn, "1", "cpu=8,memory=32Gi,pods=50", true);
    node_ready(&client, &vn).await;
    policy(
        &client,
        ns,
        "cpu-only",
        &format!("selector: {{matchLabels: {{app: train}}}}\ntiers: [{{nodeSelector: {{matchLabels: {{placement-test: {ns}}}}}}}]\n"),
    )
    .await;
    policy_ready(&client, ns, "cpu-only", "True", "in force").await;
    webhook_ready(&client, ns, json!({"app": "train"})).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let gpu: Pod = serde_json::from_value(json!({
        "metadata": {"name": "gpu", "labels": {"app": "train"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    }))
    .unwrap();
    let err = pods.create(&PostParams::default(), &gpu).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains("nvidia.com/gpu 1"),
        "{}",
        status.message
    );
    assert!(
        status
            .message
            .contains("no node of tiers tier-1 has nvidia.com/gpu"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("add a tier whose nodes have them"),
        "{}",
        status.message
    );

    // a pod no policy selects is left alone
    let other: Pod = serde_json::from_value(json!({
        "metadata": {"name": "other", "labels": {"app": "other"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &other).await.unwrap();
    assert!(
        !created
            .annotations()
            .contains_key("skylet.io/placement-policy")
    );
    assert!(created.spec.unwrap().affinity.is_none());

    // an invalid policy: Ready=False saying what to fix, its pods admitted unchanged
    policy(
        &client,
        ns,
        "broken",
        "selector: {matchLabels: {app: broken}}\ntiers: [{nodeSelector: {}}]\n",
    )
    .await;
    policy_ready(
        &client,
        ns,
        "broken",
        "False",
        "tiers[0].nodeSelector: empty",
    )
    .await;
    let b: Pod = serde_json::from_value(json!({
        "metadata": {"name": "broken", "labels": {"app": "broken"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &b).await.unwrap();
    assert!(
        !created
            .annotations()
            .contains_key("skylet.io/placement-policy")
    );
}

#[tokio::test]
async fn strict_fencing_gates_a_replacement_until_its_predecessor_is_gone() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-fence").await;
    let (a, b) = (unique_name("pl-fa"), unique_name("pl-fb"));
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![a.clone(), b.clone()],
    };
    let sa = virtual_node(cp, ns, &a, "1", "cpu=100,memory=400Gi,pods=100", false);
    let sb = virtual_node(cp, ns, &b, "2", "cpu=100,memory=400Gi,pods=100", true);
    node_ready(&client, &a).await;
    node_ready(&client, &b).await;
    policy(
        &client,
        ns,
        "fenced",
        &format!(
            "selector: {{matchLabels: {{app: db}}}}\n\
             tiers:\n\
             - nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '1'}}}}\n\
             - nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '2'}}}}\n\
             failover: {{tolerationSeconds: 20, fencing: Strict}}\n"
        ),
    )
    .await;
    policy_ready(&client, ns, "fenced", "True", "in force").await;
    webhook_ready(&client, ns, json!({"app": "db"})).await;
    deployment(&client, ns, "db", 1, template("db")).await;
    let first = placed(&client, ns, "db", &[(&a, 1)], Duration::from_secs(60)).await;
    let old = first[0].name_any();
    let tol = first[0]
        .spec
        .as_ref()
        .unwrap()
        .tolerations
        .as_ref()
        .unwrap();
    assert!(
        tol.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.toleration_seconds == Some(20)
        ),
        "{tol:?}"
    );
    assert_eq!(sa.backend_uids(ns).len(), 1);

    // node a's backend stops answering; the pod is deleted: it stays
    // Terminating (skylet cannot confirm the instance gone), and the
    // ReplicaSet's replacement is gated
    sa.set_backend_outage(true);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.delete(&old, &DeleteParams::default()).await.unwrap();
    let replacement = eventually("a gated replacement", Duration::from_secs(30), || async {
        pods_of(&client, ns, "db").await.into_iter().find(|p| {
            p.name_any() != old
                && p.spec
                    .as_ref()
                    .and_then(|s| s.scheduling_gates.as_ref())
                    .is_some_and(|g| g.iter().any(|g| g.name == "skylet.io/fencing"))
        })
    })
    .await;
    let new = replacement.name_any();
    eventually(
        "FencingUnconfirmed on the replacement",
        Duration::from_secs(30),
        || async {
            events_for(&client, ns, &new)
                .await
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FencingUnconfirmed")
                        && e.note.as_deref().unwrap_or("").contains(&old)
                })
                .then_some(())
        },
    )
    .await;
    // held while the predecessor may still run
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(10) {
        let now = pods_of(&client, ns, "db").await;
        let o = now
            .iter()
            .find(|p| p.name_any() == old)
            .expect("the predecessor stays Terminating");
        assert!(o.metadata.deletion_timestamp.is_some());
        let n = now.iter().find(|p| p.name_any() == new).unwrap();
        assert!(
            n.spec.as_ref().unwrap().node_name.is_none(),
            "the replacement was scheduled while its predecessor ran"
        );
        assert!(sb.backend_uids(ns).is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // the backend answers again: the instance is stopped, the predecessor
    // finalized, the gate released, the replacement runs
    sa.set_backend_outage(false);
    eventually(
        "the replacement Running after the predecessor is gone",
        Duration::from_secs(90),
        || async {
            let now = pods_of(&client, ns, "db").await;
            (now.len() == 1 && now[0].name_any() == new && running(&now[0])).then_some(())
        },
    )
    .await;
    let ev = events_for(&client, ns, &new).await;
    assert!(
        ev.iter()
            .any(|e| e.reason.as_deref() == Some("FencingConfirmed")),
        "{ev:?}"
    );
    // one instance in the backends: the replacement's
    let uids: Vec<String> = sa
        .backend_uids(ns)
        .into_iter()
        .chain(sb.backend_uids(ns))
        .collect();
    assert_eq!(uids, vec![replacement.uid().unwrap()]);
}

#[tokio::test]
async fn fail_back_evicts_through_the_eviction_api_and_the_budget_holds() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-back").await;
    let (t1, t2) = (unique_name("pl-b1"), unique_name("pl-b2"));
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![t1.clone(), t2.clone()],
    };
    let _s1 = virtual_node(cp, ns, &t1, "1", "cpu=100,memory=400Gi,pods=100", false);
    let s2 = virtual_node(cp, ns, &t2, "2", "cpu=100,memory=400Gi,pods=100", true);
    node_ready(&client, &t1).await;
    node_ready(&client, &t2).await;
    // tier 1 is out of service (cordoned) while the workload starts
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |on: bool| Patch::Merge(json!({"spec": {"unschedulable": on}}));
    nodes
        .patch(&t1, &PatchParams::default(), &cordon(true))
        .await
        .unwrap();
    policy(
        &client,
        ns,
        "back",
        &format!(
            "selector: {{matchLabels: {{app: svc}}}}\n\
             tiers:\n\
             - nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '1'}}}}\n\
             - nodeSelector: {{matchLabels: {{placement-test: {ns}, skylet.io/tier: '2'}}}}\n\
             rebalance: {{mode: OnRecovery, afterSeconds: 5, maxPerMinute: 60}}\n"
        ),
    )
    .await;
    policy_ready(&client, ns, "back", "True", "in force").await;
    webhook_ready(&client, ns, json!({"app": "svc"})).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "svc"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "svc"}}}
    }))
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    deployment(&client, ns, "svc", 4, template("svc")).await;
    placed(&client, ns, "svc", &[(&t2, 4)], Duration::from_secs(60)).await;

    // tier 1 back; the budget allows no disruption: nothing moves
    nodes
        .patch(&t1, &PatchParams::default(), &cordon(false))
        .await
        .unwrap();
    eventually(
        "a fail-back eviction refused by the budget",
        Duration::from_secs(30),
        || async {
            s2.log_text()
                .contains("fail-back eviction refused (PodDisruptionBudget")
                .then_some(())
        },
    )
    .await;
    let still = per_node(&pods_of(&client, ns, "svc").await);
    assert_eq!(still, BTreeMap::from([(t2.clone(), 4)]));

    // one at a time: all four move back, never more than one unavailable
    pdbs.patch(
        "svc",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut min_running = usize::MAX;
    loop {
        let pods = pods_of(&client, ns, "svc").await;
        let by_node = per_node(&pods);
        let up: usize = by_node.values().sum();
        min_running = min_running.min(up);
        if by_node == BTreeMap::from([(t1.clone(), 4)]) && pods.len() == 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fail-back incomplete: {by_node:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        min_running >= 3,
        "{min_running} of 4 pods were Running and Ready at one point"
    );
    let moved = s2.log_text().matches("evicted for fail-back").count();
    assert!(moved >= 4, "{moved} evictions logged");
}

#[tokio::test]
async fn pods_are_admitted_unchanged_while_the_webhook_is_down() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-down").await;
    let vn = unique_name("pl-down");
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: vec![vn.clone()],
    };
    let mut s = virtual_node(cp, ns, &vn, "1", "cpu=8,memory=32Gi,pods=50", true);
    node_ready(&client, &vn).await;
    policy(
        &client,
        ns,
        "p",
        &format!("tiers: [{{nodeSelector: {{matchLabels: {{placement-test: {ns}}}}}}}]\n"),
    )
    .await;
    policy_ready(&client, ns, "p", "True", "in force").await;
    webhook_ready(&client, ns, json!({"app": "x"})).await;

    // the configuration skylet keeps
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let cfg = hooks.get(&hook_name(ns)).await.unwrap();
    let w = &cfg.webhooks.unwrap()[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.timeout_seconds, Some(5));
    assert!(
        w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| !b.0.is_empty())
    );
    let url = w.client_config.url.clone().unwrap();
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/mutate-pods"),
        "{url}"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let up = pods
        .create(&PostParams::default(), &pod("while-up"))
        .await
        .unwrap();
    assert_eq!(up.annotations()["skylet.io/placement-policy"], "p");

    s.stop();
    let t = Instant::now();
    let down = pods
        .create(&PostParams::default(), &pod("while-down"))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "admission took {:?}",
        t.elapsed()
    );
    assert!(
        !down
            .annotations()
            .contains_key("skylet.io/placement-policy")
    );
    assert!(down.spec.unwrap().affinity.is_none());
}

#[tokio::test]
async fn the_example_policies_are_valid() {
    let cp = ControlPlane::shared();
    install_crd(cp);
    let client = cp.client().await.unwrap();
    let ns = &namespace(&client, "pl-examples").await;
    let _cleanup = Cleanup {
        cp,
        ns: ns.clone(),
        nodes: Vec::new(),
    };
    let dir = repo_root().join("deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("placement-") {
            continue;
        }
        n += 1;
        let out = cp
            .kubectl()
            .args(["apply", "--dry-run=server", "-n", ns, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // and skylet finds them valid
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---") {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap();
            if v["kind"] == "PlacementPolicy" {
                let p: skylet::placement::PlacementPolicy = serde_yaml_ng::from_value(v).unwrap();
                p.spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
    assert!(n >= 2, "{n} example policies in {}", dir.display());
}
