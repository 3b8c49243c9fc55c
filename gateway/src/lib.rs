//! The gateway: the front door. It authenticates callers (JWT today; API
//! keys join with the partner API), checks each route's scope, stamps a
//! request id, and forwards the request with a verified principal to the
//! experience tier. It never interprets business data.
//!
//! # Layout
//! - [`auth`]: bearer JWT verification against trusted issuers.
//! - [`dev_idp`]: the dev identity provider behind `erp-connect token`.
//! - [`jwks`]: issuers' JWKS fetched from their URL and kept fresh.
//! - [`keys`]: partner API keys: format, checksum, stored hash.
//! - [`key_store`]: the keys' store and the request path's cache of it;
//!   `key_admin` answers `/ops/v1/keys` with it, and `audit_admin`
//!   `/ops/v1/audit` with the audit trail kept beside the keys.
//! - [`limits`]: rate limits and daily order quotas per key and plan, in
//!   memory or in Redis; `usage` answers `/partner/v1/usage` with them.
//! - [`tls`]: `[gateway.tls]`: client certificates bound to partner
//!   tenants, HSTS (the handshakes are `platform::tls`'s).
//! - [`lockout`]: failed authentications per client address (credential
//!   stuffing), locked out past a threshold.
//! - [`upstream`]: the experience tier, in-process or over HTTP.
//! - `overview`: `/ops/v1/overview`, the ops console's charts, from this
//!   process's metrics; `GET /metrics` serves them to Prometheus.
//! - [`Route`]: a route the gateway forwards and the scope it requires
//!   ([`SCOPES`]). The table of them is an input, not a list kept here:
//!   the experience tier declares its routes, and the launcher hands them
//!   to [`router_with_limits`]. The routes the gateway answers itself
//!   ([`USAGE_ROUTES`], [`KEY_ADMIN_ROUTES`], [`AUDIT_ROUTES`],
//!   [`OVERVIEW_ROUTES`]) are
//!   its own; [`routes`] lists them all.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, get, on},
};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use platform::{principal::Principal, problem::Problem};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer as SetHeader;

mod audit_admin;
pub mod auth;
pub mod deprecation;
pub mod dev_idp;
pub mod jwks;
mod key_admin;
pub mod key_store;
pub mod keys;
pub mod limits;
pub mod lockout;
mod overview;
pub mod tls;
pub mod upstream;
mod usage;

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
    /// A request head not complete within this (or a keep-alive connection
    /// idle this long) closes the connection. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_head_timeout: Duration,
    /// Open connections per client address. Default 256.
    pub max_connections_per_client: usize,
    /// The longest pause within a request body before the request fails
    /// with 408. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// Failed authentications from one client address within a minute
    /// before it is locked out (see [`lockout`]); 0 turns it off. Default 50.
    pub auth_failures_per_minute: u32,
    /// How long a locked-out address gets 429. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub auth_lockout: Duration,
    /// Load balancers that name the client (see `client_address_header`).
    /// Default none.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Where a trusted proxy names the client: `x-forwarded-for` (default)
    /// or `forwarded` (RFC 7239). Only the entry the proxy added is read.
    pub client_address_header: lockout::ClientAddressHeader,
    /// Clock skew tolerated on `exp`/`nbf`, at most 60 s. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
    /// Trusted token issuers besides the dev identity provider (which is
    /// trusted in dev mode only).
    pub issuers: Vec<auth::IssuerConfig>,
    /// Browser origins (e.g. `https://shop.example.com`) allowed to call the
    /// web shop's routes (`/web/...`) cross-origin. Default none; partner and
    /// ops routes are never open to browsers of other origins.
    pub cors_origins: Vec<String>,
    /// The gateway's own state (partner API keys): a `postgres:` URL shared
    /// by every gateway replica, or a `sqlite:` URL. Default the SQLite file
    /// `<data_dir>/gateway.db`.
    pub database_url: Option<String>,
    /// Redis shared by every gateway replica for rate limits and quotas
    /// (`redis://HOST:PORT`). Default none: limits are kept per replica.
    pub redis_url: Option<String>,
    /// Plans by name, over the built-in ones ([`limits::builtin_plans`]).
    pub plans: std::collections::BTreeMap<String, limits::Plan>,
    /// TLS on the listener, and partners' client certificates
    /// (`[gateway.tls]`). Default none: plain HTTP, for a TLS-terminating
    /// load balancer or a laptop.
    pub tls: Option<tls::Config>,
    /// Deprecated operations (`[[gateway.deprecations]]`): their answers
    /// carry `Deprecation`, `Sunset` and `Link`, and their calls are counted
    /// per consumer. Default none.
    pub deprecations: Vec<deprecation::Config>,
}

impl Config {
    /// The built-in plans with the configured ones over them.
    pub fn plans(&self) -> std::collections::BTreeMap<String, limits::Plan> {
        let mut plans = limits::builtin_plans();
        plans.extend(self.plans.clone());
        plans
    }

    /// The deprecated operations this configuration names, out of the
    /// `forwarded` routes and `/partner/v1/usage`.
    pub fn deprecations(&self, forwarded: &[Route]) -> Result<deprecation::Deprecations, deprecation::Error> {
        deprecation::Deprecations::new(&self.deprecations, &checked_routes(forwarded))
    }

    /// The rate limits and quotas this configuration asks for.
    pub fn limits(&self) -> Result<limits::Limits, limits::Error> {
        let lockout =
            lockout::Lockout::new(self.auth_failures_per_minute, self.auth_lockout, self.trusted_proxies.clone())
                .with_client_address_header(self.client_address_header);
        Ok(limits::Limits::new(&self.plans(), self.redis_url.as_deref())?.with_lockout(lockout))
    }
}

impl Config {
    /// What one HTTP client may hold of a listener (gateway and experience tier).
    pub fn http_limits(&self) -> platform::shutdown::HttpLimits {
        platform::shutdown::HttpLimits {
            head_timeout: self.request_head_timeout,
            max_connections_per_client: self.max_connections_per_client,
            body_timeout: self.request_body_timeout,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            experience_url: "http://127.0.0.1:8090".into(),
            upstream_timeout: Duration::from_secs(30),
            request_head_timeout: platform::shutdown::HttpLimits::default().head_timeout,
            max_connections_per_client: platform::shutdown::HttpLimits::default().max_connections_per_client,
            request_body_timeout: platform::shutdown::HttpLimits::default().body_timeout,
            jwt_leeway: Duration::from_secs(30),
            auth_failures_per_minute: 50,
            auth_lockout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            client_address_header: lockout::ClientAddressHeader::default(),
            issuers: Vec::new(),
            cors_origins: Vec::new(),
            database_url: None,
            redis_url: None,
            plans: std::collections::BTreeMap::new(),
            tls: None,
            deprecations: Vec::new(),
        }
    }
}

/// A route the gateway forwards to the experience tier: method, path
/// template and the scope a caller needs. A route not in the table the
/// gateway is built with never reaches the experience tier (404), so an
/// audience's new endpoint is closed until it is declared with its scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The method, e.g. `POST`.
    pub method: Method,
    /// The path template, e.g. `/web/v1/orders/{id}`: what the router
    /// matches, and the `route` of metrics, audit records and deprecations.
    pub path: Arc<str>,
    /// The one scope a caller needs, e.g. `orders:write`.
    pub scope: Arc<str>,
}

impl Route {
    /// `method` `path`, open to callers with `scope`.
    pub fn new(method: Method, path: &str, scope: &str) -> Self {
        Self { method, path: path.into(), scope: scope.into() }
    }
}

/// Every route the gateway answers with a scope: the `forwarded` ones and
/// its own ([`USAGE_ROUTES`], [`KEY_ADMIN_ROUTES`], [`AUDIT_ROUTES`],
/// [`OVERVIEW_ROUTES`]).
pub fn routes(forwarded: &[Route]) -> Vec<Route> {
    let own = USAGE_ROUTES.iter().chain(KEY_ADMIN_ROUTES).chain(AUDIT_ROUTES).chain(OVERVIEW_ROUTES);
    forwarded.iter().cloned().chain(own.map(|(method, path, scope)| Route::new(method.clone(), path, scope))).collect()
}

/// The routes whose scope [`Gateway::authorize_and_forward`] checks: the
/// `forwarded` ones and the partners' usage, which it answers itself.
fn checked_routes(forwarded: &[Route]) -> Vec<Route> {
    let usage = USAGE_ROUTES.iter().map(|(method, path, scope)| Route::new(method.clone(), path, scope));
    forwarded.iter().cloned().chain(usage).collect()
}

/// Routes the gateway answers itself, with their scope: a partner's own
/// limits and usage (`usage`), after the same checks as a forwarded route.
pub const USAGE_ROUTES: &[(Method, &str, &str)] = &[(Method::GET, USAGE_ROUTE, "orders:read")];

/// Routes the gateway answers itself, with their scope: the partner API
/// keys' admin API (`key_admin`).
pub const KEY_ADMIN_ROUTES: &[(Method, &str, &str)] = &[
    (Method::GET, "/ops/v1/keys", "ops"),
    (Method::POST, "/ops/v1/keys", "ops"),
    (Method::POST, "/ops/v1/keys/{id}/revoke", "ops"),
    (Method::POST, "/ops/v1/keys/{id}/rotate", "ops"),
];

/// Routes the gateway answers itself, with their scope: the audit trail
/// kept beside the keys (`audit_admin`).
pub const AUDIT_ROUTES: &[(Method, &str, &str)] = &[(Method::GET, audit_admin::ROUTE, "ops")];

/// Routes the gateway answers itself, with their scope: the ops console's
/// overview of this process's metrics (`overview`).
pub const OVERVIEW_ROUTES: &[(Method, &str, &str)] = &[(Method::GET, overview::ROUTE, "ops")];

/// The route that creates orders: counted against the key's daily quota.
const ORDER_ROUTE: (Method, &str) = (Method::POST, "/partner/v1/orders");

/// A partner's own limits and usage, answered by the gateway itself.
const USAGE_ROUTE: &str = "/partner/v1/usage";

/// Routes anyone may read, without a credential: the OpenAPI and AsyncAPI documents, the
/// API reference page rendered from it, and the ops console's page (which
/// asks the operator for a token before it reads anything).
pub const PUBLIC: &[&str] = &["/openapi.json", "/asyncapi.json", "/docs", "/ops"];

/// Every scope a token can carry (DESIGN.md, "Scopes").
pub const SCOPES: &[&str] =
    &["catalog:read", "orders:read", "orders:write", "invoices:read", "inventory:read", "webhooks:manage", "ops"];

/// Everything a request handler needs.
pub(crate) struct Gateway {
    auth: auth::Authenticator,
    upstream: upstream::Upstream,
    /// The dev identity provider's JWKS, served in dev mode only.
    dev_jwks: Option<serde_json::Value>,
    limits: limits::Limits,
    deprecations: deprecation::Deprecations,
}

/// Builds the gateway's router, forwarding the `forwarded` routes.
///
/// `dev_jwks` is served at `/dev-idp/jwks.json` when given (dev mode).
pub fn router(
    auth: auth::Authenticator,
    upstream: upstream::Upstream,
    dev_jwks: Option<serde_json::Value>,
    forwarded: &[Route],
) -> Router {
    let limits = Config::default().limits().unwrap_or_else(|_| unreachable!("no Redis URL to parse"));
    router_with_limits(auth, upstream, dev_jwks, limits, deprecation::Deprecations::default(), forwarded)
}

/// [`router`] with the configured rate limits and quotas (the built-in
/// plans in memory are [`router`]'s) and deprecated operations.
pub fn router_with_limits(
    auth: auth::Authenticator,
    upstream: upstream::Upstream,
    dev_jwks: Option<serde_json::Value>,
    limits: limits::Limits,
    deprecations: deprecation::Deprecations,
    forwarded: &[Route],
) -> Router {
    let gateway = Arc::new(Gateway { auth, upstream, dev_jwks, limits, deprecations });
    // Off the request path: a Redis connection ready before the first
    // metered request (built outside a runtime, e.g. in a unit test, the
    // first request connects instead).
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let gateway = Arc::clone(&gateway);
        runtime.spawn(async move { gateway.limits.warm_up().await });
    }
    let mut router = key_admin::routes()
        .merge(audit_admin::routes())
        .merge(overview::routes())
        .route("/metrics", get(platform::metrics::endpoint))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/dev-idp/jwks.json", get(dev_jwks_handler));
    // The API's description is public: forwarded without a principal.
    for path in PUBLIC {
        router = router.route(
            path,
            get(|State(gw): State<Arc<Gateway>>, request: Request| async move {
                gw.upstream.forward(request, None).await.unwrap_or_else(IntoResponse::into_response)
            }),
        );
    }
    for route in checked_routes(forwarded) {
        let filter = MethodFilter::try_from(route.method.clone()).unwrap_or(MethodFilter::GET);
        let path = route.path.clone();
        // One allocation per route, when the router is built: a request
        // only bumps its count.
        let route = Arc::new(route);
        router = router.route(
            &path,
            on(filter, move |State(gw): State<Arc<Gateway>>, request: Request| {
                let route = Arc::clone(&route);
                async move { gw.authorize_and_forward(&route.path, &route.scope, request).await }
            }),
        );
    }
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(gateway)
        // One `layer` call for the whole stack: axum boxes every route again
        // on each call, and every box costs each request an allocation.
        .layer(
            tower::ServiceBuilder::new()
                .layer(platform::metrics::http_layer(platform::metrics::Tier::Gateway))
                // The span covers the tier's own layers.
                .layer(platform::telemetry::HttpTier { name: "gateway", edge: true })
                .layer(platform::request_id::Layer)
                .layer(HeadLimits)
                // Unless a handler chose otherwise: no content sniffing, no
                // framing, no referrer leaks, and API answers (orders,
                // invoices) never kept in shared caches.
                .layer(SetHeader::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
                .layer(SetHeader::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
                .layer(SetHeader::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
                .layer(SetHeader::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))),
        )
}

/// Longest URI (path and query) accepted; far beyond any documented
/// parameter, short enough that logs and caches stay sane.
pub const MAX_URI_BYTES: usize = 4 * 1024;
/// Most request headers accepted, and their total size (names and values).
pub const MAX_HEADERS: usize = 64;
/// See [`MAX_HEADERS`].
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses an oversized request head (414, 431) before any credential is
/// looked at: hyper's own bounds (100 headers, ~400 KB) are far above what
/// any client of this API sends.
#[derive(Debug, Clone, Copy)]
struct HeadLimits;

impl<S> tower::Layer<S> for HeadLimits {
    type Service = HeadLimited<S>;

    fn layer(&self, inner: S) -> HeadLimited<S> {
        HeadLimited(inner)
    }
}

/// [`HeadLimits`]' service: a plain one, as it sees every request.
#[derive(Debug, Clone)]
struct HeadLimited<S>(S);

impl<S> tower::Service<Request> for HeadLimited<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use futures_util::future::Either;
        match head_refusal(&request) {
            Some(problem) => Either::Left(std::future::ready(Ok(problem.into_response()))),
            None => Either::Right(self.0.call(request)),
        }
    }
}

fn head_refusal(request: &Request) -> Option<Problem> {
    let uri = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return Some(Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the path and query may be at most {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    (headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES).then(|| {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            format!("at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"),
        )
    })
}

/// Lets the browsers of `origins` call the web shop's routes from their
/// pages: preflights answered, the headers a shop sends allowed. Other
/// routes, and other origins, get no CORS headers, so browsers refuse them.
pub fn with_cors(router: Router, origins: &[String]) -> Router {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return router;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, parts: &http::request::Parts| {
        parts.uri.path().starts_with("/web/") && origins.contains(origin)
    });
    router.layer(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                header::LOCATION,
                header::RETRY_AFTER,
                header::ETAG,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

impl Gateway {
    async fn authorize_and_forward(&self, route: &str, scope: &str, request: Request) -> Response {
        let lockout = self.limits.lockout();
        let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        let client = lockout.client(peer, request.headers());
        if let Some(left) = client.and_then(|ip| lockout.locked(ip, std::time::Instant::now())) {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failed-authentications",
                "Too many failed authentications",
                "too many requests from this address presented a wrong credential; try again later",
            );
            problem.retry_after = Some(whole_seconds(left).max(1));
            return problem.into_response();
        }
        let mut authenticated = self.authenticate(request.headers()).await;
        if let Ok(caller) = &authenticated
            && let Some(refusal) = self.certificate_refusal(caller, request.extensions().get())
        {
            authenticated = Err(refusal);
        }
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(response) => {
                if let Some(ip) = client {
                    lockout.failed(ip, std::time::Instant::now());
                }
                return response;
            }
        };
        // Every request of a metered key counts, refused ones included: a
        // key cannot probe for free.
        let rate = match &caller.plan {
            Some(plan) => self.limits.check_rate(&caller.principal.subject, plan).await,
            None => None,
        };
        // What the audit record needs, taken before the request goes
        // upstream; reads are not audited and cost nothing here.
        let audited = (!matches!(*request.method(), Method::GET | Method::HEAD)).then(|| AuditedRequest {
            subject: caller.principal.subject.clone(),
            tenant: caller.principal.tenant.clone().unwrap_or_default(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            request_id: request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        });
        let deprecated = self.deprecations.find(request.method(), route).map(|notice| {
            // End users' subjects are too many for a metric label.
            (notice, caller.principal.tenant.clone().unwrap_or_else(|| "users".to_owned()))
        });
        let mut response = self.serve(route, scope, request, caller, rate).await;
        if let Some(rate) = rate {
            rate_headers(response.headers_mut(), &rate);
        }
        if let Some((notice, consumer)) = deprecated {
            notice.apply(&consumer, response.headers_mut());
        }
        if let Some(audited) = audited {
            audit(route, &audited, &response);
        }
        response
    }

    /// The answer to an authenticated caller's request, before the rate
    /// limit headers.
    async fn serve(
        &self,
        route: &str,
        scope: &str,
        request: Request,
        caller: Caller,
        rate: Option<limits::RateDecision>,
    ) -> Response {
        if let Some(rate) = rate.filter(|r| !r.allowed) {
            tracing::info!(key = %caller.principal.subject, "rate limit reached");
            limits::count_rejection(caller.plan.as_deref().unwrap_or_default(), "rate");
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "this API key's rate limit is reached; retry after the time in Retry-After",
            );
            problem.retry_after = Some(whole_seconds(rate.retry_after).max(1));
            return problem.into_response();
        }
        if !caller.principal.has_scope(scope) {
            return Problem::forbidden(format!("this route needs the scope {scope}")).into_response();
        }
        if route == USAGE_ROUTE {
            return usage::answer(&self.limits, &caller, rate).await;
        }
        let counts_order = *request.method() == ORDER_ROUTE.0 && route == ORDER_ROUTE.1;
        let idempotency_key = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let quota = match (&caller.plan, counts_order) {
            (Some(plan), true) => {
                self.limits.reserve_order(&caller.principal.subject, plan, idempotency_key.as_deref()).await
            }
            _ => None,
        };
        // The key to give an order back to, should it not be placed.
        let metered_key = quota.filter(|q| q.counted).map(|_| caller.principal.subject.clone());
        match quota {
            Some(quota) if !quota.allowed => {
                tracing::info!(key = %caller.principal.subject, "daily order quota reached");
                limits::count_rejection(caller.plan.as_deref().unwrap_or_default(), "quota");
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota-exceeded",
                    "Quota exceeded",
                    format!(
                        "this API key's plan allows {} orders per day; the quota starts over at 00:00 UTC",
                        quota.limit
                    ),
                );
                problem.retry_after = Some(whole_seconds(quota.reset).max(1));
                problem.into_response()
            }
            _ => {
                let response = match self.upstream.forward(request, Some(caller.principal)).await {
                    Ok(response) => response,
                    Err(err) => err.into_response(),
                };
                // Only placed orders count; a refused or failed one is given back.
                if let Some(key) = metered_key.filter(|_| !response.status().is_success()) {
                    self.limits.release_order(&key, idempotency_key.as_deref()).await;
                }
                response
            }
        }
    }
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` (IETF httpapi draft): the
/// burst, what is left of it, and seconds until it is whole again.
fn rate_headers(headers: &mut http::HeaderMap, rate: &limits::RateDecision) {
    headers.insert(RATELIMIT_LIMIT, rate.limit.into());
    headers.insert(RATELIMIT_REMAINING, rate.remaining.into());
    headers.insert(RATELIMIT_RESET, whole_seconds(rate.reset).into());
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `duration` rounded up to whole seconds, as HTTP headers count.
fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).unwrap_or(u32::MAX)
}

impl Gateway {
    /// Who sent `request`: a partner API key (`X-API-Key`, or a bearer
    /// credential with the key prefix) or a JWT. A refusal is the answer to
    /// send (401, or 503 when the key store cannot be read).
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Response> {
        let api_key = headers.get(API_KEY).map(|v| v.to_str().unwrap_or(""));
        let credential = match api_key {
            Some(key) => Some(key.trim()),
            None => bearer(headers),
        };
        match credential {
            Some(text) if api_key.is_some() || keys::ApiKey::looks_like_key(text) => self.verify_key(text).await,
            Some(token) => self.auth.verify_with_refresh(token).await.map(Caller::jwt).map_err(|err| {
                tracing::info!(error = %err, "credential refused");
                Problem::unauthorized(err.to_string()).into_response()
            }),
            None => Err(Problem::unauthorized(auth::Error::Missing.to_string()).into_response()),
        }
    }

    /// The 401 for a caller whose tenant is bound to client certificates
    /// and that came without one of them.
    fn certificate_refusal(
        &self,
        caller: &Caller,
        presented: Option<&platform::tls::PeerCertificate>,
    ) -> Option<Response> {
        let reason = self.auth.client_certificates().check(caller.principal.tenant.as_deref(), presented).err()?;
        tracing::info!(key = %caller.principal.subject, reason, "client certificate refused");
        Some(Problem::unauthorized(reason).into_response())
    }

    async fn verify_key(&self, text: &str) -> Result<Caller, Response> {
        let refused = |reason: &dyn std::fmt::Display| {
            tracing::info!(error = %reason, "API key refused");
            Problem::unauthorized("invalid API key").into_response()
        };
        let key = keys::ApiKey::parse(text).map_err(|e| refused(&e))?;
        let store = self.auth.api_keys().ok_or_else(|| refused(&"no key store"))?;
        match store.verify(&key, key_store::now_ms()).await {
            Ok(Some(record)) => Ok(Caller {
                principal: Principal {
                    subject: record.id,
                    tenant: Some(record.partner),
                    scopes: record.scopes,
                    email: None,
                },
                plan: Some(record.plan),
            }),
            Ok(None) => Err(refused(&"unknown, revoked or expired")),
            Err(err) => {
                tracing::warn!(error = %err, "key store unavailable");
                Err(Problem::unavailable("credentials cannot be checked right now", 1).into_response())
            }
        }
    }
}

/// A verified caller, with what the gateway keeps to itself.
pub(crate) struct Caller {
    /// What the experience tier is handed.
    pub(crate) principal: Principal,
    /// The plan of a partner API key (`bronze`, ...), for rate limits and
    /// quotas; `None` for a JWT, which is not metered.
    pub(crate) plan: Option<String>,
}

impl Caller {
    fn jwt(principal: Principal) -> Self {
        Self { principal, plan: None }
    }
}

/// The header partners may send their API key in.
pub(crate) const API_KEY: &str = "x-api-key";

const REQUEST_ID: &str = "x-request-id";

/// What the audit record needs of a request that has gone upstream.
struct AuditedRequest {
    subject: String,
    tenant: String,
    method: Method,
    path: String,
    request_id: String,
}

/// One audit record per state-changing request: who (subject, tenant), what
/// (method and route template), which object (the path's id, or the one a
/// creation answered with), the outcome (status) and the request id. No
/// bodies, credentials or e-mail addresses.
fn audit(route: &str, request: &AuditedRequest, response: &Response) {
    let object = route
        .split('/')
        .zip(request.path.split('/'))
        .find(|(template, _)| template.starts_with('{'))
        .map(|(_, id)| id.to_owned())
        .or_else(|| {
            let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
            location.rsplit('/').next().map(str::to_owned)
        })
        .unwrap_or_default();
    tracing::info!(
        target: "audit",
        subject = %request.subject,
        tenant = %request.tenant,
        method = %request.method,
        route,
        object,
        status = response.status().as_u16(),
        request_id = %request.request_id,
        "state change"
    );
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Extension, routing::any};
    use platform::principal::Principal;
    use tower::ServiceExt;

    use super::*;
    use crate::dev_idp::{DevIdp, TokenRequest};

    /// A forwarded route table like the experience tier's (the real one is
    /// the launcher's to hand over; `tests/openapi.rs` holds it to the API
    /// document): each scope, methods beside each other on one path, `{id}`s.
    fn table() -> Vec<Route> {
        [
            (Method::GET, "/web/v1/products", "catalog:read"),
            (Method::POST, "/web/v1/orders", "orders:write"),
            (Method::GET, "/web/v1/orders", "orders:read"),
            (Method::GET, "/web/v1/orders/{id}", "orders:read"),
            (Method::POST, "/partner/v1/orders", "orders:write"),
            (Method::GET, "/partner/v1/orders", "orders:read"),
            (Method::POST, "/partner/v1/orders/{id}/cancel", "orders:write"),
            (Method::GET, "/partner/v1/invoices/{id}", "invoices:read"),
            (Method::GET, "/partner/v1/webhooks/{id}", "webhooks:manage"),
            (Method::PATCH, "/partner/v1/webhooks/{id}", "webhooks:manage"),
            (Method::DELETE, "/partner/v1/webhooks/{id}", "webhooks:manage"),
            (Method::POST, "/partner/v1/order-batches", "orders:write"),
            (Method::POST, "/ops/v1/payments", "ops"),
            (Method::POST, "/ops/v1/shipments/{id}/complete", "ops"),
            (Method::GET, "/ops/v1/webhooks/deliveries", "ops"),
            (Method::GET, "/ops/v1/webhooks/{id}", "ops"),
        ]
        .into_iter()
        .map(|(method, path, scope)| Route::new(method, path, scope))
        .collect()
    }

    /// A gateway in front of a stand-in experience tier that answers every
    /// request 200 with the subject it was handed.
    fn gateway() -> (tempfile::TempDir, DevIdp, Router) {
        let dir = tempfile::tempdir().expect("tempdir");
        let idp = DevIdp::load_or_create(dir.path()).expect("idp");
        let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
        let auth = auth::Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
            .expect("auth");
        let experience =
            Router::new().fallback(any(|Extension(p): Extension<Principal>| async move { p.subject.clone() }));
        (dir, idp, router(auth, upstream::Upstream::InProcess(experience, Duration::from_secs(30)), None, &table()))
    }

    fn token(idp: &DevIdp, scope: &str) -> String {
        idp.mint(&TokenRequest {
            subject: "alice".into(),
            scope: scope.into(),
            audience: "erp-connect".into(),
            tenant: Some("acme".into()),
            email: None,
            ttl: Duration::from_secs(60),
        })
        .expect("mint")
    }

    async fn status(app: &Router, method: &Method, path: &str, token: &str) -> StatusCode {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        app.clone().oneshot(request).await.expect("response").status()
    }

    /// `{id}` in a table path, filled in as a client would.
    fn concrete(path: &str) -> String {
        path.replace("{id}", "ord_01JDX")
    }

    #[tokio::test]
    async fn only_the_configured_origins_may_call_web_routes_from_a_browser() {
        let (_dir, _idp, app) = gateway();
        let app = with_cors(app, &["https://shop.example".to_owned()]);
        let preflight = |path: &str, origin: &str| {
            Request::builder()
                .method(Method::OPTIONS)
                .uri(path)
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type, idempotency-key")
                .body(Body::empty())
                .expect("request")
        };
        let allowed = |response: &Response| response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).cloned();
        let shop = app.clone().oneshot(preflight("/web/v1/orders", "https://shop.example")).await.expect("response");
        assert_eq!(allowed(&shop).as_ref().and_then(|v| v.to_str().ok()), Some("https://shop.example"));
        let other = app.clone().oneshot(preflight("/web/v1/orders", "https://evil.example")).await.expect("response");
        assert_eq!(allowed(&other), None);
        let partner =
            app.clone().oneshot(preflight("/partner/v1/orders", "https://shop.example")).await.expect("response");
        assert_eq!(allowed(&partner), None, "partner routes are not for browsers");
    }

    #[test]
    fn the_gateways_own_routes_need_a_known_scope() {
        for route in routes(&[]) {
            assert!(SCOPES.contains(&&*route.scope), "{route:?} needs an unknown scope");
            assert!(["/partner/v1/", "/ops/v1/"].iter().any(|p| route.path.starts_with(p)), "{route:?}");
        }
    }

    #[tokio::test]
    async fn each_route_is_forwarded_with_its_scope_and_refused_without_it() {
        let (_dir, idp, app) = gateway();
        for Route { method, path, scope } in checked_routes(&table()) {
            let path = concrete(&path);
            assert_eq!(status(&app, &method, &path, &token(&idp, &scope)).await, StatusCode::OK, "{method} {path}");
            // Every other scope together is still not enough.
            let others: Vec<&str> = SCOPES.iter().copied().filter(|s| **s != *scope).collect();
            let without = token(&idp, &others.join(" "));
            assert_eq!(status(&app, &method, &path, &without).await, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn reading_orders_does_not_allow_writing_them() {
        let (_dir, idp, app) = gateway();
        let reader = token(&idp, "orders:read invoices:read catalog:read");
        for (method, path) in [
            (Method::POST, "/web/v1/orders"),
            (Method::POST, "/partner/v1/orders"),
            (Method::POST, "/partner/v1/orders/ord_1/cancel"),
            (Method::POST, "/ops/v1/payments"),
            (Method::POST, "/ops/v1/shipments/7/complete"),
        ] {
            assert_eq!(status(&app, &method, path, &reader).await, StatusCode::FORBIDDEN, "{method} {path}");
        }
        let writer = token(&idp, "orders:write");
        assert_eq!(status(&app, &Method::GET, "/web/v1/orders", &writer).await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn path_parameters_reach_the_experience_tier_once() {
        // In-process, the request the experience router sees must not carry
        // the gateway's own path parameters, or `{id}` arrives twice.
        let dir = tempfile::tempdir().expect("tempdir");
        let idp = DevIdp::load_or_create(dir.path()).expect("idp");
        let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
        let auth = auth::Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
            .expect("auth");
        let experience = Router::new().nest(
            "/web/v1",
            Router::new()
                .route("/orders/{id}", get(|axum::extract::Path(id): axum::extract::Path<String>| async move { id })),
        );
        let app = router(auth, upstream::Upstream::InProcess(experience, Duration::from_secs(30)), None, &table());
        let request = Request::builder()
            .uri("/web/v1/orders/ord_42")
            .header(header::AUTHORIZATION, format!("Bearer {}", token(&idp, "orders:read")))
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], b"ord_42");
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused_before_anything_else() {
        let (_dir, idp, app) = gateway();
        let token = token(&idp, "orders:read");
        let send = |request: Request| app.clone().oneshot(request);
        let long_query = format!("/partner/v1/orders?page_token={}", "a".repeat(MAX_URI_BYTES));
        let mut many_headers = Request::builder().uri("/partner/v1/orders");
        for i in 0..=MAX_HEADERS {
            many_headers = many_headers.header(format!("x-filler-{i}"), "1");
        }
        let big_header = Request::builder().uri("/partner/v1/orders").header("x-filler", "a".repeat(MAX_HEADER_BYTES));
        for (request, status) in [
            (Request::builder().uri(long_query), StatusCode::URI_TOO_LONG),
            (many_headers, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            (big_header, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ] {
            let request =
                request.header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).expect("request");
            let response = send(request).await.expect("response");
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        }
        let fine = Request::builder()
            .uri("/partner/v1/orders?page_size=10")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(send(fine).await.expect("response").status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_experience_tier_that_does_not_answer_in_time_is_a_504_problem() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let idp = DevIdp::load_or_create(dir.path()).expect("idp");
        let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
        let auth = auth::Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
            .expect("auth");
        let signer = platform::principal::PrincipalSigner::new(&[7; 32]).expect("signer");
        let upstream = upstream::Upstream::http(&url, signer, Duration::from_millis(200), None).expect("upstream");
        let app = router(auth, upstream, None, &table());
        let request = Request::builder()
            .uri("/partner/v1/orders")
            .header(header::AUTHORIZATION, format!("Bearer {}", token(&idp, "orders:read")))
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        held.abort();
    }

    /// The upstream deadline runs from the request's last byte: an upload
    /// that takes longer than it is answered, an answer that does not come
    /// in time after it is a 504.
    #[tokio::test]
    async fn the_upstream_deadline_starts_once_the_body_has_been_sent() {
        use futures_util::StreamExt;
        let experience = Router::new().route(
            "/partner/v1/order-batches",
            axum::routing::post(|body: axum::body::Bytes| async move {
                if body.starts_with(b"slow") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                body.len().to_string()
            }),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let idp = DevIdp::load_or_create(dir.path()).expect("idp");
        let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
        let auth = auth::Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
            .expect("auth");
        let upstream = upstream::Upstream::InProcess(experience, Duration::from_millis(200));
        let app = router(auth, upstream, None, &table());
        // Five pieces 100 ms apart: 400 ms of upload against a 200 ms deadline.
        let upload = |first: &'static [u8]| {
            let pieces = futures_util::stream::iter(0..5).then(move |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(if n == 0 { first } else { b"-row" }))
            });
            Request::builder()
                .method(Method::POST)
                .uri("/partner/v1/order-batches")
                .header(header::AUTHORIZATION, format!("Bearer {}", token(&idp, "orders:write")))
                .body(Body::from_stream(pieces))
                .expect("request")
        };
        let response = app.clone().oneshot(upload(b"fast")).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], b"20", "the whole upload arrived");
        let response = app.oneshot(upload(b"slow")).await.expect("response");
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn unlisted_routes_and_methods_never_reach_the_experience_tier() {
        let (_dir, idp, app) = gateway();
        let all = token(&idp, &SCOPES.join(" "));
        assert_eq!(status(&app, &Method::DELETE, "/web/v1/orders/ord_1", &all).await, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            status(&app, &Method::GET, "/partner/v1/orders/ord_1/cancel", &all).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(&app, &Method::GET, "/web/v1/orders/ord_1/lines", &all).await, StatusCode::NOT_FOUND);
        assert_eq!(status(&app, &Method::GET, "/ops/v1/reports", &all).await, StatusCode::NOT_FOUND);
    }
}
