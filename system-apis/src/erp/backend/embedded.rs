//! The embedded reference ERP: the ERP's tables in SQL through sqlx, on
//! SQLite (the default, `<data dir>/erp.db`) or PostgreSQL
//! (`erp.database_url = "postgres://..."`), migrated on open and seeded with
//! demo data on first start (`migrations/embedded/{sqlite,postgres}/`, the
//! same tables and seed in each dialect's DDL).
//!
//! Every write runs in one write transaction of [`crate::database`]: writers
//! queue instead of failing, a write's checks and its changes see no
//! concurrent write (no oversold stock, no order confirmed twice), and the
//! change log row of a write commits with it. Since writes commit one at a
//! time, change log sequence numbers also become visible in order: a feed
//! reader resuming after a cursor never skips a row that committed late
//! (PostgreSQL sequences alone would allow that). Money is stored as
//! decimal text.

use std::{collections::HashMap, path::Path, str::FromStr};

use erp_connect_proto::erp::v1::{
    Address, Aggregate, Capabilities, Change, CustomValue, Customer, Invoice, InvoiceState, Money, OpenAmount, Product,
    SalesOrder, SalesOrderLine, SalesOrderState, Shipment, ShipmentLine, ShipmentState, StockLevel, WarehouseStock,
};
use rust_decimal::Decimal;
use sqlx::{Any, AnyConnection, Row, Transaction, any::AnyRow};

use platform::database::{Database, Migrations};

use crate::erp::{Connector, CustomerKey, Error, InvoicePayment, NewCustomer, NewSalesOrder, Page};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

type Tx = Transaction<'static, Any>;

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

    async fn write_tx(&self) -> Result<Tx, Error> {
        Ok(self.db.begin_write().await?)
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

async fn log_change(tx: &mut Tx, aggregate: &str, id: &str, state: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO change_log (aggregate, entity_id, state, changed_at) VALUES ($1, $2, $3, $4)")
        .bind(aggregate)
        .bind(id)
        .bind(state)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn next_number(tx: &mut Tx, counter: &str, prefix: &str) -> Result<String, Error> {
    let n: i64 = sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
        .bind(counter)
        .fetch_one(&mut **tx)
        .await?;
    Ok(format!("{prefix}-{n:06}"))
}

/// The stored result of an earlier call with this key, if any; a
/// different request under the same key is a conflict.
async fn replayed(tx: &mut Tx, scope: &str, key: &str, fingerprint: &str) -> Result<Option<String>, Error> {
    let row = sqlx::query("SELECT fingerprint, result_id FROM idempotency WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        None => Ok(None),
        Some(row) if row.try_get::<String, _>("fingerprint")? == fingerprint => Ok(Some(row.try_get("result_id")?)),
        Some(_) => Err(Error::IdempotencyConflict { key: key.to_owned() }),
    }
}

async fn remember(tx: &mut Tx, scope: &str, key: &str, fingerprint: &str, result_id: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO idempotency (scope, key, fingerprint, result_id, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(result_id)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
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

async fn read_customer(conn: &mut AnyConnection, id: &str) -> Result<Customer, Error> {
    let row = sqlx::query(
        "SELECT id, external_id, name, email, currency, credit_limit, custom_fields FROM customers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("customer", id))?;
    let addresses =
        sqlx::query("SELECT id, street, city, postal_code, country FROM addresses WHERE customer_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|a| {
                Ok(Address {
                    id: a.try_get("id")?,
                    street: a.try_get("street")?,
                    city: a.try_get("city")?,
                    postal_code: a.try_get("postal_code")?,
                    country: a.try_get("country")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Customer {
        id: row.try_get("id")?,
        external_id: row.try_get::<Option<String>, _>("external_id")?.unwrap_or_default(),
        name: row.try_get("name")?,
        email: row.try_get::<Option<String>, _>("email")?.unwrap_or_default(),
        currency: row.try_get("currency")?,
        credit_limit: row.try_get("credit_limit")?,
        addresses,
        custom_fields: stored_custom(&row, "custom_fields")?,
    })
}

fn order_state(text: &str) -> SalesOrderState {
    match text {
        "draft" => SalesOrderState::Draft,
        "quotation" => SalesOrderState::Quotation,
        "processing" => SalesOrderState::Processing,
        "done" => SalesOrderState::Done,
        "cancelled" => SalesOrderState::Cancelled,
        _ => SalesOrderState::Unspecified,
    }
}

fn invoice_state(text: &str) -> InvoiceState {
    match text {
        "draft" => InvoiceState::Draft,
        "posted" => InvoiceState::Posted,
        "paid" => InvoiceState::Paid,
        "cancelled" => InvoiceState::Cancelled,
        _ => InvoiceState::Unspecified,
    }
}

fn shipment_state(text: &str) -> ShipmentState {
    match text {
        "waiting" => ShipmentState::Waiting,
        "done" => ShipmentState::Done,
        "cancelled" => ShipmentState::Cancelled,
        _ => ShipmentState::Unspecified,
    }
}

/// A sales order with its lines and the ids of its invoices and shipments,
/// in one statement: it runs inside most write transactions, where every
/// extra statement is one more hand-off to SQLite's worker thread while the
/// store's write lock is held. One row per line (a line-less order gives
/// one row of NULLs); the id lists are aggregated once per row, which
/// costs nothing next to the round trips it replaces. Ids hold no commas.
async fn read_order(conn: &mut AnyConnection, id: &str) -> Result<SalesOrder, Error> {
    let rows = sqlx::query(
        "SELECT so.id, so.number, so.reference, so.customer_id, so.state, so.currency, so.total, so.created_at, \
         so.custom_fields, l.custom_fields AS line_custom_fields, \
         (SELECT string_agg(i.id, ',' ORDER BY i.id) FROM invoices i WHERE i.sales_order_id = so.id) AS invoice_ids, \
         (SELECT string_agg(s.id, ',' ORDER BY s.id) FROM shipments s WHERE s.sales_order_id = so.id) AS shipment_ids, \
         l.sku, l.quantity, l.unit_price, l.amount \
         FROM sales_orders so LEFT JOIN sales_order_lines l ON l.sales_order_id = so.id \
         WHERE so.id = $1 ORDER BY l.line_no",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let row = rows.first().ok_or_else(|| Error::not_found("sales order", id))?;
    let mut lines = Vec::with_capacity(rows.len());
    for l in &rows {
        if let Some(sku) = l.try_get::<Option<String>, _>("sku")? {
            lines.push(SalesOrderLine {
                sku,
                quantity: l.try_get("quantity")?,
                unit_price: l.try_get("unit_price")?,
                amount: l.try_get("amount")?,
                custom_fields: stored_custom(l, "line_custom_fields")?,
            });
        }
    }
    let ids = |column: &str| -> Result<Vec<String>, sqlx::Error> {
        Ok(row
            .try_get::<Option<String>, _>(column)?
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default())
    };
    let created_at: String = row.try_get("created_at")?;
    Ok(SalesOrder {
        id: row.try_get("id")?,
        number: row.try_get::<Option<String>, _>("number")?.unwrap_or_default(),
        reference: row.try_get("reference")?,
        customer_id: row.try_get("customer_id")?,
        state: order_state(&row.try_get::<String, _>("state")?) as i32,
        currency: row.try_get("currency")?,
        lines,
        total: row.try_get("total")?,
        invoice_ids: ids("invoice_ids")?,
        shipment_ids: ids("shipment_ids")?,
        created_at: timestamp(&created_at),
        custom_fields: stored_custom(row, "custom_fields")?,
    })
}

fn invoice_from_row(row: &AnyRow) -> Result<Invoice, sqlx::Error> {
    Ok(Invoice {
        id: row.try_get("id")?,
        number: row.try_get::<Option<String>, _>("number")?.unwrap_or_default(),
        sales_order_id: row.try_get("sales_order_id")?,
        customer_id: row.try_get("customer_id")?,
        state: invoice_state(&row.try_get::<String, _>("state")?) as i32,
        currency: row.try_get("currency")?,
        total: row.try_get("total")?,
        amount_due: row.try_get("amount_due")?,
    })
}

async fn read_invoice(conn: &mut AnyConnection, id: &str) -> Result<Invoice, Error> {
    let row = sqlx::query(
        "SELECT id, number, sales_order_id, customer_id, state, currency, total, amount_due FROM invoices WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("invoice", id))?;
    Ok(invoice_from_row(&row)?)
}

async fn read_shipment(conn: &mut AnyConnection, id: &str) -> Result<Shipment, Error> {
    let row = sqlx::query("SELECT id, number, sales_order_id, state FROM shipments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found("shipment", id))?;
    let lines = sqlx::query(
        "SELECT sku, quantity, warehouse FROM shipment_lines WHERE shipment_id = $1 ORDER BY sku, warehouse",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|l| {
        Ok(ShipmentLine {
            sku: l.try_get("sku")?,
            quantity: l.try_get("quantity")?,
            warehouse: l.try_get("warehouse")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Shipment {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        sales_order_id: row.try_get("sales_order_id")?,
        state: shipment_state(&row.try_get::<String, _>("state")?) as i32,
        lines,
    })
}

async fn order_state_of(tx: &mut Tx, id: &str) -> Result<String, Error> {
    sqlx::query_scalar("SELECT state FROM sales_orders WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("sales order", id))
}

async fn set_order_state(tx: &mut Tx, id: &str, state: &str) -> Result<(), Error> {
    sqlx::query("UPDATE sales_orders SET state = $1 WHERE id = $2").bind(state).bind(id).execute(&mut **tx).await?;
    log_change(tx, "sales_order", id, state).await
}

/// An order is done once every invoice is paid and every shipment shipped.
async fn complete_order_if_settled(tx: &mut Tx, order_id: &str) -> Result<(), Error> {
    let open: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM invoices WHERE sales_order_id = $1 AND state NOT IN ('paid', 'cancelled'))
              + (SELECT COUNT(*) FROM shipments WHERE sales_order_id = $1 AND state NOT IN ('done', 'cancelled'))",
    )
    .bind(order_id)
    .fetch_one(&mut **tx)
    .await?;
    if open == 0 && order_state_of(tx, order_id).await? == "processing" {
        set_order_state(tx, order_id, "done").await?;
    }
    Ok(())
}

impl Connector for EmbeddedErp {
    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_products"))]
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
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

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_product"))]
    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
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

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "stock_levels"))]
    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
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
                StockLevel {
                    sku: sku.clone(),
                    on_hand: warehouses.iter().map(|w| w.on_hand).sum(),
                    available: warehouses.iter().map(|w| w.available).sum(),
                    warehouses,
                }
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_customer"))]
    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        read_customer(&mut *self.pool().acquire().await?, id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "find_customer"))]
    async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        let (sql, value) = match key {
            CustomerKey::ExternalId(id) => ("SELECT id FROM customers WHERE external_id = $1", id),
            CustomerKey::Email(email) => ("SELECT id FROM customers WHERE lower(email) = lower($1)", email),
        };
        let mut conn = self.pool().acquire().await?;
        let id: Option<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(value).fetch_optional(&mut *conn).await?;
        let id = id.ok_or_else(|| Error::not_found("customer", value.clone()))?;
        read_customer(&mut conn, &id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "create_customer"))]
    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        if let Some(id) = replayed(&mut tx, "customer", &new.idempotency_key, &new.fingerprint).await? {
            return read_customer(&mut tx, &id).await;
        }
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE (external_id IS NOT NULL AND external_id = $1) \
             OR (email IS NOT NULL AND lower(email) = lower($2))",
        )
        .bind(&new.external_id)
        .bind(&new.email)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = taken {
            return Err(Error::precondition(
                "CUSTOMER_EXISTS",
                existing,
                "a customer with this external id or e-mail already exists",
            ));
        }
        let id = new_id("cus");
        sqlx::query(
            "INSERT INTO customers (id, external_id, name, email, currency, credit_limit, created_at, custom_fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&new.external_id)
        .bind(&new.name)
        .bind(&new.email)
        .bind(&new.currency)
        .bind(money(new.credit_limit))
        .bind(now())
        .bind(custom_to_store(&new.custom_fields))
        .execute(&mut *tx)
        .await?;
        for address in &new.addresses {
            insert_address(&mut tx, &id, address).await?;
        }
        remember(&mut tx, "customer", &new.idempotency_key, &new.fingerprint, &id).await?;
        log_change(&mut tx, "customer", &id, "active").await?;
        let customer = read_customer(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "update_credit_limit"))]
    async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query("UPDATE customers SET credit_limit = $1 WHERE id = $2")
            .bind(money(limit))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::not_found("customer", id));
        }
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "add_address"))]
    async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        read_customer(&mut tx, id).await?;
        insert_address(&mut tx, id, address).await?;
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "create_sales_order"))]
    async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        let mut tx = self.write_tx().await?;
        if let Some(id) = replayed(&mut tx, "sales_order", &new.idempotency_key, &new.fingerprint).await? {
            return read_order(&mut tx, &id).await;
        }
        let customer_currency: Option<String> = sqlx::query_scalar("SELECT currency FROM customers WHERE id = $1")
            .bind(&new.customer_id)
            .fetch_optional(&mut *tx)
            .await?;
        let customer_currency = customer_currency.ok_or_else(|| Error::InvalidArgument {
            field: "customer_id",
            message: format!("no customer {:?}", new.customer_id),
        })?;
        let currency = new.currency.clone().unwrap_or_else(|| customer_currency.clone());
        if currency != customer_currency {
            return Err(Error::InvalidArgument {
                field: "currency",
                message: format!("the customer is invoiced in {customer_currency}"),
            });
        }
        let id = new_id("so");
        let mut priced = Vec::with_capacity(new.lines.len());
        for line in &new.lines {
            let row = sqlx::query("SELECT list_price, currency FROM products WHERE sku = $1 AND active = 1")
                .bind(&line.sku)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::InvalidArgument {
                    field: "lines.sku",
                    message: format!("no product with SKU {:?}", line.sku),
                })?;
            let product_currency: String = row.try_get("currency")?;
            if product_currency != currency {
                return Err(Error::InvalidArgument {
                    field: "lines.sku",
                    message: format!("{} is priced in {product_currency}, not {currency}", line.sku),
                });
            }
            let unit_price = match line.unit_price {
                Some(price) => price,
                None => stored_decimal(&row.try_get::<String, _>("list_price")?)?,
            };
            let amount = erp_connect_proto::money::round(unit_price * Decimal::from(line.quantity));
            priced.push((line, unit_price, amount));
        }
        let total: Decimal = priced.iter().map(|(_, _, amount)| *amount).sum();
        sqlx::query(
            "INSERT INTO sales_orders (id, number, reference, customer_id, state, currency, total, created_at, \
             custom_fields) VALUES ($1, NULL, $2, $3, 'draft', $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&new.reference)
        .bind(&new.customer_id)
        .bind(&currency)
        .bind(money(total))
        .bind(now())
        .bind(custom_to_store(&new.custom_fields))
        .execute(&mut *tx)
        .await?;
        for (line_no, (line, unit_price, amount)) in priced.iter().enumerate() {
            sqlx::query(
                "INSERT INTO sales_order_lines (sales_order_id, line_no, sku, quantity, unit_price, amount, \
                 custom_fields) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(i64::try_from(line_no).unwrap_or(i64::MAX))
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(unit_price.normalize().to_string())
            .bind(money(*amount))
            .bind(custom_to_store(&line.custom_fields))
            .execute(&mut *tx)
            .await?;
        }
        remember(&mut tx, "sales_order", &new.idempotency_key, &new.fingerprint, &id).await?;
        log_change(&mut tx, "sales_order", &id, "draft").await?;
        let order = read_order(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(order)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "quote_sales_order"))]
    async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let mut tx = self.write_tx().await?;
        match order_state_of(&mut tx, id).await?.as_str() {
            "draft" => {
                let number = next_number(&mut tx, "sales_order", "SO").await?;
                sqlx::query("UPDATE sales_orders SET number = $1 WHERE id = $2")
                    .bind(number)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                set_order_state(&mut tx, id, "quotation").await?;
            }
            "cancelled" => return Err(Error::precondition("CANCELLED", id, "the sales order is cancelled")),
            _ => {} // already quoted or further along: nothing to do
        }
        let order = read_order(&mut tx, id).await?;
        tx.commit().await?;
        Ok(order)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "confirm_sales_order"))]
    async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let mut tx = self.write_tx().await?;
        match order_state_of(&mut tx, id).await?.as_str() {
            "quotation" => confirm(&mut tx, id).await?,
            "draft" => return Err(Error::precondition("NOT_QUOTED", id, "quote the sales order before confirming it")),
            "cancelled" => return Err(Error::precondition("CANCELLED", id, "the sales order is cancelled")),
            _ => {} // already confirmed
        }
        let order = read_order(&mut tx, id).await?;
        tx.commit().await?;
        Ok(order)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "cancel_sales_order"))]
    async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let mut tx = self.write_tx().await?;
        match order_state_of(&mut tx, id).await?.as_str() {
            "draft" | "quotation" => set_order_state(&mut tx, id, "cancelled").await?,
            "processing" => cancel_processing(&mut tx, id).await?,
            "done" => return Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order is already done")),
            _ => {} // already cancelled
        }
        let order = read_order(&mut tx, id).await?;
        tx.commit().await?;
        Ok(order)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_sales_order"))]
    async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        read_order(&mut *self.pool().acquire().await?, id).await
    }

    async fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SalesOrder>, Error> {
        let mut conn = self.pool().acquire().await?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM sales_orders WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(customer_id)
                .bind(after.unwrap_or(""))
                .bind(fetch)
                .fetch_all(&mut *conn)
                .await?;
        let more = ids.len() > limit;
        let mut items = Vec::with_capacity(limit.min(ids.len()));
        for id in ids.iter().take(limit) {
            items.push(read_order(&mut conn, id).await?);
        }
        Ok(Page { items, more })
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_invoices"))]
    async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
        let mut conn = self.pool().acquire().await?;
        read_order(&mut conn, sales_order_id).await?;
        let rows = sqlx::query(
            "SELECT id, number, sales_order_id, customer_id, state, currency, total, amount_due \
             FROM invoices WHERE sales_order_id = $1 ORDER BY id",
        )
        .bind(sales_order_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.iter().map(invoice_from_row).collect::<Result<Vec<_>, _>>()?)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_invoice"))]
    async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        read_invoice(&mut *self.pool().acquire().await?, id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "post_invoice"))]
    async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
        let mut tx = self.write_tx().await?;
        let mut invoice = read_invoice(&mut tx, id).await?;
        match InvoiceState::try_from(invoice.state) {
            Ok(InvoiceState::Draft) => {
                let number = next_number(&mut tx, "invoice", "INV").await?;
                sqlx::query("UPDATE invoices SET state = 'posted', number = $1 WHERE id = $2")
                    .bind(&number)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                log_change(&mut tx, "invoice", id, "posted").await?;
                // As written, without reading it back (a statement less
                // while the write lock is held).
                invoice.number = number;
                invoice.state = InvoiceState::Posted as i32;
            }
            Ok(InvoiceState::Cancelled) => {
                return Err(Error::precondition("CANCELLED", id, "the invoice is cancelled"));
            }
            _ => {} // already posted
        }
        tx.commit().await?;
        Ok(invoice)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "record_invoice_payment"))]
    async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        let mut tx = self.write_tx().await?;
        let fingerprint = format!("{}|{}|{}", payment.invoice_id, payment.currency, payment.amount.normalize());
        if replayed(&mut tx, "invoice_payment", &payment.idempotency_key, &fingerprint).await?.is_some() {
            return read_invoice(&mut tx, &payment.invoice_id).await;
        }
        let mut invoice = read_invoice(&mut tx, &payment.invoice_id).await?;
        let id = &payment.invoice_id;
        let due = payment.check_against(&invoice)?;
        let left = due - payment.amount;
        let state = if left.is_zero() { "paid" } else { "posted" };
        sqlx::query("UPDATE invoices SET amount_due = $1, state = $2 WHERE id = $3")
            .bind(money(left))
            .bind(state)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        remember(&mut tx, "invoice_payment", &payment.idempotency_key, &fingerprint, id).await?;
        log_change(&mut tx, "invoice", id, state).await?;
        complete_order_if_settled(&mut tx, &invoice.sales_order_id).await?;
        tx.commit().await?;
        // As written, without reading it back.
        invoice.amount_due = money(left);
        invoice.state = invoice_state(state) as i32;
        Ok(invoice)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "credit_invoice"))]
    async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        let mut tx = self.write_tx().await?;
        let invoice = read_invoice(&mut tx, id).await?;
        match InvoiceState::try_from(invoice.state) {
            Ok(InvoiceState::Posted | InvoiceState::Paid) => {
                // In full, whatever was paid: the money going back is the
                // payment provider's business, not the ERP's.
                let number = next_number(&mut tx, "credit_note", "CN").await?;
                sqlx::query(
                    "UPDATE invoices SET state = 'cancelled', amount_due = '0.00', credit_note = $1, credited_at = $2 \
                     WHERE id = $3",
                )
                .bind(number)
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                log_change(&mut tx, "invoice", id, "cancelled").await?;
            }
            Ok(InvoiceState::Draft) => {
                return Err(Error::precondition(
                    "NOT_POSTED",
                    id,
                    "a draft invoice cannot be credited; cancel its sales order instead",
                ));
            }
            _ => {} // already credited (or cancelled as a draft): nothing to do
        }
        let invoice = read_invoice(&mut tx, id).await?;
        tx.commit().await?;
        Ok(invoice)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_shipments"))]
    async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        let mut conn = self.pool().acquire().await?;
        read_order(&mut conn, sales_order_id).await?;
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM shipments WHERE sales_order_id = $1 ORDER BY id")
            .bind(sales_order_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut shipments = Vec::with_capacity(ids.len());
        for id in &ids {
            shipments.push(read_shipment(&mut conn, id).await?);
        }
        Ok(shipments)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "complete_shipment"))]
    async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        let mut tx = self.write_tx().await?;
        let shipment = read_shipment(&mut tx, id).await?;
        match ShipmentState::try_from(shipment.state) {
            Ok(ShipmentState::Waiting) => {
                for line in &shipment.lines {
                    sqlx::query(
                        "UPDATE stock SET on_hand = on_hand - $1, reserved = reserved - $1 WHERE warehouse = $2 AND sku = $3",
                    )
                    .bind(line.quantity)
                    .bind(&line.warehouse)
                    .bind(&line.sku)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("UPDATE shipments SET state = 'done' WHERE id = $1").bind(id).execute(&mut *tx).await?;
                log_change(&mut tx, "shipment", id, "done").await?;
                complete_order_if_settled(&mut tx, &shipment.sales_order_id).await?;
            }
            Ok(ShipmentState::Cancelled) => {
                return Err(Error::precondition("CANCELLED", id, "the shipment is cancelled"));
            }
            _ => {} // already shipped
        }
        let shipment = read_shipment(&mut tx, id).await?;
        tx.commit().await?;
        Ok(shipment)
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "open_amount"))]
    async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        let mut conn = self.pool().acquire().await?;
        let customer = read_customer(&mut conn, customer_id).await?;
        let dues: Vec<String> =
            sqlx::query_scalar("SELECT amount_due FROM invoices WHERE customer_id = $1 AND state = 'posted'")
                .bind(customer_id)
                .fetch_all(&mut *conn)
                .await?;
        let mut open = Decimal::ZERO;
        for due in &dues {
            open += stored_decimal(due)?;
        }
        Ok(OpenAmount {
            customer_id: customer.id,
            currency: customer.currency,
            open_amount: money(open),
            credit_limit: customer.credit_limit,
        })
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_changes"))]
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

    async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
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

    async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.pool()).await.is_ok()
    }
}

async fn insert_address(tx: &mut Tx, customer_id: &str, address: &Address) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO addresses (id, customer_id, street, city, postal_code, country) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("adr"))
    .bind(customer_id)
    .bind(&address.street)
    .bind(&address.city)
    .bind(&address.postal_code)
    .bind(&address.country)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Quotation → processing: reserve stock (the fullest warehouse first,
/// splitting a line when one warehouse has too little), then create the
/// draft invoice and the shipment, as Tryton's confirm does.
async fn confirm(tx: &mut Tx, id: &str) -> Result<(), Error> {
    let order = read_order(tx, id).await?;
    let shipment_id = new_id("shp");
    let shipment_number = next_number(tx, "shipment", "SHP").await?;
    sqlx::query(
        "INSERT INTO shipments (id, number, sales_order_id, state, created_at) VALUES ($1, $2, $3, 'waiting', $4)",
    )
    .bind(&shipment_id)
    .bind(&shipment_number)
    .bind(id)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    for line in &order.lines {
        let rows = sqlx::query(
            "SELECT warehouse, on_hand - reserved AS available FROM stock \
             WHERE sku = $1 AND on_hand - reserved > 0 ORDER BY available DESC, warehouse",
        )
        .bind(&line.sku)
        .fetch_all(&mut **tx)
        .await?;
        let mut needed = line.quantity;
        for row in rows {
            if needed == 0 {
                break;
            }
            let available: i64 = row.try_get("available")?;
            let warehouse: String = row.try_get("warehouse")?;
            let take = available.min(needed);
            sqlx::query("UPDATE stock SET reserved = reserved + $1 WHERE warehouse = $2 AND sku = $3")
                .bind(take)
                .bind(&warehouse)
                .bind(&line.sku)
                .execute(&mut **tx)
                .await?;
            sqlx::query("INSERT INTO shipment_lines (shipment_id, sku, warehouse, quantity) VALUES ($1, $2, $3, $4)")
                .bind(&shipment_id)
                .bind(&line.sku)
                .bind(&warehouse)
                .bind(take)
                .execute(&mut **tx)
                .await?;
            needed -= take;
        }
        if needed > 0 {
            // Dropping the transaction rolls back the reservations made so far.
            return Err(Error::precondition(
                "INSUFFICIENT_STOCK",
                line.sku.clone(),
                format!("not enough stock of {}: {needed} more needed", line.sku),
            ));
        }
    }
    let invoice_id = new_id("inv");
    sqlx::query(
        "INSERT INTO invoices (id, number, sales_order_id, customer_id, state, currency, total, amount_due, created_at) \
         VALUES ($1, NULL, $2, $3, 'draft', $4, $5, $6, $7)",
    )
    .bind(&invoice_id)
    .bind(id)
    .bind(&order.customer_id)
    .bind(&order.currency)
    .bind(&order.total)
    .bind(&order.total)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    log_change(tx, "invoice", &invoice_id, "draft").await?;
    log_change(tx, "shipment", &shipment_id, "waiting").await?;
    set_order_state(tx, id, "processing").await
}

/// Processing → cancelled, while nothing has shipped or been invoiced:
/// releases the reservations and cancels the draft invoice and shipment.
async fn cancel_processing(tx: &mut Tx, id: &str) -> Result<(), Error> {
    let shipped: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM shipments WHERE sales_order_id = $1 AND state = 'done'")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
    if shipped > 0 {
        return Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order has shipped"));
    }
    let invoiced: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM invoices WHERE sales_order_id = $1 AND state IN ('posted', 'paid')")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
    if invoiced > 0 {
        return Err(Error::precondition("ALREADY_INVOICED", id, "the invoice is posted; credit it first"));
    }
    let lines = sqlx::query(
        "SELECT l.sku, l.warehouse, l.quantity FROM shipment_lines l JOIN shipments s ON s.id = l.shipment_id \
         WHERE s.sales_order_id = $1 AND s.state = 'waiting'",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    for line in lines {
        sqlx::query("UPDATE stock SET reserved = reserved - $1 WHERE warehouse = $2 AND sku = $3")
            .bind(line.try_get::<i64, _>("quantity")?)
            .bind(line.try_get::<String, _>("warehouse")?)
            .bind(line.try_get::<String, _>("sku")?)
            .execute(&mut **tx)
            .await?;
    }
    let shipments: Vec<String> = sqlx::query_scalar(
        "UPDATE shipments SET state = 'cancelled' WHERE sales_order_id = $1 AND state = 'waiting' RETURNING id",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    for shipment in &shipments {
        log_change(tx, "shipment", shipment, "cancelled").await?;
    }
    let invoices: Vec<String> = sqlx::query_scalar(
        "UPDATE invoices SET state = 'cancelled' WHERE sales_order_id = $1 AND state = 'draft' RETURNING id",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    for invoice in &invoices {
        log_change(tx, "invoice", invoice, "cancelled").await?;
    }
    set_order_state(tx, id, "cancelled").await
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
}
