//! Benchmarks of skylet against its peers (kwok, virtual-kubelet's mock
//! provider) and against the apiserver's own ceiling.
//!
//! The crate has two binaries, driven by `hack/bench`:
//!
//! - `skylet-bench`: the load generator and measurer (`run`: creates pods or a
//!   Deployment, watches them to Running, holds, deletes, samples the RSS and
//!   CPU of named processes from `/proc`) and the audit-log counter (`audit`:
//!   apiserver requests per user, user agent, verb and resource in the time
//!   windows of a run).
//! - `bench-ceiling`: a minimal node agent that does exactly the writes a node
//!   must do (register a Node, renew its Lease, one status patch per pod to
//!   Running, one final delete per deleted pod) at full concurrency.
//!
//! This library holds what both share: clients, clocks, percentiles, `/proc`
//! sampling and the audit-log reader.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

pub mod audit;
pub mod procstat;
pub mod stats;

/// A client for the kubeconfig at `path` (no client-side rate limit: kube-rs
/// has none).
pub async fn client_from(path: &Path) -> anyhow::Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Wall-clock time in seconds since the Unix epoch, the clock the apiserver's
/// audit log uses, so that windows of a run can be matched against it.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Splits `key=value`.
pub fn key_value(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}
