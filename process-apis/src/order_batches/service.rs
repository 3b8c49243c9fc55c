//! `order_batches.v1.OrderBatchService`: order files in (streamed, never
//! held whole in memory), their status and row results, and the
//! quarantine for operators.

use std::{io::Read, sync::Arc};

use bytes::Bytes;
use erp_connect_proto::{
    acting,
    order_batches::v1::{self as pb, import_batch_chunk::Part},
};
use futures_util::StreamExt;
use platform::audit;
use sha2::Digest;
use tonic::{Request, Response, Status, Streaming};

use super::{
    Error, Shared, import, metrics,
    store::{BatchRow, PendingRow, Quarantined, Reason},
};
use crate::{
    order_to_cash::clock,
    partners::records::{self, Format},
};

/// Rows stored per transaction while a file arrives.
const ROWS_PER_WRITE: usize = 500;

/// The service over the shared batch state.
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(vec![(field.into(), message.into())])
}

fn batch(b: &BatchRow) -> pb::Batch {
    pb::Batch {
        id: b.id.clone(),
        tenant: b.tenant.clone(),
        status: if b.status == "receiving" { "importing".into() } else { b.status.clone() },
        dry_run: b.dry_run,
        rows: b.rows,
        orders_accepted: b.orders_accepted,
        rows_rejected: b.rows_rejected,
        rows_quarantined: b.rows_quarantined,
        created_at_ms: b.created_at,
        finished_at_ms: b.finished_at,
        sha256: b.sha256.clone(),
    }
}

fn reasons(reasons: &[Reason]) -> Vec<pb::RowError> {
    reasons
        .iter()
        .map(|r| pb::RowError { field: r.field.clone(), rule: r.rule.clone(), message: r.message.clone() })
        .collect()
}

fn quarantined(q: &Quarantined) -> pb::Quarantined {
    pb::Quarantined {
        id: q.id.clone(),
        tenant: q.tenant.clone(),
        source: q.source.clone(),
        stage: q.stage.clone(),
        external_ref: q.external_ref.clone(),
        records: q.records.clone(),
        reasons: reasons(&q.reasons),
        status: q.status.clone(),
        created_at_ms: q.created_at,
        resolved_at_ms: q.resolved_at,
        resolved_by: q.resolved_by.clone(),
        resolution: q.resolution.clone(),
        order_id: q.order_id.clone(),
    }
}

/// The file's bytes as they arrive, for the blocking parser.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Stores a file arriving as `parts` (chunks, then `end`) as a new batch
/// for `start`'s tenant, and queues it for import; or, when the tenant
/// imported the same file (or key) before, answers with that batch.
pub(super) async fn receive_file(
    shared: &Shared,
    start: &pb::BatchStart,
    format: Format,
    parts: impl futures_util::Stream<Item = Result<Part, Error>> + Send + Unpin + 'static,
) -> Result<BatchRow, Error> {
    let row = BatchRow {
        id: format!("bat_{}", ulid::Ulid::new()),
        tenant: start.tenant.clone(),
        format: start.format.clone(),
        dry_run: start.dry_run,
        status: "receiving".into(),
        created_at: clock::now_ms(),
        ..BatchRow::default()
    };
    shared.store.create(&row).await?;
    let sha256 = match receive(shared, &row, format, parts).await {
        Ok(sha) => sha,
        Err(err) => {
            let _ = shared.store.drop_batch(&row.id).await;
            return Err(err);
        }
    };
    // A dry run never stands in the way of the real import of the file.
    let key = match (start.idempotency_key.as_str(), start.dry_run) {
        (_, true) => format!("dry-run:{}", row.id),
        ("", false) => format!("sha256:{sha256}"),
        (key, false) => format!("key:{key}"),
    };
    if let Some(earlier) = shared.store.received(&row, &key, &sha256).await? {
        tracing::info!(batch = %earlier.id, tenant = %row.tenant, "the same file again: nothing imported");
        return Ok(earlier);
    }
    shared.wake.notify_one();
    let stored = shared.store.batch("", &row.id).await?.ok_or(Error::NotFound("batch"))?;
    tracing::info!(batch = %stored.id, tenant = %stored.tenant, rows = stored.rows, dry_run = stored.dry_run, "order file received");
    Ok(stored)
}

/// Receives the file into `batch`'s rows; returns its SHA-256.
async fn receive(
    shared: &Shared,
    batch: &BatchRow,
    format: Format,
    mut parts: impl futures_util::Stream<Item = Result<Part, Error>> + Send + Unpin + 'static,
) -> Result<String, Error> {
    let mapping = shared.partners.mapping(&batch.tenant).cloned().unwrap_or_default();
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (rows_tx, mut rows_rx) = tokio::sync::mpsc::channel::<PendingRow>(ROWS_PER_WRITE * 2);
    // CSV parsing is blocking work: on a thread of its own, fed chunk by chunk.
    let parser = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader { chunks: bytes_rx, current: Bytes::new() };
        for (n, record) in records::read(reader, format).enumerate() {
            // Rows group by the reference as the transform, if any, makes it.
            let external_ref = record
                .as_ref()
                .map(|r| match mapping.transform(r) {
                    Ok(t) => mapping.field(&t, "external_ref").to_owned(),
                    Err(_) => mapping.field(r, "external_ref").to_owned(),
                })
                .unwrap_or_default();
            let record = record.map(|r| serde_json::to_string(&r).unwrap_or_default());
            let row = PendingRow { row: n as i64 + 1, external_ref, record };
            if rows_tx.blocking_send(row).is_err() {
                return;
            }
        }
    });
    let max = shared.max_file_bytes;
    let pump = async move {
        let mut sha = sha2::Sha256::new();
        let mut size: u64 = 0;
        let mut ended = false;
        while let Some(part) = parts.next().await {
            match part? {
                Part::Chunk(chunk) => {
                    size += chunk.len() as u64;
                    if size > max {
                        return Err(invalid("file", format!("is over {max} bytes")));
                    }
                    sha.update(&chunk);
                    if bytes_tx.send(Bytes::from(chunk)).await.is_err() {
                        break; // the rows could not be stored; that error is reported
                    }
                }
                Part::End(_) => {
                    ended = true;
                    break;
                }
                Part::Start(_) => return Err(invalid("start", "only the first message starts the file")),
            }
        }
        if !ended {
            return Err(invalid("file", "the upload broke off before the end of the file"));
        }
        Ok(sha.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let store = shared.store.clone();
    let id = batch.id.clone();
    let stored = async move {
        let mut rows = Vec::with_capacity(ROWS_PER_WRITE);
        while let Some(row) = rows_rx.recv().await {
            rows.push(row);
            if rows.len() == ROWS_PER_WRITE {
                store.add_rows(&id, &rows).await?;
                rows.clear();
            }
        }
        store.add_rows(&id, &rows).await?;
        Ok::<(), Error>(())
    };
    let (pumped, stored) = tokio::join!(pump, stored);
    let _ = parser.await;
    stored?;
    pumped
}

#[tonic::async_trait]
impl pb::order_batch_service_server::OrderBatchService for Service {
    async fn import_batch(
        &self,
        request: Request<Streaming<pb::ImportBatchChunk>>,
    ) -> Result<Response<pb::Batch>, Status> {
        let mut stream = request.into_inner();
        let start = match stream.message().await? {
            Some(pb::ImportBatchChunk { part: Some(Part::Start(start)) }) => start,
            _ => return Err(invalid("start", "the first message must start the file").into()),
        };
        let mut errors = Vec::new();
        if start.tenant.trim().is_empty() || start.tenant.len() > 200 {
            errors.push(("tenant".into(), "a batch belongs to one partner tenant".into()));
        }
        let format = match start.format.as_str() {
            "csv" => Format::Csv,
            "jsonl" => Format::JsonLines,
            _ => {
                errors.push(("format".into(), "must be csv or jsonl".into()));
                Format::Csv
            }
        };
        if start.idempotency_key.len() > 255 {
            errors.push(("idempotency_key".into(), "must be at most 255 characters".into()));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors).into());
        }
        let parts = stream.map(|message| match message {
            Ok(pb::ImportBatchChunk { part: Some(part) }) => Ok(part),
            Ok(_) => Err(invalid("file", "a message without a part")),
            Err(status) => Err(invalid("file", format!("the upload broke off: {}", status.message()))),
        });
        let stored = receive_file(&self.shared, &start, format, parts).await?;
        Ok(Response::new(batch(&stored)))
    }

    async fn get_batch(&self, request: Request<pb::GetBatchRequest>) -> Result<Response<pb::Batch>, Status> {
        let req = request.into_inner();
        let found = self.shared.store.batch(&req.tenant, &req.id).await.map_err(Error::from)?;
        Ok(Response::new(batch(&found.ok_or(Error::NotFound("batch"))?)))
    }

    async fn list_batch_results(
        &self,
        request: Request<pb::ListBatchResultsRequest>,
    ) -> Result<Response<pb::ListBatchResultsResponse>, Status> {
        let req = request.into_inner();
        if !(0..=10_000).contains(&req.limit) {
            return Err(invalid("limit", "must be between 1 and 10000").into());
        }
        self.shared.store.batch(&req.tenant, &req.id).await.map_err(Error::from)?.ok_or(Error::NotFound("batch"))?;
        let limit = if req.limit == 0 { 1000 } else { i64::from(req.limit) };
        let rows = self.shared.store.results(&req.id, req.after_row, limit).await.map_err(Error::from)?;
        Ok(Response::new(pb::ListBatchResultsResponse {
            results: rows
                .into_iter()
                .map(|r| pb::RowResult {
                    row: r.row,
                    external_ref: r.external_ref,
                    status: r.status,
                    order_id: r.order_id,
                    errors: reasons(&r.errors),
                })
                .collect(),
        }))
    }

    async fn list_quarantine(
        &self,
        request: Request<pb::ListQuarantineRequest>,
    ) -> Result<Response<pb::ListQuarantineResponse>, Status> {
        let req = request.into_inner();
        let status = if req.status.is_empty() { "open" } else { req.status.as_str() };
        let mut errors = Vec::new();
        if !["open", "replayed", "discarded", "any"].contains(&status) {
            errors.push(("status".to_owned(), "must be open, replayed, discarded or any".to_owned()));
        }
        if !(0..=100).contains(&req.page_size) {
            errors.push(("page_size".into(), "must be between 1 and 100".into()));
        }
        for (field, value) in [("source", &req.source), ("reason", &req.reason), ("page_token", &req.page_token)] {
            if value.len() > 200 {
                errors.push((field.into(), "is too long".into()));
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors).into());
        }
        let size = if req.page_size == 0 { 20 } else { i64::from(req.page_size) };
        let mut entries = self
            .shared
            .store
            .quarantine(&req.tenant, &req.source, &req.reason, status, &req.page_token, size + 1)
            .await
            .map_err(Error::from)?;
        let next_page_token = if entries.len() as i64 > size {
            entries.truncate(size as usize);
            entries.last().map(|e| e.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListQuarantineResponse {
            entries: entries.iter().map(quarantined).collect(),
            next_page_token,
        }))
    }

    async fn get_quarantined(
        &self,
        request: Request<pb::GetQuarantinedRequest>,
    ) -> Result<Response<pb::Quarantined>, Status> {
        let req = request.into_inner();
        let found = self.shared.store.quarantined(&req.tenant, &req.id).await.map_err(Error::from)?;
        Ok(Response::new(quarantined(&found.ok_or(Error::NotFound("quarantine entry"))?)))
    }

    async fn replay_quarantined(
        &self,
        request: Request<pb::ReplayQuarantinedRequest>,
    ) -> Result<Response<pb::Quarantined>, Status> {
        let caller = acting::of(&request);
        let req = request.into_inner();
        let mut entry = self
            .shared
            .store
            .quarantined(&req.tenant, &req.id)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("quarantine entry"))?;
        if entry.status != "open" {
            return Err(Error::Conflict(format!("the entry is {} already", entry.status)).into());
        }
        let texts = if req.records.is_empty() { entry.records.clone() } else { req.records.clone() };
        let mut records = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
                Ok(object) => records.push(Ok(object
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect())),
                Err(_) => return Err(invalid(&format!("records[{i}]"), "is not a JSON object").into()),
            }
        }
        // Empty when the corrected record does not name its order under our
        // name: the import then takes it from the mapped record.
        let mapping = self.shared.partners.mapping_or_identity(&entry.tenant);
        let external_ref = match records.first().and_then(|r: &Result<_, String>| r.as_ref().ok()) {
            Some(r) if !mapping.has_transform() => {
                Some(mapping.field(r, "external_ref").to_owned()).filter(|r| !r.is_empty())
            }
            _ => None,
        }
        .unwrap_or_else(|| if mapping.has_transform() { String::new() } else { entry.external_ref.clone() });
        let source = format!("quarantine:{}", entry.id);
        let decided = import::decide(&self.shared, &entry.tenant, &source, &external_ref, &records, false)
            .await
            .map_err(|e| match e {
                import::Error::Store(err) => Error::Store(err),
                other => Error::Unavailable(other.to_string()),
            })?;
        if decided.status != "accepted" {
            // Still refused: the entry stays open; the reasons say why.
            let reasons = decided.quarantine.map(|q| q.reasons).unwrap_or_default();
            let fields = reasons
                .iter()
                .map(|r| {
                    let message =
                        if r.rule.is_empty() { r.message.clone() } else { format!("{}: {}", r.rule, r.message) };
                    (if r.field.is_empty() { "records".to_owned() } else { r.field.clone() }, message)
                })
                .collect();
            return Err(Error::Invalid(fields).into());
        }
        entry.status = "replayed".into();
        entry.order_id = decided.order_id;
        entry.resolved_at = clock::now_ms();
        entry.resolved_by = req.operator.clone();
        // "fixed": replayed with an operator's correction; "replayed": as it was.
        let outcome = if req.records.is_empty() { "replayed" } else { "fixed" };
        let audited = audit::Entry {
            actor: if req.operator.is_empty() { &caller } else { &req.operator },
            action: if req.records.is_empty() { "quarantine.replay" } else { "quarantine.fix" },
            object: &entry.id,
            detail: serde_json::json!({ "tenant": entry.tenant, "order_id": entry.order_id }),
        };
        if !self.shared.store.resolve(&entry, &audited).await.map_err(Error::from)? {
            return Err(Error::Conflict("the entry was resolved meanwhile".into()).into());
        }
        metrics::records(&entry.tenant, "batch", outcome, entry.records.len());
        tracing::info!(target: "audit", subject = %req.operator, action = "quarantine.replay", entry = %entry.id, order = %entry.order_id, outcome = "ok", "quarantine");
        Ok(Response::new(quarantined(&entry)))
    }

    async fn discard_quarantined(
        &self,
        request: Request<pb::DiscardQuarantinedRequest>,
    ) -> Result<Response<pb::Quarantined>, Status> {
        let caller = acting::of(&request);
        let req = request.into_inner();
        if req.reason.trim().is_empty() || req.reason.chars().count() > 500 {
            return Err(invalid("reason", "say why, in at most 500 characters").into());
        }
        let mut entry = self
            .shared
            .store
            .quarantined(&req.tenant, &req.id)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound("quarantine entry"))?;
        if entry.status != "open" {
            return Err(Error::Conflict(format!("the entry is {} already", entry.status)).into());
        }
        entry.status = "discarded".into();
        entry.resolution = req.reason.clone();
        entry.resolved_at = clock::now_ms();
        entry.resolved_by = req.operator.clone();
        let audited = audit::Entry {
            actor: if req.operator.is_empty() { &caller } else { &req.operator },
            action: "quarantine.discard",
            object: &entry.id,
            detail: serde_json::json!({ "tenant": entry.tenant, "reason": req.reason }),
        };
        if !self.shared.store.resolve(&entry, &audited).await.map_err(Error::from)? {
            return Err(Error::Conflict("the entry was resolved meanwhile".into()).into());
        }
        metrics::records(&entry.tenant, "batch", "discarded", entry.records.len());
        tracing::info!(target: "audit", subject = %req.operator, action = "quarantine.discard", entry = %entry.id, reason = %req.reason, outcome = "ok", "quarantine");
        Ok(Response::new(quarantined(&entry)))
    }
}
