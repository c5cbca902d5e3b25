//! [`Mock`]: the simulated backend's settings (`--mock-*` flags, the `mock:`
//! section of the config file) and its construction.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use skylet_provider::{BoxError, BuildContext, ConfigError, Kind, NodeContext, parse_capacity};

use crate::{Config, MockProvider};

/// The simulated backend (`--provider mock`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mock;

/// Flags of the simulated backend.
#[derive(clap::Args, Default, Debug)]
#[group(skip)]
#[command(next_help_heading = "Simulated backend (--provider mock)")]
pub struct Args {
    /// Simulated backend: seconds a pod takes to start.
    #[arg(long, env = "SKYLET_MOCK_START_LATENCY")]
    pub mock_start_latency: Option<f64>,
    /// Simulated backend: fraction (0..1) of creates that fail transiently.
    #[arg(long, env = "SKYLET_MOCK_FAILURE_RATE")]
    pub mock_failure_rate: Option<f64>,
    /// Simulated backend: fraction (0..1) of creates answered "throttled,
    /// retry after 1 s".
    #[arg(long, env = "SKYLET_MOCK_THROTTLE_RATE")]
    pub mock_throttle_rate: Option<f64>,
    /// Simulated backend: node capacity, e.g. cpu=100,memory=512Gi,pods=1000.
    #[arg(long, env = "SKYLET_MOCK_CAPACITY")]
    pub mock_capacity: Option<String>,
    /// Simulated backend: a file that keeps its pods across restarts.
    #[arg(long, env = "SKYLET_MOCK_STATE_FILE")]
    pub mock_state_file: Option<PathBuf>,
    /// Simulated backend: while this file exists, the backend is unreachable.
    #[arg(long, env = "SKYLET_MOCK_UNREACHABLE_FILE")]
    pub mock_unreachable_file: Option<PathBuf>,
    /// Simulated backend: a file `pods=N` saying how many pods of its quota
    /// others use, unseen by skylet; creates beyond the rest are refused for
    /// lack of capacity.
    #[arg(long, env = "SKYLET_MOCK_USAGE_FILE")]
    pub mock_usage_file: Option<PathBuf>,
}

/// The `mock:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct File {
    /// Seconds a pod takes to start.
    pub start_latency: Option<f64>,
    /// Fraction (0..1) of creates that fail transiently.
    pub failure_rate: Option<f64>,
    /// Fraction (0..1) of creates answered "throttled, retry after 1 s".
    pub throttle_rate: Option<f64>,
    /// Node capacity, e.g. `cpu=100,memory=512Gi,pods=1000`.
    pub capacity: Option<String>,
    /// A file that keeps the backend's pods across restarts.
    pub state_file: Option<PathBuf>,
    /// While this file exists, the backend is unreachable.
    pub unreachable_file: Option<PathBuf>,
    /// A file `pods=N`: how many pods of the quota others use.
    pub usage_file: Option<PathBuf>,
}

/// Capacity of the node when none is configured.
const DEFAULT_CAPACITY: &str = "cpu=1000,memory=4Ti,pods=10000";

impl Kind for Mock {
    const NAME: &'static str = "mock";
    const SECTION: &'static str = "mock";
    type Args = Args;
    type File = File;
    type Config = Config;
    type Provider = MockProvider;

    fn configure(args: Args, file: File, node: &NodeContext) -> Result<Config, ConfigError> {
        let start_latency = within(
            "mock-start-latency",
            args.mock_start_latency.or(file.start_latency),
            3600.0,
            " seconds",
        )?;
        let failure_rate = within(
            "mock-failure-rate",
            args.mock_failure_rate.or(file.failure_rate),
            1.0,
            "",
        )?;
        let throttle_rate = within(
            "mock-throttle-rate",
            args.mock_throttle_rate.or(file.throttle_rate),
            1.0,
            "",
        )?;
        let capacity = parse_capacity(
            "mock-capacity",
            args.mock_capacity
                .or(file.capacity)
                .as_deref()
                .unwrap_or(DEFAULT_CAPACITY),
        )?;
        Ok(Config {
            start_latency: Duration::from_secs_f64(start_latency),
            failure_rate,
            throttle_rate,
            capacity,
            state_file: args.mock_state_file.or(file.state_file),
            unreachable_file: args.mock_unreachable_file.or(file.unreachable_file),
            usage_file: args.mock_usage_file.or(file.usage_file),
            ip_block: Config::ip_block_of(&node.name),
        })
    }

    async fn build(config: Config, ctx: BuildContext) -> Result<MockProvider, BoxError> {
        Ok(MockProvider::new(config, ctx.sink))
    }
}

/// A setting of `0..=max` (0 when unset), or the error for `field`.
fn within(field: &str, value: Option<f64>, max: f64, unit: &str) -> Result<f64, ConfigError> {
    let value = value.unwrap_or(0.0);
    if (0.0..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("{value} is not within 0..{max}{unit}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    fn args(v: &[&str]) -> Args {
        T::try_parse_from(std::iter::once("skylet").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    fn file(yaml: &str) -> File {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn node() -> NodeContext {
        NodeContext {
            name: "skylet".into(),
            labels: Default::default(),
        }
    }

    fn configure(args: Args, file: File) -> Result<Config, ConfigError> {
        Mock::configure(args, file, &node())
    }

    #[test]
    fn defaults_are_usable() {
        let c = configure(Args::default(), File::default()).unwrap();
        assert_eq!(c.start_latency, Duration::ZERO);
        assert_eq!(c.failure_rate, 0.0);
        assert_eq!(c.capacity, Config::default().capacity);
        assert!(c.state_file.is_none() && c.unreachable_file.is_none());
    }

    #[test]
    fn flags_override_the_file() {
        let f = "start-latency: 2\nfailure-rate: 0.5\nstate-file: /tmp/s.json\n";
        let c = configure(Args::default(), file(f)).unwrap();
        assert_eq!(c.start_latency, Duration::from_secs(2));
        assert_eq!(c.failure_rate, 0.5);
        let c = configure(
            args(&["--mock-start-latency", "0.25", "--mock-state-file", "/x"]),
            file(f),
        )
        .unwrap();
        assert_eq!(c.start_latency, Duration::from_millis(250));
        assert_eq!(
            c.failure_rate, 0.5,
            "the file's value where no flag is given"
        );
        assert_eq!(c.state_file, Some(PathBuf::from("/x")));
    }

    #[test]
    fn unknown_file_keys_are_refused_with_their_name() {
        let err = serde_yaml_ng::from_str::<File>("start-latncy: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("start-latncy"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (flags, field, needle) in [
            (
                vec!["--mock-failure-rate", "2"],
                "mock-failure-rate",
                "2 is not within 0..1",
            ),
            (
                vec!["--mock-start-latency=-1"],
                "mock-start-latency",
                "not within 0..3600 seconds",
            ),
            (
                vec!["--mock-capacity", "cpu=1,pods=1"],
                "mock-capacity",
                "memory is missing",
            ),
        ] {
            let e = configure(args(&flags), File::default()).unwrap_err();
            assert_eq!(e.field, field, "{flags:?}");
            assert!(e.to_string().contains(needle), "{flags:?}: {e}");
        }
        let e = configure(Args::default(), file("capacity: cpu=lots,memory=1,pods=1")).unwrap_err();
        assert!(e.message.contains("not a quantity"), "{e}");
    }
}
