//! The accrual model, pure: what an instance of a [`BilledSize`] costs at
//! a [`Price`] for how long it ran, and how that size splits over a pod's
//! containers.
//!
//! An instance of `v` vCPU and `m` GiB that ran `s` seconds costs
//! `v × vcpu-hour × s/3600 + m × memory-gib-hour × s/3600`, with `s` at
//! least the price's `minimum-seconds` once it has stopped. Arithmetic is
//! exact: prices in whole pico-dollars, sizes in millicores and bytes,
//! durations in milliseconds, and a cost is rounded down to a
//! pico-dollar once, from the whole duration (so accruing every 10 s adds
//! up to the same as one accrual at the end).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use skylet_provider::BilledSize;

use super::Price;

const GIB: u128 = 1 << 30;
/// A [`Rate`] is pico-dollars per hour times this: millicores and GiB.
const RATE_SCALE: u128 = 1000 * GIB;
const MS_PER_HOUR: u128 = 3_600_000;
/// Pico-dollars per dollar.
const PICO: f64 = 1e12;

/// An amount of money, in whole pico-dollars (10^-12 dollars).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(pub u64);

impl Cost {
    /// The amount in dollars: the float nearest to the exact amount.
    pub fn dollars(self) -> f64 {
        // exact below 2^53 pico-dollars (9,007 dollars), then to 16 digits
        #[allow(clippy::cast_precision_loss)]
        let p = self.0 as f64;
        p / PICO
    }

    /// The sum, saturating.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

/// What an instance of one size costs per hour at one price, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate(u128);

impl Rate {
    /// The rate of an instance of `size` at `price`.
    pub fn of(size: BilledSize, price: &Price) -> Self {
        let cpu = u128::from(size.cpu_millis)
            .saturating_mul(u128::from(price.vcpu_pico()))
            .saturating_mul(GIB);
        let memory = u128::from(size.memory_bytes)
            .saturating_mul(u128::from(price.memory_pico()))
            .saturating_mul(1000);
        Self(cpu.saturating_add(memory))
    }

    /// Dollars per hour.
    pub fn hourly_dollars(self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let r = self.0 as f64;
        r / RATE_SCALE as f64 / PICO
    }

    /// The cost of running `d` (to the millisecond), rounded down.
    pub fn cost(self, d: Duration) -> Cost {
        let ms = d.as_millis();
        let den = RATE_SCALE * MS_PER_HOUR;
        // (q·den + r)·ms / den without overflow for any real size
        let (q, r) = (self.0 / den, self.0 % den);
        let pico = q
            .saturating_mul(ms)
            .saturating_add(r.saturating_mul(ms) / den);
        Cost(u64::try_from(pico).unwrap_or(u64::MAX))
    }

    /// The sum of two rates.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// The difference of two rates (never below zero).
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

/// The cost of an instance of `size` that ran `ran` and has stopped: at
/// least the price's minimum duration is billed.
pub fn cost(size: BilledSize, price: &Price, ran: Duration) -> Cost {
    Rate::of(size, price).cost(ran.max(price.minimum()))
}

/// One running instance: its rate, when it started, its minimum duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    /// What it costs per hour.
    pub rate: Rate,
    /// When it started.
    pub started: Instant,
    /// The shortest duration it is billed for.
    pub minimum: Duration,
}

impl Instance {
    /// An instance of `size` at `price` started at `started`.
    pub fn new(size: BilledSize, price: &Price, started: Instant) -> Self {
        Self {
            rate: Rate::of(size, price),
            started,
            minimum: price.minimum(),
        }
    }

    /// What it has cost by `now` while it runs (the minimum not applied).
    pub fn so_far(&self, now: Instant) -> Cost {
        self.rate.cost(now.saturating_duration_since(self.started))
    }

    /// What it cost in all, having stopped at `stopped`: at least the
    /// minimum duration.
    pub fn at_stop(&self, stopped: Instant) -> Cost {
        let ran = stopped.saturating_duration_since(self.started);
        self.rate.cost(ran.max(self.minimum))
    }
}

/// `size` split over the containers of `pod` that run side by side (app
/// containers and sidecars, i.e. init containers with `restartPolicy:
/// Always`), in proportion to each one's requests (limits where no
/// request), each resource on its own; equally when none requests it.
/// The parts add up to `size` exactly (the remainder of the division goes
/// one unit each to the first containers). Init containers that run
/// before the others get nothing: the allocation series show what runs.
pub fn split(pod: &Pod, size: BilledSize) -> Vec<(String, BilledSize)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let side_by_side: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(&spec.containers)
        .collect();
    let weights: Vec<BilledSize> = side_by_side
        .iter()
        .map(|c| BilledSize::container(c))
        .collect();
    let cpu = shares(size.cpu_millis, weights.iter().map(|w| w.cpu_millis));
    let memory = shares(size.memory_bytes, weights.iter().map(|w| w.memory_bytes));
    side_by_side
        .iter()
        .zip(cpu.into_iter().zip(memory))
        .map(|(c, (cpu, memory))| (c.name.clone(), BilledSize::new(cpu, memory)))
        .collect()
}

/// `total` split in proportion to `weights` (equally if they are all
/// zero); the parts add up to `total`.
fn shares(total: u64, weights: impl ExactSizeIterator<Item = u64>) -> Vec<u64> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let mut weights: Vec<u128> = weights.map(u128::from).collect();
    let mut sum: u128 = weights.iter().sum();
    if sum == 0 {
        weights.fill(1);
        sum = n as u128;
    }
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|w| u64::try_from(u128::from(total) * w / sum).unwrap_or(u64::MAX))
        .collect();
    let given: u64 = parts.iter().fold(0u64, |a, p| a.saturating_add(*p));
    let mut left = total.saturating_sub(given);
    for p in parts.iter_mut() {
        if left == 0 {
            break;
        }
        *p += 1;
        left -= 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    /// Fargate us-east-1, Linux/x86 (see deploy/prices/aws-ecs.yaml).
    fn fargate() -> Price {
        Price {
            vcpu_hour: 0.04048,
            memory_gib_hour: 0.004445,
            minimum_seconds: 60,
            spot: false,
        }
    }

    #[test]
    fn one_vcpu_and_two_gib_for_a_minute_on_fargate() {
        let size = BilledSize::new(1000, 2 * GI);
        // 0.04048 / 60 + 2 × 0.004445 / 60 = 0.000822833333… dollars
        let c = cost(size, &fargate(), Duration::from_secs(60));
        assert_eq!(c, Cost(822_833_333));
        assert_eq!(c.dollars(), 0.000_822_833_333);
        assert_eq!(Rate::of(size, &fargate()).hourly_dollars(), 0.04937);
        assert_eq!(
            cost(size, &fargate(), Duration::from_secs(3600)).dollars(),
            0.04937
        );
    }

    #[test]
    fn the_minimum_is_billed_once_the_instance_stops() {
        let size = BilledSize::new(1000, 2 * GI);
        let t0 = Instant::now();
        let i = Instance::new(size, &fargate(), t0);
        let t10 = t0 + Duration::from_secs(10);
        // 10 s so far: 0.000137138888…
        assert_eq!(i.so_far(t10), Cost(137_138_888));
        assert_eq!(i.at_stop(t10), Cost(822_833_333), "billed 60 s");
        assert_eq!(
            i.at_stop(t0 + Duration::from_secs(90)),
            cost(size, &fargate(), Duration::from_secs(90))
        );
        assert_eq!(i.so_far(t0 - Duration::from_secs(1)), Cost(0));
    }

    #[test]
    fn a_cost_is_rounded_down_once_from_the_whole_duration() {
        // 0.25 vCPU / 0.5 GiB: 0.0123425 dollars an hour
        let rate = Rate::of(BilledSize::new(250, 512 * MI), &fargate());
        assert_eq!(rate.hourly_dollars(), 0.012_342_5);
        // 12,342,500,000 pico-dollars × 3,723,456 ms / 3,600,000 ms
        //   = 12,765,765,466.67 pico-dollars
        assert_eq!(
            rate.cost(Duration::from_millis(3_723_456)),
            Cost(12_765_765_466)
        );
        assert_eq!(rate.cost(Duration::from_millis(1)), Cost(3428));
        assert_eq!(rate.cost(Duration::from_micros(999)), Cost(0));
    }

    #[test]
    fn huge_sizes_and_durations_saturate_instead_of_overflowing() {
        let price = Price {
            vcpu_hour: 999_999.0,
            memory_gib_hour: 999_999.0,
            minimum_seconds: 0,
            spot: false,
        };
        let rate = Rate::of(BilledSize::new(u64::MAX, u64::MAX), &price);
        assert_eq!(rate.cost(Duration::from_secs(u64::MAX)), Cost(u64::MAX));
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn the_size_splits_over_running_containers_by_their_requests() {
        let p = pod(json!({
            "initContainers": [
                {"name": "setup", "resources": {"requests": {"cpu": "4", "memory": "4Gi"}}},
                {"name": "proxy", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
            ],
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "300m"}, "limits": {"memory": "384Mi"}}},
                {"name": "log"},
            ],
        }));
        // the backend rounded 400m / 512Mi up to 0.5 vCPU / 1 GiB
        let parts = split(&p, BilledSize::new(500, GI));
        assert_eq!(
            parts,
            vec![
                ("proxy".into(), BilledSize::new(125, GI / 4)),
                ("app".into(), BilledSize::new(375, 3 * GI / 4)),
                ("log".into(), BilledSize::new(0, 0)),
            ]
        );
        let equal = split(
            &pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})),
            BilledSize::new(1000, 10),
        );
        assert_eq!(
            equal,
            vec![
                ("a".into(), BilledSize::new(334, 4)),
                ("b".into(), BilledSize::new(333, 3)),
                ("c".into(), BilledSize::new(333, 3)),
            ]
        );
        assert!(split(&Pod::default(), BilledSize::new(1, 1)).is_empty());
    }
}
