//! `/partner/v1/orders`: the partner tenant's orders.

use crate::body::Json;
use axum::{
    extract::{RawQuery, State},
    response::Response,
};
use erp_connect_proto::order_to_cash::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, Order};
use serde::Deserialize;

use super::Partner;
use crate::{
    Upstreams,
    body::{JsonBody, OptionalJsonBody},
    error::Error,
    extract::{IdempotencyKey, ObjectId},
    openapi::{BodyRefusals, Refusals},
    orders::{self, OrderPage, OrderRequest, OrderView},
    page::PageQuery,
};

/// The audience whose custom fields partners see and set.
const AUDIENCE: &str = "partner";

/// Longest cancellation reason kept; it ends up on the ERP documents.
const MAX_REASON_LEN: usize = 500;

/// The optional body of `POST /partner/v1/orders/{id}/cancel`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why the partner cancels, shown on the order.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Places an order for the partner's tenant; the partner's own SKUs are mapped to ours.
#[utoipa::path(post, path = "/orders", tag = "partner", operation_id = "place_partner_order",
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order",
        pattern = "^[!-~]{1,255}$")),
    request_body = OrderRequest,
    responses(
        (status = 201, description = "Done", body = OrderView),
        (status = 422, description = "Unknown SKU, bad quantity, a broken validation rule (its name starts the \
            message), or the key reused with another body"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["orders:write"]), ("api_key" = ["orders:write"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn place(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    key: IdempotencyKey,
    JsonBody(body): JsonBody<OrderRequest>,
) -> Result<Response, Error> {
    // The process tier scopes idempotency keys by tenant, which is the partner.
    let call =
        body.into_place_order(key.key, &partner.tenant, partner.customer(), &upstreams.custom_fields, AUDIENCE)?;
    let order = orders::client(&upstreams).place_order(call).await?.into_inner();
    tracing::info!(order_id = %order.id, "order placed");
    let location = format!("/partner/v1/orders/{}", order.id);
    Ok(orders::created(&location, OrderView::shown_to(order, &upstreams.custom_fields, AUDIENCE)))
}

/// The tenant's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "partner", operation_id = "list_partner_orders",
    params(("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)),
    responses((status = 200, description = "Done", body = OrderPage), Refusals),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn list(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    RawQuery(raw): RawQuery,
) -> Result<Json<OrderPage>, Error> {
    let query = PageQuery::parse(raw.as_deref())?;
    let page = orders::client(&upstreams)
        .list_orders(ListOrdersRequest {
            tenant: partner.tenant.clone(),
            page_size: query.page_size(),
            page_token: query.page_token.unwrap_or_default(),
            ..ListOrdersRequest::default()
        })
        .await
        .map_err(Error::from_query_status)?
        .into_inner();
    let orders = page
        .orders
        .into_iter()
        .filter(|o| belongs_to(o, &partner))
        .map(|o| OrderView::shown_to(o, &upstreams.custom_fields, AUDIENCE))
        .collect();
    Ok(Json(OrderPage { orders, next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()) }))
}

/// One of the tenant's orders.
#[utoipa::path(get, path = "/orders/{id}", tag = "partner", operation_id = "get_partner_order",
    params(("id" = String, Path, description = "Order id, ord_...")),
    responses(
        (status = 200, description = "Done", body = OrderView),
        (status = 404, description = "No such order of this tenant"),
        Refusals
    ),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant, order_id = %id))]
pub async fn get(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Json<OrderView>, Error> {
    let order = orders::client(&upstreams)
        .get_order(GetOrderRequest { tenant: partner.tenant.clone(), order_id: id })
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    if !belongs_to(&order, &partner) {
        return Err(Error::NotFound("no such order"));
    }
    Ok(Json(OrderView::shown_to(order, &upstreams.custom_fields, AUDIENCE)))
}

/// Cancels an order before it ships; every step done is compensated.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "partner", operation_id = "cancel_partner_order",
    params(("id" = String, Path, description = "Order id, ord_...")),
    request_body = Option<CancelBody>,
    responses(
        (status = 200, description = "Done", body = OrderView),
        (status = 404, description = "No such order of this tenant"),
        (status = 409, description = "Shipped or ended: too late to cancel"),
        (status = 413, description = "Body too large"),
        Refusals
    ),
    security(("bearer" = ["orders:write"]), ("api_key" = ["orders:write"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant, order_id = %id))]
pub async fn cancel(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    OptionalJsonBody(body): OptionalJsonBody<CancelBody>,
) -> Result<Json<OrderView>, Error> {
    let reason = body.unwrap_or_default().reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(Error::MalformedBody {
            detail: format!("the body does not fit this request: reason is longer than {MAX_REASON_LEN} characters"),
            errors: vec![platform::problem::FieldError {
                field: "reason".into(),
                message: format!("must be at most {MAX_REASON_LEN} characters"),
            }],
        });
    }
    let order = orders::client(&upstreams)
        .cancel_order(CancelOrderRequest { tenant: partner.tenant.clone(), order_id: id, reason })
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    tracing::info!(status = orders::status_name(order.status), "cancel requested");
    Ok(Json(OrderView::shown_to(order, &upstreams.custom_fields, AUDIENCE)))
}

/// Defence in depth: the process tier already confines every call to the
/// tenant, and an order that says otherwise is not shown.
fn belongs_to(order: &Order, partner: &Partner) -> bool {
    let ok = order.tenant.is_empty() || order.tenant == partner.tenant;
    if !ok {
        tracing::error!(order_id = %order.id, "the process tier returned another tenant's order");
    }
    ok
}
