//! Master data metrics (Prometheus text at `/metrics`):
//!
//! - `erp_connect_master_data_mismatches{field}`: linked customers whose
//!   value of `field` differed from the owner's at the last comparison.
//! - `erp_connect_master_data_compared_timestamp_seconds`: when the last
//!   comparison ended (unix seconds; 0 before the first).
//! - `erp_connect_master_data_conflicts_total{field,policy}`: changes made
//!   where a field is not owned, by the policy that handled them.
//! - `erp_connect_master_data_quarantined_total{kind}`: entries held for an
//!   operator, `duplicate` or `conflict`.

use platform::metrics::facade::{counter, describe_counter, describe_gauge, gauge};

use super::{OnConflict, fields::Field, store::Accuracy};

/// Installs the recorder (if no tier has yet) and the HELP texts; every
/// series starts at 0, so the first conflict after a start is an increase.
pub fn describe() {
    platform::metrics::install();
    describe_gauge!(
        "erp_connect_master_data_mismatches",
        "Linked customers whose value of a field differed from the owning system's at the last comparison."
    );
    describe_gauge!(
        "erp_connect_master_data_compared_timestamp_seconds",
        "When the last comparison of owned customer fields ended (unix seconds; 0 before the first)."
    );
    describe_counter!(
        "erp_connect_master_data_conflicts_total",
        "Customer fields changed in a system that does not own them, by the policy applied."
    );
    describe_counter!(
        "erp_connect_master_data_quarantined_total",
        "Master data entries held for an operator: duplicate or conflict."
    );
    for field in Field::ALL {
        for policy in [OnConflict::OwnerWins, OnConflict::Quarantine] {
            counter!("erp_connect_master_data_conflicts_total", "field" => field.as_str(), "policy" => policy.as_str())
                .increment(0);
        }
    }
    for kind in ["duplicate", "conflict"] {
        counter!("erp_connect_master_data_quarantined_total", "kind" => kind).increment(0);
    }
}

/// A conflict on `field` handled by `policy`.
pub fn conflict(field: Field, policy: OnConflict) {
    counter!("erp_connect_master_data_conflicts_total", "field" => field.as_str(), "policy" => policy.as_str())
        .increment(1);
}

/// An entry of `kind` held.
pub fn quarantined(kind: &'static str) {
    counter!("erp_connect_master_data_quarantined_total", "kind" => kind).increment(1);
}

/// A comparison's results, at `now` (unix ms).
pub fn compared(results: &[Accuracy], now: i64) {
    for r in results {
        gauge!("erp_connect_master_data_mismatches", "field" => r.field.clone()).set(r.mismatches as f64);
    }
    gauge!("erp_connect_master_data_compared_timestamp_seconds").set(now as f64 / 1000.0);
}
