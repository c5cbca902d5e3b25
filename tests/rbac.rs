#![allow(clippy::unwrap_used)]
//! Least privilege (issue #15): skylet runs as the ServiceAccount
//! `skylet/skylet` under deploy/manifests/rbac.yaml and
//! deploy/manifests/admission-policy.yaml as shipped (its node list naming
//! this test's node), registers its
//! node, leads it and runs a Deployment; the same credentials are refused
//! (403, with the policy's message) every write to a Node or Lease that is
//! not its own, and everything RBAC does not grant. The chart ships the same
//! policy (compared here on the chart as `helm template` renders it).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use skylet_testenv::{
    ControlPlane, Skylet, eventually, hack_dir,
    k8s::{deployment, kubectl, namespace, node_ready, node_template, pods_where, running_ready},
    repo_root, unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");
const NS: &str = "skylet";
const POLICY_NODES: &str = "skylet writes only its own Nodes";
const POLICY_LEASES: &str = "skylet writes only its nodes' Leases";

/// Runs kubectl as the admin and panics with its stderr on failure.
fn admin(cp: &ControlPlane, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(cp, args);
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

/// A kubeconfig for the ServiceAccount skylet/skylet: the admin's cluster
/// with a token the TokenRequest API issued for the account.
fn service_account_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let token = admin(
        cp,
        &["create", "token", "skylet", "-n", NS, "--duration=2h"],
    );
    let path = dir.join("kubeconfig-sa");
    std::fs::copy(cp.dir().join("kubeconfig"), &path).unwrap();
    let cfg = |args: &[&str]| {
        let ok = Command::new(skylet_testenv::k8s_bin().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&path)
            .args(["config"])
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "kubectl config {args:?}");
    };
    cfg(&[
        "set-credentials",
        "skylet-sa",
        &format!("--token={}", token.trim()),
    ]);
    cfg(&["set-context", "--current", "--user=skylet-sa"]);
    path
}

/// kubectl as the ServiceAccount: (success, stderr).
fn as_skylet(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(skylet_testenv::k8s_bin().join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts the ServiceAccount's `args` are refused with `why` in the answer.
fn refused(kubeconfig: &Path, args: &[&str], stdin: Option<&str>, why: &str) {
    let (ok, err) = as_skylet(kubeconfig, args, stdin);
    assert!(!ok, "skylet's account was allowed: kubectl {args:?}");
    assert!(
        err.contains("forbidden") || err.contains("Forbidden"),
        "kubectl {args:?} failed, but not with 403: {err}"
    );
    assert!(err.contains(why), "kubectl {args:?}: {err:?} lacks {why:?}");
}

fn lease(ns: &str, name: &str) -> String {
    format!(
        "{{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\
         \"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\"}},\
         \"spec\":{{\"holderIdentity\":\"intruder\"}}}}"
    )
}

fn node(name: &str, labels: &str) -> String {
    format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\",\
         \"labels\":{{{labels}}}}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skylets_account_writes_only_its_own_nodes_and_leases() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let me = unique_name("lp");
    let dir = tempfile::tempdir().unwrap();

    // as an operator installs it: the namespace, the ServiceAccount bound
    // to the ClusterRole, the policy
    let _ = kubectl(cp, &["create", "namespace", NS]);
    let _ = kubectl(cp, &["create", "serviceaccount", "skylet", "-n", NS]);
    admin(
        cp,
        &[
            "apply",
            "-f",
            repo_root()
                .join("deploy/manifests/rbac.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    let _ = kubectl(
        cp,
        &[
            "create",
            "clusterrolebinding",
            "skylet-serviceaccount",
            "--clusterrole=skylet",
            "--serviceaccount=skylet:skylet",
        ],
    );
    // the policy as shipped, for this node instead of the example's
    let policy =
        std::fs::read_to_string(repo_root().join("deploy/manifests/admission-policy.yaml"))
            .unwrap();
    assert!(policy.contains("['burst-1']"), "the example node list");
    let policy = policy.replace("['burst-1']", &format!("['{me}']"));
    let mut apply = cp
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut apply.stdin.take().unwrap(), policy.as_bytes()).unwrap();
    assert!(
        apply.wait().unwrap().success(),
        "the admission policy applied"
    );
    let sa = service_account_kubeconfig(cp, dir.path());

    // a real node's Node (no virtual-kubelet label) and another virtual
    // kubelet's, both not skylet's
    let real = format!("{me}-real");
    let other = format!("{me}-other");
    for (name, labels) in [(&real, ""), (&other, "\"type\":\"virtual-kubelet\"")] {
        let mut c = cp.kubectl();
        let mut child = c
            .args(["create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            node(name, labels).as_bytes(),
        )
        .unwrap();
        assert!(child.wait().unwrap().success(), "node {name} created");
    }

    // the policy is in force once the apiserver has loaded this version of
    // it (its refusal names this node; the apiserver may still apply the
    // version an earlier run left for a moment): a write RBAC allows but
    // the policy does not is refused. Tried on the server only
    // (--dry-run=server goes through admission), so that a try before the
    // policy is loaded changes nothing.
    let mut last = String::new();
    let in_force = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (ok, err) = as_skylet(
                &sa,
                &[
                    "label",
                    "node",
                    &real,
                    "type=virtual-kubelet",
                    "--dry-run=server",
                ],
                None,
            );
            if !ok && err.contains(POLICY_NODES) && err.contains(&format!("({me},")) {
                return;
            }
            last = if ok { "allowed".to_owned() } else { err };
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        in_force.is_ok(),
        "the admission policy not in force after 60 s; the last try: {last}"
    );

    // skylet itself works under exactly these grants, leader election on
    let sa_str = sa.to_str().unwrap();
    let _skylet = Skylet::start_with_env(
        cp,
        Path::new(BIN),
        &me,
        &["--leader-elect=true", "--leader-elect-namespace", NS],
        &[("KUBECONFIG", sa_str)],
    );
    node_ready(&client, &me).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let held = eventually("skylet leads its node", Duration::from_secs(30), || async {
        leases
            .get_opt(&format!("skylet-{me}"))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    })
    .await;
    assert!(!held.is_empty());
    let node_lease: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    eventually(
        "the node's heartbeat Lease",
        Duration::from_secs(30),
        || async { node_lease.get_opt(&me).await.ok().flatten() },
    )
    .await;
    let ns = namespace(&client, "lp").await;
    deployment(
        &client,
        &ns,
        "web",
        2,
        node_template(&me, "web", "sleep 3600"),
    )
    .await;
    pods_where(
        &client,
        &ns,
        "web",
        2,
        Duration::from_secs(60),
        "Running",
        running_ready,
    )
    .await;

    // its own node stays writable with these credentials (the refusals
    // below are the policy's, not a broken account)
    let (ok, err) = as_skylet(&sa, &["label", "node", &me, "--overwrite", "lp=own"], None);
    assert!(ok, "skylet's account may label its own node: {err}");

    // Nodes that are not skylet's: neither taken over by a label, nor
    // changed, nor deleted, nor created
    refused(
        &sa,
        &["label", "node", &real, "type=virtual-kubelet"],
        None,
        POLICY_NODES,
    );
    refused(
        &sa,
        &["label", "node", &other, "--overwrite", "lp=x"],
        None,
        POLICY_NODES,
    );
    // the status the node lifecycle controller reads (a PATCH as skylet
    // sends it: kubectl would first GET nodes/status, which RBAC denies)
    let sa_client = skylet_testenv::client_from(&sa).await.unwrap();
    let status = Api::<Node>::all(sa_client)
        .patch_status(
            &other,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"capacity": {"pods": "1"}}})),
        )
        .await;
    match status {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(e.message.contains(POLICY_NODES), "{e:?}");
        }
        other => panic!("a status patch of another node: {other:?}"),
    }
    refused(&sa, &["delete", "node", &real], None, POLICY_NODES);
    refused(&sa, &["delete", "node", &other], None, POLICY_NODES);
    let intruder = node(&format!("{me}-new"), "\"type\":\"virtual-kubelet\"");
    refused(&sa, &["create", "-f", "-"], Some(&intruder), POLICY_NODES);

    // Leases that are not its nodes': another node's heartbeat, another
    // node's election, any other namespace's
    refused(
        &sa,
        &["create", "-f", "-"],
        Some(&lease("kube-node-lease", &real)),
        POLICY_LEASES,
    );
    refused(
        &sa,
        &["create", "-f", "-"],
        Some(&lease(NS, &format!("skylet-{real}"))),
        POLICY_LEASES,
    );
    refused(
        &sa,
        &["create", "-f", "-"],
        Some(&lease("default", &me)),
        POLICY_LEASES,
    );

    // and what RBAC never granted
    refused(
        &sa,
        &[
            "create",
            "secret",
            "generic",
            "x",
            "-n",
            &ns,
            "--from-literal=a=b",
        ],
        None,
        "cannot create resource \"secrets\"",
    );
    refused(
        &sa,
        &["get", "secrets", "-n", &ns],
        None,
        "cannot list resource \"secrets\"",
    );
    refused(
        &sa,
        &["create", "deployment", "x", "-n", &ns, "--image=busybox"],
        None,
        "cannot create resource \"deployments\"",
    );

    for n in [&real, &other] {
        let _ = kubectl(cp, &["delete", "node", n, "--wait=false"]);
    }
}

/// The chart renders the same policy as deploy/manifests/admission-policy.yaml
/// (for release `skylet` in namespace `skylet` with node `burst-1`).
#[test]
fn the_chart_ships_the_tested_admission_policy() {
    let helm = Command::new(hack_dir().join("tools/build.sh"))
        .args(["--bin", "helm"])
        .output()
        .unwrap();
    assert!(
        helm.status.success(),
        "helm is missing (hack/setup installs it): {}",
        String::from_utf8_lossy(&helm.stderr)
    );
    let helm = PathBuf::from(String::from_utf8_lossy(&helm.stdout).trim()).join("helm");
    let out = Command::new(helm)
        .args(["template", "skylet", "-n", NS])
        .arg(repo_root().join("deploy/helm/skylet"))
        .args(["--set", "nodeName=burst-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let manifest =
        std::fs::read_to_string(repo_root().join("deploy/manifests/admission-policy.yaml"))
            .unwrap();
    let of_kind = |text: &str, kind: &str, name: &str| -> serde_yaml_ng::Value {
        let docs: Vec<serde_yaml_ng::Value> = text
            .split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str(d).ok())
            .collect();
        let mut found: Vec<_> = docs
            .into_iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in {text:.200}");
        let mut d = found.remove(0);
        if let Some(m) = d["metadata"].as_mapping_mut() {
            m.remove("labels");
        }
        d
    };
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let name = "skylet-own-nodes-and-leases";
        assert_eq!(
            of_kind(&rendered, kind, name),
            of_kind(&manifest, kind, name),
            "the chart's {kind} differs from deploy/manifests/admission-policy.yaml"
        );
    }
}
