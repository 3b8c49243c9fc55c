//! `SalesOrderService` over the embedded ERP: `sales_orders` and their
//! `sales_order_lines`, numbered from the `counters` table when quoted.
//! The workflow is Tryton's, so the two backends read alike: draft →
//! quotation → processing → done, or cancelled. Confirming reserves the
//! stock (the fullest warehouse first, splitting a line when one warehouse
//! has too little) and creates the draft invoice and the shipment in the
//! same transaction, as Tryton's confirm does; an order is done once every
//! invoice is paid and every shipment shipped.

use erp_connect_proto::erp::v1::{SalesOrder, SalesOrderLine, SalesOrderState};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

use platform::database::{Columns, Sql};

use super::{
    EmbeddedErp, custom_to_store, log_change, money, new_id, next_number, now, remember, replayed, stored_custom,
    stored_decimal, timestamp,
};
use crate::erp::{Error, NewSalesOrder, Page};

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

/// A sales order with its lines and the ids of its invoices and shipments,
/// in one statement: it follows every write of an order, and each statement
/// is one more hand-off to SQLite's worker thread. One row per line (a
/// line-less order gives one row of NULLs); the id lists are aggregated
/// once per row, which costs nothing next to the round trips it replaces.
/// Ids hold no commas.
pub(super) async fn read_order(conn: &mut AnyConnection, id: &str) -> Result<SalesOrder, Error> {
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

pub(super) fn order_state_of(sql: &mut dyn Sql, id: &str) -> Result<String, Error> {
    let row = sql
        .fetch_optional("SELECT state FROM sales_orders WHERE id = $1", &[id.into()])?
        .ok_or_else(|| Error::not_found("sales order", id))?;
    Ok(row.text("state")?)
}

pub(super) fn set_order_state(sql: &mut dyn Sql, id: &str, state: &str) -> Result<(), Error> {
    sql.execute("UPDATE sales_orders SET state = $1 WHERE id = $2", &[state.into(), id.into()])?;
    log_change(sql, "sales_order", id, state)
}

/// An order is done once every invoice is paid and every shipment shipped.
pub(super) fn complete_order_if_settled(sql: &mut dyn Sql, order_id: &str) -> Result<(), Error> {
    let open = sql
        .fetch_optional(
            "SELECT (SELECT COUNT(*) FROM invoices WHERE sales_order_id = $1 AND state NOT IN ('paid', 'cancelled'))
                  + (SELECT COUNT(*) FROM shipments WHERE sales_order_id = $1 AND state NOT IN ('done', 'cancelled'))
                  AS open",
            &[order_id.into()],
        )?
        .map(|row| row.int("open"))
        .transpose()?
        .unwrap_or_default();
    if open == 0 && order_state_of(sql, order_id)? == "processing" {
        set_order_state(sql, order_id, "done")?;
    }
    Ok(())
}

/// Quotation → processing: reserve stock (the fullest warehouse first,
/// splitting a line when one warehouse has too little), then create the
/// draft invoice and the shipment, as Tryton's confirm does.
fn confirm(sql: &mut dyn Sql, id: &str) -> Result<(), Error> {
    let order = sql
        .fetch_optional("SELECT customer_id, currency, total FROM sales_orders WHERE id = $1", &[id.into()])?
        .ok_or_else(|| Error::not_found("sales order", id))?;
    let lines = sql.fetch_all(
        "SELECT sku, quantity FROM sales_order_lines WHERE sales_order_id = $1 ORDER BY line_no",
        &[id.into()],
    )?;
    let shipment_id = new_id("shp");
    let shipment_number = next_number(sql, "shipment", "SHP")?;
    sql.execute(
        "INSERT INTO shipments (id, number, sales_order_id, state, created_at) VALUES ($1, $2, $3, 'waiting', $4)",
        &[(&shipment_id).into(), shipment_number.into(), id.into(), now().into()],
    )?;
    for line in &lines {
        let sku = line.text("sku")?;
        let rows = sql.fetch_all(
            "SELECT warehouse, on_hand - reserved AS available FROM stock \
             WHERE sku = $1 AND on_hand - reserved > 0 ORDER BY available DESC, warehouse",
            &[(&sku).into()],
        )?;
        let mut needed = line.int("quantity")?;
        for row in rows {
            if needed == 0 {
                break;
            }
            let warehouse = row.text("warehouse")?;
            let take = row.int("available")?.min(needed);
            sql.execute(
                "UPDATE stock SET reserved = reserved + $1 WHERE warehouse = $2 AND sku = $3",
                &[take.into(), (&warehouse).into(), (&sku).into()],
            )?;
            sql.execute(
                "INSERT INTO shipment_lines (shipment_id, sku, warehouse, quantity) VALUES ($1, $2, $3, $4)",
                &[(&shipment_id).into(), (&sku).into(), warehouse.into(), take.into()],
            )?;
            needed -= take;
        }
        if needed > 0 {
            // The error undoes the reservations made so far.
            return Err(Error::precondition(
                "INSUFFICIENT_STOCK",
                sku.clone(),
                format!("not enough stock of {sku}: {needed} more needed"),
            ));
        }
    }
    let invoice_id = new_id("inv");
    let total = order.text("total")?;
    sql.execute(
        "INSERT INTO invoices (id, number, sales_order_id, customer_id, state, currency, total, amount_due, created_at) \
         VALUES ($1, NULL, $2, $3, 'draft', $4, $5, $5, $6)",
        &[(&invoice_id).into(), id.into(), order.text("customer_id")?.into(), order.text("currency")?.into(), total.into(), now().into()],
    )?;
    log_change(sql, "invoice", &invoice_id, "draft")?;
    log_change(sql, "shipment", &shipment_id, "waiting")?;
    set_order_state(sql, id, "processing")
}

/// Processing → cancelled, while nothing has shipped or been invoiced:
/// releases the reservations and cancels the draft invoice and shipment.
fn cancel_processing(sql: &mut dyn Sql, id: &str) -> Result<(), Error> {
    let count = |sql: &mut dyn Sql, query: &str| -> Result<i64, Error> {
        Ok(sql.fetch_optional(query, &[id.into()])?.map(|row| row.int("n")).transpose()?.unwrap_or_default())
    };
    if count(sql, "SELECT COUNT(*) AS n FROM shipments WHERE sales_order_id = $1 AND state = 'done'")? > 0 {
        return Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order has shipped"));
    }
    if count(sql, "SELECT COUNT(*) AS n FROM invoices WHERE sales_order_id = $1 AND state IN ('posted', 'paid')")? > 0 {
        return Err(Error::precondition("ALREADY_INVOICED", id, "the invoice is posted; credit it first"));
    }
    let lines = sql.fetch_all(
        "SELECT l.sku, l.warehouse, l.quantity FROM shipment_lines l JOIN shipments s ON s.id = l.shipment_id \
         WHERE s.sales_order_id = $1 AND s.state = 'waiting'",
        &[id.into()],
    )?;
    for line in lines {
        sql.execute(
            "UPDATE stock SET reserved = reserved - $1 WHERE warehouse = $2 AND sku = $3",
            &[line.int("quantity")?.into(), line.text("warehouse")?.into(), line.text("sku")?.into()],
        )?;
    }
    let shipments = sql.fetch_all(
        "UPDATE shipments SET state = 'cancelled' WHERE sales_order_id = $1 AND state = 'waiting' RETURNING id",
        &[id.into()],
    )?;
    for shipment in &shipments {
        log_change(sql, "shipment", &shipment.text("id")?, "cancelled")?;
    }
    let invoices = sql.fetch_all(
        "UPDATE invoices SET state = 'cancelled' WHERE sales_order_id = $1 AND state = 'draft' RETURNING id",
        &[id.into()],
    )?;
    for invoice in &invoices {
        log_change(sql, "invoice", &invoice.text("id")?, "cancelled")?;
    }
    set_order_state(sql, id, "cancelled")
}

/// Creates the draft order, or finds the one an earlier call with the same
/// key created; its id.
fn create(sql: &mut dyn Sql, new: &NewSalesOrder) -> Result<String, Error> {
    if let Some(id) = replayed(sql, "sales_order", &new.idempotency_key, &new.fingerprint)? {
        return Ok(id);
    }
    let customer_currency = sql
        .fetch_optional("SELECT currency FROM customers WHERE id = $1", &[(&new.customer_id).into()])?
        .ok_or_else(|| Error::InvalidArgument {
            field: "customer_id",
            message: format!("no customer {:?}", new.customer_id),
        })?
        .text("currency")?;
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
        let row = sql
            .fetch_optional(
                "SELECT list_price, currency FROM products WHERE sku = $1 AND active = 1",
                &[(&line.sku).into()],
            )?
            .ok_or_else(|| Error::InvalidArgument {
                field: "lines.sku",
                message: format!("no product with SKU {:?}", line.sku),
            })?;
        let product_currency = row.text("currency")?;
        if product_currency != currency {
            return Err(Error::InvalidArgument {
                field: "lines.sku",
                message: format!("{} is priced in {product_currency}, not {currency}", line.sku),
            });
        }
        let unit_price = match line.unit_price {
            Some(price) => price,
            None => stored_decimal(&row.text("list_price")?)?,
        };
        let amount = erp_connect_proto::money::round(unit_price * Decimal::from(line.quantity));
        priced.push((line, unit_price, amount));
    }
    let total: Decimal = priced.iter().map(|(_, _, amount)| *amount).sum();
    sql.execute(
        "INSERT INTO sales_orders (id, number, reference, customer_id, state, currency, total, created_at, \
         custom_fields) VALUES ($1, NULL, $2, $3, 'draft', $4, $5, $6, $7)",
        &[
            (&id).into(),
            (&new.reference).into(),
            (&new.customer_id).into(),
            currency.into(),
            money(total).into(),
            now().into(),
            custom_to_store(&new.custom_fields).into(),
        ],
    )?;
    for (line_no, (line, unit_price, amount)) in priced.iter().enumerate() {
        sql.execute(
            "INSERT INTO sales_order_lines (sales_order_id, line_no, sku, quantity, unit_price, amount, \
             custom_fields) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&id).into(),
                i64::try_from(line_no).unwrap_or(i64::MAX).into(),
                (&line.sku).into(),
                line.quantity.into(),
                unit_price.normalize().to_string().into(),
                money(*amount).into(),
                custom_to_store(&line.custom_fields).into(),
            ],
        )?;
    }
    remember(sql, "sales_order", &new.idempotency_key, &new.fingerprint, &id)?;
    log_change(sql, "sales_order", &id, "draft")?;
    Ok(id)
}

/// Draft → quotation, numbering the order.
fn quote(sql: &mut dyn Sql, id: &str) -> Result<(), Error> {
    match order_state_of(sql, id)?.as_str() {
        "draft" => {
            let number = next_number(sql, "sales_order", "SO")?;
            sql.execute("UPDATE sales_orders SET number = $1 WHERE id = $2", &[number.into(), id.into()])?;
            set_order_state(sql, id, "quotation")
        }
        "cancelled" => Err(Error::precondition("CANCELLED", id, "the sales order is cancelled")),
        _ => Ok(()), // already quoted or further along: nothing to do
    }
}

impl EmbeddedErp {
    /// Runs `change` on the order in one write transaction, then reads the
    /// order as it stands (outside the transaction: a read holds no writer).
    async fn change_order(
        &self,
        id: &str,
        change: fn(&mut dyn Sql, &str) -> Result<(), Error>,
    ) -> Result<SalesOrder, Error> {
        let owned = id.to_owned();
        self.db.transact(move |sql| change(sql, &owned)).await?;
        self.get_sales_order(id).await
    }

    pub(super) async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        let new = new.clone();
        let id = self.db.transact(move |sql| create(sql, &new)).await?;
        self.get_sales_order(&id).await
    }

    pub(super) async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.change_order(id, quote).await
    }

    pub(super) async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.change_order(id, |sql, id| match order_state_of(sql, id)?.as_str() {
            "quotation" => confirm(sql, id),
            "draft" => Err(Error::precondition("NOT_QUOTED", id, "quote the sales order before confirming it")),
            "cancelled" => Err(Error::precondition("CANCELLED", id, "the sales order is cancelled")),
            _ => Ok(()), // already confirmed
        })
        .await
    }

    pub(super) async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.change_order(id, |sql, id| match order_state_of(sql, id)?.as_str() {
            "draft" | "quotation" => set_order_state(sql, id, "cancelled"),
            "processing" => cancel_processing(sql, id),
            "done" => Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order is already done")),
            _ => Ok(()), // already cancelled
        })
        .await
    }

    pub(super) async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        read_order(&mut *self.pool().acquire().await?, id).await
    }

    pub(super) async fn list_sales_orders(
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
}
