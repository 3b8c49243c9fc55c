//! The embedded reference ERP: the ERP's tables in SQLite through sqlx,
//! migrated on open and seeded with demo data on first start
//! (`migrations/embedded/`).

use std::{collections::HashMap, path::Path, str::FromStr, time::Duration};

use erp_connect_proto::erp::v1::{Money, Product, StockLevel, WarehouseStock};
use sqlx::{
    Row,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow},
};

use crate::erp::{Connector, Error, ProductPage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded");

/// The embedded ERP over one SQLite database.
#[derive(Debug)]
pub struct EmbeddedErp {
    pool: SqlitePool,
}

impl EmbeddedErp {
    /// Opens (creating if needed) `database_url`, or `<data_dir>/erp.db`,
    /// and brings its schema and demo data up to date.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, Error> {
        let options = match database_url {
            Some(url) => SqliteConnectOptions::from_str(url)?,
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|source| Error::DataDir { path: data_dir.display().to_string(), source })?;
                SqliteConnectOptions::new().filename(data_dir.join("erp.db"))
            }
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn product_from_row(row: &SqliteRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        uom: row.try_get("uom")?,
        list_price: Some(Money { currency: row.try_get("currency")?, amount: row.try_get("list_price")? }),
        active: row.try_get("active")?,
    })
}

impl Connector for EmbeddedErp {
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<ProductPage, Error> {
        // One extra row tells whether another page follows.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = sqlx::query(
            "SELECT sku, name, description, uom, list_price, currency, active \
             FROM products WHERE active = 1 AND sku > ? ORDER BY sku LIMIT ?",
        )
        .bind(after.unwrap_or(""))
        .bind(fetch)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit;
        let products = rows.iter().take(limit).map(product_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(ProductPage { products, more })
    }

    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        let row =
            sqlx::query("SELECT sku, name, description, uom, list_price, currency, active FROM products WHERE sku = ?")
                .bind(sku)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(row) => Ok(product_from_row(&row)?),
            None => Err(Error::ProductNotFound { sku: sku.to_owned() }),
        }
    }

    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::QueryBuilder::new("SELECT sku, warehouse, on_hand, reserved FROM stock WHERE sku IN (");
        let mut list = query.separated(", ");
        for sku in skus {
            list.push_bind(sku);
        }
        query.push(") ORDER BY sku, warehouse");
        let rows = query.build().fetch_all(&self.pool).await?;

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
                StockLevel {
                    sku: sku.clone(),
                    on_hand: warehouses.iter().map(|w| w.on_hand).sum(),
                    available: warehouses.iter().map(|w| w.available).sum(),
                    warehouses,
                }
            })
            .collect())
    }

    async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_fresh() -> (tempfile::TempDir, EmbeddedErp) {
        let dir = tempfile::tempdir().expect("tempdir");
        let erp = EmbeddedErp::open(None, dir.path()).await.expect("open");
        (dir, erp)
    }

    #[tokio::test]
    async fn first_start_seeds_demo_data_with_prices_and_two_warehouses() {
        let (_dir, erp) = open_fresh().await;
        let page = erp.list_products(None, 100).await.expect("list");
        assert!(page.products.len() >= 20, "{} products", page.products.len());
        assert!(!page.more);
        assert!(page.products.iter().all(|p| p.list_price.as_ref().is_some_and(|m| m.currency == "EUR")));
        let levels = erp.stock_levels(&["WIDGET-1".into(), "NO-SUCH".into()]).await.expect("stock");
        assert_eq!(levels[0].warehouses.len(), 2);
        assert_eq!(levels[0].available, levels[0].warehouses.iter().map(|w| w.available).sum::<i64>());
        assert!(levels[1].warehouses.is_empty());
        assert_eq!(levels[1].available, 0);
    }

    #[tokio::test]
    async fn reopening_does_not_seed_twice() {
        let (dir, erp) = open_fresh().await;
        let before = erp.list_products(None, 100).await.expect("list").products.len();
        drop(erp);
        let again = EmbeddedErp::open(None, dir.path()).await.expect("reopen");
        assert_eq!(again.list_products(None, 100).await.expect("list").products.len(), before);
    }

    #[tokio::test]
    async fn pages_follow_each_other_without_gaps() {
        let (_dir, erp) = open_fresh().await;
        let first = erp.list_products(None, 5).await.expect("page 1");
        assert!(first.more);
        let last = first.products.last().expect("five products").sku.clone();
        let second = erp.list_products(Some(&last), 5).await.expect("page 2");
        assert!(second.products[0].sku > last);
        let all = erp.list_products(None, 10).await.expect("all");
        let joined: Vec<_> = first.products.iter().chain(&second.products).map(|p| &p.sku).collect();
        assert_eq!(joined, all.products.iter().map(|p| &p.sku).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn unknown_sku_is_not_found() {
        let (_dir, erp) = open_fresh().await;
        assert!(matches!(erp.get_product("NOPE").await, Err(Error::ProductNotFound { .. })));
    }
}
