//! Graceful shutdown: stop accepting on SIGTERM or Ctrl-C, let in-flight
//! requests finish, and give up on them after a deadline.

use std::{
    future::Future,
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

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

/// What an HTTP listener allows one client (`gateway.request_head_timeout`,
/// `gateway.max_connections_per_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head (request line and headers) not complete within this
    /// closes the connection, and so does a keep-alive connection idle for
    /// this long: slow clients cannot hold sockets (slowloris). Like
    /// HAProxy's `timeout http-request`.
    pub head_timeout: Duration,
    /// Open connections per client address; one more is closed at once.
    pub max_connections_per_client: usize,
    /// The longest pause within a request body: a body that stalls longer
    /// fails its request (408), and a slow but steady upload goes on.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            max_connections_per_client: 256,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Open connections per client address.
type PerClient = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// A client's connection slot, given back when the connection ends.
struct Slot(PerClient, std::net::IpAddr);

impl Slot {
    fn take(clients: &PerClient, ip: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut open = clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self(clients.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves an axum router on `listener` until `shutdown`, then drains, with
/// `limits` on each client, over TLS when `tls` is given. Handlers can read
/// the peer's address as `axum::extract::ConnectInfo<SocketAddr>`, and the
/// client certificate of a TLS connection as [`crate::tls::PeerCertificate`].
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: Shutdown,
    grace: Duration,
    limits: HttpLimits,
    tls: Option<crate::tls::ServerTls>,
) -> io::Result<()> {
    use hyper_util::server::graceful::GracefulShutdown;

    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.head_timeout);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let clients = PerClient::default();
    let signal = shutdown.clone();
    let server = async move {
        // Owned by this future: when the drain deadline drops it, every
        // connection still running is aborted with it, not left behind.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                () = signal.cancelled() => break,
            };
            let Some(slot) = Slot::take(&clients, peer.ip(), limits.max_connections_per_client) else {
                tracing::debug!(client = %peer.ip(), "connection refused: too many open from this address");
                continue;
            };
            // Answers go out as soon as they are written, not after the
            // peer's delayed ACK (Nagle's algorithm holds back a small second write).
            let _ = tcp.set_nodelay(true);
            let (app, builder, watcher, tls) = (app.clone(), builder.clone(), graceful.watcher(), tls.clone());
            connections.spawn(async move {
                // The protocol is told by the first bytes, which hyper waits
                // for without a timer: a client that sends none gets the
                // head's time to start.
                let mut first = [0u8; 1];
                if !matches!(tokio::time::timeout(limits.head_timeout, tcp.peek(&mut first)).await, Ok(Ok(1..))) {
                    return;
                }
                match tls {
                    None => serve_watched(&builder, watcher, tcp, app, peer, None, limits.body_timeout).await,
                    Some(tls) => {
                        // The handshake is part of the head: the same time.
                        let Ok(Ok((stream, cert))) = tokio::time::timeout(limits.head_timeout, tls.accept(tcp)).await
                        else {
                            return;
                        };
                        serve_watched(&builder, watcher, stream, app, peer, cert, limits.body_timeout).await;
                    }
                }
                drop(slot);
            });
        }
        // Stop listening, then let open connections finish their requests.
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    };
    drain(server, shutdown, grace).await
}

/// The next connection on `listener`. A failed accept (out of file
/// descriptors, say) is logged and tried again after a pause rather than
/// in a spin.
async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection's requests ([`serve_connection`]); a request head that
/// timed out once some of it had arrived is answered 408 problem+json
/// (HAProxy's `timeout http-request`), an idle keep-alive connection is
/// closed without a word.
async fn serve_watched<IO>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    app: axum::Router,
    peer: std::net::SocketAddr,
    cert: Option<crate::tls::PeerCertificate>,
    body_timeout: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let watched = Watched { io: Arc::new(Mutex::new(io)), pending: Arc::new(AtomicBool::new(false)) };
    let (io, pending) = (watched.io.clone(), watched.pending.clone());
    let served = serve_connection(builder, watcher, watched, app, peer, cert, body_timeout).await;
    // hyper has dropped its handle on the connection by now (an upgraded
    // one keeps it, and gets no 408).
    if let Err(err) = served
        && pending.load(Ordering::Relaxed)
        && err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
        && let Ok(io) = Arc::try_unwrap(io)
    {
        request_timeout(io.into_inner().unwrap_or_else(PoisonError::into_inner)).await;
    }
}

/// One connection's requests, each told its peer's address and client
/// certificate, its body cut off when it stalls for `body_timeout`.
async fn serve_connection<IO>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    app: axum::Router,
    peer: std::net::SocketAddr,
    cert: Option<crate::tls::PeerCertificate>,
    body_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service = app.map_request(move |request: http::Request<hyper::body::Incoming>| {
        let mut request = request.map(|body| tower_http::timeout::TimeoutBody::new(body_timeout, body));
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        if let Some(cert) = cert {
            request.extensions_mut().insert(cert);
        }
        request
    });
    let connection = builder.serve_connection_with_upgrades(
        hyper_util::rt::TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(service),
    );
    watcher.watch(connection.into_owned()).await
}

/// A connection (TCP or TLS) that notes whether bytes of a request arrived
/// since the last answer was written, and is shared so that it can still
/// be answered once hyper gives up on it. The lock is never contended:
/// hyper drives the connection, and the 408 is written after hyper is done.
struct Watched<IO> {
    io: Arc<Mutex<IO>>,
    pending: Arc<AtomicBool>,
}

impl<IO> Watched<IO> {
    fn io(&self) -> std::sync::MutexGuard<'_, IO> {
        self.io.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.io()).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.pending.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut *self.io()).poll_write(cx, data);
        if matches!(polled, std::task::Poll::Ready(Ok(1..))) {
            self.pending.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut *self.io()).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(1..))) {
            self.pending.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io().is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.io()).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.io()).poll_shutdown(cx)
    }
}

/// Answers 408 problem+json on a connection whose request head took too
/// long, then closes it; a client that does not read gets a second at most.
async fn request_timeout<IO: tokio::io::AsyncWrite + Unpin>(mut socket: IO) {
    use tokio::io::AsyncWriteExt;
    let problem = crate::problem::Problem::new(
        http::StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "Request timeout",
        "the request head did not arrive in time",
    );
    let body = serde_json::to_string(&problem).unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.write_all(answer.as_bytes()).await?;
        socket.shutdown().await
    })
    .await;
}

/// Serves gRPC `routes` on `listener` until `shutdown`, then drains; over
/// TLS when `tls` is given (`[internal.tls]`).
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: Shutdown,
    grace: Duration,
    tls: Option<crate::tls::ServerTls>,
) -> io::Result<()> {
    let signal = shutdown.clone();
    let stopped = async move { signal.cancelled().await };
    // HTTP/1.1 too, for Prometheus scraping `GET /metrics` on a gRPC port.
    let server = tonic::transport::Server::builder().accept_http1(true).add_routes(routes);
    match tls {
        None => {
            // An HTTP/2 answer is several frames written one after the other
            // (headers, data, trailers): without TCP_NODELAY the later ones wait for
            // the peer's delayed ACK, milliseconds per call (measured: four tiers on
            // one core served 600 catalogue pages/s, the core mostly idle).
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = server.serve_with_incoming_shutdown(incoming, stopped);
            drain(async move { server.await.map_err(io::Error::other) }, shutdown, grace).await
        }
        Some(tls) => {
            let incoming = tls_incoming(listener, tls, shutdown.clone());
            let server = server.serve_with_incoming_shutdown(incoming, stopped);
            drain(async move { server.await.map_err(io::Error::other) }, shutdown, grace).await
        }
    }
}

/// How long a TLS handshake between tiers may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections accepted on `listener` once their TLS handshake is done.
/// Each handshake runs in its own task, so a slow or failing client holds
/// up no other; a failed one is logged (a tier without the right
/// certificate is a deployment error an operator must see).
fn tls_incoming(
    listener: tokio::net::TcpListener,
    tls: crate::tls::ServerTls,
    stop: Shutdown,
) -> impl futures_util::Stream<Item = io::Result<TlsConnection>> {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                () = stop.cancelled() => return,
                () = connections.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (tls, connections) = (tls.clone(), connections.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok((stream, _))) => {
                        let _ = connections.send(Ok(TlsConnection(stream))).await;
                    }
                    Ok(Err(err)) => tracing::warn!(client = %peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::warn!(client = %peer, "TLS handshake did not finish in time"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// A gRPC connection over TLS, as tonic's server takes it.
struct TlsConnection(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(self.0.get_ref().0)
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
