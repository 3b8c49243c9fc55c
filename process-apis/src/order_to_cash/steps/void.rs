//! Compensation for [`super::authorize`]: releases an authorization that
//! was not captured, under the step's key.

use erp_connect_proto::payments::v1 as pay;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{order::Order, saga::Effects};

/// Must finish: retried until done.
pub const POLICY: Policy = Policy { system: System::Payments, retries: Retries::UntilDone, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let request = pay::VoidRequest {
        idempotency_key: cx.key.clone(),
        payment_id: order.progress.payment_id.clone().unwrap_or_default(),
    };
    s.call(s.payments().void(s.request(request))).await.map_err(|e| cx.fail(e))?;
    order.progress.voided = true;
    order.record("compensation:void", now(), "");
    effects.emit(order, "payment.voided", now());
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

    fn authorized_then_cancelled() -> Order {
        let mut order = card_order();
        let p = &mut order.progress;
        (p.sales_order_id, p.confirmed, p.payment_id) = (Some("so_1".into()), true, Some("pay_1".into()));
        order.unwind(OrderStatus::Cancelled, "customer asked", 1);
        order
    }

    #[tokio::test]
    async fn an_uncaptured_authorization_is_voided() {
        let fake = Fake::new();
        fake.answer("Void", pay::Payment::default());
        let mut order = authorized_then_cancelled();
        assert_eq!(order.next_action(), Action::Void);
        let (result, events) = run(&fake, Action::Void, &mut order).await;
        result.expect("voided");
        assert_eq!(fake.requests::<pay::VoidRequest>("Void")[0].idempotency_key, "ord_1:void");
        assert_eq!(events, ["payment.voided"]);
        assert_eq!(order.next_action(), Action::CancelSalesOrder);
    }

    #[tokio::test]
    async fn a_fault_is_retried_and_a_refusal_is_a_business_failure() {
        let fake = Fake::new();
        fake.fail("Void", Status::internal("bug")).fail("Void", Status::failed_precondition("captured"));
        let mut order = authorized_then_cancelled();
        assert!(matches!(run(&fake, Action::Void, &mut order).await.0, Err(StepError::Retry(_))));
        assert!(matches!(run(&fake, Action::Void, &mut order).await.0, Err(StepError::Business(_))));
    }
}
