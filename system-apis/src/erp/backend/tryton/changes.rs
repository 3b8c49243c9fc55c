//! `ChangeFeedService` over Tryton: the feed polls `write_date` (else
//! `create_date`, for records never written) of `party.party`,
//! `sale.sale`, `account.invoice`, `stock.shipment.out`, and of
//! `product.product` with its `product.template` (one change per SKU).
//! The cursor is the last stamp returned, as RFC 3339 text with
//! microseconds; a page is cut only between different instants, so a
//! resumed read never skips a change that shares its instant with the last
//! one returned. Where the state callers read differs from Tryton's (an
//! unwound sale, a paid invoice credited in full, a credit note), the feed
//! reports what callers read.

use std::collections::{HashMap, HashSet};

use erp_connect_proto::erp::v1::{Aggregate, Change, InvoiceState};
use rust_decimal::Decimal;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    TrytonErp,
    invoices::{INVOICE_TOTALS, InvoiceTotals, credited_in_full_by},
    records::{Stamp, State, decode, flag, reference_to},
    rpc,
};
use crate::erp::{ERASED_NAME, Error};

/// Any record in the feed: `write_date`, `create_date`.
#[derive(Debug, Deserialize)]
struct Changed {
    id: i64,
    /// Null until the record is first written.
    write_date: Option<Stamp>,
    create_date: Option<Stamp>,
}

impl Changed {
    fn stamp(self) -> Option<Stamp> {
        self.write_date.or(self.create_date)
    }
}

/// `sale.sale` in the feed: what tells an unwound sale.
#[derive(Debug, Deserialize)]
struct SaleProgress {
    id: i64,
    state: String,
    shipment_state: String,
    shipments: Vec<i64>,
    invoices: Vec<i64>,
}

/// `account.invoice.line`: `origin` (the credited line, for a credit
/// note's line), `invoice`.
#[derive(Debug, Deserialize)]
struct InvoiceLine {
    origin: Option<String>,
    invoice: i64,
}

/// `party.party` in the feed: `active`, `name` (what tells an erased customer).
#[derive(Debug, Deserialize)]
struct PartyChanged {
    id: i64,
    #[serde(deserialize_with = "flag")]
    active: bool,
    name: String,
}

/// `product.template` in the feed: its stamps and `products`.
#[derive(Debug, Deserialize)]
struct TemplateChanged {
    write_date: Option<Stamp>,
    create_date: Option<Stamp>,
    products: Vec<i64>,
}

/// `product.product` in the feed: its stamps, `code`, `active`.
#[derive(Debug, Deserialize)]
struct ProductChanged {
    id: i64,
    write_date: Option<Stamp>,
    create_date: Option<Stamp>,
    code: Option<String>,
    #[serde(deserialize_with = "flag")]
    active: bool,
}

/// How a record shows in the feed where that differs from Tryton's state:
/// `Some((id, state))` reports that record's id and state instead, `None`
/// nothing at all.
type Overrides = HashMap<i64, Option<(i64, &'static str)>>;

/// Each record of `model` decoded as `T` (the feed reads one field list
/// and decodes it as what each step needs).
fn decode_all<T: DeserializeOwned>(model: &str, records: &[Value]) -> Result<Vec<T>, Error> {
    records.iter().map(|r| decode(model, r).map_err(Error::from)).collect()
}

impl TrytonErp {
    /// How changed invoice records show in the change feed, where that
    /// differs from their Tryton state: a paid invoice credited in full is
    /// `cancelled`, as it reads; a credit note is no invoice of an order,
    /// and its changes (posted, paid out) are changes of the invoice it
    /// credits, reported as that invoice's state (`None`: nothing to
    /// report). Batched, since a page may hold hundreds of invoices.
    async fn invoice_changes(&self, records: &[InvoiceTotals]) -> Result<Overrides, Error> {
        let mut view = HashMap::new();
        // Lines of paid invoices → invoice, to find the credit notes of them all at once.
        let mut paid_lines: HashMap<i64, i64> = HashMap::new();
        for r in records.iter().filter(|r| r.state == "paid" && r.total_amount.0 > Decimal::ZERO) {
            paid_lines.extend(r.lines.iter().map(|l| (*l, r.id)));
        }
        if !paid_lines.is_empty() {
            let origins: Vec<String> = paid_lines.keys().map(|l| format!("account.invoice.line,{l}")).collect();
            let credit_lines: Vec<InvoiceLine> = self
                .search_read(
                    "account.invoice.line",
                    json!([["origin", "in", origins]]),
                    None,
                    None,
                    &["origin", "invoice"],
                )
                .await?;
            let mut notes_of: HashMap<i64, Vec<i64>> = HashMap::new();
            for line in &credit_lines {
                let origin = reference_to(line.origin.as_deref(), "account.invoice.line");
                if let Some(invoice) = origin.and_then(|o| paid_lines.get(&o)) {
                    notes_of.entry(*invoice).or_default().push(line.invoice);
                }
            }
            let mut all: Vec<i64> = notes_of.values().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            let notes: HashMap<i64, InvoiceTotals> = self
                .read::<InvoiceTotals>("account.invoice", &all, INVOICE_TOTALS)
                .await?
                .into_iter()
                .map(|n| (n.id, n))
                .collect();
            for r in records.iter().filter(|r| notes_of.contains_key(&r.id)) {
                let mut note_ids = notes_of[&r.id].clone();
                note_ids.sort_unstable();
                note_ids.dedup();
                let paid = note_ids
                    .iter()
                    .filter_map(|n| notes.get(n))
                    .filter(|n| n.state == "paid")
                    .map(|n| n.total_amount.0);
                if credited_in_full_by(r.total_amount.0, paid) {
                    view.insert(r.id, Some((r.id, "cancelled")));
                }
            }
        }
        // Credit notes, rare: each is looked up on its own.
        for note in records.iter().filter(|r| r.total_amount.0 < Decimal::ZERO) {
            let lines: Vec<InvoiceLine> =
                self.read("account.invoice.line", &note.lines, &["origin", "invoice"]).await?;
            let credited_line = lines.iter().find_map(|l| reference_to(l.origin.as_deref(), "account.invoice.line"));
            let credited = match credited_line {
                Some(line) => self
                    .read::<InvoiceLine>("account.invoice.line", &[line], &["origin", "invoice"])
                    .await?
                    .first()
                    .map(|l| l.invoice),
                None => None,
            };
            let reported = match credited {
                Some(invoice) => {
                    let state = match InvoiceState::try_from(self.invoice(invoice).await?.state) {
                        Ok(InvoiceState::Draft) => "draft",
                        Ok(InvoiceState::Posted) => "posted",
                        Ok(InvoiceState::Paid) => "paid",
                        _ => "cancelled",
                    };
                    Some((invoice, state))
                }
                None => None,
            };
            view.insert(note.id, reported);
        }
        Ok(view)
    }

    /// How changed sales show in the change feed where that differs from
    /// Tryton's state: an unwound sale (see [`Self::is_unwound`]) is
    /// `cancelled`, as it reads. Cancelling its shipments writes the sale
    /// (its shipment state becomes `exception`), so it is in the feed; only
    /// those in exception are looked at further.
    async fn sale_changes(&self, records: &[SaleProgress]) -> Result<Overrides, Error> {
        let mut view = HashMap::new();
        for sale in records.iter().filter(|r| r.state == "processing" && r.shipment_state == "exception") {
            if self.is_unwound(&sale.shipments, &sale.invoices).await? {
                view.insert(sale.id, Some((sale.id, "cancelled")));
            }
        }
        Ok(view)
    }

    /// Changes of one model's records since `since`, with their stamps.
    async fn changes_of(
        &self,
        model: &str,
        aggregate: Aggregate,
        since: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<(Stamp, Change)>, Error> {
        let domain = match since {
            Some(at) => json!(["OR", [["write_date", ">", at]], [["write_date", "=", null], ["create_date", ">", at]]]),
            None => json!([]),
        };
        let order = Some(json!([["write_date", "ASC"], ["create_date", "ASC"], ["id", "ASC"]]));
        let fields: &[&str] = match aggregate {
            Aggregate::Customer => &["write_date", "create_date", "active", "name"],
            Aggregate::Invoice => &["state", "write_date", "create_date", "total_amount", "lines"],
            Aggregate::SalesOrder => &["state", "write_date", "create_date", "shipment_state", "shipments", "invoices"],
            _ => &["state", "write_date", "create_date"],
        };
        let records: Vec<Value> = match aggregate {
            // An erased customer is an inactive party, which Tryton's search
            // hides: its erasure is a change all the same.
            Aggregate::Customer => self.search_read_inactive_too(model, domain, Some(limit), order, fields).await?,
            _ => self.search_read(model, domain, Some(limit), order, fields).await?,
        };
        // Where the feed reports another state than Tryton's (see the methods).
        let overrides = match aggregate {
            Aggregate::Invoice => self.invoice_changes(&decode_all(model, &records)?).await?,
            Aggregate::SalesOrder => self.sale_changes(&decode_all(model, &records)?).await?,
            _ => HashMap::new(),
        };
        // Parties have no state: a customer that changed is `active`, or
        // `erased` or `inactive` once deactivated.
        let states: Vec<Option<State>> = match aggregate {
            Aggregate::Customer => decode_all::<PartyChanged>(model, &records)?
                .into_iter()
                .map(|p| {
                    let state = match (p.active, p.name == ERASED_NAME) {
                        (true, _) => "active",
                        (false, true) => "erased",
                        (false, false) => "inactive",
                    };
                    Some(State { id: p.id, state: state.to_owned() })
                })
                .collect(),
            _ => decode_all(model, &records)?.into_iter().map(Some).collect(),
        };
        let prefix = match aggregate {
            Aggregate::Customer => "party",
            Aggregate::SalesOrder => "sale",
            Aggregate::Invoice => "invoice",
            _ => "shipment",
        };
        let changed: Vec<Changed> = decode_all(model, &records)?;
        Ok(changed
            .into_iter()
            .zip(states)
            .filter_map(|(r, state)| {
                let id = r.id;
                let stamp = r.stamp()?;
                let (id, state) = match (overrides.get(&id), state) {
                    (Some(Some((id, state))), _) => (*id, (*state).to_owned()),
                    (Some(None), _) => return None,
                    (None, Some(state)) => (id, state.state),
                    (None, None) => (id, "active".to_owned()),
                };
                let changed_at = stamp.timestamp();
                Some((stamp, Change { aggregate: aggregate as i32, id: format!("{prefix}-{id}"), state, changed_at }))
            })
            .collect())
    }

    /// Product changes since `since`: a `product.product` written (code,
    /// active) or its `product.template` (name, list price), one change per
    /// SKU with the later record's stamp. Inactive records are searched too,
    /// so deactivating a product is a change like any other.
    async fn product_changes(&self, since: Option<&Value>, limit: usize) -> Result<Vec<(Stamp, Change)>, Error> {
        let mut domain = vec![json!(["active", "in", [true, false]])];
        if let Some(at) = since {
            domain.push(json!([
                "OR",
                [["write_date", ">", at]],
                [["write_date", "=", null], ["create_date", ">", at]]
            ]));
        }
        let order = Some(json!([["write_date", "ASC"], ["create_date", "ASC"], ["id", "ASC"]]));
        let templates: Vec<TemplateChanged> = self
            .search_read(
                "product.template",
                json!(domain),
                Some(limit),
                order.clone(),
                &["write_date", "create_date", "products"],
            )
            .await?;
        let product_fields = ["write_date", "create_date", "code", "active"];
        let mut products: Vec<ProductChanged> =
            self.search_read("product.product", json!(domain), Some(limit), order, &product_fields).await?;
        let mut stamps: HashMap<i64, Stamp> = HashMap::new();
        for template in templates {
            let Some(at) = template.write_date.or(template.create_date) else { continue };
            for id in template.products {
                stamps.insert(id, at.clone());
            }
        }
        let known: HashSet<i64> = products.iter().map(|p| p.id).collect();
        let missing: Vec<i64> = stamps.keys().copied().filter(|id| !known.contains(id)).collect();
        products.extend(self.read::<ProductChanged>("product.product", &missing, &product_fields).await?);
        Ok(products
            .into_iter()
            .filter_map(|p| {
                let sku = p.code.filter(|c| !c.is_empty())?;
                let own = p.write_date.or(p.create_date);
                // Changes are reported after `since` only; a product read
                // for its template carries the template's stamp.
                let at = match (own, stamps.get(&p.id)) {
                    (Some(own), Some(template)) => own.max(template.clone()),
                    (own, template) => own.or_else(|| template.cloned())?,
                };
                let changed_at = at.timestamp();
                let state = if p.active { "active" } else { "inactive" }.to_owned();
                Some((at, Change { aggregate: Aggregate::Product as i32, id: sku, state, changed_at }))
            })
            .collect())
    }

    pub(super) async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
        let since_value = match since {
            Some(cursor) => Some(rpc::datetime(cursor).ok_or_else(|| Error::InvalidArgument {
                field: "since_cursor",
                message: "not a cursor from a previous call".into(),
            })?),
            None => None,
        };
        let mut all = Vec::new();
        for (model, aggregate) in [
            ("party.party", Aggregate::Customer),
            ("sale.sale", Aggregate::SalesOrder),
            ("account.invoice", Aggregate::Invoice),
            ("stock.shipment.out", Aggregate::Shipment),
        ] {
            all.extend(self.changes_of(model, aggregate, since_value.as_ref(), limit).await?);
        }
        all.extend(self.product_changes(since_value.as_ref(), limit).await?);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        // Cut only between different instants, so a resumed read never skips
        // a change that shares its instant with the last one returned.
        if all.len() > limit {
            let boundary = all[limit].0.clone();
            all.retain(|(stamp, _)| *stamp < boundary);
        }
        let next = all
            .last()
            .map(|(stamp, _)| stamp.0.clone())
            .or_else(|| since.map(str::to_owned))
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into());
        Ok((all.into_iter().map(|(_, c)| c).collect(), next))
    }
}
