//! ACI instance-view events -> Kubernetes Events on the pod.
//!
//! Each sweep hands over the events of every group; an event is recorded
//! once per key ([`status::event_key`]: name, container, first time, count),
//! so a repeated event (`count` grows) is recorded again and an unchanged one
//! never. Events whose last occurrence predates this process are taken as
//! recorded by an earlier skylet and skipped: a restart does not replay
//! history (an event that happened only while skylet was down is lost, the
//! lesser evil next to duplicates).

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use skylet_provider::PodRef;

use crate::status::{self, GroupEvent};

/// How many recorded keys are remembered.
const SEEN_MAX: usize = 20_000;

/// Records ACI events on pods; cheap to clone.
#[derive(Clone)]
pub(crate) struct Forwarder {
    recorder: Option<Recorder>,
    since: jiff::Timestamp,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Whether `key` is new (and remembers it).
    fn insert(&mut self, key: String) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > SEEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

impl Forwarder {
    /// A forwarder recording through `client` as `skylet-aci` on `node`;
    /// without a client it only deduplicates (unit tests).
    pub(crate) fn new(client: Option<kube::Client>, node: &str) -> Self {
        let recorder = client.map(|c| {
            Recorder::new(
                c,
                Reporter {
                    controller: "skylet-aci".into(),
                    instance: Some(node.to_owned()),
                },
            )
        });
        Self {
            recorder,
            since: jiff::Timestamp::now(),
            seen: Arc::default(),
        }
    }

    /// The events of `pod` not recorded yet, remembering them as recorded.
    pub(crate) fn fresh(&self, events: Vec<GroupEvent>) -> Vec<GroupEvent> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .into_iter()
            .filter(|e| seen.insert(status::event_key(e)))
            .filter(|e| e.last_timestamp.is_none_or(|t| t >= self.since))
            .collect()
    }

    /// Records the new events of `pod` in the background.
    pub(crate) fn forward(&self, pod: &PodRef, events: Vec<GroupEvent>) {
        let fresh = self.fresh(events);
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        if fresh.is_empty() {
            return;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        let pod = pod.clone();
        tokio::spawn(async move {
            for e in fresh {
                let type_ = if e.type_.eq_ignore_ascii_case("warning") {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                let what = e.container.as_deref().map_or_else(
                    || "container group".to_owned(),
                    |c| format!("container {c}"),
                );
                let note = format!("ACI {what}: {}", e.message.as_deref().unwrap_or(&e.name));
                let event = Event {
                    type_,
                    reason: reason(&e.name),
                    note: Some(note),
                    action: "Aci".into(),
                    secondary: None,
                };
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %err, pod = %pod, "cannot record an ACI event");
                }
            }
        });
    }
}

/// A PascalCase reason from an ACI event name (`Pulling`, `Started`, ...).
fn reason(name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.is_empty() {
        "AciEvent".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case() {
        assert_eq!(reason("Pulling"), "Pulling");
        assert_eq!(reason("image pull failed"), "ImagePullFailed");
        assert_eq!(reason(""), "AciEvent");
    }
}
