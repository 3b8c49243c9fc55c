//! `GET /ops/v1/audit`: the gateway's audit trail (every change to partner
//! API keys, by the ops API or the command line), newest first, for callers
//! with the scope `ops`. Answered here because the rows live in the
//! gateway's own database, beside the keys (see [`crate::key_store`]).
//!
//! Query: `actor`, `action`, `object` (exact matches), `since` and `until`
//! (RFC 3339, or a date meaning its midnight UTC), `page_size` (1 to 100,
//! default 50) and `page_token` (the previous page's `next_page_token`),
//! as the other ops lists page. Anything else, a repeated parameter or a
//! bad value is a 400 naming every bad parameter.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
    routing::get,
};
use platform::{
    audit,
    problem::{FieldError, Problem},
};

/// The route.
pub(crate) const ROUTE: &str = "/ops/v1/audit";

/// Largest `page_size`, as the other ops lists.
const MAX_PAGE_SIZE: u32 = 100;
/// `page_size` when none is asked for.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Longest value of a text filter: ids and subjects are far shorter.
const MAX_TEXT: usize = 256;

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
    let filter = match parse(query.as_deref()) {
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

/// The filter a query asks for, or every bad parameter.
fn parse(raw: Option<&str>) -> Result<audit::Filter, Vec<FieldError>> {
    let mut filter = audit::Filter { limit: DEFAULT_PAGE_SIZE, ..audit::Filter::default() };
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError { field: field.to_owned(), message: message.to_owned() });
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if seen.contains(&key) {
            bad(&key, "given more than once");
            continue;
        }
        seen.push(key.clone());
        let text = || (!value.is_empty() && value.len() <= MAX_TEXT).then(|| value.to_string());
        match key.as_ref() {
            "actor" | "action" | "object" => match text() {
                Some(text) => {
                    *match key.as_ref() {
                        "actor" => &mut filter.actor,
                        "action" => &mut filter.action,
                        _ => &mut filter.object,
                    } = Some(text)
                }
                None => bad(&key, &format!("must be 1 to {MAX_TEXT} characters")),
            },
            "since" | "until" => match time_ms(&value) {
                Some(at) if key == "since" => filter.since = Some(at),
                Some(at) => filter.until = Some(at),
                None => bad(&key, "must be an RFC 3339 time (2026-12-01T08:00:00Z) or a date (2026-12-01)"),
            },
            "page_size" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => filter.limit = n,
                _ => bad("page_size", &format!("must be an integer from 1 to {MAX_PAGE_SIZE}")),
            },
            "page_token" => match value.parse::<i64>() {
                Ok(seq) if seq > 0 => filter.before_seq = Some(seq),
                _ => bad("page_token", "not a token this list gave"),
            },
            other => bad(other, "unknown query parameter"),
        }
    }
    if errors.is_empty() { Ok(filter) } else { Err(errors) }
}

/// `2026-12-01` (midnight UTC) or an RFC 3339 time, as unix ms.
fn time_ms(text: &str) -> Option<i64> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    let at = humantime::parse_rfc3339_weak(&full).ok()?;
    i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_pages_are_read_and_bad_ones_named() {
        let filter = parse(Some("actor=alice&since=1970-01-02&until=1970-01-01T00:00:01Z&page_size=5&page_token=9"))
            .expect("good query");
        assert_eq!(filter.actor.as_deref(), Some("alice"));
        assert_eq!((filter.since, filter.until), (Some(86_400_000), Some(1_000)));
        assert_eq!((filter.limit, filter.before_seq), (5, Some(9)));
        assert_eq!(parse(None).expect("empty").limit, DEFAULT_PAGE_SIZE);
        let errors = parse(Some("since=garbage&page_size=0&color=red&actor=a&actor=b")).expect_err("bad query");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["since", "page_size", "color", "actor"]);
    }
}
