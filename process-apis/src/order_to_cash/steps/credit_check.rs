//! On-account orders only: the customer's open receivables plus this
//! order must stay within the customer's credit limit in the ERP, else the
//! order is rejected before anything is sold.

use erp_connect_proto::erp::v1 as erp;

use super::{Context, Policy, Retries, StepError, System, amount, now};
use crate::order_to_cash::order::{Order, Status};

/// A read; nothing to undo.
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::Budget, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    let s = cx.systems;
    let request = erp::GetOpenAmountRequest { customer_id: order.customer_id.clone() };
    let open = s.call(s.receivables().get_open_amount(s.request(request))).await.map_err(|e| cx.fail(e))?;
    let (due, limit, total) = (amount(&open.open_amount)?, amount(&open.credit_limit)?, amount(&order.total)?);
    if due + total > limit {
        let reason = format!("over the credit limit: {due} open + {total} ordered > {limit} {}", order.currency);
        order.unwind(Status::Rejected, reason, now());
    } else {
        order.progress.credit_checked = true;
        order.record("credit_checked", now(), "");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, order, run, steps},
    };
    use crate::order_to_cash::order::{Action, Payment};

    fn open(due: &str, limit: &str) -> erp::OpenAmount {
        erp::OpenAmount { open_amount: due.into(), credit_limit: limit.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn within_the_limit_passes_and_over_it_rejects() {
        let fake = Fake::new();
        fake.answer("GetOpenAmount", open("62.50", "100.00")).answer("GetOpenAmount", open("62.51", "100.00"));
        let mut within = order(Payment::OnAccount);
        run(&fake, Action::CreditCheck, &mut within).await.0.expect("checked");
        assert!(within.progress.credit_checked);
        assert_eq!(steps(&within), ["credit_checked"]);
        let mut over = order(Payment::OnAccount);
        run(&fake, Action::CreditCheck, &mut over).await.0.expect("answered");
        assert!(over.progress.unwind.as_ref().is_some_and(|u| u.reason.contains("over the credit limit")));
        assert_eq!(over.next_action(), Action::Finish);
    }

    #[tokio::test]
    async fn a_malformed_amount_or_a_fault_is_retried_and_an_outage_waited_out() {
        let fake = Fake::new();
        fake.answer("GetOpenAmount", open("12,50", "100.00")).fail("GetOpenAmount", Status::deadline_exceeded("slow"));
        let mut o = order(Payment::OnAccount);
        assert!(matches!(run(&fake, Action::CreditCheck, &mut o).await.0, Err(StepError::Retry(_))));
        assert!(matches!(run(&fake, Action::CreditCheck, &mut o).await.0, Err(StepError::Outage(_))));
        assert!(!o.progress.credit_checked);
    }
}
