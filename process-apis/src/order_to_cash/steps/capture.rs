//! Card orders: captures the authorized payment under the step's key.

use erp_connect_proto::payments::v1 as pay;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{
    order::{Action, Order},
    saga::Effects,
};

/// Undone by refunding the captured payment.
pub const POLICY: Policy =
    Policy { system: System::Payments, retries: Retries::Budget, compensated_by: Some(Action::Refund) };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let request = pay::CaptureRequest {
        idempotency_key: cx.key.clone(),
        payment_id: order.progress.payment_id.clone().unwrap_or_default(),
        amount: String::new(),
    };
    s.call(s.payments().capture(s.request(request))).await.map_err(|e| cx.fail(e))?;
    order.progress.captured = true;
    order.record("payment_captured", now(), "");
    effects.emit(order, "payment.captured", now());
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
    use crate::order_to_cash::order::{Action, Order};

    fn authorized() -> Order {
        let mut order = card_order();
        (order.progress.sales_order_id, order.progress.confirmed) = (Some("so_1".into()), true);
        order.progress.payment_id = Some("pay_1".into());
        order
    }

    #[tokio::test]
    async fn the_authorization_is_captured_once_by_its_key() {
        let fake = Fake::new();
        fake.answer("Capture", pay::Payment::default());
        let mut order = authorized();
        let (result, events) = run(&fake, Action::Capture, &mut order).await;
        result.expect("captured");
        let sent: Vec<pay::CaptureRequest> = fake.requests("Capture");
        assert_eq!((sent[0].idempotency_key.as_str(), sent[0].payment_id.as_str()), ("ord_1:capture", "pay_1"));
        assert!(order.progress.captured);
        assert_eq!(events, ["payment.captured"]);
    }

    #[tokio::test]
    async fn a_fault_is_retried_and_a_refusal_winds_back_to_the_void() {
        let fake = Fake::new();
        fake.fail("Capture", Status::internal("bug")).fail("Capture", Status::failed_precondition("expired"));
        let mut order = authorized();
        assert!(matches!(run(&fake, Action::Capture, &mut order).await.0, Err(StepError::Retry(_))));
        assert!(matches!(run(&fake, Action::Capture, &mut order).await.0, Err(StepError::Business(_))));
        assert!(!order.progress.captured);
    }
}
