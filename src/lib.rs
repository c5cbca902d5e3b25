//! skylet: a virtual kubelet.
//!
//! [`run`] registers a Node, keeps its Lease and conditions fresh, reconciles
//! every pod bound to it through a [`Provider`], and serves the kubelet API,
//! until the shutdown token is cancelled.

use std::sync::Arc;

use kube::Client;
use skylet_provider::{Backoff, NodeContext, Provider, SinkReceiver, metrics::BackendApiMetrics};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod backends;
pub mod config;
pub mod cost;
pub mod failover;
pub mod kubeclient;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod placement;
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
    /// A backend could not be built (credentials, clients).
    #[error("cannot start the {kind} backend")]
    Backend {
        kind: &'static str,
        source: skylet_provider::BoxError,
    },
    /// Placement (its webhook) could not start.
    #[error("failed to start placement")]
    Placement(#[source] placement::Error),
}

/// Backoff for every watch skylet keeps: 0.5 s doubling to at most 5 s with
/// up to 25% jitter. kube-runtime's default grows to 30 s, which would keep a
/// node NotReady for half a minute after an apiserver restart.
#[derive(Debug, Clone)]
pub(crate) struct WatchBackoff(Backoff);

pub(crate) fn watch_backoff() -> WatchBackoff {
    WatchBackoff(Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(5),
        0.25,
    ))
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
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

/// What the process gives the node of one backend.
pub struct NodeParts {
    /// A client of the home cluster.
    pub client: Client,
    /// The Node's settings.
    pub node: config::NodeConfig,
    /// The pod controller's settings.
    pub pods: config::PodsConfig,
    /// The kubelet API's settings.
    pub server: config::ServerConfig,
    /// The node's metrics.
    pub metrics: metrics::NodeMetrics,
    /// What its pods cost, when the backend has a price.
    pub meter: Option<cost::CostMeter>,
    /// The fleet's fail-overs.
    pub ledger: failover::Ledger,
    /// How the fleet reacts to full and failing backends.
    pub failover: config::FailoverConfig,
    /// The families of backend API metrics, shared by every backend.
    pub api_metrics: BackendApiMetrics,
    /// Cancelled on SIGTERM.
    pub shutdown: CancellationToken,
}

impl NodeParts {
    /// The node as a backend sees it before it starts.
    pub fn node_context(&self) -> NodeContext {
        NodeContext {
            name: self.node.name.clone(),
            labels: self.node.labels.clone(),
        }
    }
}

/// Runs skylet until `shutdown` is cancelled: the metrics endpoint, and
/// every configured backend's node.
///
/// # Errors
/// Only for failures at start (a backend cannot be built, the Node cannot be
/// registered, a port cannot be bound). Once running, transient failures are
/// retried and logged, never returned.
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    let mut metrics = metrics::Metrics::new();
    let api_metrics = BackendApiMetrics::register(metrics.registry_mut());
    let cost_metrics = cost::CostMetrics::register(metrics.registry_mut());
    let ledger = failover::Ledger::register(metrics.registry_mut());
    metrics.serve_unprefixed(cost_metrics.opencost_registry());
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
        client.clone(),
        shutdown.clone(),
    ));

    let mut nodes = tokio::task::JoinSet::new();
    for backend in config.backends {
        let mut labels = node::base_labels(&backend.node.name, backend.configured.kind());
        labels.extend(backend.node.labels.clone());
        let span = tracing::info_span!("node", node = %backend.node.name, provider = backend.configured.kind());
        let node_metrics = metrics.node(&backend.node.name, backend.configured.kind());
        let meter = backend.price.clone().map(|price| {
            let labels = cost::MeterLabels {
                backend: backend.node.name.clone(),
                kind: backend.configured.kind().into(),
                node: backend.node.name.clone(),
                region: backend.region.clone().unwrap_or_default(),
            };
            cost_metrics.meter(labels, price, cost::Config::default())
        });
        let parts = NodeParts {
            client: client.clone(),
            node: config::NodeConfig {
                labels,
                ..backend.node
            },
            pods: backend.pods,
            server: backend.server,
            metrics: node_metrics,
            meter,
            ledger: ledger.clone(),
            failover: config.failover.clone(),
            api_metrics: api_metrics.clone(),
            shutdown: shutdown.clone(),
        };
        let elector = config
            .leader_election
            .clone()
            .map(|le| leader::Elector::new(client.clone(), &parts.node.name, le));
        let start = backend.configured;
        nodes.spawn(
            async move {
                let Some(elector) = elector else {
                    return start.start(parts).await;
                };
                let lease = elector.lease_name().to_owned();
                let Some(leadership) = elector.lead(parts.shutdown.clone()).await else {
                    return Ok(());
                };
                fence_process(leadership.fence(), lease);
                let r = start.start(parts).await;
                leadership.release().await;
                r
            }
            .instrument(span),
        );
    }
    if let Some(placement) = config.placement {
        let run = placement::run(client.clone(), placement, shutdown.clone());
        nodes.spawn(
            async move { run.await.map_err(Error::Placement) }
                .instrument(tracing::info_span!("placement")),
        );
    }
    let mut result = Ok(());
    while let Some(r) = nodes.join_next().await {
        if let Ok(Err(e)) = r {
            // a node that cannot start stops the process: a partial fleet
            // would hide the error behind a Node that never appears
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    let _ = metrics_task.await;
    result
}

/// Ends the process the moment `fence` is lost: a replica that may no
/// longer lead must not write anything more, and its in-flight requests
/// die with it ([`leader`] explains the timings). The replica's pod is
/// restarted by its Deployment and competes again as a standby.
fn fence_process(fence: leader::Fence, lease: String) {
    tokio::spawn(async move {
        fence.lost().cancelled().await;
        tracing::error!(%lease, "leadership lost: stopping at once so that nothing is written after the deadline");
        std::process::exit(EXIT_LEADERSHIP_LOST);
    });
}

/// The exit code of a replica that lost its leadership.
pub const EXIT_LEADERSHIP_LOST: i32 = 75;

/// Runs the node of one backend until `parts.shutdown` is cancelled: the
/// Node and its Lease, the pod controller, the kubelet API, and the
/// backend's own background work ([`Provider::run`]); `events` is what the
/// backend reports through its [`skylet_provider::Sink`].
///
/// # Errors
/// As [`run`].
pub async fn run_node<P: Provider>(
    parts: NodeParts,
    provider: P,
    events: SinkReceiver,
) -> Result<()> {
    let NodeParts {
        client,
        node: mut node_config,
        pods: pods_config,
        server: server_config,
        metrics,
        meter,
        ledger,
        failover,
        shutdown,
        ..
    } = parts;
    // this process drives the node now (a standby never gets here)
    metrics.set_serving();
    if let Some(m) = &meter {
        tokio::spawn(m.clone().run(shutdown.clone()).in_current_span());
    }
    let signals = node::Signals::new(&failover);
    let provider = Arc::new(provider);
    let backend_task = {
        let provider = provider.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move { provider.run(shutdown).await }.instrument(tracing::info_span!("backend")),
        )
    };

    let reporting = pods::Reporting {
        metrics: metrics.clone(),
        signals: signals.clone(),
        meter,
        ledger,
    };
    let pods = pods::PodController::new(
        client.clone(),
        provider.clone(),
        pods_config,
        reporting,
        events,
    );
    let state = server::State::new(
        client.clone(),
        provider.clone(),
        pods.store(),
        server_config.clone(),
        metrics.clone(),
    );
    let server = server::Server::bind(state, &server_config)
        .await
        .map_err(Error::Server)?;
    // the node publishes the port actually bound (`--listen :0` picks one)
    node_config.port = server.local_addr().port();

    let node = node::NodeController::new(
        client.clone(),
        provider.clone(),
        node_config,
        &failover,
        signals,
        metrics,
    );
    register(&node, &shutdown).await?;
    tracing::info!(addr = %server.local_addr(), "skylet running");

    let server_task = tokio::spawn(server.serve(shutdown.clone()).in_current_span());
    let node_task = tokio::spawn(node.clone().run(shutdown.clone()).in_current_span());
    pods.run(shutdown.clone()).await;

    // pods.run returns once shutdown was requested; wait for the rest.
    let _ = server_task.await;
    let _ = node_task.await;
    let _ = backend_task.await;
    node.on_shutdown().await;
    Ok(())
}
