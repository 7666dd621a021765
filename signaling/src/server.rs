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

use crate::guard::{GuardedIo, PerIpSlots, TimedBody};
use crate::service::handle;
use crate::state::AppState;

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
    let bounds = state.config.http;
    let per_ip = PerIpSlots::new(bounds.connections_per_ip_max);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read)
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
        let Some(ip_slot) = per_ip.try_acquire(peer.ip()) else {
            state.metrics.http_connections_refused.inc();
            refuse_connection(&stream, bounds.connections_per_ip_max);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The local address the client reached: the media candidate's default IP.
        let local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        let (stream, connection) = GuardedIo::new(stream, bounds.write_stall);
        let service_state = state.clone();
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let mut request = request.map(|body| TimedBody::new(body, bounds));
            request.extensions_mut().insert(connection.clone());
            handle(service_state.clone(), peer, local, request)
        });
        let closing = closing_rx.clone();
        let http = http.clone();
        let tls = tls.clone();
        let open = OpenConnection::new(&state);
        tokio::spawn(async move {
            let _slot = (permit, ip_slot, open);
            match tls {
                None => drive(&http, stream, service, closing, peer).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(peer = %crate::redact::tag(&peer.ip().to_string()), error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %crate::redact::tag(&peer.ip().to_string()), "TLS handshake timed out");
                            return;
                        }
                    };
                    drive(&http, stream, service, closing, peer).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for in-flight requests and closing WebSockets");
    let _ = closing_tx.send(true);
    // WebSockets outlive their HTTP connection (the upgrade hands the socket over): they
    // close with 1001 on their own signal, and are waited for like connections.
    state.begin_shutdown();
    // Every open connection holds one permit; all permits back means all connections done.
    let all = HTTP_CONNECTIONS_MAX as u32;
    let drained = async {
        let _ = connections.acquire_many(all).await;
        state.lifecycle.sockets_closed().await;
    };
    tokio::select! {
        () = drained => Ok(()),
        () = tokio::time::sleep(grace) => Err(ServeError::GraceExpired(grace)),
    }
}

/// Answers a connection over its address's limit with a `429` and closes it, without
/// waiting for the client (a full socket buffer just loses the answer).
fn refuse_connection(stream: &tokio::net::TcpStream, max: usize) {
    let body = format!(
        r#"{{"code":"too_many_connections","message":"this address already holds {max} connections","retryable":true}}"#
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
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
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::Body>,
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
        tracing::debug!(peer = %crate::redact::tag(&peer.ip().to_string()), error = %err, "connection ended with an error");
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
