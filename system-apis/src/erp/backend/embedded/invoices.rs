//! `InvoiceService` over the embedded ERP: the `invoices` table (total and
//! amount due as decimal text). An invoice is created as a draft when its
//! order is confirmed ([`super::sales_orders`]) and numbered when posted; a
//! payment lowers the amount due (idempotent through the `idempotency`
//! table, by the caller's key) and the invoice is paid when nothing is
//! due. Crediting, paid or not, cancels the invoice in full and numbers a
//! credit note for it.

use erp_connect_proto::erp::v1::{Invoice, InvoiceState};
use platform::database::{Columns, Sql};
use sqlx::AnyConnection;

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

pub(super) fn invoice_from_row(row: &impl Columns) -> Result<Invoice, sqlx::Error> {
    Ok(Invoice {
        id: row.text("id")?,
        number: row.opt_text("number")?.unwrap_or_default(),
        sales_order_id: row.text("sales_order_id")?,
        customer_id: row.text("customer_id")?,
        state: invoice_state(&row.text("state")?) as i32,
        currency: row.text("currency")?,
        total: row.text("total")?,
        amount_due: row.text("amount_due")?,
    })
}

const READ_INVOICE: &str =
    "SELECT id, number, sales_order_id, customer_id, state, currency, total, amount_due FROM invoices WHERE id = $1";

async fn read_invoice(conn: &mut AnyConnection, id: &str) -> Result<Invoice, Error> {
    let row = sqlx::query(READ_INVOICE).bind(id).fetch_optional(&mut *conn).await?;
    Ok(invoice_from_row(&row.ok_or_else(|| Error::not_found("invoice", id))?)?)
}

fn read_invoice_in(sql: &mut dyn Sql, id: &str) -> Result<Invoice, Error> {
    let row = sql.fetch_optional(READ_INVOICE, &[id.into()])?;
    Ok(invoice_from_row(&row.ok_or_else(|| Error::not_found("invoice", id))?)?)
}

fn post(sql: &mut dyn Sql, id: &str) -> Result<Invoice, Error> {
    let mut invoice = read_invoice_in(sql, id)?;
    match InvoiceState::try_from(invoice.state) {
        Ok(InvoiceState::Draft) => {
            let number = next_number(sql, "invoice", "INV")?;
            sql.execute(
                "UPDATE invoices SET state = 'posted', number = $1 WHERE id = $2",
                &[(&number).into(), id.into()],
            )?;
            log_change(sql, "invoice", id, "posted")?;
            move_open_amount(sql, &invoice.customer_id, stored_decimal(&invoice.amount_due)?)?;
            // As written, without reading it back.
            invoice.number = number;
            invoice.state = InvoiceState::Posted as i32;
            Ok(invoice)
        }
        Ok(InvoiceState::Cancelled) => Err(Error::precondition("CANCELLED", id, "the invoice is cancelled")),
        _ => Ok(invoice), // already posted
    }
}

fn pay(sql: &mut dyn Sql, payment: &InvoicePayment) -> Result<Invoice, Error> {
    let fingerprint = format!("{}|{}|{}", payment.invoice_id, payment.currency, payment.amount.normalize());
    let id = &payment.invoice_id;
    if replayed(sql, "invoice_payment", &payment.idempotency_key, &fingerprint)?.is_some() {
        return read_invoice_in(sql, id);
    }
    let mut invoice = read_invoice_in(sql, id)?;
    let due = payment.check_against(&invoice)?;
    let left = due - payment.amount;
    let state = if left.is_zero() { "paid" } else { "posted" };
    sql.execute(
        "UPDATE invoices SET amount_due = $1, state = $2 WHERE id = $3",
        &[money(left).into(), state.into(), id.into()],
    )?;
    remember(sql, "invoice_payment", &payment.idempotency_key, &fingerprint, id)?;
    log_change(sql, "invoice", id, state)?;
    move_open_amount(sql, &invoice.customer_id, -payment.amount)?;
    complete_order_if_settled(sql, &invoice.sales_order_id)?;
    // As written, without reading it back.
    invoice.amount_due = money(left);
    invoice.state = invoice_state(state) as i32;
    Ok(invoice)
}

fn credit(sql: &mut dyn Sql, id: &str) -> Result<Invoice, Error> {
    let invoice = read_invoice_in(sql, id)?;
    match InvoiceState::try_from(invoice.state) {
        Ok(InvoiceState::Posted | InvoiceState::Paid) => {
            // In full, whatever was paid: the money going back is the
            // payment provider's business, not the ERP's.
            let number = next_number(sql, "credit_note", "CN")?;
            sql.execute(
                "UPDATE invoices SET state = 'cancelled', amount_due = '0.00', credit_note = $1, credited_at = $2 \
                 WHERE id = $3",
                &[number.into(), now().into(), id.into()],
            )?;
            log_change(sql, "invoice", id, "cancelled")?;
            // A paid invoice has nothing due: only a posted one moves it.
            move_open_amount(sql, &invoice.customer_id, -stored_decimal(&invoice.amount_due)?)?;
            read_invoice_in(sql, id)
        }
        Ok(InvoiceState::Draft) => Err(Error::precondition(
            "NOT_POSTED",
            id,
            "a draft invoice cannot be credited; cancel its sales order instead",
        )),
        _ => Ok(invoice), // already credited (or cancelled as a draft): nothing to do
    }
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
        let id = id.to_owned();
        self.db.transact(move |sql| post(sql, &id)).await
    }

    pub(super) async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        let payment = payment.clone();
        self.db.transact(move |sql| pay(sql, &payment)).await
    }

    pub(super) async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        let id = id.to_owned();
        self.db.transact(move |sql| credit(sql, &id)).await
    }
}
