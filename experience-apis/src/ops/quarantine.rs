//! `/ops/v1/quarantine`: what failed on an asynchronous path (a row of an
//! order file), kept with its original records and every reason. Operators
//! find entries (by partner, source, reason, status), replay one as it was
//! or corrected, or discard it with a reason; both are audited.

use crate::body::Json;
use crate::orders::rfc3339_ms as rfc3339;
use axum::extract::{RawQuery, State};
use erp_connect_proto::order_batches::v1 as pb;
use serde::{Deserialize, Serialize};

use super::ANY_TENANT;
use crate::{
    Upstreams,
    body::{JsonBody, OptionalJsonBody},
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{BodyRefusals, Refusals},
    page::PageQuery,
    partner::order_batches::{RowErrorView, client},
};

/// A quarantine entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuarantinedView {
    /// `qua_...`.
    pub id: String,
    /// The partner tenant.
    pub partner: String,
    /// Where it came from, e.g. `batch:bat_...`.
    pub source: String,
    /// `mapping`, `validation` or `order`.
    pub stage: String,
    /// The order's reference.
    pub external_ref: String,
    /// The original records, in the partner's field names.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
    /// Every reason.
    pub reasons: Vec<RowErrorView>,
    /// `open`, `replayed` or `discarded`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The operator who resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// Why it was discarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// The order its replay created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl From<pb::Quarantined> for QuarantinedView {
    fn from(q: pb::Quarantined) -> Self {
        let some = |s: String| Some(s).filter(|s| !s.is_empty());
        Self {
            id: q.id,
            partner: q.tenant,
            source: q.source,
            stage: q.stage,
            external_ref: q.external_ref,
            records: q.records.iter().map(|r| serde_json::from_str(r).unwrap_or(serde_json::Value::Null)).collect(),
            reasons: q.reasons.into_iter().map(Into::into).collect(),
            status: q.status,
            created_at: rfc3339(q.created_at_ms),
            resolved_at: (q.resolved_at_ms > 0).then(|| rfc3339(q.resolved_at_ms)),
            resolved_by: some(q.resolved_by),
            resolution: some(q.resolution),
            order_id: some(q.order_id),
        }
    }
}

/// One page of the quarantine, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuarantinePage {
    /// The entries.
    pub entries: Vec<QuarantinedView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `POST /ops/v1/quarantine/{id}/replay`, optional: the corrected order,
/// in the original's field names.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The corrected record of a one-row order.
    #[schema(value_type = Option<Object>)]
    pub record: Option<serde_json::Map<String, serde_json::Value>>,
    /// The corrected records of the order, one per row.
    #[schema(value_type = Option<Vec<Object>>)]
    pub records: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

/// `POST /ops/v1/quarantine/{id}/discard`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    /// Why, for the audit log.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// Quarantined orders of every partner, newest first: the original records and every reason.
#[utoipa::path(get, path = "/quarantine", tag = "ops", operation_id = "list_quarantine",
    params(
        ("partner" = Option<String>, Query, max_length = 200),
        ("source" = Option<String>, Query, description = "e.g. batch:bat_...", max_length = 200),
        ("reason" = Option<String>, Query, description = "A rule or field among the reasons", max_length = 200),
        ("status" = Option<String>, Query, description = "open (default), replayed, discarded or any",
            pattern = "^(open|replayed|discarded|any)$"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, max_length = 200)
    ),
    responses((status = 200, description = "Done", body = QuarantinePage), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    RawQuery(query): RawQuery,
) -> Result<Json<QuarantinePage>, Error> {
    let mut filters = pb::ListQuarantineRequest::default();
    let page = PageQuery::parse_with(query.as_deref(), |key, value| {
        let slot = match key {
            "partner" => &mut filters.tenant,
            "source" => &mut filters.source,
            "reason" => &mut filters.reason,
            "status" => &mut filters.status,
            _ => return None,
        };
        *slot = value.to_owned();
        Some(if value.len() > 200 { Err("is too long".to_owned()) } else { Ok(()) })
    })?;
    if !["", "open", "replayed", "discarded", "any"].contains(&filters.status.as_str()) {
        return Err(Error::Invalid(vec![platform::problem::FieldError {
            field: "status".into(),
            message: "must be open, replayed, discarded or any".into(),
        }]));
    }
    filters.page_size = page.page_size();
    filters.page_token = page.page_token.unwrap_or_default();
    let found = client(&upstreams).list_quarantine(filters).await.map_err(Error::from_query_status)?.into_inner();
    Ok(Json(QuarantinePage {
        entries: found.entries.into_iter().map(Into::into).collect(),
        next_page_token: Some(found.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One quarantine entry.
#[utoipa::path(get, path = "/quarantine/{id}", tag = "ops", operation_id = "get_quarantined",
    params(("id" = String, Path, description = "Entry id, qua_...")),
    responses(
        (status = 200, description = "Done", body = QuarantinedView),
        (status = 404, description = "No such entry"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn get(State(upstreams): State<Upstreams>, ObjectId(id): ObjectId) -> Result<Json<QuarantinedView>, Error> {
    let found = client(&upstreams)
        .get_quarantined(pb::GetQuarantinedRequest { tenant: ANY_TENANT.into(), id })
        .await
        .map_err(Error::lookup("no such quarantine entry"))?;
    Ok(Json(found.into_inner().into()))
}

/// Imports a quarantined order again, as it was or corrected (in the original's field names); audited.
#[utoipa::path(post, path = "/quarantine/{id}/replay", tag = "ops", operation_id = "replay_quarantined",
    params(("id" = String, Path, description = "Entry id, qua_...")),
    request_body = Option<ReplayBody>,
    responses(
        (status = 200, description = "Done", body = QuarantinedView),
        (status = 404, description = "No such entry"),
        (status = 409, description = "Replayed or discarded already"),
        (status = 422, description = "Still refused: the reasons, the entry stays open"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn replay(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    ObjectId(id): ObjectId,
    OptionalJsonBody(body): OptionalJsonBody<ReplayBody>,
) -> Result<Json<QuarantinedView>, Error> {
    let records = match body {
        None | Some(ReplayBody { record: None, records: None }) => Vec::new(),
        Some(ReplayBody { record: Some(record), records: None }) => vec![serde_json::Value::Object(record).to_string()],
        Some(ReplayBody { record: None, records: Some(records) }) if !records.is_empty() => {
            records.into_iter().map(|r| serde_json::Value::Object(r).to_string()).collect()
        }
        Some(_) => {
            return Err(Error::InvalidInput(vec![platform::problem::FieldError {
                field: "record".into(),
                message: "give record or a non-empty records, not both".into(),
            }]));
        }
    };
    let replayed = client(&upstreams)
        .replay_quarantined(pb::ReplayQuarantinedRequest {
            tenant: ANY_TENANT.into(),
            id,
            records,
            operator: principal.subject.clone(),
        })
        .await
        .map_err(Error::lookup("no such quarantine entry"))?;
    Ok(Json(replayed.into_inner().into()))
}

/// Discards a quarantined order, with the reason; audited.
#[utoipa::path(post, path = "/quarantine/{id}/discard", tag = "ops", operation_id = "discard_quarantined",
    params(("id" = String, Path, description = "Entry id, qua_...")),
    request_body = DiscardBody,
    responses(
        (status = 200, description = "Done", body = QuarantinedView),
        (status = 404, description = "No such entry"),
        (status = 409, description = "Replayed or discarded already"),
        (status = 422, description = "No reason"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn discard(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<DiscardBody>,
) -> Result<Json<QuarantinedView>, Error> {
    let discarded = client(&upstreams)
        .discard_quarantined(pb::DiscardQuarantinedRequest {
            tenant: ANY_TENANT.into(),
            id,
            reason: body.reason,
            operator: principal.subject.clone(),
        })
        .await
        .map_err(Error::lookup("no such quarantine entry"))?;
    Ok(Json(discarded.into_inner().into()))
}
