//! `audit.v1.AuditService`: the process tier's audit trail (webhook
//! endpoints, order-file quarantine decisions, customer master data), read
//! from the tier's own database, newest first. The rows are written by the
//! modules that act, in their actions' transactions ([`platform::audit`]);
//! this module only lists them, so that operators can read the trail over
//! HTTP as they read the gateway's.

use erp_connect_proto::audit::v1 as pb;
use platform::{audit, database::Database};
use tonic::{Request, Response, Status};

/// Rows a page holds when the caller asks for no size.
const DEFAULT_PAGE_SIZE: u32 = audit::DEFAULT_PAGE_SIZE;
/// Largest page, as the other ops lists (and the HTTP query) allow.
const MAX_PAGE_SIZE: i32 = audit::MAX_PAGE_SIZE as i32;

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments: each field with why.
    #[error("invalid arguments: {0:?}")]
    Invalid(Vec<(String, String)>),
    /// The trail could not be read.
    #[error(transparent)]
    Trail(#[from] audit::Error),
}

impl Error {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Trail(err) if err.is_retryable())
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(errors) => crate::grpc_status::invalid_argument(&errors),
            Error::Trail(err) => {
                // Logged here, once; the caller learns nothing of the SQL.
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "audit trail unavailable");
                Status::unavailable("the audit trail is unavailable")
            }
        }
    }
}

/// The service over the process tier's database.
pub struct Service {
    db: Database,
}

/// The tier's `AuditService` over `db`, the saga store's database.
pub fn service(db: Database) -> pb::audit_service_server::AuditServiceServer<Service> {
    pb::audit_service_server::AuditServiceServer::new(Service { db })
}

/// The filter a request asks for, or every bad field.
fn filter(req: pb::ListAuditEntriesRequest) -> Result<audit::Filter, Error> {
    let mut errors = Vec::new();
    let mut text = |field: &str, value: String| {
        if value.len() > audit::MAX_TEXT {
            errors.push((field.to_owned(), format!("must be at most {} characters", audit::MAX_TEXT)));
        }
        Some(value).filter(|v| !v.is_empty())
    };
    let (actor, action, object) = (text("actor", req.actor), text("action", req.action), text("object", req.object));
    for (field, at) in [("since_ms", req.since_ms), ("until_ms", req.until_ms)] {
        if at.is_some_and(|at| at < 0) {
            errors.push((field.to_owned(), "must not be before the epoch".to_owned()));
        }
    }
    if !(0..=MAX_PAGE_SIZE).contains(&req.page_size) {
        errors.push(("page_size".into(), format!("must be between 1 and {MAX_PAGE_SIZE}")));
    }
    let before_seq = match req.page_token.as_str() {
        "" => None,
        token => match token.parse::<i64>() {
            Ok(seq) if seq > 0 => Some(seq),
            _ => {
                errors.push(("page_token".into(), "not a token this list gave".into()));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    Ok(audit::Filter {
        actor,
        action,
        object,
        since: req.since_ms,
        until: req.until_ms,
        before_seq,
        limit: u32::try_from(req.page_size).ok().filter(|n| *n > 0).unwrap_or(DEFAULT_PAGE_SIZE),
    })
}

fn entry(record: audit::Record) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: record.seq,
        at_ms: record.at,
        actor: record.actor,
        action: record.action,
        object: record.object,
        detail_json: record.detail.to_string(),
        hash: record.hash,
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Service {
    #[tracing::instrument(skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let filter = filter(request.into_inner())?;
        let (records, next) = audit::list(&self.db, &filter).await.map_err(Error::from)?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: records.into_iter().map(entry).collect(),
            next_page_token: next.map(|seq| seq.to_string()).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use pb::{audit_service_client::AuditServiceClient, audit_service_server::AuditService};
    use platform::database::ScratchPostgres;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::order_to_cash::store::Store;

    /// Seven rows by two actors, one a millisecond apart from the next,
    /// appended as the acting modules do; then the trail read through the
    /// generated client over an in-process channel, as the experience tier
    /// reads it.
    async fn filters_pages_and_bad_arguments(store: Store) {
        let db = store.database();
        for i in 1..=7_i64 {
            let (actor, action) = if i % 2 == 0 { ("alice", "webhooks.update") } else { ("key_1", "webhooks.create") };
            let object = format!("whe_{i}");
            let entry =
                audit::Entry { actor, action, object: &object, detail: serde_json::json!({"tenant": "acme", "n": i}) };
            audit::append_alone(&db, &entry, 1_000 * i).await.expect("append");
        }
        let routes = tonic::service::Routes::new(service(db.clone()));
        let client = AuditServiceClient::new(platform::channel::in_process(routes));
        let list = |req: pb::ListAuditEntriesRequest| {
            let mut client = client.clone();
            async move { client.list_audit_entries(req).await.map(Response::into_inner) }
        };

        let all = list(pb::ListAuditEntriesRequest::default()).await.expect("all");
        assert_eq!(all.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 6, 5, 4, 3, 2, 1], "newest first");
        assert_eq!(all.next_page_token, "", "one page");
        let newest = &all.entries[0];
        assert_eq!(
            (newest.actor.as_str(), newest.action.as_str(), newest.object.as_str()),
            ("key_1", "webhooks.create", "whe_7")
        );
        assert_eq!(newest.at_ms, 7_000);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&newest.detail_json).expect("json")["n"], 7);
        assert_eq!(newest.hash.len(), 64);

        let by_alice = pb::ListAuditEntriesRequest { actor: "alice".into(), ..Default::default() };
        let seqs = |r: &pb::ListAuditEntriesResponse| r.entries.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&list(by_alice).await.expect("by actor")), [6, 4, 2]);
        let created = pb::ListAuditEntriesRequest { action: "webhooks.create".into(), ..Default::default() };
        assert_eq!(seqs(&list(created).await.expect("by action")), [7, 5, 3, 1]);
        let one = pb::ListAuditEntriesRequest { object: "whe_3".into(), ..Default::default() };
        assert_eq!(seqs(&list(one).await.expect("by object")), [3]);
        let window = pb::ListAuditEntriesRequest { since_ms: Some(2_000), until_ms: Some(5_000), ..Default::default() };
        assert_eq!(seqs(&list(window).await.expect("by time")), [4, 3, 2], "since inclusive, until exclusive");
        let never = pb::ListAuditEntriesRequest { until_ms: Some(0), ..Default::default() };
        assert_eq!(seqs(&list(never).await.expect("until 0")), Vec::<i64>::new());

        // Pages of three follow each other's tokens to the end.
        let mut page = pb::ListAuditEntriesRequest { page_size: 3, ..Default::default() };
        let mut pages = Vec::new();
        loop {
            let got = list(page.clone()).await.expect("page");
            pages.push(seqs(&got));
            if got.next_page_token.is_empty() {
                break;
            }
            page.page_token = got.next_page_token;
        }
        assert_eq!(pages, [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);

        let bad = pb::ListAuditEntriesRequest {
            page_size: 101,
            page_token: "abc".into(),
            actor: "a".repeat(audit::MAX_TEXT + 1),
            since_ms: Some(-1),
            ..Default::default()
        };
        let status = list(bad).await.expect_err("bad arguments");
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["actor", "since_ms", "page_size", "page_token"]);

        // A store that cannot answer is UNAVAILABLE, without its SQL.
        db.close().await;
        let status = list(pb::ListAuditEntriesRequest::default()).await.expect_err("closed");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().to_lowercase().contains("select"), "{}", status.message());
        // Through the service directly too: the same mapping.
        let direct = Service { db }.list_audit_entries(Request::new(Default::default())).await.expect_err("closed");
        assert_eq!(direct.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn the_trail_is_listed_filtered_and_paged_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.expect("open");
        filters_pages_and_bad_arguments(store).await;
    }

    #[tokio::test]
    async fn the_trail_is_listed_filtered_and_paged_on_postgres() {
        let scratch = ScratchPostgres::create("process_audit").await;
        filters_pages_and_bad_arguments(Store::open(&scratch.url()).await.expect("open")).await;
    }
}
