//! The order-to-cash invariants, checked against the saga store, the ERP
//! and the payments API (`erp-connect reconcile`):
//!
//! 1. every accepted order ends in exactly one terminal state (orders still
//!    running are counted; one whose saga has not moved for `stuck_after`
//!    is a violation);
//! 2. no payment captured (and not refunded) without a live ERP sales order;
//! 3. no confirmed ERP order for a declined payment;
//! 4. no payment captured for more than the order's total;
//! 5. a terminal order agrees with the ERP: completed orders shipped and
//!    paid, rejected and cancelled ones with their ERP order cancelled;
//! 6. no outbox event unpublished for longer than `publish_within`.

use std::time::Duration;

use erp_connect_proto::{erp::v1 as erp, payments::v1 as pay};
use rust_decimal::Decimal;
use tonic::Code;

use super::{
    clock,
    order::{Action, Order, Status},
    saga::Systems,
    store::{Filter, Store},
};

/// What reconciliation found.
#[derive(Debug, Default)]
pub struct Report {
    /// Orders looked at.
    pub orders: usize,
    /// Orders by status name.
    pub by_status: std::collections::BTreeMap<&'static str, usize>,
    /// Each broken invariant, one line each, naming the order.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether every invariant holds.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Why reconciliation could not finish (as opposed to finding violations).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The saga store.
    #[error(transparent)]
    Store(#[from] super::store::Error),
    /// A system API did not answer.
    #[error("system API: {0}")]
    System(#[from] tonic::Status),
}

/// Checks every order in `store` against the system APIs.
pub async fn run(
    store: &Store,
    systems: &Systems,
    stuck_after: Duration,
    publish_within: Duration,
) -> Result<Report, Error> {
    let mut report = Report::default();
    let now = clock::now_ms();
    let mut before: Option<String> = None;
    loop {
        let page = store.list(&Filter::default(), before.as_deref(), 200).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        for order in &page {
            report.orders += 1;
            *report.by_status.entry(order.status.as_str()).or_default() += 1;
            check(order, systems, now, stuck_after, &mut report.violations).await?;
        }
    }
    if let Some(oldest) = store.oldest_unpublished().await?
        && now - oldest > publish_within.as_millis() as i64
    {
        report.violations.push(format!("outbox: an event has waited {} ms to be published", now - oldest));
    }
    Ok(report)
}

async fn check(
    order: &Order,
    systems: &Systems,
    now: i64,
    stuck_after: Duration,
    violations: &mut Vec<String>,
) -> Result<(), Error> {
    let id = &order.id;
    let p = &order.progress;
    let mut flag = |what: String| violations.push(format!("{id}: {what}"));
    if !order.status.is_terminal()
        && !matches!(order.next_action(), Action::Wait)
        && now - order.updated_at > stuck_after.as_millis() as i64
    {
        flag(format!("saga stuck in {} since {}", order.status.as_str(), clock::rfc3339(order.updated_at)));
    }
    if order.timeline.iter().any(|t| t.step.starts_with("compensation_failed:")) {
        flag("a compensation could not be done".into());
    }
    let s = systems;
    let sales_order = match &p.sales_order_id {
        Some(so) => {
            Some(s.call(s.sales_orders().get_sales_order(s.request(erp::SalesOrderRequest { id: so.clone() }))).await?)
        }
        None => None,
    };
    let so_live = sales_order.as_ref().is_some_and(|so| so.state != erp::SalesOrderState::Cancelled as i32);
    let so_confirmed = sales_order.as_ref().is_some_and(|so| {
        so.state == erp::SalesOrderState::Processing as i32 || so.state == erp::SalesOrderState::Done as i32
    });
    if let Some(payment_id) = &p.payment_id {
        let payment = match s
            .call(s.payments().get_payment(s.request(pay::GetPaymentRequest { payment_id: payment_id.clone() })))
            .await
        {
            Ok(payment) => Some(payment),
            Err(status) if status.code() == Code::NotFound => {
                flag(format!("payment {payment_id} is unknown to the payments API"));
                None
            }
            Err(status) => return Err(status.into()),
        };
        if let Some(payment) = payment {
            // An amount that does not parse is itself a finding, not a zero.
            let mut malformed = Vec::new();
            let mut amount = |t: &str| {
                erp_connect_proto::money::parse(t).unwrap_or_else(|e| {
                    malformed.push(e.to_string());
                    Decimal::ZERO
                })
            };
            let kept = amount(&payment.captured_amount) - amount(&payment.refunded_amount);
            if kept > Decimal::ZERO && !so_live {
                flag(format!("payment {payment_id} captured {kept} without a live ERP sales order"));
            }
            if payment.status == pay::PaymentStatus::Declined as i32 && so_confirmed {
                flag("the ERP sales order is confirmed although the card was declined".into());
            }
            if amount(&payment.captured_amount) > amount(&order.total) {
                flag(format!(
                    "payment {payment_id} captured {} for a total of {}",
                    payment.captured_amount, order.total
                ));
            }
            for what in malformed {
                flag(format!("payment {payment_id} or its order carries an amount that is not one: {what}"));
            }
            if order.status == Status::Completed && kept.is_zero() {
                flag("completed card order without a captured payment".into());
            }
        }
    }
    match order.status {
        Status::Completed if !(p.shipped && p.invoice_paid) => flag("completed before shipped and paid".into()),
        Status::Rejected | Status::Cancelled if so_live => {
            flag(format!("{} but its ERP sales order is not cancelled", order.status.as_str()));
        }
        _ => {}
    }
    Ok(())
}
