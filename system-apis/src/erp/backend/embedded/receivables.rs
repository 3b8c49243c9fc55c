//! `ReceivablesService` over the embedded ERP: a customer's open amount is
//! what its posted invoices still have due (`invoices.amount_due`), next to
//! its credit limit.

use erp_connect_proto::erp::v1::OpenAmount;
use rust_decimal::Decimal;

use super::{EmbeddedErp, customers::read_customer, money, stored_decimal};
use crate::erp::Error;

impl EmbeddedErp {
    pub(super) async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
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
}
