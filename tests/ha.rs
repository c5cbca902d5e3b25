#![allow(clippy::unwrap_used)]
//! Two replicas with leader election (issue #15): one leads each virtual
//! node, the other waits; when the leader dies the standby takes over the
//! node, its kubelet API and its pods, without creating anything twice.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Skylet, eventually,
    k8s::{deployment, namespace, node_ready},
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// A replica of the one-backend fleet `node`, whose simulated backend keeps
/// its state in `state` (the same file for every replica: one backend).
fn replica(cp: &ControlPlane, node: &str, state: &Path, timings: &str) -> Skylet {
    let backends = format!(
        "- {{name: {node}, provider: mock, labels: {{skylet-test: {node}}}, mock: {{state-file: '{}'}}}}",
        state.display()
    );
    let extra = format!("leader-elect: true\nleader-elect-namespace: default\n{timings}");
    Skylet::start_fleet(cp, Path::new(BIN), &backends, &extra)
}

async fn holder(client: &Client, node: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(&format!("skylet-{node}"))
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn kubelet_port(client: &Client, node: &str) -> Option<i32> {
    let n: Node = Api::all(client.clone()).get(node).await.ok()?;
    Some(n.status?.daemon_endpoints?.kubelet_endpoint?.port)
}

async fn running(client: &Client, ns: &str) -> usize {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .count()
}

/// How many creates the backend saw, all replicas together.
fn creates(state: &Path) -> u64 {
    std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["creates"].as_u64())
        .unwrap_or(0)
}

fn template(node: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "nginx"}]
        }
    })
}

#[tokio::test]
async fn the_standby_takes_over_the_node_and_its_pods_when_the_leader_dies() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let node = unique_name("ha");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("backend.json");
    // client-go's default timings: lease 15 s, renew deadline 10 s, retry 2 s
    let mut a = replica(cp, &node, &state, "");
    node_ready(&client, &node).await;
    let mut b = replica(cp, &node, &state, "");
    let leader_a = holder(&client, &node).await.unwrap();
    assert_eq!(
        kubelet_port(&client, &node).await,
        Some(i32::from(a.port)),
        "the Node points at the leader's kubelet API"
    );
    // the standby waits: it registers nothing, writes nothing
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        holder(&client, &node).await.as_deref(),
        Some(leader_a.as_str())
    );
    assert!(
        !b.log_text().contains("skylet running"),
        "the standby does not run the node"
    );

    let ns = namespace(&client, "ha").await;
    deployment(&client, &ns, "web", 20, template(&node)).await;
    eventually("20 pods Running", Duration::from_secs(60), || async {
        (running(&client, &ns).await == 20).then_some(())
    })
    .await;
    assert_eq!(creates(&state), 20);

    // the leader dies (kill -9: no release); the standby takes over
    a.kill();
    let died = Instant::now();
    let leader_b = eventually("the standby leads", Duration::from_secs(40), || async {
        holder(&client, &node).await.filter(|h| *h != leader_a)
    })
    .await;
    let takeover = died.elapsed();
    eventually(
        "the Node points at the new leader",
        Duration::from_secs(20),
        || async { (kubelet_port(&client, &node).await == Some(i32::from(b.port))).then_some(()) },
    )
    .await;
    eprintln!("take-over after {takeover:?} (lease 15 s, retry 2 s); new leader {leader_b}");
    // the standby watches the Lease: it takes over one lease duration after
    // the last renewal it saw, so within 15 s of the death (plus this
    // test's polling and a loaded machine's second)
    assert!(takeover <= Duration::from_secs(15 + 1), "took {takeover:?}");

    // the new leader adopted the pods and runs the scale-up, creating each
    // pod once
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 30}})),
        )
        .await
        .unwrap();
    eventually("30 pods Running", Duration::from_secs(60), || async {
        (running(&client, &ns).await == 30).then_some(())
    })
    .await;
    assert_eq!(
        creates(&state),
        30,
        "nothing created twice across the take-over"
    );
    let node_obj = node_ready(&client, &node).await;
    assert!(node_obj.status.is_some());

    // a graceful stop releases the Lease: the restarted old replica (now
    // the standby) takes over at once
    a.start_again();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop();
    let stopped = Instant::now();
    eventually(
        "the other replica leads again",
        Duration::from_secs(20),
        || async {
            holder(&client, &node)
                .await
                .filter(|h| *h != leader_b && !h.is_empty())
        },
    )
    .await;
    eprintln!("take-over after a graceful stop: {:?}", stopped.elapsed());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "a released Lease is taken at once"
    );
}
