//! The API rate limits of ARM and ACI as token buckets ([`RateLimit`],
//! [`crate::Config::rate_limits`]; none by default): a call that finds a
//! bucket empty is answered 429 `TooManyRequests` with `Retry-After` (whole
//! seconds until the bucket has a token again), as ARM does.
//!
//! The published figures ([`RateLimit::published`]):
//!
//! | bucket | covers | capacity | refill/s | source |
//! |---|---|---|---|---|
//! | `reads` | every ARM GET of the subscription | 250 | 25 | ARM, subscription limits (token bucket, since 2024) |
//! | `writes` | every ARM PUT, PATCH and POST | 200 | 10 | same |
//! | `deletes` | every ARM DELETE | 200 | 10 | same |
//! | `creates-5m` | a PUT that creates a container group | 100 | 100/300 | ACI: 100 container creates per 5 minutes |
//! | `creates-1h` | same | 300 | 300/3600 | ACI: 300 container creates per hour |
//! | `deletes-5m` | a DELETE of an existing group | 100 | 100/300 | ACI: 100 container deletes per 5 minutes |
//! | `deletes-1h` | same | 300 | 300/3600 | ACI: 300 container deletes per hour |
//!
//! Sources: learn.microsoft.com, "Understand how Azure Resource Manager
//! throttles requests" (azure-resource-manager/management/request-limits-and-throttling:
//! subscription reads 250/25, writes 200/10, deletes 200/10 per second,
//! per subscription, service principal and operation type) and "Resource
//! availability & quota limits for ACI"
//! (container-instances/container-instances-resource-and-quota-limits:
//! container creates 300 per hour and 100 per 5 minutes, deletes the same).
//! ACI states its create and delete limits as windows; here each window is a
//! bucket of that size refilled evenly over the window.
//!
//! Layers are checked like ARM checks them: the subscription bucket when
//! the request arrives (a request ARM throttles never reaches ACI), ACI's
//! own when the group is created or deleted (a request ACI throttles has
//! used its ARM token). The buckets are [`governor`]'s GCRA, which is a
//! token bucket with continuous refill.

use std::{collections::BTreeMap, num::NonZeroU32, time::Duration, time::Instant};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};
use serde::Serialize;

/// What a bucket covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covers {
    /// ARM GETs.
    Reads,
    /// ARM PUTs, PATCHes and POSTs.
    Writes,
    /// ARM DELETEs.
    Deletes,
    /// PUTs that create a container group (ACI's own limit).
    GroupCreates,
    /// DELETEs of an existing container group (ACI's own limit).
    GroupDeletes,
}

/// One bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Its name in [`crate::Stats::limits`].
    pub name: String,
    /// What it covers.
    pub covers: Covers,
    /// Tokens when full (the burst).
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

impl RateLimit {
    /// A bucket.
    pub fn new(name: &str, covers: Covers, capacity: u32, refill_per_second: f64) -> Self {
        Self {
            name: name.to_owned(),
            covers,
            capacity,
            refill_per_second,
        }
    }

    /// ARM's and ACI's published limits (see the module docs).
    pub fn published() -> Vec<Self> {
        vec![
            Self::new("reads", Covers::Reads, 250, 25.0),
            Self::new("writes", Covers::Writes, 200, 10.0),
            Self::new("deletes", Covers::Deletes, 200, 10.0),
            Self::new("creates-5m", Covers::GroupCreates, 100, 100.0 / 300.0),
            Self::new("creates-1h", Covers::GroupCreates, 300, 300.0 / 3600.0),
            Self::new("deletes-5m", Covers::GroupDeletes, 100, 100.0 / 300.0),
            Self::new("deletes-1h", Covers::GroupDeletes, 300, 300.0 / 3600.0),
        ]
    }

    /// Parses `NAME=CAPACITY:REFILL_PER_SECOND` for a published bucket
    /// (`writes=200:10`), or `NAME=off`: `None`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(spec: &str) -> Result<(String, Option<(u32, f64)>), String> {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} is not NAME=CAPACITY:REFILL or NAME=off"))?;
        if !Self::published().iter().any(|b| b.name == name) {
            return Err(format!("no bucket {name:?}"));
        }
        if value == "off" {
            return Ok((name.to_owned(), None));
        }
        let (c, r) = value
            .split_once(':')
            .ok_or_else(|| format!("{value:?} is not CAPACITY:REFILL"))?;
        let c: u32 = c.parse().map_err(|_| format!("bad capacity {c:?}"))?;
        let r: f64 = r.parse().map_err(|_| format!("bad refill {r:?}"))?;
        if c == 0 || !(r.is_finite() && r > 0.0) {
            return Err(format!("{value:?}: capacity and refill must be positive"));
        }
        Ok((name.to_owned(), Some((c, r))))
    }
}

/// A bucket's counts, in [`crate::Stats::limits`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStats {
    /// Capacity.
    pub capacity: u32,
    /// Refill per second.
    pub refill_per_second: f64,
    /// Calls admitted.
    pub admitted: u64,
    /// Calls answered 429 by it.
    pub throttled: u64,
    /// Seconds since the emulator started, of the first and last admitted
    /// call (`null` before the first).
    pub first_admitted_at: Option<f64>,
    /// See `first_admitted_at`.
    pub last_admitted_at: Option<f64>,
}

struct Bucket {
    spec: RateLimit,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    stats: BucketStats,
}

/// The buckets in force.
pub(crate) struct Limits {
    buckets: Vec<Bucket>,
    clock: DefaultClock,
    started: Instant,
}

impl Limits {
    pub(crate) fn new(specs: &[RateLimit]) -> Self {
        let clock = DefaultClock::default();
        let buckets = specs
            .iter()
            .map(|spec| {
                let period = Duration::from_secs_f64(1.0 / spec.refill_per_second.max(1e-6));
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(spec.capacity).unwrap_or(NonZeroU32::MIN));
                Bucket {
                    limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
                    stats: BucketStats {
                        capacity: spec.capacity,
                        refill_per_second: spec.refill_per_second,
                        ..BucketStats::default()
                    },
                    spec: spec.clone(),
                }
            })
            .collect();
        Self {
            buckets,
            clock,
            started: Instant::now(),
        }
    }

    /// Takes a token of every bucket covering `what`, in order; at the
    /// first empty one, the wait until it has one (tokens taken before it
    /// stay taken, as in ARM's layers).
    pub(crate) fn take(&mut self, what: Covers) -> Result<(), Duration> {
        let at = self.started.elapsed().as_secs_f64();
        for b in self.buckets.iter_mut().filter(|b| b.spec.covers == what) {
            if let Err(not_until) = b.limiter.check() {
                b.stats.throttled += 1;
                return Err(not_until.wait_time_from(self.clock.now()));
            }
            b.stats.admitted += 1;
            b.stats.first_admitted_at.get_or_insert(at);
            b.stats.last_admitted_at = Some(at);
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> BTreeMap<String, BucketStats> {
        self.buckets
            .iter()
            .map(|b| (b.spec.name.clone(), b.stats.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bucket_admits_its_capacity_then_answers_the_wait() {
        let mut l = Limits::new(&[
            RateLimit::new("writes", Covers::Writes, 3, 2.0),
            RateLimit::new("creates", Covers::GroupCreates, 1, 0.001),
        ]);
        for _ in 0..3 {
            l.take(Covers::Writes).unwrap();
        }
        let wait = l.take(Covers::Writes).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(500));
        l.take(Covers::GroupCreates).unwrap();
        assert!(l.take(Covers::GroupCreates).unwrap_err() > Duration::from_secs(900));
        l.take(Covers::Reads).unwrap();
        let s = l.stats();
        assert_eq!((s["writes"].admitted, s["writes"].throttled), (3, 1));
        assert_eq!((s["creates"].admitted, s["creates"].throttled), (1, 1));
    }

    #[test]
    fn overrides_name_published_buckets() {
        assert_eq!(
            RateLimit::parse("writes=20:2").unwrap(),
            ("writes".into(), Some((20, 2.0)))
        );
        assert_eq!(
            RateLimit::parse("creates-1h=off").unwrap(),
            ("creates-1h".into(), None)
        );
        assert!(RateLimit::parse("nope=1:1").is_err());
        assert!(RateLimit::parse("writes=0:1").is_err());
    }
}
