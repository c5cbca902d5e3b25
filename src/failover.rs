//! The fail-overs of a fleet, counted where they can be seen: a pod leaves
//! one backend (refused for lack of capacity, or evicted while its backend
//! was down) and a pod of the same controller starts on another.
//!
//! `skylet_failovers_total{from, to, reason}` counts such moves. Every
//! node's pod controller reports to one [`Ledger`] per process: a
//! departure is kept for [`Ledger::WINDOW`]; the first pod of the same
//! owner that starts on another backend within it is its replacement.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a pod left a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The backend refused it for lack of capacity.
    Capacity,
    /// It was evicted while its backend did not answer.
    Outage,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Outage => "outage",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    from: String,
    to: String,
    reason: &'static str,
}

#[derive(Debug)]
struct Departure {
    from: String,
    reason: Reason,
    at: Instant,
}

/// The departures waiting for their replacement, and the counter.
#[derive(Clone, Debug)]
pub struct Ledger {
    pending: Arc<Mutex<HashMap<String, VecDeque<Departure>>>>,
    moves: Family<Labels, Counter>,
}

impl Ledger {
    /// How long a departure waits for its replacement.
    pub const WINDOW: Duration = Duration::from_secs(600);

    /// A ledger whose counter is registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let moves = Family::<Labels, Counter>::default();
        registry.register(
            "failovers",
            "Pods that left a backend (capacity refusal, eviction in an outage) and were \
             replaced on another, by from, to and reason",
            moves.clone(),
        );
        Self {
            pending: Arc::default(),
            moves,
        }
    }

    /// The controller owning `pod`, by UID.
    fn owner(pod: &Pod) -> Option<String> {
        pod.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())
    }

    /// `pod` left backend `from` for `reason`; pods without a controller
    /// are never replaced, so they are not noted.
    pub fn departed(&self, pod: &Pod, from: &str, reason: Reason, at: Instant) {
        let Some(owner) = Self::owner(pod) else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, q| {
            q.retain(|d| at.saturating_duration_since(d.at) < Self::WINDOW);
            !q.is_empty()
        });
        pending.entry(owner).or_default().push_back(Departure {
            from: from.to_owned(),
            reason,
            at,
        });
    }

    /// `pod` started on backend `to`: if a pod of its owner left another
    /// backend within the window, that is a fail-over.
    pub fn arrived(&self, pod: &Pod, to: &str, at: Instant) {
        let Some(owner) = Self::owner(pod) else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(q) = pending.get_mut(&owner) else {
            return;
        };
        q.retain(|d| at.saturating_duration_since(d.at) < Self::WINDOW);
        if let Some(i) = q.iter().position(|d| d.from != to)
            && let Some(d) = q.remove(i)
        {
            let labels = Labels {
                from: d.from,
                to: to.to_owned(),
                reason: d.reason.as_str(),
            };
            self.moves.get_or_create(&labels).inc();
        }
        if q.is_empty() {
            pending.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use skylet_provider::testing::pod;

    use super::*;

    fn count(l: &Ledger, from: &str, to: &str, reason: &'static str) -> u64 {
        let labels = Labels {
            from: from.into(),
            to: to.into(),
            reason,
        };
        l.moves.get_or_create(&labels).get()
    }

    #[test]
    fn a_replacement_elsewhere_within_the_window_is_a_failover() {
        let l = Ledger::register(&mut Registry::default());
        let t0 = Instant::now();
        let old = pod("ns", "web-1").owned_by("ReplicaSet", "web").build();
        let new = pod("ns", "web-2").owned_by("ReplicaSet", "web").build();
        let bare = pod("ns", "bare").build();
        l.departed(&old, "aci", Reason::Capacity, t0);
        l.departed(&bare, "aci", Reason::Capacity, t0);
        l.arrived(&new, "aci", t0 + Duration::from_secs(1));
        assert_eq!(
            count(&l, "aci", "aci", "capacity"),
            0,
            "back on the same backend: no move"
        );
        l.arrived(&new, "ecs", t0 + Duration::from_secs(2));
        assert_eq!(count(&l, "aci", "ecs", "capacity"), 1);
        l.arrived(&new, "ecs", t0 + Duration::from_secs(3));
        assert_eq!(
            count(&l, "aci", "ecs", "capacity"),
            1,
            "one departure, one move"
        );
        l.departed(&old, "ecs", Reason::Outage, t0);
        l.arrived(&new, "aci", t0 + Ledger::WINDOW + Duration::from_secs(1));
        assert_eq!(
            count(&l, "ecs", "aci", "outage"),
            0,
            "too late to be its replacement"
        );
    }
}
