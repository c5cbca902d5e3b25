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
    Metrics { addr: std::net::SocketAddr, source: std::io::Error },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs skylet with `provider` until `shutdown` is cancelled.
///
/// # Errors
/// Only for failures at start (the Node cannot be registered, a port cannot
/// be bound). Once running, transient failures are retried and logged, never
/// returned.
pub async fn run<P: Provider>(config: Config, client: Client, provider: P, shutdown: CancellationToken) -> Result<()> {
    let provider = Arc::new(provider);
    let metrics = Arc::new(metrics::Metrics::new(provider.name()));

    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| Error::Metrics { addr: config.metrics_listen, source })?;
    let metrics_task = tokio::spawn(metrics::serve(metrics_listener, metrics.clone(), shutdown.clone()));

    let node = node::NodeController::new(client.clone(), provider.clone(), config.node.clone(), metrics.clone());
    node.register().await.map_err(Error::Node)?;

    let pods = pods::PodController::new(client.clone(), provider.clone(), config.pods.clone(), metrics.clone());
    let state = server::State::new(client.clone(), provider.clone(), pods.store(), config.server.clone(), metrics.clone());
    let server = server::Server::bind(state, &config.server).await.map_err(Error::Server)?;
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
