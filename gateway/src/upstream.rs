//! Where the gateway sends a request once it is authorized: the experience
//! tier, either as a router in this process (`up`) or over HTTP or HTTPS
//! (`serve`, HTTPS with `[internal.tls]`).
//!
//! Either way the raw credential is removed and the verified principal is
//! attached: as a request extension in-process, as a gateway-signed header
//! over the network.
//!
//! Either way the hop is traced alike: an HTTP client span whose context
//! replaces whatever `traceparent` the caller sent.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderName, Request, StatusCode, Uri, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use platform::{
    principal::{self, Principal, PrincipalSigner},
    problem::Problem,
    telemetry,
};
use tower::ServiceExt;
use tracing::Instrument;

/// Errors reaching the experience tier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured address is not an absolute `http://host:port` URI
    /// (`https://` with TLS settings).
    #[error("invalid experience tier address {0:?}")]
    InvalidUrl(String),
    /// The principal could not be signed.
    #[error("signing the principal failed: {0}")]
    Sign(#[from] platform::principal::Error),
    /// The experience tier did not answer.
    #[error("experience tier unreachable: {0}")]
    Unreachable(#[from] hyper_util::client::legacy::Error),
    /// The experience tier did not answer in time.
    #[error("experience tier timed out")]
    Timeout,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Unreachable(_) => {
                tracing::warn!(error = %self, "experience tier unavailable");
                Problem::unavailable("the service is unavailable; retry later", 5).into_response()
            }
            Error::Timeout => {
                tracing::warn!(error = %self, "experience tier too slow");
                let mut problem = Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "Gateway timeout",
                    "the service did not answer in time; a retry with the same Idempotency-Key is safe",
                );
                // As for a 503: the contract tells clients when to come back.
                problem.retry_after = Some(1);
                problem.into_response()
            }
            err => {
                tracing::error!(error = %err, "forwarding failed");
                Problem::internal().into_response()
            }
        }
    }
}

/// The experience tier as seen from the gateway.
#[derive(Clone)]
pub enum Upstream {
    /// The experience router in this process, and the deadline of one
    /// forwarded request (as over HTTP: `gateway.upstream_timeout`).
    InProcess(Router, Duration),
    /// The experience tier over HTTP or HTTPS.
    Http(Box<HttpUpstream>),
}

/// The experience tier at `base`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct HttpUpstream {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// Scheme and authority of the experience tier.
    base: Uri,
    signer: PrincipalSigner,
    /// Deadline of one forwarded request.
    timeout: Duration,
}

/// Request headers that must never reach the experience tier, besides the
/// API key and a principal the caller made up: the bearer credential and
/// hop-by-hop headers.
const STRIPPED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Upstream {
    /// An HTTP upstream at `url` (e.g. `http://127.0.0.1:8090`), or with
    /// `tls` an HTTPS one (`https://experience.internal:8090`).
    pub fn http(
        url: &str,
        signer: PrincipalSigner,
        timeout: Duration,
        tls: Option<&platform::tls::ClientTls>,
    ) -> Result<Self, Error> {
        let base: Uri = url.parse().map_err(|_| Error::InvalidUrl(url.to_owned()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if base.scheme_str() != Some(scheme) || base.authority().is_none() {
            return Err(Error::InvalidUrl(url.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        let tls_config = match tls {
            Some(tls) => tls.config(),
            // Never used: the address is http://.
            None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|_| Error::InvalidUrl(url.to_owned()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        Ok(Upstream::Http(Box::new(HttpUpstream { client, base, signer, timeout })))
    }

    /// Sends `request` on behalf of `principal` (none for internal probes).
    pub async fn forward(&self, mut request: Request<Body>, principal: Option<Principal>) -> Result<Response, Error> {
        let headers = request.headers_mut();
        for name in STRIPPED.iter().chain(&telemetry::TRACE_HEADERS) {
            headers.remove(name);
        }
        headers.remove(crate::API_KEY);
        headers.remove(principal::HEADER);
        let server = match self {
            Upstream::InProcess(..) => None,
            Upstream::Http(http) => http.base.authority(),
        };
        let span = telemetry::http_client_span(request.method(), server);
        telemetry::inject(&span, request.headers_mut());
        let response = self.send(request, principal).instrument(span.clone()).await;
        match &response {
            Ok(response) => telemetry::record_http_status(&span, response.status()),
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        response
    }

    async fn send(&self, request: Request<Body>, principal: Option<Principal>) -> Result<Response, Error> {
        // The deadline runs from the request's last byte, as Envoy's route
        // timeout does: an order file arriving for minutes is not a slow
        // upstream (a body that stalls is cut off by the listener).
        let (request, sent) = notify_when_sent(request);
        let call = self.call(request, principal);
        tokio::pin!(call);
        tokio::select! {
            answer = &mut call => return answer,
            _ = sent => {}
        }
        let timeout = match self {
            Upstream::InProcess(_, timeout) => *timeout,
            Upstream::Http(http) => http.timeout,
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| Error::Timeout)?
    }

    async fn call(&self, mut request: Request<Body>, principal: Option<Principal>) -> Result<Response, Error> {
        match self {
            Upstream::InProcess(router, _) => {
                // The in-process hop must look like the HTTP one: a fresh
                // request. The gateway's own router left its path parameters
                // in the extensions, and axum appends the experience
                // router's to them, so `{id}` would arrive twice.
                *request.extensions_mut() = http::Extensions::new();
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Ok(router.clone().oneshot(request).await.unwrap_or_else(|never| match never {}))
            }
            Upstream::Http(http) => {
                let HttpUpstream { client, base, signer, .. } = http.as_ref();
                if let Some(principal) = principal {
                    request.headers_mut().insert(principal::HEADER, signer.sign(&principal)?);
                }
                let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
                let mut parts = base.clone().into_parts();
                parts.path_and_query = path.parse().ok();
                *request.uri_mut() = Uri::from_parts(parts).map_err(|_| Error::InvalidUrl(base.to_string()))?;
                Ok(client.request(request).await?.map(Body::new))
            }
        }
    }
}

/// `request`, and a signal that its body has been read to the end (or
/// failed, or was dropped): at once for a request without a body.
fn notify_when_sent(request: Request<Body>) -> (Request<Body>, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if http_body::Body::is_end_stream(request.body()) {
        let _ = tx.send(());
        return (request, rx);
    }
    (request.map(|inner| Body::new(NotifyEnd { inner, sent: Some(tx) })), rx)
}

/// A request body that tells when it has been read to the end.
struct NotifyEnd {
    inner: Body,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NotifyEnd {
    fn done(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl http_body::Body for NotifyEnd {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        // The end, or an error: either way nothing more is coming.
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
