//! `/ops/v1/customers/{id}`: a customer's golden record as the master data
//! synchronisation keeps it (every field with the system that owns it, the
//! customer's id in each system), and the data-subject requests served on
//! it: an export of everything held about the person, and an erasure in
//! every system, audited with the operator and the reason.
//!
//! `{id}` is the golden id (`mdc_...`) or a system's id (`crm:<id>`,
//! `erp:<id>`); the process tier resolves either.

use crate::body::Json;
use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use erp_connect_proto::{
    acting,
    master_data::v1::{self as pb, master_data_service_client::MasterDataServiceClient},
};
use http::{HeaderValue, header};
use platform::{channel::GrpcChannel, problem::FieldError};
use serde::{Deserialize, Serialize, ser::SerializeMap};
use tonic::{Code, Status};

use crate::{
    Upstreams,
    body::OptionalJsonBody,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{BodyRefusals, Refusals},
    orders::rfc3339_ms as rfc3339,
};

/// The process tier's master data service.
pub fn client(upstreams: &Upstreams) -> MasterDataServiceClient<GrpcChannel> {
    MasterDataServiceClient::new(upstreams.process.clone())
}

const NO_SUCH: &str = "no such customer";

/// Largest export taken from the process tier. gRPC's default of 4 MiB
/// is for ordinary messages; a long-standing customer's orders and
/// invoices can pass it, and a refused export helps no one.
const MAX_EXPORT_BYTES: usize = 64 << 20;

/// Longest erasure reason accepted, as for other audited decisions.
pub const MAX_REASON_LEN: usize = 500;

/// `id` if it can name a customer: `mdc_...`, `crm:<id>` or `erp:<id>`.
/// Anything else answers 404 without a call, as an unknown id would.
fn customer_id(ObjectId(id): ObjectId) -> Result<String, Error> {
    let named =
        ["mdc_", "crm:", "erp:"].iter().any(|prefix| id.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty()));
    if named { Ok(id) } else { Err(Error::NotFound(NO_SUCH)) }
}

/// A customer lookup's failure: `NOT_FOUND`, or an id the process tier
/// cannot read as one (`INVALID_ARGUMENT`), is the same 404 as an id this
/// tier refuses itself, since neither names a customer.
fn lookup(status: Status) -> Error {
    match status.code() {
        Code::NotFound | Code::InvalidArgument => Error::NotFound(NO_SUCH),
        _ => Error::Process(status),
    }
}

/// A stored JSON value (`value_json`) as JSON: `null` when empty, and when
/// it does not parse (logged: the process tier wrote something it should not).
pub(crate) fn json_value(text: &str) -> serde_json::Value {
    if text.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|err| {
        tracing::error!(error = %err, "the process tier sent a value that is not JSON");
        serde_json::Value::Null
    })
}

/// A JSON object whose keys keep the order they were given in (the
/// golden record's field order), whichever map serde_json was built with.
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One field of the golden record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GoldenFieldView {
    /// The value: a string for most fields, an array of address objects
    /// for `addresses`; `null` when the owner has no value.
    #[schema(value_type = serde_json::Value)]
    pub value: serde_json::Value,
    /// The system that owns the field: `crm` or `erp`.
    pub owner: String,
    /// When the owner last changed it, RFC 3339; absent when no change was seen yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
}

/// A customer's golden record: the merged view of its record in every system.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GoldenCustomerView {
    /// `mdc_...`.
    pub id: String,
    /// Every field by name (`name`, `email`, `phone`, `vat_id`, `addresses`,
    /// `credit_limit`), in that order.
    #[schema(value_type = std::collections::BTreeMap<String, GoldenFieldView>)]
    pub fields: Ordered<GoldenFieldView>,
    /// The customer's id in each system it is linked in, by system (`crm`, `erp`).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub ids: Ordered<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<String>,
}

impl From<pb::GoldenCustomer> for GoldenCustomerView {
    fn from(c: pb::GoldenCustomer) -> Self {
        Self {
            id: c.id,
            fields: Ordered(
                c.fields
                    .into_iter()
                    .map(|f| {
                        let view = GoldenFieldView {
                            value: json_value(&f.value_json),
                            owner: f.owner,
                            changed_at: (f.changed_at_ms > 0).then(|| rfc3339(f.changed_at_ms)),
                        };
                        (f.field, view)
                    })
                    .collect(),
            ),
            ids: Ordered(c.refs.into_iter().map(|r| (r.system, r.id)).collect()),
            created_at: rfc3339(c.created_at_ms),
            erased_at: (c.erased_at_ms > 0).then(|| rfc3339(c.erased_at_ms)),
        }
    }
}

/// `POST /ops/v1/customers/{id}/erase`, optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    /// Why, for the audit trail (e.g. the request's ticket).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// What an erasure did in one system, and what it kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SystemErasureView {
    /// `crm`, `erp` or `erp-connect`.
    pub system: String,
    /// `erased`, `anonymised`, `not_linked` or `failed`.
    pub outcome: String,
    /// What was done.
    pub done: Vec<String>,
    /// What was kept, each with why (e.g. invoices, for the retention the law requires).
    pub kept: Vec<String>,
}

/// What an erasure did, system by system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErasureView {
    /// The golden id, `mdc_...`.
    pub id: String,
    /// RFC 3339.
    pub erased_at: String,
    /// Each system's outcome.
    pub systems: Vec<SystemErasureView>,
}

impl From<pb::ErasureReport> for ErasureView {
    fn from(r: pb::ErasureReport) -> Self {
        Self {
            id: r.id,
            erased_at: rfc3339(r.erased_at_ms),
            systems: r
                .systems
                .into_iter()
                .map(|s| SystemErasureView { system: s.system, outcome: s.outcome, done: s.done, kept: s.kept })
                .collect(),
        }
    }
}

/// A customer's golden record: each field with its value and owning system, and the customer's id in every system.
#[utoipa::path(get, path = "/customers/{id}", tag = "ops", operation_id = "get_customer",
    params(("id" = String, Path, description = "Golden id (mdc_...), or a system's id as crm:<id> or erp:<id>")),
    responses(
        (status = 200, description = "Done", body = GoldenCustomerView),
        (status = 404, description = "No such customer"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(customer_id = %id.0))]
pub async fn get(State(upstreams): State<Upstreams>, id: ObjectId) -> Result<Json<GoldenCustomerView>, Error> {
    let id = customer_id(id)?;
    let found = client(&upstreams).get_customer(pb::GetCustomerRequest { id }).await.map_err(lookup)?;
    Ok(Json(found.into_inner().customer.unwrap_or_default().into()))
}

/// Everything held about the customer, as one JSON document to hand to the person (a data-subject access request); audited.
#[utoipa::path(get, path = "/customers/{id}/export", tag = "ops", operation_id = "export_customer",
    params(("id" = String, Path, description = "Golden id (mdc_...), or a system's id as crm:<id> or erp:<id>")),
    responses(
        (status = 200, description = "The golden record and cross-references, the CRM's record, the ERP's customer, \
            sales orders and invoices, and erp-connect's own orders, quarantine entries and audit rows about the person",
            body = Object, content_type = "application/json",
            headers(("Content-Disposition" = String, description = "attachment; filename=\"customer-<id>.json\""))),
        (status = 404, description = "No such customer"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(customer_id = %id.0))]
pub async fn export(
    State(upstreams): State<Upstreams>,
    Caller(operator): Caller,
    id: ObjectId,
) -> Result<Response, Error> {
    let id = customer_id(id)?;
    // A read, but of everything about a person: the process tier audits
    // it with the operator's name.
    let request = acting::request(pb::ExportCustomerRequest { id: id.clone() }, &operator.subject);
    let export = client(&upstreams)
        .max_decoding_message_size(MAX_EXPORT_BYTES)
        .export_customer(request)
        .await
        .map_err(lookup)?
        .into_inner();
    // Passed through as the process tier wrote it, once known to be the
    // JSON object the contract promises.
    if !serde_json::from_str::<serde_json::Value>(&export.document_json).is_ok_and(|v| v.is_object()) {
        return Err(Error::Process(Status::internal("the customer export is not a JSON object")));
    }
    // Ids are letters, digits and `_-.:` (ObjectId): safe in a quoted
    // filename once the colon, which no file system likes, is gone.
    let filename = format!("attachment; filename=\"customer-{}.json\"", id.replace(':', "-"));
    let disposition = HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        export.document_json,
    )
        .into_response())
}

/// Erases the customer in every system it is linked in (a data-subject erasure request), keeping only what must be kept; audited, safe to repeat.
#[utoipa::path(post, path = "/customers/{id}/erase", tag = "ops", operation_id = "erase_customer",
    params(("id" = String, Path, description = "Golden id (mdc_...), or a system's id as crm:<id> or erp:<id>")),
    request_body = Option<EraseBody>,
    responses(
        (status = 200, description = "What was done and kept in each system", body = ErasureView),
        (status = 404, description = "No such customer"),
        (status = 409, description = "The customer's state does not allow an erasure now"),
        (status = 422, description = "The reason is too long"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(customer_id = %id.0))]
pub async fn erase(
    State(upstreams): State<Upstreams>,
    Caller(operator): Caller,
    id: ObjectId,
    OptionalJsonBody(body): OptionalJsonBody<EraseBody>,
) -> Result<Json<ErasureView>, Error> {
    let id = customer_id(id)?;
    let reason = body.and_then(|b| b.reason).unwrap_or_default();
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(Error::InvalidInput(vec![FieldError {
            field: "reason".into(),
            message: format!("must be at most {MAX_REASON_LEN} characters"),
        }]));
    }
    let request = acting::request(pb::EraseCustomerRequest { id, reason }, &operator.subject);
    let report = client(&upstreams).erase_customer(request).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(report.into_inner().report.unwrap_or_default().into()))
}

/// An in-process fake of the process tier's `MasterDataService`, served
/// through the same generated server and client as the real one, that
/// answers canned records and keeps every call it got with the actor it
/// named; and the experience router in front of it.
#[cfg(test)]
pub(crate) mod fake_process_tier {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use erp_connect_proto::master_data::v1::master_data_service_server::{MasterDataService, MasterDataServiceServer};
    use platform::principal::Principal;
    use tonic::{Request, Response};
    use tonic_types::{ErrorDetails, StatusExt};
    use tower::ServiceExt;

    use super::*;

    /// One call the fake got.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Call {
        /// The RPC, e.g. `EraseCustomer`.
        pub rpc: &'static str,
        /// The `erp-actor` metadata, or [`acting::UNNAMED`].
        pub actor: String,
        /// The request message, as `{:?}`.
        pub message: String,
    }

    /// The fake service.
    #[derive(Clone, Default)]
    pub(crate) struct Fake {
        calls: Arc<Mutex<Vec<Call>>>,
    }

    impl Fake {
        /// Every call so far, oldest first.
        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }

        fn record<T: std::fmt::Debug>(&self, rpc: &'static str, request: &Request<T>) {
            let call = Call { rpc, actor: acting::of(request), message: format!("{:?}", request.get_ref()) };
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(call);
            }
        }
    }

    /// The one customer the fake knows, as `mdc_1` or `crm:7`.
    pub(crate) fn known(id: &str) -> Result<(), Status> {
        if id == "mdc_1" || id == "crm:7" { Ok(()) } else { Err(Status::not_found(format!("no golden record {id}"))) }
    }

    /// The export the fake hands out, with spacing no serializer would choose.
    pub(crate) const DOCUMENT: &str = "{\"golden\": {\"id\": \"mdc_1\"},  \"crm\": {\"name\": \"Ada Lovelace\"}}";

    /// An export over gRPC's default 4 MiB message limit.
    pub(crate) fn big_document() -> String {
        format!("{{\"invoices\": \"{}\"}}", "i".repeat(5 << 20))
    }

    pub(crate) fn conflict(id: &str, status: &str) -> pb::QuarantineEntry {
        pb::QuarantineEntry {
            id: id.into(),
            kind: "conflict".into(),
            subject: Some(pb::SystemRef { system: "erp".into(), id: "42".into() }),
            field: "email".into(),
            value_json: "\"ada@erp.example\"".into(),
            owner_value_json: String::new(),
            reason: "email changed in erp, owned by crm".into(),
            status: status.into(),
            golden_id: "mdc_1".into(),
            created_at_ms: 1_764_400_000_000,
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl MasterDataService for Fake {
        async fn get_customer(
            &self,
            request: Request<pb::GetCustomerRequest>,
        ) -> Result<Response<pb::GetCustomerResponse>, Status> {
            self.record("GetCustomer", &request);
            known(&request.get_ref().id)?;
            let field = |field: &str, value_json: &str, owner: &str, changed_at_ms| pb::GoldenField {
                field: field.into(),
                value_json: value_json.into(),
                owner: owner.into(),
                changed_at_ms,
            };
            Ok(Response::new(pb::GetCustomerResponse {
                customer: Some(pb::GoldenCustomer {
                    id: "mdc_1".into(),
                    fields: vec![
                        field("name", "\"Ada Lovelace\"", "crm", 1_764_400_000_000),
                        field("email", "\"ada@example.com\"", "crm", 0),
                        field("phone", "", "crm", 0),
                        field("vat_id", "\"DE123\"", "erp", 0),
                        field("addresses", r#"[{"street":"Hauptstr. 1","city":"Berlin"}]"#, "erp", 0),
                        field("credit_limit", "\"5000.00\"", "erp", 0),
                    ],
                    refs: vec![
                        pb::SystemRef { system: "crm".into(), id: "7".into() },
                        pb::SystemRef { system: "erp".into(), id: "42".into() },
                    ],
                    created_at_ms: 1_764_300_000_000,
                    erased_at_ms: 0,
                }),
            }))
        }

        async fn list_quarantine(
            &self,
            request: Request<pb::ListQuarantineRequest>,
        ) -> Result<Response<pb::ListQuarantineResponse>, Status> {
            self.record("ListQuarantine", &request);
            let duplicate = pb::QuarantineEntry {
                id: "mdq_2".into(),
                kind: "duplicate".into(),
                subject: Some(pb::SystemRef { system: "crm".into(), id: "8".into() }),
                candidates: vec!["mdc_1".into(), "mdc_3".into()],
                reason: "same name, two golden records with it".into(),
                status: "open".into(),
                created_at_ms: 1_764_400_000_000,
                ..Default::default()
            };
            Ok(Response::new(pb::ListQuarantineResponse { entries: vec![conflict("mdq_1", "open"), duplicate] }))
        }

        async fn get_quarantined(
            &self,
            request: Request<pb::GetQuarantinedRequest>,
        ) -> Result<Response<pb::GetQuarantinedResponse>, Status> {
            self.record("GetQuarantined", &request);
            match request.get_ref().id.as_str() {
                "mdq_1" => Ok(Response::new(pb::GetQuarantinedResponse { entry: Some(conflict("mdq_1", "open")) })),
                _ => Err(Status::not_found("no entry")),
            }
        }

        async fn resolve_quarantined(
            &self,
            request: Request<pb::ResolveQuarantinedRequest>,
        ) -> Result<Response<pb::ResolveQuarantinedResponse>, Status> {
            self.record("ResolveQuarantined", &request);
            match request.get_ref().id.as_str() {
                "mdq_1" => Ok(Response::new(pb::ResolveQuarantinedResponse {
                    entry: Some(pb::QuarantineEntry {
                        resolved_at_ms: 1_764_500_000_000,
                        resolved_by: acting::of(&request),
                        ..conflict("mdq_1", "reverted")
                    }),
                })),
                "mdq_done" => {
                    let details = ErrorDetails::with_precondition_failure_violation(
                        "STATE",
                        "mdq_done",
                        "the entry was resolved already",
                    );
                    Err(Status::with_error_details(tonic::Code::FailedPrecondition, "status = merged", details))
                }
                _ => Err(Status::not_found("no entry")),
            }
        }

        async fn export_customer(
            &self,
            request: Request<pb::ExportCustomerRequest>,
        ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
            self.record("ExportCustomer", &request);
            if request.get_ref().id == "mdc_big" {
                return Ok(Response::new(pb::ExportCustomerResponse { document_json: big_document() }));
            }
            known(&request.get_ref().id)?;
            Ok(Response::new(pb::ExportCustomerResponse { document_json: DOCUMENT.into() }))
        }

        async fn erase_customer(
            &self,
            request: Request<pb::EraseCustomerRequest>,
        ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
            self.record("EraseCustomer", &request);
            known(&request.get_ref().id)?;
            Ok(Response::new(pb::EraseCustomerResponse {
                report: Some(pb::ErasureReport {
                    id: "mdc_1".into(),
                    systems: vec![
                        pb::SystemErasure {
                            system: "crm".into(),
                            outcome: "erased".into(),
                            done: vec!["contact deleted".into()],
                            kept: Vec::new(),
                        },
                        pb::SystemErasure {
                            system: "erp".into(),
                            outcome: "anonymised".into(),
                            done: vec!["name, e-mail and phone replaced".into()],
                            kept: vec!["2 invoices: kept 10 years for the tax authority".into()],
                        },
                    ],
                    erased_at_ms: 1_764_500_000_000,
                }),
            }))
        }

        async fn resync(&self, request: Request<pb::ResyncRequest>) -> Result<Response<pb::ResyncResponse>, Status> {
            self.record("Resync", &request);
            Ok(Response::new(pb::ResyncResponse { customers: 12, links: 23 }))
        }

        async fn get_accuracy(
            &self,
            request: Request<pb::GetAccuracyRequest>,
        ) -> Result<Response<pb::GetAccuracyResponse>, Status> {
            self.record("GetAccuracy", &request);
            let field = |field: &str, mismatches| pb::FieldMismatches { field: field.into(), mismatches };
            Ok(Response::new(pb::GetAccuracyResponse {
                fields: vec![field("name", 0), field("email", 2), field("phone", 1), field("addresses", 0)],
                compared_at_ms: 1_764_400_000_000,
                customers_compared: 12,
            }))
        }
    }

    /// The experience tier's router in front of `fake`.
    pub(crate) fn app(fake: &Fake) -> axum::Router {
        let routes = tonic::service::Routes::new(MasterDataServiceServer::new(fake.clone()));
        crate::router(Upstreams::new(platform::channel::in_process(routes)))
    }

    /// An answer: status, headers and body.
    pub(crate) struct Reply {
        pub status: http::StatusCode,
        pub headers: http::HeaderMap,
        pub bytes: Vec<u8>,
    }

    impl Reply {
        /// The body as JSON (`null` when it is not).
        pub(crate) fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.bytes).unwrap_or_default()
        }

        /// Asserts a problem+json answer with `status`, and returns it.
        pub(crate) fn problem(&self, status: u16) -> serde_json::Value {
            assert_eq!(self.status.as_u16(), status, "{}", String::from_utf8_lossy(&self.bytes));
            assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json");
            let problem = self.json();
            assert_eq!(problem["status"], status);
            problem
        }
    }

    /// `method path` by operator `alice`, with `body` as JSON when given.
    pub(crate) async fn call(app: &axum::Router, method: &str, path: &str, body: Option<&str>) -> Reply {
        let principal = Principal { subject: "alice".into(), tenant: None, scopes: vec!["ops".into()], email: None };
        let mut request = http::Request::builder().method(method).uri(path).extension(principal);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("request");
        let response = app.clone().oneshot(request).await.expect("an answer");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.expect("body").to_vec();
        Reply { status: parts.status, headers: parts.headers, bytes }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fake_process_tier::{DOCUMENT, Fake, app, big_document, call};

    #[tokio::test]
    async fn a_golden_record_has_each_field_with_its_owner_in_field_order_against_a_fake_process_tier() {
        let fake = Fake::default();
        let reply = call(&app(&fake), "GET", "/ops/v1/customers/crm:7", None).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        assert_eq!(
            reply.json(),
            json!({
                "id": "mdc_1",
                "fields": {
                    "name": {"value": "Ada Lovelace", "owner": "crm", "changed_at": "2025-11-29T07:06:40.000Z"},
                    "email": {"value": "ada@example.com", "owner": "crm"},
                    "phone": {"value": null, "owner": "crm"},
                    "vat_id": {"value": "DE123", "owner": "erp"},
                    "addresses": {"value": [{"street": "Hauptstr. 1", "city": "Berlin"}], "owner": "erp"},
                    "credit_limit": {"value": "5000.00", "owner": "erp"},
                },
                "ids": {"crm": "7", "erp": "42"},
                "created_at": "2025-11-28T03:20:00.000Z",
            })
        );
        // In the golden record's field order, not alphabetical.
        let text = String::from_utf8_lossy(&reply.bytes);
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap_or(usize::MAX);
        let order = ["name", "email", "phone", "vat_id", "addresses", "credit_limit"].map(at);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // A system's id reaches the process tier as given.
        assert!(fake.calls()[0].message.contains("\"crm:7\""), "{:?}", fake.calls());
    }

    #[tokio::test]
    async fn an_unknown_customer_is_a_404_problem_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let problem = call(&app, "GET", "/ops/v1/customers/mdc_nobody", None).await.problem(404);
        assert_eq!(problem["detail"], "no such customer");
        assert!(!problem.to_string().contains("golden record"), "the process tier's words stay inside: {problem}");
        assert_eq!(fake.calls().len(), 1);
        // What cannot name a customer is not asked about.
        for path in ["/ops/v1/customers/cus_1", "/ops/v1/customers/crm:", "/ops/v1/customers/x_1/export"] {
            call(&app, "GET", path, None).await.problem(404);
        }
        call(&app, "POST", "/ops/v1/customers/sap:1/erase", None).await.problem(404);
        assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
        call(&app, "GET", "/ops/v1/customers/erp:99/export", None).await.problem(404);
        call(&app, "POST", "/ops/v1/customers/erp:99/erase", None).await.problem(404);
    }

    #[tokio::test]
    async fn an_erasure_names_the_operator_and_the_reason_against_a_fake_process_tier() {
        let fake = Fake::default();
        let app = app(&fake);
        let reply = call(&app, "POST", "/ops/v1/customers/mdc_1/erase", Some(r#"{"reason": "ticket DSR-17"}"#)).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        assert_eq!(
            reply.json(),
            json!({
                "id": "mdc_1",
                "erased_at": "2025-11-30T10:53:20.000Z",
                "systems": [
                    {"system": "crm", "outcome": "erased", "done": ["contact deleted"], "kept": []},
                    {"system": "erp", "outcome": "anonymised", "done": ["name, e-mail and phone replaced"],
                     "kept": ["2 invoices: kept 10 years for the tax authority"]},
                ],
            })
        );
        let calls = fake.calls();
        assert_eq!((calls[0].rpc, calls[0].actor.as_str()), ("EraseCustomer", "alice"));
        assert!(calls[0].message.contains("reason: \"ticket DSR-17\""), "{calls:?}");

        // The body is optional; a bad one is refused before any call.
        assert_eq!(call(&app, "POST", "/ops/v1/customers/crm:7/erase", None).await.status, 200);
        assert!(fake.calls()[1].message.contains("reason: \"\""), "{:?}", fake.calls());
        let problem = call(&app, "POST", "/ops/v1/customers/mdc_1/erase", Some(r#"{"why": "x"}"#)).await.problem(400);
        assert_eq!(problem["errors"][0]["field"], "why");
        let long = format!(r#"{{"reason": "{}"}}"#, "r".repeat(501));
        call(&app, "POST", "/ops/v1/customers/mdc_1/erase", Some(&long)).await.problem(422);
        assert_eq!(fake.calls().len(), 2);
    }

    #[tokio::test]
    async fn an_export_passes_the_document_through_as_a_json_attachment_against_a_fake_process_tier() {
        let fake = Fake::default();
        let reply = call(&app(&fake), "GET", "/ops/v1/customers/crm:7/export", None).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
        assert_eq!(reply.bytes, DOCUMENT.as_bytes(), "byte for byte as the process tier wrote it");
        assert_eq!(reply.headers[http::header::CONTENT_TYPE], "application/json");
        assert_eq!(reply.headers[http::header::CONTENT_DISPOSITION], "attachment; filename=\"customer-crm-7.json\"");
        let calls = fake.calls();
        assert_eq!((calls[0].rpc, calls[0].actor.as_str()), ("ExportCustomer", "alice"));
        // A long-standing customer's export may pass gRPC's default 4 MiB.
        let reply = call(&app(&fake), "GET", "/ops/v1/customers/mdc_big/export", None).await;
        assert_eq!((reply.status.as_u16(), reply.bytes.len()), (200, big_document().len()));
    }
}
