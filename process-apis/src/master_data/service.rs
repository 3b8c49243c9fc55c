//! `master_data.v1.MasterDataService` over [`MasterData`]: operators read
//! golden records, decide what waits in the quarantine, and serve
//! data-subject requests. Decisions and erasures name their actor (the
//! `erp-actor` metadata) on the audit trail.

use erp_connect_proto::{acting, master_data::v1 as pb};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::{Error, MasterData, fields::Field, store::Quarantined, sync};
use crate::order_to_cash::clock::now_ms;

/// Most quarantine entries in one answer.
const MAX_LIST: i32 = 200;

/// The gRPC service.
pub struct Service {
    pub(crate) master: MasterData,
}

/// A golden record as JSON (the export's form).
pub fn golden_json(g: &pb::GoldenCustomer) -> Value {
    let fields: serde_json::Map<String, Value> = g
        .fields
        .iter()
        .map(|f| {
            let value = serde_json::from_str(&f.value_json).unwrap_or(Value::Null);
            (f.field.clone(), json!({"value": value, "owner": f.owner, "changed_at_ms": f.changed_at_ms}))
        })
        .collect();
    json!({
        "id": g.id,
        "fields": fields,
        "ids": g.refs.iter().map(|r| json!({"system": r.system, "id": r.id})).collect::<Vec<_>>(),
        "created_at_ms": g.created_at_ms,
        "erased_at_ms": g.erased_at_ms,
    })
}

/// A quarantine entry as `master_data.v1` has it.
pub fn entry(e: &Quarantined) -> pb::QuarantineEntry {
    pb::QuarantineEntry {
        id: e.id.clone(),
        kind: e.kind.clone(),
        subject: Some(pb::SystemRef { system: e.subject_system.as_str().into(), id: e.subject_id.clone() }),
        candidates: e.candidates.clone(),
        field: e.field.clone(),
        value_json: if e.value == "null" { String::new() } else { e.value.clone() },
        owner_value_json: if e.owner_value == "null" { String::new() } else { e.owner_value.clone() },
        reason: e.reason.clone(),
        status: e.status.clone(),
        golden_id: e.golden_id.clone(),
        created_at_ms: e.created_at,
        resolved_at_ms: e.resolved_at.unwrap_or_default(),
        resolved_by: e.resolved_by.clone().unwrap_or_default(),
    }
}

/// A quarantine entry as JSON (the export's form).
pub fn entry_json(e: &Quarantined) -> Value {
    json!({
        "id": e.id, "kind": e.kind, "subject": {"system": e.subject_system.as_str(), "id": e.subject_id},
        "candidates": e.candidates, "field": e.field,
        "value": serde_json::from_str::<Value>(&e.value).unwrap_or(Value::Null),
        "owner_value": serde_json::from_str::<Value>(&e.owner_value).unwrap_or(Value::Null),
        "reason": e.reason, "status": e.status, "golden_id": e.golden_id, "created_at_ms": e.created_at,
    })
}

impl Service {
    fn enabled(&self) -> Result<(), Error> {
        if self.master.inner.enabled { Ok(()) } else { Err(Error::Disabled) }
    }

    async fn open_entry(&self, id: &str) -> Result<Quarantined, Error> {
        self.master
            .inner
            .store
            .quarantined(id)
            .await?
            .ok_or_else(|| Error::NotFound { kind: "quarantine entry", id: id.to_owned() })
    }

    async fn resolve(&self, req: pb::ResolveQuarantinedRequest, actor: &str) -> Result<pb::QuarantineEntry, Error> {
        let m = &self.master.inner;
        let e = self.open_entry(&req.id).await?;
        if e.status != "open" {
            return Err(Error::Precondition(format!("entry {} is {} already", e.id, e.status)));
        }
        let _one = m.pass.lock().await;
        let now = now_ms();
        let (status, golden) = match (e.kind.as_str(), req.decision.as_str()) {
            ("duplicate", "merge") => {
                if !e.candidates.contains(&req.golden_id) {
                    return Err(Error::Invalid {
                        field: "golden_id",
                        message: format!("one of the candidates: {}", e.candidates.join(", ")),
                    });
                }
                let linked = m.store.link(&req.golden_id, e.subject_system, &e.subject_id, now).await?;
                ("merged", linked)
            }
            ("duplicate", "keep_apart") => {
                ("kept_apart", m.store.create_linked(e.subject_system, &e.subject_id, now).await?)
            }
            ("conflict", "accept") => {
                let field = Field::parse(&e.field).ok_or_else(|| Error::Precondition("unknown field".into()))?;
                let value: Value = serde_json::from_str(&e.value).unwrap_or(Value::Null);
                let owner = m.owners.owner(field);
                let links = m.store.links(&e.golden_id).await?;
                for (_, id) in links.iter().filter(|(s, _)| *s == owner) {
                    sync::write(&m.systems, owner, id, &[(field, value.clone())]).await?;
                }
                m.store.set_field(&e.golden_id, field, &value, now).await?;
                ("accepted", e.golden_id.clone())
            }
            ("conflict", "revert") => {
                let field = Field::parse(&e.field).ok_or_else(|| Error::Precondition("unknown field".into()))?;
                let known = m.store.fields(&e.golden_id).await?;
                if let Some((value, _)) = known.get(&field) {
                    sync::write(&m.systems, e.subject_system, &e.subject_id, &[(field, value.clone())]).await?;
                }
                ("reverted", e.golden_id.clone())
            }
            (kind, decision) => {
                let allowed = if kind == "duplicate" { "merge or keep_apart" } else { "accept or revert" };
                return Err(Error::Invalid {
                    field: "decision",
                    message: format!("{decision:?} does not decide a {kind}: {allowed}"),
                });
            }
        };
        let detail = json!({"decision": req.decision, "golden": golden, "kind": e.kind, "reason": req.reason});
        let audit = platform::audit::Entry { actor, action: "master_data.quarantine_resolved", object: &e.id, detail };
        if !m.store.resolve(&e.id, status, &golden, actor, &audit, now).await? {
            return Err(Error::Precondition(format!("entry {} was decided meanwhile", e.id)));
        }
        let links = m.store.links(&golden).await?;
        self.master.align_all(&golden, &links).await?;
        tracing::info!(entry = %e.id, status, golden, actor, "master data quarantine entry decided");
        Ok(entry(&self.open_entry(&e.id).await?))
    }
}

#[tonic::async_trait]
impl pb::master_data_service_server::MasterDataService for Service {
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let golden = self.master.resolve_id(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetCustomerResponse { customer: Some(self.master.golden_record(&golden).await?) }))
    }

    async fn list_quarantine(
        &self,
        request: Request<pb::ListQuarantineRequest>,
    ) -> Result<Response<pb::ListQuarantineResponse>, Status> {
        let req = request.into_inner();
        const STATUSES: [&str; 6] = ["", "open", "merged", "kept_apart", "accepted", "reverted"];
        if !STATUSES.contains(&req.status.as_str()) {
            return Err(
                Error::Invalid { field: "status", message: format!("one of {}", STATUSES[1..].join(", ")) }.into()
            );
        }
        if !(0..=MAX_LIST).contains(&req.limit) {
            return Err(Error::Invalid { field: "limit", message: format!("from 1 to {MAX_LIST}") }.into());
        }
        let limit = if req.limit == 0 { 50 } else { req.limit };
        let rows = self.master.inner.store.quarantine_list(&req.status, i64::from(limit)).await.map_err(Error::from)?;
        Ok(Response::new(pb::ListQuarantineResponse { entries: rows.iter().map(entry).collect() }))
    }

    async fn get_quarantined(
        &self,
        request: Request<pb::GetQuarantinedRequest>,
    ) -> Result<Response<pb::GetQuarantinedResponse>, Status> {
        let found = self.open_entry(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetQuarantinedResponse { entry: Some(entry(&found)) }))
    }

    async fn resolve_quarantined(
        &self,
        request: Request<pb::ResolveQuarantinedRequest>,
    ) -> Result<Response<pb::ResolveQuarantinedResponse>, Status> {
        self.enabled()?;
        let actor = acting::of(&request);
        let decided = self.resolve(request.into_inner(), &actor).await?;
        Ok(Response::new(pb::ResolveQuarantinedResponse { entry: Some(decided) }))
    }

    async fn export_customer(
        &self,
        request: Request<pb::ExportCustomerRequest>,
    ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        let golden = self.master.resolve_id(&request.into_inner().id).await?;
        let document = self.master.export(&golden).await?;
        Ok(Response::new(pb::ExportCustomerResponse { document_json: document.to_string() }))
    }

    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        let actor = acting::of(&request);
        let req = request.into_inner();
        let golden = self.master.resolve_id(&req.id).await?;
        let report = self.master.erase(&golden, &actor, &req.reason).await?;
        Ok(Response::new(pb::EraseCustomerResponse { report: Some(report) }))
    }

    async fn resync(&self, request: Request<pb::ResyncRequest>) -> Result<Response<pb::ResyncResponse>, Status> {
        self.enabled()?;
        let actor = acting::of(&request);
        let (customers, links) = self.master.resync().await?;
        let detail = json!({"customers": customers, "links": links});
        let audit =
            platform::audit::Entry { actor: &actor, action: "master_data.resync", object: "master_data", detail };
        platform::audit::append_alone(self.master.inner.store.database(), &audit, now_ms())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ResyncResponse { customers, links }))
    }

    async fn get_accuracy(
        &self,
        _: Request<pb::GetAccuracyRequest>,
    ) -> Result<Response<pb::GetAccuracyResponse>, Status> {
        let rows = self.master.inner.store.accuracy().await.map_err(Error::from)?;
        let compared_at_ms = rows.iter().map(|r| r.compared_at).max().unwrap_or_default();
        let customers_compared = rows.first().map(|r| r.customers).unwrap_or_default();
        let fields = Field::ALL
            .iter()
            .map(|f| pb::FieldMismatches {
                field: f.as_str().into(),
                mismatches: rows.iter().find(|r| r.field == f.as_str()).map(|r| r.mismatches).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::GetAccuracyResponse { fields, compared_at_ms, customers_compared }))
    }
}

impl From<super::store::Error> for Status {
    fn from(err: super::store::Error) -> Self {
        Error::from(err).into()
    }
}
