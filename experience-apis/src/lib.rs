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
//!   application, shipments, customer master data and data-subject
//!   requests; and the ops console at `/ops`.
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
//! - [`routes`]: the audiences' routes with the scope each needs, as the
//!   gateway's route table, read off the same declarations as the router
//!   and the OpenAPI document.
//!
//! The caller is always a [`platform::principal::Principal`] verified by the
//! gateway: put into the request's extensions in `up` mode, or carried in a
//! gateway-signed header in `serve` mode ([`require_signed_principal`]).

use std::{sync::LazyLock, time::Duration};

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
use utoipa_axum::router::OpenApiRouter;

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
    let (audiences, _) = audiences().split_for_parts();
    audiences
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

/// Every audience's routes, each with its operation in the API document.
fn audiences() -> OpenApiRouter<Upstreams> {
    OpenApiRouter::default()
        .nest("/web/v1", web::router())
        .nest("/mobile/v1", mobile::router())
        .nest("/partner/v1", partner::router())
        .nest("/ops/v1", ops::router())
}

/// The operations of [`audiences`], collected once.
pub(crate) fn audiences_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| audiences().into_openapi());
    &DOCUMENT
}

/// A route of this tier as the gateway must know it to forward it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The method, e.g. `POST`.
    pub method: http::Method,
    /// The path template, e.g. `/web/v1/orders/{id}`.
    pub path: String,
    /// The one scope a caller needs, e.g. `orders:read`.
    pub scope: String,
}

/// Every audience route with the scope it needs: the table the gateway
/// forwards by. Read off the handlers' `#[utoipa::path]`, like [`router`]'s
/// routes and the operations of [`openapi::json`], so the three cannot
/// disagree.
pub fn routes() -> Vec<Route> {
    openapi::routes(audiences_document())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use platform::principal::Principal;
    use tower::ServiceExt;

    use super::*;

    /// Every operation of the audiences, as (method, path).
    fn operations() -> BTreeSet<(String, String)> {
        let paths = serde_json::to_value(&audiences_document().paths).unwrap_or_default();
        let mut operations = BTreeSet::new();
        for (path, item) in paths.as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(method, _)| method) {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
        operations
    }

    #[test]
    fn every_operation_is_a_route_with_one_known_scope() {
        let routes = routes();
        let routed: BTreeSet<(String, String)> =
            routes.iter().map(|r| (r.method.as_str().to_owned(), r.path.clone())).collect();
        assert_eq!(routed.len(), routes.len(), "each route once");
        assert_eq!(routed, operations(), "an operation without exactly one scope is no route");
        for route in &routes {
            let known = ["catalog:read", "orders:read", "orders:write", "invoices:read", "webhooks:manage", "ops"];
            assert!(known.contains(&route.scope.as_str()), "{route:?}");
            let audience = route.path.split('/').nth(1).unwrap_or_default();
            assert!(["web", "mobile", "partner", "ops"].contains(&audience), "{route:?}");
        }
    }

    /// Each route reaches its handler: with the process tier down, the
    /// answer is the handler's (503, or a refusal of the empty request),
    /// never the router's 404 or 405.
    #[tokio::test]
    async fn the_router_answers_every_route() {
        let process = platform::channel::connect_lazy("http://127.0.0.1:1", Duration::from_secs(1), None)
            .expect("a channel to nowhere");
        let app = router(Upstreams::new(process));
        let principal =
            Principal { subject: "someone".into(), tenant: Some("acme".into()), scopes: Vec::new(), email: None };
        for route in routes() {
            let request = http::Request::builder()
                .method(route.method.clone())
                .uri(route.path.replace("{id}", "x_1"))
                .extension(principal.clone())
                .body(Body::empty())
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("response");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert!(
                status != http::StatusCode::METHOD_NOT_ALLOWED && problem["detail"] != "no such route",
                "{} {}: {status} {problem}",
                route.method,
                route.path
            );
        }
    }
}
