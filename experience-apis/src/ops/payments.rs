//! `POST /ops/v1/payments`: cash application. An operator records that an
//! on-account customer paid an order's invoice; the order turns `paid`.

use axum::extract::State;

use crate::body::Json;
use erp_connect_proto::order_to_cash::v1::RecordPaymentRequest;
use serde::Deserialize;

use super::ANY_TENANT;
use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::{Caller, IdempotencyKey},
    openapi::{BodyRefusals, Refusals},
    orders::{self, OrderView},
};

/// The body: which order, and how much in which currency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// Our order id.
    #[schema(min_length = 1, max_length = 200)]
    pub order_id: String,
    /// The amount paid, a decimal string: money never travels as a float.
    #[schema(pattern = "^[0-9]{1,12}([.][0-9]{1,2})?$")]
    pub amount: String,
    /// ISO 4217 currency of `amount`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl PaymentBody {
    /// The `RecordPayment` call for this body.
    pub fn into_record_payment(self, idempotency_key: String) -> RecordPaymentRequest {
        RecordPaymentRequest {
            idempotency_key,
            tenant: ANY_TENANT.to_owned(),
            order_id: self.order_id,
            currency: self.currency,
            amount: self.amount,
        }
    }
}

/// Cash application: records a payment against an on-account order's invoice.
#[utoipa::path(post, path = "/payments", tag = "ops", operation_id = "record_payment",
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key records the payment once",
        pattern = "^[!-~]{1,255}$")),
    request_body = PaymentBody,
    responses(
        (status = 200, description = "Done", body = OrderView),
        (status = 404, description = "No such order"),
        (status = 409, description = "Not invoiced yet, paid by card, or ended"),
        (status = 422, description = "Bad amount or currency"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(order_id = %body.order_id))]
pub async fn record(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    key: IdempotencyKey,
    JsonBody(body): JsonBody<PaymentBody>,
) -> Result<Json<OrderView>, Error> {
    // Every operator shares the "any" tenant, so keys are kept apart per
    // operator, as the draft means them: unique per client.
    let key = key.scoped_to(&format!("ops:{}", principal.subject));
    let order = orders::client(&upstreams)
        .record_payment(body.into_record_payment(key))
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    tracing::info!(operator = %principal.subject, status = orders::status_name(order.status), "payment recorded");
    Ok(Json(OrderView::shown_to(order, &upstreams.custom_fields, "ops")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;

    #[test]
    fn a_payment_body_becomes_a_record_payment_call_for_any_tenant() {
        let body: PaymentBody =
            parse(br#"{"order_id": "ord_1", "amount": "37.50", "currency": "EUR"}"#).expect("valid");
        let call = body.into_record_payment("ops:bob/k".into());
        assert_eq!(
            call,
            RecordPaymentRequest {
                idempotency_key: "ops:bob/k".into(),
                tenant: String::new(),
                order_id: "ord_1".into(),
                currency: "EUR".into(),
                amount: "37.50".into(),
            }
        );
    }

    #[test]
    fn an_amount_must_be_a_decimal_string_not_a_float() {
        let Err(Error::MalformedBody { errors, .. }) =
            parse::<PaymentBody>(br#"{"order_id": "ord_1", "amount": 37.5, "currency": "EUR"}"#)
        else {
            panic!("a float amount must be refused");
        };
        assert_eq!((errors[0].field.as_str(), errors[0].message.as_str()), ("amount", "must be a string"));
        assert!(parse::<PaymentBody>(br#"{"order_id": "ord_1", "amount": "1", "currency": "EUR", "x": 1}"#).is_err());
    }
}
