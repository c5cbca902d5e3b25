#![allow(clippy::unwrap_used)]
//! The control plane the other tests run against is real (issue #2): the
//! apiserver reports v1.36.3, controllers act, authorization refuses, and the
//! CSR signer signs.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
        CertificateSigningRequestStatus,
    },
    core::v1::{Node, Pod},
    rbac::v1::RoleBinding,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use skylet_testenv::{ControlPlane, eventually, unique_name};

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let client = ControlPlane::shared().client().await.unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.git_version, "v1.36.3");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "36"));
}

#[tokio::test]
async fn deployment_gets_a_replicaset_and_pending_pods() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = &create_namespace(&client, "cp-deploy").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                // no node carries this label: the pods must stay Pending
                "spec": {"nodeSelector": {"cp-test": "nowhere"},
                         "containers": [{"name": "c", "image": "nginx"}]}
            }
        }
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();

    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let rs = eventually(
        "a ReplicaSet owned by the Deployment",
        Duration::from_secs(30),
        || async {
            rs_api
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "Deployment" && o.name == "web")
                })
        },
    )
    .await;
    let rs_name = rs.metadata.name.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pending = eventually(
        "2 Pending, unschedulable pods",
        Duration::from_secs(30),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?
                .items;
            let unschedulable = list.iter().filter(|p| {
                let status = p.status.as_ref();
                status.and_then(|s| s.phase.as_deref()) == Some("Pending")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
            });
            (unschedulable.count() == 2).then_some(list)
        },
    )
    .await;
    for p in &pending {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs_name.as_str())
        );
    }
}

#[tokio::test]
async fn node_without_kubelet_is_marked_unreachable() {
    let client = ControlPlane::shared().client().await.unwrap();
    let nodes: Api<Node> = Api::all(client);
    let name = unique_name("cp-ghost-node");
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // The node lifecycle controller (not an admission plugin) sets Ready=Unknown
    // and the unreachable taint once the startup grace period has passed.
    eventually(
        "Ready=Unknown and the unreachable taint",
        Duration::from_secs(90),
        || async {
            let n = nodes.get(&name).await.ok()?;
            let ready = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            let tainted = n
                .spec?
                .taints?
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable");
            (ready.status == "Unknown" && tainted).then_some(())
        },
    )
    .await;
    nodes.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn user_without_binding_is_forbidden_and_allowed_with_one() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await.unwrap();
    let ns = &create_namespace(&admin, "cp-rbac").await;
    let alice = cp.client_as("alice", &["dev"]).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(alice, ns);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    // The same identity with a RoleBinding is allowed: the 403 came from RBAC,
    // not from a broken certificate.
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    eventually("alice may list pods", Duration::from_secs(10), || async {
        pods.list(&ListParams::default()).await.ok()
    })
    .await;
}

#[tokio::test]
async fn csr_is_approved_and_signed() {
    let client = ControlPlane::shared().client().await.unwrap();
    let csr_name = unique_name("cp-csr-test");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "csr-test-user");
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": csr_name},
        "spec": {
            "request": k8s_openapi::ByteString(csr_pem.into_bytes()),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "expirationSeconds": 600,
            "usages": ["client auth", "digital signature"]
        }
    }))
    .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    csrs.create(&PostParams::default(), &csr).await.unwrap();
    let approval = CertificateSigningRequest {
        status: Some(CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("SkyletTest".into()),
                message: Some("approved by the control-plane test".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    csrs.patch_approval(
        &csr_name,
        &Default::default(),
        &kube::api::Patch::Merge(&approval),
    )
    .await
    .unwrap();
    let cert = eventually("a signed certificate", Duration::from_secs(30), || async {
        csrs.get(&csr_name).await.ok()?.status?.certificate
    })
    .await;
    let pem = String::from_utf8(cert.0).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let x509 = parsed.parse_x509().unwrap();
    assert!(
        x509.subject().to_string().contains("csr-test-user"),
        "{}",
        x509.subject()
    );
}

async fn create_namespace(client: &kube::Client, base: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = unique_name(base);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}
