//! The work queue of the pod controller: which pods to reconcile, in what
//! order, and how many at once.
//!
//! Its shape is client-go's workqueue: a pod is queued once however often it
//! changes (a key, not an event); a pod never has two reconciles at once (a
//! change while it runs queues it again once it ends); a reconcile may ask to
//! run again later (a timer per pod, replaced by any sooner change). Pods
//! wait in two first-come-first-served [lanes](Lane), each with its own
//! limit of reconciles at once: those that may call the backend (create,
//! stop) and those that only write a status the backend reported, so that
//! a slow cloud create never holds up the status of a running pod.
//!
//! Written here rather than taken from kube-runtime's `Controller`, which
//! skylet used until session 6: the `Controller` starts a task per queued
//! reconcile and keeps each in a hash map that it scans whole on every
//! wake-up, with about 900 bytes of state inline per entry. When 10,000 pods
//! were deleted at once that map held 15 MB and its scans took 60% of
//! skylet's CPU (BENCHMARKS.md); its own concurrency limit starts the
//! reconciles beyond the limit in no order (p99 24.5 s at 10,000 pods). No
//! maintained crate offers a keyed, deduplicating FIFO with delayed adds and
//! per-lane limits; this one holds a waiting pod as two shared strings in a
//! queue and a set, and starts a task only for a reconcile that runs.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio_util::time::{DelayQueue, delay_queue};

/// Which lane a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// It may call the backend.
    Backend,
    /// It only writes a status the backend reported.
    Status,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::Backend => 0,
            Lane::Status => 1,
        }
    }
}

/// What a reconcile asks for next. kube-runtime's `controller::Action` in
/// shape, whose delay cannot be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `delay`, unless a change comes sooner.
    pub(crate) const fn requeue(delay: Duration) -> Self {
        Self {
            requeue_after: Some(delay),
        }
    }

    /// Reconcile again only when something changes.
    pub(crate) const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// When to reconcile again if nothing changes.
    #[cfg(test)]
    pub(crate) const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
}

impl Key {
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a pod in the store.
    pub(crate) fn of(pod: &super::PodRecord) -> Self {
        let m = kube::Resource::meta(pod);
        Self::new(
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
        )
    }

    /// Where the store keeps the pod.
    pub(crate) fn object_ref(&self) -> kube::runtime::reflector::ObjectRef<super::PodRecord> {
        kube::runtime::reflector::ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// The queue's bookkeeping. Not thread-safe by design: one task (the
/// controller's loop) owns it.
pub(crate) struct WorkQueue {
    /// Pods waiting, per lane, oldest first.
    waiting: [VecDeque<Key>; 2],
    /// The pods in `waiting`.
    queued: HashSet<Key>,
    /// Pods whose reconcile runs, and in which lane.
    running: HashMap<Key, Lane>,
    /// Running pods that changed meanwhile: queued again when they end.
    dirty: HashSet<Key>,
    /// Reconciles running per lane.
    busy: [usize; 2],
    /// The most per lane at once; 0 = no limit.
    limits: [usize; 2],
    /// Reconciles asked for later, one per pod at most.
    timers: DelayQueue<Key>,
    timer_of: HashMap<Key, delay_queue::Key>,
}

impl WorkQueue {
    /// A queue running at most `backend` and `status` reconciles at once
    /// in each lane (0: no limit).
    pub(crate) fn new(backend: u16, status: u16) -> Self {
        Self {
            waiting: [VecDeque::new(), VecDeque::new()],
            queued: HashSet::new(),
            running: HashMap::new(),
            dirty: HashSet::new(),
            busy: [0, 0],
            limits: [usize::from(backend), usize::from(status)],
            timers: DelayQueue::new(),
            timer_of: HashMap::new(),
        }
    }

    /// Queues `key` now, in `lane` unless it waits already. A timer of the
    /// pod is dropped: the reconcile that runs now asks for its own.
    pub(crate) fn add(&mut self, key: Key, lane: impl FnOnce(&Key) -> Lane) {
        if let Some(t) = self.timer_of.remove(&key) {
            self.timers.remove(&t);
        }
        if self.running.contains_key(&key) {
            self.dirty.insert(key);
        } else if !self.queued.contains(&key) {
            self.waiting[lane(&key).index()].push_back(key.clone());
            self.queued.insert(key);
        }
    }

    /// The next pod to reconcile in `lane`, if the lane has room: taken as
    /// running until [`WorkQueue::done`].
    pub(crate) fn next(&mut self, lane: Lane) -> Option<Key> {
        let i = lane.index();
        if self.limits[i] != 0 && self.busy[i] >= self.limits[i] {
            return None;
        }
        let key = self.waiting[i].pop_front()?;
        self.queued.remove(&key);
        self.busy[i] += 1;
        self.running.insert(key.clone(), lane);
        Some(key)
    }

    /// `key`'s reconcile ended asking for `action`: queued again now if it
    /// changed while it ran, else at the time asked for, if any.
    pub(crate) fn done(&mut self, key: Key, action: Action, lane: impl FnOnce(&Key) -> Lane) {
        if let Some(l) = self.running.remove(&key) {
            self.busy[l.index()] -= 1;
        }
        if self.dirty.remove(&key) {
            self.add(key, lane);
        } else if let Some(delay) = action.requeue_after {
            self.later(key, delay);
        }
    }

    /// Queues `key` after `delay`, unless it is queued sooner.
    fn later(&mut self, key: Key, delay: Duration) {
        match self.timer_of.get(&key) {
            Some(t) if self.timers.deadline(t) <= tokio::time::Instant::now() + delay => {}
            Some(t) => self.timers.reset(t, delay),
            None => {
                let t = self.timers.insert(key.clone(), delay);
                self.timer_of.insert(key, t);
            }
        }
    }

    /// Waits for the next timer to fire and returns its pod (pending while
    /// there is none).
    pub(crate) async fn expired(&mut self) -> Key {
        loop {
            if self.timers.is_empty() {
                std::future::pending::<()>().await;
            }
            if let Some(e) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)).await {
                let key = e.into_inner();
                self.timer_of.remove(&key);
                return key;
            }
        }
    }

    /// Pods waiting or running.
    pub(crate) fn depth(&self) -> usize {
        self.queued.len() + self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Key {
        Key::new("ns", name)
    }

    #[test]
    fn pods_run_in_the_order_they_came_and_once_however_often_they_change() {
        let mut q = WorkQueue::new(0, 0);
        for name in ["a", "b", "a", "c", "b"] {
            q.add(k(name), |_| Lane::Backend);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.next(Lane::Backend)).collect();
        assert_eq!(order, [k("a"), k("b"), k("c")]);
        assert_eq!(q.depth(), 3, "all three run");
    }

    #[test]
    fn a_pod_changed_while_it_runs_runs_again_after_not_beside() {
        let mut q = WorkQueue::new(0, 0);
        q.add(k("a"), |_| Lane::Backend);
        let a = q.next(Lane::Backend).unwrap();
        q.add(k("a"), |_| Lane::Backend);
        assert_eq!(q.next(Lane::Backend), None, "not twice at once");
        q.done(a, Action::await_change(), |_| Lane::Status);
        assert_eq!(
            q.next(Lane::Status),
            Some(k("a")),
            "queued again, in the lane it needs now"
        );
    }

    #[test]
    fn a_full_lane_does_not_hold_up_the_other() {
        let mut q = WorkQueue::new(1, 1);
        q.add(k("create-1"), |_| Lane::Backend);
        q.add(k("create-2"), |_| Lane::Backend);
        q.add(k("status"), |_| Lane::Status);
        let first = q.next(Lane::Backend).unwrap();
        assert_eq!(q.next(Lane::Backend), None, "the backend lane is full");
        assert_eq!(
            q.next(Lane::Status),
            Some(k("status")),
            "the status lane is not"
        );
        q.done(first, Action::await_change(), |_| Lane::Backend);
        assert_eq!(q.next(Lane::Backend), Some(k("create-2")));
        assert_eq!(q.depth(), 2, "two run, none waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_fires_after_its_delay_and_a_change_replaces_it() {
        let mut q = WorkQueue::new(0, 0);
        q.add(k("a"), |_| Lane::Status);
        let a = q.next(Lane::Status).unwrap();
        q.done(a, Action::requeue(Duration::from_secs(30)), |_| {
            Lane::Status
        });
        assert_eq!(q.depth(), 0, "nothing waits before the timer");
        let fired = tokio::time::timeout(Duration::from_secs(31), q.expired()).await;
        assert_eq!(fired.ok(), Some(k("a")), "the requeue fires");

        q.add(k("b"), |_| Lane::Status);
        let b = q.next(Lane::Status).unwrap();
        q.done(b, Action::requeue(Duration::from_secs(30)), |_| {
            Lane::Status
        });
        q.add(k("b"), |_| Lane::Status);
        assert_eq!(q.next(Lane::Status), Some(k("b")), "a change runs it now");
        let none = tokio::time::timeout(Duration::from_secs(60), q.expired()).await;
        assert!(none.is_err(), "and its timer is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sooner_of_two_requeues_wins() {
        let mut q = WorkQueue::new(0, 0);
        q.later(k("a"), Duration::from_secs(300));
        q.later(k("a"), Duration::from_secs(5));
        q.later(k("a"), Duration::from_secs(100));
        let start = tokio::time::Instant::now();
        assert_eq!(q.expired().await, k("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        let again = tokio::time::timeout(Duration::from_secs(400), q.expired()).await;
        assert!(again.is_err(), "one timer per pod");
    }
}
