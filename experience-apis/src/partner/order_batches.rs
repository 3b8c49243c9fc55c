//! `/partner/v1/order-batches`: order files. A partner `POST`s a CSV
//! (`text/csv`) or JSON-lines (`application/x-ndjson`) file, streamed to
//! the process tier as it arrives; the rows are imported in the background
//! through the partner's mapping and rules. `GET .../{id}` says how far it
//! got, `GET .../{id}/results` gives one result per row (JSON lines, or CSV
//! when asked for with `Accept: text/csv`).

use crate::body::Json;
use crate::orders::rfc3339_ms as rfc3339;
use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use erp_connect_proto::order_batches::v1::{
    self as pb, import_batch_chunk::Part, order_batch_service_client::OrderBatchServiceClient,
};
use futures_util::StreamExt;
use platform::{channel::GrpcChannel, problem::FieldError};
use serde::Serialize;

use super::Partner;
use crate::{Upstreams, error::Error, extract::ObjectId, openapi::Refusals};

/// The largest file a partner may send (the process tier's limit).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// How long an order file may take to arrive: the largest at 150 KB/s.
const UPLOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The process tier's batch service.
pub fn client(upstreams: &Upstreams) -> OrderBatchServiceClient<GrpcChannel> {
    OrderBatchServiceClient::new(upstreams.process.clone())
}

/// An order file and how far its import got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    /// `bat_...`.
    pub id: String,
    /// `importing` or `done`.
    pub status: String,
    /// Validated only: nothing was created.
    pub dry_run: bool,
    /// Data rows in the file.
    pub rows: i64,
    /// Orders created (or found again: a reference sent before).
    pub orders_accepted: i64,
    /// Rows refused (a dry run's failures, lines that are no record).
    pub rows_rejected: i64,
    /// Rows set aside for an operator.
    pub rows_quarantined: i64,
    /// The file's SHA-256, hex: the same file is imported once.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl From<pb::Batch> for BatchView {
    fn from(b: pb::Batch) -> Self {
        Self {
            id: b.id,
            status: b.status,
            dry_run: b.dry_run,
            rows: b.rows,
            orders_accepted: b.orders_accepted,
            rows_rejected: b.rows_rejected,
            rows_quarantined: b.rows_quarantined,
            sha256: b.sha256,
            created_at: rfc3339(b.created_at_ms),
            finished_at: (b.finished_at_ms > 0).then(|| rfc3339(b.finished_at_ms)),
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowResultView {
    /// 1 is the first data row.
    pub row: i64,
    /// The row's order reference.
    pub external_ref: String,
    /// `accepted`, `valid` (dry run), `rejected`, `quarantined`, or `pending` while importing.
    pub status: String,
    /// The order, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Why not: the field, the broken rule when one is, the message.
    pub errors: Vec<RowErrorView>,
}

/// One reason a row failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowErrorView {
    /// In the file's field names (`quantity`, `ship_to_country`); empty for the whole record.
    pub field: String,
    /// The rule, e.g. `max_quantity_per_line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For the partner.
    pub message: String,
}

impl From<pb::RowError> for RowErrorView {
    fn from(e: pb::RowError) -> Self {
        Self { field: e.field, rule: Some(e.rule).filter(|r| !r.is_empty()), message: e.message }
    }
}

impl From<pb::RowResult> for RowResultView {
    fn from(r: pb::RowResult) -> Self {
        Self {
            row: r.row,
            external_ref: r.external_ref,
            status: r.status,
            order_id: Some(r.order_id).filter(|o| !o.is_empty()),
            errors: r.errors.into_iter().map(Into::into).collect(),
        }
    }
}

/// Imports an order file: CSV (`text/csv`) or JSON lines
/// (`application/x-ndjson`), one row per order line, header
/// `external_ref,sku,quantity,unit,payment,ship_to_street,ship_to_city,ship_to_postal_code,ship_to_country`;
/// rows sharing an `external_ref` form one order. The same file (by SHA-256,
/// or the same Idempotency-Key) is imported once.
#[utoipa::path(post, path = "/order-batches", tag = "partner", operation_id = "import_order_batch",
    params(
        ("dry_run" = Option<bool>, Query, description = "Validate and map only: nothing is created"),
        ("Idempotency-Key" = Option<String>, Header, description = "Instead of the file's SHA-256",
            pattern = "^[!-~]{1,255}$")
    ),
    request_body(content = String, description = "The file", content_type = "text/csv"),
    responses(
        (status = 202, description = "Stored; the rows are imported in the background", body = BatchView),
        (status = 400, description = "Bad query parameters or header"),
        (status = 401, description = "No or invalid credential"),
        (status = 403, description = "Without the scope"),
        (status = 413, description = "Over 256 MiB"),
        (status = 415, description = "Neither text/csv nor application/x-ndjson"),
        (status = 422, description = "The upload broke off"),
        (status = 429, description = "The API key's rate limit is reached"),
        (status = 503, description = "A backend is down; retry later"),
        (status = 504, description = "The service did not answer in time")
    ),
    security(("bearer" = ["orders:write"]), ("api_key" = ["orders:write"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn import(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let mut dry_run = false;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("dry_run", "true") => dry_run = true,
            ("dry_run", "false") => dry_run = false,
            ("dry_run", _) => return Err(Error::Invalid(vec![field("dry_run", "must be true or false")])),
            (other, _) => return Err(Error::Invalid(vec![field(other, "unknown query parameter")])),
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match content_type.split(';').next().unwrap_or("").trim() {
        "text/csv" => "csv",
        "application/x-ndjson" | "application/jsonl" => "jsonl",
        _ => return Err(Error::UnsupportedFile),
    };
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => String::new(),
        Some(Ok(key)) if (1..=255).contains(&key.len()) && key.bytes().all(|b| (b'!'..=b'~').contains(&b)) => {
            key.to_owned()
        }
        Some(_) => {
            return Err(Error::InvalidHeader {
                header: "Idempotency-Key",
                message: "must be 1 to 255 visible ASCII characters",
            });
        }
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_FILE_BYTES)
    {
        return Err(Error::PayloadTooLarge { limit: MAX_FILE_BYTES as usize });
    }
    let start = pb::ImportBatchChunk {
        part: Some(Part::Start(pb::BatchStart {
            tenant: partner.tenant,
            format: format.into(),
            idempotency_key,
            dry_run,
        })),
    };
    // The file goes on as it arrives; a body that breaks off sends no
    // `end`, and the process tier keeps nothing of it.
    let broke_off = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, seen_stall) = (broke_off.clone(), stalled.clone());
    let chunks = body
        .into_data_stream()
        .take_while(move |chunk| {
            if let Err(err) = chunk {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
                seen_stall.store(crate::body::stalled(err), std::sync::atomic::Ordering::Relaxed);
            }
            std::future::ready(chunk.is_ok())
        })
        .filter_map(|chunk| std::future::ready(chunk.ok().filter(|c| !c.is_empty())))
        .map(|chunk| pb::ImportBatchChunk { part: Some(Part::Chunk(chunk.to_vec())) });
    // Polled only once every chunk has gone.
    let end = futures_util::stream::once(async move {
        (!broke_off.load(std::sync::atomic::Ordering::Relaxed))
            .then_some(pb::ImportBatchChunk { part: Some(Part::End(true)) })
    })
    .filter_map(std::future::ready);
    let stream = futures_util::stream::once(std::future::ready(start)).chain(chunks).chain(end);
    // The file arrives at the client's pace: its own deadline, not a
    // call's. A client that stops sending is cut off by the listener's
    // `request_body_timeout` instead.
    let mut request = tonic::Request::new(stream);
    request.set_timeout(UPLOAD_DEADLINE);
    let batch = client(&upstreams).import_batch(request).await.map_err(|status| {
        if stalled.load(std::sync::atomic::Ordering::Relaxed) {
            Error::BodyTimeout
        } else if status.code() == tonic::Code::InvalidArgument && status.message().starts_with("file: is over") {
            Error::PayloadTooLarge { limit: MAX_FILE_BYTES as usize }
        } else {
            Error::Process(status)
        }
    })?;
    Ok((StatusCode::ACCEPTED, Json(BatchView::from(batch.into_inner()))).into_response())
}

fn field(name: &str, message: &str) -> FieldError {
    FieldError { field: name.to_owned(), message: message.to_owned() }
}

/// An order file and how far its import got: rows, orders accepted, rows rejected and quarantined.
#[utoipa::path(get, path = "/order-batches/{id}", tag = "partner", operation_id = "get_order_batch",
    params(("id" = String, Path, description = "Batch id, bat_...")),
    responses(
        (status = 200, description = "Done", body = BatchView),
        (status = 404, description = "No such batch of this tenant"),
        Refusals
    ),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
pub async fn get(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Json<BatchView>, Error> {
    let found = client(&upstreams)
        .get_batch(pb::GetBatchRequest { tenant: partner.tenant, id })
        .await
        .map_err(Error::lookup("no such order batch"))?;
    Ok(Json(found.into_inner().into()))
}

/// One result per row of an order file, in row order: JSON lines, or CSV
/// with `Accept: text/csv` (`row,external_ref,status,order_id,errors`).
#[utoipa::path(get, path = "/order-batches/{id}/results", tag = "partner", operation_id = "list_order_batch_results",
    params(("id" = String, Path, description = "Batch id, bat_...")),
    responses(
        (status = 200, description = "Every row's result", body = RowResultView, content_type = "application/x-ndjson"),
        (status = 401, description = "No or invalid credential"),
        (status = 403, description = "Without the scope"),
        (status = 404, description = "No such batch of this tenant"),
        (status = 429, description = "The API key's rate limit is reached"),
        (status = 503, description = "A backend is down; retry later"),
        (status = 504, description = "The service did not answer in time")
    ),
    security(("bearer" = ["orders:read"]), ("api_key" = ["orders:read"]))
)]
pub async fn results(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    // Streamed page by page: a file's results need not fit in memory.
    let mut client = client(&upstreams);
    let request = |after_row| pb::ListBatchResultsRequest {
        tenant: partner.tenant.clone(),
        id: id.clone(),
        after_row,
        limit: 1000,
    };
    // The first page answers 404 for another tenant's batch before anything is sent.
    let first = client.list_batch_results(request(0)).await.map_err(Error::lookup("no such order batch"))?.into_inner();
    let header_line =
        csv.then(|| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"row,external_ref,status,order_id,errors\n")));
    let pages = futures_util::stream::unfold(Some((first.results, client, request(0))), move |state| async move {
        let (rows, mut client, mut next) = state?;
        if rows.is_empty() {
            return None;
        }
        next.after_row = rows.last().map_or(0, |r| r.row);
        let mut text = String::new();
        for row in rows {
            let view = RowResultView::from(row);
            text.push_str(&if csv { csv_line(&view) } else { serde_json::to_string(&view).unwrap_or_default() + "\n" });
        }
        let following = match client.list_batch_results(next.clone()).await {
            Ok(page) => Some((page.into_inner().results, client, next)),
            Err(status) => {
                tracing::warn!(error = %status, "batch results cut short");
                None
            }
        };
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(text)), following))
    });
    let body = Body::from_stream(futures_util::stream::iter(header_line).chain(pages));
    let content_type = if csv { "text/csv; charset=utf-8" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

fn csv_line(r: &RowResultView) -> String {
    let errors = r
        .errors
        .iter()
        .map(|e| match &e.rule {
            Some(rule) => format!("{} ({rule}): {}", e.field, e.message),
            None => format!("{}: {}", e.field, e.message),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    format!(
        "{},{},{},{},{}\n",
        r.row,
        quote(&r.external_ref),
        r.status,
        r.order_id.as_deref().unwrap_or(""),
        quote(&errors)
    )
}
