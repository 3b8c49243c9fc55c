//! `/ops/v1/master-data/...`: what the customer master data
//! synchronisation would not decide alone (a new customer that may be a
//! duplicate, a field changed where it is not owned), for an operator to
//! decide; how accurate the systems are against each other (mismatches per
//! owned field at the last comparison); and a resync that rebuilds the
//! cross-reference of customer ids from both systems. Decisions and
//! resyncs name the operator to the process tier, which audits them.

use crate::body::Json;
use axum::extract::{RawQuery, State};
use erp_connect_proto::{acting, master_data::v1 as pb};
use platform::problem::FieldError;
use serde::{Deserialize, Serialize};

use super::customers::{Ordered, client, json_value};
use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{BodyRefusals, Refusals},
    orders::rfc3339_ms as rfc3339,
};

const NO_SUCH: &str = "no such master data quarantine entry";

/// The statuses an entry can be in, as `status` filters them.
pub const STATUSES: &[&str] = &["open", "merged", "kept_apart", "accepted", "reverted"];

/// Most entries one list answers; the process tier caps it the same.
pub const MAX_LIMIT: u32 = 200;

/// Longest `golden_id` or `reason` accepted in a decision.
const MAX_GOLDEN_ID_LEN: usize = 128;
const MAX_REASON_LEN: usize = super::customers::MAX_REASON_LEN;

/// A customer's id in one system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SystemRefView {
    /// `crm` or `erp`.
    pub system: String,
    /// Its id there.
    pub id: String,
}

/// Something the master data synchronisation held for an operator to decide.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MasterDataQuarantineEntry {
    /// `mdq_...`.
    pub id: String,
    /// `duplicate` (a new customer matches several golden records, or one
    /// ambiguously) or `conflict` (a field changed in a system that does not own it).
    pub kind: String,
    /// The record that arrived.
    pub subject: SystemRefView,
    /// For a duplicate: the golden records (`mdc_...`) it may be.
    pub candidates: Vec<String>,
    /// For a conflict: the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a conflict: the value the non-owning system holds (`null`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<serde_json::Value>,
    /// For a conflict: the owning system's value (`null`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub owner_value: Option<serde_json::Value>,
    /// Why it was held.
    pub reason: String,
    /// `open`, `merged`, `kept_apart`, `accepted` or `reverted`.
    pub status: String,
    /// The golden record it concerns (a conflict) or was merged into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// The operator who resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

impl From<pb::QuarantineEntry> for MasterDataQuarantineEntry {
    fn from(q: pb::QuarantineEntry) -> Self {
        let some = |s: String| Some(s).filter(|s| !s.is_empty());
        // A conflict always has its two values, `null` when a side has none;
        // a duplicate has neither.
        let conflict = !q.field.is_empty();
        let subject = q.subject.unwrap_or_default();
        Self {
            id: q.id,
            kind: q.kind,
            subject: SystemRefView { system: subject.system, id: subject.id },
            candidates: q.candidates,
            value: conflict.then(|| json_value(&q.value_json)),
            owner_value: conflict.then(|| json_value(&q.owner_value_json)),
            field: some(q.field),
            reason: q.reason,
            status: q.status,
            golden_id: some(q.golden_id),
            created_at: rfc3339(q.created_at_ms),
            resolved_at: (q.resolved_at_ms > 0).then(|| rfc3339(q.resolved_at_ms)),
            resolved_by: some(q.resolved_by),
        }
    }
}

/// Master data quarantine entries, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MasterDataQuarantineList {
    /// The entries.
    pub entries: Vec<MasterDataQuarantineEntry>,
}

/// An operator's decision on a quarantine entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A duplicate: link the subject to `golden_id`, one of the candidates.
    Merge,
    /// A duplicate: the subject becomes a golden record of its own.
    KeepApart,
    /// A conflict: the non-owner's value becomes the owner's (written to the owning system).
    Accept,
    /// A conflict: the owner's value is written back.
    Revert,
}

impl Decision {
    fn name(self) -> &'static str {
        match self {
            Decision::Merge => "merge",
            Decision::KeepApart => "keep_apart",
            Decision::Accept => "accept",
            Decision::Revert => "revert",
        }
    }
}

/// `POST /ops/v1/master-data/quarantine/{id}/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `merge` or `keep_apart` for a duplicate, `accept` or `revert` for a conflict.
    pub decision: Decision,
    /// For `merge`: the golden record (`mdc_...`, one of the candidates).
    #[schema(max_length = 128)]
    pub golden_id: Option<String>,
    /// Why, for the audit trail.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

impl ResolveBody {
    /// The call for entry `id`, once the body's parts fit together: `merge`
    /// names the golden record, no other decision does.
    fn into_request(self, id: String) -> Result<pb::ResolveQuarantinedRequest, Error> {
        let invalid = |field: &str, message: &str| {
            Error::InvalidInput(vec![FieldError { field: field.into(), message: message.into() }])
        };
        let golden_id = self.golden_id.unwrap_or_default();
        match (self.decision, golden_id.is_empty()) {
            (Decision::Merge, true) => return Err(invalid("golden_id", "is required to merge")),
            (Decision::Merge, false) if golden_id.len() > MAX_GOLDEN_ID_LEN || !golden_id.starts_with("mdc_") => {
                return Err(invalid("golden_id", "must be a golden record's id, mdc_..."));
            }
            (Decision::KeepApart | Decision::Accept | Decision::Revert, false) => {
                return Err(invalid("golden_id", "is only given to merge"));
            }
            _ => {}
        }
        let reason = self.reason.unwrap_or_default();
        if reason.chars().count() > MAX_REASON_LEN {
            return Err(invalid("reason", "must be at most 500 characters"));
        }
        Ok(pb::ResolveQuarantinedRequest { id, decision: self.decision.name().into(), golden_id, reason })
    }
}

/// The query of the master data quarantine list: `status` and `limit`;
/// anything else, a repeated parameter or a bad value is a 400 naming it.
fn list_request(raw: Option<&str>) -> Result<pb::ListQuarantineRequest, Error> {
    let mut request = pb::ListQuarantineRequest::default();
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if seen.contains(&key) {
            errors.push(FieldError { field: key.to_string(), message: "given more than once".into() });
            continue;
        }
        seen.push(key.clone());
        match key.as_ref() {
            "status" if STATUSES.contains(&value.as_ref()) => request.status = value.into_owned(),
            "status" => errors.push(FieldError {
                field: "status".into(),
                message: format!("must be one of {}", STATUSES.join(", ")),
            }),
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => request.limit = n as i32,
                _ => errors.push(FieldError {
                    field: "limit".into(),
                    message: format!("must be an integer from 1 to {MAX_LIMIT}"),
                }),
            },
            other => errors.push(FieldError { field: other.to_owned(), message: "unknown query parameter".into() }),
        }
    }
    if errors.is_empty() { Ok(request) } else { Err(Error::Invalid(errors)) }
}

/// Master data quarantine entries (possible duplicates, changes where a field is not owned), newest first.
#[utoipa::path(get, path = "/master-data/quarantine", tag = "ops", operation_id = "list_master_data_quarantine",
    params(
        ("status" = Option<String>, Query, description = "open, merged, kept_apart, accepted or reverted; \
            absent: every status", pattern = "^(open|merged|kept_apart|accepted|reverted)$"),
        ("limit" = Option<u32>, Query, description = "Default 50", minimum = 1, maximum = 200)
    ),
    responses((status = 200, description = "Done", body = MasterDataQuarantineList), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    RawQuery(query): RawQuery,
) -> Result<Json<MasterDataQuarantineList>, Error> {
    let request = list_request(query.as_deref())?;
    let found = client(&upstreams).list_quarantine(request).await.map_err(Error::from_query_status)?.into_inner();
    Ok(Json(MasterDataQuarantineList { entries: found.entries.into_iter().map(Into::into).collect() }))
}

/// One master data quarantine entry.
#[utoipa::path(get, path = "/master-data/quarantine/{id}", tag = "ops", operation_id = "get_master_data_quarantined",
    params(("id" = String, Path, description = "Entry id, mdq_...")),
    responses(
        (status = 200, description = "Done", body = MasterDataQuarantineEntry),
        (status = 404, description = "No such entry"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(entry_id = %id))]
pub async fn get(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
) -> Result<Json<MasterDataQuarantineEntry>, Error> {
    let found =
        client(&upstreams).get_quarantined(pb::GetQuarantinedRequest { id }).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(found.into_inner().entry.unwrap_or_default().into()))
}

/// Decides a master data quarantine entry: merge or keep apart a duplicate, accept or revert a conflict; audited.
#[utoipa::path(post, path = "/master-data/quarantine/{id}/resolve", tag = "ops",
    operation_id = "resolve_master_data_quarantined",
    params(("id" = String, Path, description = "Entry id, mdq_...")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Done", body = MasterDataQuarantineEntry),
        (status = 404, description = "No such entry"),
        (status = 409, description = "Resolved already, or the decision does not fit the entry's kind"),
        (status = 422, description = "merge without golden_id (or another decision with one), \
            a golden_id that is not a candidate, or a reason over 500 characters"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(entry_id = %id))]
pub async fn resolve(
    State(upstreams): State<Upstreams>,
    Caller(operator): Caller,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<ResolveBody>,
) -> Result<Json<MasterDataQuarantineEntry>, Error> {
    let request = acting::request(body.into_request(id)?, &operator.subject);
    let resolved = client(&upstreams).resolve_quarantined(request).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(resolved.into_inner().entry.unwrap_or_default().into()))
}

/// Field-level mismatches between the systems at the last comparison of owned fields.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AccuracyView {
    /// Customers whose field differs from its owner's value, by field, in field order.
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub mismatches: Ordered<i64>,
    /// When the last comparison ended, RFC 3339; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_at: Option<String>,
    /// Customers compared.
    pub customers_compared: i64,
}

impl From<pb::GetAccuracyResponse> for AccuracyView {
    fn from(a: pb::GetAccuracyResponse) -> Self {
        Self {
            mismatches: Ordered(a.fields.into_iter().map(|f| (f.field, f.mismatches)).collect()),
            compared_at: (a.compared_at_ms > 0).then(|| rfc3339(a.compared_at_ms)),
            customers_compared: a.customers_compared,
        }
    }
}

/// Mismatches per owned field between the CRM and the ERP at the last comparison.
#[utoipa::path(get, path = "/master-data/accuracy", tag = "ops", operation_id = "get_master_data_accuracy",
    responses((status = 200, description = "Done", body = AccuracyView), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all)]
pub async fn accuracy(State(upstreams): State<Upstreams>) -> Result<Json<AccuracyView>, Error> {
    let found = client(&upstreams).get_accuracy(pb::GetAccuracyRequest {}).await?.into_inner();
    Ok(Json(found.into()))
}

/// The cross-reference after a resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResyncView {
    /// Golden records.
    pub customers: i64,
    /// Links from a golden record to a system's customer.
    pub links: i64,
}

/// Rebuilds the cross-reference of customer ids from both systems (every customer read again and matched), then compares owned fields; audited.
#[utoipa::path(post, path = "/master-data/resync", tag = "ops", operation_id = "resync_master_data",
    responses(
        (status = 200, description = "Done", body = ResyncView),
        (status = 409, description = "A resync is running already"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all)]
pub async fn resync(State(upstreams): State<Upstreams>, Caller(operator): Caller) -> Result<Json<ResyncView>, Error> {
    let done = client(&upstreams).resync(acting::request(pb::ResyncRequest {}, &operator.subject)).await?.into_inner();
    Ok(Json(ResyncView { customers: done.customers, links: done.links }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::customers::fake_process_tier::{Fake, app, call};

    #[tokio::test]
    async fn a_bad_decision_is_a_400_without_calling_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let path = "/ops/v1/master-data/quarantine/mdq_1/resolve";
        let problem = call(&app, "POST", path, Some(r#"{"decision": "delete"}"#)).await.problem(400);
        assert_eq!(problem["errors"][0]["field"], "decision");
        assert_eq!(problem["errors"][0]["message"], "must be one of: merge, keep_apart, accept, revert");
        call(&app, "POST", path, Some(r#"{}"#)).await.problem(400);
        // Well-formed, but the parts do not fit together.
        let problem = call(&app, "POST", path, Some(r#"{"decision": "merge"}"#)).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "golden_id");
        call(&app, "POST", path, Some(r#"{"decision": "revert", "golden_id": "mdc_1"}"#)).await.problem(422);
        assert_eq!(fake.calls(), [], "nothing reached the process tier");
    }

    #[tokio::test]
    async fn a_decision_names_the_operator_and_a_resolved_entry_is_a_409_problem_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let body = r#"{"decision": "revert", "reason": "the CRM is right"}"#;
        let reply = call(&app, "POST", "/ops/v1/master-data/quarantine/mdq_1/resolve", Some(body)).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        let entry = reply.json();
        assert_eq!((&entry["status"], &entry["resolved_by"]), (&json!("reverted"), &json!("alice")));
        let calls = fake.calls();
        assert_eq!((calls[0].rpc, calls[0].actor.as_str()), ("ResolveQuarantined", "alice"));
        assert!(calls[0].message.contains("decision: \"revert\""), "{calls:?}");
        assert!(calls[0].message.contains("reason: \"the CRM is right\""), "{calls:?}");

        let merge = r#"{"decision": "merge", "golden_id": "mdc_3"}"#;
        let reply = call(&app, "POST", "/ops/v1/master-data/quarantine/mdq_done/resolve", Some(merge)).await;
        let problem = reply.problem(409);
        assert_eq!(problem["detail"], "the entry was resolved already");
        assert!(fake.calls()[1].message.contains("golden_id: \"mdc_3\""), "{:?}", fake.calls());
        call(&app, "POST", "/ops/v1/master-data/quarantine/mdq_9/resolve", Some(merge)).await.problem(404);
    }

    #[tokio::test]
    async fn quarantine_entries_are_listed_filtered_and_read_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let reply = call(&app, "GET", "/ops/v1/master-data/quarantine?status=open&limit=200", None).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        assert_eq!(
            reply.json(),
            json!({"entries": [
                {"id": "mdq_1", "kind": "conflict", "subject": {"system": "erp", "id": "42"}, "candidates": [],
                 "field": "email", "value": "ada@erp.example", "owner_value": null,
                 "reason": "email changed in erp, owned by crm", "status": "open", "golden_id": "mdc_1",
                 "created_at": "2025-11-29T07:06:40.000Z"},
                {"id": "mdq_2", "kind": "duplicate", "subject": {"system": "crm", "id": "8"},
                 "candidates": ["mdc_1", "mdc_3"], "reason": "same name, two golden records with it",
                 "status": "open", "created_at": "2025-11-29T07:06:40.000Z"},
            ]})
        );
        assert!(fake.calls()[0].message.contains("status: \"open\", limit: 200"), "{:?}", fake.calls());
        for bad in ["status=any", "limit=0", "limit=201", "limit=x", "page_size=5", "status=open&status=merged"] {
            let problem = call(&app, "GET", &format!("/ops/v1/master-data/quarantine?{bad}"), None).await.problem(400);
            assert!(problem["errors"][0]["field"].is_string(), "{bad}: {problem}");
        }
        assert_eq!(fake.calls().len(), 1, "bad queries are not passed on");

        let entry = call(&app, "GET", "/ops/v1/master-data/quarantine/mdq_1", None).await.json();
        assert_eq!(entry["id"], "mdq_1");
        let problem = call(&app, "GET", "/ops/v1/master-data/quarantine/mdq_9", None).await.problem(404);
        assert_eq!(problem["detail"], "no such master data quarantine entry");
    }

    #[tokio::test]
    async fn accuracy_and_resync_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let reply = call(&app, "GET", "/ops/v1/master-data/accuracy", None).await;
        assert_eq!(
            reply.json(),
            json!({
                "mismatches": {"name": 0, "email": 2, "phone": 1, "addresses": 0},
                "compared_at": "2025-11-29T07:06:40.000Z",
                "customers_compared": 12,
            })
        );
        let text = String::from_utf8_lossy(&reply.bytes);
        assert!(text.find("\"name\"") < text.find("\"email\"") && text.find("\"phone\"") < text.find("\"addresses\""));
        let reply = call(&app, "POST", "/ops/v1/master-data/resync", None).await;
        assert_eq!(reply.json(), json!({"customers": 12, "links": 23}));
        let calls = fake.calls();
        assert_eq!((calls[1].rpc, calls[1].actor.as_str()), ("Resync", "alice"));
    }
}
