//! The flow's metrics, recorded through `platform::metrics` (Prometheus
//! text at `/metrics`; the gateway's `/ops/v1/overview` reads some back):
//!
//! - `erp_connect_saga_outcomes_total{outcome}`: `accepted`, `confirmed`,
//!   `completed`, `rejected`, `cancelled` as each is committed (an order
//!   counts once for every milestone it reaches), and `failed` when a step
//!   used up its retry budget (that order then also ends `rejected`).
//! - `erp_connect_saga_step_duration_seconds{step, result}`: one system-API
//!   step of a saga (`create-sales-order`, `capture`, `refund`, ...) and how
//!   it ended: `ok`, `outage` (the system did not answer; the order waits),
//!   `retry` (technical failure, retried within the budget), `business`
//!   (winds the saga back) or `store`.
//! - `erp_connect_idempotent_replays_total{operation}`: a repeated
//!   `Idempotency-Key` answered with the first request's order.
//! - `erp_connect_outbox_depth` and `erp_connect_outbox_oldest_age_seconds`:
//!   events not yet published, and the age of the oldest (0 when none).
//! - `erp_connect_change_feed_lag_seconds` (histogram) and
//!   `erp_connect_change_feed_last_lag_seconds`: data latency of an ERP
//!   change applied to an order, from its time in the ERP to the commit that
//!   writes its event to the outbox (published right after).
//! - `erp_connect_orders{status}`: orders per status.
//! - `erp_connect_orders_waiting{system}` and
//!   `erp_connect_orders_waiting_oldest_age_seconds{system}`: the backlog of
//!   orders waiting for a system that does not answer (`erp`, `payments`),
//!   and how long the oldest has waited.
//!
//! The gauges read from the store are refreshed by [`run_gauges`] every
//! [`GAUGE_INTERVAL`]; with several replicas each reports the same shared
//! store, so aggregate them with `max`, not `sum`.

use std::time::Duration;

use platform::metrics::facade::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tokio_util::sync::CancellationToken;

use super::{
    clock,
    order::Status,
    saga::StepError,
    store::{OutboxEvent, Store},
};

/// How often the gauges read from the store are refreshed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

const OUTCOMES: &str = "erp_connect_saga_outcomes_total";

/// The systems orders can wait for, so that a backlog that cleared drops to 0.
const SYSTEMS: [&str; 2] = ["erp", "payments"];

/// Every status, so that a status whose last order moved on drops to 0.
const STATUSES: [Status; 8] = [
    Status::Accepted,
    Status::Confirmed,
    Status::Invoiced,
    Status::Paid,
    Status::Shipped,
    Status::Completed,
    Status::Cancelled,
    Status::Rejected,
];

/// Installs the recorder (if no tier has yet) and its HELP texts.
pub fn describe() {
    platform::metrics::install();
    use platform::metrics::facade::Unit;
    describe_counter!(
        OUTCOMES,
        "Order-to-cash milestones committed: accepted, confirmed, completed, rejected, cancelled; failed when the retry budget ran out."
    );
    describe_histogram!(
        "erp_connect_saga_step_duration_seconds",
        Unit::Seconds,
        "One saga step against the system APIs, by step and result (ok, retry, business, store)."
    );
    describe_counter!(
        "erp_connect_idempotent_replays_total",
        "Requests answered as a replay of an earlier one with the same Idempotency-Key."
    );
    // Every outcome from 0, so that the first failure after a start is an
    // increase an alert's `increase()` sees, not a new series it cannot.
    for outcome in ["accepted", "confirmed", "completed", "rejected", "cancelled", "failed"] {
        counter!(OUTCOMES, "outcome" => outcome).increment(0);
    }
    describe_gauge!("erp_connect_outbox_depth", "Events in the outbox not yet published.");
    describe_gauge!(
        "erp_connect_outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest unpublished event (0 when none)."
    );
    describe_histogram!(
        "erp_connect_change_feed_lag_seconds",
        Unit::Seconds,
        "From a change made in the ERP to its order event written (data latency)."
    );
    describe_gauge!(
        "erp_connect_change_feed_last_lag_seconds",
        Unit::Seconds,
        "Data latency of the last ERP change applied."
    );
    describe_gauge!("erp_connect_orders", "Orders per status, as last counted in the saga store.");
    describe_gauge!("erp_connect_orders_waiting", "Orders waiting for a system that does not answer, per system.");
    describe_gauge!(
        "erp_connect_orders_waiting_oldest_age_seconds",
        Unit::Seconds,
        "How long the oldest order waiting for a system has waited (0 when none)."
    );
}

/// Counts the milestones among `events`, just committed.
pub fn committed(events: &[OutboxEvent]) {
    for event in events {
        let outcome = match event.event_type.as_str() {
            "order.accepted" => "accepted",
            "order.confirmed" => "confirmed",
            "order.completed" => "completed",
            "order.rejected" => "rejected",
            "order.cancelled" => "cancelled",
            _ => continue,
        };
        counter!(OUTCOMES, "outcome" => outcome).increment(1);
    }
}

/// A step used up its retry budget: the order is wound back and rejected.
pub fn retries_exhausted() {
    counter!(OUTCOMES, "outcome" => "failed").increment(1);
}

/// One step ran for `elapsed` and ended with `result`.
pub fn step(step: &'static str, result: &Result<(), StepError>, elapsed: Duration) {
    let result = match result {
        Ok(()) => "ok",
        Err(StepError::Outage(_)) => "outage",
        Err(StepError::Retry(_)) => "retry",
        Err(StepError::Business(_)) => "business",
        Err(StepError::Store(_)) => "store",
    };
    histogram!("erp_connect_saga_step_duration_seconds", "step" => step, "result" => result)
        .record(elapsed.as_secs_f64());
}

/// A repeated idempotency key was answered with the first request's result.
pub fn replayed(operation: &'static str) {
    counter!("erp_connect_idempotent_replays_total", "operation" => operation).increment(1);
}

/// An ERP change made at `changed_at` (unix seconds and nanos) was applied now.
pub fn change_applied(changed_at_seconds: i64, changed_at_nanos: i32) {
    let changed_ms = changed_at_seconds.saturating_mul(1000) + i64::from(changed_at_nanos / 1_000_000);
    // Clocks of the ERP and of this host may disagree a little.
    let lag = (clock::now_ms() - changed_ms).max(0) as f64 / 1000.0;
    histogram!("erp_connect_change_feed_lag_seconds").record(lag);
    gauge!("erp_connect_change_feed_last_lag_seconds").set(lag);
}

/// Refreshes the gauges read from the store until `shutdown`.
pub async fn run_gauges(store: Store, shutdown: CancellationToken) {
    loop {
        if let Err(err) = refresh(&store).await {
            tracing::debug!(error = %err, "cannot refresh the order-to-cash gauges");
        }
        tokio::select! {
            _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn refresh(store: &Store) -> Result<(), super::store::Error> {
    let (depth, oldest) = store.outbox_backlog().await?;
    gauge!("erp_connect_outbox_depth").set(depth as f64);
    let age = oldest.map_or(0, |created| (clock::now_ms() - created).max(0));
    gauge!("erp_connect_outbox_oldest_age_seconds").set(age as f64 / 1000.0);
    let counts = store.count_by_status().await?;
    for status in STATUSES {
        let name = status.as_str();
        let count = counts.iter().find(|(s, _)| s == name).map_or(0, |(_, n)| *n);
        gauge!("erp_connect_orders", "status" => name).set(count as f64);
    }
    let waiting = store.waiting().await?;
    for system in SYSTEMS {
        let (count, since) = waiting.iter().find(|(s, ..)| s == system).map_or((0, None), |(_, n, t)| (*n, Some(*t)));
        gauge!("erp_connect_orders_waiting", "system" => system).set(count as f64);
        let age = since.map_or(0, |t| (clock::now_ms() - t).max(0));
        gauge!("erp_connect_orders_waiting_oldest_age_seconds", "system" => system).set(age as f64 / 1000.0);
    }
    Ok(())
}
