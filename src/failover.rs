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

#[derive(Debug)]
struct Arrival {
    to: String,
    at: Instant,
}

/// What an owner's pods did that is not matched yet.
#[derive(Debug, Default)]
struct Pending {
    departures: VecDeque<Departure>,
    arrivals: VecDeque<Arrival>,
}

impl Pending {
    /// Forgets what is too old to be matched at `now`.
    fn expire(&mut self, now: Instant) {
        self.departures
            .retain(|d| now.saturating_duration_since(d.at) < Ledger::WINDOW);
        self.arrivals
            .retain(|a| now.saturating_duration_since(a.at) < Ledger::ARRIVAL_WINDOW);
    }

    fn is_empty(&self) -> bool {
        self.departures.is_empty() && self.arrivals.is_empty()
    }
}

/// The departures waiting for their replacement (and the replacements
/// seen before their departure), and the counter.
#[derive(Clone, Debug)]
pub struct Ledger {
    pending: Arc<Mutex<Owners>>,
    moves: Family<Labels, Counter>,
}

#[derive(Debug)]
struct Owners {
    by_owner: HashMap<String, Pending>,
    /// When every owner's entries were last expired.
    expired_at: Instant,
}

impl Ledger {
    /// How long a departure waits for its replacement.
    pub const WINDOW: Duration = Duration::from_secs(600);

    /// How long a pod that started waits for a departure it replaces. Two
    /// nodes' controllers see the eviction and the replacement in either
    /// order, seconds apart; most starts replace nothing, so they are kept
    /// briefly.
    pub const ARRIVAL_WINDOW: Duration = Duration::from_secs(60);

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
            pending: Arc::new(Mutex::new(Owners {
                by_owner: HashMap::new(),
                expired_at: Instant::now(),
            })),
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

    /// The unmatched entries of `owner`, current at `at`; every owner's
    /// are expired at most once per [`Ledger::ARRIVAL_WINDOW`], so a burst
    /// of pods of many owners costs no scan each.
    fn entries(owners: &mut Owners, owner: String, at: Instant) -> &mut Pending {
        if at.saturating_duration_since(owners.expired_at) >= Self::ARRIVAL_WINDOW {
            owners.by_owner.retain(|_, p| {
                p.expire(at);
                !p.is_empty()
            });
            owners.expired_at = at;
        }
        let p = owners.by_owner.entry(owner).or_default();
        p.expire(at);
        p
    }

    fn count(&self, from: String, to: String, reason: Reason) {
        let labels = Labels {
            from,
            to,
            reason: reason.as_str(),
        };
        self.moves.get_or_create(&labels).inc();
    }

    /// `pod` left backend `from` for `reason`: a fail-over if a pod of its
    /// owner started on another backend shortly before, else kept for its
    /// replacement. Pods without a controller are never replaced, so they
    /// are not noted.
    pub fn departed(&self, pod: &Pod, from: &str, reason: Reason, at: Instant) {
        let Some(owner) = Self::owner(pod) else {
            return;
        };
        let mut owners = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let p = Self::entries(&mut owners, owner, at);
        if let Some(i) = p.arrivals.iter().position(|a| a.to != from)
            && let Some(a) = p.arrivals.remove(i)
        {
            self.count(from.to_owned(), a.to, reason);
        } else {
            p.departures.push_back(Departure {
                from: from.to_owned(),
                reason,
                at,
            });
        }
    }

    /// `pod` started on backend `to` (to be called once per pod): a
    /// fail-over if a pod of its owner left another backend within the
    /// window, else kept briefly in case that departure is seen next.
    pub fn arrived(&self, pod: &Pod, to: &str, at: Instant) {
        let Some(owner) = Self::owner(pod) else {
            return;
        };
        let mut owners = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let p = Self::entries(&mut owners, owner, at);
        if let Some(i) = p.departures.iter().position(|d| d.from != to)
            && let Some(d) = p.departures.remove(i)
        {
            self.count(d.from, to.to_owned(), d.reason);
        } else {
            p.arrivals.push_back(Arrival {
                to: to.to_owned(),
                at,
            });
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
        let web = |name: &str| pod("ns", name).owned_by("ReplicaSet", "web").build();
        l.departed(&web("web-1"), "aci", Reason::Capacity, t0);
        l.departed(&pod("ns", "bare").build(), "aci", Reason::Capacity, t0);
        l.arrived(&web("web-2"), "aci", t0 + Duration::from_secs(1));
        assert_eq!(
            count(&l, "aci", "aci", "capacity"),
            0,
            "back on the same backend: no move"
        );
        l.arrived(&web("web-3"), "ecs", t0 + Duration::from_secs(2));
        assert_eq!(count(&l, "aci", "ecs", "capacity"), 1);
        l.arrived(&web("web-4"), "ecs", t0 + Duration::from_secs(3));
        assert_eq!(
            count(&l, "aci", "ecs", "capacity"),
            1,
            "one departure, one move"
        );
        l.departed(&web("web-5"), "ecs", Reason::Outage, t0 + Ledger::WINDOW);
        l.arrived(
            &web("web-6"),
            "aci",
            t0 + Ledger::WINDOW * 2 + Duration::from_secs(1),
        );
        assert_eq!(
            count(&l, "ecs", "aci", "outage"),
            0,
            "too late to be its replacement"
        );
    }

    #[test]
    fn a_replacement_seen_before_its_departure_is_a_failover() {
        let l = Ledger::register(&mut Registry::default());
        let t0 = Instant::now();
        let web = |name: &str| pod("ns", name).owned_by("ReplicaSet", "web").build();
        // the eviction's replacement started on b before a's controller
        // saw the eviction
        l.arrived(&web("new-1"), "b", t0);
        l.arrived(&web("new-2"), "b", t0 + Duration::from_secs(1));
        l.departed(
            &web("old-1"),
            "a",
            Reason::Outage,
            t0 + Duration::from_secs(2),
        );
        l.departed(
            &web("old-2"),
            "a",
            Reason::Outage,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(
            count(&l, "a", "b", "outage"),
            2,
            "two moves, in either order"
        );
        l.arrived(&web("new-3"), "b", t0 + Duration::from_secs(4));
        l.departed(
            &web("old-3"),
            "a",
            Reason::Outage,
            t0 + Duration::from_secs(4) + Ledger::ARRIVAL_WINDOW,
        );
        assert_eq!(
            count(&l, "a", "b", "outage"),
            2,
            "a start long before is not a replacement"
        );
    }
}
