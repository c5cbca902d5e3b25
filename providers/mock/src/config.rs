//! [`Config`]: the simulated backend's settings, as [`crate::Mock`] builds
//! them from the flags and the config file.

use std::{collections::BTreeMap, time::Duration};

/// Settings of the simulated backend.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a pod takes from create to Running.
    pub start_latency: Duration,
    /// Fraction of creates that fail with a transient error.
    pub failure_rate: f64,
    /// Fraction of creates answered "throttled, retry after 1 s", as a
    /// cloud API over its rate limit.
    pub throttle_rate: f64,
    /// Node capacity (`cpu`, `memory`, `pods`, ...).
    pub capacity: BTreeMap<String, String>,
    /// Where the simulated backend keeps its state, so that it outlives a
    /// skylet process the way a cloud does (restart and adoption tests).
    /// `None`: in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// While this file exists the backend answers no call, as a cloud API
    /// that is down (outage and fail-over tests).
    pub unreachable_file: Option<std::path::PathBuf>,
    /// A file saying how much of the backend's quota others use now,
    /// `pods=N`, read at every create: a cloud account shared with other
    /// workloads whose use skylet cannot see (ECS has no API for the
    /// account's Fargate quota use). Creates beyond `capacity.pods - N` are
    /// refused for lack of capacity; the node keeps advertising its
    /// capacity, as a real backend that has no usage API would.
    pub usage_file: Option<std::path::PathBuf>,
    /// The second octet of the pods' addresses, `10.<block>.x.y`, so that
    /// several simulated backends of one fleet give distinct pod IPs
    /// (derived from the node name by [`Config::ip_block_of`]).
    pub ip_block: u8,
}

impl Config {
    /// The address block of node `name`: 100 to 249, from a hash of the
    /// name (FNV-1a; stable across restarts and builds).
    pub fn ip_block_of(name: &str) -> u8 {
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        100 + u8::try_from(hash % 150).unwrap_or(0)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            start_latency: Duration::ZERO,
            failure_rate: 0.0,
            throttle_rate: 0.0,
            capacity: [("cpu", "1000"), ("memory", "4Ti"), ("pods", "10000")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            state_file: None,
            unreachable_file: None,
            usage_file: None,
            ip_block: 200,
        }
    }
}
