//! `GET /ops/v1/orders` and `GET /ops/v1/orders/{id}`: operators find
//! orders of every tenant (by id, by the start of an external reference,
//! by status) and read one with everything the saga recorded, for the ops
//! console and for support.

use crate::body::Json;
use axum::extract::{RawQuery, State};
use erp_connect_proto::{
    custom_fields::Definitions,
    order_to_cash::v1::{GetOrderRequest, ListOrdersRequest, Order, OrderStatus},
};
use serde::Serialize;

use super::ANY_TENANT;
use crate::{
    Upstreams,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{OrderStatusName, Refusals},
    orders::{self, OrderView},
    page::PageQuery,
};

/// Longest search accepted, as long as the longest external reference.
pub const MAX_QUERY_LEN: usize = 200;

/// Saga steps whose detail is not for the API (see [`OpsOrderView::saga`]).
const INTERNAL_DETAIL: &[&str] = &["retry:", "compensation_failed:"];

/// An order as operators see it: the order JSON of the contract, with the
/// tenant it belongs to and the saga's whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OpsOrderView {
    /// The order as its tenant sees it.
    #[serde(flatten)]
    pub order: OrderView,
    /// The tenant it belongs to: `web` for the web shop, else a partner's.
    pub tenant: String,
    /// The customer's external id, e.g. `web:alice`.
    pub customer_external_id: Option<String>,
    /// Every step the saga recorded, oldest first: the statuses of
    /// `timeline` and the saga's own steps (`sales_order_created`,
    /// `compensation:void`, `retry:capture`, ...), with the business reason
    /// where one failed (a technical error's text stays in the logs and
    /// the trace). For people: the names may change between versions.
    pub saga: Vec<SagaStepView>,
}

/// One step of the saga's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SagaStepView {
    /// e.g. `accepted`, `payment_captured`, `compensation:void_payment`.
    pub step: String,
    /// When, RFC 3339 UTC.
    pub at: Option<String>,
    /// Why, for failures and compensations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One page of orders of any tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpsOrderPage {
    /// Orders on this page, newest first.
    pub orders: Vec<OpsOrderView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl OpsOrderView {
    /// `order` as operators see it, with the custom fields shown to `ops`.
    pub fn new(order: Order, custom: &Definitions) -> Self {
        let tenant = order.tenant.clone();
        let customer_external_id = Some(order.customer_external_id.clone()).filter(|c| !c.is_empty());
        let saga = order
            .timeline
            .iter()
            .map(|t| SagaStepView {
                step: t.step.clone(),
                at: orders::rfc3339(t.at.as_ref()),
                // A retry's or a failed compensation's detail is the error
                // text of a call behind the process tier: it stays in the
                // logs and the trace, as every internal error text does.
                detail: Some(t.detail.clone())
                    .filter(|d| !d.is_empty() && !INTERNAL_DETAIL.iter().any(|p| t.step.starts_with(p))),
            })
            .collect();
        Self { order: OrderView::shown_to(order, custom, "ops"), tenant, customer_external_id, saga }
    }
}

/// The query of `GET /ops/v1/orders`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OrderQuery {
    /// `page_size` and `page_token`.
    pub page: PageQuery,
    /// `q`: an order id, or the start of an external reference; empty: all.
    pub search: String,
    /// `status`: only orders in it.
    pub status: Option<OrderStatus>,
}

impl OrderQuery {
    /// Parses `q`, `status`, `page_size` and `page_token`; anything else or
    /// a bad value is a 400 naming the parameter. An empty `q` searches
    /// nothing.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let (mut search, mut status) = (String::new(), None);
        let page = PageQuery::parse_with(raw, |key, value| match key {
            "q" if value.chars().count() > MAX_QUERY_LEN => {
                Some(Err(format!("must be at most {MAX_QUERY_LEN} characters")))
            }
            "q" if value.chars().any(char::is_control) => Some(Err("must not contain control characters".into())),
            "q" => {
                search = value.trim().to_owned();
                Some(Ok(()))
            }
            "status" => Some(match status_named(value) {
                Some(found) => {
                    status = Some(found);
                    Ok(())
                }
                None => Err(format!("must be one of {}", orders::STATUSES.join(", "))),
            }),
            _ => None,
        })?;
        Ok(Self { page, search, status })
    }

    /// The `ListOrders` call for this query, over every tenant.
    pub fn into_list_orders(self) -> ListOrdersRequest {
        ListOrdersRequest {
            tenant: ANY_TENANT.to_owned(),
            page_size: self.page.page_size(),
            page_token: self.page.page_token.unwrap_or_default(),
            query: self.search,
            status: self.status.unwrap_or(OrderStatus::Unspecified) as i32,
            ..ListOrdersRequest::default()
        }
    }
}

/// The status of the contract named `name` (`confirmed`, ...).
fn status_named(name: &str) -> Option<OrderStatus> {
    Some(match name {
        "accepted" => OrderStatus::Accepted,
        "confirmed" => OrderStatus::Confirmed,
        "invoiced" => OrderStatus::Invoiced,
        "paid" => OrderStatus::Paid,
        "shipped" => OrderStatus::Shipped,
        "completed" => OrderStatus::Completed,
        "cancelled" => OrderStatus::Cancelled,
        "rejected" => OrderStatus::Rejected,
        _ => return None,
    })
}

/// Orders of every tenant, newest first: all, or found by id or the start of an external reference, and by status.
#[utoipa::path(get, path = "/orders", tag = "ops", operation_id = "list_ops_orders",
    params(
        ("q" = Option<String>, Query, description = "An order id (whole), or the start of an external reference \
            (case-sensitive); empty: every order", max_length = 200),
        ("status" = Option<OrderStatusName>, Query, description = "Only orders in this status"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query)
    ),
    responses((status = 200, description = "Done", body = OpsOrderPage), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    Caller(_operator): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<OpsOrderPage>, Error> {
    let query = OrderQuery::parse(raw.as_deref())?;
    let page = orders::client(&upstreams)
        .list_orders(query.into_list_orders())
        .await
        .map_err(Error::from_query_status)?
        .into_inner();
    Ok(Json(OpsOrderPage {
        orders: page.orders.into_iter().map(|o| OpsOrderView::new(o, &upstreams.custom_fields)).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// An order of any tenant, with its tenant and everything its saga recorded.
#[utoipa::path(get, path = "/orders/{id}", tag = "ops", operation_id = "get_ops_order",
    params(("id" = String, Path, description = "Order id, ord_...")),
    responses(
        (status = 200, description = "Done", body = OpsOrderView),
        (status = 404, description = "No such order"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn get(
    State(upstreams): State<Upstreams>,
    Caller(_operator): Caller,
    ObjectId(id): ObjectId,
) -> Result<Json<OpsOrderView>, Error> {
    let order = orders::client(&upstreams)
        .get_order(GetOrderRequest { tenant: ANY_TENANT.to_owned(), order_id: id })
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    Ok(Json(OpsOrderView::new(order, &upstreams.custom_fields)))
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::order_to_cash::v1::TimelineEntry;
    use prost_types::Timestamp;

    use super::*;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_search_becomes_a_list_orders_call_over_every_tenant() {
        let query = OrderQuery::parse(Some("q=+PO-47%20&status=paid&page_size=5&page_token=ord_9")).expect("valid");
        let call = query.into_list_orders();
        assert_eq!(call.tenant, "");
        assert_eq!(call.query, "PO-47");
        assert_eq!(call.status, OrderStatus::Paid as i32);
        assert_eq!((call.page_size, call.page_token.as_str()), (5, "ord_9"));
        // An empty search finds everything.
        let call = OrderQuery::parse(Some("q=")).expect("valid").into_list_orders();
        assert_eq!((call.query.as_str(), call.status), ("", 0));
        assert_eq!(OrderQuery::parse(None).expect("valid"), OrderQuery::default());
        for status in orders::STATUSES {
            let parsed = OrderQuery::parse(Some(&format!("status={status}"))).expect("a contract status");
            assert_eq!(parsed.status.map(|s| orders::status_name(s as i32)), Some(*status));
        }
    }

    #[test]
    fn bad_filters_and_page_parameters_are_named_together() {
        let long = "q".repeat(MAX_QUERY_LEN + 1);
        let err = OrderQuery::parse(Some(&format!("q={long}&status=lost&page_size=0&tenant=acme"))).expect_err("bad");
        assert_eq!(fields(err), ["q", "status", "page_size", "tenant"]);
        assert_eq!(fields(OrderQuery::parse(Some("q=a&q=b")).expect_err("repeated")), ["q"]);
        assert_eq!(fields(OrderQuery::parse(Some("q=a%00b&status=")).expect_err("bad")), ["q", "status"]);
    }

    #[test]
    fn operators_see_the_tenant_and_the_whole_saga_record() {
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        let order = Order {
            id: "ord_1".into(),
            status: OrderStatus::Rejected as i32,
            tenant: "acme".into(),
            customer_external_id: "partner:acme".into(),
            currency: "EUR".into(),
            total: "1.00".into(),
            timeline: vec![
                TimelineEntry { step: "accepted".into(), at: at(1_764_400_000), detail: String::new() },
                TimelineEntry {
                    step: "payment_declined".into(),
                    at: at(1_764_400_001),
                    detail: "card declined".into(),
                },
                TimelineEntry {
                    step: "retry:capture".into(),
                    at: at(1_764_400_002),
                    detail: "http://10.0.0.1 refused".into(),
                },
                TimelineEntry { step: "rejected".into(), at: at(1_764_400_003), detail: String::new() },
            ],
            ..Order::default()
        };
        let json = serde_json::to_value(OpsOrderView::new(order, &Definitions::default())).expect("JSON");
        assert_eq!(json["id"], "ord_1");
        assert_eq!(json["status"], "rejected");
        assert_eq!(json["tenant"], "acme");
        assert_eq!(json["customer_external_id"], "partner:acme");
        // The contract's timeline keeps to statuses; the saga's record has it all.
        assert_eq!(json["timeline"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            json["saga"][1],
            serde_json::json!({"step": "payment_declined", "at": "2025-11-29T07:06:41Z", "detail": "card declined"})
        );
        assert!(json["saga"][0].get("detail").is_none());
        assert_eq!(json["saga"][2], serde_json::json!({"step": "retry:capture", "at": "2025-11-29T07:06:42Z"}));
    }
}
