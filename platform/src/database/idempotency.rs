//! Idempotency records of a store's writes: the table `idempotency`
//! (`scope`, `key`, `fingerprint`, `result_id`, `created_at`, primary key
//! `(scope, key)`) that the embedded ERP and the embedded CRM each keep in
//! their own database. A write looks its key up and records it in the
//! transaction that makes the change, so a replay finds the first result
//! and the same key with another request is told apart.

use super::{Columns, Sql};

const LOOK_UP: &str = "SELECT fingerprint, result_id FROM idempotency WHERE scope = $1 AND key = $2";
const RECORD: &str =
    "INSERT INTO idempotency (scope, key, fingerprint, result_id, created_at) VALUES ($1, $2, $3, $4, $5)";

/// What the store holds for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing: a new request.
    Nothing,
    /// The same request (its fingerprint matches) made `result_id`.
    Same(String),
    /// Another request used this key.
    Different,
}

/// Looks `key` up in `scope` within `tx`.
pub async fn recorded(
    tx: &mut super::WriteTx,
    scope: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Recorded, sqlx::Error> {
    let row = sqlx::query(LOOK_UP).bind(scope).bind(key).fetch_optional(&mut **tx).await?;
    compare(row.as_ref(), fingerprint)
}

/// [`recorded`] in a transaction run in line ([`super::inline`]).
pub fn recorded_in(sql: &mut dyn Sql, scope: &str, key: &str, fingerprint: &str) -> Result<Recorded, sqlx::Error> {
    let row = sql.fetch_optional(LOOK_UP, &[scope.into(), key.into()])?;
    compare(row.as_ref(), fingerprint)
}

fn compare(row: Option<&impl Columns>, fingerprint: &str) -> Result<Recorded, sqlx::Error> {
    Ok(match row {
        None => Recorded::Nothing,
        Some(row) if row.text("fingerprint")? == fingerprint => Recorded::Same(row.text("result_id")?),
        Some(_) => Recorded::Different,
    })
}

/// Records that the request `fingerprint` under `key` made `result_id`, at
/// `created_at` (RFC 3339, as the store writes its times).
pub async fn record(
    tx: &mut super::WriteTx,
    scope: &str,
    key: &str,
    fingerprint: &str,
    result_id: &str,
    created_at: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(RECORD)
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(result_id)
        .bind(created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// [`record`] in a transaction run in line ([`super::inline`]).
pub fn record_in(
    sql: &mut dyn Sql,
    scope: &str,
    key: &str,
    fingerprint: &str,
    result_id: &str,
    created_at: &str,
) -> Result<(), sqlx::Error> {
    sql.execute(RECORD, &[scope.into(), key.into(), fingerprint.into(), result_id.into(), created_at.into()])?;
    Ok(())
}
