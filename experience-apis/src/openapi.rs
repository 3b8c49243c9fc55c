//! The OpenAPI 3.1 document of the public API: every route the gateway
//! forwards, its scope, parameters, bodies and every status it can answer
//! (errors as RFC 9457 problem+json).
//!
//! The operations are declared here, in one place, rather than on each
//! handler: the gateway's route table is what decides which routes exist
//! and which scope each needs, and a test (`tests/openapi.rs` at the
//! workspace root) holds this document to that table.

use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{
    mobile::{
        events::StatusEvent,
        orders::{MobileLine, MobileOrder, MobileOrderPage, MobileOrderSummary},
        products::{MobileProduct, MobileProductPage},
    },
    ops::quarantine::{DiscardBody, QuarantinePage, QuarantinedView, ReplayBody},
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
struct Problem {
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
enum OrderStatusName {
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

/// The API, for `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-connect",
        description = "API-led connectivity for ERP systems: the catalogue, orders from acceptance to cash, \
                       invoices and operations, for web shops, partners and operators."
    ),
    paths(
        list_products,
        list_partner_products,
        place_web_order,
        list_web_orders,
        get_web_order,
        list_mobile_products,
        place_mobile_order,
        list_mobile_orders,
        get_mobile_order,
        watch_mobile_order,
        place_partner_order,
        list_partner_orders,
        get_partner_order,
        cancel_partner_order,
        get_partner_invoice,
        get_partner_usage,
        list_ops_orders,
        get_ops_order,
        record_payment,
        complete_shipment,
        list_keys,
        create_key,
        revoke_key,
        rotate_key,
        get_overview,
        create_webhook,
        list_webhooks,
        get_webhook,
        update_webhook,
        delete_webhook,
        rotate_webhook_secret,
        test_webhook,
        list_webhook_deliveries,
        replay_webhook,
        list_ops_webhooks,
        list_ops_webhook_deliveries,
        get_ops_webhook,
        update_ops_webhook,
        delete_ops_webhook,
        list_ops_endpoint_deliveries,
        replay_ops_webhook,
        import_order_batch,
        get_order_batch,
        list_order_batch_results,
        list_quarantine,
        get_quarantined,
        replay_quarantined,
        discard_quarantined
    ),
    components(schemas(
        Problem,
        FieldError,
        UsageView,
        KeyView,
        KeyList,
        KeyCreated,
        KeyRequest,
        RotateRequest,
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
        (name = "ops", description = "Operators: orders of every tenant, cash application and the warehouse's stand-in.")
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into())
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

// The operations. Each body is empty: the handlers live in their audience's
// module; these only carry the documentation.

/// The catalogue with price and availability.
#[utoipa::path(get, path = "/web/v1/products", tag = "web",
    params(
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without scope catalog:read", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Path and query longer than 4 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 431, description = "More than 64 headers, or 16 KiB of them", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["catalog:read"]))
)]
#[allow(dead_code)]
fn list_products() {}

/// The catalogue with price and availability, and the product custom fields shown to partners.
#[utoipa::path(get, path = "/partner/v1/products", tag = "partner",
    params(
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without scope catalog:read", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The API key's rate limit is reached; retry after Retry-After seconds", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Path and query longer than 4 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 431, description = "More than 64 headers, or 16 KiB of them", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["catalog:read"]), ("api_key" = ["catalog:read"]))
)]
#[allow(dead_code)]
fn list_partner_products() {}

/// The catalogue for small screens: a few fields per product, small pages.
#[utoipa::path(get, path = "/mobile/v1/products", tag = "mobile",
    params(
        ("fields" = Option<String>, Query, description = "Comma-separated selection out of sku, name, price, currency, \
            in_stock; default all", example = "sku,price,in_stock"),
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 10", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = MobileProductPage),
        (status = 400, description = "Bad query parameters, e.g. an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without scope catalog:read", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Path and query longer than 4 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 431, description = "More than 64 headers, or 16 KiB of them", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["catalog:read"]))
)]
#[allow(dead_code)]
fn list_mobile_products() {}

/// The order's status as server-sent events: one `status` event per status reached, `id:` its place
/// (1 for accepted, ...); reconnect with `Last-Event-ID` to get only later ones. A comment at least every
/// 15 s; the stream ends after completed, cancelled or rejected.
#[utoipa::path(get, path = "/mobile/v1/orders/{id}/events", tag = "mobile",
    params(
        ("id" = String, Path, description = "Order id, ord_..."),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received", pattern = "^[0-9]+$")
    ),
    responses(
        (status = 200, description = "text/event-stream; each event's data is a StatusEvent", body = StatusEvent, content_type = "text/event-stream"),
        (status = 400, description = "A Last-Event-ID this stream did not send", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without scope orders:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of this customer", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Path and query longer than 4 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 431, description = "More than 64 headers, or 16 KiB of them", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["orders:read"]))
)]
#[allow(dead_code)]
fn watch_mobile_order() {}

macro_rules! order_operations {
    ($($name:ident: $method:ident $path:literal, $tag:literal, $scope:literal, $summary:literal,
       [$($param:tt)*], [$($body:tt)*], $ok:literal => $ok_body:ty, [$($status:literal: $why:literal),*];)*) => {$(
        #[doc = $summary]
        #[utoipa::path($method, path = $path, tag = $tag,
            params($($param)*),
            $($body)*
            responses(
                (status = $ok, description = "Done", body = $ok_body),
                (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
                (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "Without the scope", body = Problem, content_type = "application/problem+json"),
                $((status = $status, description = $why, body = Problem, content_type = "application/problem+json"),)*
                (status = 429, description = "The API key's rate limit (or, placing an order, its daily order quota) is reached; \
                    retry after Retry-After seconds. Every answer to a metered key carries RateLimit-Limit, \
                    RateLimit-Remaining and RateLimit-Reset", body = Problem, content_type = "application/problem+json"),
                (status = 414, description = "Path and query longer than 4 KiB", body = Problem, content_type = "application/problem+json"),
                (status = 431, description = "More than 64 headers, or 16 KiB of them", body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "A backend is down; retry later", body = Problem, content_type = "application/problem+json"),
                (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
            ),
            security(("bearer" = [$scope]), ("api_key" = [$scope]))
        )]
        #[allow(dead_code)]
        fn $name() {}
    )*};
}

order_operations! {
    place_web_order: post "/web/v1/orders", "web", "orders:write", "Places an order for the signed-in customer.",
        [("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order", pattern = "^[!-~]{1,255}$")],
        [request_body = OrderRequest,], 201 => OrderView,
        [413: "Body too large", 415: "Not JSON", 422: "Unknown SKU, bad quantity, or the key reused with another body"];
    list_web_orders: get "/web/v1/orders", "web", "orders:read", "The signed-in customer's orders, newest first.",
        [("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)],
        [], 200 => OrderPage, [];
    get_web_order: get "/web/v1/orders/{id}", "web", "orders:read", "One of the signed-in customer's orders.",
        [("id" = String, Path, description = "Order id, ord_...")],
        [], 200 => OrderView, [404: "No such order of this customer"];
    place_mobile_order: post "/mobile/v1/orders", "mobile", "orders:write",
        "Places an order for the signed-in customer (the web shop's body); a retried tap with the same key places nothing new.",
        [("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order", pattern = "^[!-~]{1,255}$")],
        [request_body = OrderRequest,], 201 => MobileOrder,
        [413: "Body too large", 415: "Not JSON", 422: "Unknown SKU, bad quantity, or the key reused with another body"];
    list_mobile_orders: get "/mobile/v1/orders", "mobile", "orders:read", "The signed-in customer's orders, newest first, compact.",
        [("page_size" = Option<u32>, Query, description = "1 to 100, default 10", minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)],
        [], 200 => MobileOrderPage, [];
    get_mobile_order: get "/mobile/v1/orders/{id}", "mobile", "orders:read", "One of the signed-in customer's orders, compact.",
        [("id" = String, Path, description = "Order id, ord_...")],
        [], 200 => MobileOrder, [404: "No such order of this customer"];
    place_partner_order: post "/partner/v1/orders", "partner", "orders:write",
        "Places an order for the partner's tenant; the partner's own SKUs are mapped to ours.",
        [("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order", pattern = "^[!-~]{1,255}$")],
        [request_body = OrderRequest,], 201 => OrderView,
        [413: "Body too large", 415: "Not JSON",
         422: "Unknown SKU, bad quantity, a broken validation rule (its name starts the message), or the key reused with another body"];
    list_partner_orders: get "/partner/v1/orders", "partner", "orders:read", "The tenant's orders, newest first.",
        [("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)],
        [], 200 => OrderPage, [];
    get_partner_order: get "/partner/v1/orders/{id}", "partner", "orders:read", "One of the tenant's orders.",
        [("id" = String, Path, description = "Order id, ord_...")],
        [], 200 => OrderView, [404: "No such order of this tenant"];
    cancel_partner_order: post "/partner/v1/orders/{id}/cancel", "partner", "orders:write",
        "Cancels an order before it ships; every step done is compensated.",
        [("id" = String, Path, description = "Order id, ord_...")],
        [request_body = Option<CancelBody>,], 200 => OrderView,
        [404: "No such order of this tenant", 409: "Shipped or ended: too late to cancel", 413: "Body too large"];
    get_partner_invoice: get "/partner/v1/invoices/{id}", "partner", "invoices:read", "The invoice of one of the tenant's orders.",
        [("id" = String, Path, description = "ERP invoice id, from an order's erp.invoice_id")],
        [], 200 => InvoiceView, [404: "No such invoice of this tenant"];
    get_partner_usage: get "/partner/v1/usage", "partner", "orders:read",
        "The calling API key's plan, its limits and what is left of them today.",
        [], [], 200 => UsageView, [];
    list_ops_orders: get "/ops/v1/orders", "ops", "ops",
        "Orders of every tenant, newest first: all, or found by id or the start of an external reference, and by status.",
        [("q" = Option<String>, Query, description = "An order id (whole), or the start of an external reference \
            (case-sensitive); empty: every order", max_length = 200),
         ("status" = Option<OrderStatusName>, Query, description = "Only orders in this status"),
         ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)],
        [], 200 => OpsOrderPage, [];
    get_ops_order: get "/ops/v1/orders/{id}", "ops", "ops",
        "An order of any tenant, with its tenant and everything its saga recorded.",
        [("id" = String, Path, description = "Order id, ord_...")],
        [], 200 => OpsOrderView, [404: "No such order"];
    record_payment: post "/ops/v1/payments", "ops", "ops", "Cash application: records a payment against an on-account order's invoice.",
        [("Idempotency-Key" = Option<String>, Header, description = "The same key records the payment once", pattern = "^[!-~]{1,255}$")],
        [request_body = PaymentBody,], 200 => OrderView,
        [404: "No such order", 409: "Not invoiced yet, paid by card, or ended", 413: "Body too large",
         415: "Not JSON", 422: "Bad amount or currency"];
    list_keys: get "/ops/v1/keys", "ops", "ops", "Every partner API key, oldest first (never the keys themselves).",
        [], [], 200 => KeyList, [];
    create_key: post "/ops/v1/keys", "ops", "ops", "Issues a partner API key; the answer is the only time the key is shown.",
        [], [request_body = KeyRequest,], 201 => KeyCreated,
        [413: "Body too large", 422: "Unknown scope or plan, the ops scope, or an empty partner"];
    revoke_key: post "/ops/v1/keys/{id}/revoke", "ops", "ops", "Revokes a key; every gateway replica refuses it within 5 s.",
        [("id" = String, Path, description = "Key id, key_...")],
        [], 200 => KeyView, [404: "No such key", 409: "Already revoked"];
    rotate_key: post "/ops/v1/keys/{id}/rotate", "ops", "ops",
        "Issues a key in place of this one, which keeps working for the grace period.",
        [("id" = String, Path, description = "Key id, key_...")],
        [request_body = Option<RotateRequest>,], 201 => KeyCreated,
        [404: "No such key", 409: "Already revoked", 413: "Body too large"];
    get_overview: get "/ops/v1/overview", "ops", "ops",
        "The ops console's charts: each tier's requests, errors and latency per 10 s over the last 15 minutes, \
         orders per status, the outbox, the ERP change feed's lag, circuit breakers and rate limits.",
        [], [], 200 => Overview, [];
    create_webhook: post "/partner/v1/webhooks", "partner", "webhooks:manage",
        "Subscribes an endpoint to events; the answer is the only time its signing secret is shown.",
        [], [request_body = WebhookRequest,], 201 => WebhookCreated,
        [409: "The tenant has 20 endpoints already", 413: "Body too large", 415: "Not JSON",
         422: "Unknown event type, or a URL that is not https or does not resolve to a public address"];
    list_webhooks: get "/partner/v1/webhooks", "partner", "webhooks:manage", "The tenant's webhook endpoints.",
        [], [], 200 => WebhookList, [];
    get_webhook: get "/partner/v1/webhooks/{id}", "partner", "webhooks:manage", "One of the tenant's webhook endpoints.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 200 => WebhookView, [404: "No such endpoint of this tenant"];
    update_webhook: patch "/partner/v1/webhooks/{id}", "partner", "webhooks:manage",
        "Changes an endpoint: its URL, events, description, or status (enable it again after it was disabled).",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [request_body = WebhookPatch,], 200 => WebhookView,
        [404: "No such endpoint of this tenant", 413: "Body too large", 415: "Not JSON", 422: "Unknown event type or refused URL"];
    delete_webhook: delete "/partner/v1/webhooks/{id}", "partner", "webhooks:manage",
        "Removes an endpoint and its delivery log.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 204 => (), [404: "No such endpoint of this tenant"];
    rotate_webhook_secret: post "/partner/v1/webhooks/{id}/rotate-secret", "partner", "webhooks:manage",
        "Issues a new signing secret; the old one keeps signing beside it for 24 hours.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 200 => WebhookCreated, [404: "No such endpoint of this tenant", 413: "Body too large"];
    test_webhook: post "/partner/v1/webhooks/{id}/test", "partner", "webhooks:manage",
        "Queues a webhook.test event for the endpoint.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 202 => DeliveryView, [404: "No such endpoint of this tenant"];
    list_webhook_deliveries: get "/partner/v1/webhooks/{id}/deliveries", "partner", "webhooks:manage",
        "The endpoint's delivery log, newest first, with every attempt.",
        [("id" = String, Path, description = "Endpoint id, whe_..."),
         ("status" = Option<String>, Query, description = "pending, delivered or failed", pattern = "^(pending|delivered|failed)$"),
         ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query, max_length = 512)],
        [], 200 => DeliveryPage, [404: "No such endpoint of this tenant"];
    replay_webhook: post "/partner/v1/webhooks/{id}/replay", "partner", "webhooks:manage",
        "Sends events again: one by event_id, or every subscribed one since a time.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [request_body = ReplayRequest,], 202 => ReplayView,
        [404: "No such endpoint or event of this tenant", 413: "Body too large", 415: "Not JSON",
         422: "Neither or both of event_id and since, or a bad time"];
    list_ops_webhooks: get "/ops/v1/webhooks", "ops", "ops", "Every tenant's webhook endpoints.",
        [], [], 200 => WebhookList, [];
    list_ops_webhook_deliveries: get "/ops/v1/webhooks/deliveries", "ops", "ops",
        "Every tenant's webhook deliveries, newest first; status=failed lists the dead letters.",
        [("status" = Option<String>, Query, description = "pending, delivered or failed", pattern = "^(pending|delivered|failed)$"),
         ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query, max_length = 512)],
        [], 200 => DeliveryPage, [];
    get_ops_webhook: get "/ops/v1/webhooks/{id}", "ops", "ops", "A webhook endpoint of any tenant.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 200 => WebhookView, [404: "No such endpoint"];
    update_ops_webhook: patch "/ops/v1/webhooks/{id}", "ops", "ops", "Changes, disables or enables an endpoint of any tenant.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [request_body = WebhookPatch,], 200 => WebhookView,
        [404: "No such endpoint", 413: "Body too large", 415: "Not JSON", 422: "Unknown event type or refused URL"];
    delete_ops_webhook: delete "/ops/v1/webhooks/{id}", "ops", "ops", "Removes an endpoint of any tenant and its delivery log.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [], 204 => (), [404: "No such endpoint"];
    list_ops_endpoint_deliveries: get "/ops/v1/webhooks/{id}/deliveries", "ops", "ops",
        "An endpoint's delivery log, newest first.",
        [("id" = String, Path, description = "Endpoint id, whe_..."),
         ("status" = Option<String>, Query, description = "pending, delivered or failed", pattern = "^(pending|delivered|failed)$"),
         ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query, max_length = 512)],
        [], 200 => DeliveryPage, [404: "No such endpoint"];
    replay_ops_webhook: post "/ops/v1/webhooks/{id}/replay", "ops", "ops",
        "Sends events again to an endpoint of any tenant: one by event_id, or every subscribed one since a time.",
        [("id" = String, Path, description = "Endpoint id, whe_...")],
        [request_body = ReplayRequest,], 202 => ReplayView,
        [404: "No such endpoint or event", 413: "Body too large", 415: "Not JSON", 422: "Neither or both of event_id and since, or a bad time"];
    get_order_batch: get "/partner/v1/order-batches/{id}", "partner", "orders:read",
        "An order file and how far its import got: rows, orders accepted, rows rejected and quarantined.",
        [("id" = String, Path, description = "Batch id, bat_...")],
        [], 200 => BatchView, [404: "No such batch of this tenant"];
    list_quarantine: get "/ops/v1/quarantine", "ops", "ops",
        "Quarantined orders of every partner, newest first: the original records and every reason.",
        [("partner" = Option<String>, Query, max_length = 200), ("source" = Option<String>, Query, description = "e.g. batch:bat_...", max_length = 200),
         ("reason" = Option<String>, Query, description = "A rule or field among the reasons", max_length = 200),
         ("status" = Option<String>, Query, description = "open (default), replayed, discarded or any", pattern = "^(open|replayed|discarded|any)$"),
         ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query, max_length = 200)],
        [], 200 => QuarantinePage, [];
    get_quarantined: get "/ops/v1/quarantine/{id}", "ops", "ops", "One quarantine entry.",
        [("id" = String, Path, description = "Entry id, qua_...")],
        [], 200 => QuarantinedView, [404: "No such entry"];
    replay_quarantined: post "/ops/v1/quarantine/{id}/replay", "ops", "ops",
        "Imports a quarantined order again, as it was or corrected (in the original's field names); audited.",
        [("id" = String, Path, description = "Entry id, qua_...")],
        [request_body = Option<ReplayBody>,], 200 => QuarantinedView,
        [404: "No such entry", 409: "Replayed or discarded already", 413: "Body too large", 415: "Not JSON",
         422: "Still refused: the reasons, the entry stays open"];
    discard_quarantined: post "/ops/v1/quarantine/{id}/discard", "ops", "ops",
        "Discards a quarantined order, with the reason; audited.",
        [("id" = String, Path, description = "Entry id, qua_...")],
        [request_body = DiscardBody,], 200 => QuarantinedView,
        [404: "No such entry", 409: "Replayed or discarded already", 413: "Body too large", 415: "Not JSON", 422: "No reason"];
    complete_shipment: post "/ops/v1/shipments/{id}/complete", "ops", "ops",
        "Marks a shipment done in the ERP, standing in for the warehouse.",
        [("id" = String, Path, description = "ERP shipment id, from an order's erp.shipments")],
        [], 200 => ShipmentView, [404: "No such shipment", 409: "The shipment cannot be completed"];
}

/// Imports an order file: CSV (`text/csv`) or JSON lines
/// (`application/x-ndjson`), one row per order line, header
/// `external_ref,sku,quantity,unit,payment,ship_to_street,ship_to_city,ship_to_postal_code,ship_to_country`;
/// rows sharing an `external_ref` form one order. The same file (by SHA-256,
/// or the same Idempotency-Key) is imported once.
#[utoipa::path(post, path = "/partner/v1/order-batches", tag = "partner",
    params(
        ("dry_run" = Option<bool>, Query, description = "Validate and map only: nothing is created"),
        ("Idempotency-Key" = Option<String>, Header, description = "Instead of the file's SHA-256", pattern = "^[!-~]{1,255}$")
    ),
    request_body(content = String, description = "The file", content_type = "text/csv"),
    responses(
        (status = 202, description = "Stored; the rows are imported in the background", body = BatchView),
        (status = 400, description = "Bad query parameters or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without the scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over 256 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither text/csv nor application/x-ndjson", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The upload broke off", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The API key's rate limit is reached", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down; retry later", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["orders:write"]), ("api_key" = ["orders:write"]))
)]
#[allow(dead_code)]
fn import_order_batch() {}

/// One result per row of an order file, in row order: JSON lines, or CSV
/// with `Accept: text/csv` (`row,external_ref,status,order_id,errors`).
#[utoipa::path(get, path = "/partner/v1/order-batches/{id}/results", tag = "partner",
    params(("id" = String, Path, description = "Batch id, bat_...")),
    responses(
        (status = 200, description = "Every row's result", body = RowResultView, content_type = "application/x-ndjson"),
        (status = 401, description = "No or invalid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without the scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such batch of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The API key's rate limit is reached", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend is down; retry later", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The service did not answer in time", body = Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[allow(dead_code)]
fn list_order_batch_results() {}

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
