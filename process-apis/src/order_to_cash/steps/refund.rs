//! Compensation for [`super::capture`]: refunds the captured payment in
//! full, under the step's key.

use erp_connect_proto::payments::v1 as pay;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{order::Order, saga::Effects};

/// Must finish: retried until done.
pub const POLICY: Policy = Policy { system: System::Payments, retries: Retries::UntilDone, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let request = pay::RefundRequest {
        idempotency_key: cx.key.clone(),
        payment_id: order.progress.payment_id.clone().unwrap_or_default(),
        amount: String::new(),
    };
    s.call(s.payments().refund(s.request(request))).await.map_err(|e| cx.fail(e))?;
    order.progress.refunded = true;
    order.record("compensation:refund", now(), "");
    effects.emit(order, "payment.refunded", now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::payments::v1 as pay;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, card_order, run},
    };
    use crate::order_to_cash::order::{Action, Order, Status as OrderStatus};

    fn captured_then_cancelled() -> Order {
        let mut order = card_order();
        let p = &mut order.progress;
        (p.sales_order_id, p.confirmed, p.payment_id, p.captured) =
            (Some("so_1".into()), true, Some("pay_1".into()), true);
        order.unwind(OrderStatus::Cancelled, "customer asked", 1);
        order
    }

    #[tokio::test]
    async fn the_capture_is_refunded_first_when_the_saga_winds_back() {
        let fake = Fake::new();
        fake.answer("Refund", pay::Payment::default());
        let mut order = captured_then_cancelled();
        assert_eq!(order.next_action(), Action::Refund);
        let (result, events) = run(&fake, Action::Refund, &mut order).await;
        result.expect("refunded");
        let sent: Vec<pay::RefundRequest> = fake.requests("Refund");
        assert_eq!(sent[0].idempotency_key, "ord_1:refund");
        assert_eq!(events, ["payment.refunded"]);
        assert_eq!(order.next_action(), Action::CancelSalesOrder);
    }

    #[tokio::test]
    async fn a_refund_the_provider_refuses_is_a_business_failure_and_an_outage_is_waited_out() {
        let fake = Fake::new();
        fake.fail("Refund", Status::failed_precondition("already refunded elsewhere"))
            .fail("Refund", Status::unavailable("down"));
        let mut order = captured_then_cancelled();
        assert!(matches!(run(&fake, Action::Refund, &mut order).await.0, Err(StepError::Business(_))));
        assert!(matches!(run(&fake, Action::Refund, &mut order).await.0, Err(StepError::Outage(_))));
        assert!(!order.progress.refunded);
    }
}
