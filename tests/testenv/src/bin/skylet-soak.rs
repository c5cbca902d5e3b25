//! `hack/soak`'s driver: the soak of [`skylet_testenv::soak`] for a given
//! time, on the skylet binary `$SKYLET_BIN`.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use skylet_testenv::soak::{SoakPlan, soak};

/// An hour (by default) of churn with leader kills and API faults on the
/// simulated backend, ECS on moto and ACI on the emulator.
#[derive(Parser, Debug)]
struct Args {
    /// Minutes of churn.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Seconds between creates (and deletes) of each lane.
    #[arg(long, default_value_t = 2.0)]
    churn: f64,
    /// Pods each lane keeps.
    #[arg(long, default_value_t = 30)]
    window: usize,
    /// Minutes between leader kills of each lane.
    #[arg(long, default_value_t = 12.0)]
    kill_every: f64,
    /// Share of the ECS and ACI requests that get a fault.
    #[arg(long, default_value_t = 0.1)]
    faults: f64,
    /// Seconds between resource samples.
    #[arg(long, default_value_t = 10.0)]
    sample: f64,
    /// Seed of the fault draws.
    #[arg(long, default_value_t = 1515)]
    seed: u64,
    /// Where samples.csv and report.txt go.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    assert!(
        std::env::var_os("SKYLET_BIN").is_some(),
        "set SKYLET_BIN to the skylet binary (hack/soak does)"
    );
    let secs = Duration::from_secs_f64;
    let plan = SoakPlan {
        duration: secs(a.minutes * 60.0),
        churn: secs(a.churn),
        window: a.window,
        kill_every: secs(a.kill_every * 60.0),
        faults: a.faults,
        sample: secs(a.sample),
        seed: a.seed,
        out: a.out,
    };
    let bin = skylet_testenv::backends::skylet_bin();
    soak(&bin, &plan).await;
}
