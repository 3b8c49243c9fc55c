//! Posts the order's invoice in the ERP (found by the sales order when
//! confirmation did not name it): the order is `invoiced`, and `paid` at
//! once if the ERP already says so.

use erp_connect_proto::erp::v1 as erp;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::{
    order::{Action, Order, Status},
    saga::{Effects, mark_paid},
};

/// Undone by crediting the posted invoice.
pub const POLICY: Policy =
    Policy { system: System::Erp, retries: Retries::Budget, compensated_by: Some(Action::CreditInvoice) };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    let s = cx.systems;
    let invoice_id = match order.progress.invoice_id.clone() {
        Some(id) => id,
        None => {
            let so = order.progress.sales_order_id.clone().unwrap_or_default();
            let request = erp::ListInvoicesRequest { sales_order_id: so };
            let list = s.call(s.invoices().list_invoices(s.request(request))).await.map_err(|e| cx.fail(e))?;
            let Some(first) = list.invoices.into_iter().next() else {
                return Err(StepError::Retry("the ERP has not created the invoice yet".into()));
            };
            effects.refs.push(first.id.clone());
            first.id
        }
    };
    let request = erp::InvoiceRequest { id: invoice_id.clone() };
    let invoice = s.call(s.invoices().post_invoice(s.request(request))).await.map_err(|e| cx.fail(e))?;
    let p = &mut order.progress;
    p.invoice_id = Some(invoice_id);
    p.invoice_posted = true;
    p.invoice_number = invoice.number;
    p.invoice_total = invoice.total;
    order.advance(Status::Invoiced, now());
    effects.emit(order, "invoice.issued", now());
    if invoice.state == erp::InvoiceState::Paid as i32 {
        mark_paid(order, effects, now());
    }
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

    fn confirmed() -> Order {
        let mut order = order(Payment::OnAccount);
        order.progress.credit_checked = true;
        (order.progress.sales_order_id, order.progress.confirmed) = (Some("so_1".into()), true);
        order
    }

    #[tokio::test]
    async fn the_invoice_is_found_by_its_sales_order_and_posted() {
        let fake = Fake::new();
        let invoice =
            erp::Invoice { id: "inv_1".into(), number: "INV-3".into(), total: "44.63".into(), ..Default::default() };
        fake.answer("ListInvoices", erp::ListInvoicesResponse { invoices: vec![invoice.clone()] })
            .answer("PostInvoice", erp::Invoice { state: erp::InvoiceState::Posted as i32, ..invoice });
        let mut order = confirmed();
        let (result, events) = run(&fake, Action::PostInvoice, &mut order).await;
        result.expect("posted");
        assert_eq!(order.status, OrderStatus::Invoiced);
        assert_eq!((order.progress.invoice_number.as_str(), order.progress.invoice_total.as_str()), ("INV-3", "44.63"));
        assert_eq!(events, ["invoice.issued"]);
        assert_eq!(order.next_action(), Action::Wait, "on account: the cash comes from outside");
    }

    #[tokio::test]
    async fn an_invoice_not_there_yet_is_retried_and_a_refused_posting_winds_back() {
        let fake = Fake::new();
        fake.answer("ListInvoices", erp::ListInvoicesResponse::default())
            .answer(
                "ListInvoices",
                erp::ListInvoicesResponse { invoices: vec![erp::Invoice { id: "inv_1".into(), ..Default::default() }] },
            )
            .fail("PostInvoice", Status::failed_precondition("period closed"));
        let mut order = confirmed();
        assert!(matches!(run(&fake, Action::PostInvoice, &mut order).await.0, Err(StepError::Retry(_))));
        assert!(matches!(run(&fake, Action::PostInvoice, &mut order).await.0, Err(StepError::Business(_))));
        assert!(!order.progress.invoice_posted);
    }
}
