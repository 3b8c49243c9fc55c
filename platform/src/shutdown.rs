//! Graceful shutdown: stop accepting on SIGTERM or Ctrl-C, let in-flight
//! requests finish, and give up on them after a deadline.

use std::{future::Future, io, time::Duration};

use tokio_util::sync::CancellationToken;

/// Triggered once, by a signal or by a test; every server watches it.
pub type Shutdown = CancellationToken;

/// A [`Shutdown`] that fires on SIGTERM or Ctrl-C.
pub fn on_signals() -> Shutdown {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining in-flight requests");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `server` (already told to shut down gracefully on `shutdown`) and,
/// once `shutdown` fires, waits at most `grace` for it to drain.
pub async fn drain<F>(server: F, shutdown: Shutdown, grace: Duration) -> io::Result<()>
where
    F: Future<Output = io::Result<()>>,
{
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(grace_secs = grace.as_secs(), "drain deadline passed; dropping the remaining requests");
            Ok(())
        }
    }
}

/// Serves an axum router on `listener` until `shutdown`, then drains.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: Shutdown,
    grace: Duration,
) -> io::Result<()> {
    use axum::serve::ListenerExt;
    let signal = shutdown.clone();
    // Answers go out as soon as they are written, not after the peer's
    // delayed ACK (Nagle's algorithm holds back a small second write).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move { signal.cancelled().await });
    drain(server.into_future(), shutdown, grace).await
}

/// Serves gRPC `routes` on `listener` until `shutdown`, then drains.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: Shutdown,
    grace: Duration,
) -> io::Result<()> {
    let signal = shutdown.clone();
    // An HTTP/2 answer is several frames written one after the other
    // (headers, data, trailers): without TCP_NODELAY the later ones wait for
    // the peer's delayed ACK, milliseconds per call (measured: four tiers on
    // one core served 600 catalogue pages/s, the core mostly idle).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // HTTP/1.1 too, for Prometheus scraping `GET /metrics` on a gRPC port.
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { signal.cancelled().await });
    drain(async move { server.await.map_err(io::Error::other) }, shutdown, grace).await
}
