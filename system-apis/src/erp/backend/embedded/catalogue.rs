//! `ProductService` over the embedded ERP: the `products` table (SKU,
//! name, description, unit, list price as decimal text in its currency,
//! active flag as an integer, custom fields as a JSON object). Only active
//! products are listed, in pages ordered by SKU; a page token is the last
//! SKU of the page before.

use erp_connect_proto::erp::v1::{Money, Product};
use sqlx::{Row, any::AnyRow};

use super::{EmbeddedErp, stored_custom};
use crate::erp::{Error, Page};

fn product_from_row(row: &AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        uom: row.try_get("uom")?,
        list_price: Some(Money { currency: row.try_get("currency")?, amount: row.try_get("list_price")? }),
        // An integer in both dialects: the `Any` driver reads no SQLite boolean.
        active: row.try_get::<i64, _>("active")? != 0,
        custom_fields: stored_custom(row, "custom_fields")?,
    })
}

impl EmbeddedErp {
    pub(super) async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        // One extra row tells whether another page follows.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = sqlx::query(
            "SELECT sku, name, description, uom, list_price, currency, active, custom_fields \
             FROM products WHERE active = 1 AND sku > $1 ORDER BY sku LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(fetch)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit;
        let items = rows.iter().take(limit).map(product_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, more })
    }

    pub(super) async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        let row = sqlx::query(
            "SELECT sku, name, description, uom, list_price, currency, active, custom_fields FROM products \
             WHERE sku = $1",
        )
        .bind(sku)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(product_from_row(&row)?),
            None => Err(Error::not_found("product", sku)),
        }
    }
}
