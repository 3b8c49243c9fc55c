//! The embedded reference ERP: the ERP's tables in SQL through sqlx, on
//! SQLite (the default, `<data dir>/erp.db`) or PostgreSQL
//! (`erp.database_url = "postgres://..."`), migrated on open and seeded with
//! demo data on first start (`migrations/embedded/{sqlite,postgres}/`, the
//! same tables and seed in each dialect's DDL).
//!
//! Every write is one closure run by `Database::transact`: on SQLite in one
//! call on the store's writer thread, statements and all, rather than a
//! hand-off to sqlx's worker thread per statement while the store's one
//! writer waits. Writers queue instead of failing, a write's checks and its
//! changes see no concurrent write (no oversold stock, no order confirmed
//! twice), and the change log row of a write commits with it. Since writes commit one at a
//! time, change log sequence numbers also become visible in order: a feed
//! reader resuming after a cursor never skips a row that committed late
//! (PostgreSQL sequences alone would allow that). Money is stored as
//! decimal text.
//!
//! One module per `erp.v1` service, as in the `tryton` backend, so that the
//! two read side by side: [`catalogue`], [`inventory`], [`customers`],
//! [`sales_orders`], [`invoices`], [`shipments`], [`receivables`] and
//! [`changes`]. Each adds inherent methods to [`EmbeddedErp`]; this module
//! holds the store, what every aggregate writes with (the change log,
//! numbering, idempotency records, custom fields as stored) and the one
//! [`Connector`] impl, whose methods each open the call's span and hand
//! over to the method of the same name in the aggregate's module (Rust
//! looks up inherent methods before trait methods, so these are not
//! recursive).

mod catalogue;
mod changes;
mod customers;
mod inventory;
mod invoices;
mod receivables;
mod sales_orders;
mod shipments;

use std::{collections::HashMap, path::Path, str::FromStr};

use erp_connect_proto::erp::v1::{
    Address, Capabilities, Change, CustomValue, Customer, ErasureAction, Invoice, OpenAmount, Product, SalesOrder,
    Shipment, StockLevel,
};
use rust_decimal::Decimal;
use sqlx::{Row, any::AnyRow};

use platform::database::{Columns, Database, Migrations, Sql, idempotency};

use crate::erp::{Connector, CustomerChange, CustomerKey, Error, InvoicePayment, NewCustomer, NewSalesOrder, Page};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// The embedded ERP over one SQL database.
#[derive(Debug)]
pub struct EmbeddedErp {
    db: Database,
}

fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    humantime::parse_rfc3339(text).ok().map(prost_types::Timestamp::from)
}

/// A decimal this backend wrote itself; a bad one means a corrupt row.
fn stored_decimal(text: &str) -> Result<Decimal, Error> {
    Decimal::from_str(text).map_err(|e| Error::Backend(format!("stored amount {text:?}: {e}").into()))
}

use erp_connect_proto::money::format as money;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

impl EmbeddedErp {
    /// Opens (creating if needed) `database_url`, or `<data_dir>/erp.db`,
    /// and brings its schema and demo data up to date.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, Error> {
        Ok(Self { db: Database::open(database_url, data_dir, "erp.db", "erp", &MIGRATIONS).await? })
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.db.pool()
    }

    /// `db.system.name` of this backend's spans (OpenTelemetry semantic
    /// conventions): each connector call is one ERP call of a trace.
    fn db_system(&self) -> &'static str {
        match self.db.dialect() {
            platform::database::Dialect::Sqlite => "sqlite",
            platform::database::Dialect::Postgres => "postgresql",
        }
    }
}

fn log_change(sql: &mut dyn Sql, aggregate: &str, id: &str, state: &str) -> Result<(), Error> {
    sql.execute(
        "INSERT INTO change_log (aggregate, entity_id, state, changed_at) VALUES ($1, $2, $3, $4)",
        &[aggregate.into(), id.into(), state.into(), now().into()],
    )?;
    Ok(())
}

fn next_number(sql: &mut dyn Sql, counter: &str, prefix: &str) -> Result<String, Error> {
    let row = sql
        .fetch_optional("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value", &[counter.into()])?
        .ok_or_else(|| Error::Backend(format!("no counter {counter:?}").into()))?;
    Ok(format!("{prefix}-{:06}", row.int("value")?))
}

/// The stored result of an earlier call with this key, if any; a
/// different request under the same key is a conflict.
fn replayed(sql: &mut dyn Sql, scope: &str, key: &str, fingerprint: &str) -> Result<Option<String>, Error> {
    match idempotency::recorded_in(sql, scope, key, fingerprint)? {
        idempotency::Recorded::Nothing => Ok(None),
        idempotency::Recorded::Same(result_id) => Ok(Some(result_id)),
        idempotency::Recorded::Different => Err(Error::IdempotencyConflict { key: key.to_owned() }),
    }
}

fn remember(sql: &mut dyn Sql, scope: &str, key: &str, fingerprint: &str, result_id: &str) -> Result<(), Error> {
    Ok(idempotency::record_in(sql, scope, key, fingerprint, result_id, &now())?)
}

/// Custom field values as stored: a JSON object by name, or NULL.
type CustomFields = HashMap<String, CustomValue>;

fn stored_custom(row: &AnyRow, column: &str) -> Result<CustomFields, sqlx::Error> {
    match row.try_get::<Option<String>, _>(column)? {
        Some(json) => serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e))),
        None => Ok(CustomFields::new()),
    }
}

fn custom_to_store(values: &CustomFields) -> Option<String> {
    // Serializing a map of plain strings and numbers cannot fail.
    (!values.is_empty()).then(|| serde_json::to_string(values).unwrap_or_default())
}

impl Connector for EmbeddedErp {
    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_products"))]
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        self.list_products(after, limit).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_product"))]
    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        self.get_product(sku).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "stock_levels"))]
    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        self.stock_levels(skus).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_customer"))]
    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.get_customer(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "find_customer"))]
    async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        self.find_customer(key).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "create_customer"))]
    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        self.create_customer(new).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "update_credit_limit"))]
    async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        self.update_credit_limit(id, limit).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "add_address"))]
    async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        self.add_address(id, address).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "update_customer"))]
    async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        self.update_customer(id, change).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "erase_customer"))]
    async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        self.erase_customer(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "create_sales_order"))]
    async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        self.create_sales_order(new).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "quote_sales_order"))]
    async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.quote_sales_order(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "confirm_sales_order"))]
    async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.confirm_sales_order(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "cancel_sales_order"))]
    async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.cancel_sales_order(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_sales_order"))]
    async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.get_sales_order(id).await
    }

    async fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SalesOrder>, Error> {
        self.list_sales_orders(customer_id, after, limit).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_invoices"))]
    async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
        self.list_invoices(sales_order_id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_invoice"))]
    async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.get_invoice(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "post_invoice"))]
    async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.post_invoice(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "record_invoice_payment"))]
    async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        self.record_invoice_payment(payment).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "credit_invoice"))]
    async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.credit_invoice(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_shipments"))]
    async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        self.list_shipments(sales_order_id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "complete_shipment"))]
    async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        self.complete_shipment(id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "open_amount"))]
    async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        self.open_amount(customer_id).await
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        // The reference ERP keeps the whole contract.
        Ok(Capabilities {
            backend: "embedded".into(),
            release: env!("CARGO_PKG_VERSION").into(),
            modules: Vec::new(),
            credit_limits: true,
            // Listed by the service: the deployment's, not the ERP's.
            custom_fields: Vec::new(),
        })
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_changes"))]
    async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
        self.list_changes(since, limit).await
    }

    async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.pool()).await.is_ok()
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
        assert!(page.items.len() >= 20, "{} products", page.items.len());
        assert!(!page.more);
        assert!(page.items.iter().all(|p| p.list_price.as_ref().is_some_and(|m| m.currency == "EUR")));
        let levels = erp.stock_levels(&["WIDGET-1".into(), "NO-SUCH".into()]).await.expect("stock");
        assert_eq!(levels[0].warehouses.len(), 2);
        assert_eq!(levels[0].available, levels[0].warehouses.iter().map(|w| w.available).sum::<i64>());
        assert!(levels[1].warehouses.is_empty());
        assert_eq!(levels[1].available, 0);
    }

    #[tokio::test]
    async fn reopening_does_not_seed_twice() {
        let (dir, erp) = open_fresh().await;
        let before = erp.list_products(None, 100).await.expect("list").items.len();
        drop(erp);
        let again = EmbeddedErp::open(None, dir.path()).await.expect("reopen");
        assert_eq!(again.list_products(None, 100).await.expect("list").items.len(), before);
    }

    #[tokio::test]
    async fn pages_follow_each_other_without_gaps() {
        let (_dir, erp) = open_fresh().await;
        let first = erp.list_products(None, 5).await.expect("page 1");
        assert!(first.more);
        let last = first.items.last().expect("five products").sku.clone();
        let second = erp.list_products(Some(&last), 5).await.expect("page 2");
        assert!(second.items[0].sku > last);
        let all = erp.list_products(None, 10).await.expect("all");
        let joined: Vec<_> = first.items.iter().chain(&second.items).map(|p| &p.sku).collect();
        assert_eq!(joined, all.items.iter().map(|p| &p.sku).collect::<Vec<_>>());
    }

    /// A seeded customer (as one whose invoices predate the column) is
    /// summed invoice by invoice on its first read, and from then on moved
    /// by each invoice, without summing again.
    #[tokio::test]
    async fn a_customers_open_amount_is_summed_once_then_moved_by_each_invoice() {
        let (_dir, erp) = open_fresh().await;
        let customer = "cus_01JDEMO0000000000000000003";
        let mut invoices = Vec::new();
        for (n, quantity) in [(1, 2), (2, 1)] {
            let order = erp
                .create_sales_order(&NewSalesOrder {
                    idempotency_key: format!("open-{n}"),
                    fingerprint: format!("open-{n}"),
                    customer_id: customer.into(),
                    reference: format!("OPEN-{n}"),
                    currency: None,
                    lines: vec![crate::erp::NewLine {
                        sku: "WIDGET-1".into(),
                        quantity,
                        unit_price: Some(Decimal::new(1050, 2)),
                        custom_fields: Default::default(),
                    }],
                    custom_fields: Default::default(),
                })
                .await
                .expect("order");
            erp.quote_sales_order(&order.id).await.expect("quote");
            let confirmed = erp.confirm_sales_order(&order.id).await.expect("confirm");
            let invoice = erp.list_invoices(&confirmed.id).await.expect("invoices").remove(0);
            invoices.push(erp.post_invoice(&invoice.id).await.expect("post"));
        }
        let stored = || async {
            sqlx::query_scalar::<_, Option<String>>("SELECT open_amount FROM customers WHERE id = $1")
                .bind(customer)
                .fetch_one(erp.pool())
                .await
                .expect("column")
        };
        assert_eq!(stored().await, None, "not summed before its first read");
        assert_eq!(erp.open_amount(customer).await.expect("open").open_amount, "31.50");
        assert_eq!(stored().await.as_deref(), Some("31.50"), "kept after the first read");

        let payment = crate::erp::InvoicePayment {
            idempotency_key: "open-pay".into(),
            invoice_id: invoices[0].id.clone(),
            currency: "EUR".into(),
            amount: Decimal::new(500, 2),
        };
        erp.record_invoice_payment(&payment).await.expect("pay part");
        erp.record_invoice_payment(&payment).await.expect("a replay moves nothing");
        erp.credit_invoice(&invoices[1].id).await.expect("credit");
        erp.credit_invoice(&invoices[1].id).await.expect("a second credit moves nothing");
        assert_eq!(stored().await.as_deref(), Some("16.00"), "21.00 - 5.00 paid; 10.50 credited");
        assert_eq!(erp.open_amount(customer).await.expect("open").open_amount, "16.00");
    }
}
