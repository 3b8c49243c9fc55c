//! The gateway: the front door. It authenticates callers (JWT today; API
//! keys join with the partner API), checks each route's scope, stamps a
//! request id, and forwards the request with a verified principal to the
//! experience tier. It never interprets business data.
//!
//! # Layout
//! - [`auth`]: bearer JWT verification against trusted issuers.
//! - [`dev_idp`]: the dev identity provider behind `erp-connect token`.
//! - [`upstream`]: the experience tier, in-process or over HTTP.
//! - [`ROUTES`]: the public routes and the scope each requires.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, get, on},
};
use http::{Method, StatusCode, header};
use platform::problem::Problem;
use serde::Deserialize;

pub mod auth;
pub mod dev_idp;
pub mod upstream;

/// `[gateway]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address. Default `127.0.0.1:8080`.
    pub listen: std::net::SocketAddr,
    /// The experience tier, in `serve` mode. Default `http://127.0.0.1:8090`.
    pub experience_url: String,
    /// Deadline of one forwarded request. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Clock skew tolerated on `exp`/`nbf`, at most 60 s. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
    /// Trusted token issuers besides the dev identity provider (which is
    /// trusted in dev mode only).
    pub issuers: Vec<auth::IssuerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            experience_url: "http://127.0.0.1:8090".into(),
            upstream_timeout: Duration::from_secs(30),
            jwt_leeway: Duration::from_secs(30),
            issuers: Vec::new(),
        }
    }
}

/// Public routes: method, path and the scope a caller needs.
pub const ROUTES: &[(Method, &str, &str)] = &[(Method::GET, "/web/v1/products", "catalog:read")];

/// Everything a request handler needs.
struct Gateway {
    auth: auth::Authenticator,
    upstream: upstream::Upstream,
    /// The dev identity provider's JWKS, served in dev mode only.
    dev_jwks: Option<serde_json::Value>,
}

/// Builds the gateway's router.
///
/// `dev_jwks` is served at `/dev-idp/jwks.json` when given (dev mode).
pub fn router(auth: auth::Authenticator, upstream: upstream::Upstream, dev_jwks: Option<serde_json::Value>) -> Router {
    let gateway = Arc::new(Gateway { auth, upstream, dev_jwks });
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/dev-idp/jwks.json", get(dev_jwks_handler));
    for (method, path, scope) in ROUTES {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        let scope: &'static str = scope;
        router = router.route(
            path,
            on(filter, move |State(gw): State<Arc<Gateway>>, request: Request| async move {
                gw.authorize_and_forward(scope, request).await
            }),
        );
    }
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(gateway)
        .layer(axum::middleware::from_fn(platform::request_id::ensure))
}

impl Gateway {
    async fn authorize_and_forward(&self, scope: &str, request: Request) -> Response {
        let principal = match bearer(&request).ok_or(auth::Error::Missing).and_then(|t| self.auth.verify(t)) {
            Ok(p) => p,
            Err(err) => {
                tracing::info!(error = %err, "credential refused");
                return Problem::unauthorized(err.to_string()).into_response();
            }
        };
        if !principal.has_scope(scope) {
            return Problem::forbidden(format!("this route needs the scope {scope}")).into_response();
        }
        match self.upstream.forward(request, Some(principal)).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        }
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let probe = Request::builder().uri("/readyz").body(Body::empty()).unwrap_or_default();
    match gw.upstream.forward(probe, None).await {
        Ok(res) if res.status() == StatusCode::OK => "ready".into_response(),
        Ok(res) => {
            tracing::warn!(status = %res.status(), "not ready: a tier behind the gateway is down");
            Problem::unavailable("a tier behind the gateway is not ready", 5).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "not ready: experience tier unreachable");
            Problem::unavailable("the experience tier is unreachable", 5).into_response()
        }
    }
}

async fn dev_jwks_handler(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.dev_jwks {
        Some(jwks) => Json(jwks.clone()).into_response(),
        None => Problem::not_found("no such route").into_response(),
    }
}
