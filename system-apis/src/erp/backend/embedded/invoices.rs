//! `InvoiceService` over the embedded ERP: the `invoices` table (total and
//! amount due as decimal text). An invoice is created as a draft when its
//! order is confirmed ([`super::sales_orders`]) and numbered when posted; a
//! payment lowers the amount due (idempotent through the `idempotency`
//! table, by the caller's key) and the invoice is paid when nothing is
//! due. Crediting, paid or not, cancels the invoice in full and numbers a
//! credit note for it.

use erp_connect_proto::erp::v1::{Invoice, InvoiceState};
use sqlx::{AnyConnection, Row, any::AnyRow};

use super::{
    EmbeddedErp, log_change, money, next_number, now,
    receivables::move_open_amount,
    remember, replayed,
    sales_orders::{complete_order_if_settled, read_order},
    stored_decimal,
};
use crate::erp::{Error, InvoicePayment};

fn invoice_state(text: &str) -> InvoiceState {
    match text {
        "draft" => InvoiceState::Draft,
        "posted" => InvoiceState::Posted,
        "paid" => InvoiceState::Paid,
        "cancelled" => InvoiceState::Cancelled,
        _ => InvoiceState::Unspecified,
    }
}

pub(super) fn invoice_from_row(row: &AnyRow) -> Result<Invoice, sqlx::Error> {
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

pub(super) async fn read_invoice(conn: &mut AnyConnection, id: &str) -> Result<Invoice, Error> {
    let row = sqlx::query(
        "SELECT id, number, sales_order_id, customer_id, state, currency, total, amount_due FROM invoices WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("invoice", id))?;
    Ok(invoice_from_row(&row)?)
}

impl EmbeddedErp {
    pub(super) async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
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

    pub(super) async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        read_invoice(&mut *self.pool().acquire().await?, id).await
    }

    pub(super) async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
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
                move_open_amount(&mut tx, &invoice.customer_id, stored_decimal(&invoice.amount_due)?).await?;
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

    pub(super) async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
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
        move_open_amount(&mut tx, &invoice.customer_id, -payment.amount).await?;
        complete_order_if_settled(&mut tx, &invoice.sales_order_id).await?;
        tx.commit().await?;
        // As written, without reading it back.
        invoice.amount_due = money(left);
        invoice.state = invoice_state(state) as i32;
        Ok(invoice)
    }

    pub(super) async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
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
                // A paid invoice has nothing due: only a posted one moves it.
                move_open_amount(&mut tx, &invoice.customer_id, -stored_decimal(&invoice.amount_due)?).await?;
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
}
