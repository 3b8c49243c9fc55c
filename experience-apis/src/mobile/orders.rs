//! `/mobile/v1/orders`: the signed-in customer's orders, compact.
//!
//! The mobile app's customer is the web shop's ([`web::orders::customer`]):
//! an order placed in the app shows on the web and the other way round, and
//! someone else's order answers 404 like one that does not exist. Placing
//! takes the web shop's body; a retried tap with the same `Idempotency-Key`
//! answers the first order and places nothing new.

use crate::body::Json;
use axum::{
    extract::{RawQuery, State},
    response::Response,
};
use erp_connect_proto::order_to_cash::v1::{ListOrdersRequest, Order, OrderStatus, PaymentMethod};
use serde::Serialize;

use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::{Caller, IdempotencyKey, ObjectId},
    openapi::{BodyRefusals, Refusals},
    orders::{self, OrderRequest, rfc3339, status_name},
    page::PageQuery,
    web::{self, orders::TENANT},
};

/// The custom fields the app may set are the web shop's.
const AUDIENCE: &str = "web";

/// An order in a list: enough for one row on a phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MobileOrderSummary {
    /// Our order id, `ord_...`.
    pub id: String,
    /// `accepted`, `confirmed`, `invoiced`, `paid`, `shipped`, `completed`,
    /// `cancelled` or `rejected`.
    pub status: &'static str,
    /// Sum of the lines, a decimal string.
    pub total: String,
    /// ISO 4217 currency of `total`.
    pub currency: String,
    /// Units ordered over all lines.
    pub items: i64,
    /// When the order was accepted, RFC 3339 UTC.
    pub created_at: Option<String>,
}

/// One order: the summary, its lines and what happened last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MobileOrder {
    /// Our order id, `ord_...`.
    pub id: String,
    /// `accepted`, `confirmed`, `invoiced`, `paid`, `shipped`, `completed`,
    /// `cancelled` or `rejected`.
    pub status: &'static str,
    /// Sum of the lines, a decimal string.
    pub total: String,
    /// ISO 4217 currency of every amount.
    pub currency: String,
    /// The lines, priced.
    pub lines: Vec<MobileLine>,
    /// `card` or `on_account`.
    pub payment: Option<&'static str>,
    /// When the order was accepted, RFC 3339 UTC.
    pub created_at: Option<String>,
    /// When the order last changed, RFC 3339 UTC.
    pub updated_at: Option<String>,
    /// Why the order was rejected or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MobileLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i64,
    /// `quantity × unit price`, a decimal string.
    pub amount: String,
}

/// One page of the customer's orders, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MobileOrderPage {
    /// Orders on this page.
    pub orders: Vec<MobileOrderSummary>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<Order> for MobileOrderSummary {
    fn from(order: Order) -> Self {
        Self {
            status: status_name(order.status),
            items: order.lines.iter().map(|l| l.quantity).fold(0, i64::saturating_add),
            created_at: rfc3339(order.created_at.as_ref()),
            id: order.id,
            total: order.total,
            currency: order.currency,
        }
    }
}

impl From<Order> for MobileOrder {
    fn from(order: Order) -> Self {
        let ended = matches!(OrderStatus::try_from(order.status), Ok(OrderStatus::Rejected | OrderStatus::Cancelled));
        Self {
            status: status_name(order.status),
            payment: match PaymentMethod::try_from(order.payment_method) {
                Ok(PaymentMethod::Card) => Some("card"),
                Ok(PaymentMethod::OnAccount) => Some("on_account"),
                Ok(PaymentMethod::Unspecified) | Err(_) => None,
            },
            lines: order
                .lines
                .into_iter()
                .map(|l| MobileLine { sku: l.sku, quantity: l.quantity, amount: l.amount })
                .collect(),
            created_at: rfc3339(order.created_at.as_ref()),
            updated_at: rfc3339(order.updated_at.as_ref()),
            reason: Some(order.reason).filter(|r| ended && !r.is_empty()),
            id: order.id,
            total: order.total,
            currency: order.currency,
        }
    }
}

#[doc = "Places an order for the signed-in customer (the web shop's body); a retried tap with the same key places \
         nothing new."]
#[utoipa::path(post, path = "/orders", tag = "mobile", operation_id = "place_mobile_order",
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order",
        pattern = "^[!-~]{1,255}$")),
    request_body = OrderRequest,
    responses(
        (status = 201, description = "Done", body = MobileOrder),
        (status = 422, description = "Unknown SKU, bad quantity, or the key reused with another body"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["orders:write"]), ("api_key" = ["orders:write"]))
)]
#[tracing::instrument(skip_all)]
pub async fn place(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    key: IdempotencyKey,
    JsonBody(body): JsonBody<OrderRequest>,
) -> Result<Response, Error> {
    let customer = web::orders::customer(&principal);
    // Scoped like the web shop's keys: one customer, one key space, so the
    // same tap retried from either channel places one order.
    let key = key.scoped_to(&customer.external_id);
    let call = body.into_place_order(key, TENANT, customer, &upstreams.custom_fields, AUDIENCE)?;
    let order = orders::client(&upstreams).place_order(call).await?.into_inner();
    tracing::info!(order_id = %order.id, "order placed");
    let location = format!("/mobile/v1/orders/{}", order.id);
    Ok(orders::created(&location, MobileOrder::from(order)))
}

/// The signed-in customer's orders, newest first, compact.
#[utoipa::path(get, path = "/orders", tag = "mobile", operation_id = "list_mobile_orders",
    params(
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 10", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query)
    ),
    responses((status = 200, description = "Done", body = MobileOrderPage), Refusals),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<MobileOrderPage>, Error> {
    let query = PageQuery::parse(raw.as_deref())?;
    let page = orders::client(&upstreams)
        .list_orders(ListOrdersRequest {
            tenant: TENANT.to_owned(),
            customer_external_id: web::orders::customer(&principal).external_id,
            page_size: query.page_size.unwrap_or(super::DEFAULT_PAGE_SIZE) as i32,
            page_token: query.page_token.unwrap_or_default(),
            ..ListOrdersRequest::default()
        })
        .await
        .map_err(Error::from_query_status)?
        .into_inner();
    Ok(Json(MobileOrderPage {
        orders: page.orders.into_iter().map(MobileOrderSummary::from).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One of the signed-in customer's orders, compact.
#[utoipa::path(get, path = "/orders/{id}", tag = "mobile", operation_id = "get_mobile_order",
    params(("id" = String, Path, description = "Order id, ord_...")),
    responses(
        (status = 200, description = "Done", body = MobileOrder),
        (status = 404, description = "No such order of this customer"),
        Refusals
    ),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn get(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    ObjectId(id): ObjectId,
) -> Result<Json<MobileOrder>, Error> {
    Ok(Json(MobileOrder::from(web::orders::own_order(&upstreams, &principal, id).await?)))
}
