//! `ChangeFeedService` over the embedded ERP: the `change_log` table, one
//! row per change, written in the same transaction as the change itself
//! (see the module doc of [`super`]); the cursor is the last sequence
//! number returned.

use erp_connect_proto::erp::v1::{Aggregate, Change};
use sqlx::Row;

use super::{EmbeddedErp, timestamp};
use crate::erp::Error;

impl EmbeddedErp {
    pub(super) async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
        let since_seq: i64 = match since {
            None => 0,
            Some(cursor) => cursor.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| Error::InvalidArgument {
                field: "since_cursor",
                message: "not a cursor from a previous call".into(),
            })?,
        };
        let rows = sqlx::query(
            "SELECT seq, aggregate, entity_id, state, changed_at FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(since_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let mut next = since_seq;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            next = row.try_get("seq")?;
            let aggregate = match row.try_get::<String, _>("aggregate")?.as_str() {
                "customer" => Aggregate::Customer,
                "sales_order" => Aggregate::SalesOrder,
                "invoice" => Aggregate::Invoice,
                "shipment" => Aggregate::Shipment,
                "product" => Aggregate::Product,
                _ => Aggregate::Unspecified,
            };
            changes.push(Change {
                aggregate: aggregate as i32,
                id: row.try_get("entity_id")?,
                state: row.try_get("state")?,
                changed_at: timestamp(&row.try_get::<String, _>("changed_at")?),
            });
        }
        Ok((changes, next.to_string()))
    }
}
