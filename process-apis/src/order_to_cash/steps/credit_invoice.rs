//! Compensation for [`super::post_invoice`]: credits the posted (or paid)
//! invoice in full, so that its sales order can be cancelled.

use erp_connect_proto::erp::v1 as erp;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{order::Order, saga::Effects};

/// Must finish: retried until done.
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::UntilDone, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let id = order.progress.invoice_id.clone().unwrap_or_default();
    s.call(s.invoices().credit_invoice(s.request(erp::InvoiceRequest { id }))).await.map_err(|e| cx.fail(e))?;
    order.progress.invoice_credited = true;
    order.record("compensation:credit_invoice", now(), "");
    effects.emit(order, "invoice.credited", now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, order, run},
    };
    use crate::order_to_cash::order::{Action, Order, Payment, Status as OrderStatus};

    fn invoiced_then_cancelled() -> Order {
        let mut order = order(Payment::OnAccount);
        let p = &mut order.progress;
        (p.credit_checked, p.sales_order_id, p.confirmed) = (true, Some("so_1".into()), true);
        (p.invoice_id, p.invoice_posted) = (Some("inv_1".into()), true);
        order.unwind(OrderStatus::Cancelled, "wrong size", 1);
        order
    }

    #[tokio::test]
    async fn the_posted_invoice_is_credited_before_the_sales_order_is_cancelled() {
        let fake = Fake::new();
        fake.answer("CreditInvoice", erp::Invoice::default());
        let mut order = invoiced_then_cancelled();
        assert_eq!(order.next_action(), Action::CreditInvoice);
        let (result, events) = run(&fake, Action::CreditInvoice, &mut order).await;
        result.expect("credited");
        assert_eq!(fake.requests::<erp::InvoiceRequest>("CreditInvoice")[0].id, "inv_1");
        assert_eq!(events, ["invoice.credited"]);
        assert_eq!(order.next_action(), Action::CancelSalesOrder);
    }

    #[tokio::test]
    async fn an_outage_is_waited_out_and_a_refusal_is_a_business_failure() {
        let fake = Fake::new();
        fake.fail("CreditInvoice", Status::unavailable("down"))
            .fail("CreditInvoice", Status::failed_precondition("draft"));
        let mut order = invoiced_then_cancelled();
        assert!(matches!(run(&fake, Action::CreditInvoice, &mut order).await.0, Err(StepError::Outage(_))));
        assert!(matches!(run(&fake, Action::CreditInvoice, &mut order).await.0, Err(StepError::Business(_))));
        assert!(!order.progress.invoice_credited);
    }
}
