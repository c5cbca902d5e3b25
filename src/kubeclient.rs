//! The home cluster's client: kube's own layers over a connection pool
//! whose idle connections close after [`IDLE_TIMEOUT`].
//!
//! `kube::Client::try_from(Config)` builds hyper-util's pool with its
//! defaults: a 90 s idle timeout, but no timer to enforce it (hyper-util
//! needs `pool_timer` for that), so an idle connection closed only when
//! the pool happened to look at it. skylet writes up to
//! `--status-concurrency` (256) statuses at once over HTTP/1.1, one
//! connection each, so after a burst of pods those connections stayed open
//! and idle: about 14 MB of buffers and TLS state at 10,000 pods
//! (BENCHMARKS.md), and as many idle connections held open on the
//! apiserver. Limiting the idle connections kept (client-go keeps 25 per
//! host, over HTTP/2) was tried and dropped: under a burst every write
//! beyond the 25 opened a new TLS connection, which doubled skylet's CPU per
//! pod. So every connection is kept while it is in use, and closed once it
//! has been idle for [`IDLE_TIMEOUT`] (the node's lease, renewed every
//! 10 s, keeps one warm). Everything else is kube's stack as `try_from`
//! assembles it for skylet's features (rustls, no proxy, no gzip): the
//! same connector and timeouts, base URI, retry of 429/503/504,
//! authentication and extra headers, from kube's public layers. A
//! kubeconfig with a proxy goes to `try_from` as before (which refuses it:
//! skylet is built without kube's proxy features).

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use kube::client::{ConfigExt, retry::RetryPolicy};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// How long an idle connection is kept open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for `config` whose idle connections close after
/// [`IDLE_TIMEOUT`].
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    client_idle(config, IDLE_TIMEOUT)
}

/// [`client`] with idle connections closed after `idle`.
fn client_idle(config: kube::Config, idle: Duration) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool = HttpClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok(kube::Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use hyper::{Response, body::Incoming, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;

    use super::*;

    /// A plain-HTTP server on loopback that answers every request with an
    /// empty NamespaceList after 200 ms, and counts its open connections.
    async fn server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (count, peak) = (open.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let open = count.clone();
                peak.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let answer = service_fn(|_req: hyper::Request<Incoming>| async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let body = r#"{"apiVersion":"v1","kind":"NamespaceList","metadata":{},"items":[]}"#;
                        Ok::<_, std::convert::Infallible>(Response::new(body.to_string()))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), answer)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open, most)
    }

    #[tokio::test]
    async fn a_burst_keeps_its_connections_while_busy_and_closes_them_once_idle() {
        let (url, open, most) = server().await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = client_idle(config, Duration::from_millis(500)).unwrap();
        let api: Api<Namespace> = Api::all(client);
        let lp = kube::api::ListParams::default();
        for _ in 0..2 {
            let burst = (0..100).map(|_| api.list(&lp));
            for r in futures::future::join_all(burst).await {
                r.expect("the client works");
            }
        }
        let opened = most.load(Ordering::SeqCst);
        assert!(
            (2..=100).contains(&opened),
            "two bursts of 100 at once use at most 100 connections, kept between them: {opened}"
        );
        // the pool's timer closes them once idle (within two timeouts)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "idle connections left open after the idle timeout"
        );
    }
}
