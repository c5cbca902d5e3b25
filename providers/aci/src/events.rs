//! ACI instance-view events -> Kubernetes Events on the pod.
//!
//! Each sweep hands over the events of every group; an event is recorded
//! once per key ([`status::event_key`]: pod UID, container, first time,
//! count, name),
//! so a repeated event (`count` grows) is recorded again and an unchanged one
//! never. Events whose last occurrence predates this process are taken as
//! recorded by an earlier skylet and skipped: a restart does not replay
//! history (an event that happened only while skylet was down is lost, the
//! lesser evil next to duplicates).
//!
//! The events go to the core through the [`Sink`] as [`PodEvent`]s (reporter
//! `skylet-aci`, action `Aci`); the core records them on the pod.

use std::sync::{Arc, Mutex, PoisonError};

use skylet_provider::{BoundedSet, EventType, PodEvent, PodRef, Sink};

use crate::status::{self, GroupEvent};

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
            .filter(|e| seen.insert(status::event_key(&pod.uid, e)))
            .filter(|e| e.last_timestamp.is_none_or(|t| t >= self.since))
            .collect()
    }

    /// Sends the new events of `pod` to the core.
    pub(crate) fn forward(&self, pod: &PodRef, events: Vec<GroupEvent>) {
        for e in self.fresh(pod, events) {
            self.sink.event(pod_event(pod, &e));
        }
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
    use skylet_provider::BackendEvent;

    use super::*;

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
}
