//! skylet's view of what the backend holds: the last status of every pod, fed
//! by sweeps (`Provider::list_pods`) and pushes (`Provider::status_updates`).
//!
//! Reconciles read it instead of asking the backend, so a pod costs no
//! backend call per status check: one list per sweep serves them all.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use k8s_openapi::api::core::v1::PodStatus;
use skylet_provider::{BackendPod, PodRef};

#[derive(Debug, Clone)]
struct Entry {
    pod: PodRef,
    status: PodStatus,
    seen: Instant,
}

/// The backend's pods by UID.
#[derive(Debug, Default)]
pub struct BackendView {
    pods: Mutex<HashMap<String, Entry>>,
}

impl BackendView {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last status the backend reported for `uid`.
    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.lock().get(uid).map(|e| e.status.clone())
    }

    /// Whether the backend holds `uid`.
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Records a reported status; returns whether it differs from the last one.
    pub fn upsert(&self, bp: BackendPod) -> bool {
        let mut pods = self.lock();
        let changed = pods.get(&bp.pod.uid).is_none_or(|e| e.status != bp.status);
        pods.insert(
            bp.pod.uid.clone(),
            Entry {
                pod: bp.pod,
                status: bp.status,
                seen: Instant::now(),
            },
        );
        changed
    }

    /// Forgets `uid`; returns whether it was known.
    pub fn remove(&self, uid: &str) -> bool {
        self.lock().remove(uid).is_some()
    }

    /// Applies a full listing taken at `started`: records every pod, and
    /// forgets pods last seen before `started` that the listing lacks (pods
    /// pushed or created while the list ran are kept). Returns the pods whose
    /// status changed or that disappeared.
    pub fn apply_listing(&self, listing: Vec<BackendPod>, started: Instant) -> Vec<PodRef> {
        let mut pods = self.lock();
        let mut changed = Vec::new();
        let mut listed = std::collections::HashSet::with_capacity(listing.len());
        for bp in listing {
            listed.insert(bp.pod.uid.clone());
            if pods.get(&bp.pod.uid).is_none_or(|e| e.status != bp.status) {
                changed.push(bp.pod.clone());
            }
            pods.insert(
                bp.pod.uid.clone(),
                Entry {
                    pod: bp.pod,
                    status: bp.status,
                    seen: Instant::now(),
                },
            );
        }
        pods.retain(|uid, e| {
            let keep = listed.contains(uid) || e.seen >= started;
            if !keep {
                changed.push(e.pod.clone());
            }
            keep
        });
        changed
    }

    /// Every pod the backend holds.
    pub fn pods(&self) -> Vec<PodRef> {
        self.lock().values().map(|e| e.pod.clone()).collect()
    }

    /// Number of pods held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the backend holds no pod.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(uid: &str, phase: &str) -> BackendPod {
        BackendPod {
            pod: PodRef::new("ns", uid, uid),
            status: PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn listing_reports_changes_and_removals_but_keeps_newer_pushes() {
        let view = BackendView::default();
        view.upsert(bp("a", "Running"));
        view.upsert(bp("b", "Running"));
        let started = Instant::now();
        // "c" is pushed while the list call is in flight; the listing lacks it
        view.upsert(bp("c", "Pending"));
        let changed = view.apply_listing(vec![bp("a", "Running"), bp("d", "Running")], started);
        let mut names: Vec<_> = changed.into_iter().map(|p| p.uid).collect();
        names.sort();
        assert_eq!(names, ["b", "d"], "b disappeared, d appeared, a unchanged");
        assert!(
            view.contains("c"),
            "a pod pushed during the listing is kept"
        );
        assert!(!view.contains("b"));
        assert_eq!(view.len(), 3);
    }

    #[test]
    fn upsert_says_whether_anything_changed() {
        let view = BackendView::default();
        assert!(view.upsert(bp("a", "Pending")));
        assert!(!view.upsert(bp("a", "Pending")));
        assert!(view.upsert(bp("a", "Running")));
    }
}
