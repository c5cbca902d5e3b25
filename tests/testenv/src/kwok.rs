//! kwok v0.8.0 simulating nodes of a second cluster (the remote cluster of
//! the remote-Kubernetes backend): fake nodes that kwok marks Ready and whose
//! pods it runs, Ready, with IPs from 10.88.0.0/16.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{ControlPlane, repo_root};

/// The taint of the fake nodes (pods must tolerate it).
pub const TAINT: &str = "kwok.x-k8s.io/node";

/// A kwok process; killed on drop.
pub struct Kwok(Child);

impl Drop for Kwok {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kwok v0.8.0 as `hack/setup test` builds it (`$KWOK_BIN/kwok`, hack/lib.sh).
///
/// # Panics
/// If it is not there: the tests never build it themselves.
pub fn kwok_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/hack/lib.sh && echo \"$KWOK_BIN\"",
            repo_root().display()
        ))
        .output()
        .expect("bash runs hack/lib.sh");
    assert!(
        out.status.success(),
        "sourcing hack/lib.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("kwok");
    assert!(
        bin.is_file(),
        "kwok is not installed at {}: run hack/setup test",
        bin.display()
    );
    bin
}

/// Two fake nodes `kwok-0`, `kwok-1` in `cp` (labelled `type=kwok` and
/// `labels`, tainted [`TAINT`]), managed by a kwok process.
///
/// # Panics
/// If the nodes cannot be created or kwok cannot start.
pub async fn kwok_nodes(cp: &ControlPlane, labels: &[(&str, &str)]) -> Kwok {
    let client = cp.client().await.expect("client");
    let nodes: Api<Node> = Api::all(client);
    let mut l = json!({"type": "kwok"});
    for (k, v) in labels {
        l[*k] = json!(v);
    }
    for i in 0..2 {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("kwok-{i}"), "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": l},
            "spec": {"taints": [{"key": TAINT, "value": "fake", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}, "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
        }))
        .expect("node object");
        let _ = nodes.create(&PostParams::default(), &n).await;
    }
    let child = Command::new(kwok_bin())
        .args(["--kubeconfig", cp.kubeconfig.to_str().expect("utf-8 path")])
        .args([
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        ])
        .args([
            "--cidr=10.88.0.0/16",
            "--node-ip=10.88.0.1",
            "--node-lease-duration-seconds=40",
        ])
        .args([
            "-c",
            repo_root()
                .join("hack/kwok/stages.yaml")
                .to_str()
                .expect("utf-8 path"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kwok starts");
    Kwok(child)
}
