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

/// Each invariant made to break, one at a time, against a scripted system
/// API (a fake: the real ERP and payments API do not break on demand; the
/// workspace's `tests/reconcile.rs` breaks one behind a real saga's back),
/// and a sound order beside them that raises nothing.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::order_to_cash::{
        order::TimelineEntry,
        steps::fake::{Fake, card_order},
    };

    /// Now, for the stuck check: an hour after the orders' `updated_at` of 0.
    const NOW: i64 = 3_600_000;

    fn sales_order(state: erp::SalesOrderState) -> erp::SalesOrder {
        erp::SalesOrder { id: "so_1".into(), state: state as i32, ..Default::default() }
    }

    fn payment(status: pay::PaymentStatus, captured: &str) -> pay::Payment {
        pay::Payment {
            id: "pay_1".into(),
            status: status as i32,
            amount: "37.50".into(),
            captured_amount: captured.into(),
            refunded_amount: "0.00".into(),
            ..Default::default()
        }
    }

    /// A card order at `status` with an ERP order and a payment, moved just now.
    fn order_at(status: Status) -> Order {
        let mut order = card_order();
        order.status = status;
        order.updated_at = NOW;
        order.progress.sales_order_id = Some("so_1".into());
        order.progress.payment_id = Some("pay_1".into());
        order.progress.shipped = true;
        order.progress.invoice_paid = true;
        order
    }

    /// What `check` flags for `order` when the ERP order and the payment
    /// are as scripted (`None`: not asked for, or not found).
    async fn violations(
        order: &Order,
        so: Option<erp::SalesOrder>,
        pay: Result<pay::Payment, tonic::Status>,
    ) -> Vec<String> {
        let fake = Fake::new();
        if let Some(so) = so {
            fake.answer("GetSalesOrder", so);
        }
        match pay {
            Ok(payment) => fake.answer("GetPayment", payment),
            Err(status) => fake.fail("GetPayment", status),
        };
        let (systems, _) = fake.systems();
        let mut found = Vec::new();
        check(order, &systems, NOW, Duration::from_secs(300), &mut found).await.expect("checked");
        found
    }

    fn flags(found: &[String], what: &str) -> bool {
        found.len() == 1 && found[0].starts_with("ord_1: ") && found[0].contains(what)
    }

    #[tokio::test]
    async fn a_sound_completed_order_raises_nothing() {
        let order = order_at(Status::Completed);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Done)),
            Ok(payment(pay::PaymentStatus::Captured, "37.50")),
        )
        .await;
        assert!(found.is_empty(), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_1_a_saga_that_has_not_moved_is_stuck() {
        let mut order = card_order();
        order.updated_at = 0;
        let fake = Fake::new();
        let (systems, _) = fake.systems();
        let mut found = Vec::new();
        check(&order, &systems, NOW, Duration::from_secs(300), &mut found).await.expect("checked");
        assert!(flags(&found, "saga stuck in accepted"), "{found:?}");
        // Within the bound it is only running.
        found.clear();
        check(&order, &systems, 1000, Duration::from_secs(300), &mut found).await.expect("checked");
        assert!(found.is_empty(), "{found:?}");
    }

    #[tokio::test]
    async fn a_compensation_that_failed_is_named() {
        let mut order = order_at(Status::Rejected);
        order.timeline.push(TimelineEntry { step: "compensation_failed:void".into(), at: 0, detail: String::new() });
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Cancelled)),
            Ok(payment(pay::PaymentStatus::Voided, "0.00")),
        )
        .await;
        assert!(flags(&found, "a compensation could not be done"), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_2_a_capture_without_a_live_erp_order_is_named() {
        let order = order_at(Status::Paid);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Cancelled)),
            Ok(payment(pay::PaymentStatus::Captured, "37.50")),
        )
        .await;
        assert!(flags(&found, "captured 37.50 without a live ERP sales order"), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_3_a_confirmed_erp_order_for_a_declined_card_is_named() {
        let order = order_at(Status::Confirmed);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Processing)),
            Ok(payment(pay::PaymentStatus::Declined, "0.00")),
        )
        .await;
        assert!(flags(&found, "confirmed although the card was declined"), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_4_a_capture_above_the_total_is_named_and_so_is_an_amount_that_is_none() {
        let order = order_at(Status::Paid);
        let too_much = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Processing)),
            Ok(payment(pay::PaymentStatus::Captured, "75.00")),
        )
        .await;
        assert!(flags(&too_much, "captured 75.00 for a total of 37.50"), "{too_much:?}");
        let garbled = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Processing)),
            Ok(payment(pay::PaymentStatus::Captured, "37,50")),
        )
        .await;
        assert!(garbled.iter().any(|v| v.contains("an amount that is not one")), "{garbled:?}");
    }

    #[tokio::test]
    async fn a_payment_the_payments_api_does_not_know_is_named() {
        let order = order_at(Status::Paid);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Processing)),
            Err(tonic::Status::not_found("no such payment")),
        )
        .await;
        assert!(flags(&found, "payment pay_1 is unknown to the payments API"), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_5_a_terminal_order_that_disagrees_with_the_erp_is_named() {
        // Completed, but never shipped.
        let mut order = order_at(Status::Completed);
        order.progress.shipped = false;
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Done)),
            Ok(payment(pay::PaymentStatus::Captured, "37.50")),
        )
        .await;
        assert!(flags(&found, "completed before shipped and paid"), "{found:?}");
        // Completed, the card never charged.
        let order = order_at(Status::Completed);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Done)),
            Ok(payment(pay::PaymentStatus::Authorized, "0.00")),
        )
        .await;
        assert!(flags(&found, "completed card order without a captured payment"), "{found:?}");
        // Rejected, its ERP order still live.
        let order = order_at(Status::Rejected);
        let found = violations(
            &order,
            Some(sales_order(erp::SalesOrderState::Processing)),
            Ok(payment(pay::PaymentStatus::Voided, "0.00")),
        )
        .await;
        assert!(flags(&found, "rejected but its ERP sales order is not cancelled"), "{found:?}");
    }

    #[tokio::test]
    async fn invariant_6_an_event_left_unpublished_too_long_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("process.db").display())).await.expect("store");
        store
            .write_events(&[crate::order_to_cash::store::OutboxEvent {
                id: "evt_1".into(),
                order_id: String::new(),
                event_type: "product.updated".into(),
                payload: "{}".into(),
                created_at: clock::now_ms() - 60_000,
                traceparent: None,
                tenant: None,
                aggregate: "product:WIDGET-1".into(),
            }])
            .await
            .expect("event written");
        let (systems, _) = Fake::new().systems();
        let late = run(&store, &systems, Duration::from_secs(300), Duration::from_secs(30)).await.expect("ran");
        assert_eq!(late.violations.len(), 1, "{:?}", late.violations);
        assert!(late.violations[0].starts_with("outbox: an event has waited"), "{:?}", late.violations);
        let patient = run(&store, &systems, Duration::from_secs(300), Duration::from_secs(120)).await.expect("ran");
        assert!(patient.violations.is_empty(), "{:?}", patient.violations);
    }
}
