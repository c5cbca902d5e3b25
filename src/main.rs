//! The `skylet` binary: configuration, telemetry, the home cluster's
//! client, and [`skylet::run`] until SIGTERM.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use skylet::Config;

/// jemalloc, built with background threads (the `background_threads` feature
/// of tikv-jemallocator): freed memory goes back to the system after its
/// decay time (10 s for dirty pages) even while skylet is idle, where
/// glibc's per-thread arenas kept what a burst of pods had freed. Without
/// the `jemalloc` feature, the system's allocator (for heap profilers).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration the user must fix (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// How long tasks get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skylet: {e}");
            eprintln!("skylet: see `skylet --help`; nothing was started");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // the one TLS crypto backend, before any client (the trace exporter's) is built
    let _ = rustls::crypto::ring::default_provider().install_default();
    // flushes the traces once the runtime below has stopped
    let _traces = match skylet::telemetry::init(config.log_format, config.otlp_endpoint.as_deref())
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!(
                "skylet: {e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    config.log_node_ip();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skylet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "skylet stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(&config).await?;
    let shutdown = skylet::shutdown::on_signal();
    let run = skylet::run(config, client, shutdown.clone());
    // Once shutdown is requested, everything gets SHUTDOWN_GRACE to finish.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = run => Ok(r?),
        () = deadline => anyhow::bail!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
}

async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    let mut kc = kc;
    if config.leader_election.is_some() {
        // each write of a leader is one request that ends before its
        // deadline, never a series of retries that could land after it
        kc.default_retry = false;
    }
    skylet::kubeclient::client(kc).context("cannot build a Kubernetes client")
}
