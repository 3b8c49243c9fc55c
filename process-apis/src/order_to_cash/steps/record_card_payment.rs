//! Card orders: records the captured payment against the posted invoice
//! in the ERP (what the invoice asks for, taxes included), under the
//! step's key: the order is `paid`.

use erp_connect_proto::erp::v1 as erp;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{
    order::Order,
    saga::{Effects, mark_paid},
};

/// Undone with the invoice it paid ([`super::post_invoice`]'s credit).
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::Budget, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let request = erp::RecordInvoicePaymentRequest {
        idempotency_key: cx.key.clone(),
        invoice_id: order.progress.invoice_id.clone().unwrap_or_default(),
        currency: order.currency.clone(),
        amount: order.progress.invoice_total.clone(),
    };
    s.call(s.invoices().record_invoice_payment(s.request(request))).await.map_err(|e| cx.fail(e))?;
    mark_paid(order, effects, now());
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

    fn invoiced() -> Order {
        let mut order = card_order();
        let p = &mut order.progress;
        (p.sales_order_id, p.confirmed, p.payment_id, p.captured) =
            (Some("so_1".into()), true, Some("pay_1".into()), true);
        (p.invoice_id, p.invoice_posted, p.invoice_total) = (Some("inv_1".into()), true, "44.63".into());
        order
    }

    #[tokio::test]
    async fn the_invoice_total_is_recorded_paid_under_the_steps_key() {
        let fake = Fake::new();
        fake.answer("RecordInvoicePayment", erp::Invoice::default());
        let mut order = invoiced();
        let (result, events) = run(&fake, Action::RecordCardPayment, &mut order).await;
        result.expect("recorded");
        let sent: Vec<erp::RecordInvoicePaymentRequest> = fake.requests("RecordInvoicePayment");
        assert_eq!((sent[0].idempotency_key.as_str(), sent[0].amount.as_str()), ("ord_1:record-card-payment", "44.63"));
        assert_eq!(order.status, OrderStatus::Paid);
        assert_eq!(events, ["order.paid"]);
    }

    #[tokio::test]
    async fn an_outage_is_waited_out_and_a_refusal_winds_back() {
        let fake = Fake::new();
        fake.fail("RecordInvoicePayment", Status::unavailable("down"))
            .fail("RecordInvoicePayment", Status::invalid_argument("more than due"));
        let mut order = invoiced();
        assert!(matches!(run(&fake, Action::RecordCardPayment, &mut order).await.0, Err(StepError::Outage(_))));
        assert!(matches!(run(&fake, Action::RecordCardPayment, &mut order).await.0, Err(StepError::Business(_))));
        assert!(!order.progress.invoice_paid);
    }
}
