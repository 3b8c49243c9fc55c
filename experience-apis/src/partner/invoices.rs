//! `/partner/v1/invoices/{id}`: the invoice of one of the tenant's orders,
//! by the ERP invoice id an order shows in `erp.invoice_id`.

use axum::extract::State;

use crate::body::Json;
use erp_connect_proto::order_to_cash::v1::{GetInvoiceRequest, Invoice};
use serde::Serialize;

use super::Partner;
use crate::{Upstreams, error::Error, extract::ObjectId, openapi::Refusals, orders};

/// An invoice as partners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvoiceView {
    /// The ERP invoice id.
    pub id: String,
    /// The invoice number, e.g. `INV-000045`; `null` until posted.
    pub number: Option<String>,
    /// Our order id.
    pub order_id: String,
    /// `draft`, `posted`, `paid` or `cancelled`.
    pub state: String,
    /// ISO 4217 currency of the amounts.
    pub currency: String,
    /// Invoice total, a decimal string.
    pub total: String,
    /// What is still to be paid, a decimal string.
    pub amount_due: String,
}

impl From<Invoice> for InvoiceView {
    fn from(invoice: Invoice) -> Self {
        Self {
            id: invoice.id,
            number: Some(invoice.number).filter(|n| !n.is_empty()),
            order_id: invoice.order_id,
            state: invoice.state,
            currency: invoice.currency,
            total: invoice.total,
            amount_due: invoice.amount_due,
        }
    }
}

/// The invoice of one of the tenant's orders.
#[utoipa::path(get, path = "/invoices/{id}", tag = "partner", operation_id = "get_partner_invoice",
    params(("id" = String, Path, description = "ERP invoice id, from an order's erp.invoice_id")),
    responses(
        (status = 200, description = "Done", body = InvoiceView),
        (status = 404, description = "No such invoice of this tenant"),
        Refusals
    ),
    security(("bearer" = ["invoices:read"]), ("api_key" = ["invoices:read"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant, invoice_id = %id))]
pub async fn get(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Json<InvoiceView>, Error> {
    let invoice = orders::client(&upstreams)
        .get_invoice(GetInvoiceRequest { tenant: partner.tenant, invoice_id: id })
        .await
        .map_err(Error::lookup("no such invoice"))?
        .into_inner();
    Ok(Json(InvoiceView::from(invoice)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unposted_invoice_has_no_number() {
        let draft = Invoice {
            id: "45".into(),
            number: String::new(),
            order_id: "ord_1".into(),
            state: "draft".into(),
            currency: "EUR".into(),
            total: "37.50".into(),
            amount_due: "37.50".into(),
        };
        let json = serde_json::to_value(InvoiceView::from(draft)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"id": "45", "number": null, "order_id": "ord_1", "state": "draft",
                               "currency": "EUR", "total": "37.50", "amount_due": "37.50"})
        );
    }
}
