//! [`PodRecord`]: what the pod store keeps of a pod.
//!
//! Until the backend holds a pod, the store keeps the whole pod: the create
//! resolves its spec. Once the backend holds it and skylet has read what it
//! needs of the whole pod (the cost meter's billed size; no token to
//! refresh), the next watch event of the pod is kept as a slim record: its
//! identity, its containers' names, images and resources (what may change
//! while it runs), its active deadline, its status. That is all that
//! status writes, stops, the sweep and the kubelet API read again; whatever
//! needs more (a create again after the backend lost the pod, a token
//! refresh, the meter after a restart) fetches the whole pod from the
//! apiserver ([`super::Ctx::whole`]).
//!
//! A k8s-openapi `Pod` is 2.4 KB before any of its fields is set (its
//! `Container` alone is 2.1 KB), so a slim record does not keep a `Pod`: it
//! keeps the slim pod serialized, and [`PodRecord::pod`] builds it again
//! when a reconcile needs it (a few hundred at most at once: the work
//! queue's lanes). The JSON (about 1 KB for a pod of one container, nearly
//! all of it its status) is kept compressed by zstd against a dictionary of
//! what pod statuses have in common (`record_dict.json`, [`super::packed`]): about
//! a fifth of the size, a few microseconds each way.

use std::{borrow::Cow, sync::Arc};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Container, EphemeralContainer, Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, runtime::watcher};
use skylet_provider::PodRef;

use super::packed;

/// A pod as the store keeps it: whole, or slim once the backend holds it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(from = "Pod")]
pub struct PodRecord {
    /// Identity, deletion and owners; no labels, annotations or
    /// managedFields.
    metadata: ObjectMeta,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    Whole(Arc<Pod>),
    Slim {
        phase: Option<Box<str>>,
        /// A `Pod` without metadata, as [`packed`] JSON: the containers'
        /// names, images and resources, `nodeName`, the status.
        rest: Box<[u8]>,
    },
}

impl From<Pod> for PodRecord {
    fn from(pod: Pod) -> Self {
        Self::whole(pod)
    }
}

impl PodRecord {
    /// The whole pod.
    pub fn whole(pod: Pod) -> Self {
        Self {
            metadata: slim_meta(&pod.metadata),
            body: Body::Whole(Arc::new(pod)),
        }
    }

    /// What status writes, stops, the sweep, the kubelet API and in-place
    /// changes read of `pod`, and nothing else.
    pub fn slim(pod: Pod) -> Self {
        let metadata = slim_meta(&pod.metadata);
        let names = |cs: &[Container]| -> Vec<Container> {
            cs.iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    resources: c.resources.clone(),
                    ..Default::default()
                })
                .collect()
        };
        let spec = pod.spec.as_ref().map(|s| PodSpec {
            containers: names(&s.containers),
            init_containers: s.init_containers.as_deref().map(names),
            ephemeral_containers: s.ephemeral_containers.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| EphemeralContainer {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            node_name: s.node_name.clone(),
            active_deadline_seconds: s.active_deadline_seconds,
            ..Default::default()
        });
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .map(Into::into);
        let rest = Pod {
            metadata: ObjectMeta::default(),
            spec,
            status: pod.status,
        };
        match packed::to_packed(&rest) {
            Some(rest) => Self {
                metadata,
                body: Body::Slim { phase, rest },
            },
            // serializing k8s-openapi structs does not fail, nor does
            // compressing bytes in memory; keep it whole if either did
            None => Self {
                metadata,
                body: Body::Whole(Arc::new(rest)),
            },
        }
    }

    /// Whether this is the slim record, not the whole pod.
    pub fn is_slim(&self) -> bool {
        matches!(self.body, Body::Slim { .. })
    }

    /// The pod: the whole one, or the slim one built again.
    pub fn pod(&self) -> Arc<Pod> {
        match &self.body {
            Body::Whole(p) => p.clone(),
            Body::Slim { rest, .. } => {
                let mut pod: Pod = packed::from_packed(rest).unwrap_or_default();
                pod.metadata = self.metadata.clone();
                Arc::new(pod)
            }
        }
    }

    /// `status.phase`.
    pub fn phase(&self) -> Option<&str> {
        match &self.body {
            Body::Whole(p) => p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Body::Slim { phase, .. } => phase.as_deref(),
        }
    }

    /// Whether the pod has finished for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase(), Some("Succeeded" | "Failed"))
    }

    /// Which pod.
    pub fn pod_ref(&self) -> PodRef {
        let m = &self.metadata;
        PodRef::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
        )
    }
}

/// A watch event of pods as the store keeps them: the slim record of each
/// pod whose UID is `settled`, the whole pod otherwise.
pub(super) fn keep(
    ev: watcher::Event<Pod>,
    settled: impl Fn(&str) -> bool,
) -> watcher::Event<PodRecord> {
    let record = |p: Pod| {
        if p.metadata.uid.as_deref().is_some_and(&settled) {
            PodRecord::slim(p)
        } else {
            PodRecord::whole(p)
        }
    };
    match ev {
        watcher::Event::Apply(p) => watcher::Event::Apply(record(p)),
        watcher::Event::Delete(p) => watcher::Event::Delete(record(p)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(p) => watcher::Event::InitApply(record(p)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The metadata the core reads of a pod it holds: identity, deletion,
/// owners, finalizers.
fn slim_meta(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.clone(),
        deletion_timestamp: m.deletion_timestamp.clone(),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        owner_references: m.owner_references.clone(),
        finalizers: m.finalizers.clone(),
        ..Default::default()
    }
}

impl Resource for PodRecord {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        Pod::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 2,
                "labels": {"app": "web"}, "annotations": {"big": "x".repeat(1000)},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                    "uid": "rs", "controller": true}],
                "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "n", "serviceAccountName": "sa",
                "initContainers": [{"name": "i", "image": "img-i", "command": ["true"]}],
                "containers": [{"name": "a", "image": "img-a", "env": [{"name": "K", "value": "V"}],
                    "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_slim_record_keeps_what_the_core_reads_again() {
        let whole = PodRecord::whole(pod());
        assert!(!whole.is_slim());
        assert_eq!(*whole.pod(), pod(), "the whole pod is kept as it is");

        let slim = PodRecord::slim(pod());
        assert!(slim.is_slim());
        assert_eq!(slim.phase(), Some("Running"));
        assert_eq!(slim.pod_ref(), PodRef::new("ns", "p", "u1"));
        let p = slim.pod();
        let spec = p.spec.as_ref().unwrap();
        let names: Vec<_> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| (c.name.as_str(), c.image.as_deref()))
            .collect();
        assert_eq!(names, [("a", Some("img-a")), ("i", Some("img-i"))]);
        assert_eq!(spec.node_name.as_deref(), Some("n"));
        assert!(spec.containers[0].env.is_none() && spec.containers[0].resources.is_some());
        assert_eq!(p.status, pod().status, "the status is kept whole");
        assert_eq!(p.metadata.generation, Some(2));
        assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
        assert_eq!(p.metadata.owner_references, pod().metadata.owner_references);
        assert!(p.metadata.annotations.is_none() && p.metadata.labels.is_none());
    }

    #[test]
    fn a_slim_record_keeps_a_running_pods_status_in_a_fraction_of_its_json() {
        let mut running = pod();
        let conditions: Vec<_> = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-12-08T09:14:03Z"}))
        .into();
        running.status = Some(
            serde_json::from_value(json!({
                "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "10.7.3.211", "podIPs": [{"ip": "10.7.3.211"}], "qosClass": "BestEffort",
                "startTime": "2026-12-08T09:14:02Z", "observedGeneration": 1,
                "conditions": conditions,
                "containerStatuses": [{"name": "a", "image": "img-a", "imageID": "mock://img-a",
                    "containerID": "mock://0f4f5e3c-8f65-4f0e-a0f4-2b1d5c8e9a71/a", "ready": true,
                    "started": true, "restartCount": 0, "lastState": {},
                    "state": {"running": {"startedAt": "2026-12-08T09:14:03Z"}}}]
            }))
            .unwrap(),
        );
        let json = serde_json::to_vec(&Pod {
            metadata: ObjectMeta::default(),
            ..running.clone()
        })
        .unwrap()
        .len();
        let slim = PodRecord::slim(running.clone());
        let Body::Slim { rest, .. } = &slim.body else {
            panic!("kept whole")
        };
        assert!(
            rest.len() * 4 < json,
            "{} bytes kept for {json} bytes of JSON",
            rest.len()
        );
        assert_eq!(
            slim.pod().status,
            running.status,
            "the status comes back whole"
        );
    }
}
