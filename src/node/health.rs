//! What the node says about its backend, decided by two small state
//! machines, both pure and tested without a cluster:
//!
//! - [`Health`]: Ready or not, with hysteresis: a backend is down after
//!   `unhealthy_after` failed pings in a row and up again after
//!   `healthy_after` answers in a row, so one lost ping does not make the
//!   node NotReady (and its pods evictable) and a flapping backend does not
//!   cause an eviction storm.
//! - [`Cooldown`]: the `skylet.io/capacity-exhausted:NoSchedule` taint. A
//!   backend that refuses a pod for lack of capacity gets it for a cooldown
//!   that starts at `min` and doubles with every episode that follows soon
//!   after the last, up to `max`; it is lifted early when the backend holds
//!   fewer pods than when it refused (capacity freed).

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// The taint of a backend that refused a pod for lack of capacity.
pub const CAPACITY_TAINT: &str = "skylet.io/capacity-exhausted";

/// A change of the backend's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The backend stopped answering.
    Down,
    /// It answers again.
    Up,
}

/// The backend's health, from its pings.
#[derive(Clone, Debug)]
pub(crate) struct Health {
    unhealthy_after: u32,
    healthy_after: u32,
    up: bool,
    /// Consecutive pings that disagree with `up`.
    streak: u32,
    /// The last failure, for the condition's message.
    last_error: Option<String>,
}

impl Health {
    /// A backend taken as healthy until it fails `unhealthy_after` pings in
    /// a row.
    pub(crate) fn new(unhealthy_after: u32, healthy_after: u32) -> Self {
        Self {
            unhealthy_after: unhealthy_after.max(1),
            healthy_after: healthy_after.max(1),
            up: true,
            streak: 0,
            last_error: None,
        }
    }

    /// Whether the backend counts as up.
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// The last ping error.
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records a ping; returns the change it made, if any.
    pub(crate) fn observe(&mut self, ping: Result<(), String>) -> Option<Change> {
        let ok = ping.is_ok();
        if let Err(e) = ping {
            self.last_error = Some(e);
        }
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up {
            self.unhealthy_after
        } else {
            self.healthy_after
        };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Change::Up } else { Change::Down })
    }

    /// Marks the backend down at once (skylet is stopping).
    pub(crate) fn stopped(&mut self, why: &str) {
        self.up = false;
        self.streak = 0;
        self.last_error = Some(why.to_owned());
    }
}

#[derive(Clone, Copy, Debug)]
struct Episode {
    until: Instant,
    length: Duration,
    /// Pods the backend held when it refused.
    held: usize,
}

/// The capacity-exhausted cooldown of one backend. Shared by the pod
/// controller (which reports refusals) and the node (which shows the taint).
#[derive(Debug)]
pub struct Cooldown {
    min: Duration,
    max: Duration,
    state: Mutex<(Option<Episode>, Option<Episode>)>,
}

impl Cooldown {
    /// A cooldown of `min` doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            state: Mutex::new((None, None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Option<Episode>, Option<Episode>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend refused a pod for lack of capacity while holding `held`
    /// pods. Returns how long the taint stays.
    pub fn refused(&self, now: Instant, held: usize) -> Duration {
        let mut st = self.lock();
        let (current, last) = &mut *st;
        if let Some(c) = current.as_mut()
            && now < c.until
        {
            c.held = c.held.min(held);
            return c.until - now;
        }
        // an episode soon after the last one (within its own length) is
        // the same shortage again: wait twice as long
        let ended = current.take().or(*last);
        let length = match ended {
            Some(e) if now.saturating_duration_since(e.until) <= e.length => {
                (e.length * 2).min(self.max)
            }
            _ => self.min,
        };
        *current = Some(Episode {
            until: now + length,
            length,
            held,
        });
        length
    }

    /// Whether the taint is on at `now`, for a backend holding `held` pods
    /// (fewer than at the refusal: capacity freed, the taint goes early).
    pub fn tainted(&self, now: Instant, held: usize) -> bool {
        let mut st = self.lock();
        let (current, last) = &mut *st;
        match *current {
            Some(c) if now < c.until && held >= c.held => true,
            Some(c) => {
                *last = Some(Episode {
                    until: now.min(c.until),
                    ..c
                });
                *current = None;
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_needs_streaks_both_ways() {
        let mut h = Health::new(2, 2);
        assert_eq!(
            h.observe(Err("timeout".into())),
            None,
            "one failure is not an outage"
        );
        assert_eq!(h.observe(Ok(())), None);
        assert_eq!(h.observe(Err("timeout".into())), None);
        assert_eq!(h.observe(Err("refused".into())), Some(Change::Down));
        assert!(!h.is_up());
        assert_eq!(h.last_error(), Some("refused"));
        assert_eq!(h.observe(Ok(())), None, "one answer is not a recovery");
        assert_eq!(h.observe(Err("x".into())), None);
        assert_eq!(h.observe(Ok(())), None);
        assert_eq!(h.observe(Ok(())), Some(Change::Up));
        assert!(h.is_up());
    }

    #[test]
    fn cooldown_doubles_for_repeated_shortage_and_caps() {
        let c = Cooldown::new(Duration::from_secs(60), Duration::from_secs(900));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(c.refused(t0, 5), s(60));
        assert!(c.tainted(t0 + s(30), 5));
        assert_eq!(
            c.refused(t0 + s(30), 5),
            s(30),
            "a refusal during the taint keeps its end"
        );
        assert!(!c.tainted(t0 + s(61), 5), "lifted after the cooldown");
        // refused again soon after: twice as long, up to 15 minutes
        assert_eq!(c.refused(t0 + s(90), 5), s(120));
        assert!(!c.tainted(t0 + s(211), 5));
        let mut t = t0 + s(212);
        for want in [240, 480, 900, 900] {
            assert_eq!(c.refused(t, 5), s(want));
            t += s(want);
            assert!(!c.tainted(t, 5));
        }
        // after a quiet spell it starts over
        assert_eq!(c.refused(t + s(3600), 5), s(60));
    }

    #[test]
    fn cooldown_lifts_early_when_capacity_frees() {
        let c = Cooldown::new(Duration::from_secs(60), Duration::from_secs(900));
        let t0 = Instant::now();
        c.refused(t0, 5);
        assert!(c.tainted(t0 + Duration::from_secs(1), 5));
        assert!(
            !c.tainted(t0 + Duration::from_secs(2), 4),
            "a pod ended: room again"
        );
        assert!(!c.tainted(t0 + Duration::from_secs(3), 5));
    }
}
