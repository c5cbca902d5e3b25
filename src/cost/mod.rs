//! Cost (#14, item 6): what the pods of each backend cost, priced from the
//! backend's `price:` and exported for Prometheus and OpenCost.
//!
//! - [`Price`]: a backend's price list, from its entry in the config file.
//! - [`model`]: the accrual model, pure and exact: an instance of a
//!   [`BilledSize`](skylet_provider::BilledSize) (what
//!   [`Provider::billed_size`](skylet_provider::Provider::billed_size)
//!   says the backend bills) costs
//!   `vCPU × vcpu-hour × s/3600 + GiB × memory-gib-hour × s/3600`, with
//!   at least `minimum-seconds` billed once it stops.
//! - [`CostMetrics`]: the series, registered once per process; OpenCost's
//!   in a registry without prefix of their own.
//! - [`CostMeter`]: one backend's node, told when its pods start and stop.
//!
//! # Wiring
//! ```no_run
//! # use std::time::Duration;
//! # use skylet::cost::{Config, CostMetrics, MeterLabels, Price, now};
//! # use prometheus_client::registry::Registry;
//! # async fn f(pod: &k8s_openapi::api::core::v1::Pod, price: Price) {
//! let mut registry = Registry::with_prefix("skylet");
//! let families = CostMetrics::register(&mut registry);
//! // serve families.opencost_registry() next to `registry`
//! let meter = families.meter(
//!     MeterLabels { backend: "ecs-east".into(), kind: "aws-ecs".into(),
//!                   node: "ecs-east".into(), region: "us-east-1".into() },
//!     price,
//!     Config::default(),
//! );
//! tokio::spawn(meter.clone().run(skylet_provider::CancellationToken::new()));
//! // the pod controller, when the backend holds the pod and it has not ended:
//! meter.started_pod(pod, skylet_provider::BilledSize::requests(pod), now());
//! // and when its phase is Succeeded/Failed or the backend no longer holds it:
//! meter.stopped(&skylet_provider::PodRef::of(pod), now());
//! # }
//! ```

use std::time::{Duration, Instant};

mod meter;
mod metrics;
pub mod model;
mod price;

pub use meter::CostMeter;
pub use metrics::{CostMetrics, MeterLabels};
pub use model::Cost;
pub use price::Price;

/// Timing of a [`CostMeter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How often running pods are accrued (default 10 s): a pod's cost
    /// series lags its true cost by at most this.
    pub accrue_every: Duration,
    /// How long a stopped pod's cost series stays (default 5 minutes), so
    /// that Prometheus scrapes its final value.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            accrue_every: Duration::from_secs(10),
            linger: Duration::from_secs(300),
        }
    }
}

/// The time of the meter's timer: `Instant::now()`, or tokio's paused
/// clock in tests. Give it as the `at` of [`CostMeter::started_pod`] and
/// [`CostMeter::stopped`].
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests;
