//! Data-quality metrics (Prometheus text at `/metrics`):
//!
//! - `erp_connect_records_total{partner, source, outcome}`: records
//!   processed, by outcome: `accepted`, `valid` (dry run), `rejected`,
//!   `quarantined`, and for quarantined ones later `fixed` (replayed with an
//!   operator's correction), `replayed` (as they were), `discarded`.
//! - `erp_connect_records_error_ratio{partner, source}`: of the records this
//!   process imported, the share rejected or quarantined (0 to 1), for a
//!   glance; over time, Prometheus computes it from the counter.
//! - `erp_connect_quarantine_records{source}` and
//!   `erp_connect_quarantine_oldest_age_seconds{source}`: open quarantine
//!   entries per source (`batch`) and the oldest's age, refreshed every few
//!   seconds from the store (replicas share it: aggregate with `max`).

use std::{collections::HashMap, sync::Mutex};

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
        "Records processed per partner and source (batch), by outcome: accepted, valid, rejected, quarantined, fixed, replayed, discarded."
    );
    describe_gauge!(
        "erp_connect_records_error_ratio",
        "Share of the records imported by this process that were rejected or quarantined, per partner and source."
    );
    describe_gauge!("erp_connect_quarantine_records", "Open quarantine entries per source.");
    describe_gauge!(
        "erp_connect_quarantine_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest open quarantine entry per source (0 when none)."
    );
}

/// (partner, source) → records imported and of them failed, for the ratio.
type Imported = HashMap<(String, &'static str), (u64, u64)>;
static IMPORTED: Mutex<Option<Imported>> = Mutex::new(None);

/// `n` records of `partner` from `source` ended as `outcome`.
pub fn records(partner: &str, source: &'static str, outcome: &'static str, n: usize) {
    counter!("erp_connect_records_total", "partner" => partner.to_owned(), "source" => source, "outcome" => outcome)
        .increment(n as u64);
    let failed = match outcome {
        "rejected" | "quarantined" => n as u64,
        "accepted" | "valid" => 0,
        _ => return, // what becomes of quarantined records later is not an import
    };
    let mut imported = IMPORTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (total, bad) = imported.get_or_insert_default().entry((partner.to_owned(), source)).or_default();
    *total += n as u64;
    *bad += failed;
    if *total > 0 {
        gauge!("erp_connect_records_error_ratio", "partner" => partner.to_owned(), "source" => source)
            .set(*bad as f64 / *total as f64);
    }
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
