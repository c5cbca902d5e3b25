//! Cumulative CPU counters from rate samples, for backends whose metrics
//! API reports a rate (CloudWatch's CPU units averaged over a minute,
//! Azure Monitor's millicores, `metrics.k8s.io`'s nanocores over a window)
//! while the kubelet API reports what a kubelet does: cumulative CPU time
//! (`container_cpu_usage_seconds_total`, `usageCoreNanoSeconds`), from
//! which metrics-server derives the rate between two scrapes.
//!
//! A [`Meter`] integrates each container's latest rate over the time since
//! it was last observed: two scrapes of a container whose backend reports
//! 500 millicores differ by 0.5 s of CPU per second between them, so
//! `kubectl top` and a HorizontalPodAutoscaler see 500m. The first
//! observation counts the rate since the container started (at most a
//! minute of it), and never zero: metrics-server drops a pod with a
//! container at zero.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use jiff::Timestamp;

use crate::ContainerStats;

/// What a backend's metrics API said of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU in use, in nanocores (1e9 is one core).
    pub nano_cores: u64,
    /// Working set (or the closest the backend reports), in bytes.
    pub memory_bytes: u64,
}

impl Sample {
    /// A sample from millicores and bytes.
    pub fn millicores(millicores: f64, memory_bytes: u64) -> Self {
        Self {
            nano_cores: (millicores.max(0.0) * 1e6) as u64,
            memory_bytes,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Counter {
    cumulative_ns: u64,
    at: Timestamp,
}

/// Cumulative CPU counters per container, keyed by the pod UID and the
/// container name. Cheap to share behind a reference; every method takes
/// `&self`.
#[derive(Debug, Default)]
pub struct Meter {
    counters: Mutex<HashMap<(String, String), Counter>>,
}

/// The most of a container's life its first observation counts.
const FIRST_WINDOW_SECS: f64 = 60.0;

impl Meter {
    /// A meter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stats of container `name` of pod `uid`, which started at `start`
    /// and now uses `sample`: its counter advanced by the sample's rate over
    /// the time since its last observation.
    pub fn observe(
        &self,
        uid: &str,
        name: &str,
        start: Option<Timestamp>,
        sample: Sample,
        now: Timestamp,
    ) -> ContainerStats {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (uid.to_owned(), name.to_owned());
        let rate = sample.nano_cores as f64 / 1e9;
        let counter = match counters.get(&key) {
            Some(c) => {
                let secs = now.duration_since(c.at).as_secs_f64().max(0.0);
                Counter {
                    cumulative_ns: c.cumulative_ns + (rate * secs * 1e9) as u64,
                    at: now.max(c.at),
                }
            }
            None => {
                let lived = start.map_or(FIRST_WINDOW_SECS, |s| {
                    now.duration_since(s)
                        .as_secs_f64()
                        .clamp(1.0, FIRST_WINDOW_SECS)
                });
                Counter {
                    cumulative_ns: ((rate * lived * 1e9) as u64).max(1),
                    at: now,
                }
            }
        };
        counters.insert(key, counter);
        ContainerStats {
            name: name.to_owned(),
            start_time: start,
            cpu_usage_core_nanoseconds: counter.cumulative_ns,
            memory_working_set_bytes: sample.memory_bytes,
            usage_nano_cores: Some(sample.nano_cores),
        }
    }

    /// Forgets the counters of pods not in `uids` (pods gone).
    pub fn retain(&self, uids: &HashSet<&str>) {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(uid, _), _| uids.contains(uid.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn two_observations_differ_by_the_rate_times_the_interval() {
        let m = Meter::new();
        let start = Some(at(0));
        let first = m.observe("u", "c", start, Sample::millicores(500.0, 7), at(10));
        // the first counts the 10 s since the start
        assert_eq!(first.cpu_usage_core_nanoseconds, 5_000_000_000);
        assert_eq!(first.memory_working_set_bytes, 7);
        assert_eq!(first.usage_nano_cores, Some(500_000_000));
        let second = m.observe("u", "c", start, Sample::millicores(250.0, 7), at(20));
        assert_eq!(
            second.cpu_usage_core_nanoseconds - first.cpu_usage_core_nanoseconds,
            2_500_000_000
        );
        // a container idle from the start is still not at zero
        let idle = m.observe("u", "idle", start, Sample::default(), at(20));
        assert_eq!(idle.cpu_usage_core_nanoseconds, 1);
        // a long-lived container's first observation counts one minute
        let old = m.observe(
            "u",
            "old",
            Some(at(-3600)),
            Sample::millicores(1000.0, 0),
            at(0),
        );
        assert_eq!(old.cpu_usage_core_nanoseconds, 60_000_000_000);
    }

    #[test]
    fn retain_forgets_pods_gone() {
        let m = Meter::new();
        m.observe("a", "c", None, Sample::millicores(100.0, 0), at(0));
        m.observe("b", "c", None, Sample::millicores(100.0, 0), at(0));
        m.retain(&HashSet::from(["a"]));
        let again = m.observe("b", "c", None, Sample::millicores(100.0, 0), at(10));
        // b starts over: its first observation again
        assert_eq!(again.cpu_usage_core_nanoseconds, 6_000_000_000);
        let a = m.observe("a", "c", None, Sample::millicores(100.0, 0), at(10));
        assert_eq!(a.cpu_usage_core_nanoseconds, 6_000_000_000 + 1_000_000_000);
    }
}
