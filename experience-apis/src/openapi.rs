//! The OpenAPI 3.1 document of the public API: every route the gateway
//! answers, its scope, parameters, bodies and every status it can answer
//! (errors as RFC 9457 problem+json).
//!
//! Each experience route is declared once, on its handler: a
//! `#[utoipa::path]` with its path (relative to its audience's `/web/v1`,
//! `/partner/v1`, ...), its scope in `security(...)`, its answers, and as
//! its summary the handler's doc comment, written for API users (one
//! paragraph: a second one would become the operation's description). The
//! audience routers are built from those declarations
//! ([`utoipa_axum::router::OpenApiRouter`]), and so is the gateway's route
//! table ([`crate::routes`]): a route cannot be served without being
//! documented, nor documented with another scope than the gateway checks.
//!
//! This module holds what the handlers share: the `Problem` schema, the
//! refusals most operations answer (`Refusals`, `BodyRefusals`,
//! `ReadRefusals`), every 4xx and 5xx made a problem+json body in one
//! place; and [`ApiDoc`]: the API's description, tags, security schemes
//! and schemas, and the operations the gateway answers on its own, whose
//! handlers live there.

use std::sync::LazyLock;

use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::{
        Content, Ref, RefOr,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    mobile::{
        events::StatusEvent,
        orders::{MobileLine, MobileOrder, MobileOrderPage, MobileOrderSummary},
        products::{MobileProduct, MobileProductPage},
    },
    ops::quarantine::{DiscardBody, QuarantinePage, QuarantinedView, ReplayBody},
    ops::{
        audit::{AuditList, AuditRecord},
        customers::{EraseBody, ErasureView, GoldenCustomerView, GoldenFieldView, SystemErasureView},
        master_data::{
            AccuracyView, Decision, MasterDataQuarantineEntry, MasterDataQuarantineList, ResolveBody, ResyncView,
            SystemRefView,
        },
    },
    ops::{
        orders::{OpsOrderPage, OpsOrderView, SagaStepView},
        payments::PaymentBody,
        shipments::ShipmentView,
    },
    orders::{
        ErpView, LineRequest, LineView, OrderPage, OrderRequest, OrderView, PaymentRequest, PaymentView, ShipToRequest,
        StepView,
    },
    partner::{
        invoices::InvoiceView,
        order_batches::{BatchView, RowErrorView, RowResultView},
        orders::CancelBody,
    },
    products::{AvailabilityView, ProductPage, ProductView, WarehouseView},
    webhooks::{
        AttemptView, DeliveryPage, DeliveryView, ReplayRequest, ReplayView, WebhookCreated, WebhookList, WebhookPatch,
        WebhookRequest, WebhookStatus, WebhookView,
    },
};

/// An RFC 9457 problem, as every error answers.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is written by platform::problem
pub(crate) struct Problem {
    /// A stable URI naming the kind of problem.
    r#type: String,
    /// Short, human-readable summary of the kind.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong this time.
    detail: String,
    /// For validation errors: each bad field.
    errors: Option<Vec<FieldError>>,
}

/// One invalid field.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct FieldError {
    /// e.g. `lines[0].quantity`.
    field: String,
    /// Why it is invalid.
    message: String,
}

/// A partner's plan, limits and usage. Answered by the gateway, which keeps
/// the counters; a limit the plan does not have, and every field for a
/// caller without an API key (not metered), is `null`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is written by the gateway
struct UsageView {
    /// The API key's plan: `bronze`, `silver`, `gold`, `unmetered` or a configured one.
    plan: Option<String>,
    /// Sustained requests per second.
    requests_per_second: Option<u32>,
    /// Requests the key may send at once (`RateLimit-Limit`).
    burst: Option<u32>,
    /// Requests the key may send right now, this one counted (`RateLimit-Remaining`).
    requests_remaining: Option<u32>,
    /// Seconds until a whole burst is available again (`RateLimit-Reset`).
    requests_reset_seconds: Option<u32>,
    /// Orders the plan allows per UTC day.
    orders_per_day: Option<u64>,
    /// Orders placed today (UTC), refused ones not counted.
    orders_today: Option<u64>,
}

/// A partner API key as stored: never the key itself, nor its hash.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is written by the gateway
struct KeyView {
    /// `key_<ulid>`; the subject of the key's requests.
    id: String,
    /// The partner tenant the key acts for.
    partner: String,
    /// Granted scopes.
    scopes: Vec<String>,
    /// `bronze`, `silver`, `gold`, `unmetered` or a configured plan.
    plan: String,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds; `null`: never.
    expires_at: Option<i64>,
    /// Unix seconds; `null`: live.
    revoked_at: Option<i64>,
    /// The key a rotation issued in its place.
    replaced_by: Option<String>,
}

/// Every API key, oldest first.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct KeyList {
    keys: Vec<KeyView>,
}

/// A new key: shown once, here; only its hash is kept.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct KeyCreated {
    /// `erpk_live_...`: send it as `X-API-Key`.
    key: String,
    id: String,
    partner: String,
    scopes: Vec<String>,
    plan: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaced_by: Option<String>,
}

/// `POST /ops/v1/keys`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct KeyRequest {
    /// The partner tenant the key acts for.
    partner: String,
    /// Scopes out of `catalog:read`, `orders:read`, `orders:write`, `invoices:read`, ...; never `ops`.
    scopes: Vec<String>,
    /// Default `bronze`.
    plan: Option<String>,
    /// Lifetime, e.g. `90days`; none: no expiry.
    expires_in: Option<String>,
}

/// An order status, as `GET /ops/v1/orders` filters by it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documentation only: the query is parsed by ops::orders
pub(crate) enum OrderStatusName {
    Accepted,
    Confirmed,
    Invoiced,
    Paid,
    Shipped,
    Completed,
    Cancelled,
    Rejected,
}

/// `POST /ops/v1/keys/{id}/rotate`, optional.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct RotateRequest {
    /// How long the old key keeps working, e.g. `24h`. Default `0s`.
    grace: Option<String>,
}

/// What the ops console charts, from the gateway process's metrics. In
/// `serve` mode a gateway sees only its own: other tiers' points stay at
/// zero and their values are `null` or empty (scrape each tier's
/// `/metrics` there).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: the body is written by the gateway
struct Overview {
    /// Seconds per point: 10.
    step_seconds: u64,
    /// Seconds covered: 900.
    window_seconds: u64,
    /// `gateway`, `experience`, `process`, `system`, in this order.
    tiers: Vec<OverviewTier>,
    /// Orders per status (statuses without orders left out), e.g. `{"paid": 3}`.
    orders_by_status: std::collections::BTreeMap<String, u64>,
    outbox: OverviewOutbox,
    /// Orders the saga holds while a system does not answer, per system
    /// (`erp`, `payments`); empty without a process tier in the process.
    waiting: Vec<OverviewWaiting>,
    /// From a change made in the ERP to its order event, for the last change
    /// applied; `null` before the first.
    change_feed_lag_seconds: Option<f64>,
    backends: Vec<OverviewBackend>,
    /// The connected ERP, once it has said what it is; `null` before, or
    /// in a gateway process without the system tier.
    erp: Option<OverviewErp>,
    rate_limit: OverviewRateLimit,
    webhooks: OverviewWebhooks,
}

/// Webhook deliveries; `pending` and its age are `null` without a process
/// tier in the gateway's process, the counts are since it started.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewWebhooks {
    /// Deliveries waiting for enabled endpoints.
    pending: Option<u64>,
    /// Age of the oldest of them (0 when none).
    oldest_age_seconds: Option<f64>,
    /// Attempts answered 2xx.
    delivered: u64,
    /// Attempts failed and scheduled again.
    retried: u64,
    /// Deliveries whose attempts ran out (dead letters).
    failed: u64,
    /// Endpoints disabled (410, or failing for days).
    disabled: u64,
}

/// The ERP behind the system tier.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewErp {
    /// `embedded` or `tryton`.
    backend: String,
    /// The ERP's release, e.g. `8.0.12`.
    release: String,
    /// Whether the ERP keeps credit limits (else erp-connect applies its own).
    credit_limits: bool,
}

/// One tier's traffic, one point per step, oldest first; the last point is
/// the step in progress. Steps without traffic are points too.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewTier {
    tier: String,
    points: Vec<OverviewPoint>,
}

/// One step of one tier.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewPoint {
    /// Start of the step, unix seconds.
    t: u64,
    /// Requests answered in the step.
    requests: u64,
    /// Of which errors: HTTP 5xx; gRPC codes whose HTTP equivalent is 5xx
    /// (Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss).
    errors: u64,
    /// Median latency, ms; `null` without requests.
    p50_ms: Option<f64>,
    /// 99th percentile latency, ms; `null` without requests.
    p99_ms: Option<f64>,
}

/// The outbox; `null` values without a process tier in the gateway's process.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewOutbox {
    /// Events not yet published.
    depth: Option<u64>,
    /// Age of the oldest of them (0 when none).
    oldest_age_seconds: Option<f64>,
}

/// The orders waiting for one system.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewWaiting {
    /// `erp` or `payments`.
    system: String,
    /// How many orders wait for it.
    orders: u64,
    /// How long the oldest has waited, 0 when none.
    oldest_age_seconds: f64,
}

/// A backend system behind a circuit breaker.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewBackend {
    /// The system, e.g. `erp`.
    name: String,
    /// Its backend, e.g. `embedded` or `tryton`.
    backend: String,
    /// `closed`, `open` or `half_open`.
    breaker: String,
}

/// Partner rate limits since the gateway started.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
struct OverviewRateLimit {
    /// 429s for a plan's rate or daily order quota.
    rejections: u64,
    /// Decisions made by the local limiter because the configured Redis did not answer.
    redis_fallbacks: u64,
}

/// What the document declares itself: the API's description, tags and
/// security schemes, every schema, and the operations the gateway answers
/// on its own (`/partner/v1/usage`, `/ops/v1/keys...`, `/ops/v1/overview`).
/// The experience tier's operations are declared on their handlers and
/// join it in [`document`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-connect",
        description = "API-led connectivity for ERP systems: the catalogue, orders from acceptance to cash, \
                       invoices and operations, for web shops, partners and operators."
    ),
    paths(get_partner_usage, list_keys, create_key, revoke_key, rotate_key, list_audit, get_overview),
    components(schemas(
        Problem,
        FieldError,
        UsageView,
        KeyView,
        KeyList,
        KeyCreated,
        KeyRequest,
        RotateRequest,
        AuditRecord,
        AuditList,
        Overview,
        OverviewTier,
        OverviewPoint,
        OverviewOutbox,
        OverviewWaiting,
        OverviewErp,
        OverviewBackend,
        OverviewRateLimit,
        OverviewWebhooks,
        OrderRequest,
        LineRequest,
        PaymentRequest,
        ShipToRequest,
        OrderView,
        LineView,
        ErpView,
        StepView,
        PaymentView,
        OrderPage,
        ProductPage,
        ProductView,
        AvailabilityView,
        WarehouseView,
        InvoiceView,
        CancelBody,
        PaymentBody,
        ShipmentView,
        OpsOrderView,
        SagaStepView,
        OpsOrderPage,
        OrderStatusName,
        WebhookView,
        WebhookCreated,
        WebhookList,
        WebhookRequest,
        WebhookPatch,
        WebhookStatus,
        DeliveryView,
        AttemptView,
        DeliveryPage,
        ReplayRequest,
        ReplayView,
        BatchView,
        RowResultView,
        RowErrorView,
        QuarantinedView,
        QuarantinePage,
        ReplayBody,
        DiscardBody,
        GoldenCustomerView,
        GoldenFieldView,
        EraseBody,
        ErasureView,
        SystemErasureView,
        MasterDataQuarantineEntry,
        MasterDataQuarantineList,
        SystemRefView,
        ResolveBody,
        Decision,
        AccuracyView,
        ResyncView,
        MobileProductPage,
        MobileProduct,
        MobileOrderPage,
        MobileOrderSummary,
        MobileOrder,
        MobileLine,
        StatusEvent
    )),
    modifiers(&Security),
    tags(
        (name = "web", description = "The web shop: the signed-in customer's catalogue and orders."),
        (name = "mobile", description = "The web shop's customers in the mobile app: compact answers, small pages, \
            the order's status as server-sent events."),
        (name = "partner", description = "Partners: their own tenant's orders, invoices and webhooks \
            (events described in /asyncapi.json)."),
        (name = "ops", description = "Operators: orders of every tenant, cash application and the warehouse's stand-in, \
            customer master data and data-subject requests.")
    )
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`] with every experience route's operation.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::audiences_document().clone());
    problem_bodies(&mut doc);
    doc
}

/// The document as JSON, made once.
pub fn json() -> String {
    static JSON: LazyLock<String> = LazyLock::new(|| document().to_json().unwrap_or_else(|_| "{}".into()));
    JSON.clone()
}

/// The routes `doc` describes, with the one scope each needs. An operation
/// that names no scope, or several, is left out: the gateway keeps a route
/// it has no scope for closed, and a test holds every operation to one.
pub(crate) fn routes(doc: &utoipa::openapi::OpenApi) -> Vec<crate::Route> {
    use http::Method;
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        let operations = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ];
        for (method, operation) in operations {
            if let Some(scope) = operation.as_ref().and_then(only_scope) {
                routes.push(crate::Route { method, path: path.clone(), scope });
            }
        }
    }
    routes
}

/// The one scope an operation's security requirements name, whatever the
/// credential (`bearer`, `api_key`).
fn only_scope(operation: &utoipa::openapi::path::Operation) -> Option<String> {
    let requirements = serde_json::to_value(operation.security.as_ref()?).ok()?;
    let mut scopes = requirements
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_object)
        .flat_map(|requirement| requirement.values())
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect::<Vec<_>>();
    scopes.sort_unstable();
    scopes.dedup();
    match scopes[..] {
        [scope] => Some(scope.to_owned()),
        _ => None,
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The refusals most operations share: a malformed request, no credential
/// or not its scope, the gateway's limits on the request head and on API
/// keys, a backend down or too slow. An operation lists its own (404,
/// 409, ...) beside them.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the bodies are written by platform::problem
pub(crate) enum Refusals {
    #[response(status = 400, description = "Malformed request")]
    Malformed,
    #[response(status = 401, description = "No or invalid credential")]
    Unauthorized,
    #[response(status = 403, description = "Without the scope")]
    Forbidden,
    #[response(
        status = 429,
        description = "The API key's rate limit (or, placing an order, its daily order quota) is reached; \
                       retry after Retry-After seconds. Every answer to a metered key carries RateLimit-Limit, \
                       RateLimit-Remaining and RateLimit-Reset"
    )]
    TooManyRequests,
    #[response(status = 414, description = "Path and query longer than 4 KiB")]
    UriTooLong,
    #[response(status = 431, description = "More than 64 headers, or 16 KiB of them")]
    HeadersTooLarge,
    #[response(status = 503, description = "A backend is down; retry later")]
    Unavailable,
    #[response(status = 504, description = "The service did not answer in time")]
    Timeout,
}

/// The refusals of a JSON body: too large, or not JSON. Its invalid
/// content (422) is the operation's own.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub(crate) enum BodyRefusals {
    #[response(status = 413, description = "Body too large")]
    TooLarge,
    #[response(status = 415, description = "Not JSON")]
    NotJson,
}

/// What the catalogue reads and the order's event stream share with
/// [`Refusals`], in their own words; their 400 and 403 (and a partner's
/// 429) are their own.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub(crate) enum ReadRefusals {
    #[response(status = 401, description = "No or invalid credential")]
    Unauthorized,
    #[response(status = 414, description = "Path and query longer than 4 KiB")]
    UriTooLong,
    #[response(status = 431, description = "More than 64 headers, or 16 KiB of them")]
    HeadersTooLarge,
    #[response(status = 503, description = "A backend is down")]
    Unavailable,
    #[response(status = 504, description = "The service did not answer in time")]
    Timeout,
}

/// Every error is a problem (RFC 9457): each 4xx and 5xx answer declared
/// without a body gets the problem+json one, so that no operation has to
/// spell it out.
fn problem_bodies(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
            &mut item.query,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response
                    && (status.starts_with('4') || status.starts_with('5'))
                    && response.content.is_empty()
                {
                    let problem = Content::new(Some(Ref::from_schema_name("Problem")));
                    response.content.insert("application/problem+json".into(), RefOr::T(problem));
                }
            }
        }
    }
}

// The operations the gateway answers itself. Their handlers live in the
// gateway, which this tier does not link; these only carry the
// documentation.

/// The calling API key's plan, its limits and what is left of them today.
#[utoipa::path(get, path = "/partner/v1/usage", tag = "partner",
    responses((status = 200, description = "Done", body = UsageView), Refusals),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[allow(dead_code)]
fn get_partner_usage() {}

/// Every partner API key, oldest first (never the keys themselves).
#[utoipa::path(get, path = "/ops/v1/keys", tag = "ops",
    responses((status = 200, description = "Done", body = KeyList), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn list_keys() {}

/// Issues a partner API key; the answer is the only time the key is shown.
#[utoipa::path(post, path = "/ops/v1/keys", tag = "ops",
    request_body = KeyRequest,
    responses(
        (status = 201, description = "Done", body = KeyCreated),
        (status = 413, description = "Body too large"),
        (status = 422, description = "Unknown scope or plan, the ops scope, or an empty partner"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn create_key() {}

/// Revokes a key; every gateway replica refuses it within 5 s.
#[utoipa::path(post, path = "/ops/v1/keys/{id}/revoke", tag = "ops",
    params(("id" = String, Path, description = "Key id, key_...")),
    responses(
        (status = 200, description = "Done", body = KeyView),
        (status = 404, description = "No such key"),
        (status = 409, description = "Already revoked"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn revoke_key() {}

/// Issues a key in place of this one, which keeps working for the grace period.
#[utoipa::path(post, path = "/ops/v1/keys/{id}/rotate", tag = "ops",
    params(("id" = String, Path, description = "Key id, key_...")),
    request_body = Option<RotateRequest>,
    responses(
        (status = 201, description = "Done", body = KeyCreated),
        (status = 404, description = "No such key"),
        (status = 409, description = "Already revoked"),
        (status = 413, description = "Body too large"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn rotate_key() {}

#[doc = "The audit trail of partner API keys (created, revoked, rotated; by the ops API or the command line), \
         newest first; `erp-connect audit verify` checks that no row was altered or removed."]
#[utoipa::path(get, path = "/ops/v1/audit", tag = "ops",
    params(
        ("actor" = Option<String>, Query, description = "Only this actor", max_length = 256),
        ("action" = Option<String>, Query, description = "Only this action, e.g. keys.create", max_length = 256),
        ("object" = Option<String>, Query, description = "Only this object, e.g. a key id", max_length = 256),
        ("since" = Option<String>, Query, description = "At or after: RFC 3339, or a date (midnight UTC)"),
        ("until" = Option<String>, Query, description = "Before: RFC 3339, or a date (midnight UTC)"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 50"),
        ("page_token" = Option<String>, Query, description = "The previous page's next_page_token")
    ),
    responses((status = 200, description = "Done", body = AuditList), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn list_audit() {}

#[doc = "The ops console's charts: each tier's requests, errors and latency per 10 s over the last 15 minutes, \
         orders per status, the outbox, the ERP change feed's lag, circuit breakers and rate limits."]
#[utoipa::path(get, path = "/ops/v1/overview", tag = "ops",
    responses((status = 200, description = "Done", body = Overview), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[allow(dead_code)]
fn get_overview() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes_and_the_problem_schema() {
        let doc: serde_json::Value = serde_json::from_str(&json()).expect("JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(doc["components"]["securitySchemes"]["api_key"]["name"], "X-API-Key");
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        let place = &doc["paths"]["/web/v1/orders"]["post"];
        assert_eq!(place["security"][0]["bearer"][0], "orders:write");
        assert!(place["responses"]["422"]["content"]["application/problem+json"].is_object(), "{place}");
    }
}
