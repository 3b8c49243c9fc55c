//! `/web/v1/orders`: the signed-in customer's own orders.
//!
//! Every web shop customer lives in the tenant [`TENANT`]; the customer is
//! the token's subject, resolved (or created) in the ERP by the process
//! tier from [`customer`]. A customer only ever sees their own orders:
//! lists are filtered by customer, and someone else's order answers 404
//! exactly like one that does not exist.

use crate::body::Json;
use axum::{
    extract::{RawQuery, State},
    response::Response,
};
use erp_connect_proto::order_to_cash::v1::{CustomerRef, GetOrderRequest, ListOrdersRequest, Order};
use platform::principal::Principal;

use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::{Caller, IdempotencyKey, ObjectId},
    openapi::{BodyRefusals, Refusals},
    orders::{self, OrderPage, OrderRequest, OrderView},
    page::PageQuery,
};

/// The tenant of every web shop order.
pub const TENANT: &str = "web";

/// The audience whose custom fields the web shop sees and sets.
const AUDIENCE: &str = "web";

/// The ERP customer behind a web shop user.
pub fn customer(principal: &Principal) -> CustomerRef {
    let email = principal.email.clone().unwrap_or_default();
    CustomerRef {
        external_id: format!("{TENANT}:{}", principal.subject),
        // The ERP needs a display name; the e-mail is the best one a token
        // carries, the subject the only one it always does.
        name: if email.is_empty() { principal.subject.clone() } else { email.clone() },
        email,
    }
}

/// Places an order for the signed-in customer.
#[utoipa::path(post, path = "/orders", tag = "web", operation_id = "place_web_order",
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same order",
        pattern = "^[!-~]{1,255}$")),
    request_body = OrderRequest,
    responses(
        (status = 201, description = "Done", body = OrderView),
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
    let customer = customer(&principal);
    let key = key.scoped_to(&customer.external_id);
    let call = body.into_place_order(key, TENANT, customer, &upstreams.custom_fields, AUDIENCE)?;
    let order = orders::client(&upstreams).place_order(call).await?.into_inner();
    tracing::info!(order_id = %order.id, "order placed");
    let location = format!("/web/v1/orders/{}", order.id);
    Ok(orders::created(&location, OrderView::shown_to(order, &upstreams.custom_fields, AUDIENCE)))
}

/// The signed-in customer's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "web", operation_id = "list_web_orders",
    params(("page_size" = Option<u32>, Query, minimum = 1, maximum = 100), ("page_token" = Option<String>, Query)),
    responses((status = 200, description = "Done", body = OrderPage), Refusals),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<OrderPage>, Error> {
    let query = PageQuery::parse(raw.as_deref())?;
    let page = orders::client(&upstreams)
        .list_orders(ListOrdersRequest {
            tenant: TENANT.to_owned(),
            customer_external_id: customer(&principal).external_id,
            page_size: query.page_size(),
            page_token: query.page_token.unwrap_or_default(),
            ..ListOrdersRequest::default()
        })
        .await
        .map_err(Error::from_query_status)?
        .into_inner();
    Ok(Json(OrderPage {
        orders: page.orders.into_iter().map(|o| OrderView::shown_to(o, &upstreams.custom_fields, AUDIENCE)).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One of the signed-in customer's orders.
#[utoipa::path(get, path = "/orders/{id}", tag = "web", operation_id = "get_web_order",
    params(("id" = String, Path, description = "Order id, ord_...")),
    responses(
        (status = 200, description = "Done", body = OrderView),
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
) -> Result<Json<OrderView>, Error> {
    let order = own_order(&upstreams, &principal, id).await?;
    Ok(Json(OrderView::shown_to(order, &upstreams.custom_fields, AUDIENCE)))
}

/// The order `id` if it is `principal`'s (on the web or in the mobile app).
pub async fn own_order(upstreams: &Upstreams, principal: &Principal, id: String) -> Result<Order, Error> {
    let order = orders::client(upstreams)
        .get_order(GetOrderRequest { tenant: TENANT.to_owned(), order_id: id })
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    if owns(principal, &order) { Ok(order) } else { Err(Error::NotFound("no such order")) }
}

/// Whether `order` is `principal`'s. The tenant is shared by every web
/// customer; ownership is the customer, and someone else's order is
/// answered 404 like one that does not exist.
pub fn owns(principal: &Principal, order: &Order) -> bool {
    order.customer_external_id == customer(principal).external_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, email: Option<&str>) -> Principal {
        Principal { subject: subject.into(), tenant: None, scopes: Vec::new(), email: email.map(str::to_owned) }
    }

    #[test]
    fn the_customer_is_the_tokens_subject() {
        let with_email = customer(&principal("alice", Some("alice@example.com")));
        assert_eq!(
            with_email,
            CustomerRef {
                external_id: "web:alice".into(),
                email: "alice@example.com".into(),
                name: "alice@example.com".into()
            }
        );
        let without = customer(&principal("auth0|42", None));
        assert_eq!(
            without,
            CustomerRef { external_id: "web:auth0|42".into(), email: String::new(), name: "auth0|42".into() }
        );
    }
}
