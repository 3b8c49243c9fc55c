//! `GET /ops/v1/overview` (scope `ops`): what the ops console charts,
//! answered by the gateway from its own process's metrics.
//!
//! - `tiers`: each tier's requests, errors and p50/p99 latency per 10 s
//!   step over the last 15 minutes (`platform::metrics::history`), the last
//!   point being the step in progress.
//! - everything else: the current value of the tiers' own families, read
//!   back from this process's Prometheus exposition:
//!   `erp_connect_orders{status}`, `erp_connect_outbox_depth`,
//!   `erp_connect_outbox_oldest_age_seconds`,
//!   `erp_connect_change_feed_last_lag_seconds`,
//!   `erp_connect_orders_waiting{system}`,
//!   `erp_connect_orders_waiting_oldest_age_seconds{system}`,
//!   `erp_connect_circuit_breaker_state{system, backend}`,
//!   `erp_connect_erp_info{backend, release, credit_limits}`,
//!   `erp_connect_rate_limit_rejections_total`,
//!   `erp_connect_rate_limit_redis_fallbacks_total`,
//!   `erp_connect_webhook_pending`,
//!   `erp_connect_webhook_pending_oldest_age_seconds` and
//!   `erp_connect_webhook_deliveries_total{outcome}`.
//!
//! In `up` mode the process holds every tier, so the overview covers them
//! all. In `serve` mode a gateway process sees only its own metrics: the
//! other tiers' points stay at zero and their values are `null` (or empty);
//! operators scrape each tier's `/metrics` with Prometheus there.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use platform::{
    metrics::{self, Sample, TierHistory},
    problem::Problem,
};
use serde::Serialize;

/// The route.
pub(crate) const ROUTE: &str = "/ops/v1/overview";

pub(crate) fn routes() -> Router<Arc<crate::Gateway>> {
    Router::new().route(ROUTE, get(answer))
}

/// The body; the ops console codes against exactly this shape.
#[derive(Debug, Serialize)]
struct Overview {
    step_seconds: u64,
    window_seconds: u64,
    tiers: Vec<TierHistory>,
    /// Orders per status, as the process tier last counted them (statuses
    /// with no order left out).
    orders_by_status: BTreeMap<String, u64>,
    outbox: Outbox,
    /// Orders waiting for a system that does not answer, per system (none
    /// listed without a process tier here).
    waiting: Vec<Waiting>,
    /// Data latency of the last ERP change applied: made in the ERP →
    /// its event written; `null` before the first.
    change_feed_lag_seconds: Option<f64>,
    backends: Vec<Backend>,
    /// The connected ERP, once it has said what it is; `null` before, or
    /// without a system tier in this process.
    erp: Option<ErpInfo>,
    rate_limit: RateLimit,
    webhooks: Webhooks,
    data_quality: DataQuality,
}

/// Records of partners' order files and the quarantine.
#[derive(Debug, Serialize)]
struct DataQuality {
    /// Open quarantine entries; `null` without a process tier here.
    quarantined: Option<u64>,
    /// Age of the oldest of them (0 when none).
    oldest_age_seconds: Option<f64>,
    /// Records imported since the process started (dry runs included),
    /// and of them rejected and quarantined.
    records: u64,
    rejected: u64,
    quarantined_records: u64,
    /// Quarantined records later replayed with a correction, as they were,
    /// or discarded.
    fixed: u64,
    replayed: u64,
    discarded: u64,
    /// (rejected + quarantined) / records; `null` before the first record.
    error_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Webhooks {
    /// Deliveries waiting for enabled endpoints; `null` without a process
    /// tier here.
    pending: Option<u64>,
    /// Age of the oldest of them (0 when none).
    oldest_age_seconds: Option<f64>,
    /// Attempts since the process started, by outcome.
    delivered: u64,
    retried: u64,
    /// Deliveries whose attempts ran out (dead letters).
    failed: u64,
    /// Endpoints disabled (410, or failing for days).
    disabled: u64,
}

#[derive(Debug, Serialize)]
struct ErpInfo {
    /// `embedded` or `tryton`.
    backend: String,
    /// The ERP's release.
    release: String,
    /// Whether the ERP keeps credit limits (else erp-connect applies its own).
    credit_limits: bool,
}

#[derive(Debug, Serialize)]
struct Outbox {
    /// Events not yet published; `null` without a process tier here.
    depth: Option<u64>,
    /// Age of the oldest of them (0 when none).
    oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Waiting {
    /// `erp` or `payments`.
    system: String,
    /// How many orders wait for it.
    orders: u64,
    /// How long the oldest has waited (0 when none).
    oldest_age_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Backend {
    /// The system, e.g. `erp`.
    name: String,
    /// Its backend, e.g. `embedded` or `tryton`.
    backend: String,
    /// `closed`, `open` or `half_open`.
    breaker: &'static str,
}

#[derive(Debug, Serialize)]
struct RateLimit {
    /// 429s for a plan's rate or quota since this gateway started.
    rejections: u64,
    /// Decisions made locally because the configured Redis did not answer.
    redis_fallbacks: u64,
}

async fn answer(State(gw): State<Arc<crate::Gateway>>, headers: http::HeaderMap) -> Response {
    let principal = match gw.authenticate(&headers).await {
        Ok(caller) => caller.principal,
        Err(response) => return response,
    };
    if !principal.has_scope("ops") {
        return Problem::forbidden("this route needs the scope ops").into_response();
    }
    Json(overview(&metrics::parse(&metrics::render()), metrics::history())).into_response()
}

fn overview(samples: &[Sample], tiers: Vec<TierHistory>) -> Overview {
    let named = |name: &'static str| samples.iter().filter(move |s| s.name == name);
    let first = |name: &'static str| named(name).next().map(|s| s.value);
    let sum = |name: &'static str| named(name).map(|s| s.value).sum::<f64>() as u64;
    Overview {
        step_seconds: metrics::STEP_SECONDS,
        window_seconds: metrics::STEP_SECONDS * metrics::HISTORY_STEPS as u64,
        tiers,
        orders_by_status: named("erp_connect_orders")
            .filter(|s| s.value > 0.0)
            .filter_map(|s| Some((s.label("status")?.to_owned(), s.value as u64)))
            .collect(),
        outbox: Outbox {
            depth: first("erp_connect_outbox_depth").map(|v| v as u64),
            oldest_age_seconds: first("erp_connect_outbox_oldest_age_seconds"),
        },
        waiting: named("erp_connect_orders_waiting")
            .filter_map(|s| {
                let system = s.label("system")?;
                let oldest = named("erp_connect_orders_waiting_oldest_age_seconds")
                    .find(|a| a.label("system") == Some(system))
                    .map_or(0.0, |a| a.value);
                Some(Waiting { system: system.to_owned(), orders: s.value as u64, oldest_age_seconds: oldest })
            })
            .collect(),
        change_feed_lag_seconds: first("erp_connect_change_feed_last_lag_seconds"),
        backends: named("erp_connect_circuit_breaker_state")
            .map(|s| Backend {
                name: s.label("system").unwrap_or_default().to_owned(),
                backend: s.label("backend").unwrap_or_default().to_owned(),
                breaker: match s.value as u8 {
                    0 => "closed",
                    1 => "open",
                    _ => "half_open",
                },
            })
            .collect(),
        erp: named("erp_connect_erp_info").find(|s| s.value > 0.0).map(|s| ErpInfo {
            backend: s.label("backend").unwrap_or_default().to_owned(),
            release: s.label("release").unwrap_or_default().to_owned(),
            credit_limits: s.label("credit_limits") == Some("true"),
        }),
        rate_limit: RateLimit {
            rejections: sum("erp_connect_rate_limit_rejections_total"),
            redis_fallbacks: sum("erp_connect_rate_limit_redis_fallbacks_total"),
        },
        data_quality: {
            let outcome = |outcome: &str| {
                named("erp_connect_records_total")
                    .filter(|s| s.label("outcome") == Some(outcome))
                    .map(|s| s.value)
                    .sum::<f64>() as u64
            };
            let (rejected, quarantined) = (outcome("rejected"), outcome("quarantined"));
            let records = outcome("accepted") + outcome("valid") + rejected + quarantined;
            let open = named("erp_connect_quarantine_records").map(|s| s.value).reduce(|a, b| a + b);
            DataQuality {
                quarantined: open.map(|v| v as u64),
                oldest_age_seconds: named("erp_connect_quarantine_oldest_age_seconds")
                    .map(|s| s.value)
                    .reduce(f64::max),
                records,
                rejected,
                quarantined_records: quarantined,
                fixed: outcome("fixed"),
                replayed: outcome("replayed"),
                discarded: outcome("discarded"),
                error_rate: (records > 0).then(|| (rejected + quarantined) as f64 / records as f64),
            }
        },
        webhooks: {
            let outcome = |outcome: &str| {
                named("erp_connect_webhook_deliveries_total")
                    .filter(|s| s.label("outcome") == Some(outcome))
                    .map(|s| s.value)
                    .sum::<f64>() as u64
            };
            Webhooks {
                pending: first("erp_connect_webhook_pending").map(|v| v as u64),
                oldest_age_seconds: first("erp_connect_webhook_pending_oldest_age_seconds"),
                delivered: outcome("delivered"),
                retried: outcome("retry"),
                failed: outcome("failed"),
                disabled: outcome("disabled"),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overview_reads_the_families_it_charts() {
        let text = "\
erp_connect_orders{status=\"paid\"} 2
erp_connect_orders{status=\"rejected\"} 0
erp_connect_outbox_depth 3
erp_connect_outbox_oldest_age_seconds 1.5
erp_connect_orders_waiting{system=\"erp\"} 7
erp_connect_orders_waiting{system=\"payments\"} 0
erp_connect_orders_waiting_oldest_age_seconds{system=\"erp\"} 42.5
erp_connect_orders_waiting_oldest_age_seconds{system=\"payments\"} 0
erp_connect_circuit_breaker_state{system=\"erp\",backend=\"tryton\"} 1
erp_connect_erp_info{backend=\"tryton\",release=\"8.0.12\",credit_limits=\"false\"} 1
erp_connect_rate_limit_rejections_total{plan=\"bronze\",kind=\"rate\"} 4
erp_connect_rate_limit_rejections_total{plan=\"gold\",kind=\"quota\"} 1
erp_connect_webhook_pending 4
erp_connect_webhook_pending_oldest_age_seconds 310.5
erp_connect_webhook_deliveries_total{outcome=\"delivered\"} 120
erp_connect_webhook_deliveries_total{outcome=\"retry\"} 9
erp_connect_webhook_deliveries_total{outcome=\"failed\"} 1
erp_connect_records_total{partner=\"acme\",source=\"batch\",outcome=\"accepted\"} 6
erp_connect_records_total{partner=\"acme\",source=\"batch\",outcome=\"quarantined\"} 3
erp_connect_records_total{partner=\"globex\",source=\"batch\",outcome=\"rejected\"} 1
erp_connect_records_total{partner=\"acme\",source=\"batch\",outcome=\"fixed\"} 1
erp_connect_quarantine_records{source=\"batch\"} 2
erp_connect_quarantine_oldest_age_seconds{source=\"batch\"} 60
";
        let body = serde_json::to_value(overview(&metrics::parse(text), Vec::new())).expect("json");
        assert_eq!(body["window_seconds"], 900);
        assert_eq!(body["orders_by_status"], serde_json::json!({"paid": 2}));
        assert_eq!(body["outbox"], serde_json::json!({"depth": 3, "oldest_age_seconds": 1.5}));
        assert_eq!(
            body["waiting"],
            serde_json::json!([
                {"system": "erp", "orders": 7, "oldest_age_seconds": 42.5},
                {"system": "payments", "orders": 0, "oldest_age_seconds": 0.0}
            ])
        );
        assert_eq!(body["change_feed_lag_seconds"], serde_json::Value::Null);
        assert_eq!(body["backends"], serde_json::json!([{"name": "erp", "backend": "tryton", "breaker": "open"}]));
        assert_eq!(body["rate_limit"], serde_json::json!({"rejections": 5, "redis_fallbacks": 0}));
        assert_eq!(body["erp"], serde_json::json!({"backend": "tryton", "release": "8.0.12", "credit_limits": false}));
        assert_eq!(
            body["webhooks"],
            serde_json::json!({"pending": 4, "oldest_age_seconds": 310.5, "delivered": 120, "retried": 9,
                               "failed": 1, "disabled": 0})
        );
        assert_eq!(
            body["data_quality"],
            serde_json::json!({"quarantined": 2, "oldest_age_seconds": 60.0, "records": 10, "rejected": 1,
                               "quarantined_records": 3, "fixed": 1, "replayed": 0, "discarded": 0, "error_rate": 0.4})
        );
    }
}
