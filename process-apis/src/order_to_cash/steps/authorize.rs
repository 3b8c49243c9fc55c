//! Card orders: authorizes the order's total (the ERP's, taxes included)
//! with the payment provider under the step's idempotency key. A declined
//! card rejects the order.

use erp_connect_proto::payments::v1 as pay;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::order::{Action, Order, Payment, Status};

/// Undone by voiding the authorization.
pub const POLICY: Policy =
    Policy { system: System::Payments, retries: Retries::Budget, compensated_by: Some(Action::Void) };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    let Payment::Card { token } = &order.payment else { return Ok(()) };
    let s = cx.systems;
    let request = pay::AuthorizeRequest {
        idempotency_key: cx.key.clone(),
        payment_token: token.clone(),
        currency: order.currency.clone(),
        amount: order.total.clone(),
        reference: order.id.clone(),
    };
    let payment = s.call(s.payments().authorize(s.request(request))).await.map_err(|e| cx.fail(e))?;
    order.progress.payment_id = Some(payment.id);
    if payment.status == pay::PaymentStatus::Declined as i32 {
        order.progress.declined = true;
        order.unwind(Status::Rejected, format!("card declined: {}", payment.decline_reason), now());
    } else {
        order.record("payment_authorized", now(), "");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::payments::v1 as pay;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, card_order, run, steps},
    };
    use crate::order_to_cash::order::{Action, Order};

    fn confirmed() -> Order {
        let mut order = card_order();
        (order.progress.sales_order_id, order.progress.confirmed) = (Some("so_1".into()), true);
        order
    }

    fn payment(status: pay::PaymentStatus) -> pay::Payment {
        pay::Payment {
            id: "pay_1".into(),
            status: status as i32,
            decline_reason: "insufficient_funds".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_total_is_authorized_under_the_steps_key() {
        let fake = Fake::new();
        fake.answer("Authorize", payment(pay::PaymentStatus::Authorized));
        let mut order = confirmed();
        run(&fake, Action::Authorize, &mut order).await.0.expect("authorized");
        let sent: Vec<pay::AuthorizeRequest> = fake.requests("Authorize");
        assert_eq!((sent[0].idempotency_key.as_str(), sent[0].amount.as_str()), ("ord_1:authorize", "37.50"));
        assert_eq!(order.progress.payment_id.as_deref(), Some("pay_1"));
        assert_eq!(steps(&order), ["payment_authorized"]);
        assert_eq!(order.next_action(), Action::Capture);
    }

    #[tokio::test]
    async fn a_declined_card_rejects_and_a_provider_outage_is_waited_out() {
        let fake = Fake::new();
        fake.answer("Authorize", payment(pay::PaymentStatus::Declined))
            .fail("Authorize", Status::unavailable("provider"));
        let mut order = confirmed();
        run(&fake, Action::Authorize, &mut order).await.0.expect("a decline is an answer");
        assert!(order.progress.declined);
        assert_eq!(order.next_action(), Action::CancelSalesOrder, "nothing to void after a decline");
        let mut order = confirmed();
        assert!(matches!(run(&fake, Action::Authorize, &mut order).await.0, Err(StepError::Outage(_))));
    }
}
