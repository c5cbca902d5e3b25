use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;
use serde_json::json;

use super::{Export, Settings, desired, imports};
use crate::translate::{Context, NamespaceMode, SchedulingPolicy, ServiceAccountPolicy};

fn ctx(mode: NamespaceMode) -> Context {
    Context {
        cluster_id: "home".into(),
        node: "vn-eu".into(),
        node_labels: BTreeMap::new(),
        namespaces: mode,
        namespace_map: BTreeMap::from([("shop".into(), "tenant-shop".into())]),
        scheduling: SchedulingPolicy::default(),
        service_account: ServiceAccountPolicy::default(),
    }
}

fn remote_pod(remote_ns: &str, home_ns: &str, name: &str) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": remote_ns, "uid": format!("uid-{name}"),
                         "labels": {"skylet.io/origin-namespace": home_ns, "skylet.io/cluster-id": "home", "skylet.io/node": "vn-eu"}}
        }))
        .unwrap(),
    )
}

fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "annotations": {"service.cilium.io/affinity": "local", "other": "x"}},
            "spec": spec
        }))
        .unwrap(),
    )
}

fn web_spec() -> serde_json::Value {
    json!({"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.7",
           "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"}],
           "sessionAffinity": "ClientIP"})
}

fn slice(ns: &str, name: &str, svc: &str, ready: bool) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.200.0.4"], "conditions": {"ready": ready, "serving": ready, "terminating": false},
                           "nodeName": "home-node", "zone": "eu-1a", "hostname": "web-0",
                           "targetRef": {"kind": "Pod", "name": "web-0", "namespace": ns},
                           "hints": {"forZones": [{"name": "eu-1a"}]}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap(),
    )
}

#[test]
fn a_namespace_with_pods_gets_its_services_and_slices() {
    let c = ctx(NamespaceMode::Prefixed);
    let s = Settings::default();
    let pods = [
        remote_pod("home-shop", "shop", "a"),
        remote_pod("home-shop", "shop", "b"),
    ];
    let services = [
        svc("shop", "web", web_spec()),
        svc(
            "shop",
            "db",
            json!({"clusterIP": "None", "selector": {"app": "db"}}),
        ),
        svc(
            "shop",
            "ext",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        ),
        svc("other", "elsewhere", web_spec()),
        svc("default", "kubernetes", json!({"ports": [{"port": 443}]})),
    ];
    let slices = [
        slice("shop", "web-abcde", "web", true),
        slice("shop", "ext-zzzzz", "ext", true),
        slice("other", "elsewhere-x", "elsewhere", true),
    ];
    let d = desired::desired(&pods, &services, &slices, &c, &s);

    // one anchor, owned by both pods
    assert_eq!(d.anchors.len(), 1);
    let (key, anchor) = d.anchors.iter().next().unwrap();
    assert_eq!(
        key,
        &("home-shop".to_owned(), "skylet-services-vn-eu".to_owned())
    );
    let owners: Vec<_> = anchor
        .owner_references()
        .iter()
        .map(|o| (o.kind.as_str(), o.uid.as_str()))
        .collect();
    assert_eq!(owners, [("Pod", "uid-a"), ("Pod", "uid-b")]);
    assert_eq!(anchor.labels()["skylet.io/anchor"], "services");

    // the Services of that namespace only, names unchanged
    let names: Vec<_> = d
        .services
        .keys()
        .map(|(ns, n)| format!("{ns}/{n}"))
        .collect();
    assert_eq!(names, ["home-shop/db", "home-shop/ext", "home-shop/web"]);
    let web = &d.services[&("home-shop".into(), "web".into())];
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.selector, None, "selector-less");
    assert_eq!(
        spec.cluster_ip, None,
        "the remote cluster picks the address"
    );
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.node_port),
        (Some("http"), 80, None)
    );
    assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
    assert_eq!(web.labels()["skylet.io/origin-namespace"], "shop");
    assert_eq!(web.labels()["skylet.io/node"], "vn-eu");
    assert_eq!(web.annotations()["skylet.io/origin"], "shop/web");
    assert!(
        !web.annotations().contains_key("service.cilium.io/global"),
        "no mesh annotations unless asked"
    );
    let db = &d.services[&("home-shop".into(), "db".into())];
    assert_eq!(
        db.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let ext = &d.services[&("home-shop".into(), "ext".into())];
    assert_eq!(
        ext.spec.as_ref().unwrap().external_name.as_deref(),
        Some("db.example.com")
    );

    // slices: the web one only (an ExternalName has none), pod details dropped
    assert_eq!(d.slices.len(), 1);
    let (sl, owner) = &d.slices[&("home-shop".into(), "web-abcde".into())];
    assert_eq!(owner, "web");
    assert_eq!(sl.labels()["kubernetes.io/service-name"], "web");
    assert_eq!(
        sl.labels()["endpointslice.kubernetes.io/managed-by"],
        "skylet.io"
    );
    let e = &sl.endpoints.as_ref().unwrap()[0];
    assert_eq!(e.addresses, ["10.200.0.4"]);
    assert_eq!(e.conditions.as_ref().unwrap().ready, Some(true));
    assert_eq!(
        (
            e.node_name.as_ref(),
            e.target_ref.as_ref(),
            e.hints.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(
        (e.zone.as_deref(), e.hostname.as_deref()),
        (Some("eu-1a"), Some("web-0"))
    );
    let p = &sl.ports.as_ref().unwrap()[0];
    assert_eq!((p.name.as_deref(), p.port), (Some("http"), Some(8080)));
}

#[test]
fn readiness_and_changes_change_the_hash() {
    let c = ctx(NamespaceMode::Same);
    let s = Settings::default();
    let pods = [remote_pod("shop", "shop", "a")];
    let services = [svc("shop", "web", web_spec())];
    let hash = |ready: bool| {
        let d = desired::desired(
            &pods,
            &services,
            &[slice("shop", "web-1", "web", ready)],
            &c,
            &s,
        );
        let mut sl = d.slices.into_values().next().unwrap().0;
        desired::seal(&mut sl, vec![desired::owner("v1", "Service", "web", "u1")]);
        desired::hash_on(&sl).unwrap().to_owned()
    };
    assert_eq!(hash(true), hash(true), "stable");
    assert_ne!(hash(true), hash(false), "a readiness flip is a change");
    let d = desired::desired(&pods, &services, &[], &c, &s);
    let mut a = d.services.values().next().unwrap().clone();
    let mut b = a.clone();
    desired::seal(&mut a, vec![desired::owner("v1", "ConfigMap", "x", "u1")]);
    desired::seal(&mut b, vec![desired::owner("v1", "ConfigMap", "x", "u2")]);
    assert_ne!(
        desired::hash_on(&a),
        desired::hash_on(&b),
        "a new owner is a change"
    );
}

#[test]
fn no_pods_nothing_to_hold() {
    let c = ctx(NamespaceMode::Same);
    let d = desired::desired(
        &[],
        &[svc("shop", "web", web_spec())],
        &[slice("shop", "web-1", "web", true)],
        &c,
        &Settings::default(),
    );
    assert!(d.is_empty());
}

#[test]
fn mapped_namespaces_take_their_services_from_home() {
    let c = ctx(NamespaceMode::Map);
    let d = desired::desired(
        &[remote_pod("tenant-shop", "shop", "a")],
        &[svc("shop", "web", web_spec())],
        &[slice("shop", "web-1", "web", true)],
        &c,
        &Settings::default(),
    );
    assert!(
        d.services
            .contains_key(&("tenant-shop".into(), "web".into()))
    );
    assert!(
        d.slices
            .contains_key(&("tenant-shop".into(), "web-1".into()))
    );
}

#[test]
fn cilium_marks_services_global_without_slices() {
    let c = ctx(NamespaceMode::Same);
    let s = Settings {
        exports: vec![Export::Cilium],
        ..Default::default()
    };
    let d = desired::desired(
        &[remote_pod("shop", "shop", "a")],
        &[
            svc("shop", "web", web_spec()),
            svc("shop", "db", json!({"clusterIP": "None"})),
        ],
        &[slice("shop", "web-1", "web", true)],
        &c,
        &s,
    );
    assert!(d.slices.is_empty(), "ClusterMesh brings the endpoints");
    let web = d.services[&("shop".into(), "web".into())]
        .annotations()
        .clone();
    assert_eq!(web["service.cilium.io/global"], "true");
    assert_eq!(web["service.cilium.io/shared"], "false");
    assert_eq!(
        web["service.cilium.io/affinity"], "local",
        "copied from home"
    );
    assert!(!web.contains_key("other"), "only Cilium's are copied");
    assert!(!web.contains_key("service.cilium.io/global-sync-endpoint-slices"));
    let db = d.services[&("shop".into(), "db".into())]
        .annotations()
        .clone();
    assert_eq!(db["service.cilium.io/global-sync-endpoint-slices"], "true");
}

#[test]
fn mcs_labels_slices_and_imports_name_the_remote_address() {
    let c = ctx(NamespaceMode::Same);
    let s = Settings {
        exports: vec![Export::Mcs],
        ..Default::default()
    };
    let d = desired::desired(
        &[remote_pod("shop", "shop", "a")],
        &[svc("shop", "web", web_spec())],
        &[slice("shop", "web-1", "web", true)],
        &c,
        &s,
    );
    let (sl, _) = &d.slices[&("shop".into(), "web-1".into())];
    assert_eq!(
        sl.labels()["multicluster.kubernetes.io/service-name"],
        "web"
    );
    // the import of the reflected Service as the remote cluster holds it
    let mut remote = d.services[&("shop".into(), "web".into())].clone();
    assert!(imports::import(&remote).is_none(), "no address yet");
    remote.metadata.uid = Some("svc-uid".into());
    remote.spec.as_mut().unwrap().cluster_ip = Some("10.97.3.4".into());
    let imp = imports::import(&remote).unwrap();
    assert_eq!(imp.types.as_ref().unwrap().kind, "ServiceImport");
    assert_eq!(
        imp.data["spec"],
        json!({"type": "ClusterSetIP", "ips": ["10.97.3.4"], "sessionAffinity": "ClientIP",
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    );
    assert_eq!(imp.owner_references()[0].uid, "svc-uid");
    assert_eq!(imp.labels()["skylet.io/node"], "vn-eu");
    remote.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    assert_eq!(
        imports::import(&remote).unwrap().data["spec"]["type"],
        "Headless"
    );
}

#[test]
fn anchor_names_fit() {
    assert_eq!(desired::anchor_name("n"), "skylet-services-n");
    let long = "x".repeat(253);
    let a = desired::anchor_name(&long);
    assert!(a.len() <= 253, "{}", a.len());
    assert_ne!(a, desired::anchor_name(&"y".repeat(253)));
    let _ = Pod::default().name_any();
}
