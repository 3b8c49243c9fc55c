//! Quotes and confirms the ERP sales order: stock is reserved, and the ERP
//! creates the invoice and the shipment. Short stock (a precondition the
//! ERP refuses) rejects the order, whose sales order is then cancelled.

use erp_connect_proto::erp::v1 as erp;
use tonic::Code;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{
    order::{Order, Status},
    saga::Effects,
};

/// Undone with the sales order it confirmed ([`super::create_sales_order`]).
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::Budget, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let id = order.progress.sales_order_id.clone().unwrap_or_default();
    let request = || s.request(erp::SalesOrderRequest { id: id.clone() });
    s.call(s.sales_orders().quote_sales_order(request())).await.map_err(|e| cx.fail(e))?;
    let so = match s.call(s.sales_orders().confirm_sales_order(request())).await {
        Ok(so) => so,
        Err(status) if status.code() == Code::FailedPrecondition => {
            order.unwind(Status::Rejected, format!("the ERP refused: {}", status.message()), now());
            return Ok(());
        }
        Err(status) => return Err(cx.fail(status)),
    };
    let p = &mut order.progress;
    p.confirmed = true;
    p.sales_order_number = so.number;
    p.invoice_id = so.invoice_ids.first().cloned();
    p.shipment_ids = so.shipment_ids.clone();
    effects.refs.extend(so.shipment_ids);
    effects.refs.extend(so.invoice_ids);
    if !so.total.is_empty() {
        order.total = so.total;
    }
    order.advance(Status::Confirmed, now());
    effects.emit(order, "order.confirmed", now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, card_order, run},
    };
    use crate::order_to_cash::order::{Action, Order, Status as OrderStatus};

    fn created() -> Order {
        let mut order = card_order();
        order.progress.sales_order_id = Some("so_1".into());
        order
    }

    #[tokio::test]
    async fn a_confirmed_order_knows_its_erp_documents_and_the_erps_total() {
        let fake = Fake::new();
        let so = erp::SalesOrder {
            id: "so_1".into(),
            number: "SO-7".into(),
            total: "44.63".into(),
            invoice_ids: vec!["inv_1".into()],
            shipment_ids: vec!["shp_1".into()],
            ..Default::default()
        };
        fake.answer("QuoteSalesOrder", so.clone()).answer("ConfirmSalesOrder", so);
        let mut order = created();
        let (result, events) = run(&fake, Action::ConfirmSalesOrder, &mut order).await;
        result.expect("confirmed");
        assert_eq!(order.status, OrderStatus::Confirmed);
        assert_eq!((order.total.as_str(), order.progress.sales_order_number.as_str()), ("44.63", "SO-7"));
        assert_eq!(order.progress.invoice_id.as_deref(), Some("inv_1"));
        assert_eq!(events, ["order.confirmed"]);
    }

    #[tokio::test]
    async fn short_stock_rejects_and_winds_back_and_an_outage_is_waited_out() {
        let fake = Fake::new();
        fake.answer("QuoteSalesOrder", erp::SalesOrder::default())
            .fail("ConfirmSalesOrder", Status::failed_precondition("only 2 of WIDGET-1 available"))
            .fail("QuoteSalesOrder", Status::unavailable("down"));
        let mut order = created();
        run(&fake, Action::ConfirmSalesOrder, &mut order).await.0.expect("a refusal is an answer");
        assert!(order.progress.unwind.as_ref().is_some_and(|u| u.reason.contains("only 2 of WIDGET-1")));
        assert_eq!(order.next_action(), Action::CancelSalesOrder, "the created sales order is cancelled");
        let mut order = created();
        assert!(matches!(run(&fake, Action::ConfirmSalesOrder, &mut order).await.0, Err(StepError::Outage(_))));
    }
}
