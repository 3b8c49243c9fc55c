//! Orders as every audience sends and sees them: the JSON body of a new
//! order ([`OrderRequest`]), the order JSON of the external contract
//! ([`OrderView`]) and the small pieces of glue to and from
//! `order_to_cash.v1`. Audiences differ in who the customer is and which
//! orders they may see, never in the shape of an order, so the shape lives
//! here once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::body::Json;
use axum::response::{IntoResponse, Response};
use erp_connect_proto::custom_fields::{Definitions, Entity};
use erp_connect_proto::order_to_cash::v1::{
    CustomerRef, Order, OrderLine, OrderStatus, PaymentMethod, PlaceOrderRequest,
    order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
};
use http::{HeaderValue, StatusCode, header};
use platform::channel::GrpcChannel;
use serde::{Deserialize, Serialize};

use crate::{Upstreams, error::Error};
use platform::problem::FieldError;

/// A client of `order_to_cash.v1` over the tier's channel.
pub fn client(upstreams: &Upstreams) -> OrderToCashServiceClient<GrpcChannel> {
    OrderToCashServiceClient::new(upstreams.process.clone())
}

/// The body of `POST /{audience}/v1/orders`.
///
/// Only the shape is checked here; whether a SKU exists or a quantity is
/// acceptable is the process tier's to say (422), since it owns those rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The caller's own reference, e.g. a purchase order number.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub external_ref: Option<String>,
    /// What is ordered.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineRequest>,
    /// How it is paid.
    pub payment: PaymentRequest,
    /// Where to ship; becomes the customer's address in the ERP when it
    /// has none yet (Tryton needs one before it quotes a sale).
    #[serde(default)]
    pub ship_to: Option<ShipToRequest>,
    /// Sales order custom fields this deployment lets the audience set, by
    /// name (`[[erp.custom_fields]]`, entity `sales_order`): strings,
    /// integers, decimals as strings ("12.50"), booleans, dates
    /// ("2026-12-24"). An unknown, read-only or ill-typed one is 422.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom_fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipToRequest {
    /// Street and number.
    #[schema(min_length = 1, max_length = 200)]
    pub street: String,
    /// City.
    #[schema(min_length = 1, max_length = 200)]
    pub city: String,
    /// Postal code.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    #[serde(default)]
    #[schema(pattern = "^([A-Z]{2})?$")]
    pub country: String,
}

/// One line of a new order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// Stock keeping unit.
    #[schema(min_length = 1, max_length = 200)]
    pub sku: String,
    /// Units ordered.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
    /// Order line custom fields the audience may set (entity `order_line`),
    /// as for the order's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub custom_fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How a new order is paid, told apart by `method`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentRequest {
    /// A card, as a token from the payment provider's client-side form.
    Card {
        /// The provider's card token, e.g. `tok_visa` in the sandbox.
        #[schema(min_length = 1, max_length = 200)]
        token: String,
    },
    /// Invoiced with payment terms, subject to a credit check. An empty
    /// struct variant rather than a unit one so that unknown fields are
    /// refused here as well.
    OnAccount {},
}

impl OrderRequest {
    /// The `PlaceOrder` call for this body on behalf of `customer` in
    /// `tenant`, sent by `audience`, whose custom fields are checked
    /// against `custom` here (422 naming each refused one).
    pub fn into_place_order(
        self,
        idempotency_key: String,
        tenant: &str,
        customer: CustomerRef,
        custom: &Definitions,
        audience: &str,
    ) -> Result<PlaceOrderRequest, Error> {
        let mut errors = Vec::new();
        let mut typed = |entity, at: String, json: Option<serde_json::Map<String, serde_json::Value>>| match custom
            .from_json(entity, audience, &json.unwrap_or_default())
        {
            Ok(values) => values,
            Err(refusal) => {
                errors.push(FieldError { field: format!("{at}.{}", refusal.name), message: refusal.message });
                Default::default()
            }
        };
        let custom_fields = typed(Entity::SalesOrder, "custom_fields".into(), self.custom_fields);
        let lines: Vec<OrderLine> = self
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| OrderLine {
                custom_fields: typed(Entity::OrderLine, format!("lines[{i}].custom_fields"), l.custom_fields),
                sku: l.sku,
                quantity: l.quantity,
                ..OrderLine::default()
            })
            .collect();
        if !errors.is_empty() {
            return Err(Error::InvalidInput(errors));
        }
        Ok(PlaceOrderRequest {
            idempotency_key,
            tenant: tenant.to_owned(),
            customer_id: String::new(),
            external_ref: self.external_ref.unwrap_or_default(),
            lines,
            payment: Some(match self.payment {
                PaymentRequest::Card { token } => Payment::CardToken(token),
                PaymentRequest::OnAccount {} => Payment::OnAccount(true),
            }),
            customer: Some(customer),
            ship_to: self.ship_to.map(|to| erp_connect_proto::order_to_cash::v1::ShipTo {
                street: to.street,
                city: to.city,
                postal_code: to.postal_code,
                country: to.country,
            }),
            custom_fields,
        })
    }
}

/// An order as the external contract shows it (DESIGN.md, "An order as
/// returned"). Fields may be added, never renamed; absent values are
/// `null` rather than missing so a client sees one shape throughout an
/// order's life, except `reason` and `payment`, which only some orders have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// Our order id, `ord_...`.
    pub id: String,
    /// Lowercase status: `accepted`, `confirmed`, `invoiced`, `paid`,
    /// `shipped`, `completed`, `cancelled` or `rejected`.
    pub status: &'static str,
    /// The ERP customer, once resolved.
    pub customer_id: Option<String>,
    /// The caller's own reference.
    pub external_ref: Option<String>,
    /// ISO 4217 currency of every amount.
    pub currency: String,
    /// The lines, priced.
    pub lines: Vec<LineView>,
    /// Sum of the lines, a decimal string.
    pub total: String,
    /// The ERP's documents for this order.
    pub erp: ErpView,
    /// Every step so far, oldest first.
    pub timeline: Vec<StepView>,
    /// When the order was accepted, RFC 3339 UTC.
    pub created_at: Option<String>,
    /// When the order last changed, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Why the order was rejected or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the order is paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentView>,
    /// The trace (32 hex digits) of the request that placed the order, in
    /// which its processing was traced; quote it to support. Present only
    /// when the installation exports traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The sales order custom fields this audience sees, by name; `{}` when
    /// none.
    #[schema(value_type = Object)]
    pub custom_fields: serde_json::Map<String, serde_json::Value>,
}

/// A priced order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineView {
    /// Stock keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i64,
    /// Price of one unit, a decimal string.
    pub unit_price: String,
    /// `quantity × unit_price`, a decimal string.
    pub amount: String,
    /// The order line custom fields this audience sees, by name.
    #[schema(value_type = Object)]
    pub custom_fields: serde_json::Map<String, serde_json::Value>,
}

/// The ERP's numbers for an order; `null` until the ERP has assigned them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErpView {
    /// Sales order number, e.g. `SO-000123`.
    pub sales_order: Option<String>,
    /// Invoice number, e.g. `INV-000045`, once posted.
    pub invoice: Option<String>,
    /// The invoice's id, for `GET /partner/v1/invoices/{id}`.
    pub invoice_id: Option<String>,
    /// The ERP's shipment ids, for operators completing a shipment.
    pub shipments: Vec<String>,
}

/// One step of the order's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StepView {
    /// `accepted`, `confirmed`, ...
    pub step: String,
    /// When, RFC 3339 UTC.
    pub at: Option<String>,
}

/// How an order is paid; the card token is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// `card` or `on_account`.
    pub method: &'static str,
}

/// One page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// Orders on this page.
    pub orders: Vec<OrderView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// The contract's order statuses, which are also the public timeline's steps.
pub const STATUSES: &[&str] =
    &["accepted", "confirmed", "invoiced", "paid", "shipped", "completed", "cancelled", "rejected"];

/// The contract's name of a status.
pub fn status_name(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::Accepted) => "accepted",
        Ok(OrderStatus::Confirmed) => "confirmed",
        Ok(OrderStatus::Invoiced) => "invoiced",
        Ok(OrderStatus::Paid) => "paid",
        Ok(OrderStatus::Shipped) => "shipped",
        Ok(OrderStatus::Completed) => "completed",
        Ok(OrderStatus::Cancelled) => "cancelled",
        Ok(OrderStatus::Rejected) => "rejected",
        // A status this build does not know (a newer process tier) is shown
        // as such rather than failing the whole order.
        Ok(OrderStatus::Unspecified) | Err(_) => {
            tracing::warn!(status, "order with a status this tier does not know");
            "unknown"
        }
    }
}

/// Last second RFC 3339 can write with a four-digit year.
const MAX_RFC3339_SECONDS: i64 = 253_402_300_799;

/// Unix milliseconds as RFC 3339 UTC with milliseconds, as the webhook,
/// order-file and quarantine JSON write their times.
pub fn rfc3339_ms(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A protobuf timestamp as RFC 3339 UTC with whole seconds, as the
/// contract's examples show; `None` when unset or out of range.
pub fn rfc3339(at: Option<&prost_types::Timestamp>) -> Option<String> {
    let at = at?;
    let seconds = u64::try_from(at.seconds).ok().filter(|_| at.seconds <= MAX_RFC3339_SECONDS)?;
    let time: SystemTime = UNIX_EPOCH + Duration::from_secs(seconds);
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

impl OrderView {
    /// `order` as `audience` sees it, with the custom fields of `custom`
    /// that it is shown.
    pub fn shown_to(order: Order, custom: &Definitions, audience: &str) -> Self {
        let erp = order.erp.unwrap_or_default();
        let rejected_or_cancelled =
            matches!(OrderStatus::try_from(order.status), Ok(OrderStatus::Rejected | OrderStatus::Cancelled));
        Self {
            status: status_name(order.status),
            id: order.id,
            customer_id: non_empty(order.customer_id),
            external_ref: non_empty(order.external_ref),
            currency: order.currency,
            lines: order
                .lines
                .into_iter()
                .map(|l| LineView {
                    custom_fields: custom.to_json(Entity::OrderLine, audience, &l.custom_fields),
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount: l.amount,
                })
                .collect(),
            total: order.total,
            erp: ErpView {
                sales_order: non_empty(erp.sales_order),
                invoice: non_empty(erp.invoice),
                invoice_id: non_empty(erp.invoice_id),
                shipments: erp.shipment_ids,
            },
            // The public timeline is the order's way through the contract's
            // statuses. The saga also records its own steps there
            // ("sales_order_created", "compensation:..."); those and each
            // step's `detail` are the process tier's internals, which clients
            // must not come to depend on, so they stay out.
            timeline: order
                .timeline
                .into_iter()
                .filter(|t| STATUSES.contains(&t.step.as_str()))
                .map(|t| StepView { at: rfc3339(t.at.as_ref()), step: t.step })
                .collect(),
            created_at: rfc3339(order.created_at.as_ref()),
            updated_at: rfc3339(order.updated_at.as_ref()),
            reason: non_empty(order.reason).filter(|_| rejected_or_cancelled),
            payment: match PaymentMethod::try_from(order.payment_method) {
                Ok(PaymentMethod::Card) => Some(PaymentView { method: "card" }),
                Ok(PaymentMethod::OnAccount) => Some(PaymentView { method: "on_account" }),
                Ok(PaymentMethod::Unspecified) | Err(_) => None,
            },
            trace_id: non_empty(order.trace_id),
            custom_fields: custom.to_json(Entity::SalesOrder, audience, &order.custom_fields),
        }
    }
}

/// `201 Created` for a new order at `location`, with the order JSON.
///
/// A replay of the same `Idempotency-Key` answers the same way, so a client
/// that lost the first answer cannot tell the two apart, which is the point.
pub fn created(location: &str, order: impl Serialize) -> Response {
    let mut response = (StatusCode::CREATED, Json(order)).into_response();
    match HeaderValue::try_from(location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        // Ids are checked ASCII by the process tier; if one ever is not, the
        // order still exists and the body carries its id.
        Err(_) => tracing::error!("order id not usable in a Location header"),
    }
    response
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::{
        custom_fields::{Definition, FieldType},
        erp::v1::{CustomValue, custom_value},
        order_to_cash::v1::{ErpReferences, TimelineEntry},
    };
    use prost_types::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::{body::parse, error::Error};

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 500_000_000 })
    }

    #[test]
    fn a_card_order_body_becomes_a_place_order_call() {
        let body: OrderRequest = parse(
            br#"{"external_ref": "PO-4711", "lines": [{"sku": "WIDGET-1", "quantity": 3}],
                 "payment": {"method": "card", "token": "tok_visa"}}"#,
        )
        .expect("valid");
        let customer = CustomerRef { external_id: "web:alice".into(), email: "a@example.com".into(), name: "a".into() };
        let call = body
            .into_place_order("web:alice/k1".into(), "web", customer.clone(), &Definitions::default(), "web")
            .expect("valid");
        assert_eq!(call.idempotency_key, "web:alice/k1");
        assert_eq!(call.tenant, "web");
        assert_eq!(call.external_ref, "PO-4711");
        assert_eq!(call.customer, Some(customer));
        assert_eq!(call.lines.len(), 1);
        assert_eq!((call.lines[0].sku.as_str(), call.lines[0].quantity), ("WIDGET-1", 3));
        assert_eq!(call.payment, Some(Payment::CardToken("tok_visa".into())));
    }

    #[test]
    fn an_on_account_body_needs_no_external_ref() {
        let body: OrderRequest =
            parse(br#"{"lines": [{"sku": "A", "quantity": 1}], "payment": {"method": "on_account"}}"#).expect("valid");
        assert_eq!(body.payment, PaymentRequest::OnAccount {});
        let call = body
            .into_place_order("k".into(), "acme", CustomerRef::default(), &Definitions::default(), "web")
            .expect("valid");
        assert_eq!(call.payment, Some(Payment::OnAccount(true)));
        assert_eq!(call.external_ref, "");
        // Quantity 0 is well-formed: the process tier decides it is not acceptable (422).
        assert!(
            parse::<OrderRequest>(br#"{"lines": [{"sku": "A", "quantity": 0}], "payment": {"method": "on_account"}}"#)
                .is_ok()
        );
    }

    #[test]
    fn a_ship_to_address_is_passed_on_and_checked_like_the_rest() {
        let body: OrderRequest = parse(
            br#"{"lines": [{"sku": "A", "quantity": 1}], "payment": {"method": "on_account"},
                 "ship_to": {"street": "Hafenstr. 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}}"#,
        )
        .expect("valid");
        let ship_to = body
            .into_place_order("k".into(), "acme", CustomerRef::default(), &Definitions::default(), "web")
            .expect("valid")
            .ship_to
            .expect("ship_to");
        assert_eq!((ship_to.street.as_str(), ship_to.country.as_str()), ("Hafenstr. 1", "DE"));
        assert_eq!(
            first_field(br#"{"lines": [], "payment": {"method": "on_account"}, "ship_to": {"city": "Hamburg"}}"#),
            "ship_to.street"
        );
        assert_eq!(
            first_field(
                br#"{"lines": [], "payment": {"method": "on_account"}, "ship_to": {"street": "s", "city": "c", "floor": 3}}"#
            ),
            "ship_to.floor"
        );
    }

    fn first_field(bytes: &[u8]) -> String {
        match parse::<OrderRequest>(bytes) {
            Err(Error::MalformedBody { errors, .. }) => errors.first().map(|e| e.field.clone()).unwrap_or_default(),
            other => panic!("expected a malformed body for {}, got {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn malformed_order_bodies_name_the_field() {
        let ok_payment = r#""payment": {"method": "on_account"}"#;
        let cases = [
            (format!(r#"{{"lines": [{{"sku": "A", "quantity": "3"}}], {ok_payment}}}"#), "lines[0].quantity"),
            (format!(r#"{{"lines": [{{"sku": "A", "quantity": 1.5}}], {ok_payment}}}"#), "lines[0].quantity"),
            (format!(r#"{{"lines": [{{"sku": 5, "quantity": 1}}], {ok_payment}}}"#), "lines[0].sku"),
            (format!(r#"{{"lines": [{{"quantity": 1}}], {ok_payment}}}"#), "lines[0].sku"),
            (format!(r#"{{"lines": [], {ok_payment}, "coupon": "X"}}"#), "coupon"),
            (
                format!(r#"{{"lines": [{{"sku": "A", "quantity": 1, "colour": "red"}}], {ok_payment}}}"#),
                "lines[0].colour",
            ),
            (format!(r#"{{"lines": "A", {ok_payment}}}"#), "lines"),
            (format!(r#"{{"external_ref": 4711, "lines": [], {ok_payment}}}"#), "external_ref"),
            (r#"{"lines": []}"#.to_owned(), "payment"),
            (r#"{"payment": {"method": "on_account"}}"#.to_owned(), "lines"),
        ];
        for (body, field) in cases {
            assert_eq!(first_field(body.as_bytes()), field, "{body}");
        }
    }

    #[test]
    fn malformed_payments_are_refused() {
        for payment in [
            r#"{"method": "bitcoin"}"#,
            r#"{"method": "card"}"#,
            r#"{"method": "card", "token": "tok_visa", "cvc": "123"}"#,
            r#"{"method": "on_account", "days": 30}"#,
            r#"{"token": "tok_visa"}"#,
            r#""card""#,
        ] {
            let body = format!(r#"{{"lines": [{{"sku": "A", "quantity": 1}}], "payment": {payment}}}"#);
            let field = first_field(body.as_bytes());
            assert!(field.starts_with("payment"), "{payment}: {field}");
        }
        let body = br#"{"lines": [], "payment": {"method": "bitcoin"}}"#;
        let Err(Error::MalformedBody { errors, .. }) = parse::<OrderRequest>(body) else { panic!("malformed") };
        assert_eq!(errors[0].message, "must be one of: card, on_account");
    }

    fn order() -> Order {
        Order {
            id: "ord_01JDX".into(),
            status: OrderStatus::Invoiced as i32,
            tenant: "web".into(),
            customer_id: "cus_7".into(),
            external_ref: "PO-4711".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: "WIDGET-1".into(),
                quantity: 3,
                unit_price: "12.50".into(),
                amount: "37.50".into(),
                custom_fields: [("line_note".to_owned(), string("gift wrap"))].into(),
            }],
            total: "37.50".into(),
            custom_fields: [("delivery_note".to_owned(), string("gate 4")), ("erp_score".to_owned(), string("7"))]
                .into(),
            erp: Some(ErpReferences {
                sales_order: "SO-000123".into(),
                invoice: "INV-000045".into(),
                sales_order_id: "17".into(),
                invoice_id: "45".into(),
                shipment_ids: vec!["9".into()],
            }),
            timeline: vec![
                TimelineEntry { step: "accepted".into(), at: at(1_795_860_000), detail: "internal".into() },
                TimelineEntry { step: "sales_order_created".into(), at: at(1_795_860_001), detail: "SO 17".into() },
                TimelineEntry { step: "confirmed".into(), at: at(1_795_860_001), detail: String::new() },
            ],
            created_at: at(1_795_860_000),
            reason: "left over from an earlier attempt".into(),
            customer_external_id: "web:alice".into(),
            payment_method: PaymentMethod::OnAccount as i32,
            payment_id: "pay_1".into(),
            updated_at: at(1_795_860_001),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        }
    }

    #[test]
    fn the_order_json_has_the_contract_shape() {
        let json = serde_json::to_value(OrderView::shown_to(order(), &Definitions::default(), "web")).expect("json");
        assert_eq!(
            json,
            json!({
                "id": "ord_01JDX",
                "status": "invoiced",
                "customer_id": "cus_7",
                "external_ref": "PO-4711",
                "currency": "EUR",
                "lines": [{"sku": "WIDGET-1", "quantity": 3, "unit_price": "12.50", "amount": "37.50",
                           "custom_fields": {}}],
                "total": "37.50",
                "erp": {"sales_order": "SO-000123", "invoice": "INV-000045", "invoice_id": "45", "shipments": ["9"]},
                "timeline": [
                    {"step": "accepted", "at": "2026-11-28T10:00:00Z"},
                    {"step": "confirmed", "at": "2026-11-28T10:00:01Z"}
                ],
                "created_at": "2026-11-28T10:00:00Z",
                "updated_at": "2026-11-28T10:00:01Z",
                "payment": {"method": "on_account"},
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "custom_fields": {}
            })
        );
        // Nothing internal: tenant, customer external id, payment id, timeline detail.
        let text = json.to_string();
        for private in ["\"web\"", "web:alice", "pay_1", "internal", "17", "sales_order_created"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
    }

    fn string(s: &str) -> CustomValue {
        CustomValue { value: Some(custom_value::Value::StringValue(s.into())) }
    }

    /// `delivery_note` (writable) and `line_note` for partners and operators,
    /// `erp_score` (read-only) for operators only.
    fn definitions() -> Definitions {
        let def = |entity, name: &str, writable, audiences: &[&str]| Definition {
            entity,
            name: name.into(),
            erp_field: "comment".into(),
            field_type: FieldType::String,
            writable,
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        };
        Definitions::new(vec![
            def(Entity::SalesOrder, "delivery_note", true, &["partner", "ops"]),
            def(Entity::SalesOrder, "erp_score", false, &["ops"]),
            def(Entity::OrderLine, "line_note", true, &["partner"]),
        ])
        .expect("valid")
    }

    #[test]
    fn each_audience_sees_the_custom_fields_shown_to_it() {
        let partner = serde_json::to_value(OrderView::shown_to(order(), &definitions(), "partner")).expect("json");
        assert_eq!(partner["custom_fields"], json!({"delivery_note": "gate 4"}));
        assert_eq!(partner["lines"][0]["custom_fields"], json!({"line_note": "gift wrap"}));
        let ops = serde_json::to_value(OrderView::shown_to(order(), &definitions(), "ops")).expect("json");
        assert_eq!(ops["custom_fields"], json!({"delivery_note": "gate 4", "erp_score": "7"}));
        assert_eq!(ops["lines"][0]["custom_fields"], json!({}));
    }

    #[test]
    fn custom_fields_in_a_new_order_are_typed_or_refused_naming_each() {
        let body: OrderRequest = parse(
            br#"{"lines": [{"sku": "WIDGET-1", "quantity": 1, "custom_fields": {"line_note": "fragile"}}],
                 "payment": {"method": "on_account"}, "custom_fields": {"delivery_note": "gate 4"}}"#,
        )
        .expect("valid");
        let call = body
            .clone()
            .into_place_order("k".into(), "acme", CustomerRef::default(), &definitions(), "partner")
            .expect("partner may set them");
        assert_eq!(call.custom_fields["delivery_note"], string("gate 4"));
        assert_eq!(call.lines[0].custom_fields["line_note"], string("fragile"));
        // The web shop is not shown these fields: for it they do not exist.
        let Err(Error::InvalidInput(errors)) =
            body.into_place_order("k".into(), "web", CustomerRef::default(), &definitions(), "web")
        else {
            panic!("web may not set partner fields")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["custom_fields.delivery_note", "lines[0].custom_fields.line_note"]);
        let body: OrderRequest = parse(
            br#"{"lines": [{"sku": "W", "quantity": 1}], "payment": {"method": "on_account"},
                 "custom_fields": {"erp_score": "9"}}"#,
        )
        .expect("valid");
        let Err(Error::InvalidInput(errors)) =
            body.into_place_order("k".into(), "x", CustomerRef::default(), &definitions(), "ops")
        else {
            panic!("read-only")
        };
        assert_eq!(errors[0].message, "is read-only");
    }

    #[test]
    fn a_new_order_has_nulls_and_a_cancelled_one_a_reason() {
        let fresh = Order {
            id: "ord_1".into(),
            status: OrderStatus::Accepted as i32,
            payment_method: PaymentMethod::Card as i32,
            ..Order::default()
        };
        let json = serde_json::to_value(OrderView::shown_to(fresh, &Definitions::default(), "web")).expect("json");
        assert_eq!(json["status"], "accepted");
        assert!(json["customer_id"].is_null() && json["external_ref"].is_null() && json["created_at"].is_null());
        assert!(json["erp"]["sales_order"].is_null() && json["erp"]["invoice"].is_null());
        assert_eq!(json["erp"]["shipments"], json!([]));
        assert_eq!(json["payment"], json!({"method": "card"}));
        assert!(json.get("reason").is_none());

        let mut cancelled = order();
        cancelled.status = OrderStatus::Cancelled as i32;
        cancelled.reason = "customer asked".into();
        let json = serde_json::to_value(OrderView::shown_to(cancelled, &Definitions::default(), "web")).expect("json");
        assert_eq!((json["status"].as_str(), json["reason"].as_str()), (Some("cancelled"), Some("customer asked")));

        let mut strange = order();
        strange.status = 99;
        assert_eq!(
            serde_json::to_value(OrderView::shown_to(strange, &Definitions::default(), "web")).expect("json")["status"],
            "unknown"
        );
    }

    #[test]
    fn every_status_has_a_contract_name() {
        for status in 1..=8 {
            assert!(STATUSES.contains(&status_name(status)), "{status}");
        }
        assert_eq!(status_name(OrderStatus::Completed as i32), "completed");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_or_null() {
        assert_eq!(rfc3339(at(0).as_ref()).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(None), None);
        assert_eq!(rfc3339(at(-1).as_ref()), None);
        assert_eq!(rfc3339(at(MAX_RFC3339_SECONDS + 1).as_ref()), None);
        assert_eq!(rfc3339(at(MAX_RFC3339_SECONDS).as_ref()).as_deref(), Some("9999-12-31T23:59:59Z"));
    }

    #[test]
    fn created_answers_201_with_a_location() {
        let response =
            created("/web/v1/orders/ord_01JDX", OrderView::shown_to(order(), &Definitions::default(), "web"));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/web/v1/orders/ord_01JDX");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
