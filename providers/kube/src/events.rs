//! Remote pod Events -> home pod Events.
//!
//! One watch on the remote cluster's Events about Pods; an Event whose pod
//! is one of this node's remote pods goes to the core's [`Sink`], which
//! records it on the home pod, once (by the remote Event's UID), with the
//! remote cluster named in the note (`remote: ...`), reporter `skylet-kube`,
//! action `Remote`. Events that existed before skylet started are not
//! replayed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use skylet_provider::{BoundedSet, EventType, PodEvent, PodRef, Sink};

/// Remote pods of this node by (namespace, name), filled by the pod watch
/// and by each create (before the pod exists, so that none of its Events is
/// missed).
#[derive(Clone, Default)]
pub(crate) struct Owners(Arc<Mutex<HashMap<(String, String), PodRef>>>);

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodRef>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, ns: &str, name: &str, origin: PodRef) {
        self.lock().insert((ns.to_owned(), name.to_owned()), origin);
    }

    pub(crate) fn remove(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_owned(), name.to_owned()));
    }

    fn get(&self, ns: &str, name: &str) -> Option<PodRef> {
        self.lock().get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}

/// How many forwarded Event UIDs are remembered (for deduplication).
const SEEN_MAX: usize = 10_000;

/// The reporting component of the Events recorded at home.
pub(crate) const REPORTER: &str = "skylet-kube";

/// The action of the Events recorded at home.
const ACTION: &str = "Remote";

/// Turns the remote Event watch into home pod Events, each once.
pub(crate) struct Forwarder {
    /// UIDs of remote Events already seen (forwarded, or there at start).
    seen: BoundedSet<String>,
    /// Whether the initial list is done: Events from then on are new.
    live: bool,
}

impl Forwarder {
    pub(crate) fn new() -> Self {
        Self {
            seen: BoundedSet::new(SEEN_MAX),
            live: false,
        }
    }

    /// The home pod Event for one event of the watch, if there is one.
    pub(crate) fn on(
        &mut self,
        ev: watcher::Event<CoreEvent>,
        owners: &Owners,
    ) -> Option<PodEvent> {
        let e = match ev {
            watcher::Event::InitApply(e) => {
                // already there when skylet started: remember, do not replay
                if let Some(uid) = e.metadata.uid {
                    self.seen.insert(uid);
                }
                return None;
            }
            watcher::Event::InitDone => {
                self.live = true;
                return None;
            }
            watcher::Event::Apply(e) if self.live => e,
            _ => return None,
        };
        let uid = e.metadata.uid.clone()?;
        let obj = &e.involved_object;
        let origin = owners.get(
            obj.namespace.as_deref().unwrap_or(""),
            obj.name.as_deref().unwrap_or(""),
        )?;
        if !self.seen.insert(uid) {
            return None;
        }
        let type_ = if e.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        Some(PodEvent {
            pod: origin,
            type_,
            reason: e.reason.unwrap_or_else(|| "RemoteEvent".into()),
            note: format!("remote: {}", e.message.unwrap_or_default()),
            action: ACTION,
            reporter: REPORTER,
        })
    }
}

/// Forwards remote pod Events to `sink` until dropped.
pub(crate) async fn forward(remote: Client, sink: Sink, owners: Owners) {
    let wc = watcher::Config::default().fields("involvedObject.kind=Pod");
    let stream = watcher(Api::<CoreEvent>::all(remote), wc).default_backoff();
    futures::pin_mut!(stream);
    let mut forwarder = Forwarder::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                if let Some(event) = forwarder.on(ev, &owners) {
                    sink.event(event);
                }
            }
            Err(err) => tracing::debug!(error = %err, "remote event watch; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(uid: &str, pod: &str, type_: &str) -> CoreEvent {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "home-shop", "uid": uid},
            "involvedObject": {"kind": "Pod", "namespace": "home-shop", "name": pod},
            "type": type_, "reason": "BackOff", "message": "Back-off pulling image"
        }))
        .unwrap()
    }

    #[test]
    fn remote_events_of_own_pods_are_forwarded_once_and_old_ones_never() {
        let owners = Owners::default();
        owners.insert("home-shop", "web-1", PodRef::new("shop", "web-1", "u-1"));
        let mut f = Forwarder::new();
        assert_eq!(f.on(watcher::Event::Init, &owners), None);
        let old = event("e-0", "web-1", "Warning");
        assert_eq!(f.on(watcher::Event::InitApply(old.clone()), &owners), None);
        assert_eq!(f.on(watcher::Event::InitDone, &owners), None);
        assert_eq!(
            f.on(watcher::Event::Apply(old), &owners),
            None,
            "there before skylet started"
        );
        let new = event("e-1", "web-1", "Warning");
        let home = f.on(watcher::Event::Apply(new.clone()), &owners).unwrap();
        assert_eq!(
            home,
            PodEvent {
                pod: PodRef::new("shop", "web-1", "u-1"),
                type_: EventType::Warning,
                reason: "BackOff".into(),
                note: "remote: Back-off pulling image".into(),
                action: "Remote",
                reporter: "skylet-kube",
            }
        );
        assert_eq!(f.on(watcher::Event::Apply(new), &owners), None, "once");
        let other = event("e-2", "someone-else", "Normal");
        assert_eq!(f.on(watcher::Event::Apply(other), &owners), None);
        owners.remove("home-shop", "web-1");
        let late = event("e-3", "web-1", "Normal");
        assert_eq!(f.on(watcher::Event::Apply(late), &owners), None);
    }
}
