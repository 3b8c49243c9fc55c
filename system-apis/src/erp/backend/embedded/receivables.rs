//! `ReceivablesService` over the embedded ERP: a customer's open amount is
//! what its posted invoices still have due, next to its credit limit. It is
//! kept on the customer (`customers.open_amount`) and moved by
//! [`move_open_amount`] in the transaction of every invoice posted, paid or
//! credited, so the credit check of each order reads one row whatever the
//! number of open invoices.

use erp_connect_proto::erp::v1::OpenAmount;
use rust_decimal::Decimal;
use sqlx::AnyConnection;

use platform::database::{Columns, Sql};

use super::{EmbeddedErp, customers::read_customer, money, stored_decimal};
use crate::erp::Error;

const STORED_OPEN_AMOUNT: &str = "SELECT open_amount FROM customers WHERE id = $1";

/// The stored open amount, or `None` for a customer whose invoices predate
/// the column (see `migrations/embedded/*/0007_open_amounts.sql`).
async fn stored_open_amount(conn: &mut AnyConnection, customer_id: &str) -> Result<Option<Decimal>, Error> {
    let stored: Option<Option<String>> =
        sqlx::query_scalar(STORED_OPEN_AMOUNT).bind(customer_id).fetch_optional(&mut *conn).await?;
    stored.flatten().map(|text| stored_decimal(&text)).transpose()
}

/// [`stored_open_amount`] in a write transaction.
fn stored_open_amount_in(sql: &mut dyn Sql, customer_id: &str) -> Result<Option<Decimal>, Error> {
    let stored = sql.fetch_optional(STORED_OPEN_AMOUNT, &[customer_id.into()])?;
    let text = stored.map(|row| row.opt_text("open_amount")).transpose()?.flatten();
    text.map(|text| stored_decimal(&text)).transpose()
}

/// What the customer's posted invoices have due, added up invoice by
/// invoice (once per customer, to fill the column).
fn sum_of_open_invoices(sql: &mut dyn Sql, customer_id: &str) -> Result<Decimal, Error> {
    let dues = sql.fetch_all(
        "SELECT amount_due FROM invoices WHERE customer_id = $1 AND state = 'posted'",
        &[customer_id.into()],
    )?;
    dues.iter().try_fold(Decimal::ZERO, |open, due| Ok(open + stored_decimal(&due.text("amount_due")?)?))
}

/// Moves the customer's open amount by `delta` inside an invoice's write
/// transaction (the store's write lock makes read-then-write safe). A
/// customer not yet summed is left alone: its first read sums the invoices,
/// this one included.
pub(super) fn move_open_amount(sql: &mut dyn Sql, customer_id: &str, delta: Decimal) -> Result<(), Error> {
    if delta.is_zero() {
        return Ok(());
    }
    if let Some(open) = stored_open_amount_in(sql, customer_id)? {
        sql.execute(
            "UPDATE customers SET open_amount = $1 WHERE id = $2",
            &[money(open + delta).into(), customer_id.into()],
        )?;
    }
    Ok(())
}

impl EmbeddedErp {
    pub(super) async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        let mut conn = self.pool().acquire().await?;
        let customer = read_customer(&mut conn, customer_id).await?;
        let open = match stored_open_amount(&mut conn, customer_id).await? {
            Some(open) => open,
            None => {
                drop(conn);
                let id = customer_id.to_owned();
                // Summed under the write lock, so no invoice moves between
                // the sum and the write; another reader may have filled it.
                self.db
                    .transact(move |sql| {
                        let open = match stored_open_amount_in(sql, &id)? {
                            Some(open) => open,
                            None => sum_of_open_invoices(sql, &id)?,
                        };
                        sql.execute(
                            "UPDATE customers SET open_amount = $1 WHERE id = $2",
                            &[money(open).into(), id.into()],
                        )?;
                        Ok::<_, Error>(open)
                    })
                    .await?
            }
        };
        Ok(OpenAmount {
            customer_id: customer.id,
            currency: customer.currency,
            open_amount: money(open),
            credit_limit: customer.credit_limit,
        })
    }
}
