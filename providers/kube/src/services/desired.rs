//! Pure functions: what the remote cluster should hold for the home Services
//! of the namespaces that have offloaded pods.
//!
//! For each remote namespace with pods of this node: one anchor ConfigMap
//! (owned by those pods), and for each home Service of the mapped home
//! namespace that the settings select, a selector-less Service of the same
//! name and ports, and a copy of each home EndpointSlice of that Service
//! (addresses, ports, conditions; no node names, pod references or hints,
//! which mean nothing remotely). The owner references that need UIDs of
//! remote objects (anchor -> Service -> EndpointSlice) are set by the
//! caller when it knows them.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Pod, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{ResourceExt, api::ObjectMeta};

use super::{Export, Settings};
use crate::translate::{CLUSTER_ID, Context, NODE, ORIGIN_NAMESPACE};

/// Label of the anchor ConfigMap.
pub(crate) const ANCHOR: &str = "skylet.io/anchor";
/// Annotation with the home object's `namespace/name`.
pub(crate) const ORIGIN: &str = "skylet.io/origin";
/// Annotation with a hash of what skylet wrote (the object is rewritten
/// only when it differs).
pub(crate) const HASH: &str = "skylet.io/reflection-hash";
/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that says who manages an EndpointSlice.
pub(crate) const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// skylet's value of [`MANAGED_BY`] (the remote EndpointSlice controller
/// leaves such slices alone).
pub(crate) const MANAGER: &str = "skylet.io";
/// The MCS label of EndpointSlices that back a ServiceImport (what the
/// CoreDNS `multicluster` plugin reads for headless imports).
pub(crate) const MCS_SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";
/// Cilium ClusterMesh: the Service is global.
pub(crate) const CILIUM_GLOBAL: &str = "service.cilium.io/global";
/// Cilium ClusterMesh: whether this cluster shares its endpoints.
pub(crate) const CILIUM_SHARED: &str = "service.cilium.io/shared";
/// Cilium ClusterMesh: EndpointSlices for the other clusters' endpoints
/// (for DNS of headless Services).
pub(crate) const CILIUM_SYNC_SLICES: &str = "service.cilium.io/global-sync-endpoint-slices";
/// Prefix of the Cilium annotations copied from the home Service
/// (`service.cilium.io/affinity`, ...).
const CILIUM_PREFIX: &str = "service.cilium.io/";

/// A remote object: namespace and name.
pub(crate) type Key = (String, String);

/// What the remote cluster should hold.
#[derive(Debug, Default)]
pub(crate) struct Desired {
    /// Per remote namespace with pods of this node: its anchor, owned by
    /// those pods.
    pub(crate) anchors: BTreeMap<Key, ConfigMap>,
    /// The reflected Services (owner: the anchor of their namespace).
    pub(crate) services: BTreeMap<Key, Service>,
    /// The reflected EndpointSlices, with the name of their Service (their
    /// owner).
    pub(crate) slices: BTreeMap<Key, (EndpointSlice, String)>,
}

/// The name of the anchor ConfigMap of `node` (at most 253 characters).
pub(crate) fn anchor_name(node: &str) -> String {
    let name = format!("skylet-services-{node}");
    if name.len() <= 253 {
        return name;
    }
    let mut h = std::hash::DefaultHasher::new();
    node.hash(&mut h);
    format!("{}-{:08x}", &name[..240], h.finish() as u32)
}

/// The labels every object skylet reflects carries.
fn labels(ctx: &Context, home_ns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_ID.to_owned(), ctx.cluster_id.clone()),
        (NODE.to_owned(), ctx.node.clone()),
        (ORIGIN_NAMESPACE.to_owned(), home_ns.to_owned()),
    ])
}

/// An owner reference to `kind` `name` with `uid`.
pub(crate) fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        ..Default::default()
    }
}

/// Whether `svc` is headless.
pub(crate) fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The type of `svc` (`ClusterIP` when unset).
pub(crate) fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The remote copy of home Service `home` in `remote_ns`: selector-less,
/// the same name and ports (node ports dropped); an ExternalName stays one;
/// NodePort and LoadBalancer become ClusterIP.
pub(crate) fn service(home: &Service, remote_ns: &str, ctx: &Context, s: &Settings) -> Service {
    let home_ns = home.namespace().unwrap_or_default();
    let spec = home.spec.clone().unwrap_or_default();
    let external = spec.type_.as_deref() == Some("ExternalName");
    let mut annotations =
        BTreeMap::from([(ORIGIN.to_owned(), format!("{home_ns}/{}", home.name_any()))]);
    if s.exports.contains(&Export::Cilium) {
        for (k, v) in home.annotations() {
            if k.starts_with(CILIUM_PREFIX) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        annotations.insert(CILIUM_GLOBAL.into(), "true".into());
        // the remote cluster has no endpoints of its own to share
        annotations.insert(CILIUM_SHARED.into(), "false".into());
        if headless(home) {
            annotations.insert(CILIUM_SYNC_SLICES.into(), "true".into());
        }
    }
    let ports = spec.ports.map(|ports| {
        ports
            .into_iter()
            .map(|p| ServicePort {
                node_port: None,
                ..p
            })
            .collect()
    });
    Service {
        metadata: ObjectMeta {
            name: Some(home.name_any()),
            namespace: Some(remote_ns.to_owned()),
            labels: Some(labels(ctx, &home_ns)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(if external {
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: spec.external_name,
                ports,
                ..Default::default()
            }
        } else {
            ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: headless(home).then(|| "None".into()),
                ports,
                session_affinity: spec.session_affinity,
                session_affinity_config: spec.session_affinity_config,
                publish_not_ready_addresses: spec.publish_not_ready_addresses,
                ..Default::default()
            }
        }),
        status: None,
    }
}

/// The remote copy of home EndpointSlice `home` of Service `svc`.
pub(crate) fn slice(
    home: &EndpointSlice,
    svc: &str,
    remote_ns: &str,
    ctx: &Context,
    s: &Settings,
) -> EndpointSlice {
    let home_ns = home.namespace().unwrap_or_default();
    let mut l = labels(ctx, &home_ns);
    l.insert(SERVICE_NAME.into(), svc.into());
    l.insert(MANAGED_BY.into(), MANAGER.into());
    if s.exports.contains(&Export::Mcs) {
        l.insert(MCS_SERVICE_NAME.into(), svc.into());
    }
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(home.name_any()),
            namespace: Some(remote_ns.to_owned()),
            labels: Some(l),
            annotations: Some(BTreeMap::from([(
                ORIGIN.to_owned(),
                format!("{home_ns}/{}", home.name_any()),
            )])),
            ..Default::default()
        },
        address_type: home.address_type.clone(),
        endpoints: home.endpoints.as_ref().map(|es| {
            es.iter()
                .map(|e| Endpoint {
                    addresses: e.addresses.clone(),
                    conditions: e.conditions.clone(),
                    hostname: e.hostname.clone(),
                    zone: e.zone.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        ports: home.ports.clone(),
    }
}

/// The anchor of `remote_ns`, owned by `pods` (this node's pods there).
fn anchor(remote_ns: &str, home_ns: &str, pods: &[&Pod], ctx: &Context) -> ConfigMap {
    let mut l = labels(ctx, home_ns);
    l.insert(ANCHOR.into(), "services".into());
    let mut owners: Vec<OwnerReference> = pods
        .iter()
        .map(|p| {
            owner(
                "v1",
                "Pod",
                &p.name_any(),
                p.metadata.uid.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    owners.sort_by(|a, b| a.uid.cmp(&b.uid));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(anchor_name(&ctx.node)),
            namespace: Some(remote_ns.to_owned()),
            labels: Some(l),
            owner_references: Some(owners),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("home-namespace".to_owned(), home_ns.to_owned()),
            (
                "about".to_owned(),
                "skylet reflects the home Services of this namespace while pods of its node run here; \
                 the reflected Services are owned by this object, which is owned by those pods"
                    .to_owned(),
            ),
        ])),
        ..Default::default()
    }
}

/// Whether home Service `svc` is reflected at all (`default/kubernetes`
/// is the apiserver's own; every cluster has one).
fn reflectable(svc: &Service) -> bool {
    !(svc.namespace().as_deref() == Some("default") && svc.name_any() == "kubernetes")
}

/// What the remote cluster should hold, given this node's remote `pods`,
/// the home `services` (already the selected ones) and the home `slices`.
/// A remote namespace fed by several home namespaces (a `namespace-map`
/// mapping two onto one) gets the Services of the first, by name.
pub(crate) fn desired(
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    ctx: &Context,
    s: &Settings,
) -> Desired {
    // remote namespace -> home namespaces -> pods
    let mut active: BTreeMap<String, BTreeMap<String, Vec<&Pod>>> = BTreeMap::new();
    for p in pods {
        let (Some(remote_ns), Some(home_ns)) = (p.namespace(), p.labels().get(ORIGIN_NAMESPACE))
        else {
            continue;
        };
        active
            .entry(remote_ns)
            .or_default()
            .entry(home_ns.clone())
            .or_default()
            .push(p);
    }
    // the home Services by namespace and their slices by (namespace, Service):
    // a pass costs what the active namespaces hold, not the whole cluster
    let mut by_ns: HashMap<String, Vec<&Service>> = HashMap::new();
    for svc in services.iter().filter(|s| reflectable(s)) {
        if let Some(ns) = svc.namespace()
            && active.values().any(|h| h.contains_key(&ns))
        {
            by_ns.entry(ns).or_default().push(svc);
        }
    }
    let mut slices_of: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for sl in slices.iter() {
        if let (Some(ns), Some(svc)) = (sl.namespace(), sl.labels().get(SERVICE_NAME))
            && by_ns.contains_key(&ns)
        {
            slices_of.entry((ns, svc.clone())).or_default().push(sl);
        }
    }
    let mut d = Desired::default();
    for (remote_ns, homes) in &active {
        let all: Vec<&Pod> = homes.values().flatten().copied().collect();
        let first_home = homes.keys().next().map(String::as_str).unwrap_or_default();
        let a = anchor(remote_ns, first_home, &all, ctx);
        d.anchors.insert((remote_ns.clone(), a.name_any()), a);
        for home_ns in homes.keys() {
            for svc in by_ns.get(home_ns).into_iter().flatten() {
                let name = svc.name_any();
                let key = (remote_ns.clone(), name.clone());
                if d.services.contains_key(&key) {
                    continue;
                }
                d.services.insert(key, service(svc, remote_ns, ctx, s));
                if service_type(svc) == "ExternalName" || s.exports.contains(&Export::Cilium) {
                    continue;
                }
                for sl in slices_of
                    .get(&(home_ns.clone(), name.clone()))
                    .into_iter()
                    .flatten()
                {
                    d.slices.insert(
                        (remote_ns.clone(), sl.name_any()),
                        (slice(sl, &name, remote_ns, ctx, s), name.clone()),
                    );
                }
            }
        }
    }
    d
}

/// A hash of `obj` as JSON (stable within one build; after an upgrade a
/// changed hash only costs one rewrite).
pub(crate) fn hash_of<T: serde::Serialize>(obj: &T) -> String {
    let json = serde_json::to_string(obj).unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    json.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Sets `meta`'s owner and the hash annotation of the whole object (taken
/// with the owner set and before the hash itself).
pub(crate) fn seal<T: kube::Resource + serde::Serialize>(obj: &mut T, owners: Vec<OwnerReference>) {
    obj.meta_mut().owner_references = Some(owners);
    let h = hash_of(obj);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(HASH.to_owned(), h);
}

/// The hash annotation of `obj`, if any.
pub(crate) fn hash_on<T: kube::Resource>(obj: &T) -> Option<&str> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH))
        .map(String::as_str)
}
