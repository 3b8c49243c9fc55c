//! On-account orders only: the customer's open receivables plus this
//! order must stay within the customer's credit limit in the ERP, else the
//! order is rejected before anything is sold. An ERP that keeps no credit
//! limits (an empty limit) is checked against erp-connect's own: the
//! limit the order's customer would get when created
//! (`process.saga.partner_credit_limit`, none for card-only tenants).

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
    let (ours, configured) = match open.credit_limit.is_empty() {
        true => {
            let own = order.customer.as_ref().map(|c| c.credit_limit.clone()).filter(|l| !l.is_empty());
            (true, own.unwrap_or_else(|| cx.settings.partner_credit_limit.clone()))
        }
        false => (false, open.credit_limit.clone()),
    };
    let (due, limit, total) = (amount(&open.open_amount)?, amount(&configured)?, amount(&order.total)?);
    let whose = if ours { "erp-connect's credit limit (the ERP keeps none)" } else { "the credit limit" };
    if due + total > limit {
        let reason = format!("over {whose}: {due} open + {total} ordered > {limit} {}", order.currency);
        order.unwind(Status::Rejected, reason, now());
    } else {
        order.progress.credit_checked = true;
        order.record("credit_checked", now(), if ours { "against erp-connect's own limit" } else { "" });
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
    async fn an_erp_without_credit_limits_is_checked_against_erp_connects_own() {
        let fake = Fake::new();
        fake.answer("GetOpenAmount", open("4950.00", "")).answer("GetOpenAmount", open("4970.00", ""));
        // The default partner limit, 5000.00: 4950.00 + 37.50 fits, 4970.00 + 37.50 does not.
        let mut within = order(Payment::OnAccount);
        run(&fake, Action::CreditCheck, &mut within).await.0.expect("checked");
        assert!(within.progress.credit_checked, "{:?}", within.progress.unwind);
        let mut over = order(Payment::OnAccount);
        run(&fake, Action::CreditCheck, &mut over).await.0.expect("answered");
        let reason = over.progress.unwind.as_ref().map(|u| u.reason.clone()).unwrap_or_default();
        assert!(reason.contains("erp-connect's credit limit") && reason.contains("5000.00"), "{reason}");
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
