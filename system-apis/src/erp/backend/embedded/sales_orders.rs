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

use super::{
    EmbeddedErp, Tx, custom_to_store, log_change, money, new_id, next_number, now, remember, replayed, stored_custom,
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
/// in one statement: it runs inside most write transactions, where every
/// extra statement is one more hand-off to SQLite's worker thread while the
/// store's write lock is held. One row per line (a line-less order gives
/// one row of NULLs); the id lists are aggregated once per row, which
/// costs nothing next to the round trips it replaces. Ids hold no commas.
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

pub(super) async fn order_state_of(tx: &mut Tx, id: &str) -> Result<String, Error> {
    sqlx::query_scalar("SELECT state FROM sales_orders WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("sales order", id))
}

pub(super) async fn set_order_state(tx: &mut Tx, id: &str, state: &str) -> Result<(), Error> {
    sqlx::query("UPDATE sales_orders SET state = $1 WHERE id = $2").bind(state).bind(id).execute(&mut **tx).await?;
    log_change(tx, "sales_order", id, state).await
}

/// An order is done once every invoice is paid and every shipment shipped.
pub(super) async fn complete_order_if_settled(tx: &mut Tx, order_id: &str) -> Result<(), Error> {
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

impl EmbeddedErp {
    pub(super) async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
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

    pub(super) async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
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

    pub(super) async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
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

    pub(super) async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
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
