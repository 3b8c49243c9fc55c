//! Files out: invoices and orders as CSV or JSON lines, for systems that
//! take files (accounting, a data warehouse). Both are read from the
//! outbox, the business events order-to-cash already keeps, so an export
//! holds exactly what happened and nothing is missed or doubled between
//! two exports:
//!
//! - `invoices`: one row per invoice event: `invoice.issued`,
//!   `invoice.credited`, and `order.paid` (every way an invoice gets paid);
//! - `orders`: one row per order event (`order.accepted` ... `order.completed`,
//!   `cancelled`, `rejected`): the order as of that event, so its last row
//!   is where it stands.
//!
//! [`run`] writes what is new since the last export to `files.outbox_dir`
//! every `files.export_interval`, as `<kind>-<first>-<last>.<csv|jsonl>`
//! (outbox positions, zero-padded so names sort in order), written under a
//! hidden temporary name and renamed when complete: a file there is whole.
//! Where an export got to is kept in the store (`export:<kind>`), so a
//! restart goes on where it stopped; one replica exports at a time. Events
//! younger than `files.export_settle` (10 s) wait for the next run, so a transaction that
//! committed late cannot slip behind the cursor. `erp-connect export`
//! writes the same rows for a time range on demand.

use std::{path::Path, time::Duration};

use erp_connect_proto::events::{Envelope, OrderData};
use platform::metrics::facade::{counter, describe_counter};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::order_to_cash::{
    clock,
    store::{self, OutboxEvent, Store},
};

/// Events written less than this long ago are left for the next run
/// (default of `files.export_settle`).
pub const SETTLE: Duration = Duration::from_secs(10);
/// Events read from the store at a time.
const PAGE: i64 = 1_000;

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Invoices issued, credited and paid.
    Invoices,
    /// Every order's status changes.
    Orders,
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Format {
    /// CSV with a header row.
    #[serde(rename = "csv")]
    Csv,
    /// One JSON object per line.
    #[serde(rename = "jsonl")]
    JsonLines,
}

impl Kind {
    /// `invoices` or `orders`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Invoices => "invoices",
            Self::Orders => "orders",
        }
    }

    fn events(self) -> &'static [&'static str] {
        match self {
            Self::Invoices => &["invoice.issued", "invoice.credited", "order.paid"],
            Self::Orders => &[
                "order.accepted",
                "order.confirmed",
                "order.paid",
                "order.shipped",
                "order.completed",
                "order.cancelled",
                "order.rejected",
            ],
        }
    }
}

impl Format {
    /// The file name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::JsonLines => "jsonl",
        }
    }
}

/// One exported row (the CSV header is these names, in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The event's id: unique, for consumers that load a file twice.
    pub event_id: String,
    /// `invoice.issued`, `order.confirmed`, ...
    pub event: String,
    /// When it happened, RFC 3339.
    pub occurred_at: String,
    /// Whose order.
    pub tenant: String,
    /// Our order id.
    pub order_id: String,
    /// The ERP invoice number, once posted.
    pub invoice: Option<String>,
    /// The ERP sales order number, once confirmed.
    pub sales_order: Option<String>,
    /// The ERP customer.
    pub customer_id: String,
    /// ISO 4217.
    pub currency: String,
    /// The order's total, a decimal string.
    pub total: String,
    /// The order's status after the event.
    pub status: String,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn row(event: &OutboxEvent) -> Option<Row> {
    let envelope: Envelope = serde_json::from_str(&event.payload).ok()?;
    let data: OrderData = serde_json::from_value(envelope.data).ok()?;
    Some(Row {
        event_id: envelope.id,
        event: envelope.event_type,
        occurred_at: envelope.occurred_at,
        tenant: envelope.tenant.unwrap_or_default(),
        order_id: data.order_id,
        invoice: data.invoice,
        sales_order: data.sales_order,
        customer_id: data.customer_id,
        currency: data.currency,
        total: data.total,
        status: data.status,
    })
}

/// Rows as the format writes them; `header` for the first page of a CSV.
fn encode(rows: &[Row], format: Format, header: bool) -> Vec<u8> {
    match format {
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().has_headers(header).from_writer(Vec::new());
            for row in rows {
                // Serializing plain strings into memory cannot fail.
                let _ = writer.serialize(row);
            }
            writer.into_inner().unwrap_or_default()
        }
        Format::JsonLines => {
            let mut out = Vec::new();
            for row in rows {
                let _ = serde_json::to_writer(&mut out, row);
                out.push(b'\n');
            }
            out
        }
    }
}

/// What one export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// The outbox positions of the first and last event, when any.
    pub range: Option<(i64, i64)>,
}

/// Which events an export takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// After this outbox position (0: from the start).
    pub after: i64,
    /// Written at or after this time (unix ms).
    pub from: i64,
    /// Written at or before this time (unix ms).
    pub to: i64,
}

/// Writes `kind`'s rows of the events in `span` to `out` (`path` names it
/// in errors). A CSV gets its header even when empty.
pub async fn write(
    store: &Store,
    kind: Kind,
    format: Format,
    span: Span,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    path: &str,
) -> Result<Written, Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let Span { after, from, to } = span;
    let mut written = Written { rows: 0, range: None };
    let mut cursor = after;
    let mut first_page = true;
    loop {
        let events = store.events_after(kind.events(), cursor, from, to, PAGE).await?;
        let rows: Vec<Row> = events.iter().filter_map(|(_, e)| row(e)).collect();
        if first_page || !rows.is_empty() {
            out.write_all(&encode(&rows, format, first_page)).await.map_err(io)?;
        }
        first_page = false;
        written.rows += rows.len() as u64;
        if let (Some((first, _)), Some((last, _))) = (events.first(), events.last()) {
            written.range = Some((written.range.map_or(*first, |(f, _)| f), *last));
            cursor = *last;
        }
        if (events.len() as i64) < PAGE {
            break;
        }
    }
    out.flush().await.map_err(io)?;
    Ok(written)
}

/// Exports what is new of `kind` to `dir`, up to events `settle` old;
/// `Ok(None)` when nothing is.
pub async fn export_new(
    store: &Store,
    kind: Kind,
    format: Format,
    dir: &Path,
    settle: Duration,
) -> Result<Option<Written>, Error> {
    let name = format!("export:{}", kind.name());
    let after: i64 = store.cursor(&name).await?.parse().unwrap_or(0);
    let to = clock::now_ms() - settle.as_millis() as i64;
    let temp = dir.join(format!(".{}-{}.tmp", kind.name(), ulid::Ulid::new()));
    let temp_name = temp.display().to_string();
    let io = |path: &Path, source| Error::Io { path: path.display().to_string(), source };
    tokio::fs::create_dir_all(dir).await.map_err(|e| io(dir, e))?;
    let mut file = tokio::fs::File::create(&temp).await.map_err(|e| io(&temp, e))?;
    let written = match write(store, kind, format, Span { after, from: 0, to }, &mut file, &temp_name).await {
        Ok(written) => written,
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err);
        }
    };
    file.sync_all().await.map_err(|e| io(&temp, e))?;
    drop(file);
    let Some((first, last)) = written.range else {
        let _ = tokio::fs::remove_file(&temp).await;
        return Ok(None);
    };
    let path = dir.join(format!("{}-{first:012}-{last:012}.{}", kind.name(), format.extension()));
    tokio::fs::rename(&temp, &path).await.map_err(|e| io(&path, e))?;
    // The file first, then the cursor: a crash in between writes the same
    // file (same name, same rows) again, never loses one.
    store.set_cursor(&name, &last.to_string()).await?;
    counter!("erp_connect_export_files_total", "kind" => kind.name()).increment(1);
    counter!("erp_connect_export_rows_total", "kind" => kind.name()).increment(written.rows);
    tracing::info!(kind = kind.name(), rows = written.rows, file = %path.display(), "export written");
    Ok(Some(written))
}

/// What the scheduled exports do (`[files]`).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// What is exported.
    pub kinds: Vec<Kind>,
    /// How.
    pub format: Format,
    /// Where.
    pub dir: std::path::PathBuf,
    /// How often.
    pub interval: Duration,
    /// How old an event must be.
    pub settle: Duration,
}

/// Runs `schedule` until `shutdown`.
pub async fn run(store: Store, schedule: Schedule, shutdown: CancellationToken) {
    describe_counter!("erp_connect_export_files_total", "Export files written to files.outbox_dir, per kind.");
    describe_counter!("erp_connect_export_rows_total", "Rows written to export files, per kind.");
    describe_counter!(
        "erp_connect_export_failures_total",
        "Scheduled exports that failed (tried again next time), per kind."
    );
    // From 0, so that the first failure after a start is an increase.
    for kind in &schedule.kinds {
        counter!("erp_connect_export_failures_total", "kind" => kind.name()).increment(0);
    }
    loop {
        match store.try_exporter_lock().await {
            Ok(Some(_lock)) => {
                for kind in &schedule.kinds {
                    if let Err(err) = export_new(&store, *kind, schedule.format, &schedule.dir, schedule.settle).await {
                        counter!("erp_connect_export_failures_total", "kind" => kind.name()).increment(1);
                        tracing::warn!(kind = kind.name(), error = %err, "export failed; tried again next time");
                    }
                }
            }
            Ok(None) => tracing::debug!("another replica exports"),
            Err(err) => tracing::warn!(error = %err, "cannot take the exporter lock"),
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
