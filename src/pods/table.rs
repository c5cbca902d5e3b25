//! [`PodTable`]: everything skylet knows of a pod that is neither in
//! Kubernetes nor only in the backend, in one map behind one lock.
//!
//! Per pod UID: what the backend last reported (fed by sweeps and pushes,
//! so a pod costs no backend call per status check: one list per sweep
//! serves them all; kept as JSON, [`Held`]), and skylet's own bookkeeping
//! between reconciles (when
//! it asked the backend to create or stop the pod, consecutive failures,
//! when its token is due). Beside the map, the UIDs of pods whose object
//! skylet removed, so that a stale copy from the watch is not removed twice.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodStatus;
use skylet_provider::{BackendPod, BoundedSet, PodRef};

use super::changes::Applied;

/// How many removed pods are remembered.
const REMOVED_MAX: usize = 4096;

/// What the backend last reported of a pod.
///
/// The status is kept as compressed JSON, and compared as such: a
/// k8s-openapi `PodStatus` of a running pod of one container takes about
/// 1.3 KB in memory (every optional field has its room), its JSON about
/// half, the compressed JSON about 150 bytes, and the table holds one per
/// pod the backend holds. It is decoded again only when a reconcile writes
/// it.
#[derive(Clone, Debug)]
struct Held {
    status: Box<[u8]>,
    /// When it was reported.
    seen: Instant,
}

impl Held {
    fn new(status: &PodStatus, seen: Instant) -> Self {
        Self {
            status: encode(status),
            seen,
        }
    }
}

/// `status` as [`packed`](super::packed) JSON (a fifth of its size;
/// equal statuses give equal bytes). Serializing a k8s-openapi struct does
/// not fail (its maps have string keys) and neither does compressing in
/// memory; if either did, the empty bytes decode to no status and the next
/// report replaces it.
fn encode(status: &PodStatus) -> Box<[u8]> {
    super::packed::to_packed(status).unwrap_or_default()
}

/// A listing of the backend read a page at a time: when it started, and
/// the pods its pages held so far.
#[derive(Debug)]
pub(crate) struct Listing {
    started: Instant,
    listed: HashSet<String>,
}

impl Listing {
    /// A listing whose first page is asked for now.
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            listed: HashSet::new(),
        }
    }

    /// How many pods its pages held.
    pub(crate) fn len(&self) -> usize {
        self.listed.len()
    }
}

/// One pod's row.
#[derive(Clone, Debug)]
struct Row {
    pod: PodRef,
    held: Option<Held>,
    local: Local,
}

/// skylet's bookkeeping of a pod between reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Local {
    /// When skylet last asked the backend to create it.
    pub(crate) created: Option<Instant>,
    /// When skylet asked the backend to stop it.
    pub(crate) delete_requested: Option<Instant>,
    /// When skylet asked the backend to stop it at once.
    pub(crate) kill_requested: Option<Instant>,
    /// A `FencingUnconfirmed` Event was recorded: the backend did not
    /// answer a stop.
    pub(crate) fencing_unconfirmed: bool,
    /// Its departure (for the fail-over count) was noted.
    pub(crate) departed: bool,
    /// Its start (for the fail-over count) was noted.
    pub(crate) arrived: bool,
    /// Consecutive failed reconciles, for backoff.
    pub(crate) failures: u32,
    /// When its service-account token must be refreshed.
    pub(crate) refresh_at: Option<Timestamp>,
    /// What the backend runs of the spec's changeable parts, and what it
    /// refused ([`super::changes`]).
    pub(crate) applied: Option<Arc<Applied>>,
    /// The backend holds it and skylet has read what it needs of the whole
    /// pod: the store may keep the slim record (`record.rs`).
    pub(crate) settled: bool,
}

impl Row {
    /// A row of `pod` with nothing in it yet; boxed, so that the map's
    /// spare room (a third of it after it grows) costs a pointer per slot.
    fn new(pod: &PodRef) -> Box<Self> {
        Box::new(Self {
            pod: pod.clone(),
            held: None,
            local: Local::default(),
        })
    }

    fn is_empty(&self) -> bool {
        self.held.is_none() && self.local == Local::default()
    }
}

#[derive(Debug)]
struct Inner {
    rows: HashMap<String, Box<Row>>,
    removed: BoundedSet<String>,
    /// How many rows the backend holds.
    held: usize,
}

/// The table. Every method takes the lock once and never across an await.
#[derive(Debug)]
pub(crate) struct PodTable {
    inner: Mutex<Inner>,
}

impl Default for PodTable {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                rows: HashMap::new(),
                removed: BoundedSet::new(REMOVED_MAX),
                held: 0,
            }),
        }
    }
}

impl PodTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // a panic while holding the lock would be a bug here; every method
        // leaves the map consistent, so keep going
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // --- what the backend holds ------------------------------------------

    /// The last status the backend reported for `uid`.
    pub(crate) fn backend_status(&self, uid: &str) -> Option<PodStatus> {
        self.lock()
            .rows
            .get(uid)
            .and_then(|r| r.held.as_ref())
            .map(|h| super::packed::from_packed(&h.status).unwrap_or_default())
    }

    /// Whether the store may keep only the slim record of `uid`.
    pub(crate) fn settled(&self, uid: &str) -> bool {
        self.lock().rows.get(uid).is_some_and(|r| r.local.settled)
    }

    /// Whether the backend holds `uid`.
    pub(crate) fn in_backend(&self, uid: &str) -> bool {
        self.lock().rows.get(uid).is_some_and(|r| r.held.is_some())
    }

    /// Records a reported status; returns whether it differs from the last
    /// one (or the pod is new to the backend).
    pub(crate) fn report(&self, bp: BackendPod) -> bool {
        // encoded before the lock is taken
        let held = Held::new(&bp.status, Instant::now());
        let mut inner = self.lock();
        let row = inner
            .rows
            .entry(bp.pod.uid.clone())
            .or_insert_with(|| Row::new(&bp.pod));
        let changed = row.held.as_ref().is_none_or(|h| h.status != held.status);
        let new = row.held.is_none();
        row.held = Some(held);
        inner.held += usize::from(new);
        changed
    }

    /// The backend no longer holds `uid`; returns whether it did.
    pub(crate) fn report_gone(&self, uid: &str) -> bool {
        let mut inner = self.lock();
        let Some(row) = inner.rows.get_mut(uid) else {
            return false;
        };
        let was = row.held.take().is_some();
        if row.is_empty() {
            inner.rows.remove(uid);
        }
        inner.held -= usize::from(was);
        was
    }

    /// Applies a full listing taken at `started` in one page
    /// ([`PodTable::apply_page`], [`PodTable::end_listing`]).
    #[cfg(test)]
    pub(crate) fn apply_listing(&self, listing: Vec<BackendPod>, started: Instant) -> Vec<PodRef> {
        let mut pages = Listing::new(started);
        let mut changed = self.apply_page(&mut pages, listing);
        changed.extend(self.end_listing(pages));
        changed
    }

    /// Records one page of a listing: every pod of it. Returns the pods
    /// whose status changed or that are new to the backend.
    pub(crate) fn apply_page(&self, listing: &mut Listing, page: Vec<BackendPod>) -> Vec<PodRef> {
        // encoded before the lock is taken (each status freed as it goes)
        let now = Instant::now();
        let page: Vec<(PodRef, Held)> = page
            .into_iter()
            .map(|bp| {
                let held = Held::new(&bp.status, now);
                (bp.pod, held)
            })
            .collect();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut changed = Vec::new();
        for (pod, held) in page {
            listing.listed.insert(pod.uid.clone());
            let row = inner
                .rows
                .entry(pod.uid.clone())
                .or_insert_with(|| Row::new(&pod));
            if row.held.as_ref().is_none_or(|h| h.status != held.status) {
                changed.push(pod);
            }
            inner.held += usize::from(row.held.is_none());
            row.held = Some(held);
        }
        changed
    }

    /// Ends a listing whose every page was recorded: forgets the pods last
    /// seen before it started that none of its pages held (pods pushed or
    /// created while it ran are kept). Returns those pods.
    pub(crate) fn end_listing(&self, listing: Listing) -> Vec<PodRef> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut gone = Vec::new();
        let held = &mut inner.held;
        inner.rows.retain(|uid, row| {
            if let Some(h) = &row.held
                && !listing.listed.contains(uid)
                && h.seen < listing.started
            {
                gone.push(row.pod.clone());
                row.held = None;
                *held -= 1;
            }
            !row.is_empty()
        });
        gone
    }

    /// Every pod the backend holds.
    pub(crate) fn backend_pods(&self) -> Vec<PodRef> {
        self.lock()
            .rows
            .values()
            .filter(|r| r.held.is_some())
            .map(|r| r.pod.clone())
            .collect()
    }

    /// How many pods the backend holds.
    pub(crate) fn backend_len(&self) -> usize {
        self.lock()
            .rows
            .values()
            .filter(|r| r.held.is_some())
            .count()
    }

    // --- skylet's own bookkeeping ----------------------------------------

    /// skylet's bookkeeping of `pod` (defaults when it has none).
    pub(crate) fn local(&self, uid: &str) -> Local {
        self.lock()
            .rows
            .get(uid)
            .map(|r| r.local.clone())
            .unwrap_or_default()
    }

    /// Changes the bookkeeping of `pod`; returns what `f` returns.
    pub(crate) fn update<T>(&self, pod: &PodRef, f: impl FnOnce(&mut Local) -> T) -> T {
        let mut inner = self.lock();
        let row = inner
            .rows
            .entry(pod.uid.clone())
            .or_insert_with(|| Row::new(pod));
        let out = f(&mut row.local);
        if row.is_empty() {
            inner.rows.remove(&pod.uid);
        }
        out
    }

    /// Counts a failed reconcile; returns the failures in a row.
    pub(crate) fn failed(&self, pod: &PodRef) -> u32 {
        self.update(pod, |l| {
            l.failures = l.failures.saturating_add(1);
            l.failures
        })
    }

    /// skylet removed the pod's object: forget its bookkeeping and remember
    /// that it is removed.
    pub(crate) fn removed(&self, uid: &str) {
        let mut inner = self.lock();
        if let Some(row) = inner.rows.get_mut(uid) {
            row.local = Local::default();
            if row.is_empty() {
                inner.rows.remove(uid);
            }
        }
        inner.removed.insert(uid.to_owned());
    }

    /// Whether skylet removed the pod's object.
    pub(crate) fn is_removed(&self, uid: &str) -> bool {
        self.lock().removed.contains(uid)
    }

    /// Forgets everything of `uid` but its removal.
    pub(crate) fn forget(&self, uid: &str) {
        let mut inner = self.lock();
        if let Some(row) = inner.rows.remove(uid) {
            inner.held -= usize::from(row.held.is_some());
        }
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
        let t = PodTable::default();
        t.report(bp("a", "Running"));
        t.report(bp("b", "Running"));
        let started = Instant::now();
        // "c" is pushed while the list call is in flight; the listing lacks it
        t.report(bp("c", "Pending"));
        let changed = t.apply_listing(vec![bp("a", "Running"), bp("d", "Running")], started);
        let mut names: Vec<_> = changed.into_iter().map(|p| p.uid).collect();
        names.sort();
        assert_eq!(names, ["b", "d"], "b disappeared, d appeared, a unchanged");
        assert!(t.in_backend("c"), "a pod pushed during the listing is kept");
        assert!(!t.in_backend("b"));
        assert_eq!(t.backend_len(), 3);
    }

    #[test]
    fn a_listing_in_pages_takes_pods_for_gone_only_at_its_end() {
        let t = PodTable::default();
        t.report(bp("a", "Running"));
        t.report(bp("b", "Running"));
        t.report(bp("z", "Running"));
        let mut listing = Listing::new(Instant::now());
        let changed = t.apply_page(&mut listing, vec![bp("a", "Running"), bp("c", "Pending")]);
        assert_eq!(changed, [PodRef::new("ns", "c", "c")], "c is new");
        assert!(t.in_backend("b"), "b may be on a later page");
        let changed = t.apply_page(&mut listing, vec![bp("b", "Succeeded")]);
        assert_eq!(changed, [PodRef::new("ns", "b", "b")], "b ended");
        assert_eq!(listing.len(), 3);
        let gone = t.end_listing(listing);
        assert_eq!(gone, [PodRef::new("ns", "z", "z")], "no page held z");
        assert!(!t.in_backend("z"));
        assert_eq!(t.backend_len(), 3);
    }

    #[test]
    fn report_says_whether_anything_changed() {
        let t = PodTable::default();
        assert!(t.report(bp("a", "Pending")));
        assert!(!t.report(bp("a", "Pending")));
        assert!(t.report(bp("a", "Running")));
        assert!(t.report_gone("a"));
        assert!(!t.report_gone("a"));
    }

    #[test]
    fn a_reported_status_comes_back_as_reported() {
        let status: PodStatus = serde_json::from_value(serde_json::json!({
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.7",
            "podIPs": [{"ip": "10.1.0.7"}], "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:01Z"}],
            "containerStatuses": [{"name": "app", "image": "busybox", "imageID": "",
                "ready": true, "restartCount": 2, "started": true,
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
                "resources": {"limits": {"cpu": "250m"}}}]
        }))
        .expect("a valid status");
        let t = PodTable::default();
        let mut reported = bp("a", "Running");
        reported.status = status.clone();
        assert!(t.report(reported.clone()));
        assert_eq!(t.backend_status("a"), Some(status));
        assert!(!t.report(reported), "the same status again is no change");
        assert_eq!(t.backend_status("b"), None);
    }

    #[test]
    fn bookkeeping_outlives_a_listing_and_rows_go_when_empty() {
        let t = PodTable::default();
        let p = PodRef::new("ns", "p", "p");
        t.update(&p, |l| l.created = Some(Instant::now()));
        t.report(bp("p", "Running"));
        // the backend lost the pod: its status goes, skylet's note stays
        t.apply_listing(Vec::new(), Instant::now());
        assert!(!t.in_backend("p"));
        assert!(t.local("p").created.is_some());
        assert_eq!(t.failed(&p), 1);
        assert_eq!(t.failed(&p), 2);
        t.removed("p");
        assert_eq!(t.local("p"), Local::default());
        assert!(t.is_removed("p"));
        assert!(t.lock().rows.is_empty(), "no row is kept for nothing");
    }
}
