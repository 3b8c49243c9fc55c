//! Data-quality metrics (Prometheus text at `/metrics`):
//!
//! - `erp_connect_records_total{partner, source, outcome}`: records
//!   processed, by outcome: `accepted`, `valid` (dry run), `rejected`,
//!   `quarantined`, and for quarantined ones later `replayed`, `discarded`.
//! - `erp_connect_quarantine_records{source}` and
//!   `erp_connect_quarantine_oldest_age_seconds{source}`: open quarantine
//!   entries per source (`batch`) and the oldest's age, refreshed every few
//!   seconds from the store (replicas share it: aggregate with `max`).

use platform::metrics::facade::{Unit, counter, describe_counter, describe_gauge, gauge};
use tokio_util::sync::CancellationToken;

use super::store::Store;
use crate::order_to_cash::clock;

/// Sources whose gauges drop to 0 when their last entry is resolved.
const SOURCES: [&str; 1] = ["batch"];

/// Installs the recorder (if no tier has yet) and the HELP texts.
pub fn describe() {
    platform::metrics::install();
    describe_counter!(
        "erp_connect_records_total",
        "Records processed per partner and source (batch), by outcome: accepted, valid, rejected, quarantined, replayed, discarded."
    );
    describe_gauge!("erp_connect_quarantine_records", "Open quarantine entries per source.");
    describe_gauge!(
        "erp_connect_quarantine_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest open quarantine entry per source (0 when none)."
    );
}

/// `n` records of `partner` from `source` ended as `outcome`.
pub fn records(partner: &str, source: &'static str, outcome: &'static str, n: usize) {
    counter!("erp_connect_records_total", "partner" => partner.to_owned(), "source" => source, "outcome" => outcome)
        .increment(n as u64);
}

/// Refreshes the quarantine gauges until `shutdown`.
pub async fn run_gauges(store: Store, shutdown: CancellationToken) {
    loop {
        match store.open_quarantine().await {
            Ok(open) => {
                for source in SOURCES {
                    let (n, oldest) =
                        open.iter().find(|(s, ..)| s == source).map_or((0, None), |(_, n, t)| (*n, Some(*t)));
                    gauge!("erp_connect_quarantine_records", "source" => source).set(n as f64);
                    let age = oldest.map_or(0, |t| (clock::now_ms() - t).max(0));
                    gauge!("erp_connect_quarantine_oldest_age_seconds", "source" => source).set(age as f64 / 1000.0);
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot refresh the quarantine gauges"),
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::order_to_cash::metrics::GAUGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
