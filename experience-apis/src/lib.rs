//! The experience tier: REST shaped for one audience each. No business
//! rules live here; handlers call process APIs (gRPC) and shape the answer.
//!
//! # Layout
//! One module per audience:
//! - [`web`]: `/web/v1/...` for the web shop: products, the customer's orders.
//! - [`partner`]: `/partner/v1/...` for partners, confined to their tenant.
//! - [`mobile`]: `/mobile/v1/...` for the web shop's customers in the
//!   mobile app: compact answers, order status as server-sent events.
//! - [`ops`]: `/ops/v1/...` for operators: orders of every tenant, cash
//!   application, shipments; and the ops console at `/ops`.
//!
//! and what the audiences share:
//! - [`orders`]: the order JSON of the contract and the body of a new order.
//! - [`products`]: the catalogue JSON of the contract.
//! - [`webhooks`]: the webhook JSON partners and operators share.
//! - [`page`]: `page_size` and `page_token` of every list.
//! - [`body`]: JSON request bodies with size, type and field checks.
//! - [`extract`]: the caller, path ids and the `Idempotency-Key` header.
//! - [`error`]: the tier's error enum and its one conversion to problem+json.
//! - [`openapi`]: the OpenAPI 3.1 document of the public API.
//! - [`caching`]: `ETag`, `304 Not Modified` and `Cache-Control` on reads.
//! - [`router`]: the tier's HTTP routes, including `/healthz` and `/readyz`.
//!
//! The caller is always a [`platform::principal::Principal`] verified by the
//! gateway: put into the request's extensions in `up` mode, or carried in a
//! gateway-signed header in `serve` mode ([`require_signed_principal`]).

use std::time::Duration;

use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use erp_connect_proto::custom_fields::Definitions;
use platform::{
    channel::GrpcChannel,
    principal::{HEADER, PrincipalSigner},
    problem::Problem,
};
use serde::Deserialize;

pub mod body;
pub mod caching;
pub mod error;
pub mod extract;
pub mod mobile;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod page;
pub mod partner;
pub mod products;
pub mod web;
pub mod webhooks;

/// `[experience]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address in `serve` mode. Default `127.0.0.1:8090`.
    pub listen: std::net::SocketAddr,
    /// The process tier's gRPC address, in `serve` mode. Default `http://127.0.0.1:8081`.
    pub process_url: String,
    /// Deadline of one call to the process tier. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub process_timeout: Duration,
    /// File holding this tier's service JWT (`aud` `process-apis`) for the
    /// process tier in `serve` mode, e.g. a Kubernetes projected service
    /// account token; re-read every 30 s, so a rotated token is picked up.
    /// Required in production mode; dev mode mints one with the dev identity
    /// provider when unset.
    pub service_token_file: Option<std::path::PathBuf>,
    /// Where the ops console links an order's trace: a URL with
    /// `{trace_id}` in it, e.g. `https://tempo.example/trace/{trace_id}`.
    /// Default none: the console shows the trace id to copy.
    pub trace_url_template: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
            process_url: "http://127.0.0.1:8081".into(),
            process_timeout: Duration::from_secs(10),
            service_token_file: None,
            trace_url_template: None,
        }
    }
}

/// Clients of the process APIs, shared by every handler, and where the
/// ops console links traces.
#[derive(Clone)]
pub struct Upstreams {
    process: GrpcChannel,
    trace_url_template: Option<std::sync::Arc<str>>,
    pub(crate) custom_fields: std::sync::Arc<Definitions>,
    event_subject_prefix: std::sync::Arc<str>,
}

impl Upstreams {
    /// Process APIs reached through `process`.
    pub fn new(process: GrpcChannel) -> Self {
        Self {
            process,
            trace_url_template: None,
            custom_fields: Default::default(),
            event_subject_prefix: "erp.events".into(),
        }
    }

    /// The NATS subject prefix the AsyncAPI document names
    /// (`process.events.subject_prefix`).
    pub fn with_event_subject_prefix(mut self, prefix: &str) -> Self {
        self.event_subject_prefix = prefix.into();
        self
    }

    /// The deployment's custom fields (`[[erp.custom_fields]]`): which each
    /// audience sees and may set.
    pub fn with_custom_fields(mut self, definitions: Definitions) -> Self {
        self.custom_fields = std::sync::Arc::new(definitions);
        self
    }

    /// The ops console links traces with `template` ([`Config::trace_url_template`]).
    pub fn with_trace_url_template(mut self, template: Option<&str>) -> Self {
        self.trace_url_template = template.map(Into::into);
        self
    }
}

/// The tier's routes. Every audience route expects a verified principal in
/// the request's extensions.
pub fn router(upstreams: Upstreams) -> Router {
    Router::new()
        .nest("/web/v1", web::router())
        .nest("/mobile/v1", mobile::router())
        .nest("/partner/v1", partner::router())
        .nest("/ops/v1", ops::router())
        .route("/openapi.json", get(|| async { ([(http::header::CONTENT_TYPE, "application/json")], openapi::json()) }))
        .route("/asyncapi.json", get(asyncapi))
        .route("/docs", get(docs))
        .route("/ops", get(ops::console::page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(upstreams)
        // One `layer` call: axum boxes every route again on each.
        .layer(
            tower::ServiceBuilder::new()
                .layer(platform::metrics::http_layer(platform::metrics::Tier::Experience))
                // The span covers the tier's own layers.
                .layer(platform::telemetry::HttpTier { name: "experience", edge: false })
                .layer(platform::request_id::Layer)
                // gzip or brotli as the client accepts; never server-sent
                // events or bodies under 32 bytes (tower-http's default
                // predicate). Outside the ETag, which names the JSON itself.
                .map_response(|response: http::Response<_>| response.map(axum::body::Body::new))
                .layer(tower_http::compression::CompressionLayer::new())
                .layer(middleware::from_fn(caching::etag)),
        )
}

async fn readyz(State(upstreams): State<Upstreams>) -> Response {
    if platform::health::downstream_is_serving(upstreams.process.clone()).await {
        "ready".into_response()
    } else {
        Problem::unavailable("the process tier or one of its dependencies is down", 5).into_response()
    }
}

/// Routes anyone may call, without a principal: health for the
/// orchestrator's probes, the API's description for developers, the ops
/// console's page (its data needs an `ops` token).
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "/openapi.json", "/asyncapi.json", "/docs", "/ops"];

/// The AsyncAPI 3.0 document of every event, on NATS and as webhooks.
async fn asyncapi(State(upstreams): State<Upstreams>) -> Response {
    let doc = erp_connect_proto::events::asyncapi(&upstreams.event_subject_prefix);
    ([(http::header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// The API reference page: renders `/openapi.json` with nothing but itself
/// (no assets from the internet).
const DOCS_PAGE: &str = include_str!("docs.html");

/// The reference page may run its own inline script and style and fetch
/// from this origin only; nothing else.
async fn docs() -> Response {
    let policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";
    ([(http::header::CONTENT_SECURITY_POLICY, policy)], axum::response::Html(DOCS_PAGE)).into_response()
}

/// `serve` mode: accept only requests whose principal header the gateway
/// signed, and turn it into the extension the handlers read. The
/// [`PUBLIC_PATHS`] stay open.
pub fn require_signed_principal(router: Router, signer: PrincipalSigner) -> Router {
    router.layer(
        tower::ServiceBuilder::new()
            // Outermost, so that refusals carry a request id too.
            .layer(platform::request_id::Layer)
            .layer(middleware::from_fn_with_state(signer, verify_principal)),
    )
}

async fn verify_principal(State(signer): State<PrincipalSigner>, mut request: Request, next: Next) -> Response {
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let verified = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(|v| signer.verify(v));
    match verified {
        Some(Ok(principal)) => {
            request.headers_mut().remove(HEADER);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Some(Err(err)) => {
            tracing::warn!(error = %err, "request with a principal the gateway did not sign");
            Problem::unauthorized("the request did not come through the gateway").into_response()
        }
        None => Problem::unauthorized("the request did not come through the gateway").into_response(),
    }
}
