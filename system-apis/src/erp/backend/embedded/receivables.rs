//! `ReceivablesService` over the embedded ERP: a customer's open amount is
//! what its posted invoices still have due, next to its credit limit. It is
//! kept on the customer (`customers.open_amount`) and moved by
//! [`move_open_amount`] in the transaction of every invoice posted, paid or
//! credited, so the credit check of each order reads one row whatever the
//! number of open invoices.

use erp_connect_proto::erp::v1::OpenAmount;
use rust_decimal::Decimal;
use sqlx::AnyConnection;

use super::{EmbeddedErp, Tx, customers::read_customer, money, stored_decimal};
use crate::erp::Error;

/// The stored open amount, or `None` for a customer whose invoices predate
/// the column (see `migrations/embedded/*/0007_open_amounts.sql`).
async fn stored_open_amount(conn: &mut AnyConnection, customer_id: &str) -> Result<Option<Decimal>, Error> {
    let stored: Option<Option<String>> = sqlx::query_scalar("SELECT open_amount FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    stored.flatten().map(|text| stored_decimal(&text)).transpose()
}

/// What the customer's posted invoices have due, added up invoice by
/// invoice (once per customer, to fill the column).
async fn sum_of_open_invoices(conn: &mut AnyConnection, customer_id: &str) -> Result<Decimal, Error> {
    let dues: Vec<String> =
        sqlx::query_scalar("SELECT amount_due FROM invoices WHERE customer_id = $1 AND state = 'posted'")
            .bind(customer_id)
            .fetch_all(&mut *conn)
            .await?;
    dues.iter().try_fold(Decimal::ZERO, |open, due| Ok(open + stored_decimal(due)?))
}

/// Moves the customer's open amount by `delta` inside an invoice's write
/// transaction (the store's write lock makes read-then-write safe). A
/// customer not yet summed is left alone: its first read sums the invoices,
/// this one included.
pub(super) async fn move_open_amount(tx: &mut Tx, customer_id: &str, delta: Decimal) -> Result<(), Error> {
    if delta.is_zero() {
        return Ok(());
    }
    if let Some(open) = stored_open_amount(tx, customer_id).await? {
        sqlx::query("UPDATE customers SET open_amount = $1 WHERE id = $2")
            .bind(money(open + delta))
            .bind(customer_id)
            .execute(&mut **tx)
            .await?;
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
                let mut tx = self.write_tx().await?;
                // Summed under the write lock, so no invoice moves between
                // the sum and the write; another reader may have filled it.
                let open = match stored_open_amount(&mut tx, customer_id).await? {
                    Some(open) => open,
                    None => sum_of_open_invoices(&mut tx, customer_id).await?,
                };
                sqlx::query("UPDATE customers SET open_amount = $1 WHERE id = $2")
                    .bind(money(open))
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                open
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
