//! Creates the ERP sales order with the prices the order was accepted
//! at, under the step's idempotency key (a retry finds the order it
//! created). A list price that changed in the ERP since acceptance is noted
//! on the timeline (`price_changed`); the accepted price stands.

use erp_connect_proto::{erp::v1 as erp, money};

use super::{Context, Policy, Retries, StepError, System, now, precondition_is};
use crate::order_to_cash::order::{Action, Order};

/// Undone by cancelling the sales order (which releases its stock).
pub const POLICY: Policy =
    Policy { system: System::Erp, retries: Retries::Budget, compensated_by: Some(Action::CancelSalesOrder) };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    note_price_changes(cx, order).await;
    let s = cx.systems;
    let request = erp::CreateSalesOrderRequest {
        idempotency_key: cx.key.clone(),
        customer_id: order.customer_id.clone(),
        reference: order.id.clone(),
        currency: order.currency.clone(),
        lines: order
            .lines
            .iter()
            .map(|l| erp::SalesOrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price.clone(),
                amount: String::new(),
                custom_fields: l.custom_fields.clone().into_iter().collect(),
            })
            .collect(),
        custom_fields: order.custom_fields.clone().into_iter().collect(),
    };
    let so = match s.call(s.sales_orders().create_sales_order(s.request(request))).await {
        Ok(so) => so,
        // Another order of the same new customer may be about to add its
        // address: worth retries within the budget, then a rejection
        // naming the reason.
        Err(status) if precondition_is(&status, "NO_ADDRESS") => {
            return Err(StepError::Retry(format!("{}: the customer has no address yet", cx.name)));
        }
        Err(status) => return Err(cx.fail(status)),
    };
    order.progress.sales_order_id = Some(so.id);
    order.record("sales_order_created", now(), "");
    Ok(())
}

/// Notes on the timeline each line whose list price in the price list
/// differs from the price it was accepted at.
async fn note_price_changes(cx: &Context<'_>, order: &mut Order) {
    for line in order.lines.clone() {
        let Ok(Some(priced)) = cx.prices.get(&line.sku).await else { continue };
        let current = money::format(priced.unit_price);
        if current == line.unit_price {
            continue;
        }
        let detail = format!("{}: accepted at {}, the ERP's list price is now {current}", line.sku, line.unit_price);
        if !order.timeline.iter().any(|t| t.step == "price_changed" && t.detail == detail) {
            order.record("price_changed", now(), detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::{Code, Status};
    use tonic_types::{ErrorDetails, StatusExt};

    use super::super::{
        StepError,
        fake::{Fake, card_order, run, steps},
    };
    use crate::order_to_cash::order::Action;

    fn product(price: &str) -> erp::Product {
        erp::Product {
            sku: "WIDGET-1".into(),
            active: true,
            list_price: Some(erp::Money { currency: "EUR".into(), amount: price.into() }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_sales_order_is_created_at_the_accepted_prices_under_the_steps_key() {
        let fake = Fake::new();
        fake.answer("GetProduct", product("13.00"))
            .answer("CreateSalesOrder", erp::SalesOrder { id: "so_1".into(), ..Default::default() });
        let mut order = card_order();
        let note = erp::CustomValue { value: Some(erp::custom_value::Value::StringValue("gate 4".into())) };
        order.custom_fields.insert("delivery_note".into(), note.clone());
        order.lines[0].custom_fields.insert("line_note".into(), note.clone());
        run(&fake, Action::CreateSalesOrder, &mut order).await.0.expect("created");
        let sent: Vec<erp::CreateSalesOrderRequest> = fake.requests("CreateSalesOrder");
        assert_eq!(sent[0].idempotency_key, "ord_1:create-sales-order");
        assert_eq!(sent[0].lines[0].unit_price, "12.50", "the accepted price stands");
        assert_eq!(sent[0].custom_fields.get("delivery_note"), Some(&note), "custom fields go to the ERP");
        assert_eq!(sent[0].lines[0].custom_fields.get("line_note"), Some(&note));
        assert_eq!(order.progress.sales_order_id.as_deref(), Some("so_1"));
        assert_eq!(steps(&order), ["price_changed", "sales_order_created"]);
        assert!(order.timeline[0].detail.contains("accepted at 12.50, the ERP's list price is now 13.00"));
    }

    #[tokio::test]
    async fn a_customer_without_an_address_yet_is_retried_and_other_refusals_wind_back() {
        let fake = Fake::new();
        let no_address = Status::with_error_details(
            Code::FailedPrecondition,
            "no address",
            ErrorDetails::with_precondition_failure_violation("NO_ADDRESS", "cus_1", "the customer has no address"),
        );
        fake.answer("GetProduct", product("12.50"))
            .fail("CreateSalesOrder", no_address)
            .fail("CreateSalesOrder", Status::invalid_argument("unknown SKU"))
            .fail("CreateSalesOrder", Status::unavailable("down"));
        let mut order = card_order();
        assert!(matches!(run(&fake, Action::CreateSalesOrder, &mut order).await.0, Err(StepError::Retry(_))));
        assert!(matches!(run(&fake, Action::CreateSalesOrder, &mut order).await.0, Err(StepError::Business(_))));
        assert!(matches!(run(&fake, Action::CreateSalesOrder, &mut order).await.0, Err(StepError::Outage(_))));
        assert!(order.progress.sales_order_id.is_none());
    }
}
