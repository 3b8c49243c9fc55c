//! `GET /partner/v1/usage`: a partner's own plan, limits and what is left
//! of them, answered by the gateway (which keeps the counters).

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    Caller,
    limits::{Limits, RateDecision},
};

/// The body of `/partner/v1/usage`. A limit the plan does not have, and
/// every field for a caller without an API key (who is not metered), is
/// `null`.
#[derive(Debug, Serialize)]
struct Usage {
    /// The key's plan.
    plan: Option<String>,
    /// Sustained requests per second.
    requests_per_second: Option<u32>,
    /// Requests the key may send at once.
    burst: Option<u32>,
    /// Requests the key may send right now (this one counted).
    requests_remaining: Option<u32>,
    /// Seconds until a whole burst is available again.
    requests_reset_seconds: Option<u32>,
    /// Orders the plan allows per UTC day.
    orders_per_day: Option<u64>,
    /// Orders placed today (UTC).
    orders_today: Option<u64>,
}

/// The caller's usage; `rate` is the decision on this very request.
pub(crate) async fn answer(limits: &Limits, caller: &Caller, rate: Option<RateDecision>) -> Response {
    let key = &caller.principal.subject;
    let plan = caller.plan.as_deref().and_then(|name| limits.plan(name));
    let orders_per_day = plan.and_then(|p| p.orders_per_day);
    let orders_today = match orders_per_day {
        Some(_) => Some(limits.orders_today(key).await),
        None => None,
    };
    Json(Usage {
        plan: caller.plan.clone(),
        requests_per_second: plan.and_then(|p| p.requests_per_second).map(|r| r.get()),
        burst: rate.map(|r| r.limit),
        requests_remaining: rate.map(|r| r.remaining),
        requests_reset_seconds: rate.map(|r| crate::whole_seconds(r.reset)),
        orders_per_day,
        orders_today,
    })
    .into_response()
}
