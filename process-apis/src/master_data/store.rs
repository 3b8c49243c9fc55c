//! Master data's tables in the process tier's database (SQLite or
//! PostgreSQL, migration `0007_master_data`): golden records
//! (`md_customers`), the cross-reference (`md_links`, one row per system
//! id), the owners' values (`md_fields`), the quarantine
//! (`md_quarantine`) and the last comparison (`md_accuracy`). The feeds'
//! cursors are kept with the order feed's (`order_to_cash::store`).

use std::collections::BTreeMap;

use platform::{audit, database::Database};
use serde_json::Value;
use sqlx::{Row, any::AnyRow};

use super::fields::{Field, SystemName};

/// A golden record's ids: (system, id), in the order they were linked.
pub type Links = Vec<(SystemName, String)>;

/// A golden record's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    /// `mdc_...`.
    pub id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, once erased.
    pub erased_at: Option<i64>,
}

/// A quarantine entry's row (see `master_data.v1.QuarantineEntry`).
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    /// `mdq_...`.
    pub id: String,
    /// `duplicate` or `conflict`.
    pub kind: String,
    /// The system of the record that arrived.
    pub subject_system: SystemName,
    /// Its id there.
    pub subject_id: String,
    /// For a duplicate: the golden records it may be.
    pub candidates: Vec<String>,
    /// For a conflict: the field.
    pub field: String,
    /// For a conflict: the non-owner's value (JSON text).
    pub value: String,
    /// For a conflict: the owner's value (JSON text).
    pub owner_value: String,
    /// Why it was held.
    pub reason: String,
    /// `open`, `merged`, `kept_apart`, `accepted` or `reverted`.
    pub status: String,
    /// The golden record concerned, or merged into.
    pub golden_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub resolved_at: Option<i64>,
    /// The operator.
    pub resolved_by: Option<String>,
}

/// The last comparison of one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// The field.
    pub field: String,
    /// Linked records whose value differs from the owner's.
    pub mismatches: i64,
    /// Unix ms.
    pub compared_at: i64,
    /// Golden records compared.
    pub customers: i64,
}

/// Master data's store.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

fn golden(row: &AnyRow) -> Result<Golden, sqlx::Error> {
    Ok(Golden { id: row.try_get(0)?, created_at: row.try_get(1)?, erased_at: row.try_get(2)? })
}

fn quarantined(row: &AnyRow) -> Result<Quarantined, sqlx::Error> {
    let system: String = row.try_get(2)?;
    let candidates: String = row.try_get(4)?;
    Ok(Quarantined {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        subject_system: SystemName::parse(&system).unwrap_or(SystemName::Crm),
        subject_id: row.try_get(3)?,
        candidates: serde_json::from_str(&candidates).unwrap_or_default(),
        field: row.try_get(5)?,
        value: row.try_get(6)?,
        owner_value: row.try_get(7)?,
        reason: row.try_get(8)?,
        status: row.try_get(9)?,
        golden_id: row.try_get(10)?,
        created_at: row.try_get(11)?,
        resolved_at: row.try_get(12)?,
        resolved_by: row.try_get(13)?,
    })
}

const QUARANTINE_COLUMNS: &str = "id, kind, subject_system, subject_id, candidates, field, value, owner_value, reason, \
                                  status, golden_id, created_at, resolved_at, resolved_by";

impl Store {
    /// Over the process tier's database (already migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for the audit trail.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The golden record `id`.
    pub async fn golden(&self, id: &str) -> Result<Option<Golden>, sqlx::Error> {
        let row = sqlx::query("SELECT id, created_at, erased_at FROM md_customers WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(golden).transpose()
    }

    /// Every golden record, oldest first, after `after` (an id), at most `limit`.
    pub async fn goldens(&self, after: &str, limit: i64) -> Result<Vec<Golden>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, created_at, erased_at FROM md_customers WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(golden).collect()
    }

    /// The golden record `system`'s `id` is linked to.
    pub async fn link_of(&self, system: SystemName, id: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query("SELECT customer_id FROM md_links WHERE system = $1 AND system_id = $2")
            .bind(system.as_str())
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// A golden record's ids in every system, in the order they were
    /// linked (a system may hold duplicates an operator merged).
    pub async fn links(&self, golden: &str) -> Result<Links, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT system, system_id FROM md_links WHERE customer_id = $1 ORDER BY linked_at, system, system_id",
        )
        .bind(golden)
        .fetch_all(self.db.pool())
        .await?;
        let mut links = Vec::new();
        for row in rows {
            let system: String = row.try_get(0)?;
            if let Some(system) = SystemName::parse(&system) {
                links.push((system, row.try_get(1)?));
            }
        }
        Ok(links)
    }

    /// A new golden record with `system`'s `id` linked to it; when that id
    /// was linked meanwhile (another replica, a saga), its golden record.
    pub async fn create_linked(&self, system: SystemName, id: &str, now: i64) -> Result<String, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        if let Some(row) = sqlx::query("SELECT customer_id FROM md_links WHERE system = $1 AND system_id = $2")
            .bind(system.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        {
            return row.try_get(0);
        }
        let golden = format!("mdc_{}", ulid::Ulid::new());
        sqlx::query("INSERT INTO md_customers (id, created_at) VALUES ($1, $2)")
            .bind(&golden)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO md_links (system, system_id, customer_id, linked_at) VALUES ($1, $2, $3, $4)")
            .bind(system.as_str())
            .bind(id)
            .bind(&golden)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(golden)
    }

    /// Links `system`'s `id` to `golden`, unless it is linked already;
    /// returns the golden record it is linked to afterwards.
    pub async fn link(&self, golden: &str, system: SystemName, id: &str, now: i64) -> Result<String, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let existing = sqlx::query("SELECT customer_id FROM md_links WHERE system = $1 AND system_id = $2")
            .bind(system.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            return row.try_get(0);
        }
        sqlx::query("INSERT INTO md_links (system, system_id, customer_id, linked_at) VALUES ($1, $2, $3, $4)")
            .bind(system.as_str())
            .bind(id)
            .bind(golden)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(golden.to_owned())
    }

    /// The owners' values of a golden record, with when each changed.
    pub async fn fields(&self, golden: &str) -> Result<BTreeMap<Field, (Value, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT field, value, changed_at FROM md_fields WHERE customer_id = $1")
            .bind(golden)
            .fetch_all(self.db.pool())
            .await?;
        let mut fields = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            if let (Some(field), Ok(value)) = (Field::parse(&name), serde_json::from_str(&text)) {
                fields.insert(field, (value, row.try_get(2)?));
            }
        }
        Ok(fields)
    }

    /// Records the owner's value of `field`.
    pub async fn set_field(&self, golden: &str, field: Field, value: &Value, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO md_fields (customer_id, field, value, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (customer_id, field) DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at",
        )
        .bind(golden)
        .bind(field.as_str())
        .bind(value.to_string())
        .bind(now)
        .execute(&mut *self.db.writer().await?)
        .await?;
        Ok(())
    }

    /// Holds `entry` for an operator, with its audit row.
    pub async fn quarantine(&self, entry: &Quarantined, audit: &audit::Entry<'_>) -> Result<(), Error> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO md_quarantine ({QUARANTINE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&entry.id)
        .bind(&entry.kind)
        .bind(entry.subject_system.as_str())
        .bind(&entry.subject_id)
        .bind(serde_json::to_string(&entry.candidates).unwrap_or_else(|_| "[]".into()))
        .bind(&entry.field)
        .bind(&entry.value)
        .bind(&entry.owner_value)
        .bind(&entry.reason)
        .bind(&entry.status)
        .bind(&entry.golden_id)
        .bind(entry.created_at)
        .bind(entry.resolved_at)
        .bind(entry.resolved_by.as_deref())
        .execute(&mut *tx)
        .await?;
        audit::append(&mut tx, self.db.dialect(), audit, entry.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One entry.
    pub async fn quarantined(&self, id: &str) -> Result<Option<Quarantined>, sqlx::Error> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {QUARANTINE_COLUMNS} FROM md_quarantine WHERE id = $1")))
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        row.as_ref().map(quarantined).transpose()
    }

    /// Entries of `status` (any when empty), newest first.
    pub async fn quarantine_list(&self, status: &str, limit: i64) -> Result<Vec<Quarantined>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {QUARANTINE_COLUMNS} FROM md_quarantine WHERE ($1 = '' OR status = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        )))
        .bind(status)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(quarantined).collect()
    }

    /// The open entry of `kind` about `system`'s `id` (and `field`, for a
    /// conflict), if any.
    pub async fn open_entry(
        &self,
        kind: &str,
        system: SystemName,
        id: &str,
        field: &str,
    ) -> Result<Option<Quarantined>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {QUARANTINE_COLUMNS} FROM md_quarantine WHERE kind = $1 AND subject_system = $2 \
             AND subject_id = $3 AND field = $4 AND status = 'open' LIMIT 1"
        )))
        .bind(kind)
        .bind(system.as_str())
        .bind(id)
        .bind(field)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(quarantined).transpose()
    }

    /// Entries about a golden record or one of its system ids.
    pub async fn entries_about(&self, golden: &str, links: &Links) -> Result<Vec<Quarantined>, sqlx::Error> {
        let all = self.quarantine_list("", i64::MAX).await?;
        Ok(all
            .into_iter()
            .filter(|e| {
                e.golden_id == golden
                    || e.candidates.iter().any(|c| c == golden)
                    || links.iter().any(|(system, id)| *system == e.subject_system && *id == e.subject_id)
            })
            .collect())
    }

    /// Closes an open entry as `status` by `actor`, with its audit row;
    /// `false` when it was no longer open.
    pub async fn resolve(
        &self,
        id: &str,
        status: &str,
        golden_id: &str,
        actor: &str,
        audit: &audit::Entry<'_>,
        now: i64,
    ) -> Result<bool, Error> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE md_quarantine SET status = $1, golden_id = $2, resolved_at = $3, resolved_by = $4 \
             WHERE id = $5 AND status = 'open'",
        )
        .bind(status)
        .bind(golden_id)
        .bind(now)
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        audit::append(&mut tx, self.db.dialect(), audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a comparison's result.
    pub async fn save_accuracy(&self, results: &[Accuracy]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        for a in results {
            sqlx::query(
                "INSERT INTO md_accuracy (field, mismatches, compared_at, customers) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (field) DO UPDATE SET mismatches = excluded.mismatches, \
                 compared_at = excluded.compared_at, customers = excluded.customers",
            )
            .bind(&a.field)
            .bind(a.mismatches)
            .bind(a.compared_at)
            .bind(a.customers)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The last comparison, per field.
    pub async fn accuracy(&self) -> Result<Vec<Accuracy>, sqlx::Error> {
        let rows = sqlx::query("SELECT field, mismatches, compared_at, customers FROM md_accuracy ORDER BY field")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Accuracy {
                    field: r.try_get(0)?,
                    mismatches: r.try_get(1)?,
                    compared_at: r.try_get(2)?,
                    customers: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Golden records and links.
    pub async fn counts(&self) -> Result<(i64, i64), sqlx::Error> {
        let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM md_customers").fetch_one(self.db.pool()).await?;
        let links: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM md_links").fetch_one(self.db.pool()).await?;
        Ok((customers, links))
    }

    /// Erases what master data holds about a golden record: the owners'
    /// values and the values in its quarantine entries; the record and its
    /// links stay (ids only), marked erased, so a later change in a
    /// system is not taken for a new customer. Returns what it removed.
    pub async fn erase(
        &self,
        golden: &str,
        links: &Links,
        audit: &audit::Entry<'_>,
        now: i64,
    ) -> Result<(u64, u64), Error> {
        let mut tx = self.db.begin_write().await?;
        let fields = sqlx::query("DELETE FROM md_fields WHERE customer_id = $1").bind(golden).execute(&mut *tx).await?;
        let mut entries = sqlx::query(
            "UPDATE md_quarantine SET value = 'null', owner_value = 'null', reason = 'erased' WHERE golden_id = $1",
        )
        .bind(golden)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for (system, id) in links {
            entries += sqlx::query(
                "UPDATE md_quarantine SET value = 'null', owner_value = 'null', reason = 'erased' \
                 WHERE subject_system = $1 AND subject_id = $2",
            )
            .bind(system.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        sqlx::query("UPDATE md_customers SET erased_at = $1 WHERE id = $2 AND erased_at IS NULL")
            .bind(now)
            .bind(golden)
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, self.db.dialect(), audit, now).await?;
        tx.commit().await?;
        Ok((fields.rows_affected(), entries))
    }
}

/// A store write with an audit row failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// The audit trail.
    #[error(transparent)]
    Audit(#[from] audit::Error),
}

impl From<Error> for super::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Sql(e) => super::Error::Store(e),
            Error::Audit(e) => super::Error::Audit(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use platform::database::ScratchPostgres;
    use serde_json::json;

    use super::*;
    use crate::order_to_cash::store::Store as SagaStore;

    fn entry(id: &str, kind: &str, subject: &str, golden: &str) -> Quarantined {
        Quarantined {
            id: id.into(),
            kind: kind.into(),
            subject_system: SystemName::Erp,
            subject_id: subject.into(),
            candidates: vec![golden.into()],
            field: if kind == "conflict" { "name".into() } else { String::new() },
            value: json!("Typo Ltd").to_string(),
            owner_value: json!("Ada Ltd").to_string(),
            reason: "test".into(),
            status: "open".into(),
            golden_id: golden.into(),
            created_at: 1,
            resolved_at: None,
            resolved_by: None,
        }
    }

    fn audit(action: &str) -> audit::Entry<'static> {
        audit::Entry { actor: "test", action: "master_data.test", object: "x", detail: json!({"action": action}) }
    }

    /// Links, golden values, the quarantine and erasure, as the sync and
    /// the service use them, on either dialect.
    async fn golden_records_links_quarantine_and_erasure(saga: SagaStore) {
        let store = Store::new(saga.database());
        let golden = store.create_linked(SystemName::Crm, "cus_1", 10).await.expect("create");
        assert!(golden.starts_with("mdc_"));
        assert_eq!(store.create_linked(SystemName::Crm, "cus_1", 11).await.expect("again"), golden, "linked once");
        assert_eq!(store.link(&golden, SystemName::Erp, "party-1", 12).await.expect("link"), golden);
        let elsewhere = store.create_linked(SystemName::Erp, "party-2", 13).await.expect("other");
        assert_eq!(store.link(&golden, SystemName::Erp, "party-2", 14).await.expect("taken"), elsewhere, "kept");
        assert_eq!(
            store.links(&golden).await.expect("links"),
            [(SystemName::Crm, "cus_1".to_owned()), (SystemName::Erp, "party-1".to_owned())]
        );
        assert_eq!(store.link_of(SystemName::Erp, "party-1").await.expect("link of"), Some(golden.clone()));

        store.set_field(&golden, Field::Name, &json!("Ada"), 20).await.expect("set");
        store.set_field(&golden, Field::Name, &json!("Ada King"), 21).await.expect("set again");
        let fields = store.fields(&golden).await.expect("fields");
        assert_eq!(fields.get(&Field::Name), Some(&(json!("Ada King"), 21)));

        store.quarantine(&entry("mdq_1", "conflict", "party-1", &golden), &audit("hold")).await.expect("hold");
        assert!(store.open_entry("conflict", SystemName::Erp, "party-1", "name").await.expect("open").is_some());
        assert_eq!(store.quarantine_list("open", 10).await.expect("list").len(), 1);
        assert!(store.resolve("mdq_1", "reverted", &golden, "ops", &audit("revert"), 30).await.expect("resolve"));
        assert!(!store.resolve("mdq_1", "accepted", &golden, "ops", &audit("again"), 31).await.expect("once"));
        let decided = store.quarantined("mdq_1").await.expect("read").expect("entry");
        assert_eq!((decided.status.as_str(), decided.resolved_by.as_deref()), ("reverted", Some("ops")));
        assert!(store.quarantine_list("open", 10).await.expect("list").is_empty());

        let links = store.links(&golden).await.expect("links");
        assert_eq!(store.entries_about(&golden, &links).await.expect("about").len(), 1);
        let (fields, entries) = store.erase(&golden, &links, &audit("erase"), 40).await.expect("erase");
        assert_eq!((fields, entries), (1, 2), "one value; the entry matched by golden id and by subject");
        assert!(store.fields(&golden).await.expect("fields").is_empty());
        assert_eq!(store.golden(&golden).await.expect("golden").and_then(|g| g.erased_at), Some(40));
        let erased = store.quarantined("mdq_1").await.expect("read").expect("entry");
        assert_eq!((erased.value.as_str(), erased.owner_value.as_str()), ("null", "null"));
        assert_eq!(store.counts().await.expect("counts"), (2, 3));
        assert_eq!(audit::verify(store.database()).await.expect("verify"), audit::Verdict::Intact { rows: 3 });

        let compared = [Accuracy { field: "name".into(), mismatches: 2, compared_at: 50, customers: 2 }];
        store.save_accuracy(&compared).await.expect("save");
        store
            .save_accuracy(&[Accuracy { mismatches: 0, compared_at: 60, ..compared[0].clone() }])
            .await
            .expect("again");
        assert_eq!(store.accuracy().await.expect("accuracy")[0].mismatches, 0);
    }

    #[tokio::test]
    async fn golden_records_links_quarantine_and_erasure_on_postgres() {
        let scratch = ScratchPostgres::create("master_data").await;
        golden_records_links_quarantine_and_erasure(SagaStore::open(&scratch.url()).await.expect("open")).await;
    }

    #[tokio::test]
    async fn golden_records_links_quarantine_and_erasure_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        golden_records_links_quarantine_and_erasure(SagaStore::open(&url).await.expect("open")).await;
    }
}
