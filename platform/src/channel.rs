//! How one tier reaches the next over gRPC.
//!
//! A [`GrpcChannel`] is either a real HTTP/2 connection (`serve` mode) or the
//! next tier's tonic router called in-process (`up` mode). Both go through
//! the same generated client and server, so protobuf encoding, status codes
//! and details are exercised identically; only the socket is skipped.
//!
//! [`with_authorization`] makes a channel present a credential on every
//! call, e.g. the service JWT the experience tier shows the process tier.
//!
//! When traces are exported, every call through a channel gets a gRPC
//! client span whose context travels as `traceparent` metadata
//! ([`crate::telemetry::grpc_client`]).

use std::{convert::Infallible, time::Duration};

use tonic::{body::Body, service::Routes, transport::Endpoint};
use tower::{ServiceExt, util::BoxCloneSyncService};

/// Transport error of a channel call (the callee's gRPC status travels in
/// the response, not here).
///
/// A named type rather than a bare `Box<dyn Error>`: boxed trait objects as
/// a service error trip the compiler's higher-ranked lifetime checks inside
/// `Send` futures.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TransportError(Box<dyn std::error::Error + Send + Sync>);

/// A gRPC transport usable by every generated client (`FooClient::new(ch)`).
pub type GrpcChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// Errors building a channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured address is not a valid URI.
    #[error("invalid upstream address {url:?}: {source}")]
    InvalidUrl {
        /// The address as configured.
        url: String,
        /// Why it was rejected.
        source: tonic::transport::Error,
    },
    /// An `https://` address without TLS settings, or an `http://` one
    /// with them (the next tier would not understand the other).
    #[error("upstream address {url:?}: {reason}")]
    Scheme {
        /// The address as configured.
        url: String,
        /// What does not fit.
        reason: &'static str,
    },
}

/// A lazily connecting HTTP/2 channel to `url`: `http://10.0.0.5:8082`, or
/// with `tls`, `https://process.internal:8082`.
///
/// Lazy, so a tier starts even while the next one is down; calls then fail
/// with `UNAVAILABLE` until it is back, and the connection is reused.
pub fn connect_lazy(url: &str, timeout: Duration, tls: Option<&crate::tls::ClientTls>) -> Result<GrpcChannel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| Error::InvalidUrl { url: url.to_owned(), source })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let server = endpoint.uri().authority().cloned();
    let https = endpoint.uri().scheme_str() == Some("https");
    let scheme = |reason| Error::Scheme { url: url.to_owned(), reason };
    let channel = match tls {
        None if https => return Err(scheme("https:// needs [internal.tls]: the CA to trust")),
        None => endpoint.connect_lazy(),
        Some(_) if !https => return Err(scheme("must be https:// with [internal.tls]: the next tier speaks TLS")),
        Some(tls) => {
            let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
            tcp.enforce_http(false);
            tcp.set_nodelay(true);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.config())
                .https_only()
                .enable_http2()
                .wrap_connector(tcp);
            endpoint.connect_with_connector_lazy(connector)
        }
    }
    .map_err(|e| TransportError(e.into()));
    Ok(crate::telemetry::grpc_client(BoxCloneSyncService::new(with_deadline(channel, timeout)), server))
}

/// Bounds each call by its deadline: the `grpc-timeout` its caller set
/// (`tonic::Request::set_timeout`: an order file's upload takes longer than
/// any other call), else `default`. The callee learns the deadline from the
/// same header and bounds its own calls by it. Past it the caller gets
/// `DEADLINE_EXCEEDED` and the call is dropped.
fn with_deadline<S>(
    inner: S,
    default: Duration,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = TransportError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = TransportError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tower::service_fn(move |mut request: http::Request<Body>| {
        let inner = inner.clone();
        async move {
            crate::deadline::with_grpc_timeout(request.headers_mut(), default);
            let deadline = request
                .headers()
                .get(crate::deadline::GRPC_TIMEOUT)
                .and_then(crate::deadline::parse_grpc_timeout)
                .unwrap_or(default);
            match tokio::time::timeout(deadline, inner.oneshot(request)).await {
                Ok(Ok(answer)) => Ok(answer),
                // Not reached, or the connection broke mid-call: UNAVAILABLE,
                // as the gRPC spec has it for transport failures (tonic says
                // UNKNOWN), so callers retry rather than fail the request (an
                // order's idempotency key makes the retry safe).
                Ok(Err(err)) => {
                    Ok(tonic::Status::unavailable(format!("the tier could not be reached: {err}")).into_http())
                }
                Err(_) => {
                    Ok(tonic::Status::deadline_exceeded("the tier did not answer within its deadline").into_http())
                }
            }
        }
    })
}

/// A channel that calls `routes` in this process, each call bounded by
/// `deadline` as a network channel's is by its timeout: past it the caller
/// gets `DEADLINE_EXCEEDED` and the callee's work is dropped. `up` mode
/// wires its tiers with these, so a slow tier costs a caller no more time
/// there than in `serve` mode.
pub fn in_process_with_deadline(routes: Routes, deadline: Duration) -> GrpcChannel {
    let svc = tower::ServiceExt::<http::Request<Body>>::map_err(routes, |never: Infallible| -> TransportError {
        match never {}
    });
    crate::telemetry::grpc_client(BoxCloneSyncService::new(with_deadline(svc, deadline)), None)
}

/// A channel that calls `routes` in this process.
pub fn in_process(routes: Routes) -> GrpcChannel {
    let svc = tower::ServiceExt::<http::Request<Body>>::map_err(routes, |never: Infallible| -> TransportError {
        match never {}
    });
    crate::telemetry::grpc_client(BoxCloneSyncService::new(svc), None)
}

/// `channel`, with an `authorization` header on every call set to what
/// `credential` returns at that moment.
///
/// `credential` runs on every call, so it should hand out a cached value
/// (a clone of a `HeaderValue` is a reference count) and refresh it now and
/// then, rather than mint or read a token each time.
pub fn with_authorization<F>(channel: GrpcChannel, credential: F) -> GrpcChannel
where
    F: Fn() -> http::HeaderValue + Clone + Send + Sync + 'static,
{
    BoxCloneSyncService::new(channel.map_request(move |mut request: http::Request<Body>| {
        request.headers_mut().insert(http::header::AUTHORIZATION, credential());
        request
    }))
}
