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
//! as the kubelet does; see [`auth`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Extension, Router, extract::Request, middleware, routing::get};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, runtime::reflector::Store};
use skylet_provider::Provider;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{config::ServerConfig, metrics::NodeMetrics, tls};

pub mod auth;
pub mod error;
mod logs;
mod pods;
mod stats;
mod streaming;

pub use auth::Identity;

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
    pub(crate) pods: Store<Pod>,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: NodeMetrics,
    pub(crate) auth: auth::Authenticator,
    pub(crate) started: jiff::Timestamp,
}

impl<P: Provider> State<P> {
    /// State over a client, the provider and the pod store.
    pub fn new(
        client: Client,
        provider: Arc<P>,
        pods: Store<Pod>,
        config: ServerConfig,
        metrics: NodeMetrics,
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
        })
    }

    /// The pod `ns/name` if it is bound to this node.
    pub(crate) fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
    }
}

/// The kubelet API routes, without TLS: tests drive it with `oneshot`,
/// putting an [`Identity`] into the request extensions (no identity:
/// unauthenticated).
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
        .with_state(state)
}

/// A bound kubelet API server.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
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
        let conns = tokio_util::task::TaskTracker::new();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let app = self.app.clone();
            let stop = shutdown.clone();
            conns.spawn(
                async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(auth::identity_from_cert);
                    let app = app.layer(Extension(auth::PeerCert(identity)));
                    let svc = TowerToHyperService::new(app.map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                        () = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        }
                    }
                }
                .in_current_span(),
            );
        }
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(6), conns.wait()).await;
    }
}
