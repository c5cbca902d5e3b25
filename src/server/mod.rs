//! The kubelet API on port 10250 (axum over rustls): what kube-apiserver,
//! metrics-server and monitoring call on a node.
//!
//! | route | |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /pods`, `GET /runningpods/` | the pods bound to this node |
//! | `GET /containerLogs/{ns}/{pod}/{container}` | logs, with every kubelet option, streamed |
//! | `GET /stats/summary` | the Summary API (metrics-server before 0.6, dashboards) |
//! | `GET /metrics/resource` | resource metrics (metrics-server, `kubectl top`) |
//!
//! Every request is authenticated (client certificate, or bearer token by
//! TokenReview) and authorized (SubjectAccessReview on `nodes/<subresource>`),
//! as the kubelet does; see [`auth`]. Before that, every request and
//! connection is held to the [`Limits`]: header and body sizes, connections
//! and streams at once, and timeouts for slow, idle and long-running
//! clients ([`limits`] lists them with the kubelet's).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, middleware, routing::get};
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, runtime::reflector::Store};
use skylet_provider::Provider;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::ServerConfig, metrics::NodeMetrics, pods::PodRecord, tls};

pub mod auth;
mod conn;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
mod logs;
mod pods;
mod stats;
mod streaming;

pub use auth::Identity;
pub use limits::Limits;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TLS setup failed.
    #[error("TLS setup failed")]
    Tls(#[from] tls::Error),
    /// The port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What handlers share.
pub struct State<P> {
    pub(crate) client: Client,
    pub(crate) provider: Arc<P>,
    pub(crate) pods: Store<PodRecord>,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: NodeMetrics,
    pub(crate) auth: auth::Authenticator,
    pub(crate) started: jiff::Timestamp,
    pub(crate) limits: Arc<Limits>,
}

impl<P: Provider> State<P> {
    /// State over a client, the provider and the pod store, with the
    /// default [`Limits`] but the configured stream idle timeout.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        pods: Store<PodRecord>,
        config: ServerConfig,
        metrics: NodeMetrics,
    ) -> Arc<Self> {
        let limits = Limits {
            stream_idle_timeout: config.streaming_idle_timeout,
            ..Limits::default()
        };
        Self::with_limits(client, provider, pods, config, metrics, limits)
    }

    /// State with the given limits.
    pub fn with_limits(
        client: Client,
        provider: Arc<P>,
        pods: Store<PodRecord>,
        config: ServerConfig,
        metrics: NodeMetrics,
        limits: Limits,
    ) -> Arc<Self> {
        let auth = auth::Authenticator::new(
            client.clone(),
            config.node_name.clone(),
            config.anonymous_auth,
        );
        Arc::new(Self {
            client,
            provider,
            pods,
            config,
            metrics,
            auth,
            started: jiff::Timestamp::now(),
            limits: Arc::new(limits),
        })
    }

    /// The pod `ns/name` if it is bound to this node.
    pub(crate) fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
            .map(|r| r.pod())
    }
}

/// The kubelet API routes, without TLS: tests drive it with `oneshot`,
/// putting an [`Identity`] into the request extensions (no identity:
/// unauthenticated). The request limits apply here, the connection limits
/// in [`Server`].
pub fn router<P: Provider>(state: Arc<State<P>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods::pods::<P>))
        .route("/runningpods/", get(pods::running::<P>))
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            get(logs::logs::<P>),
        )
        .route("/stats/summary", get(stats::summary::<P>))
        .route("/metrics/resource", get(stats::resource_metrics::<P>))
        .route(
            "/exec/{*rest}",
            get(streaming::exec::<P>).post(streaming::exec::<P>),
        )
        .route(
            "/attach/{*rest}",
            get(streaming::attach::<P>).post(streaming::attach::<P>),
        )
        .route(
            "/portForward/{*rest}",
            get(streaming::port_forward::<P>).post(streaming::port_forward::<P>),
        )
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::middleware::<P>,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::guard::<P>,
        ))
        .with_state(state)
}

/// A bound kubelet API server.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Arc<Limits>,
    csr: Option<(Client, ServerConfig, Arc<tls::CertStore>)>,
    /// Without `--client-ca-file`: the client CA the cluster publishes.
    client_ca: Option<(Client, Arc<tls::ClientCa>)>,
}

impl Server {
    /// Binds the listen address and prepares TLS.
    pub async fn bind<P: Provider>(
        state: Arc<State<P>>,
        config: &ServerConfig,
    ) -> Result<Self, Error> {
        let (tls, store, client_ca) = tls::server_config(config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let csr = (config.serving_cert == crate::config::ServingCert::Csr)
            .then(|| (state.client.clone(), config.clone(), store));
        let client_ca = client_ca.map(|ca| (state.client.clone(), ca));
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            limits: Arc::clone(&state.limits),
            app: router(state),
            csr,
            client_ca,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown`, then gives open connections a few seconds.
    pub async fn serve(self, shutdown: CancellationToken) {
        if let Some((client, settings, store)) = self.csr {
            tokio::spawn(
                tls::csr_loop(client, settings, store, shutdown.clone()).in_current_span(),
            );
        }
        if let Some((client, ca)) = self.client_ca {
            tokio::spawn(tls::follow_client_ca(client, ca, shutdown.clone()).in_current_span());
        }
        conn::serve(
            self.listener,
            Some(self.acceptor),
            self.app,
            self.limits,
            shutdown,
        )
        .await;
    }
}
