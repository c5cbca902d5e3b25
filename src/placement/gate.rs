//! The fencing gate controller: releases `skylet.io/fencing` from a pod
//! once no pod of its controller is Terminating on a virtual node.
//!
//! skylet keeps a pod it was told to delete Terminating until its backend
//! confirmed the instance gone (ECS `STOPPED`, ACI 404, remote 404), and
//! never force-deletes it; so "Terminating on a virtual node" means "may
//! still run". A gated pod waits for every such pod of its controller (not
//! one predecessor: the replicas of a controller are interchangeable, so
//! this keeps running + unconfirmed instances at most the replica count).
//!
//! Each pass reads the cache; before a release the predecessors are read
//! again from the apiserver (the cache may lag behind a deletion), and the
//! gate is removed with a patch that carries the pod's resourceVersion (a
//! concurrent change makes it fail and the next pass retries). Events:
//! `FencingUnconfirmed` (Warning) once when a gated pod is first seen
//! waiting, naming the pods it waits for; `FencingConfirmed` when it is
//! released.
//!
//! A predecessor on a node that no longer exists is not waited for: the
//! pod garbage collector force-deletes pods of deleted nodes, and what
//! their instances do is unknown to Kubernetes (see the README's limits).
//!
//! RBAC: `pods`: get, list, patch; `events` (events.k8s.io): create.

use std::{collections::HashSet, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::view::{GATE, NodeView, PodInfo, View, owner_of};

/// The pods a gated pod waits for, from the cache: pods of the same
/// controller, Terminating, on a virtual node.
pub(crate) fn waiting_for<'a>(
    gated: &PodInfo,
    pods: &'a [Arc<PodInfo>],
    nodes: &[NodeView],
) -> Vec<&'a PodInfo> {
    let Some(owner) = &gated.owner else {
        return Vec::new();
    };
    pods.iter()
        .map(AsRef::as_ref)
        .filter(|p| p.uid != gated.uid && p.terminating && p.namespace == gated.namespace)
        .filter(|p| p.owner.as_ref().is_some_and(|o| o.uid == owner.uid))
        .filter(|p| {
            p.node
                .as_deref()
                .is_some_and(|n| nodes.iter().any(|v| v.name == n && v.is_virtual()))
        })
        .collect()
}

/// Runs until `shutdown`.
pub(crate) async fn run(
    client: Client,
    view: Arc<View>,
    recorder: Recorder,
    shutdown: CancellationToken,
) {
    let mut changes = view.subscribe();
    while !view.wait_ready(Duration::from_secs(5)).await {
        if shutdown.is_cancelled() {
            return;
        }
    }
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let pods = view.pods();
        let nodes = view.nodes();
        let gated: Vec<&Arc<PodInfo>> = pods
            .iter()
            .filter(|p| p.gated && !p.terminating && view.namespace_allowed(&p.namespace))
            .collect();
        reported.retain(|uid| gated.iter().any(|p| &p.uid == uid));
        for g in gated {
            let waits = waiting_for(g, &pods, &nodes);
            if !waits.is_empty() {
                if reported.insert(g.uid.clone()) {
                    let names: Vec<String> = waits
                        .iter()
                        .map(|p| format!("{} on {}", p.name, p.node.as_deref().unwrap_or("?")))
                        .collect();
                    let note = format!(
                        "held by scheduling gate {GATE}: waiting until the backend confirms these pods gone: {}",
                        names.join(", ")
                    );
                    publish(&recorder, g, EventType::Warning, "FencingUnconfirmed", note).await;
                }
                continue;
            }
            match release(&client, g, &nodes).await {
                Ok(true) => {
                    let owner = g
                        .owner
                        .as_ref()
                        .map_or_else(String::new, |o| format!(" of {} {}", o.kind, o.name));
                    tracing::info!(pod.namespace = %g.namespace, pod.name = %g.name, "fencing confirmed; scheduling gate removed");
                    let note = format!(
                        "no pod{owner} is Terminating on a virtual node any more: every predecessor's instance is confirmed gone; removed scheduling gate {GATE}"
                    );
                    publish(&recorder, g, EventType::Normal, "FencingConfirmed", note).await;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pod.namespace = %g.namespace, pod.name = %g.name, error = %e, "cannot release the fencing gate; retrying")
                }
            }
        }
        // wake on any change, at most every 250 ms, at least every 5 s
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Re-checks `gated` against the apiserver and removes the gate: `true`
/// when removed, `false` when a predecessor is still there or the pod
/// changed.
async fn release(
    client: &Client,
    gated: &PodInfo,
    nodes: &[NodeView],
) -> Result<bool, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &gated.namespace);
    let pod = match api.get(&gated.name).await {
        Ok(p) if p.uid().as_deref() == Some(gated.uid.as_str()) => p,
        Ok(_) => return Ok(false),
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Some(owner) = owner_of(&pod) {
        let selector: Vec<String> = pod
            .labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let live = api
            .list(&ListParams::default().labels(&selector.join(",")))
            .await?
            .items;
        let infos: Vec<Arc<PodInfo>> = live
            .iter()
            .filter(|p| owner_of(p).is_some_and(|o| o.uid == owner.uid))
            .map(|p| Arc::new(PodInfo::from_pod(p)))
            .collect();
        if !waiting_for(&PodInfo::from_pod(&pod), &infos, nodes).is_empty() {
            return Ok(false);
        }
    }
    let gates: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g.name != GATE)
        .collect();
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "spec": {"schedulingGates": gates},
    });
    match api
        .patch(&gated.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn publish(recorder: &Recorder, p: &PodInfo, type_: EventType, reason: &str, note: String) {
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(p.namespace.clone()),
        name: Some(p.name.clone()),
        uid: Some(p.uid.clone()),
        ..Default::default()
    };
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Fencing".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::debug!(error = %e, reason, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::placement::view::{
        Owner,
        fixtures::{own_node, virtual_node},
    };

    fn info(
        name: &str,
        owner: &str,
        node: Option<&str>,
        terminating: bool,
        gated: bool,
    ) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: owner.into(),
                uid: format!("rs-{owner}"),
            }),
            node: node.map(Into::into),
            terminating,
            gated,
            ..PodInfo::default()
        })
    }

    #[test]
    fn a_gated_pod_waits_for_terminating_pods_of_its_controller_on_virtual_nodes() {
        let nodes = vec![
            virtual_node("vn", "mock", &[], &[("pods", "10")], None),
            own_node("own", &[], &[("pods", "10")]),
        ];
        let pods = vec![
            info("old", "a", Some("vn"), true, false),
            info("old-own", "a", Some("own"), true, false),
            info("other", "b", Some("vn"), true, false),
            info("alive", "a", Some("vn"), false, false),
            info("new", "a", None, false, true),
        ];
        let waits = waiting_for(&pods[4], &pods, &nodes);
        assert_eq!(
            waits.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            vec!["old"]
        );
        let pods: Vec<_> = pods.into_iter().filter(|p| p.name != "old").collect();
        let gated = pods.iter().find(|p| p.gated).unwrap().clone();
        assert!(waiting_for(&gated, &pods, &nodes).is_empty());
    }
}
