//! A simulated container's resource use, for `kubectl top` and the
//! HorizontalPodAutoscaler: a steady 5 millicores and 20 MiB until its
//! program says otherwise with `load CPU [MEMORY]`, its CPU time the
//! integral of that rate.

use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;

/// What a container uses when its program never said.
const DEFAULT_MILLICORES: u64 = 5;
const DEFAULT_MEMORY: u64 = 20 << 20;

/// One container's use.
#[derive(Debug)]
pub(crate) struct Usage(Mutex<Rate>);

#[derive(Clone, Copy, Debug)]
struct Rate {
    /// CPU time up to `at`, in nanoseconds.
    cumulative_ns: u64,
    millicores: u64,
    memory: u64,
    at: Timestamp,
}

impl Rate {
    fn advanced(self, now: Timestamp) -> Self {
        let secs = now.duration_since(self.at).as_secs_f64().max(0.0);
        Self {
            cumulative_ns: self.cumulative_ns + (self.millicores as f64 * 1e6 * secs) as u64,
            at: now.max(self.at),
            ..self
        }
    }
}

/// What a container used up to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Used {
    pub(crate) cpu_ns: u64,
    pub(crate) nano_cores: u64,
    pub(crate) memory: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Self::starting(Timestamp::now())
    }
}

impl Usage {
    /// A container that starts at `now` (one second of its default use
    /// already counted: never zero, which metrics-server would drop).
    pub(crate) fn starting(now: Timestamp) -> Self {
        Self(Mutex::new(Rate {
            cumulative_ns: DEFAULT_MILLICORES * 1_000_000,
            millicores: DEFAULT_MILLICORES,
            memory: DEFAULT_MEMORY,
            at: now,
        }))
    }

    /// From `now` on the container uses `millicores` (and `memory` bytes).
    pub(crate) fn set(&self, millicores: u64, memory: Option<u64>, now: Timestamp) {
        let mut r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = r.advanced(now);
        next.millicores = millicores;
        if let Some(m) = memory {
            next.memory = m;
        }
        *r = next;
    }

    /// What it used up to `now`.
    pub(crate) fn used(&self, now: Timestamp) -> Used {
        let r = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advanced(now);
        Used {
            cpu_ns: r.cumulative_ns,
            nano_cores: r.millicores * 1_000_000,
            memory: r.memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_integrates_the_rate_the_program_sets() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let u = Usage::starting(t0);
        assert_eq!(
            u.used(at(10)),
            Used {
                cpu_ns: 5_000_000 + 50_000_000,
                nano_cores: 5_000_000,
                memory: 20 << 20
            }
        );
        u.set(500, Some(64 << 20), at(10));
        let used = u.used(at(20));
        assert_eq!(used.cpu_ns, 55_000_000 + 5_000_000_000);
        assert_eq!((used.nano_cores, used.memory), (500_000_000, 64 << 20));
    }
}
