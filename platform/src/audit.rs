//! The durable audit trail: an append-only, hash-chained `audit_log` table
//! in a tier's own database, for every state-changing action an operator
//! or a partner takes (API keys, webhook endpoints, quarantine decisions).
//!
//! # The chain
//! Each row holds `seq` (1, 2, 3, … without gaps), `at` (unix ms), `actor`,
//! `action`, `object`, `detail` (JSON text, stored as written), the
//! previous row's hash and its own: SHA-256 over a length-prefixed
//! encoding of all those fields ([`row_hash`]), the first row chaining from
//! [`GENESIS`]. A row edited in the database no longer matches its hash; a
//! row deleted leaves a gap in `seq` and a `prev_hash` that matches
//! nothing: [`verify`] names the first row where either shows. Only the
//! newest rows deleted together leave no trace in the chain itself (the
//! price of needing no external anchor); the rows' count printed by the
//! verification is the check for that.
//!
//! # Where the rows live
//! In the database of the tier that performs the action, in the same
//! transaction as the action, so an action is never done without its row
//! nor recorded without being done: the gateway's key store for API keys,
//! the process tier's store for webhooks and quarantine. Two chains, each
//! whole; one chain across them would need a write path from the gateway
//! into the process tier's database (or the reverse) that the layering
//! forbids. `erp-connect audit verify` walks both.
//!
//! # Serialising appends
//! Appending reads the head row and writes the next one, so two appends
//! must not interleave: on PostgreSQL [`append`] takes a transaction-level
//! advisory lock of its own (replicas of a tier then keep one chain); on
//! SQLite the store's single writer already serialises every transaction.
//! Nothing in this module updates or deletes a row.
//!
//! # Reading it over HTTP
//! Both trails are listed with the same query (`GET /ops/v1/audit` by the
//! gateway, `GET /ops/v1/audit/process` by the experience tier), read by
//! [`Filter::from_query`] so that the two routes cannot drift apart.

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{
    database::{Database, Dialect, lock_key},
    problem::FieldError,
};

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows a page of [`list`] holds at most.
pub const MAX_PAGE: u32 = 500;

/// Why the trail could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed.
    #[error("audit trail query failed")]
    Query(#[from] sqlx::Error),
}

impl Error {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// What one action appends.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Who acted: an operator's subject, `cli`, a partner tenant.
    pub actor: &'a str,
    /// What was done, `<object kind>.<verb>`: `keys.create`.
    pub action: &'a str,
    /// What it was done to: an id.
    pub object: &'a str,
    /// Anything else worth keeping (never secrets, never personal data).
    pub detail: serde_json::Value,
}

/// A row as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub object: String,
    /// The entry's detail.
    pub detail: serde_json::Value,
    /// This row's hash (hex).
    pub hash: String,
}

/// Appends `entry` at `at_ms` inside `tx`, the transaction of the action
/// itself; returns its `seq`.
pub async fn append(
    tx: &mut crate::database::WriteTx,
    dialect: Dialect,
    entry: &Entry<'_>,
    at_ms: i64,
) -> Result<i64, Error> {
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key("audit")).execute(&mut **tx).await?;
    }
    let head =
        sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut **tx).await?;
    let (seq, prev_hash) = match head {
        Some(row) => (row.try_get::<i64, _>(0)? + 1, row.try_get::<String, _>(1)?),
        None => (1, GENESIS.to_owned()),
    };
    let detail = entry.detail.to_string();
    let hash = row_hash(seq, at_ms, entry.actor, entry.action, entry.object, &detail, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, object, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(at_ms)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.object)
    .bind(detail)
    .bind(prev_hash)
    .bind(hash)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// Appends `entry` in a transaction of its own, for an action whose own
/// write happened elsewhere.
pub async fn append_alone(db: &Database, entry: &Entry<'_>, at_ms: i64) -> Result<i64, Error> {
    let mut tx = db.begin_concurrent().await?;
    let seq = append(&mut tx, db.dialect(), entry, at_ms).await?;
    tx.commit().await?;
    Ok(seq)
}

/// SHA-256 (hex) of a row: each field as its byte length (8 bytes,
/// big-endian) then its bytes, so that no two different rows encode alike.
pub fn row_hash(seq: i64, at: i64, actor: &str, action: &str, object: &str, detail: &str, prev: &str) -> String {
    let mut sha = Sha256::new();
    sha.update(b"erp-connect.audit.v1");
    for field in [seq.to_string().as_str(), at.to_string().as_str(), actor, action, object, detail, prev] {
        sha.update((field.len() as u64).to_be_bytes());
        sha.update(field.as_bytes());
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row holds; this many rows.
    Intact {
        /// Rows checked.
        rows: u64,
    },
    /// The first row that does not hold.
    Broken {
        /// Its `seq`.
        seq: i64,
        /// Rows that held before it.
        rows_ok: u64,
        /// What broke.
        reason: String,
    },
}

/// Walks the whole chain in `seq` order and reports the first row whose
/// `seq`, `prev_hash` or own hash does not hold.
pub async fn verify(db: &Database) -> Result<Verdict, Error> {
    let mut rows =
        sqlx::query("SELECT seq, at, actor, action, object, detail, prev_hash, hash FROM audit_log ORDER BY seq")
            .fetch(db.pool());
    let mut expected_seq = 1_i64;
    let mut prev = GENESIS.to_owned();
    let mut ok = 0_u64;
    while let Some(row) = rows.try_next().await? {
        let seq: i64 = row.try_get(0)?;
        let (at, actor, action, object, detail, prev_hash, hash): (
            i64,
            String,
            String,
            String,
            String,
            String,
            String,
        ) = (
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        );
        let broken = |reason: String| Ok(Verdict::Broken { seq, rows_ok: ok, reason });
        if seq != expected_seq {
            return broken(format!("expected seq {expected_seq} here: rows before it are missing"));
        }
        if prev_hash != prev {
            return broken("prev_hash does not match the previous row's hash".into());
        }
        if row_hash(seq, at, &actor, &action, &object, &detail, &prev_hash) != hash {
            return broken("the row's fields do not match its hash: it was altered".into());
        }
        ok += 1;
        expected_seq += 1;
        prev = hash;
    }
    Ok(Verdict::Intact { rows: ok })
}

/// Which rows [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Exactly this action.
    pub action: Option<String>,
    /// Exactly this object.
    pub object: Option<String>,
    /// At or after (unix ms).
    pub since: Option<i64>,
    /// Before (unix ms).
    pub until: Option<i64>,
    /// Older than this `seq` (the previous page's cursor).
    pub before_seq: Option<i64>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

/// Largest `page_size` of the HTTP query, as the other ops lists.
pub const MAX_PAGE_SIZE: u32 = 100;
/// `page_size` when the HTTP query asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Longest value of a text filter: ids and subjects are far shorter.
pub const MAX_TEXT: usize = 256;

impl Filter {
    /// The filter an HTTP query asks for, or every bad parameter: `actor`,
    /// `action`, `object` (exact matches, 1 to [`MAX_TEXT`] characters),
    /// `since` and `until` (RFC 3339, or a date meaning its midnight UTC),
    /// `page_size` (1 to [`MAX_PAGE_SIZE`], default [`DEFAULT_PAGE_SIZE`])
    /// and `page_token` (the previous page's `next_page_token`, the last
    /// row's `seq`). Anything else, a repeated parameter or a bad value is
    /// named.
    pub fn from_query(raw: Option<&str>) -> Result<Self, Vec<FieldError>> {
        let mut filter = Filter { limit: DEFAULT_PAGE_SIZE, ..Filter::default() };
        let mut errors = Vec::new();
        let mut seen = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(FieldError { field: field.to_owned(), message: message.to_owned() });
        };
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.contains(&key) {
                bad(&key, "given more than once");
                continue;
            }
            seen.push(key.clone());
            let text = || (!value.is_empty() && value.len() <= MAX_TEXT).then(|| value.to_string());
            match key.as_ref() {
                "actor" | "action" | "object" => match text() {
                    Some(text) => {
                        *match key.as_ref() {
                            "actor" => &mut filter.actor,
                            "action" => &mut filter.action,
                            _ => &mut filter.object,
                        } = Some(text)
                    }
                    None => bad(&key, &format!("must be 1 to {MAX_TEXT} characters")),
                },
                "since" | "until" => match time_ms(&value) {
                    Some(at) if key == "since" => filter.since = Some(at),
                    Some(at) => filter.until = Some(at),
                    None => bad(&key, "must be an RFC 3339 time (2026-12-01T08:00:00Z) or a date (2026-12-01)"),
                },
                "page_size" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => filter.limit = n,
                    _ => bad("page_size", &format!("must be an integer from 1 to {MAX_PAGE_SIZE}")),
                },
                "page_token" => match value.parse::<i64>() {
                    Ok(seq) if seq > 0 => filter.before_seq = Some(seq),
                    _ => bad("page_token", "not a token this list gave"),
                },
                other => bad(other, "unknown query parameter"),
            }
        }
        if errors.is_empty() { Ok(filter) } else { Err(errors) }
    }
}

/// `2026-12-01` (midnight UTC) or an RFC 3339 time, as unix ms.
fn time_ms(text: &str) -> Option<i64> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    let at = humantime::parse_rfc3339_weak(&full).ok()?;
    i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// Rows matching `filter`, newest first, and the cursor of the next page
/// (the last row's `seq`) when the page is full.
pub async fn list(db: &Database, filter: &Filter) -> Result<(Vec<Record>, Option<i64>), Error> {
    let mut clauses = Vec::new();
    let mut texts = Vec::new();
    let mut numbers = Vec::new();
    for (column, value) in [("actor", &filter.actor), ("action", &filter.action), ("object", &filter.object)] {
        if let Some(value) = value {
            texts.push(value.clone());
            clauses.push(format!("{column} = ${}", texts.len()));
        }
    }
    for (clause, value) in [("at >=", filter.since), ("at <", filter.until), ("seq <", filter.before_seq)] {
        if let Some(value) = value {
            numbers.push(value);
            clauses.push(format!("{clause} ${}", texts.len() + numbers.len()));
        }
    }
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let sql = format!(
        "SELECT seq, at, actor, action, object, detail, hash FROM audit_log {} ORDER BY seq DESC LIMIT {limit}",
        if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) }
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for text in texts {
        query = query.bind(text);
    }
    for number in numbers {
        query = query.bind(number);
    }
    let rows = query.fetch_all(db.pool()).await?;
    let records = rows
        .iter()
        .map(|row| {
            let detail: String = row.try_get(5)?;
            Ok(Record {
                seq: row.try_get(0)?,
                at: row.try_get(1)?,
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                object: row.try_get(4)?,
                // Written by `append` as JSON; a row altered into non-JSON
                // is still shown, as the text it holds.
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                hash: row.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next = (records.len() == limit as usize).then(|| records.last().map(|r| r.seq)).flatten();
    Ok((records, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{Migrations, ScratchPostgres};
    use sqlx::migrate::Migrator;

    static SQLITE: Migrator = sqlx::migrate!("./migrations/probe/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./migrations/probe/postgres");
    static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

    fn entry<'a>(actor: &'a str, action: &'a str, object: &'a str) -> Entry<'a> {
        Entry { actor, action, object, detail: serde_json::json!({"n": object}) }
    }

    /// Appends five rows concurrently, then checks listing, an edit and a
    /// deletion made behind the module's back.
    async fn the_chain_holds_and_tampering_breaks_it(db: Database) {
        assert_eq!(verify(&db).await.expect("verify"), Verdict::Intact { rows: 0 });
        let appends = (1..=5).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let object = format!("obj_{i}");
                let actor = if i % 2 == 0 { "alice" } else { "bob" };
                append_alone(&db, &entry(actor, "keys.create", &object), 1_000 * i).await.expect("append")
            })
        });
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "concurrent appends keep one gapless chain");
        assert_eq!(verify(&db).await.expect("verify"), Verdict::Intact { rows: 5 });

        let by_alice = Filter { actor: Some("alice".into()), limit: 10, ..Filter::default() };
        let (rows, next) = list(&db, &by_alice).await.expect("list");
        assert_eq!(rows.iter().map(|r| r.actor.as_str()).collect::<Vec<_>>(), ["alice", "alice"]);
        assert!(rows[0].seq > rows[1].seq, "newest first");
        assert_eq!(next, None);
        let page = Filter { limit: 2, ..Filter::default() };
        let (first, next) = list(&db, &page).await.expect("page 1");
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 4]);
        let (second, _) = list(&db, &Filter { before_seq: next, ..page }).await.expect("page 2");
        assert_eq!(second.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2]);
        let window = Filter { since: Some(2_000), until: Some(4_000), limit: 10, ..Filter::default() };
        assert_eq!(list(&db, &window).await.expect("window").0.len(), 2);

        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3").execute(db.pool()).await.expect("edit");
        match verify(&db).await.expect("verify") {
            Verdict::Broken { seq: 3, rows_ok: 2, reason } => assert!(reason.contains("altered"), "{reason}"),
            other => panic!("{other:?}"),
        }
        sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(db.pool()).await.expect("delete");
        match verify(&db).await.expect("verify") {
            Verdict::Broken { seq: 4, rows_ok: 2, reason } => assert!(reason.contains("missing"), "{reason}"),
            other => panic!("{other:?}"),
        }
        db.close().await;
    }

    #[tokio::test]
    async fn on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "audit.db", "t", &MIGRATIONS).await.expect("open");
        the_chain_holds_and_tampering_breaks_it(db).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let scratch = ScratchPostgres::create("audit_test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        the_chain_holds_and_tampering_breaks_it(db).await;
    }

    #[test]
    fn http_filters_and_pages_are_read_and_bad_ones_named() {
        let query = "actor=alice&since=1970-01-02&until=1970-01-01T00:00:01Z&page_size=5&page_token=9";
        let filter = Filter::from_query(Some(query)).expect("good query");
        assert_eq!(filter.actor.as_deref(), Some("alice"));
        assert_eq!((filter.since, filter.until), (Some(86_400_000), Some(1_000)));
        assert_eq!((filter.limit, filter.before_seq), (5, Some(9)));
        assert_eq!(Filter::from_query(None).expect("empty").limit, DEFAULT_PAGE_SIZE);
        let errors = Filter::from_query(Some("since=garbage&page_size=0&color=red&actor=a&actor=b&page_token=x"))
            .expect_err("bad query");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["since", "page_size", "color", "actor", "page_token"]);
    }

    #[test]
    fn field_boundaries_are_part_of_the_hash() {
        assert_ne!(row_hash(1, 1, "ab", "c", "", "{}", GENESIS), row_hash(1, 1, "a", "bc", "", "{}", GENESIS));
    }
}
