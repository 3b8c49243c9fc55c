//! `GET /ops/v1/audit/process`: the process tier's audit trail (webhook
//! endpoints, order-file quarantine decisions, customer master data:
//! erasures, resolved conflicts and duplicates), newest first. The
//! gateway's own trail (API keys) is `GET /ops/v1/audit`, answered by the
//! gateway beside its keys; this route takes the same query, read by the
//! same rules ([`platform::audit::Filter::from_query`]), and answers the
//! same JSON, so a client reads both trails alike.
//!
//! The page token is the one the process tier gave (the last row's `seq`),
//! handed back to it as it came.

use crate::body::Json;
use axum::extract::{RawQuery, State};
use erp_connect_proto::audit::v1::{self as pb, audit_service_client::AuditServiceClient};
use platform::{audit, channel::GrpcChannel};
use serde::Serialize;

use crate::{Upstreams, error::Error, openapi::Refusals};

/// The process tier's audit service.
pub fn client(upstreams: &Upstreams) -> AuditServiceClient<GrpcChannel> {
    AuditServiceClient::new(upstreams.process.clone())
}

/// A row of an audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who acted: an operator's or a partner's subject, or `cli` for the command line.
    pub actor: String,
    /// What was done, `<object kind>.<verb>`: `keys.create`, `keys.revoke`, `keys.rotate` (the gateway's trail);
    /// `webhooks.create`, `master_data.erase`, `master_data.quarantine_resolved`, ... (the process tier's).
    pub action: String,
    /// To what: an id (a key, a webhook endpoint, a quarantine entry, a customer).
    pub object: String,
    /// What else the action recorded (never a key or a secret).
    #[schema(value_type = serde_json::Value)]
    pub detail: serde_json::Value,
    /// SHA-256 (hex) of this row and the previous row's hash.
    pub hash: String,
}

impl From<pb::AuditEntry> for AuditRecord {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: e.at_ms,
            actor: e.actor,
            action: e.action,
            object: e.object,
            // Written as JSON by the process tier; a row altered into
            // something else is still shown, as the text it holds, as the
            // gateway shows its own.
            detail: serde_json::from_str(&e.detail_json).unwrap_or(serde_json::Value::String(e.detail_json)),
            hash: e.hash,
        }
    }
}

/// One page of an audit trail (`GET /ops/v1/audit`, `GET /ops/v1/audit/process`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `page_token` for the next page; `null` on the last page.
    pub next_page_token: Option<String>,
}

/// The process tier's audit trail (webhook endpoints, order-file quarantine decisions, customer master data), newest first; `erp-connect audit verify` checks that no row was altered or removed.
#[utoipa::path(get, path = "/audit/process", tag = "ops", operation_id = "list_process_audit",
    params(
        ("actor" = Option<String>, Query, description = "Only this actor", min_length = 1, max_length = 256),
        ("action" = Option<String>, Query, description = "Only this action, e.g. webhooks.create", min_length = 1,
            max_length = 256),
        ("object" = Option<String>, Query, description = "Only this object, e.g. a webhook endpoint's id",
            min_length = 1, max_length = 256),
        ("since" = Option<String>, Query, description = "At or after: RFC 3339, or a date (midnight UTC)"),
        ("until" = Option<String>, Query, description = "Before: RFC 3339, or a date (midnight UTC)"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 50"),
        ("page_token" = Option<String>, Query, description = "The previous page's next_page_token")
    ),
    responses((status = 200, description = "Done", body = AuditList), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn list(State(upstreams): State<Upstreams>, RawQuery(query): RawQuery) -> Result<Json<AuditList>, Error> {
    let filter = audit::Filter::from_query(query.as_deref()).map_err(Error::Invalid)?;
    let request = pb::ListAuditEntriesRequest {
        actor: filter.actor.unwrap_or_default(),
        action: filter.action.unwrap_or_default(),
        object: filter.object.unwrap_or_default(),
        since_ms: filter.since,
        until_ms: filter.until,
        page_size: i32::try_from(filter.limit).unwrap_or(i32::MAX),
        page_token: filter.before_seq.map(|seq| seq.to_string()).unwrap_or_default(),
    };
    let page = client(&upstreams).list_audit_entries(request).await.map_err(Error::from_query_status)?.into_inner();
    Ok(Json(AuditList {
        records: page.entries.into_iter().map(Into::into).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use erp_connect_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
    use serde_json::json;
    use tonic::{Request, Response, Status};
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;
    use crate::ops::customers::fake_process_tier::call;

    /// An in-process fake of the process tier's `AuditService`: two canned
    /// rows, the next page's token `"5"` when asked for a page of two, and
    /// every request it got kept.
    #[derive(Clone, Default)]
    struct FakeAuditService {
        requests: Arc<Mutex<Vec<pb::ListAuditEntriesRequest>>>,
    }

    impl FakeAuditService {
        fn requests(&self) -> Vec<pb::ListAuditEntriesRequest> {
            self.requests.lock().expect("lock").clone()
        }

        fn app(&self) -> axum::Router {
            let routes = tonic::service::Routes::new(AuditServiceServer::new(self.clone()));
            crate::router(Upstreams::new(platform::channel::in_process(routes)))
        }
    }

    #[tonic::async_trait]
    impl AuditService for FakeAuditService {
        async fn list_audit_entries(
            &self,
            request: Request<pb::ListAuditEntriesRequest>,
        ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
            let request = request.into_inner();
            self.requests.lock().expect("lock").push(request.clone());
            if request.page_token == "999" {
                let details = ErrorDetails::with_bad_request_violation("page_token", "not a token this list gave");
                return Err(Status::with_error_details(tonic::Code::InvalidArgument, "page_token", details));
            }
            let entry = |seq: i64, actor: &str, action: &str, detail_json: &str| pb::AuditEntry {
                seq,
                at_ms: 1_764_400_000_000 + seq,
                actor: actor.into(),
                action: action.into(),
                object: "whe_1".into(),
                detail_json: detail_json.into(),
                hash: format!("{seq:064}"),
            };
            Ok(Response::new(pb::ListAuditEntriesResponse {
                entries: vec![
                    entry(7, "alice", "webhooks.update", r#"{"tenant":"acme","enabled":false}"#),
                    entry(6, "acme-erp", "webhooks.create", "not json"),
                ],
                next_page_token: if request.page_size == 2 { "5".into() } else { String::new() },
            }))
        }
    }

    #[tokio::test]
    async fn the_process_trail_is_answered_in_the_gateways_shape_against_a_fake_audit_service() {
        let fake = FakeAuditService::default();
        let reply =
            call(&fake.app(), "GET", "/ops/v1/audit/process?action=webhooks.update&since=2025-11-29", None).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        assert_eq!(
            reply.json(),
            json!({
                "records": [
                    {"seq": 7, "at": 1_764_400_000_007_i64, "actor": "alice", "action": "webhooks.update",
                     "object": "whe_1", "detail": {"tenant": "acme", "enabled": false}, "hash": format!("{:064}", 7)},
                    {"seq": 6, "at": 1_764_400_000_006_i64, "actor": "acme-erp", "action": "webhooks.create",
                     "object": "whe_1", "detail": "not json", "hash": format!("{:064}", 6)},
                ],
                "next_page_token": null,
            })
        );
        let asked = &fake.requests()[0];
        assert_eq!((asked.action.as_str(), asked.actor.as_str()), ("webhooks.update", ""));
        assert_eq!((asked.since_ms, asked.until_ms, asked.page_size), (Some(1_764_374_400_000), None, 50));
    }

    #[tokio::test]
    async fn a_bad_query_is_a_400_problem_naming_each_parameter_without_a_call_against_a_fake_audit_service() {
        let fake = FakeAuditService::default();
        let app = fake.app();
        let problem = call(&app, "GET", "/ops/v1/audit/process?since=yesterday", None).await.problem(400);
        assert_eq!(problem["errors"][0]["field"], "since");
        let problem =
            call(&app, "GET", "/ops/v1/audit/process?page_size=0&color=red&actor=a&actor=b", None).await.problem(400);
        let fields: Vec<_> = problem["errors"].as_array().expect("errors").iter().map(|e| e["field"].clone()).collect();
        assert_eq!(fields, ["page_size", "color", "actor"]);
        assert!(fake.requests().is_empty(), "nothing reached the process tier");
        // A token the process tier refuses is the caller's mistake too.
        let problem = call(&app, "GET", "/ops/v1/audit/process?page_token=999", None).await.problem(400);
        assert_eq!(problem["errors"][0]["field"], "page_token");
    }

    #[tokio::test]
    async fn page_tokens_pass_through_both_ways_against_a_fake_audit_service() {
        let fake = FakeAuditService::default();
        let app = fake.app();
        let first = call(&app, "GET", "/ops/v1/audit/process?page_size=2", None).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.json()["next_page_token"], "5");
        let next = call(&app, "GET", "/ops/v1/audit/process?page_size=2&page_token=5", None).await;
        assert_eq!(next.status, 200);
        let asked: Vec<_> = fake.requests().into_iter().map(|r| (r.page_size, r.page_token)).collect();
        assert_eq!(asked, [(2, String::new()), (2, "5".to_owned())]);
    }
}
