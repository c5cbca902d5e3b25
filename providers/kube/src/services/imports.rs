//! Multi-Cluster Services: a `ServiceImport` (multicluster.x-k8s.io
//! v1alpha1) per reflected Service, when the remote cluster has the CRD,
//! owned by the reflected Service (the remote garbage collector removes it
//! with the Service). Written when what it is made from changed since this
//! process last wrote it; an import of that name skylet did not write (an MCS
//! controller's) is left alone.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
};
use serde_json::json;

use super::{
    Memory, Reflector,
    desired::{self, Key, ORIGIN},
    write::ours,
};
use crate::calls::op;

/// The API version of the MCS objects.
pub(crate) const MCS_VERSION: &str = "multicluster.x-k8s.io/v1alpha1";
/// How long the answer to "is the CRD there" is kept.
const CRD_CHECK: Duration = Duration::from_secs(60);

/// The ServiceImport kind.
fn kind() -> ApiResource {
    ApiResource {
        group: "multicluster.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: MCS_VERSION.into(),
        kind: "ServiceImport".into(),
        plural: "serviceimports".into(),
    }
}

/// The import of reflected Service `svc` (as the remote cluster holds it),
/// or `None` while it has no address yet or when it cannot have one (an
/// ExternalName).
pub(crate) fn import(svc: &Service) -> Option<DynamicObject> {
    let spec = svc.spec.as_ref()?;
    let (type_, ips) = match (desired::service_type(svc), spec.cluster_ip.as_deref()) {
        ("ExternalName", _) => return None,
        (_, Some("None")) => ("Headless", vec![]),
        (_, Some(ip)) if !ip.is_empty() => ("ClusterSetIP", vec![ip.to_owned()]),
        _ => return None,
    };
    let ports: Vec<serde_json::Value> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let mut v = json!({"port": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
            if let Some(n) = &p.name {
                v["name"] = json!(n);
            }
            if let Some(a) = &p.app_protocol {
                v["appProtocol"] = json!(a);
            }
            v
        })
        .collect();
    let mut spec_json = json!({"type": type_, "ports": ports});
    if !ips.is_empty() {
        spec_json["ips"] = json!(ips);
    }
    if let Some(a) = &spec.session_affinity {
        spec_json["sessionAffinity"] = json!(a);
    }
    let mut obj = DynamicObject::new(&svc.name_any(), &kind())
        .within(&svc.namespace().unwrap_or_default())
        .data(json!({"spec": spec_json}));
    let labels: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| k.starts_with("skylet.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    obj.metadata.labels = Some(labels);
    obj.metadata.annotations = svc
        .annotations()
        .get(ORIGIN)
        .map(|o| BTreeMap::from([(ORIGIN.to_owned(), o.clone())]));
    obj.metadata.owner_references = Some(vec![desired::owner(
        "v1",
        "Service",
        &svc.name_any(),
        svc.metadata.uid.as_deref().unwrap_or_default(),
    )]);
    Some(obj)
}

/// Whether the remote cluster serves ServiceImports (asked at most once a
/// minute).
async fn crd_present(r: &Reflector, memory: &mut Memory) -> bool {
    if let Some((present, at)) = memory.mcs
        && at.elapsed() < CRD_CHECK
    {
        return present;
    }
    let listed = r
        .calls
        .run(
            op::MCS_RESOURCES,
            r.remote.list_api_group_resources(MCS_VERSION),
        )
        .await;
    let present = match listed {
        Ok(l) => l.resources.iter().any(|x| x.name == "serviceimports"),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => {
            tracing::debug!(error = %e, "cannot tell whether the remote cluster serves ServiceImports");
            return memory.mcs.is_some_and(|(p, _)| p);
        }
    };
    if memory.mcs.map(|(p, _)| p) != Some(present) {
        tracing::info!(
            present,
            "the remote cluster's multicluster.x-k8s.io/v1alpha1 ServiceImport CRD"
        );
    }
    memory.mcs = Some((present, tokio::time::Instant::now()));
    present
}

/// Brings the imports in line with the reflected `services`; returns the
/// failures.
pub(super) async fn sync(
    r: &Reflector,
    services: &BTreeMap<Key, Service>,
    memory: &mut Memory,
) -> usize {
    if !crd_present(r, memory).await {
        return 0;
    }
    let mut failures = 0;
    let wanted: BTreeMap<Key, DynamicObject> = services
        .iter()
        .filter_map(|(k, s)| Some((k.clone(), import(s)?)))
        .collect();
    for (key, mut obj) in wanted.clone() {
        let hash = desired::hash_of(&obj);
        if memory.imports.get(&key) == Some(&hash) {
            continue;
        }
        obj.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(desired::HASH.into(), hash.clone());
        match put(r, &key, obj).await {
            Ok(true) => {
                memory.imports.insert(key, hash);
            }
            Ok(false) => {
                if memory.foreign.insert(("ServiceImport", key.clone())) {
                    tracing::warn!(namespace = %key.0, name = %key.1, "a ServiceImport of that name exists that skylet did not write; leaving it");
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "cannot write the ServiceImport; retrying");
            }
        }
    }
    let gone: Vec<Key> = memory
        .imports
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        let api: Api<DynamicObject> = Api::namespaced_with(r.remote.clone(), &key.0, &kind());
        let deleted = r
            .calls
            .run(
                op::DELETE_SERVICE_IMPORT,
                api.delete(&key.1, &DeleteParams::background()),
            )
            .await;
        match deleted {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                failures += 1;
                tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "cannot remove the ServiceImport; retrying");
                continue;
            }
        }
        memory.imports.remove(&key);
    }
    failures
}

/// Creates or replaces one import; `false` when one skylet did not write is
/// in the way.
async fn put(r: &Reflector, key: &Key, obj: DynamicObject) -> Result<bool, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(r.remote.clone(), &key.0, &kind());
    let found = r
        .calls
        .run(op::READ_SERVICE_IMPORT, api.get_opt(&key.1))
        .await?;
    match found {
        None => {
            r.calls
                .run(
                    op::CREATE_SERVICE_IMPORT,
                    api.create(&PostParams::default(), &obj),
                )
                .await?;
        }
        Some(existing) if !ours(&existing, &r.ctx) => return Ok(false),
        Some(existing) => {
            let mut obj = obj;
            obj.metadata.resource_version = existing.metadata.resource_version;
            r.calls
                .run(
                    op::REPLACE_SERVICE_IMPORT,
                    api.replace(&key.1, &PostParams::default(), &obj),
                )
                .await?;
        }
    }
    Ok(true)
}
