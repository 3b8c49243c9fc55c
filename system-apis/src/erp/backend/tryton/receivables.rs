//! `ReceivablesService` over Tryton: a customer's open amount is the
//! `receivable` of its `party.party` (what its posted, unpaid receivable
//! move lines add up to), next to the credit limit the customer reads with.

use erp_connect_proto::{erp::v1::OpenAmount, money::format as money};
use serde::Deserialize;

use super::{TrytonErp, parse_id, records::Amount};
use crate::erp::Error;

/// `party.party`: `receivable`.
#[derive(Debug, Deserialize)]
struct ReceivableRecord {
    receivable: Amount,
}

impl TrytonErp {
    pub(super) async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        let party = parse_id("customer", "party-", customer_id)?;
        let customer = self.customer(party).await?;
        let record: ReceivableRecord = self
            .read("party.party", &[party], &["receivable"])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("customer", customer_id))?;
        Ok(OpenAmount {
            customer_id: customer.id,
            currency: customer.currency,
            open_amount: money(record.receivable.0),
            credit_limit: customer.credit_limit,
        })
    }
}
