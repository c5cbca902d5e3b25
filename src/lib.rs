//! skylet: a virtual kubelet.
//!
//! [`run`] registers a Node, keeps its Lease and conditions fresh, reconciles
//! every pod bound to it through a [`Provider`], and serves the kubelet API,
//! until the shutdown token is cancelled.

use std::sync::Arc;

use kube::Client;
use skylet_provider::Provider;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::Config;

/// Why skylet stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Node could not be registered.
    #[error("failed to register the node")]
    Node(#[source] node::Error),
    /// The kubelet API server could not start.
    #[error("failed to start the kubelet API server")]
    Server(#[source] server::Error),
    /// The metrics server could not start.
    #[error("failed to start the metrics server on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Backoff for every watch skylet keeps: 0.5 s doubling to at most 5 s with
/// up to 25% jitter. kube-runtime's default grows to 30 s, which would keep a
/// node NotReady for half a minute after an apiserver restart.
#[derive(Debug, Clone)]
pub(crate) struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
}

pub(crate) fn watch_backoff() -> WatchBackoff {
    WatchBackoff {
        next: WatchBackoff::MIN,
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        Some(base + jitter)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Registers the Node, retrying while the apiserver is unreachable.
async fn register<P: Provider>(
    node: &node::NodeController<P>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut delay = node::REGISTER_RETRY;
    loop {
        match node.register().await {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_cancelled() => return Err(Error::Node(e)),
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), retry_in = ?delay, "node registration failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Err(Error::Node(e)),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs skylet with `provider` until `shutdown` is cancelled.
///
/// # Errors
/// Only for failures at start (the Node cannot be registered, a port cannot
/// be bound). Once running, transient failures are retried and logged, never
/// returned.
pub async fn run<P: Provider>(
    mut config: Config,
    client: Client,
    provider: P,
    shutdown: CancellationToken,
) -> Result<()> {
    let provider = Arc::new(provider);
    let mut metrics = metrics::Metrics::new(provider.name());
    provider.register_metrics(metrics.registry_mut());
    let metrics = Arc::new(metrics);

    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| Error::Metrics {
            addr: config.metrics_listen,
            source,
        })?;
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        metrics.clone(),
        shutdown.clone(),
    ));

    let pods = pods::PodController::new(
        client.clone(),
        provider.clone(),
        config.pods.clone(),
        metrics.clone(),
    );
    let state = server::State::new(
        client.clone(),
        provider.clone(),
        pods.store(),
        config.server.clone(),
        metrics.clone(),
    );
    let server = server::Server::bind(state, &config.server)
        .await
        .map_err(Error::Server)?;
    // the node publishes the port actually bound (`--listen :0` picks one)
    config.node.port = server.local_addr().port();

    let node = node::NodeController::new(
        client.clone(),
        provider.clone(),
        config.node.clone(),
        metrics.clone(),
    );
    register(&node, &shutdown).await?;
    tracing::info!(node = %config.node.name, provider = provider.name(), addr = %server.local_addr(), "skylet running");

    let server_task = tokio::spawn(server.serve(shutdown.clone()));
    let node_task = tokio::spawn(node.clone().run(shutdown.clone()));
    pods.run(shutdown.clone()).await;

    // pods.run returns once shutdown was requested; wait for the rest.
    let _ = server_task.await;
    let _ = node_task.await;
    let _ = metrics_task.await;
    node.on_shutdown().await;
    Ok(())
}
