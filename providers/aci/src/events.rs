//! ACI instance-view events -> Kubernetes Events on the pod.
//!
//! [`events`] reads a group's events (the group's own, then each init
//! container's and container's). Each sweep hands over the events of every
//! group; an event is recorded once per key ([`event_key`]: pod UID,
//! container, first time, count, name), so a repeated event (`count` grows)
//! is recorded again and an unchanged one never. Events whose last occurrence predates this process are taken as
//! recorded by an earlier skylet and skipped: a restart does not replay
//! history (an event that happened only while skylet was down is lost, the
//! lesser evil next to duplicates).
//!
//! The events go to the core through the [`Sink`] as [`PodEvent`]s (reporter
//! `skylet-aci`, action `Aci`); the core records them on the pod.

use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use skylet_provider::{BoundedSet, EventType, PodEvent, PodRef, Sink};

use crate::models::{self, ContainerGroup};

/// One ACI event, from the group or one of its containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEvent {
    /// The container it is about; `None` for the group.
    pub container: Option<String>,
    /// Event name (`Pulling`, `Pulled`, `Started`, `Killing`, ...).
    pub name: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// Message.
    pub message: Option<String>,
    /// How often it happened.
    pub count: i32,
    /// First occurrence.
    pub first_timestamp: Option<Timestamp>,
    /// Last occurrence.
    pub last_timestamp: Option<Timestamp>,
}

/// Every event of the group: group-level first, then each init container's
/// and each container's, in the order ACI lists them.
pub fn events(group: &ContainerGroup) -> Vec<GroupEvent> {
    let p = &group.properties;
    let convert = |container: Option<&str>, e: &models::Event| GroupEvent {
        container: container.map(str::to_owned),
        name: e.name.clone().unwrap_or_default(),
        type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
        message: e.message.clone(),
        count: e.count.unwrap_or(1),
        first_timestamp: e.first_timestamp,
        last_timestamp: e.last_timestamp,
    };
    let mut out: Vec<GroupEvent> = p
        .instance_view
        .iter()
        .flat_map(|v| &v.events)
        .map(|e| convert(None, e))
        .collect();
    let views = p
        .init_containers
        .iter()
        .map(|c| (c.name.as_str(), c.properties.instance_view.as_ref()))
        .chain(
            p.containers
                .iter()
                .map(|c| (c.name.as_str(), c.properties.instance_view.as_ref())),
        );
    for (name, view) in views {
        out.extend(
            view.into_iter()
                .flat_map(|v| &v.events)
                .map(|e| convert(Some(name), e)),
        );
    }
    out
}

/// A key that is the same for an event of the pod with UID `pod_uid` in
/// every sweep until it happens again: pod UID, container, first
/// occurrence, count and name. UIDs, container names and timestamps hold
/// no `/`, and the name comes last, so keys of different events differ,
/// also when two pods' groups report the same event text at the same time.
pub fn event_key(pod_uid: &str, e: &GroupEvent) -> String {
    let first = e
        .first_timestamp
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{pod_uid}/{}/{first}/{}/{}",
        e.container.as_deref().unwrap_or(""),
        e.count,
        e.name
    )
}

/// How many recorded keys are remembered.
const SEEN_MAX: usize = 20_000;

/// The reporting component of every ACI Event.
pub(crate) const REPORTER: &str = "skylet-aci";

/// The action of every ACI Event.
pub(crate) const ACTION: &str = "Aci";

/// Sends ACI events of pods to the core; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    sink: Sink,
    since: jiff::Timestamp,
    seen: Arc<Mutex<BoundedSet<String>>>,
}

impl Forwarder {
    /// A forwarder sending to `sink`.
    pub(crate) fn new(sink: Sink) -> Self {
        Self {
            sink,
            since: jiff::Timestamp::now(),
            seen: Arc::new(Mutex::new(BoundedSet::new(SEEN_MAX))),
        }
    }

    /// The events of `pod` not recorded yet, remembering them as recorded.
    pub(crate) fn fresh(&self, pod: &PodRef, events: Vec<GroupEvent>) -> Vec<GroupEvent> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .into_iter()
            .filter(|e| seen.insert(event_key(&pod.uid, e)))
            .filter(|e| e.last_timestamp.is_none_or(|t| t >= self.since))
            .collect()
    }

    /// Sends the new events of `pod` to the core.
    pub(crate) fn forward(&self, pod: &PodRef, events: Vec<GroupEvent>) {
        for e in self.fresh(pod, events) {
            self.sink.event(pod_event(pod, &e));
        }
    }

    /// Sends a Warning Event of skylet's own about `pod` (`ProbeNotSupported`).
    pub(crate) fn warn(&self, pod: &PodRef, reason: &str, note: String) {
        self.sink.event(PodEvent {
            pod: pod.clone(),
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note,
            action: ACTION,
            reporter: REPORTER,
        });
    }
}

/// The Kubernetes Event of an ACI event.
fn pod_event(pod: &PodRef, e: &GroupEvent) -> PodEvent {
    let type_ = if e.type_.eq_ignore_ascii_case("warning") {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let what = e.container.as_deref().map_or_else(
        || "container group".to_owned(),
        |c| format!("container {c}"),
    );
    PodEvent {
        pod: pod.clone(),
        type_,
        reason: reason(&e.name),
        note: format!("ACI {what}: {}", e.message.as_deref().unwrap_or(&e.name)),
        action: ACTION,
        reporter: REPORTER,
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
    use serde_json::json;
    use skylet_provider::BackendEvent;

    use super::*;

    const T0: &str = "2026-11-25T21:40:00Z";
    const T1: &str = "2026-11-25T21:40:30Z";
    const T2: &str = "2026-11-25T21:41:00Z";

    #[test]
    fn reasons_are_pascal_case() {
        assert_eq!(reason("Pulling"), "Pulling");
        assert_eq!(reason("image pull failed"), "ImagePullFailed");
        assert_eq!(reason(""), "AciEvent");
    }

    fn event(container: Option<&str>, name: &str, type_: &str, count: i32) -> GroupEvent {
        let now = jiff::Timestamp::now();
        GroupEvent {
            container: container.map(str::to_owned),
            name: name.to_owned(),
            type_: type_.to_owned(),
            message: Some(format!("{name}!")),
            count,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
        }
    }

    #[test]
    fn each_event_reaches_the_sink_once() {
        let (sink, mut rx) = Sink::channel();
        let f = Forwarder::new(sink);
        let pod = PodRef::new("shop", "web", "uid-web");
        let pulling = event(Some("web"), "Pulling", "Normal", 1);
        let failed = event(None, "image pull failed", "Warning", 1);
        f.forward(&pod, vec![pulling.clone(), failed.clone()]);
        // the same events again: nothing; a repeat (count grows): again
        f.forward(&pod, vec![pulling.clone(), failed]);
        f.forward(
            &pod,
            vec![GroupEvent {
                count: 2,
                ..pulling
            }],
        );
        let mut got = Vec::new();
        while let Ok(BackendEvent::Event(e)) = rx.try_recv() {
            got.push(*e);
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            PodEvent {
                pod: pod.clone(),
                type_: EventType::Normal,
                reason: "Pulling".into(),
                note: "ACI container web: Pulling!".into(),
                action: "Aci",
                reporter: "skylet-aci",
            }
        );
        assert_eq!(got[1].type_, EventType::Warning);
        assert_eq!(got[1].reason, "ImagePullFailed");
        assert_eq!(got[1].note, "ACI container group: image pull failed!");
        assert_eq!(got[2].reason, "Pulling");
    }

    #[test]
    fn two_pods_with_the_same_event_both_get_it() {
        // two pods' groups report the same event text at the same time (the
        // same image pulled in the same sweep): each pod gets its Event
        let (sink, mut rx) = Sink::channel();
        let f = Forwarder::new(sink);
        let pulling = event(Some("web"), "Pulling", "Normal", 1);
        let a = PodRef::new("shop", "web-a", "uid-a");
        let b = PodRef::new("shop", "web-b", "uid-b");
        f.forward(&a, vec![pulling.clone()]);
        f.forward(&b, vec![pulling.clone()]);
        // and each only once
        f.forward(&a, vec![pulling.clone()]);
        f.forward(&b, vec![pulling]);
        let mut got = Vec::new();
        while let Ok(BackendEvent::Event(e)) = rx.try_recv() {
            got.push(e.pod.uid.clone());
        }
        assert_eq!(got, ["uid-a", "uid-b"]);
    }

    #[test]
    fn history_from_before_the_start_is_skipped() {
        let (sink, mut rx) = Sink::channel();
        let f = Forwarder::new(sink);
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
        let e = GroupEvent {
            last_timestamp: Some(old),
            first_timestamp: Some(old),
            ..event(Some("web"), "Started", "Normal", 1)
        };
        f.forward(&PodRef::new("shop", "web", "uid-web"), vec![e]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn events_and_their_keys() {
        let ev = |name: &str, count: i32, first: &str| json!({"name": name, "type": "Normal", "count": count, "firstTimestamp": first, "lastTimestamp": T2, "message": format!("{name}!")});
        let container = |name: &str, view: serde_json::Value| {
            json!({"name": name, "properties": {"image": "i", "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}},
                                                "instanceView": view}})
        };
        let g: ContainerGroup = serde_json::from_value(json!({
            "name": "g", "location": "westeurope",
            "properties": {"provisioningState": "Succeeded", "restartPolicy": "Always", "osType": "Linux",
                "instanceView": {"state": "Running", "events": [{"name": "SuccessfulMountAzureFileVolume", "type": "Normal"}]},
                "containers": [container("web", json!({"currentState": {"state": "Running"}, "events": [ev("Pulling", 1, T0), ev("Started", 1, T1)]}))],
                "initContainers": [container("init", json!({"currentState": {"state": "Terminated", "exitCode": 0}, "events": [ev("Started", 1, T0)]}))]}
        }))
        .unwrap();
        let es = events(&g);
        let who: Vec<(Option<&str>, &str)> = es
            .iter()
            .map(|e| (e.container.as_deref(), e.name.as_str()))
            .collect();
        assert_eq!(
            who,
            [
                (None, "SuccessfulMountAzureFileVolume"),
                (Some("init"), "Started"),
                (Some("web"), "Pulling"),
                (Some("web"), "Started")
            ]
        );
        assert_eq!(
            (es[0].count, es[0].type_.as_str()),
            (1, "Normal"),
            "defaults"
        );
        let key = |e: &GroupEvent| event_key("uid-1", e);
        let keys: std::collections::BTreeSet<String> = es.iter().map(key).collect();
        assert_eq!(keys.len(), es.len(), "distinct events, distinct keys");
        // stable across sweeps; new when it happens again
        assert_eq!(key(&events(&g)[2]), key(&es[2]));
        let mut again = es[2].clone();
        again.count = 2;
        again.last_timestamp = Some(jiff::Timestamp::now());
        assert_ne!(key(&again), key(&es[2]));
        let mut msg = es[2].clone();
        msg.message = Some("other".into());
        assert_eq!(key(&msg), key(&es[2]), "the message is not part of the key");
        assert_ne!(
            event_key("uid-2", &es[2]),
            key(&es[2]),
            "the same event of another pod is another event"
        );
    }
}
