//! The accept loop: plain TCP or TLS, HTTP/1.1 with upgrades, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use openchat_core::limits::HTTP_CONNECTIONS_MAX;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::service::{AppState, handle};

/// A client must finish sending request headers within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// A client must finish the TLS handshake within this.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("in-flight requests did not finish within {0:?}")]
    GraceExpired(Duration),
}

/// Serves `listener` until `shutdown` resolves; then stops accepting, asks open connections
/// to close after their current request, and waits for them at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError> {
    // Flips to true once: every connection then finishes its current request and closes.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let connections = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // Wait for a connection slot first, so overload pauses accepting instead of
        // growing without bound.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The local address the client reached: the media candidate's default IP.
        let local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        let service_state = state.clone();
        let service = service_fn(move |request| handle(service_state.clone(), peer, local, request));
        let closing = closing_rx.clone();
        let http = http.clone();
        let tls = tls.clone();
        let open = OpenConnection::new(&state);
        tokio::spawn(async move {
            let _slot = (permit, open);
            match tls {
                None => drive(&http, stream, service, closing, peer).await,
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    drive(&http, stream, service, closing, peer).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for in-flight requests");
    let _ = closing_tx.send(true);
    // Every open connection holds one permit; all permits back means all connections done.
    let all = HTTP_CONNECTIONS_MAX as u32;
    tokio::select! {
        _ = connections.acquire_many(all) => Ok(()),
        () = tokio::time::sleep(grace) => Err(ServeError::GraceExpired(grace)),
    }
}

/// Serves one connection until it ends or, once `closing` flips, until its in-flight
/// request is answered.
async fn drive<I, S>(
    http: &http1::Builder,
    io: I,
    service: S,
    mut closing: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::service::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { drop(closing.wait_for(|closing| *closing).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Counts an open connection in `/metrics` for as long as it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(state: &AppState) -> Self {
        state.metrics.http_connections.inc();
        Self(state.metrics.http_connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
