//! `InventoryService` over the embedded ERP: the `stock` table, one row
//! per warehouse and SKU with what is on hand and what confirmed orders
//! have reserved; available is on hand minus reserved. Confirming an order
//! reserves ([`super::sales_orders`]), completing a shipment takes the
//! reservation off the shelf ([`super::shipments`]).

use std::collections::HashMap;

use erp_connect_proto::erp::v1::{StockLevel, WarehouseStock};
use sqlx::Row;

use super::EmbeddedErp;
use crate::erp::Error;

impl EmbeddedErp {
    pub(super) async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        // Numbered placeholders written here: the `Any` driver's query
        // builder writes `?`, which PostgreSQL does not read.
        let placeholders: Vec<String> = (1..=skus.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT sku, warehouse, on_hand, reserved FROM stock WHERE sku IN ({}) ORDER BY sku, warehouse",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for sku in skus {
            query = query.bind(sku);
        }
        let rows = query.fetch_all(self.pool()).await?;

        let mut by_sku: HashMap<String, Vec<WarehouseStock>> = HashMap::with_capacity(skus.len());
        for row in rows {
            let on_hand: i64 = row.try_get("on_hand")?;
            let reserved: i64 = row.try_get("reserved")?;
            by_sku.entry(row.try_get("sku")?).or_default().push(WarehouseStock {
                warehouse: row.try_get("warehouse")?,
                on_hand,
                available: (on_hand - reserved).max(0),
            });
        }
        Ok(skus
            .iter()
            .map(|sku| {
                let warehouses = by_sku.get(sku).cloned().unwrap_or_default();
                crate::erp::stock_level(sku, warehouses)
            })
            .collect())
    }
}
