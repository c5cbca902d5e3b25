//! Client-side token buckets that keep a backend under its cloud's API rate
//! limits, so that a burst of pods is shaped before it leaves instead of
//! being answered "throttled" and retried.
//!
//! Clouds publish their limits as token buckets: a capacity (the burst) and
//! a refill rate (the sustained rate), each bucket covering a set of
//! operations (ECS: "cluster resource modify actions" = `RunTask`,
//! `StopTask`, ...; ARM: the subscription's writes). A backend lists its
//! cloud's buckets with their published figures ([`BucketSpec`]); the user
//! may change any bucket's numbers or turn it off by name
//! ([`parse_override`], e.g. `--aci-rate-limit writes=400:20`); [`Buckets`]
//! then makes every call wait until each bucket covering its operation has
//! a token.
//!
//! # Semantics
//! - The buckets are [`governor`]'s GCRA, which is a token bucket with a
//!   continuous refill: a bucket of capacity `c` and refill `r`/s admits
//!   `c` calls at once and then one every `1/r` seconds.
//! - A tenth of each bucket (at least one token, [`reserve`]) is left to the
//!   cloud: calls sent evenly can arrive bunched (one waits for a
//!   connection, the next does not), and a cloud bucket kept at zero would
//!   throttle the second of a bunched pair. The reserve absorbs a bunching
//!   of `reserve / r` seconds (20 s of ARM's writes) and costs a burst only
//!   those few tokens; the sustained rate is the cloud's.
//! - An operation covered by several buckets takes one token of each, in
//!   the order of the backend's list (a layered API: ARM's subscription
//!   bucket, then the resource provider's own).
//! - Waiters of one bucket are served first come, first served (a fair
//!   mutex in front of each bucket), so a burst does not wake every waiter
//!   at each token.
//! - The buckets are per process: two skylet processes on one account (or
//!   subscription) share the cloud's bucket but not these; give each its
//!   share with the overrides.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};

/// One of a cloud's published buckets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    /// Its name in overrides (`writes`, `fargate-launch`).
    pub name: &'static str,
    /// Tokens it holds when full (the burst).
    pub capacity: u32,
    /// Tokens added per second (the sustained rate).
    pub refill_per_second: f64,
    /// The operations (as the backend names them in its metrics) that take
    /// a token of it.
    pub operations: &'static [&'static str],
}

/// A user's change of one bucket: new figures, or `None` for "off".
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The bucket's name.
    pub name: String,
    /// Capacity and refill per second; `None` turns the bucket off.
    pub figures: Option<(u32, f64)>,
}

/// Parses `NAME=CAPACITY:REFILL_PER_SECOND` (`writes=200:10`,
/// `creates-1h=300:0.0833`) or `NAME=off`.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_override(spec: &str) -> Result<Override, String> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?} is not NAME=CAPACITY:REFILL_PER_SECOND or NAME=off"))?;
    let name = name.trim().to_owned();
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(Override {
            name,
            figures: None,
        });
    }
    let (capacity, refill) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} (for {name}) is not CAPACITY:REFILL_PER_SECOND"))?;
    let capacity: u32 = capacity
        .trim()
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| format!("{capacity:?} (for {name}) is not a capacity of at least 1"))?;
    let refill: f64 = refill
        .trim()
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r >= 0.0001)
        .ok_or_else(|| {
            format!("{refill:?} (for {name}) is not a refill rate of at least 0.0001/s")
        })?;
    Ok(Override {
        name,
        figures: Some((capacity, refill)),
    })
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

struct Bucket {
    spec: BucketSpec,
    limiter: Limiter,
    /// First come, first served in front of the limiter.
    turn: tokio::sync::Mutex<()>,
}

/// A backend's buckets in force. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Buckets {
    buckets: Arc<Vec<Bucket>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.buckets.iter().map(|b| {
                format!(
                    "{}={}:{}",
                    b.spec.name, b.spec.capacity, b.spec.refill_per_second
                )
            }))
            .finish()
    }
}

impl Buckets {
    /// The backend's `published` buckets with the user's `overrides`
    /// applied (a later override of one name wins).
    ///
    /// # Errors
    /// An override naming no published bucket (the message lists them).
    pub fn new(published: &[BucketSpec], overrides: &[Override]) -> Result<Self, String> {
        let mut specs: Vec<Option<BucketSpec>> = published.iter().copied().map(Some).collect();
        for o in overrides {
            let Some(i) = published.iter().position(|b| b.name == o.name) else {
                let names: Vec<&str> = published.iter().map(|b| b.name).collect();
                return Err(format!(
                    "no bucket {:?}; the buckets are {}",
                    o.name,
                    names.join(", ")
                ));
            };
            specs[i] = o.figures.map(|(capacity, refill_per_second)| BucketSpec {
                capacity,
                refill_per_second,
                ..published[i]
            });
        }
        let clock = DefaultClock::default();
        let buckets = specs
            .into_iter()
            .flatten()
            .map(|spec| {
                let ours = BucketSpec {
                    capacity: spec.capacity - reserve(spec.capacity),
                    ..spec
                };
                Bucket {
                    limiter: RateLimiter::direct_with_clock(quota(&ours), clock.clone()),
                    spec,
                    turn: tokio::sync::Mutex::new(()),
                }
            })
            .collect();
        Ok(Self {
            buckets: Arc::new(buckets),
            clock,
        })
    }

    /// No buckets: every call goes at once.
    pub fn none() -> Self {
        Self::default()
    }

    /// The buckets in force, with their figures.
    pub fn specs(&self) -> Vec<BucketSpec> {
        self.buckets.iter().map(|b| b.spec).collect()
    }

    /// Waits until every bucket covering `operation` gave it a token.
    pub async fn acquire(&self, operation: &str) {
        for b in self
            .buckets
            .iter()
            .filter(|b| b.spec.operations.contains(&operation))
        {
            let _turn = b.turn.lock().await;
            loop {
                match b.limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                }
            }
        }
    }
}

/// The tokens of a cloud bucket of `capacity` that skylet leaves unused: a
/// tenth, at least one (none of a bucket of one).
pub fn reserve(capacity: u32) -> u32 {
    if capacity < 2 {
        0
    } else {
        (capacity / 10).max(1)
    }
}

/// A bucket as a GCRA quota: one token every `1/refill` seconds, `capacity`
/// at once.
fn quota(spec: &BucketSpec) -> Quota {
    let period = Duration::from_secs_f64(1.0 / spec.refill_per_second.max(0.0001));
    let burst = NonZeroU32::new(spec.capacity).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// A table of buckets in Markdown (`| bucket | capacity | refill/s |
/// operations |`), for docs and `--help`-like output.
pub fn table(specs: &[BucketSpec]) -> String {
    let mut out =
        String::from("| bucket | capacity | refill/s | operations |\n|---|---|---|---|\n");
    for s in specs {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            s.capacity,
            s.refill_per_second,
            s.operations.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use super::*;

    const PUBLISHED: &[BucketSpec] = &[
        BucketSpec {
            name: "writes",
            capacity: 5,
            refill_per_second: 20.0,
            operations: &["Put", "Stop"],
        },
        BucketSpec {
            name: "creates",
            capacity: 100,
            refill_per_second: 1.0,
            operations: &["Put"],
        },
    ];

    #[test]
    fn a_tenth_is_left_to_the_cloud() {
        assert_eq!(
            [1, 2, 5, 19, 20, 100, 250].map(reserve),
            [0, 1, 1, 1, 2, 10, 25]
        );
    }

    #[test]
    fn overrides_parse_and_name_a_published_bucket() {
        assert_eq!(
            parse_override("writes=200:10").unwrap(),
            Override {
                name: "writes".into(),
                figures: Some((200, 10.0))
            }
        );
        assert_eq!(parse_override("creates=off").unwrap().figures, None);
        for bad in [
            "writes",
            "writes=200",
            "writes=0:1",
            "writes=5:0",
            "writes=x:1",
        ] {
            assert!(parse_override(bad).is_err(), "{bad}");
        }
        let e = Buckets::new(PUBLISHED, &[parse_override("reads=1:1").unwrap()]).unwrap_err();
        assert!(e.contains("writes, creates"), "{e}");
        let b = Buckets::new(PUBLISHED, &[parse_override("creates=off").unwrap()]).unwrap();
        assert_eq!(b.specs().len(), 1);
    }

    #[tokio::test]
    async fn a_burst_takes_the_capacity_at_once_then_the_refill_rate() {
        let b = Buckets::new(PUBLISHED, &[]).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            b.acquire("Stop").await;
        }
        assert!(start.elapsed() < Duration::from_millis(30), "the burst");
        // (5 less the reserve of 1), then 10 more at 20/s: about 0.5 s
        for _ in 0..10 {
            b.acquire("Stop").await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(900),
            "{took:?}"
        );
        // an operation no bucket covers never waits
        let start = Instant::now();
        for _ in 0..1000 {
            b.acquire("Get").await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn concurrent_waiters_share_the_rate() {
        let b = Buckets::new(PUBLISHED, &[parse_override("creates=off").unwrap()]).unwrap();
        let start = Instant::now();
        let calls = (0..24).map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.acquire("Put").await })
        });
        futures::future::join_all(calls).await;
        // 4 at once (5 less the reserve), 20 at 20/s
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }
}
