//! Batches, their rows and the quarantine in the process tier's store.
//! A batch being imported is leased to one replica; a dead replica's batch
//! is taken over when the lease runs out, and rows already done stay done.

use platform::{
    audit,
    database::{Database, Dialect},
};
use serde::{Deserialize, Serialize};
use sqlx::{Row, any::AnyRow};

/// Errors of the store; all worth a retry.
pub type Error = sqlx::Error;

/// A batch as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchRow {
    /// `bat_` + ULID.
    pub id: String,
    /// The partner tenant.
    pub tenant: String,
    /// The file's SHA-256, hex (empty while receiving).
    pub sha256: String,
    /// `csv` or `jsonl`.
    pub format: String,
    /// Nothing is created.
    pub dry_run: bool,
    /// `receiving`, `importing`, `done`.
    pub status: String,
    /// Data rows in the file.
    pub rows: i64,
    /// Orders created (or found: a replayed reference).
    pub orders_accepted: i64,
    /// Rows refused (dry run: every row that would fail).
    pub rows_rejected: i64,
    /// Rows set aside in the quarantine.
    pub rows_quarantined: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; 0 until done.
    pub finished_at: i64,
}

/// One reason a row or an order failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The field, in our names (`quantity`, `ship_to_country`, ...); empty
    /// for the record as a whole.
    pub field: String,
    /// The broken rule, when one is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// For the partner.
    pub message: String,
}

/// A row's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRow {
    /// 1 is the first data row.
    pub row: i64,
    /// As the partner wrote it.
    pub external_ref: String,
    /// `pending`, `accepted`, `valid`, `rejected`, `quarantined`.
    pub status: String,
    /// The order, when accepted.
    pub order_id: String,
    /// Why not.
    pub errors: Vec<Reason>,
}

impl ResultRow {
    /// The row as the partner API's results give it: `{"row",
    /// "external_ref", "status", "order_id"?, "errors": [{"field",
    /// "rule"?, "message"}]}`.
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::json!({
            "row": self.row,
            "external_ref": self.external_ref,
            "status": self.status,
            "errors": self.errors,
        });
        if !self.order_id.is_empty() {
            line["order_id"] = self.order_id.clone().into();
        }
        line.to_string()
    }
}

/// A row waiting to be imported.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Its number.
    pub row: i64,
    /// Its order's reference.
    pub external_ref: String,
    /// The record (JSON object text), or why the line is none.
    pub record: Result<String, String>,
}

/// A quarantine entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quarantined {
    /// `qua_` + ULID.
    pub id: String,
    /// The partner tenant.
    pub tenant: String,
    /// e.g. `batch:bat_...`.
    pub source: String,
    /// `mapping`, `validation`, `order`.
    pub stage: String,
    /// The order's reference.
    pub external_ref: String,
    /// The original records, JSON objects.
    pub records: Vec<String>,
    /// Why.
    pub reasons: Vec<Reason>,
    /// `open`, `replayed`, `discarded`.
    pub status: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; 0 while open.
    pub resolved_at: i64,
    /// The operator who resolved it.
    pub resolved_by: String,
    /// Why it was discarded.
    pub resolution: String,
    /// The order its replay created.
    pub order_id: String,
}

/// What became of an order's rows.
pub struct Outcome<'a> {
    /// The rows.
    pub rows: &'a [i64],
    /// `accepted`, `valid`, `rejected`, `quarantined`.
    pub status: &'static str,
    /// The order, when accepted.
    pub order_id: &'a str,
    /// Per row (same order as `rows`), why not.
    pub errors: Vec<Vec<Reason>>,
    /// The quarantine entry to write with it.
    pub quarantine: Option<Quarantined>,
}

/// The batch and quarantine tables.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

const BATCH_COLUMNS: &str = "id, tenant, sha256, format, dry_run, status, rows, orders_accepted, rows_rejected, \
     rows_quarantined, created_at, finished_at";
const QUARANTINE_COLUMNS: &str = "id, tenant, source, stage, external_ref, records, reasons, status, created_at, \
     resolved_at, resolved_by, resolution, order_id";

impl Store {
    /// The tables of `db` (migrated with the saga store).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// A new batch, receiving its file.
    pub async fn create(&self, batch: &BatchRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO order_batches (id, tenant, idempotency_key, sha256, format, dry_run, status, created_at) \
             VALUES ($1, $2, $1, '', $3, $4, 'receiving', $5)",
        )
        .bind(&batch.id)
        .bind(&batch.tenant)
        .bind(&batch.format)
        .bind(i64::from(batch.dry_run))
        .bind(batch.created_at)
        .execute(&mut *self.db.writer().await?)
        .await?;
        Ok(())
    }

    /// Stores received rows.
    pub async fn add_rows(&self, batch_id: &str, rows: &[PendingRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_concurrent().await?;
        for row in rows {
            let (record, status, errors) = match &row.record {
                Ok(record) => (record.clone(), "pending", "[]".to_owned()),
                // A line that is no record is rejected as it arrives.
                Err(why) => (
                    String::new(),
                    "rejected",
                    serde_json::to_string(&[Reason { message: why.clone(), ..Reason::default() }]).unwrap_or_default(),
                ),
            };
            sqlx::query(
                "INSERT INTO order_batch_rows (batch_id, row_no, external_ref, record, status, errors) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(batch_id)
            .bind(row.row)
            .bind(&row.external_ref)
            .bind(record)
            .bind(status)
            .bind(errors)
            .execute(&mut *tx)
            .await?;
        }
        let rejected = rows.iter().filter(|r| r.record.is_err()).count() as i64;
        sqlx::query("UPDATE order_batches SET rows = rows + $2, rows_rejected = rows_rejected + $3 WHERE id = $1")
            .bind(batch_id)
            .bind(rows.len() as i64)
            .bind(rejected)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The file is in: the batch takes its key and goes to import, or, when
    /// the tenant imported this key before, is dropped for that batch,
    /// which is returned.
    pub async fn received(&self, batch: &BatchRow, key: &str, sha256: &str) -> Result<Option<BatchRow>, Error> {
        if let Some(earlier) = self.by_key(&batch.tenant, key).await? {
            self.drop_batch(&batch.id).await?;
            return Ok(Some(earlier));
        }
        let taken = sqlx::query(
            "UPDATE order_batches SET idempotency_key = $2, sha256 = $3, status = 'importing' WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM order_batches o WHERE o.tenant = $4 AND o.idempotency_key = $2)",
        )
        .bind(&batch.id)
        .bind(key)
        .bind(sha256)
        .bind(&batch.tenant)
        .execute(&mut *self.db.writer().await?)
        .await;
        match taken {
            Ok(done) if done.rows_affected() == 1 => Ok(None),
            // Another request with the key got there first.
            Ok(_) | Err(sqlx::Error::Database(_)) => {
                self.drop_batch(&batch.id).await?;
                self.by_key(&batch.tenant, key).await
            }
            Err(err) => Err(err),
        }
    }

    async fn by_key(&self, tenant: &str, key: &str) -> Result<Option<BatchRow>, Error> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM order_batches WHERE tenant = $1 AND idempotency_key = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(key).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(batch).transpose()
    }

    /// Removes a batch and its rows (a duplicate, or a file that failed to arrive).
    pub async fn drop_batch(&self, id: &str) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        sqlx::query("DELETE FROM order_batch_rows WHERE batch_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM order_batches WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One batch of `tenant` (empty: any).
    pub async fn batch(&self, tenant: &str, id: &str) -> Result<Option<BatchRow>, Error> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM order_batches WHERE id = $1 AND ($2 = '' OR tenant = $2)");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(tenant).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(batch).transpose()
    }

    /// Leases a batch to import to `owner` until `lease_until`: one whose
    /// lease ran out, or one `owner` holds already (its import paused on an
    /// error resumes after the pause, not after the lease).
    pub async fn claim(&self, owner: &str, now: i64, lease_until: i64) -> Result<Option<BatchRow>, Error> {
        let lock = match self.db.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE order_batches SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM order_batches \
             WHERE status = 'importing' AND (lease_until < $3 OR lease_owner = $1) ORDER BY created_at LIMIT 1{lock}) \
             RETURNING {BATCH_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .fetch_optional(&mut *self.db.writer().await?)
            .await?;
        row.as_ref().map(batch).transpose()
    }

    /// Keeps the lease on `id` until `lease_until` if `owner` holds it.
    pub async fn extend(&self, id: &str, owner: &str, lease_until: i64) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE order_batches SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(owner)
            .bind(lease_until)
            .execute(&mut *self.db.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pending rows of a batch, in order of their order's reference, after
    /// (`external_ref`, row) `after`. The row-value comparison is what lets
    /// SQLite and PostgreSQL seek the index instead of scanning the batch
    /// from its start for every page.
    pub async fn pending(&self, id: &str, after: (&str, i64), limit: i64) -> Result<Vec<PendingRow>, Error> {
        let rows = sqlx::query(
            "SELECT row_no, external_ref, record FROM order_batch_rows WHERE batch_id = $1 AND status = 'pending' \
             AND (external_ref, row_no) > ($2, $3) ORDER BY external_ref, row_no LIMIT $4",
        )
        .bind(id)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(PendingRow { row: r.try_get(0)?, external_ref: r.try_get(1)?, record: Ok(r.try_get(2)?) }))
            .collect()
    }

    /// Records what became of an order's rows (and its quarantine entry),
    /// and counts it in the batch.
    pub async fn settle(&self, batch_id: &str, outcome: &Outcome<'_>) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        for (row, errors) in outcome.rows.iter().zip(&outcome.errors) {
            sqlx::query(
                "UPDATE order_batch_rows SET status = $3, order_id = $4, errors = $5 WHERE batch_id = $1 AND row_no = $2",
            )
            .bind(batch_id)
            .bind(row)
            .bind(outcome.status)
            .bind(outcome.order_id)
            .bind(serde_json::to_string(errors).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        let n = outcome.rows.len() as i64;
        let (accepted, rejected, quarantined) = match outcome.status {
            "accepted" | "valid" => (1, 0, 0),
            "quarantined" => (0, 0, n),
            _ => (0, n, 0),
        };
        sqlx::query(
            "UPDATE order_batches SET orders_accepted = orders_accepted + $2, rows_rejected = rows_rejected + $3, \
             rows_quarantined = rows_quarantined + $4 WHERE id = $1",
        )
        .bind(batch_id)
        .bind(accepted)
        .bind(rejected)
        .bind(quarantined)
        .execute(&mut *tx)
        .await?;
        if let Some(q) = &outcome.quarantine {
            insert_quarantined(&mut tx, q).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a batch without pending rows done.
    pub async fn finish(&self, id: &str, now: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE order_batches SET status = 'done', finished_at = $2, lease_owner = NULL, lease_until = 0 \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM order_batch_rows WHERE batch_id = $1 AND status = 'pending')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.db.writer().await?)
        .await?;
        Ok(())
    }

    /// Row results after `after_row`, in row order.
    pub async fn results(&self, id: &str, after_row: i64, limit: i64) -> Result<Vec<ResultRow>, Error> {
        let rows = sqlx::query(
            "SELECT row_no, external_ref, status, order_id, errors FROM order_batch_rows \
             WHERE batch_id = $1 AND row_no > $2 ORDER BY row_no LIMIT $3",
        )
        .bind(id)
        .bind(after_row)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ResultRow {
                    row: r.try_get(0)?,
                    external_ref: r.try_get(1)?,
                    status: r.try_get(2)?,
                    order_id: r.try_get(3)?,
                    errors: serde_json::from_str(&r.try_get::<String, _>(4)?).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Quarantine entries, newest first, filtered; `status` `any` for all.
    pub async fn quarantine(
        &self,
        tenant: &str,
        source: &str,
        reason: &str,
        status: &str,
        before: &str,
        limit: i64,
    ) -> Result<Vec<Quarantined>, Error> {
        // The reason filter matches a rule or a field inside the JSON
        // array: as quoted text, so "quantity" does not match "max_quantity".
        let sql = format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR source = $2) \
             AND ($3 = 'any' OR status = $3) AND ($4 = '' OR id < $4) \
             AND ($5 = '' OR reasons LIKE $6 ESCAPE '\\' OR reasons LIKE $7 ESCAPE '\\') ORDER BY id DESC LIMIT $8"
        );
        let escaped = reason.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_").replace('"', "\\\"");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(source)
            .bind(status)
            .bind(before)
            .bind(reason)
            .bind(format!("%\"rule\":\"{escaped}\"%"))
            .bind(format!("%\"field\":\"{escaped}\"%"))
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(quarantined).collect()
    }

    /// One quarantine entry of `tenant` (empty: any).
    pub async fn quarantined(&self, tenant: &str, id: &str) -> Result<Option<Quarantined>, Error> {
        let sql = format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = $1 AND ($2 = '' OR tenant = $2)");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(tenant).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(quarantined).transpose()
    }

    /// Resolves an open entry: `replayed` (with its order) or `discarded`
    /// (with the reason), with `entry` on the audit trail in the same
    /// transaction. `Ok(false)` (and no audit row) when it is not open any
    /// more.
    pub async fn resolve(&self, q: &Quarantined, entry: &audit::Entry<'_>) -> Result<bool, Error> {
        let mut tx = self.db.begin_concurrent().await?;
        let done = sqlx::query(
            "UPDATE quarantine SET status = $2, resolved_at = $3, resolved_by = $4, resolution = $5, order_id = $6 \
             WHERE id = $1 AND status = 'open'",
        )
        .bind(&q.id)
        .bind(&q.status)
        .bind(q.resolved_at)
        .bind(&q.resolved_by)
        .bind(&q.resolution)
        .bind(&q.order_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        audit::append(&mut tx, self.db.dialect(), entry, q.resolved_at).await.map_err(|audit::Error::Query(e)| e)?;
        tx.commit().await?;
        Ok(true)
    }

    /// Open entries per source kind (`batch`) and the oldest's time (unix ms).
    pub async fn open_quarantine(&self) -> Result<Vec<(String, i64, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT source, COUNT(*), MIN(created_at) FROM quarantine WHERE status = 'open' GROUP BY source",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut kinds: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for r in &rows {
            let source: String = r.try_get(0)?;
            let kind = source.split(':').next().unwrap_or("").to_owned();
            let (n, oldest): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
            let entry = kinds.entry(kind).or_insert((0, i64::MAX));
            entry.0 += n;
            entry.1 = entry.1.min(oldest);
        }
        Ok(kinds.into_iter().map(|(k, (n, t))| (k, n, t)).collect())
    }
}

async fn insert_quarantined(tx: &mut platform::database::WriteTx, q: &Quarantined) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO quarantine (id, tenant, source, stage, external_ref, records, reasons, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8)",
    )
    .bind(&q.id)
    .bind(&q.tenant)
    .bind(&q.source)
    .bind(&q.stage)
    .bind(&q.external_ref)
    .bind(serde_json::to_string(&q.records).unwrap_or_default())
    .bind(serde_json::to_string(&q.reasons).unwrap_or_default())
    .bind(q.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn batch(r: &AnyRow) -> Result<BatchRow, Error> {
    Ok(BatchRow {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        sha256: r.try_get(2)?,
        format: r.try_get(3)?,
        dry_run: r.try_get::<i64, _>(4)? != 0,
        status: r.try_get(5)?,
        rows: r.try_get(6)?,
        orders_accepted: r.try_get(7)?,
        rows_rejected: r.try_get(8)?,
        rows_quarantined: r.try_get(9)?,
        created_at: r.try_get(10)?,
        finished_at: r.try_get(11)?,
    })
}

fn quarantined(r: &AnyRow) -> Result<Quarantined, Error> {
    let json = |i: usize| -> Result<String, Error> { r.try_get(i) };
    Ok(Quarantined {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        source: r.try_get(2)?,
        stage: r.try_get(3)?,
        external_ref: r.try_get(4)?,
        records: serde_json::from_str(&json(5)?).unwrap_or_default(),
        reasons: serde_json::from_str(&json(6)?).unwrap_or_default(),
        status: r.try_get(7)?,
        created_at: r.try_get(8)?,
        resolved_at: r.try_get(9)?,
        resolved_by: r.try_get(10)?,
        resolution: r.try_get(11)?,
        order_id: r.try_get(12)?,
    })
}
