#![allow(clippy::unwrap_used)]
//! Services across the boundary (issue #17), on two real control planes: a
//! home cluster where one skylet runs a fleet of two virtual nodes (the
//! simulated backend, for home pods, and the remote-Kubernetes backend), and
//! a remote cluster whose nodes kwok simulates.
//!
//! - Home Services are reflected into the remote namespace of offloaded pods
//!   as selector-less Services with EndpointSlices carrying the home
//!   endpoints, follow changes (a scale-up, readiness flips, a deletion)
//!   within 5 s of the home EndpointSlice, get ServiceImports (MCS), and are
//!   removed with the last offloaded pod.
//! - Remote pods are endpoints of home Services: their remote IPs, ready as
//!   the remote pod is, named ports resolved, the virtual node's zone on the
//!   endpoint and as the topology hint (`trafficDistribution: PreferClose`).
//! - ECS pods selected by a home Service are instances of a Cloud Map
//!   service (moto), with the pods' readiness as health, deregistered when
//!   they go.
//! - On real nodes (`hack/node`: kubelet, containerd, runc; the remote one
//!   with CoreDNS as its cluster DNS and kube-proxy), an offloaded busybox
//!   pod resolves a headless home Service by name through the remote
//!   cluster's DNS and gets the home pod's answer once the two nodes are
//!   linked (a flat network on this machine); a ClusterIP home Service
//!   too, through the remote kube-proxy.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::json;
use skylet_testenv::{
    ControlPlane, Moto, SKYLET_USER, Skylet, backends, eventually, free_port,
    k8s::{self, namespace, node_ready},
    kwok::{TAINT, kwok_nodes},
    node::RealNode,
    unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// The longest a reflected object may lag behind its home object.
const FOLLOW: Duration = Duration::from_secs(5);

/// Applies `yaml` to `cp` with kubectl.
fn apply(cp: &ControlPlane, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("o.yaml");
    std::fs::write(&f, yaml).unwrap();
    let o = cp
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What skylet needs at home beyond deploy/manifests/rbac.yaml for Service
/// reflection: reading EndpointSlices (that manifest is another change's).
fn grant_endpointslices(home: &ControlPlane) {
    apply(
        home,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: skylet-endpointslices}}\n\
             rules:\n- apiGroups: [discovery.k8s.io]\n  resources: [endpointslices]\n  verbs: [list, watch]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: skylet-endpointslices}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: skylet-endpointslices}}\n\
             subjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {SKYLET_USER}}}\n"
        ),
    );
    // in force before skylet starts (it would otherwise retry in a minute)
    for _ in 0..50 {
        let o = home
            .kubectl()
            .args([
                "auth",
                "can-i",
                "watch",
                "endpointslices.discovery.k8s.io",
                "--all-namespaces",
            ])
            .args(["--as", SKYLET_USER])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).trim() == "yes" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the endpointslices grant is not in force");
}

/// The MCS ServiceImport CRD (its schema left open: the test reads what
/// skylet wrote, it does not validate it).
fn install_service_import_crd(cp: &ControlPlane) {
    apply(
        cp,
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {name: serviceimports.multicluster.x-k8s.io}\n\
         spec:\n  group: multicluster.x-k8s.io\n  scope: Namespaced\n\
         \x20 names: {plural: serviceimports, singular: serviceimport, kind: ServiceImport, listKind: ServiceImportList}\n\
         \x20 versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n\
         \x20   schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n",
    );
}

fn service_import() -> ApiResource {
    ApiResource {
        group: "multicluster.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "multicluster.x-k8s.io/v1alpha1".into(),
        kind: "ServiceImport".into(),
        plural: "serviceimports".into(),
    }
}

/// A Deployment `app` of `replicas` on the virtual nodes labelled
/// `skylet-test=<nodes>`, with container port `port_name`=`port`.
fn deployment(nodes: &str, app: &str, replicas: i32, port_name: &str, port: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}}, "spec": {
                    "nodeSelector": {"type": "virtual-kubelet", "skylet-test": nodes},
                    "tolerations": [
                        {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "infinity"],
                                    "ports": [{"name": port_name, "containerPort": port}]}]}}}
    }))
    .unwrap()
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Endpoints of the slices of Service `svc` in `ns`: (address, ready),
/// sorted, and the ports (name, number).
async fn endpoints(
    client: &Client,
    ns: &str,
    svc: &str,
) -> Option<(Vec<(String, bool)>, Vec<(String, i32)>)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let l = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .ok()?
        .items;
    let mut eps = Vec::new();
    let mut ports = Vec::new();
    for s in &l {
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            for a in &e.addresses {
                eps.push((a.clone(), ready));
            }
        }
        for p in s.ports.iter().flatten() {
            let p = (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0));
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
    }
    eps.sort();
    Some((eps, ports))
}

/// Waits until the remote slices of `svc` show `want` and returns how long
/// that took; fails past [`FOLLOW`].
async fn follows(
    remote: &Client,
    ns: &str,
    svc: &str,
    want: &[(String, bool)],
    what: &str,
) -> Duration {
    let start = Instant::now();
    eventually(what, FOLLOW, || async {
        let (eps, _) = endpoints(remote, ns, svc).await?;
        (eps == want).then_some(())
    })
    .await;
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

/// Waits until the home slices of `svc` show `want` (the home controllers'
/// part, not timed against skylet).
async fn home_shows(home: &Client, ns: &str, svc: &str, want: &[(String, bool)], what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let (eps, _) = endpoints(home, ns, svc).await?;
        (eps == want).then_some(())
    })
    .await;
}

/// The IPs of the Running pods `app` in `ns`, once there are `n`.
async fn pod_ips(client: &Client, ns: &str, app: &str, n: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{n} pods {app} Running with IPs"),
        Duration::from_secs(90),
        || async {
            let l = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?
                .items;
            let ips: Vec<String> = l
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    let s = p.status.as_ref()?;
                    (s.phase.as_deref() == Some("Running"))
                        .then(|| s.pod_ip.clone())
                        .flatten()
                })
                .collect();
            (ips.len() == n).then_some(ips)
        },
    )
    .await
}

fn ready(ips: &[String], ready: bool) -> Vec<(String, bool)> {
    let mut v: Vec<_> = ips.iter().map(|ip| (ip.clone(), ready)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn home_services_reach_the_remote_cluster_and_remote_pods_are_home_endpoints() {
    let home_cp = ControlPlane::shared();
    let remote_cp = ControlPlane::start("services").unwrap();
    let home = home_cp.client().await.unwrap();
    let remote = remote_cp.client().await.unwrap();
    let _kwok = kwok_nodes(&remote_cp, &[]).await;
    grant_endpointslices(home_cp);
    install_service_import_crd(&remote_cp);

    // one skylet, two virtual nodes: home pods on the simulated backend,
    // offloaded pods in the remote cluster (region and zone from the fleet entry)
    let id = unique_name("svc");
    let (home_node, remote_node) = (format!("{id}-home"), format!("{id}-remote"));
    let kc = remote_cp.kubeconfig.display().to_string();
    // a port of its own (not the first one's plus one, which may be taken)
    let port = free_port();
    let backends = format!(
        "- {{name: {home_node}, provider: mock, labels: {{skylet-test: {home_node}}}}}\n\
         - {{name: {remote_node}, provider: kubernetes, region: remote-r1, zone: remote-r1a, \
         listen: '127.0.0.1:{port}', labels: {{skylet-test: {remote_node}}}, \
         remote: {{kubeconfig: {kc}, cluster-id: home, service-export: [mcs]}}}}\n"
    );
    let s = Skylet::start_fleet(home_cp, Path::new(BIN), &backends, "");
    node_ready(&home, &home_node).await;
    let vn = node_ready(&home, &remote_node).await;
    let labels = vn.metadata.labels.unwrap();
    assert_eq!(labels["topology.kubernetes.io/zone"], "remote-r1a");
    assert_eq!(labels["topology.kubernetes.io/region"], "remote-r1");

    let ns = &namespace(&home, "svc").await;
    let deploys: Api<Deployment> = Api::namespaced(home.clone(), ns);
    let services: Api<Service> = Api::namespaced(home.clone(), ns);
    let pp = PostParams::default();
    // at home: "web" (2 pods, named target port), "db" (no selector, a
    // hand-made EndpointSlice), and "api" selecting the offloaded pods
    deploys
        .create(&pp, &deployment(&home_node, "web", 2, "http", 8080))
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service(
                "web",
                json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service("db", json!({"ports": [{"name": "pg", "port": 5432}]})),
        )
        .await
        .unwrap();
    let db_slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-manual", "labels": {"kubernetes.io/service-name": "db", "endpointslice.kubernetes.io/managed-by": "test"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": true}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))
    .unwrap();
    let home_slices: Api<EndpointSlice> = Api::namespaced(home.clone(), ns);
    home_slices.create(&pp, &db_slice).await.unwrap();
    services
        .create(
            &pp,
            &service(
                "api",
                json!({"selector": {"app": "api"}, "trafficDistribution": "PreferClose",
                       "ports": [{"name": "grpc", "port": 90, "targetPort": "api"}]}),
            ),
        )
        .await
        .unwrap();
    // the offloaded pod that makes the namespace one with offloaded pods
    deploys
        .create(&pp, &deployment(&remote_node, "api", 1, "api", 9090))
        .await
        .unwrap();

    // -- remote pods are home endpoints: the remote IP, ready, the named port
    // resolved, the virtual node's zone as the endpoint's and as its hint
    let remote_ips = pod_ips(&remote, ns, "api", 1).await;
    assert!(remote_ips[0].starts_with("10.88."), "{remote_ips:?}");
    let home_api_ips = pod_ips(&home, ns, "api", 1).await;
    assert_eq!(home_api_ips, remote_ips, "the home pod shows the remote IP");
    home_shows(
        &home,
        ns,
        "api",
        &ready(&remote_ips, true),
        "the remote pod a ready home endpoint",
    )
    .await;
    let (_, ports) = endpoints(&home, ns, "api").await.unwrap();
    assert_eq!(ports, [("grpc".to_owned(), 9090)], "targetPort api -> 9090");
    let slice = eventually(
        "the zone hint on the home endpoint",
        Duration::from_secs(20),
        || async {
            let l = home_slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=api"))
                .await
                .ok()?
                .items;
            let s = l.into_iter().next()?;
            let e = s.endpoints.as_ref()?.first()?;
            e.hints.as_ref()?.for_zones.as_ref()?.first()?;
            Some(s)
        },
    )
    .await;
    let e = &slice.endpoints.unwrap()[0];
    assert_eq!(e.zone.as_deref(), Some("remote-r1a"));
    assert_eq!(e.node_name.as_deref(), Some(remote_node.as_str()));
    let hint = &e.hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0];
    assert_eq!(hint.name, "remote-r1a", "topology-aware routing prefers it");

    // -- home Services in the remote namespace: the same names and ports,
    // no selector, the home endpoints
    let web_ips = pod_ips(&home, ns, "web", 2).await;
    home_shows(
        &home,
        ns,
        "web",
        &ready(&web_ips, true),
        "web's 2 home endpoints",
    )
    .await;
    let remote_svcs: Api<Service> = Api::namespaced(remote.clone(), ns);
    let web = eventually(
        "the reflected Service web",
        Duration::from_secs(30),
        || async { remote_svcs.get_opt("web").await.ok()? },
    )
    .await;
    let spec = web.spec.clone().unwrap();
    assert_eq!(spec.selector, None);
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 80));
    assert_eq!(web.labels()["skylet.io/cluster-id"], "home");
    assert_eq!(web.annotations()["skylet.io/origin"], format!("{ns}/web"));
    follows(
        &remote,
        ns,
        "web",
        &ready(&web_ips, true),
        "web's endpoints reflected",
    )
    .await;
    let (_, ports) = endpoints(&remote, ns, "web").await.unwrap();
    assert_eq!(
        ports,
        [("http".to_owned(), 8080)],
        "the named port resolved at home"
    );
    follows(
        &remote,
        ns,
        "db",
        &[("10.1.2.3".to_owned(), true)],
        "db's hand-made endpoints reflected",
    )
    .await;
    follows(
        &remote,
        ns,
        "api",
        &ready(&remote_ips, true),
        "api reflected too",
    )
    .await;
    // owned through the anchor, which the offloaded pod owns
    let anchor = Api::<ConfigMap>::namespaced(remote.clone(), ns)
        .get(&format!("skylet-services-{remote_node}"))
        .await
        .unwrap();
    let owners = anchor.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Pod");
    assert_eq!(web.owner_references()[0].uid, anchor.uid().unwrap());
    // MCS: a ServiceImport with the reflected Service's address
    let imports: Api<DynamicObject> = Api::namespaced_with(remote.clone(), ns, &service_import());
    let imp = eventually(
        "the ServiceImport of web",
        Duration::from_secs(20),
        || async { imports.get_opt("web").await.ok()? },
    )
    .await;
    assert_eq!(imp.data["spec"]["type"], "ClusterSetIP");
    assert_eq!(
        imp.data["spec"]["ips"][0].as_str(),
        spec.cluster_ip.as_deref()
    );
    assert_eq!(imp.data["spec"]["ports"][0]["port"], 80);

    // -- changes follow within 5 s of the home EndpointSlice
    // a scale-up
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let web_ips = pod_ips(&home, ns, "web", 3).await;
    home_shows(
        &home,
        ns,
        "web",
        &ready(&web_ips, true),
        "web's 3 home endpoints",
    )
    .await;
    follows(
        &remote,
        ns,
        "web",
        &ready(&web_ips, true),
        "the scale-up reflected",
    )
    .await;
    // a readiness flip of a hand-made endpoint
    home_slices
        .patch(
            "db-manual",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": false}}]}),
            ),
        )
        .await
        .unwrap();
    follows(
        &remote,
        ns,
        "db",
        &[("10.1.2.3".to_owned(), false)],
        "db not ready remotely",
    )
    .await;
    // the remote pod turns unready: its home endpoint, then the reflection
    let remote_pods: Api<Pod> = Api::namespaced(remote.clone(), ns);
    let rp = remote_pods
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items
        .remove(0);
    remote_pods
        .patch_status(
            &rp.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                "containerStatuses": [{"name": "main", "ready": false}]}})),
        )
        .await
        .unwrap();
    let start = Instant::now();
    home_shows(
        &home,
        ns,
        "api",
        &ready(&remote_ips, false),
        "the unready remote pod an unready home endpoint",
    )
    .await;
    eprintln!(
        "remote pod unready -> home endpoint unready: {:?}",
        start.elapsed()
    );
    follows(
        &remote,
        ns,
        "api",
        &ready(&remote_ips, false),
        "api not ready remotely",
    )
    .await;
    remote_pods
        .patch_status(
            &rp.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                "containerStatuses": [{"name": "main", "ready": true}]}})),
        )
        .await
        .unwrap();
    home_shows(
        &home,
        ns,
        "api",
        &ready(&remote_ips, true),
        "ready again at home",
    )
    .await;
    follows(
        &remote,
        ns,
        "api",
        &ready(&remote_ips, true),
        "api ready again remotely",
    )
    .await;
    // a deleted home Service
    services.delete("db", &Default::default()).await.unwrap();
    let start = Instant::now();
    eventually("db gone remotely", FOLLOW, || async {
        let gone = remote_svcs.get_opt("db").await.ok()?.is_none();
        let (eps, _) = endpoints(&remote, ns, "db").await?;
        (gone && eps.is_empty()).then_some(())
    })
    .await;
    eprintln!("db deleted -> gone remotely: {:?}", start.elapsed());

    // -- the last offloaded pod gone: nothing reflected is left
    deploys.delete("api", &Default::default()).await.unwrap();
    let mine = ListParams::default().labels(&format!("skylet.io/node={remote_node}"));
    let remote_slices: Api<EndpointSlice> = Api::namespaced(remote.clone(), ns);
    let remote_cms: Api<ConfigMap> = Api::namespaced(remote.clone(), ns);
    eventually(
        "every reflected object gone with the last offloaded pod",
        Duration::from_secs(60),
        || async {
            let pods = remote_pods.list(&ListParams::default()).await.ok()?.items;
            let svcs = remote_svcs.list(&mine).await.ok()?.items;
            let slices = remote_slices.list(&mine).await.ok()?.items;
            let cms = remote_cms.list(&mine).await.ok()?.items;
            let imps = imports.list(&ListParams::default()).await.ok()?.items;
            (pods.is_empty()
                && svcs.is_empty()
                && slices.is_empty()
                && cms.is_empty()
                && imps.is_empty())
            .then_some(())
        },
    )
    .await;
    // and the home Services are untouched
    assert!(services.get_opt("web").await.unwrap().is_some());
    drop(s);
}

/// Runs `script` with moto's Python (boto3 pointed at `moto`, a client
/// `sd` of servicediscovery) and returns what it prints as JSON.
fn boto(moto: &Moto, script: &str) -> serde_json::Value {
    let python = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/hack/lib.sh && echo \"$MOTO_HOME/bin/python\"",
            skylet_testenv::repo_root().display()
        ))
        .output()
        .unwrap();
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    let prelude = format!(
        "import boto3, json\nsd = boto3.client('servicediscovery', endpoint_url='{}', region_name='{}')\n",
        moto.endpoint, moto.region
    );
    let o = std::process::Command::new(python)
        .arg("-c")
        .arg(prelude + script)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The instances skylet registered in `namespace_id` for Cloud Map service
/// `name`: (IP, health), sorted; `None` while there is no such service.
fn cloud_map_instances(
    moto: &Moto,
    namespace_id: &str,
    name: &str,
) -> Option<Vec<(String, String)>> {
    let v = boto(
        moto,
        &format!(
            "out = None\n\
             for s in sd.list_services()['Services']:\n\
             \x20   if s['Name'] == '{name}' and ' in {namespace_id}' in s.get('Description', ''):\n\
             \x20       health = sd.get_instances_health_status(ServiceId=s['Id'])['Status']\n\
             \x20       out = sorted([i['Attributes']['AWS_INSTANCE_IPV4'], health.get(i['Id'], '')]\n\
             \x20                    for i in sd.list_instances(ServiceId=s['Id'])['Instances'])\n\
             print(json.dumps(out))\n"
        ),
    );
    serde_json::from_value(v).unwrap()
}

/// Issue #17: with `--ecs-cloud-map-namespace-id`, the ECS pods a home
/// Service selects are instances of the Cloud Map service
/// `<service>.<namespace>`, healthy when Ready, deregistered when they go
/// and the service removed with the Kubernetes Service (against moto,
/// whose Cloud Map keeps instances and their health but serves no DNS).
#[tokio::test]
async fn ecs_pods_are_registered_in_cloud_map() {
    let home_cp = ControlPlane::shared();
    let home = home_cp.client().await.unwrap();
    let moto = Moto::shared();
    let id = unique_name("cm");
    // a private DNS namespace (moto allows one per VPC: a VPC id of its own)
    let created = boto(
        moto,
        &format!(
            "op = sd.create_private_dns_namespace(Name='{id}.internal', Vpc='vpc-{id}')['OperationId']\n\
             ns = sd.get_operation(OperationId=op)['Operation']['Targets']['NAMESPACE']\n\
             print(json.dumps(ns))\n"
        ),
    );
    let namespace_id = created.as_str().unwrap().to_owned();
    let node = format!("{id}-ecs");
    let mut args = moto.skylet_args();
    args.extend(["--ecs-cloud-map-namespace-id".into(), namespace_id.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _s = Skylet::start_with_env(home_cp, Path::new(BIN), &node, &args, &moto.skylet_env());
    node_ready(&home, &node).await;

    let ns = &namespace(&home, "cm").await;
    let deploys: Api<Deployment> = Api::namespaced(home.clone(), ns);
    let services: Api<Service> = Api::namespaced(home.clone(), ns);
    let pp = PostParams::default();
    deploys
        .create(&pp, &deployment(&node, "web", 2, "http", 8080))
        .await
        .unwrap();
    services
        .create(
            &pp,
            &service(
                "web",
                json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    let name = format!("web.{ns}");
    pod_ips(&home, ns, "web", 2).await;
    // health is the pod's readiness
    let healthy = |pods: Vec<Pod>| {
        let mut v: Vec<(String, String)> = pods
            .iter()
            .map(|p| {
                let s = p.status.clone().unwrap_or_default();
                let ready = s
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let health = if ready { "HEALTHY" } else { "UNHEALTHY" };
                (s.pod_ip.unwrap_or_default(), health.to_owned())
            })
            .collect();
        v.sort();
        v
    };
    let home_pods: Api<Pod> = Api::namespaced(home.clone(), ns);
    let web_pods = || async {
        home_pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect::<Vec<_>>()
    };
    eventually(
        "the pods registered in Cloud Map",
        Duration::from_secs(60),
        || async {
            let want = healthy(web_pods().await);
            (cloud_map_instances(moto, &namespace_id, &name)? == want).then_some(())
        },
    )
    .await;
    // a scale-down deregisters
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    pod_ips(&home, ns, "web", 1).await;
    eventually(
        "the gone pod deregistered",
        Duration::from_secs(60),
        || async {
            let want = healthy(web_pods().await);
            (want.len() == 1 && cloud_map_instances(moto, &namespace_id, &name)? == want)
                .then_some(())
        },
    )
    .await;
    // the Kubernetes Service gone: its instances and service too
    services.delete("web", &Default::default()).await.unwrap();
    eventually(
        "the Cloud Map service removed",
        Duration::from_secs(60),
        || async {
            cloud_map_instances(moto, &namespace_id, &name)
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// Runs `sh -c script` in `pod` of `ns` through the home cluster (`kubectl
/// exec`, which skylet carries to the remote pod); (success, stdout+stderr).
fn exec_sh(home: &ControlPlane, ns: &str, pod: &str, script: &str) -> (bool, String) {
    let o = home
        .kubectl()
        .args(["exec", "-n", ns, pod, "--", "sh", "-c", script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// Issue #17, item 5 on real nodes: a pod that skylet offloads to the
/// remote cluster resolves a headless home Service by name through the
/// remote cluster's DNS (CoreDNS reading the reflected Service and
/// EndpointSlice) and gets the answer of the home pod behind it over a flat
/// network between the two clusters' nodes (`hack/node link`: two bridges
/// on this machine, no address translation). Before the link the name
/// resolves but the home pod is out of reach: the network is what carries
/// it, and nothing else does. A ClusterIP home Service resolves to its
/// reflected copy's own address, which the remote kube-proxy forwards to
/// the home pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_pod_reaches_a_home_service_by_name_through_the_remote_dns() {
    let start = Instant::now();
    let home_cp = ControlPlane::start("dns-home").unwrap();
    let remote_cp = ControlPlane::start("dns-remote").unwrap();
    let home_node = RealNode::up(&home_cp, &[]);
    let remote_node = RealNode::up(&remote_cp, &["--dns", "--proxy"]);
    eprintln!("two control planes, two real nodes: {:?}", start.elapsed());
    let home = home_cp.client().await.unwrap();
    let remote = remote_cp.client().await.unwrap();
    grant_endpointslices(&home_cp);
    let vnode = unique_name("dns");
    let s = backends::start_remote_skylet(&home_cp, &vnode, &remote_cp.kubeconfig, &[]);
    node_ready(&home, &vnode).await;
    let ns = &namespace(&home, "dns").await;

    // at home, on the real node: busybox httpd answering with its pod's
    // name, behind the headless Service "web"
    let pp = PostParams::default();
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": home_node.name},
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "httpd", "image": "localhost/busybox:1.35", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(home.clone(), ns)
        .create(&pp, &web)
        .await
        .unwrap();
    Api::<Service>::namespaced(home.clone(), ns)
        .create(
            &pp,
            &service(
                "web",
                json!({"clusterIP": "None", "selector": {"app": "web"},
                       "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    // and a ClusterIP Service in front of the same pod
    Api::<Service>::namespaced(home.clone(), ns)
        .create(
            &pp,
            &service(
                "vip",
                json!({"selector": {"app": "web"},
                       "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
            ),
        )
        .await
        .unwrap();
    let web_ip = pod_ips(&home, ns, "web", 1).await.remove(0);
    home_shows(
        &home,
        ns,
        "web",
        &ready(std::slice::from_ref(&web_ip), true),
        "the home pod a ready endpoint of web",
    )
    .await;

    // offloaded: a busybox pod that skylet runs on the remote real node
    let mut template = k8s::node_template(&vnode, "client", "sleep 3600");
    template["spec"]["containers"][0]["image"] = "localhost/busybox:1.35".into();
    template["spec"]["containers"][0]["imagePullPolicy"] = "Never".into();
    k8s::deployment(&home, ns, "client", 1, template).await;
    let client = k8s::pods_where(
        &home,
        ns,
        "client",
        1,
        Duration::from_secs(120),
        "Running and Ready",
        k8s::running_ready,
    )
    .await
    .remove(0)
    .name_any();
    let remote_pod = eventually(
        "the remote pod on the remote real node",
        Duration::from_secs(30),
        || async {
            let l = Api::<Pod>::namespaced(remote.clone(), ns)
                .list(&ListParams::default().labels("app=client"))
                .await
                .ok()?
                .items;
            l.into_iter().next()
        },
    )
    .await;
    assert_eq!(
        remote_pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(remote_node.name.as_str())
    );

    // reflected headless: no address of its own, the home pod's IP as endpoint
    let reflected = eventually(
        "the reflected Service web",
        Duration::from_secs(30),
        || async {
            Api::<Service>::namespaced(remote.clone(), ns)
                .get_opt("web")
                .await
                .ok()?
        },
    )
    .await;
    assert_eq!(
        reflected.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None"),
        "a headless home Service stays headless"
    );
    follows(
        &remote,
        ns,
        "web",
        &ready(std::slice::from_ref(&web_ip), true),
        "web's home endpoint reflected",
    )
    .await;

    // the remote pod asks the remote cluster's DNS (the kubelet's clusterDNS)
    let dns = remote_node.ip();
    let (ok, resolv) = exec_sh(&home_cp, ns, &client, "cat /etc/resolv.conf");
    assert!(ok, "{resolv}");
    assert!(
        resolv.contains(&format!("nameserver {dns}")),
        "the remote DNS: {resolv}"
    );
    assert!(
        resolv.contains(&format!("search {ns}.svc.cluster.local svc.cluster.local")),
        "{resolv}"
    );
    let fqdn = format!("web.{ns}.svc.cluster.local");
    let lookup = eventually(
        "the remote DNS answers for web",
        Duration::from_secs(30),
        || async {
            let (ok, out) = exec_sh(&home_cp, ns, &client, &format!("nslookup {fqdn}"));
            (ok && out.contains(&web_ip)).then_some(out)
        },
    )
    .await;
    assert!(lookup.contains(&format!("Server:\t\t{dns}")), "{lookup}");
    eprintln!("{lookup}");
    // a ClusterIP home Service resolves to its reflected copy's own
    // address (the remote cluster's, from the remote Service range)
    let vip = eventually(
        "the reflected Service vip with an address",
        Duration::from_secs(30),
        || async {
            let svc = Api::<Service>::namespaced(remote.clone(), ns)
                .get_opt("vip")
                .await
                .ok()??;
            let ip = svc.spec?.cluster_ip?;
            (ip != "None").then_some(ip)
        },
    )
    .await;
    assert!(vip.starts_with("10.96."), "{vip}");
    eventually(
        "the remote DNS answers for vip",
        Duration::from_secs(30),
        || async {
            let (ok, out) = exec_sh(
                &home_cp,
                ns,
                &client,
                &format!("nslookup vip.{ns}.svc.cluster.local"),
            );
            (ok && out.contains(&format!("Address: {vip}"))).then_some(())
        },
    )
    .await;

    // not linked yet: the name resolves, the home pod is out of reach
    let url = format!("http://web.{ns}:8080/");
    let (ok, out) = exec_sh(&home_cp, ns, &client, &format!("timeout 3 wget -qO- {url}"));
    assert!(
        !ok,
        "reached the home pod before the nodes were linked: {out}"
    );
    // a connection that fails, not a name that does not resolve
    assert!(!out.contains("bad address"), "{out}");
    eprintln!("before the link: {}", out.trim());

    // a flat network between the two nodes: the home pod answers by name
    remote_node.link(&home_node);
    let t = Instant::now();
    let answer = eventually(
        "the home pod's answer through web",
        Duration::from_secs(20),
        || async {
            let (ok, out) = exec_sh(&home_cp, ns, &client, &format!("timeout 3 wget -qO- {url}"));
            ok.then_some(out)
        },
    )
    .await;
    eprintln!("linked -> answer: {:?}", t.elapsed());
    assert_eq!(answer.trim(), "hello from web");
    // through the ClusterIP of the reflected copy: the remote kube-proxy
    // forwards it to the home endpoint
    let (ok, out) = exec_sh(
        &home_cp,
        ns,
        &client,
        &format!("timeout 3 wget -qO- http://vip.{ns}/"),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "hello from web");
    // the remote cluster's DNS saw the query (CoreDNS's log)
    let log = std::fs::read_to_string(remote_node.dir().join("logs/coredns.log")).unwrap();
    assert!(log.contains(&format!("\"A IN {fqdn}. ")), "{log}");
    drop(s);
    eprintln!("whole test: {:?}", start.elapsed());
    // both sides torn down at once (each takes seconds)
    std::thread::scope(|t| {
        t.spawn(move || drop(remote_node));
        t.spawn(move || drop(home_node));
    });
    std::thread::scope(|t| {
        t.spawn(move || drop(remote_cp));
        t.spawn(move || drop(home_cp));
    });
    eprintln!("with tear-down: {:?}", start.elapsed());
}
