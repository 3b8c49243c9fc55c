//! `GET /ops/v1/audit`: the gateway's audit trail (every change to partner
//! API keys, by the ops API or the command line), newest first, for callers
//! with the scope `ops`. Answered here because the rows live in the
//! gateway's own database, beside the keys (see [`crate::key_store`]).
//!
//! Query: `actor`, `action`, `object` (exact matches), `since` and `until`
//! (RFC 3339, or a date meaning its midnight UTC), `page_size` (1 to 100,
//! default 50) and `page_token` (the previous page's `next_page_token`),
//! as the other ops lists page. Anything else, a repeated parameter or a
//! bad value is a 400 naming every bad parameter. The rules are
//! [`audit::Filter::from_query`]'s, which the experience tier's
//! `/ops/v1/audit/process` (the process tier's trail) reads alike.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    routing::get,
};
use platform::{audit, problem::Problem};

/// The route.
pub(crate) const ROUTE: &str = "/ops/v1/audit";

pub(crate) fn routes() -> Router<std::sync::Arc<crate::Gateway>> {
    Router::new().route(ROUTE, get(list))
}

async fn list(
    State(gw): State<std::sync::Arc<crate::Gateway>>,
    RawQuery(query): RawQuery,
    headers: http::HeaderMap,
) -> Response {
    let principal = match gw.authenticate(&headers).await {
        Ok(caller) => caller.principal,
        Err(response) => return response,
    };
    if !principal.has_scope("ops") {
        return Problem::forbidden("this route needs the scope ops").into_response();
    }
    let filter = match audit::Filter::from_query(query.as_deref()) {
        Ok(filter) => filter,
        Err(errors) => return Problem::bad_request("invalid query parameters", errors).into_response(),
    };
    let Some(store) = gw.auth.api_keys() else {
        return Problem::not_found("no such route").into_response();
    };
    match store.audit_list(&filter).await {
        Ok((records, next)) => Json(serde_json::json!({
            "records": records,
            "next_page_token": next.map(|seq| seq.to_string()),
        }))
        .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "audit trail unavailable");
            Problem::unavailable("the audit trail is unavailable", 1).into_response()
        }
    }
}
