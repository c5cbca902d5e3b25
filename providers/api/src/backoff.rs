//! [`Backoff`]: exponential delays with jitter, the one retry schedule of
//! the workspace (reconciles, watches, cloud API calls).

use std::time::Duration;

/// Exponential backoff: `initial`, doubling on every failure up to `max`,
/// plus a random share of each delay (`jitter`, 0..=1) so that many callers
/// failing together do not retry in lockstep.
///
/// An iterator of delays that never ends; [`Backoff::reset`] after a
/// success. `Backoff::delay(n)` gives the n-th delay without state.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// Delays from `initial` doubling to `max`, with up to `jitter` (a
    /// fraction of the delay, clamped to 0..=1) added at random.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            jitter: jitter.clamp(0.0, 1.0),
            failures: 0,
        }
    }

    /// The delay before retry number `failures` (1 = after the first
    /// failure), jitter included; 0 failures is no delay.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let base = self
            .initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(self.max);
        base + base.mul_f64(self.jitter * fastrand::f64())
    }

    /// The failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(self.delay(self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_bounds() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 0.1);
        for _ in 0..50 {
            let d = b.delay(1);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1100),
                "{d:?}"
            );
            let d = b.delay(3);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_millis(4400),
                "{d:?}"
            );
            let d = b.delay(60);
            assert!(
                d >= Duration::from_secs(300) && d <= Duration::from_secs(330),
                "{d:?}"
            );
        }
        assert_eq!(b.delay(0), Duration::ZERO);
    }

    #[test]
    fn iterates_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(5), 0.0);
        let first: Vec<_> = b.by_ref().take(5).collect();
        assert_eq!(
            first,
            [500, 1000, 2000, 4000, 5000].map(Duration::from_millis)
        );
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(500)));
    }
}
