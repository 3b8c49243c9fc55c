//! `InventoryService` over Tryton: stock levels are the `quantity` (on
//! hand) and `forecast_quantity` (on hand minus what confirmed sales will
//! take) of `product.product`, computed by Tryton for the locations in the
//! call's context, one call per warehouse (`stock.location` of type
//! `warehouse`). What callers see as available is the forecast, never
//! below zero nor above what is on hand. Confirming a sale checks the same
//! figures ([`TrytonErp::available_in`]), since Tryton itself sells what is
//! not in stock.

use std::collections::{HashMap, HashSet};

use erp_connect_proto::erp::v1::{StockLevel, WarehouseStock};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    TrytonErp,
    records::{decode, units},
};
use crate::erp::Error;

/// `product.product` read with `code`, `quantity`, `forecast_quantity` in
/// the context of one warehouse.
#[derive(Debug, Deserialize)]
struct LevelRecord {
    code: Option<String>,
    #[serde(deserialize_with = "units")]
    quantity: i64,
    #[serde(deserialize_with = "units")]
    forecast_quantity: i64,
}

impl TrytonErp {
    /// Units (on hand, available) per SKU in `warehouse` (available is the
    /// forecast: on hand minus what confirmed orders will take).
    pub(super) async fn available_in(
        &self,
        warehouse: i64,
        skus: &[String],
    ) -> Result<HashMap<String, (i64, i64)>, Error> {
        let mut ctx = serde_json::Map::new();
        ctx.insert("locations".into(), json!([warehouse]));
        let result = self
            .rpc
            .call_with_context(
                "model.product.product.search_read",
                vec![
                    json!([["code", "in", skus]]),
                    json!(0),
                    Value::Null,
                    Value::Null,
                    json!(["code", "quantity", "forecast_quantity"]),
                ],
                Some(&ctx),
            )
            .await?;
        let records: Vec<LevelRecord> = decode("product.product", &result)?;
        Ok(records.into_iter().filter_map(|r| Some((r.code?, (r.quantity, r.forecast_quantity.max(0))))).collect())
    }

    pub(super) async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let setup = self.setup().await?;
        let mut per_warehouse = Vec::with_capacity(setup.warehouses.len());
        for (id, code) in &setup.warehouses {
            per_warehouse.push((code.clone(), self.available_in(*id, skus).await?));
        }
        // Each warehouse's read answers every product with one of the codes,
        // in stock or not: the SKUs Tryton knows, without a call of their own.
        let known: HashSet<&String> = per_warehouse.iter().flat_map(|(_, levels)| levels.keys()).collect();
        Ok(skus
            .iter()
            .map(|sku| {
                let warehouses: Vec<WarehouseStock> = if known.contains(sku) {
                    per_warehouse
                        .iter()
                        .map(|(code, levels)| {
                            let (on_hand, available) = levels.get(sku).copied().unwrap_or_default();
                            WarehouseStock {
                                warehouse: code.clone(),
                                on_hand,
                                available: available.min(on_hand).max(0),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                crate::erp::stock_level(sku, warehouses)
            })
            .collect())
    }
}
