//! Remote pod Events -> home pod Events.
//!
//! One watch on the remote cluster's Events about Pods; an Event whose pod
//! is one of this node's remote pods is recorded on the home pod, once (by
//! the remote Event's UID), with the remote cluster named in the note. Events
//! that existed before skylet started are not replayed.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use skylet_provider::PodRef;

/// Remote pods of this node by (namespace, name), filled by the pod watch.
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

/// Forwards remote pod Events to the home cluster until aborted.
pub(crate) async fn forward(home: Client, remote: Client, node: String, owners: Owners) {
    let recorder = Recorder::new(
        home,
        Reporter {
            controller: "skylet-kube".into(),
            instance: Some(node),
        },
    );
    let wc = watcher::Config::default().fields("involvedObject.kind=Pod");
    let stream = watcher(Api::<CoreEvent>::all(remote), wc).default_backoff();
    futures::pin_mut!(stream);
    let mut seen: HashSet<String> = HashSet::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let mut live = false;
    while let Some(ev) = stream.next().await {
        let e = match ev {
            Ok(watcher::Event::InitApply(e)) => {
                // already there when skylet started: remember, do not replay
                if let Some(uid) = e.metadata.uid {
                    seen.insert(uid.clone());
                    order.push_back(uid);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                live = true;
                continue;
            }
            Ok(watcher::Event::Apply(e)) if live => e,
            Ok(_) => continue,
            Err(err) => {
                tracing::debug!(error = %err, "remote event watch; retrying");
                continue;
            }
        };
        let Some(uid) = e.metadata.uid.clone() else {
            continue;
        };
        let obj = &e.involved_object;
        let Some(origin) = owners.get(
            obj.namespace.as_deref().unwrap_or(""),
            obj.name.as_deref().unwrap_or(""),
        ) else {
            continue;
        };
        if !seen.insert(uid.clone()) {
            continue;
        }
        order.push_back(uid);
        while order.len() > SEEN_MAX {
            if let Some(old) = order.pop_front() {
                seen.remove(&old);
            }
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(origin.namespace.clone()),
            name: Some(origin.name.clone()),
            uid: Some(origin.uid.clone()),
            ..Default::default()
        };
        let reason = e.reason.clone().unwrap_or_else(|| "RemoteEvent".into());
        let note = format!("remote: {}", e.message.clone().unwrap_or_default());
        let type_ = if e.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let event = Event {
            type_,
            reason,
            note: Some(note),
            action: "Remote".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %err, pod = %origin, "cannot record a remote event at home");
        }
    }
}
