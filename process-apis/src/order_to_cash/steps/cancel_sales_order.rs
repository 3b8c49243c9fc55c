//! Compensation for [`super::create_sales_order`]: cancels the ERP sales
//! order, which releases its reserved stock and waiting shipment. The ERP
//! refuses once the order has shipped: the saga then records that the
//! compensation was impossible, and `reconcile` names the order.

use erp_connect_proto::erp::v1 as erp;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::order::Order;

/// Must finish: retried until done.
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::UntilDone, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    let s = cx.systems;
    let id = order.progress.sales_order_id.clone().unwrap_or_default();
    s.call(s.sales_orders().cancel_sales_order(s.request(erp::SalesOrderRequest { id })))
        .await
        .map_err(|e| cx.fail(e))?;
    order.progress.sales_order_cancelled = true;
    order.record("compensation:cancel_sales_order", now(), "");
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

    fn created_then_rejected() -> Order {
        let mut order = card_order();
        order.progress.sales_order_id = Some("so_1".into());
        order.unwind(OrderStatus::Rejected, "only 2 in stock", 1);
        order
    }

    #[tokio::test]
    async fn the_sales_order_is_cancelled_last_and_the_saga_finishes() {
        let fake = Fake::new();
        fake.answer("CancelSalesOrder", erp::SalesOrder::default());
        let mut order = created_then_rejected();
        assert_eq!(order.next_action(), Action::CancelSalesOrder);
        run(&fake, Action::CancelSalesOrder, &mut order).await.0.expect("cancelled");
        assert_eq!(fake.requests::<erp::SalesOrderRequest>("CancelSalesOrder")[0].id, "so_1");
        assert_eq!(order.next_action(), Action::Finish);
    }

    #[tokio::test]
    async fn a_shipped_order_cannot_be_cancelled_and_a_fault_is_retried() {
        let fake = Fake::new();
        fake.fail("CancelSalesOrder", Status::failed_precondition("shipped"))
            .fail("CancelSalesOrder", Status::internal("bug"));
        let mut order = created_then_rejected();
        assert!(matches!(run(&fake, Action::CancelSalesOrder, &mut order).await.0, Err(StepError::Business(_))));
        assert!(matches!(run(&fake, Action::CancelSalesOrder, &mut order).await.0, Err(StepError::Retry(_))));
        assert!(!order.progress.sales_order_cancelled);
    }
}
