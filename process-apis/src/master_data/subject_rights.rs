//! Data-subject requests (GDPR articles 15 and 17) for one golden record:
//! an export of everything held about the person in every connected
//! system and in erp-connect's own stores, and an erasure that anonymises
//! the person wherever the law allows and says, per system, what was done
//! and what was kept and why.
//!
//! Kept on purpose: the ERP's sales orders and invoices (bookkeeping
//! duties), erp-connect's orders without the person (their amounts are the
//! same books), the golden record's ids (so that a later change in a
//! system is not taken for a new person), the events (ids and amounts
//! only) and the audit trail (ids and field names only, never values).

use erp_connect_proto::{
    crm::v1 as crm,
    erp::v1 as erp,
    master_data::v1::{ErasureReport, SystemErasure},
};
use serde_json::{Value, json};

use super::{Error, MasterData, fields::SystemName, sync::ORIGIN};
use crate::order_to_cash::clock::now_ms;

/// Most sales orders read per page from the ERP.
const ORDERS_PAGE: i32 = 100;

fn crm_json(c: &crm::Customer) -> Value {
    json!({
        "id": c.id, "name": c.name, "email": c.email, "phone": c.phone, "vat_id": c.vat_id,
        "credit_limit": c.credit_limit,
        "contacts": c.contacts.iter().map(|k| json!({
            "id": k.id, "name": k.name, "email": k.email, "phone": k.phone, "role": k.role,
        })).collect::<Vec<_>>(),
        "addresses": c.addresses.iter().map(|a| json!({
            "id": a.id, "street": a.street, "city": a.city, "postal_code": a.postal_code, "country": a.country,
        })).collect::<Vec<_>>(),
        "version": c.version,
        "erased": c.erased_at.is_some(),
    })
}

fn erp_customer_json(c: &erp::Customer) -> Value {
    json!({
        "id": c.id, "external_id": c.external_id, "name": c.name, "email": c.email,
        "currency": c.currency, "credit_limit": c.credit_limit,
        "addresses": c.addresses.iter().map(|a| json!({
            "id": a.id, "street": a.street, "city": a.city, "postal_code": a.postal_code, "country": a.country,
        })).collect::<Vec<_>>(),
    })
}

fn sales_order_json(o: &erp::SalesOrder) -> Value {
    json!({
        "id": o.id, "number": o.number, "reference": o.reference, "customer_id": o.customer_id,
        "state": erp::SalesOrderState::try_from(o.state).map(|s| s.as_str_name()).unwrap_or_default(),
        "currency": o.currency, "total": o.total,
        "lines": o.lines.iter().map(|l| json!({
            "sku": l.sku, "quantity": l.quantity, "unit_price": l.unit_price, "amount": l.amount,
        })).collect::<Vec<_>>(),
    })
}

fn invoice_json(i: &erp::Invoice) -> Value {
    json!({
        "id": i.id, "number": i.number, "sales_order_id": i.sales_order_id, "customer_id": i.customer_id,
        "state": erp::InvoiceState::try_from(i.state).map(|s| s.as_str_name()).unwrap_or_default(),
        "currency": i.currency, "total": i.total, "amount_due": i.amount_due,
    })
}

impl MasterData {
    /// Everything held about golden record `golden`, as one JSON document.
    pub async fn export(&self, golden: &str) -> Result<Value, Error> {
        let m = &self.inner;
        let record = self.golden_record(golden).await?;
        let links = m.store.links(golden).await?;
        let s = &m.systems;
        let mut crm_customers = Vec::new();
        let mut erp_customers = Vec::new();
        let mut sales_orders = Vec::new();
        let mut invoices = Vec::new();
        let mut orders = Vec::new();
        for (system, id) in &links {
            match system {
                SystemName::Crm => {
                    let request = s.request(crm::GetCustomerRequest { id: id.clone() });
                    match s.call(s.crm().get_customer(request)).await {
                        Ok(found) => crm_customers.extend(found.customer.as_ref().map(crm_json)),
                        Err(status) if status.code() == tonic::Code::NotFound => {}
                        Err(status) => return Err(Error::System { system: *system, status }),
                    }
                }
                SystemName::Erp => {
                    let request = s.request(erp::GetCustomerRequest { id: id.clone() });
                    match s.call(s.customers().get_customer(request)).await {
                        Ok(found) => erp_customers.push(erp_customer_json(&found)),
                        Err(status) if status.code() == tonic::Code::NotFound => continue,
                        Err(status) => return Err(Error::System { system: *system, status }),
                    }
                    for order in self.erp_sales_orders(id).await? {
                        let request = s.request(erp::ListInvoicesRequest { sales_order_id: order.id.clone() });
                        let found =
                            s.call(s.invoices().list_invoices(request)).await.map_err(Error::system(*system))?;
                        invoices.extend(found.invoices.iter().map(invoice_json));
                        sales_orders.push(sales_order_json(&order));
                    }
                    for order_id in m.orders.orders_of_customer(id).await? {
                        if let Some(v) = m.orders.load(&order_id).await? {
                            orders.push(serde_json::to_value(&v.order).unwrap_or_default());
                        }
                    }
                }
            }
        }
        let quarantine = m.store.entries_about(golden, &links).await?;
        let filter = platform::audit::Filter {
            object: Some(golden.to_owned()),
            limit: platform::audit::MAX_PAGE,
            ..Default::default()
        };
        let (audit, _) = platform::audit::list(m.store.database(), &filter).await?;
        Ok(json!({
            "subject": golden,
            "exported_at_ms": now_ms(),
            "golden_record": super::service::golden_json(&record),
            "crm": {"customers": crm_customers},
            "erp": {"customers": erp_customers, "sales_orders": sales_orders, "invoices": invoices},
            "erp_connect": {
                "orders": orders,
                "master_data_quarantine": quarantine.iter().map(super::service::entry_json).collect::<Vec<_>>(),
                "audit": audit,
            },
        }))
    }

    async fn erp_sales_orders(&self, customer: &str) -> Result<Vec<erp::SalesOrder>, Error> {
        let s = &self.inner.systems;
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = s.request(erp::ListSalesOrdersRequest {
                customer_id: customer.to_owned(),
                page_size: ORDERS_PAGE,
                page_token: page_token.clone(),
            });
            let page =
                s.call(s.sales_orders().list_sales_orders(request)).await.map_err(Error::system(SystemName::Erp))?;
            all.extend(page.sales_orders);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Erases the person behind golden record `golden` in every connected
    /// system and in erp-connect's stores (see the module documentation).
    /// Safe to repeat: a second erasure finds everything erased already.
    pub async fn erase(&self, golden: &str, actor: &str, reason: &str) -> Result<ErasureReport, Error> {
        let m = &self.inner;
        self.golden_record(golden).await?;
        let _one = m.pass.lock().await;
        let links = m.store.links(golden).await?;
        let s = &m.systems;
        let mut systems = Vec::new();
        for system in SystemName::ALL {
            let ids: Vec<&String> = links.iter().filter(|(s, _)| *s == system).map(|(_, id)| id).collect();
            let mut report =
                SystemErasure { system: system.as_str().into(), outcome: "erased".into(), ..Default::default() };
            if ids.is_empty() {
                report.outcome = "not_linked".into();
            }
            for id in ids {
                match system {
                    SystemName::Crm => {
                        let request = s.request(crm::EraseCustomerRequest { id: id.clone(), origin: ORIGIN.into() });
                        match s.call(s.crm().erase_customer(request)).await {
                            Ok(_) => report.done.push(format!(
                                "customer {id}: name, e-mail, phone, VAT id, credit limit emptied; contacts and addresses deleted"
                            )),
                            Err(status) if status.code() == tonic::Code::NotFound => {
                                report.done.push(format!("customer {id}: no longer in the CRM"))
                            }
                            Err(status) => return Err(Error::System { system, status }),
                        }
                    }
                    SystemName::Erp => {
                        let request = s.request(erp::EraseCustomerRequest { id: id.clone() });
                        match s.call(s.customers().erase_customer(request)).await {
                            Ok(answer) => {
                                report.outcome = "anonymised".into();
                                for action in answer.actions {
                                    let count =
                                        if action.count > 0 { format!(" ({})", action.count) } else { String::new() };
                                    let line = format!("customer {id}: {}{count} {}", action.subject, action.outcome);
                                    if action.outcome == "kept" {
                                        report.kept.push(format!("{line}: {}", action.reason));
                                    } else {
                                        report.done.push(line);
                                    }
                                }
                            }
                            Err(status) if status.code() == tonic::Code::NotFound => {
                                report.done.push(format!("customer {id}: no longer in the ERP"))
                            }
                            Err(status) => return Err(Error::System { system, status }),
                        }
                    }
                }
            }
            systems.push(report);
        }
        let mut ours = SystemErasure { system: "erp-connect".into(), outcome: "erased".into(), ..Default::default() };
        let pseudonym = format!("erased:{golden}");
        let mut orders = 0;
        for (_, id) in links.iter().filter(|(s, _)| *s == SystemName::Erp) {
            for order_id in m.orders.orders_of_customer(id).await? {
                if m.orders.erase_customer_data(&order_id, &pseudonym).await? {
                    orders += 1;
                }
            }
        }
        let now = now_ms();
        let detail = json!({"systems": systems.iter().map(|s| json!({"system": s.system, "outcome": s.outcome})).collect::<Vec<_>>(), "reason": reason});
        let audit = platform::audit::Entry { actor, action: "master_data.erase", object: golden, detail };
        let (fields, entries) = m.store.erase(golden, &links, &audit, now).await?;
        ours.done.push(format!(
            "orders ({orders}): customer name, e-mail and shipping address removed, customer id replaced by {pseudonym}"
        ));
        ours.done.push(format!("golden record: {fields} field values deleted"));
        ours.done.push(format!("master data quarantine ({entries}): values removed"));
        ours.kept.push("orders: lines, amounts and timeline, for the books".into());
        ours.kept.push(
            "golden record ids and cross-references: ids only, so that the erased person is not taken for a new one"
                .into(),
        );
        ours.kept.push("order events and the audit trail: they hold ids and amounts, no personal data".into());
        systems.push(ours);
        tracing::info!(golden, actor, "customer erased (data-subject request)");
        let erased_at = m.store.golden(golden).await?.and_then(|g| g.erased_at).unwrap_or(now);
        Ok(ErasureReport { id: golden.to_owned(), systems, erased_at_ms: erased_at })
    }
}
