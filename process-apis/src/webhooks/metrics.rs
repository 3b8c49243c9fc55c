//! Webhook metrics (Prometheus text at `/metrics`):
//!
//! - `erp_connect_event_latency_seconds{type}` (histogram): data latency,
//!   from the event's time at its source (the saga step's commit, the ERP
//!   change) to the endpoint's 2xx.
//! - `erp_connect_webhook_deliveries_total{outcome}`: attempts by outcome:
//!   `delivered`, `retry`, `failed` (attempts exhausted), `disabled` (410 or
//!   failing too long).
//! - `erp_connect_webhook_attempt_duration_seconds`: one attempt, request to
//!   answer.
//! - `erp_connect_webhook_pending` and
//!   `erp_connect_webhook_pending_oldest_age_seconds`: deliveries waiting
//!   for enabled endpoints, and the oldest one's age (0 when none),
//!   refreshed every few seconds; replicas share the store, so aggregate
//!   them with `max`.

use std::time::Duration;

use platform::metrics::facade::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use tokio_util::sync::CancellationToken;

use super::store::{Settle, Store};
use crate::order_to_cash::clock;

/// Installs the recorder (if no tier has yet) and the HELP texts.
pub fn describe() {
    platform::metrics::install();
    describe_histogram!(
        "erp_connect_event_latency_seconds",
        Unit::Seconds,
        "From an event's time at its source (saga commit, ERP change) to the webhook endpoint's 2xx."
    );
    describe_counter!(
        "erp_connect_webhook_deliveries_total",
        "Webhook attempts by outcome: delivered, retry, failed (attempts exhausted), disabled (410 or failing too long)."
    );
    // Every outcome from 0: the first dead letter after a start is then an
    // increase an alert sees.
    for outcome in ["delivered", "retry", "failed", "disabled"] {
        counter!("erp_connect_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    describe_histogram!(
        "erp_connect_webhook_attempt_duration_seconds",
        Unit::Seconds,
        "One webhook attempt, from the request to the endpoint's answer."
    );
    describe_gauge!("erp_connect_webhook_pending", "Webhook deliveries waiting for enabled endpoints.");
    describe_gauge!(
        "erp_connect_webhook_pending_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending webhook delivery (0 when none)."
    );
}

/// An attempt of an event of `event_type`, which happened at
/// `occurred_at`, took `took` and was settled at `now` (unix ms).
pub fn attempt(event_type: &str, settle: &Settle, took: Duration, occurred_at: i64, now: i64) {
    let outcome = match settle {
        Settle::Delivered => "delivered",
        Settle::Retry(_) => "retry",
        Settle::Failed => "failed",
        Settle::Disable(_) => "disabled",
    };
    counter!("erp_connect_webhook_deliveries_total", "outcome" => outcome).increment(1);
    histogram!("erp_connect_webhook_attempt_duration_seconds").record(took.as_secs_f64());
    if *settle == Settle::Delivered {
        let latency = (now - occurred_at).max(0) as f64 / 1000.0;
        histogram!("erp_connect_event_latency_seconds", "type" => event_type.to_owned()).record(latency);
    }
}

/// Refreshes the pending gauges until `shutdown`.
pub async fn run_gauges(store: Store, shutdown: CancellationToken) {
    loop {
        match store.backlog().await {
            Ok((pending, oldest)) => {
                gauge!("erp_connect_webhook_pending").set(pending as f64);
                let age = oldest.map_or(0, |t| (clock::now_ms() - t).max(0));
                gauge!("erp_connect_webhook_pending_oldest_age_seconds").set(age as f64 / 1000.0);
            }
            Err(err) => tracing::debug!(error = %err, "cannot refresh the webhook gauges"),
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::order_to_cash::metrics::GAUGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
