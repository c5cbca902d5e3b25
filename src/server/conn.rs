//! Accepting and serving connections under the [`Limits`]: the connection
//! limit, TCP keep-alive, the TLS handshake, HTTP/1.1 and HTTP/2 with their
//! header limits and timeouts, and closing connections left idle.
//!
//! # Design
//!
//! [`serve`] accepts in a loop. A connection takes a permit of a semaphore
//! of [`Limits::max_connections`] or is closed at once; the permit travels
//! inside the connection's I/O object ([`Held`]), so an upgraded exec or
//! port-forward session, which owns that object after hyper hands it over,
//! keeps its permit until it ends. Each connection is served by one task:
//! TLS (when configured) under [`Limits::tls_handshake_timeout`], then hyper's
//! automatic HTTP/1.1-or-HTTP/2 connection with upgrades. The task counts the
//! requests in flight (until their response body ends, see [`InFlight`]) and
//! shuts the connection down gracefully once none has been in flight for
//! [`Limits::idle_timeout`], or when the server stops.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Body,
    extract::{Request, State as AxState},
    middleware::{self, Next},
    response::Response,
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tracing::Instrument;

use super::{
    auth,
    limits::{Limits, enabled},
};

/// How long open connections get to finish once the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a connection told to shut down (idle, or the server stopping)
/// gets to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections on `listener` and serves `app` on each, over TLS
/// when `tls` is given, until `shutdown`; then gives open connections a few
/// seconds.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let conns = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // out of file descriptors, mostly: wait for some to close
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "connection limit reached, connection closed");
            drop(tcp);
            continue;
        };
        keep_alive(&tcp, limits.tcp_keepalive);
        let conn = connection(
            tcp,
            peer,
            permit,
            tls.clone(),
            app.clone(),
            Arc::clone(&limits),
            shutdown.clone(),
        );
        conns.spawn(conn.in_current_span());
    }
    conns.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), conns.wait()).await;
}

/// Turns on TCP keep-alive probes, so that a peer that vanished without
/// closing (a partition, a powered-off machine) is noticed.
fn keep_alive(tcp: &TcpStream, every: Duration) {
    let Some(every) = enabled(every) else {
        return;
    };
    let params = socket2::TcpKeepalive::new()
        .with_time(every)
        .with_interval(every);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
        tracing::debug!(error = %e, "cannot turn TCP keep-alive on");
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    let Some(acceptor) = tls else {
        serve_connection(tcp, permit, app, &limits, &stop).await;
        return;
    };
    let handshake = acceptor.accept(tcp);
    let tls = match enabled(limits.tls_handshake_timeout) {
        Some(t) => tokio::time::timeout(t, handshake).await,
        None => Ok(handshake.await),
    };
    let tls = match tls {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(auth::identity_from_cert);
    let app = app.layer(Extension(auth::PeerCert(identity)));
    serve_connection(tls, permit, app, &limits, &stop).await;
}

/// Serves HTTP on one connection (see the module docs).
pub(crate) async fn serve_connection<I>(
    io: I,
    permit: OwnedSemaphorePermit,
    app: Router,
    limits: &Limits,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let in_flight = InFlight::new();
    let app = app.layer(middleware::from_fn_with_state(
        in_flight.clone(),
        count_in_flight,
    ));
    let svc = TowerToHyperService::new(
        app.map_request(|r: Request<hyper::body::Incoming>| r.map(Body::new)),
    );
    let builder = builder(limits);
    let io = Held {
        io,
        _permit: permit,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = async {
        match enabled(limits.idle_timeout) {
            Some(d) => in_flight.idle_for(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        () = stop.cancelled() => {}
        () = idle => tracing::debug!("connection idle, closing it"),
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// hyper's connection builder with the limits applied.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(enabled(limits.header_read_timeout))
        // hyper answers 431 once the request line and headers fill the
        // read buffer, or exceed the header count
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_http2_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The smallest read buffer hyper accepts (it panics below it).
const MIN_HTTP1_BUFFER: usize = 8192;

/// A connection's I/O holding its connection permit.
struct Held<I> {
    io: I,
    _permit: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Held<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Held<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The requests in flight on a connection, and when the last one ended.
#[derive(Clone)]
struct InFlight(Arc<watch::Sender<(usize, Instant)>>);

impl InFlight {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new((0, Instant::now()))))
    }

    fn enter(&self) -> InFlightGuard {
        self.0.send_modify(|(n, _)| *n += 1);
        InFlightGuard(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            let (n, since) = *rx.borrow_and_update();
            if n == 0 {
                tokio::select! {
                    () = tokio::time::sleep_until(since + idle) => return,
                    _ = rx.changed() => {}
                }
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// One request in flight, until dropped.
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0
            .0
            .send_modify(|(n, since)| (*n, *since) = (n.saturating_sub(1), Instant::now()));
    }
}

/// Counts a request in flight until its response body is done.
async fn count_in_flight(
    AxState(in_flight): AxState<InFlight>,
    req: Request,
    next: Next,
) -> Response {
    let guard = in_flight.enter();
    next.run(req).await.map(|body| {
        Body::new(Guarded {
            body,
            _guard: guard,
        })
    })
}

/// A response body holding its request's [`InFlightGuard`].
struct Guarded {
    body: Body,
    _guard: InFlightGuard,
}

impl HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
