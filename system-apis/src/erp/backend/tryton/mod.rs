//! The `tryton` backend: `erp.v1` over a real Tryton 8.x server through its
//! JSON-RPC API ([`rpc`]).
//!
//! Mapping: SKUs are `product.product` codes; customers are `party.party`
//! records (external id = party code, e-mail = an email contact
//! mechanism); sales orders are `sale.sale` (our idempotency key and a
//! digest of the request travel in the sale's `description`, so a retry
//! finds the order it already created); invoices are `account.invoice`
//! (paid through the `account.invoice.pay` wizard, credited through the
//! `account.invoice.credit` wizard: see [`Connector::credit_invoice`] below
//! for how a paid invoice is credited); shipments are
//! `stock.shipment.out`; warehouses are `stock.location` records of type
//! `warehouse`, named by their code. Ids are `<kind>-<tryton id>`.
//!
//! Tryton does not refuse to sell what is not in stock, so confirming
//! checks availability in the chosen warehouse first: this product never
//! oversells, whichever ERP is behind it. Lines get the product's
//! default taxes; an order's total includes them, and the change feed polls
//! `write_date`/`create_date`. The deployment's custom fields map onto
//! fields of these models ([`custom_fields`]).

pub mod custom_fields;
pub mod rpc;
#[cfg(feature = "test-support")]
pub mod test_server;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use custom_fields::Mapping;
use erp_connect_proto::custom_fields::{Definitions, Entity};

use erp_connect_proto::erp::v1::{
    Address, Aggregate, Capabilities, Change, Customer, Invoice, InvoiceState, Money, OpenAmount, Product, SalesOrder,
    SalesOrderLine, SalesOrderState, Shipment, ShipmentLine, ShipmentState, StockLevel, WarehouseStock,
};
use rpc::{Client, RpcError, as_decimal, decimal};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::erp::{Connector, CustomerKey, Error, InvoicePayment, NewCustomer, NewSalesOrder, Page};

/// `[erp.tryton]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the Tryton server, e.g. `http://127.0.0.1:8765`.
    pub url: String,
    /// Database name.
    pub database: String,
    /// Login. Default `admin`.
    #[serde(default = "default_username")]
    pub username: String,
    /// File holding the password (one line).
    pub password_file: PathBuf,
    /// Deadline of one JSON-RPC call. Default 10 s (confirming a sale takes
    /// about 0.3 s on SQLite, 0.5 s on PostgreSQL).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_username() -> String {
    "admin".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl From<RpcError> for Error {
    fn from(err: RpcError) -> Self {
        match err {
            RpcError::Unavailable(_) | RpcError::Concurrency => Error::Unavailable(Box::new(err)),
            RpcError::User { message } | RpcError::Warning { message, .. } => {
                Error::precondition("ERP_REJECTED", "", message)
            }
            err @ (RpcError::Unauthorized | RpcError::Failed { .. }) => Error::Backend(Box::new(err)),
        }
    }
}

/// The modules without which erp-connect cannot sell through Tryton.
pub const REQUIRED_MODULES: &[&str] = &["sale"];

/// Facts about the Tryton database that never change while we run.
#[derive(Debug)]
struct Setup {
    /// What the connected Tryton has, discovered when the connector first
    /// talks to it: its release and activated modules, and what the
    /// connector may use because of them. Without `credit_limits`
    /// (`party.party.credit_limit_amount`, from `sale_credit_limit` or
    /// `account_credit_limit`) customers are created without a limit and
    /// `GetOpenAmount` answers an empty `credit_limit`, so that the
    /// process tier applies its own.
    capabilities: Capabilities,
    company_currency: String,
    currency_id: i64,
    /// Warehouse id → code, ordered by code.
    warehouses: Vec<(i64, String)>,
    payment_term: Option<i64>,
    /// The deployment's custom fields, checked against Tryton's models.
    custom: Mapping,
}

/// The Tryton connector.
#[derive(Debug)]
pub struct TrytonErp {
    rpc: Client,
    setup: OnceCell<Setup>,
    custom: Arc<Definitions>,
}

const PRODUCT_FIELDS: &[&str] = &["code", "name", "description", "list_price_used", "default_uom.name", "active"];
const SALE_FIELDS: &[&str] =
    &["number", "reference", "party", "state", "lines", "total_amount", "invoices", "shipments", "create_date"];
const INVOICE_FIELDS: &[&str] =
    &["number", "party", "state", "total_amount", "amount_to_pay", "sales", "currency", "lines"];

fn ids(value: &Value) -> Vec<i64> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default()
}

fn text(record: &Value, field: &str) -> String {
    record.get(field).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn id_of(record: &Value) -> i64 {
    record.get("id").and_then(Value::as_i64).unwrap_or_default()
}

use erp_connect_proto::money::format as money;

fn amount(record: &Value, field: &str) -> Decimal {
    record.get(field).and_then(as_decimal).unwrap_or_default()
}

/// `kind-<id>` → the Tryton id, or not found.
fn parse_id(kind: &'static str, prefix: &str, id: &str) -> Result<i64, Error> {
    id.strip_prefix(prefix)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::not_found(kind, id))
}

fn quantity(value: &Value) -> i64 {
    // Tryton quantities are floats; stock of whole units is exact in them.
    value.as_f64().map_or(0, |q| q.round() as i64)
}

impl TrytonErp {
    /// A connector for `config`; it logs in on first use, so the tier
    /// starts while Tryton is still down.
    pub fn open(config: &Config, custom: Arc<Definitions>) -> Result<Self, Error> {
        let password = std::fs::read_to_string(&config.password_file)
            .map_err(|e| Error::Backend(format!("{}: {e}", config.password_file.display()).into()))?
            .trim()
            .to_owned();
        let rpc = Client::new(rpc::Settings {
            url: config.url.clone(),
            database: config.database.clone(),
            username: config.username.clone(),
            password,
            timeout: config.timeout,
        })?;
        Ok(Self { rpc, setup: OnceCell::new(), custom })
    }

    async fn discover(&self) -> Result<Capabilities, Error> {
        let release = self.rpc.server_version().await?;
        let mut modules: Vec<String> = self
            .search_read("ir.module", json!([["state", "=", "activated"]]), None, None, &["name"])
            .await?
            .iter()
            .map(|m| text(m, "name"))
            .collect();
        modules.sort();
        if let Some(missing) = REQUIRED_MODULES.iter().find(|m| !modules.iter().any(|n| n == *m)) {
            return Err(Error::precondition(
                "MISSING_MODULE",
                *missing,
                format!("the Tryton database has no activated module {missing}, which erp-connect needs"),
            ));
        }
        let party_fields = self.rpc.call("model.party.party.fields_get", vec![json!(["credit_limit_amount"])]).await?;
        let credit_limits = party_fields.get("credit_limit_amount").is_some();
        tracing::info!(%release, modules = modules.len(), credit_limits, "connected to Tryton");
        // The service lists the custom fields; they are the deployment's, not the ERP's.
        Ok(Capabilities { backend: "tryton".into(), release, modules, credit_limits, custom_fields: Vec::new() })
    }

    async fn setup(&self) -> Result<&Setup, Error> {
        self.setup
            .get_or_try_init(|| async {
                let capabilities = self.discover().await?;
                let custom = Mapping::discover(&self.rpc, &self.custom).await?;
                let company = self
                    .rpc
                    .call(
                        "model.company.company.search_read",
                        vec![json!([]), json!(0), json!(1), Value::Null, json!(["currency", "currency.code"])],
                    )
                    .await?;
                let company = company.get(0).cloned().unwrap_or_default();
                let currency_id = company.get("currency").and_then(Value::as_i64).unwrap_or_default();
                let company_currency = company
                    .get("currency.")
                    .and_then(|c| c.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("EUR")
                    .to_owned();
                let warehouses = self
                    .search_read(
                        "stock.location",
                        json!([["type", "=", "warehouse"]]),
                        None,
                        Some(json!([["code", "ASC"]])),
                        &["code"],
                    )
                    .await?
                    .iter()
                    .map(|w| (id_of(w), text(w, "code")))
                    .collect();
                let terms =
                    self.search_read("account.invoice.payment_term", json!([]), Some(1), None, &["name"]).await?;
                Ok::<_, Error>(Setup {
                    capabilities,
                    company_currency,
                    currency_id,
                    warehouses,
                    payment_term: terms.first().map(id_of),
                    custom,
                })
            })
            .await
    }

    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        limit: Option<usize>,
        order: Option<Value>,
        fields: &[&str],
    ) -> Result<Vec<Value>, Error> {
        let result = self
            .rpc
            .call(
                &format!("model.{model}.search_read"),
                vec![
                    domain,
                    json!(0),
                    limit.map_or(Value::Null, |l| json!(l)),
                    order.unwrap_or(Value::Null),
                    json!(fields),
                ],
            )
            .await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    async fn read(&self, model: &str, ids: &[i64], fields: &[&str]) -> Result<Vec<Value>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.rpc.call(&format!("model.{model}.read"), vec![json!(ids), json!(fields)]).await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    async fn read_one(&self, model: &str, kind: &'static str, id: i64, fields: &[&str]) -> Result<Value, Error> {
        // Reading a missing id raises in Tryton; searching first gives a clean not-found.
        let found = self
            .rpc
            .call(&format!("model.{model}.search"), vec![json!([["id", "=", id]]), json!(0), json!(1), Value::Null])
            .await?;
        if ids(&found).is_empty() {
            return Err(Error::not_found(kind, id.to_string()));
        }
        self.read(model, &[id], fields).await?.pop().ok_or_else(|| Error::not_found(kind, id.to_string()))
    }

    async fn button(&self, model: &str, method: &str, id: i64) -> Result<(), Error> {
        self.rpc.call(&format!("model.{model}.{method}"), vec![json!([id])]).await?;
        Ok(())
    }

    /// The product fields to read: ours and the custom fields'.
    fn product_fields(setup: &Setup) -> Vec<&str> {
        let mut fields = PRODUCT_FIELDS.to_vec();
        fields.extend(setup.custom.fields(Entity::Product));
        fields
    }

    fn product(setup: &Setup, record: &Value) -> Product {
        let currency = &setup.company_currency;
        Product {
            sku: text(record, "code"),
            name: text(record, "name"),
            description: text(record, "description"),
            uom: record
                .get("default_uom.")
                .and_then(|u| u.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("unit")
                .to_lowercase(),
            list_price: Some(Money { currency: currency.to_owned(), amount: money(amount(record, "list_price_used")) }),
            active: record.get("active").and_then(Value::as_bool).unwrap_or(true),
            custom_fields: setup.custom.read(Entity::Product, record),
        }
    }

    async fn products_by_code(&self, skus: &[String], fields: &[&str]) -> Result<HashMap<String, Value>, Error> {
        let records = self.search_read("product.product", json!([["code", "in", skus]]), None, None, fields).await?;
        Ok(records.into_iter().map(|r| (text(&r, "code"), r)).collect())
    }

    async fn customer(&self, party_id: i64) -> Result<Customer, Error> {
        let setup = self.setup().await?;
        let credit_limits = setup.capabilities.credit_limits;
        let mut fields = vec!["name", "code", "addresses", "contact_mechanisms"];
        if credit_limits {
            fields.push("credit_limit_amount");
        }
        fields.extend(setup.custom.fields(Entity::Customer));
        let party = self.read_one("party.party", "customer", party_id, &fields).await?;
        let mechanisms =
            self.read("party.contact_mechanism", &ids(&party["contact_mechanisms"]), &["type", "value"]).await?;
        let email =
            mechanisms.iter().find(|m| text(m, "type") == "email").map(|m| text(m, "value")).unwrap_or_default();
        let addresses = self
            .read("party.address", &ids(&party["addresses"]), &["street", "city", "postal_code", "country.code"])
            .await?
            .iter()
            .map(|a| Address {
                id: format!("address-{}", id_of(a)),
                street: text(a, "street"),
                city: text(a, "city"),
                postal_code: text(a, "postal_code"),
                country: a
                    .get("country.")
                    .and_then(|c| c.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect();
        Ok(Customer {
            id: format!("party-{party_id}"),
            external_id: text(&party, "code"),
            name: text(&party, "name"),
            email,
            currency: setup.company_currency.clone(),
            // Empty: the ERP keeps no credit limits (see Capabilities).
            credit_limit: if credit_limits { money(amount(&party, "credit_limit_amount")) } else { String::new() },
            addresses,
            custom_fields: setup.custom.read(Entity::Customer, &party),
        })
    }

    async fn party_by(&self, key: &CustomerKey) -> Result<Option<i64>, Error> {
        match key {
            CustomerKey::ExternalId(code) => {
                let found =
                    self.search_read("party.party", json!([["code", "=", code]]), Some(1), None, &["id"]).await?;
                Ok(found.first().map(id_of))
            }
            CustomerKey::Email(email) => {
                let found = self
                    .search_read(
                        "party.contact_mechanism",
                        json!([["type", "=", "email"], ["value", "ilike", email]]),
                        Some(1),
                        None,
                        &["party"],
                    )
                    .await?;
                Ok(found.first().and_then(|m| m.get("party")).and_then(Value::as_i64))
            }
        }
    }

    fn address_create(address: &Address) -> Value {
        json!({"street": address.street, "city": address.city, "postal_code": address.postal_code})
    }

    async fn sales_order(&self, sale_id: i64) -> Result<SalesOrder, Error> {
        let setup = self.setup().await?;
        let mut fields = SALE_FIELDS.to_vec();
        fields.extend(setup.custom.fields(Entity::SalesOrder));
        let sale = self.read_one("sale.sale", "sales order", sale_id, &fields).await?;
        let mut fields = vec!["product.code", "quantity", "unit_price", "amount"];
        fields.extend(setup.custom.fields(Entity::OrderLine));
        let lines = self.read("sale.line", &ids(&sale["lines"]), &fields).await?;
        let state = match text(&sale, "state").as_str() {
            "draft" => SalesOrderState::Draft,
            "quotation" => SalesOrderState::Quotation,
            "confirmed" | "processing" => SalesOrderState::Processing,
            "done" => SalesOrderState::Done,
            "cancelled" => SalesOrderState::Cancelled,
            _ => SalesOrderState::Unspecified,
        };
        let state = if state == SalesOrderState::Processing && self.is_unwound(&sale).await? {
            SalesOrderState::Cancelled
        } else {
            state
        };
        Ok(SalesOrder {
            id: format!("sale-{sale_id}"),
            number: text(&sale, "number"),
            reference: text(&sale, "reference"),
            customer_id: format!("party-{}", sale.get("party").and_then(Value::as_i64).unwrap_or_default()),
            state: state as i32,
            currency: setup.company_currency.clone(),
            lines: lines
                .iter()
                .map(|l| SalesOrderLine {
                    sku: l
                        .get("product.")
                        .and_then(|p| p.get("code"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    quantity: quantity(&l["quantity"]),
                    unit_price: amount(l, "unit_price").normalize().to_string(),
                    amount: money(amount(l, "amount")),
                    custom_fields: setup.custom.read(Entity::OrderLine, l),
                })
                .collect(),
            total: money(amount(&sale, "total_amount")),
            invoice_ids: ids(&sale["invoices"]).iter().map(|i| format!("invoice-{i}")).collect(),
            shipment_ids: ids(&sale["shipments"]).iter().map(|i| format!("shipment-{i}")).collect(),
            created_at: sale
                .get("create_date")
                .and_then(rpc::as_datetime)
                .and_then(|t| humantime::parse_rfc3339(&t).ok())
                .map(prost_types::Timestamp::from),
            custom_fields: setup.custom.read(Entity::SalesOrder, &sale),
        })
    }

    /// A processing sale whose every shipment was cancelled and every
    /// invoice cancelled or credited is, for callers, a cancelled order.
    /// Tryton has no way from `processing` to `cancelled`: such a sale stays
    /// `processing` with a shipment exception (and an invoice state of
    /// `paid`, since Tryton counts a credited invoice as settled), so the
    /// state is derived here, the same on every read.
    async fn is_unwound(&self, sale: &Value) -> Result<bool, Error> {
        let shipments = self.read("stock.shipment.out", &ids(&sale["shipments"]), &["state"]).await?;
        if shipments.is_empty() || shipments.iter().any(|s| text(s, "state") != "cancelled") {
            return Ok(false);
        }
        let invoices =
            self.read("account.invoice", &ids(&sale["invoices"]), &["state", "total_amount", "lines"]).await?;
        for invoice in &invoices {
            if text(invoice, "state") != "cancelled" && !self.credited_in_full(invoice).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The credit notes Tryton made of an invoice (`lines` read), whatever
    /// their state: a credit note's lines have the credited lines as origin.
    async fn credit_notes_of(&self, invoice: &Value) -> Result<Vec<Value>, Error> {
        let origins: Vec<String> = ids(&invoice["lines"]).iter().map(|l| format!("account.invoice.line,{l}")).collect();
        if origins.is_empty() {
            return Ok(Vec::new());
        }
        let lines = self
            .search_read("account.invoice.line", json!([["origin", "in", origins]]), None, None, &["invoice"])
            .await?;
        let mut notes: Vec<i64> = lines.iter().filter_map(|l| l.get("invoice").and_then(Value::as_i64)).collect();
        notes.sort_unstable();
        notes.dedup();
        self.read("account.invoice", &notes, &["state", "total_amount", "amount_to_pay", "party", "account"]).await
    }

    /// Whether a paid invoice (`state`, `total_amount`, `lines` read) was
    /// credited in full by credit notes that are themselves settled. A
    /// credited paid invoice stays `paid` in Tryton (only an unpaid one can
    /// be cancelled by a refund), so this is what tells it apart.
    async fn credited_in_full(&self, invoice: &Value) -> Result<bool, Error> {
        if text(invoice, "state") != "paid" {
            return Ok(false);
        }
        let credited: Decimal = self
            .credit_notes_of(invoice)
            .await?
            .iter()
            .filter(|n| text(n, "state") == "paid")
            .map(|n| amount(n, "total_amount"))
            .sum();
        Ok(!credited.is_zero() && credited + amount(invoice, "total_amount") == Decimal::ZERO)
    }

    /// Credits an invoice that money was paid on, in full. Tryton refuses
    /// a refund of a paid invoice ("not posted"), and a refund of a partly
    /// paid one would leave the part paid on the customer's account as a
    /// credit. So: a credit note without refund, posted; what the customer
    /// paid is paid out on the credit note (recording the money going back;
    /// the refund itself is the payment provider's); for a partly paid
    /// invoice, its open rest and the credit note's are then reconciled
    /// against each other. Both end `paid`, nothing stays open, and the
    /// invoice reads CANCELLED ([`Self::credited_in_full`]). Every step is
    /// found again on a retry: the credit note through its lines' origin,
    /// the payout through its description.
    async fn credit_and_pay_back(&self, invoice_id: i64, inv: &Value, id: &str) -> Result<(), Error> {
        let notes = self.credit_notes_of(inv).await?;
        let note = match notes.iter().find(|n| text(n, "state") != "cancelled") {
            Some(note) => id_of(note),
            None => self.credit_wizard(invoice_id, false).await?,
        };
        let fields = ["state", "total_amount", "amount_to_pay", "party", "account", "lines_to_pay", "payment_lines"];
        let mut credit = self.read_one("account.invoice", "invoice", note, &fields).await?;
        if matches!(text(&credit, "state").as_str(), "draft" | "validated") {
            self.button("account.invoice", "post", note).await?;
            credit = self.read_one("account.invoice", "invoice", note, &fields).await?;
        }
        let original = self.read_one("account.invoice", "invoice", invoice_id, &fields).await?;
        let due = if text(&original, "state") == "paid" { Decimal::ZERO } else { amount(&original, "amount_to_pay") };
        let paid = amount(&original, "total_amount") - due;
        let marker = format!("erp-connect:credit:{id}");
        let payouts =
            self.read("account.move.line", &ids(&credit["payment_lines"]), &["move_description_used"]).await?;
        if text(&credit, "state") == "posted"
            && paid > Decimal::ZERO
            && !payouts.iter().any(|l| text(l, "move_description_used") == marker)
        {
            // Paid out with a negative amount, as Tryton proposes for a credit note.
            self.pay(note, &credit["party"], &credit["account"], -paid, &marker).await?;
            credit = self.read_one("account.invoice", "invoice", note, &fields).await?;
        }
        if text(&original, "state") != "paid" || text(&credit, "state") != "paid" {
            let lines: Vec<i64> = ["lines_to_pay", "payment_lines"]
                .iter()
                .flat_map(|f| ids(&original[*f]).into_iter().chain(ids(&credit[*f])))
                .collect();
            let open: Vec<i64> = self
                .read("account.move.line", &lines, &["reconciliation"])
                .await?
                .iter()
                .filter(|l| l.get("reconciliation").is_none_or(Value::is_null))
                .map(id_of)
                .collect();
            self.reconcile(&open).await?;
        }
        Ok(())
    }

    /// Reconciles move lines that balance to zero through Tryton's
    /// `account.move.reconcile_lines` wizard (its first step reconciles at
    /// once when nothing is to be written off).
    async fn reconcile(&self, lines: &[i64]) -> Result<(), Error> {
        let Some(first) = lines.first() else { return Ok(()) };
        let mut ctx = wizard_context("account.move.line", *first);
        ctx.insert("active_ids".into(), json!(lines));
        let created =
            self.rpc.call_with_context("wizard.account.move.reconcile_lines.create", vec![], Some(&ctx)).await?;
        let session = created.get(0).cloned().unwrap_or(Value::Null);
        let reply = self
            .rpc
            .call_with_context(
                "wizard.account.move.reconcile_lines.execute",
                vec![session.clone(), json!({}), json!("start")],
                Some(&ctx),
            )
            .await;
        let _ =
            self.rpc.call_with_context("wizard.account.move.reconcile_lines.delete", vec![session], Some(&ctx)).await;
        if reply?.get("view").is_some() {
            // Tryton asks for a write-off: the lines do not balance.
            return Err(Error::Backend("the credit note and the invoice do not balance".into()));
        }
        Ok(())
    }

    /// Runs Tryton's `account.invoice.credit` wizard on one invoice and
    /// returns the credit note it made. With `refund`, Tryton also posts the
    /// credit note and cancels the invoice against it, in one transaction.
    async fn credit_wizard(&self, invoice_id: i64, refund: bool) -> Result<i64, Error> {
        let ctx = wizard_context("account.invoice", invoice_id);
        let created = self.rpc.call_with_context("wizard.account.invoice.credit.create", vec![], Some(&ctx)).await?;
        let session = created.get(0).cloned().unwrap_or(Value::Null);
        let run = async {
            self.rpc
                .call_with_context(
                    "wizard.account.invoice.credit.execute",
                    vec![session.clone(), json!({}), json!("start")],
                    Some(&ctx),
                )
                .await?;
            let reply = self
                .rpc
                .call_with_context(
                    "wizard.account.invoice.credit.execute",
                    vec![
                        session.clone(),
                        json!({"start": {"with_refund": refund, "invoice_date": null}}),
                        json!("credit"),
                    ],
                    Some(&ctx),
                )
                .await?;
            // The reply opens the new invoices: `{"actions": [[action, {"res_id": [id]}]]}`.
            reply
                .pointer("/actions/0/1/res_id/0")
                .and_then(Value::as_i64)
                .ok_or_else(|| Error::Backend("the credit wizard named no credit note".into()))
        };
        let outcome = run.await;
        let _ = self.rpc.call_with_context("wizard.account.invoice.credit.delete", vec![session], Some(&ctx)).await;
        outcome
    }

    /// Pays `amount` on an invoice through Tryton's `account.invoice.pay`
    /// wizard, with `marker` as the payment's description. A partial amount
    /// keeps the rest open. A credit note is paid out with a negative amount
    /// (what Tryton itself proposes as its amount to pay).
    async fn pay(
        &self,
        invoice_id: i64,
        party: &Value,
        account: &Value,
        amount: Decimal,
        marker: &str,
    ) -> Result<(), Error> {
        let setup = self.setup().await?;
        let methods = self.search_read("account.invoice.payment.method", json!([]), Some(1), None, &["id"]).await?;
        let method = methods.first().map(id_of).ok_or_else(|| {
            Error::precondition("NO_PAYMENT_METHOD", format!("invoice-{invoice_id}"), "Tryton has no payment method")
        })?;
        let ctx = wizard_context("account.invoice", invoice_id);
        let created = self.rpc.call_with_context("wizard.account.invoice.pay.create", vec![], Some(&ctx)).await?;
        let session = created.get(0).cloned().unwrap_or(Value::Null);
        let run = async {
            self.rpc
                .call_with_context(
                    "wizard.account.invoice.pay.execute",
                    vec![session.clone(), json!({}), json!("start")],
                    Some(&ctx),
                )
                .await?;
            let start = json!({"start": {
                "payee": party, "company": ctx_company(&self.rpc).await, "currency": setup.currency_id,
                "amount": decimal(amount), "invoice_account": account,
                "date": today(), "payment_method": method, "description": marker,
            }});
            let reply = self
                .rpc
                .call_with_context(
                    "wizard.account.invoice.pay.execute",
                    vec![session.clone(), start.clone(), json!("choice")],
                    Some(&ctx),
                )
                .await?;
            if reply.get("view").is_some() {
                // A partial payment: Tryton asks whether to keep the rest open.
                let mut ask = start.clone();
                ask["ask"] = json!({"type": "partial"});
                self.rpc
                    .call_with_context(
                        "wizard.account.invoice.pay.execute",
                        vec![session.clone(), ask, json!("pay")],
                        Some(&ctx),
                    )
                    .await?;
            }
            Ok::<_, Error>(())
        };
        let outcome = run.await;
        let _ = self.rpc.call_with_context("wizard.account.invoice.pay.delete", vec![session], Some(&ctx)).await;
        outcome
    }

    async fn invoice(&self, invoice_id: i64) -> Result<Invoice, Error> {
        let inv = self.read_one("account.invoice", "invoice", invoice_id, INVOICE_FIELDS).await?;
        let state = match text(&inv, "state").as_str() {
            "draft" | "validated" => InvoiceState::Draft,
            "posted" => InvoiceState::Posted,
            "paid" => InvoiceState::Paid,
            "cancelled" => InvoiceState::Cancelled,
            _ => InvoiceState::Unspecified,
        };
        let state = if state == InvoiceState::Paid && self.credited_in_full(&inv).await? {
            InvoiceState::Cancelled
        } else {
            state
        };
        let total = amount(&inv, "total_amount");
        let due = match state {
            InvoiceState::Draft => total,
            InvoiceState::Cancelled => Decimal::ZERO,
            _ => amount(&inv, "amount_to_pay"),
        };
        Ok(Invoice {
            id: format!("invoice-{invoice_id}"),
            number: text(&inv, "number"),
            sales_order_id: ids(&inv["sales"]).first().map(|s| format!("sale-{s}")).unwrap_or_default(),
            customer_id: format!("party-{}", inv.get("party").and_then(Value::as_i64).unwrap_or_default()),
            state: state as i32,
            currency: self.setup().await?.company_currency.clone(),
            total: money(total),
            amount_due: money(due),
        })
    }

    async fn shipment(&self, shipment_id: i64) -> Result<Shipment, Error> {
        let shp = self
            .read_one(
                "stock.shipment.out",
                "shipment",
                shipment_id,
                &["number", "state", "outgoing_moves", "warehouse.code"],
            )
            .await?;
        let moves =
            self.read("stock.move", &ids(&shp["outgoing_moves"]), &["product.code", "quantity", "origin"]).await?;
        let warehouse =
            shp.get("warehouse.").and_then(|w| w.get("code")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let sale = moves
            .iter()
            .filter_map(|m| m.get("origin").and_then(Value::as_str))
            .find_map(|o| o.strip_prefix("sale.line,"))
            .and_then(|line| line.parse::<i64>().ok());
        let sales_order_id = match sale {
            Some(line) => self
                .read("sale.line", &[line], &["sale"])
                .await?
                .first()
                .and_then(|l| l.get("sale"))
                .and_then(Value::as_i64)
                .map(|s| format!("sale-{s}"))
                .unwrap_or_default(),
            None => String::new(),
        };
        let state = match text(&shp, "state").as_str() {
            "done" => ShipmentState::Done,
            "cancelled" => ShipmentState::Cancelled,
            _ => ShipmentState::Waiting,
        };
        Ok(Shipment {
            id: format!("shipment-{shipment_id}"),
            number: text(&shp, "number"),
            sales_order_id,
            state: state as i32,
            lines: moves
                .iter()
                .map(|m| ShipmentLine {
                    sku: m
                        .get("product.")
                        .and_then(|p| p.get("code"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    quantity: quantity(&m["quantity"]),
                    warehouse: warehouse.clone(),
                })
                .collect(),
        })
    }

    /// Units available per SKU in `warehouse` (forecast: on hand minus
    /// what confirmed orders will take).
    async fn available_in(&self, warehouse: i64, skus: &[String]) -> Result<HashMap<String, (i64, i64)>, Error> {
        let mut ctx = serde_json::Map::new();
        ctx.insert("locations".into(), json!([warehouse]));
        let result = self
            .rpc
            .call_with_context(
                "model.product.product.search_read",
                vec![
                    json!([["code", "in", skus]]),
                    json!(0),
                    Value::Null,
                    Value::Null,
                    json!(["code", "quantity", "forecast_quantity"]),
                ],
                Some(&ctx),
            )
            .await?;
        Ok(result
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| (text(r, "code"), (quantity(&r["quantity"]), quantity(&r["forecast_quantity"]).max(0))))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// How changed invoice records (`state`, `total_amount`, `lines` read)
    /// show in the change feed, where that differs from their Tryton state:
    /// a paid invoice credited in full is `cancelled`, as it reads; a credit
    /// note is no invoice of an order, and its changes (posted, paid out)
    /// are changes of the invoice it credits, reported as that invoice's
    /// state (`None`: nothing to report). Batched, since a page may hold
    /// hundreds of invoices.
    async fn invoice_changes(&self, records: &[Value]) -> Result<HashMap<i64, Option<(i64, &'static str)>>, Error> {
        let mut view = HashMap::new();
        // Lines of paid invoices → invoice, to find the credit notes of them all at once.
        let mut paid_lines: HashMap<i64, i64> = HashMap::new();
        for r in records.iter().filter(|r| text(r, "state") == "paid" && amount(r, "total_amount") > Decimal::ZERO) {
            paid_lines.extend(ids(&r["lines"]).into_iter().map(|l| (l, id_of(r))));
        }
        if !paid_lines.is_empty() {
            let origins: Vec<String> = paid_lines.keys().map(|l| format!("account.invoice.line,{l}")).collect();
            let credit_lines = self
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
                let origin =
                    line.get("origin").and_then(Value::as_str).and_then(|o| o.strip_prefix("account.invoice.line,"));
                let credited = origin.and_then(|o| o.parse::<i64>().ok()).and_then(|o| paid_lines.get(&o));
                if let (Some(invoice), Some(note)) = (credited, line.get("invoice").and_then(Value::as_i64)) {
                    notes_of.entry(*invoice).or_default().push(note);
                }
            }
            let mut all: Vec<i64> = notes_of.values().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            let notes: HashMap<i64, Value> = self
                .read("account.invoice", &all, &["state", "total_amount"])
                .await?
                .into_iter()
                .map(|n| (id_of(&n), n))
                .collect();
            for r in records.iter().filter(|r| notes_of.contains_key(&id_of(r))) {
                let mut note_ids = notes_of[&id_of(r)].clone();
                note_ids.sort_unstable();
                note_ids.dedup();
                let credited: Decimal = note_ids
                    .iter()
                    .filter_map(|n| notes.get(n))
                    .filter(|n| text(n, "state") == "paid")
                    .map(|n| amount(n, "total_amount"))
                    .sum();
                if !credited.is_zero() && credited + amount(r, "total_amount") == Decimal::ZERO {
                    view.insert(id_of(r), Some((id_of(r), "cancelled")));
                }
            }
        }
        // Credit notes, rare: each is looked up on its own.
        for note in records.iter().filter(|r| amount(r, "total_amount") < Decimal::ZERO) {
            let lines = self.read("account.invoice.line", &ids(&note["lines"]), &["origin"]).await?;
            let credited_line = lines
                .iter()
                .filter_map(|l| l.get("origin").and_then(Value::as_str))
                .find_map(|o| o.strip_prefix("account.invoice.line,"))
                .and_then(|l| l.parse::<i64>().ok());
            let credited = match credited_line {
                Some(line) => self
                    .read("account.invoice.line", &[line], &["invoice"])
                    .await?
                    .first()
                    .and_then(|l| l.get("invoice").and_then(Value::as_i64)),
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
            view.insert(id_of(note), reported);
        }
        Ok(view)
    }

    /// How changed sales (`state`, `shipment_state`, `shipments`,
    /// `invoices` read) show in the change feed where that differs from
    /// Tryton's state: an unwound sale (see [`Self::is_unwound`]) is
    /// `cancelled`, as it reads. Cancelling its shipments writes the sale
    /// (its shipment state becomes `exception`), so it is in the feed; only
    /// those in exception are looked at further.
    async fn sale_changes(&self, records: &[Value]) -> Result<HashMap<i64, Option<(i64, &'static str)>>, Error> {
        let mut view = HashMap::new();
        for sale in
            records.iter().filter(|r| text(r, "state") == "processing" && text(r, "shipment_state") == "exception")
        {
            if self.is_unwound(sale).await? {
                view.insert(id_of(sale), Some((id_of(sale), "cancelled")));
            }
        }
        Ok(view)
    }

    async fn changes_of(
        &self,
        model: &str,
        aggregate: Aggregate,
        since: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<(String, Change)>, Error> {
        let domain = match since {
            Some(at) => json!(["OR", [["write_date", ">", at]], [["write_date", "=", null], ["create_date", ">", at]]]),
            None => json!([]),
        };
        let records = self
            .search_read(
                model,
                domain,
                Some(limit),
                Some(json!([["write_date", "ASC"], ["create_date", "ASC"], ["id", "ASC"]])),
                match aggregate {
                    Aggregate::Customer => &["write_date", "create_date"],
                    Aggregate::Invoice => &["state", "write_date", "create_date", "total_amount", "lines"],
                    Aggregate::SalesOrder => {
                        &["state", "write_date", "create_date", "shipment_state", "shipments", "invoices"]
                    }
                    _ => &["state", "write_date", "create_date"],
                },
            )
            .await?;
        // Where the feed reports another state than Tryton's (see the methods).
        let overrides = match aggregate {
            Aggregate::Invoice => self.invoice_changes(&records).await?,
            Aggregate::SalesOrder => self.sale_changes(&records).await?,
            _ => HashMap::new(),
        };
        let prefix = match aggregate {
            Aggregate::Customer => "party",
            Aggregate::SalesOrder => "sale",
            Aggregate::Invoice => "invoice",
            _ => "shipment",
        };
        Ok(records
            .iter()
            .filter_map(|r| {
                let stamp = r
                    .get("write_date")
                    .and_then(rpc::as_datetime)
                    .or_else(|| r.get("create_date").and_then(rpc::as_datetime))?;
                let (id, state) = match overrides.get(&id_of(r)) {
                    Some(Some((id, state))) => (*id, (*state).to_owned()),
                    Some(None) => return None,
                    None if aggregate == Aggregate::Customer => (id_of(r), "active".to_owned()),
                    None => (id_of(r), text(r, "state")),
                };
                Some((
                    stamp.clone(),
                    Change {
                        aggregate: aggregate as i32,
                        id: format!("{prefix}-{id}"),
                        state,
                        changed_at: humantime::parse_rfc3339(&stamp).ok().map(prost_types::Timestamp::from),
                    },
                ))
            })
            .collect())
    }
}

impl TrytonErp {
    /// Product changes since `since`: a `product.product` written (code,
    /// active) or its `product.template` (name, list price), one change per
    /// SKU with the later record's stamp. Inactive records are searched too,
    /// so deactivating a product is a change like any other.
    async fn product_changes(&self, since: Option<&Value>, limit: usize) -> Result<Vec<(String, Change)>, Error> {
        let mut domain = vec![json!(["active", "in", [true, false]])];
        if let Some(at) = since {
            domain.push(json!([
                "OR",
                [["write_date", ">", at]],
                [["write_date", "=", null], ["create_date", ">", at]]
            ]));
        }
        let order = Some(json!([["write_date", "ASC"], ["create_date", "ASC"], ["id", "ASC"]]));
        let templates = self
            .search_read(
                "product.template",
                json!(domain),
                Some(limit),
                order.clone(),
                &["write_date", "create_date", "products"],
            )
            .await?;
        let mut products = self
            .search_read(
                "product.product",
                json!(domain),
                Some(limit),
                order,
                &["write_date", "create_date", "code", "active"],
            )
            .await?;
        let stamp = |r: &Value| {
            r.get("write_date").and_then(rpc::as_datetime).or_else(|| r.get("create_date").and_then(rpc::as_datetime))
        };
        let mut stamps: HashMap<i64, String> = HashMap::new();
        for template in &templates {
            let Some(at) = stamp(template) else { continue };
            for id in ids(template.get("products").unwrap_or(&Value::Null)) {
                stamps.insert(id, at.clone());
            }
        }
        let known: std::collections::HashSet<i64> = products.iter().map(id_of).collect();
        let missing: Vec<i64> = stamps.keys().copied().filter(|id| !known.contains(id)).collect();
        products
            .extend(self.read("product.product", &missing, &["write_date", "create_date", "code", "active"]).await?);
        Ok(products
            .iter()
            .filter_map(|p| {
                let sku = text(p, "code");
                let own = stamp(p);
                let at = match (own, stamps.get(&id_of(p))) {
                    (Some(own), Some(template)) => own.max(template.clone()),
                    (own, template) => own.or_else(|| template.cloned())?,
                };
                // Changes are reported after `since` only; a product read
                // for its template carries the template's stamp.
                (!sku.is_empty()).then(|| {
                    let active = p.get("active").and_then(Value::as_bool).unwrap_or(true);
                    (
                        at.clone(),
                        Change {
                            aggregate: Aggregate::Product as i32,
                            id: sku,
                            state: if active { "active" } else { "inactive" }.to_owned(),
                            changed_at: humantime::parse_rfc3339(&at).ok().map(prost_types::Timestamp::from),
                        },
                    )
                })
            })
            .collect())
    }
}

impl Connector for TrytonErp {
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        let setup = self.setup().await?;
        let mut domain = vec![json!(["salable", "=", true]), json!(["code", "!=", null])];
        if let Some(after) = after {
            domain.push(json!(["code", ">", after]));
        }
        let mut records = self
            .search_read(
                "product.product",
                json!(domain),
                Some(limit + 1),
                Some(json!([["code", "ASC"]])),
                &Self::product_fields(setup),
            )
            .await?;
        let more = records.len() > limit;
        records.truncate(limit);
        Ok(Page { items: records.iter().map(|r| Self::product(setup, r)).collect(), more })
    }

    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        let setup = self.setup().await?;
        let fields = Self::product_fields(setup);
        let found = self.search_read("product.product", json!([["code", "=", sku]]), Some(1), None, &fields).await?;
        found.first().map(|r| Self::product(setup, r)).ok_or_else(|| Error::not_found("product", sku))
    }

    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let setup = self.setup().await?;
        let known = self.products_by_code(skus, &["code"]).await?;
        let mut per_warehouse = Vec::with_capacity(setup.warehouses.len());
        for (id, code) in &setup.warehouses {
            per_warehouse.push((code.clone(), self.available_in(*id, skus).await?));
        }
        Ok(skus
            .iter()
            .map(|sku| {
                let warehouses: Vec<WarehouseStock> = if known.contains_key(sku) {
                    per_warehouse
                        .iter()
                        .map(|(code, levels)| {
                            let (on_hand, available) = levels.get(sku).copied().unwrap_or_default();
                            WarehouseStock {
                                warehouse: code.clone(),
                                on_hand,
                                available: available.min(on_hand).max(0),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                StockLevel {
                    sku: sku.clone(),
                    on_hand: warehouses.iter().map(|w| w.on_hand).sum(),
                    available: warehouses.iter().map(|w| w.available).sum(),
                    warehouses,
                }
            })
            .collect())
    }

    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.customer(parse_id("customer", "party-", id)?).await
    }

    async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        let id = self.party_by(key).await?.ok_or_else(|| {
            Error::not_found(
                "customer",
                match key {
                    CustomerKey::ExternalId(v) | CustomerKey::Email(v) => v.clone(),
                },
            )
        })?;
        self.customer(id).await
    }

    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        // Replays are found by what identifies the customer: its external id,
        // else its e-mail. The fingerprint is compared through the fields.
        let existing = match (&new.external_id, &new.email) {
            (Some(ext), _) => self.party_by(&CustomerKey::ExternalId(ext.clone())).await?,
            (None, Some(email)) => self.party_by(&CustomerKey::Email(email.clone())).await?,
            (None, None) => None,
        };
        if let Some(id) = existing {
            let customer = self.customer(id).await?;
            let same = customer.name == new.name
                && new.email.as_deref().is_none_or(|e| e.eq_ignore_ascii_case(&customer.email));
            return if same {
                Ok(customer)
            } else {
                Err(Error::IdempotencyConflict { key: new.idempotency_key.clone() })
            };
        }
        let mut party = json!({"name": new.name});
        if let Some(ext) = &new.external_id {
            party["code"] = json!(ext);
        }
        if let Some(email) = &new.email {
            party["contact_mechanisms"] = json!([["create", [{"type": "email", "value": email}]]]);
        }
        if !new.addresses.is_empty() {
            party["addresses"] =
                json!([["create", new.addresses.iter().map(Self::address_create).collect::<Vec<_>>()]]);
        }
        // In the create itself, not a write after it: a caller that died
        // between the two would find the party again, without its limit.
        if !new.credit_limit.is_zero() && self.setup().await?.capabilities.credit_limits {
            party["credit_limit_amount"] = decimal(new.credit_limit);
        }
        if let Value::Object(record) = &mut party {
            self.setup().await?.custom.write(Entity::Customer, &new.custom_fields, record);
        }
        let created = self.rpc.call("model.party.party.create", vec![json!([party])]).await?;
        let id = ids(&created).first().copied().ok_or_else(|| Error::Backend("party.create returned no id".into()))?;
        self.customer(id).await
    }

    async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        let party = parse_id("customer", "party-", id)?;
        if !self.setup().await?.capabilities.credit_limits {
            return Err(Error::precondition(
                "NO_CREDIT_LIMITS",
                id,
                "this Tryton keeps no credit limits (activate sale_credit_limit or account_credit_limit)",
            ));
        }
        self.customer(party).await?;
        self.rpc
            .call("model.party.party.write", vec![json!([party]), json!({"credit_limit_amount": decimal(limit)})])
            .await?;
        self.customer(party).await
    }

    async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        let party = parse_id("customer", "party-", id)?;
        self.customer(party).await?;
        self.rpc
            .call(
                "model.party.party.write",
                vec![json!([party]), json!({"addresses": [["create", [Self::address_create(address)]]]})],
            )
            .await?;
        self.customer(party).await
    }

    async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        // The sale's description carries our idempotency key and a digest
        // of the request, so that a retry finds the sale it created and a
        // reuse of the key for another request is told apart; every other
        // field, `comment` included, stays the deployment's.
        let prefix = format!("erp-connect:{}#", new.idempotency_key);
        let digest: String =
            Sha256::digest(new.fingerprint.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect();
        // `like` may match more (`%` or `_` in a key): the prefix is compared exactly below.
        let found = self
            .search_read(
                "sale.sale",
                json!([["description", "like", format!("{prefix}%")]]),
                None,
                None,
                &["description"],
            )
            .await?;
        if let Some(sale) = found.iter().find(|s| text(s, "description").starts_with(&prefix)) {
            return if text(sale, "description")[prefix.len()..] == digest {
                self.sales_order(id_of(sale)).await
            } else {
                Err(Error::IdempotencyConflict { key: new.idempotency_key.clone() })
            };
        }
        let marker = format!("{prefix}{digest}");
        let setup = self.setup().await?;
        let party = parse_id("customer", "party-", &new.customer_id).map_err(|_| Error::InvalidArgument {
            field: "customer_id",
            message: format!("no customer {:?}", new.customer_id),
        })?;
        let customer = self.customer(party).await.map_err(|e| match e {
            Error::NotFound { .. } => {
                Error::InvalidArgument { field: "customer_id", message: format!("no customer {:?}", new.customer_id) }
            }
            other => other,
        })?;
        if new.currency.as_ref().is_some_and(|c| *c != setup.company_currency) {
            return Err(Error::InvalidArgument {
                field: "currency",
                message: format!("the customer is invoiced in {}", setup.company_currency),
            });
        }
        let address = customer
            .addresses
            .first()
            .and_then(|a| a.id.strip_prefix("address-"))
            .and_then(|a| a.parse::<i64>().ok())
            .ok_or_else(|| Error::precondition("NO_ADDRESS", &new.customer_id, "the customer has no address"))?;
        // The party's own payment term, else the first one Tryton has.
        let party_terms = self.read("party.party", &[party], &["customer_payment_term"]).await?;
        let payment_term = party_terms
            .first()
            .and_then(|p| p.get("customer_payment_term"))
            .and_then(Value::as_i64)
            .or(setup.payment_term);
        let skus: Vec<String> = new.lines.iter().map(|l| l.sku.clone()).collect();
        let products = self
            .products_by_code(
                &skus,
                &[
                    "code",
                    "list_price_used",
                    "sale_uom",
                    "default_uom",
                    "salable",
                    "account_category.customer_taxes_used",
                ],
            )
            .await?;
        let mut lines = Vec::with_capacity(new.lines.len());
        for line in &new.lines {
            let product = products
                .get(&line.sku)
                .filter(|p| p.get("salable").and_then(Value::as_bool).unwrap_or(true))
                .ok_or_else(|| Error::InvalidArgument {
                    field: "lines.sku",
                    message: format!("no product with SKU {:?}", line.sku),
                })?;
            let unit = product.get("sale_uom").or_else(|| product.get("default_uom")).cloned().unwrap_or(Value::Null);
            let price = line.unit_price.unwrap_or_else(|| amount(product, "list_price_used"));
            // RPC create runs no on_change, so the product's default taxes are set
            // here, as Tryton's own client would; posting warns without them.
            let taxes = product
                .get("account_category.")
                .and_then(|c| c.get("customer_taxes_used"))
                .map(ids)
                .unwrap_or_default();
            let mut record = json!({"type": "line", "product": id_of(product), "quantity": line.quantity as f64,
                "unit": unit, "unit_price": decimal(price), "taxes": [["add", taxes]]});
            if let Value::Object(record) = &mut record {
                setup.custom.write(Entity::OrderLine, &line.custom_fields, record);
            }
            lines.push(record);
        }
        // Pick the warehouse that can serve the whole order, else the first.
        let mut warehouse = setup.warehouses.first().map(|(id, _)| *id);
        for (id, _) in &setup.warehouses {
            let levels = self.available_in(*id, &skus).await?;
            if new.lines.iter().all(|l| levels.get(&l.sku).is_some_and(|(_, a)| *a >= l.quantity)) {
                warehouse = Some(*id);
                break;
            }
        }
        let mut sale = json!({
            "party": party, "invoice_address": address, "shipment_address": address,
            "payment_term": payment_term, "warehouse": warehouse, "currency": setup.currency_id,
            "reference": new.reference, "description": marker,
            "lines": [["create", lines]],
        });
        if let Value::Object(record) = &mut sale {
            setup.custom.write(Entity::SalesOrder, &new.custom_fields, record);
        }
        let created = self.rpc.call("model.sale.sale.create", vec![json!([sale])]).await?;
        let id = ids(&created).first().copied().ok_or_else(|| Error::Backend("sale.create returned no id".into()))?;
        self.sales_order(id).await
    }

    async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let sale_id = parse_id("sales order", "sale-", id)?;
        let order = self.sales_order(sale_id).await?;
        match SalesOrderState::try_from(order.state) {
            Ok(SalesOrderState::Draft) => {
                self.button("sale.sale", "quote", sale_id).await?;
                self.sales_order(sale_id).await
            }
            Ok(SalesOrderState::Cancelled) => Err(Error::precondition("CANCELLED", id, "the sales order is cancelled")),
            _ => Ok(order),
        }
    }

    async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let sale_id = parse_id("sales order", "sale-", id)?;
        let order = self.sales_order(sale_id).await?;
        match SalesOrderState::try_from(order.state) {
            Ok(SalesOrderState::Quotation) => {}
            Ok(SalesOrderState::Draft) => {
                return Err(Error::precondition("NOT_QUOTED", id, "quote the sales order before confirming it"));
            }
            Ok(SalesOrderState::Cancelled) => {
                return Err(Error::precondition("CANCELLED", id, "the sales order is cancelled"));
            }
            _ => return Ok(order),
        }
        let sale = self.read("sale.sale", &[sale_id], &["warehouse"]).await?;
        let warehouse = sale.first().and_then(|s| s.get("warehouse")).and_then(Value::as_i64).unwrap_or_default();
        let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
        let levels = self.available_in(warehouse, &skus).await?;
        for line in &order.lines {
            let needed: i64 = order.lines.iter().filter(|l| l.sku == line.sku).map(|l| l.quantity).sum();
            let available = levels.get(&line.sku).map_or(0, |(_, a)| *a);
            if available < needed {
                return Err(Error::precondition(
                    "INSUFFICIENT_STOCK",
                    line.sku.clone(),
                    format!("not enough stock of {}: {} more needed", line.sku, needed - available),
                ));
            }
        }
        match self.rpc.call("model.sale.sale.confirm", vec![json!([sale_id])]).await {
            Ok(_) => {}
            // With sale_credit_limit, a sale over the party's credit limit
            // raises this warning (for users in the credit-limit group, as
            // admin is; others get a UserError, which stays ERP_REJECTED).
            // The process tier decides on credit before it creates an order,
            // so the connector answers the warning as a Tryton user would
            // (a one-time `res.user.warning`, consumed by the retry) and
            // confirms again, once.
            Err(RpcError::Warning { name, .. }) if name.ends_with(".credit_limit_amount") => {
                let user = self.rpc.user_id().await?;
                self.rpc
                    .call("model.res.user.warning.create", vec![json!([{"user": user, "name": name, "always": false}])])
                    .await?;
                self.button("sale.sale", "confirm", sale_id).await?;
            }
            Err(err) => return Err(err.into()),
        }
        // Confirm queues `process`; when it fails the call still succeeds and
        // the sale stays `confirmed`, so run it once more and look.
        let after = self.read("sale.sale", &[sale_id], &["state"]).await?;
        if after.first().is_some_and(|s| text(s, "state") == "confirmed") {
            self.button("sale.sale", "process", sale_id).await?;
        }
        self.sales_order(sale_id).await
    }

    async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        let sale_id = parse_id("sales order", "sale-", id)?;
        let order = self.sales_order(sale_id).await?;
        match SalesOrderState::try_from(order.state) {
            Ok(SalesOrderState::Draft | SalesOrderState::Quotation) => {
                if order.state == SalesOrderState::Quotation as i32 {
                    self.button("sale.sale", "draft", sale_id).await?;
                }
                self.button("sale.sale", "cancel", sale_id).await?;
            }
            Ok(SalesOrderState::Processing) => {
                let shipments = self
                    .read(
                        "stock.shipment.out",
                        &order
                            .shipment_ids
                            .iter()
                            .filter_map(|s| parse_id("shipment", "shipment-", s).ok())
                            .collect::<Vec<_>>(),
                        &["state"],
                    )
                    .await?;
                if shipments.iter().any(|s| text(s, "state") == "done") {
                    return Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order has shipped"));
                }
                let mut drafts = Vec::new();
                for invoice_id in order.invoice_ids.iter().filter_map(|i| parse_id("invoice", "invoice-", i).ok()) {
                    let invoice = self.invoice(invoice_id).await?;
                    match InvoiceState::try_from(invoice.state) {
                        Ok(InvoiceState::Posted | InvoiceState::Paid) => {
                            return Err(Error::precondition(
                                "ALREADY_INVOICED",
                                id,
                                "the invoice is posted; credit it first",
                            ));
                        }
                        Ok(InvoiceState::Draft) => drafts.push(invoice_id),
                        _ => {} // cancelled or credited
                    }
                }
                for shipment in shipments.iter().filter(|s| text(s, "state") != "cancelled") {
                    self.button("stock.shipment.out", "cancel", id_of(shipment)).await?;
                }
                for invoice_id in drafts {
                    self.button("account.invoice", "cancel", invoice_id).await?;
                }
            }
            Ok(SalesOrderState::Done) => {
                return Err(Error::precondition("ALREADY_SHIPPED", id, "the sales order is already done"));
            }
            _ => {}
        }
        self.sales_order(sale_id).await
    }

    async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.sales_order(parse_id("sales order", "sale-", id)?).await
    }

    async fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SalesOrder>, Error> {
        let party = parse_id("customer", "party-", customer_id)?;
        let after_id = match after {
            Some(a) => parse_id("sales order", "sale-", a).map_err(|_| Error::InvalidArgument {
                field: "page_token",
                message: "not a token from a previous page".into(),
            })?,
            None => 0,
        };
        let found = self
            .search_read(
                "sale.sale",
                json!([["party", "=", party], ["id", ">", after_id]]),
                Some(limit + 1),
                Some(json!([["id", "ASC"]])),
                &["id"],
            )
            .await?;
        let more = found.len() > limit;
        let mut items = Vec::new();
        for sale in found.iter().take(limit) {
            items.push(self.sales_order(id_of(sale)).await?);
        }
        Ok(Page { items, more })
    }

    async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
        let order = self.get_sales_order(sales_order_id).await?;
        let mut invoices = Vec::new();
        for id in &order.invoice_ids {
            invoices.push(self.invoice(parse_id("invoice", "invoice-", id)?).await?);
        }
        Ok(invoices)
    }

    async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.invoice(parse_id("invoice", "invoice-", id)?).await
    }

    async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
        let invoice_id = parse_id("invoice", "invoice-", id)?;
        let invoice = self.invoice(invoice_id).await?;
        match InvoiceState::try_from(invoice.state) {
            Ok(InvoiceState::Draft) => {
                self.button("account.invoice", "post", invoice_id).await?;
                self.invoice(invoice_id).await
            }
            Ok(InvoiceState::Cancelled) => Err(Error::precondition("CANCELLED", id, "the invoice is cancelled")),
            _ => Ok(invoice),
        }
    }

    async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        let invoice_id = parse_id("invoice", "invoice-", &payment.invoice_id)?;
        let marker = format!("erp-connect:{}", payment.idempotency_key);
        let inv = self
            .read_one("account.invoice", "invoice", invoice_id, &["payment_lines", "party", "account", "state"])
            .await?;
        // The pay wizard writes its description on the payment's move.
        let paid_lines =
            self.read("account.move.line", &ids(&inv["payment_lines"]), &["move_description_used"]).await?;
        if paid_lines.iter().any(|l| text(l, "move_description_used") == marker) {
            return self.invoice(invoice_id).await;
        }
        let invoice = self.invoice(invoice_id).await?;
        payment.check_against(&invoice)?;
        self.pay(invoice_id, &inv["party"], &inv["account"], payment.amount, &marker).await?;
        self.invoice(invoice_id).await
    }

    async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        let invoice_id = parse_id("invoice", "invoice-", id)?;
        let inv = self
            .read_one("account.invoice", "invoice", invoice_id, &["state", "total_amount", "lines", "payment_lines"])
            .await?;
        match text(&inv, "state").as_str() {
            "draft" | "validated" => {
                return Err(Error::precondition(
                    "NOT_POSTED",
                    id,
                    "a draft invoice cannot be credited; cancel its sales order instead",
                ));
            }
            // Cancelled: credited before (by refund), or a draft cancelled with its order.
            "cancelled" => {}
            "posted" if ids(&inv["payment_lines"]).is_empty() => {
                // The wizard's refund credits, posts the credit note and
                // cancels the invoice against it atomically, so a retry finds
                // either nothing done or everything.
                self.credit_wizard(invoice_id, true).await?;
            }
            "posted" | "paid" if !self.credited_in_full(&inv).await? => {
                self.credit_and_pay_back(invoice_id, &inv, id).await?;
            }
            _ => {} // paid and credited in full already
        }
        self.invoice(invoice_id).await
    }

    async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        let order = self.get_sales_order(sales_order_id).await?;
        let mut shipments = Vec::new();
        for id in &order.shipment_ids {
            shipments.push(self.shipment(parse_id("shipment", "shipment-", id)?).await?);
        }
        Ok(shipments)
    }

    async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        let shipment_id = parse_id("shipment", "shipment-", id)?;
        let shp = self.read_one("stock.shipment.out", "shipment", shipment_id, &["state"]).await?;
        let mut state = text(&shp, "state");
        if state == "cancelled" {
            return Err(Error::precondition("CANCELLED", id, "the shipment is cancelled"));
        }
        // Walk Tryton's shipment workflow from wherever it stands.
        for (from, step) in
            [("draft", "wait"), ("waiting", "assign_try"), ("assigned", "pick"), ("picked", "pack"), ("packed", "do")]
        {
            if state == from {
                self.button("stock.shipment.out", step, shipment_id).await?;
                let now = self.read("stock.shipment.out", &[shipment_id], &["state"]).await?;
                state = now.first().map(|s| text(s, "state")).unwrap_or_default();
                if step == "assign_try" && state == "waiting" {
                    return Err(Error::precondition(
                        "INSUFFICIENT_STOCK",
                        id,
                        "the stock for this shipment is not there",
                    ));
                }
            }
        }
        self.shipment(shipment_id).await
    }

    async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        let party = parse_id("customer", "party-", customer_id)?;
        let customer = self.customer(party).await?;
        let record = self.read("party.party", &[party], &["receivable"]).await?;
        let open = record.first().map(|r| amount(r, "receivable")).unwrap_or_default();
        Ok(OpenAmount {
            customer_id: customer.id,
            currency: customer.currency,
            open_amount: money(open),
            credit_limit: customer.credit_limit,
        })
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        Ok(self.setup().await?.capabilities.clone())
    }

    async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
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
            .map(|(stamp, _)| stamp.clone())
            .or_else(|| since.map(str::to_owned))
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into());
        Ok((all.into_iter().map(|(_, c)| c).collect(), next))
    }

    async fn is_ready(&self) -> bool {
        self.rpc.ping().await
    }
}

/// The context a wizard needs to act on one record.
fn wizard_context(model: &str, id: i64) -> serde_json::Map<String, Value> {
    let mut ctx = serde_json::Map::new();
    ctx.insert("active_model".into(), json!(model));
    ctx.insert("active_id".into(), json!(id));
    ctx.insert("active_ids".into(), json!([id]));
    ctx
}

/// Today (UTC) as a Tryton date.
fn today() -> Value {
    let now = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    let mut d = now[..10].split('-').map(|p| p.parse::<u32>().unwrap_or(1));
    let (y, m, day) = (d.next().unwrap_or(1970), d.next().unwrap_or(1), d.next().unwrap_or(1));
    rpc::date(i32::try_from(y).unwrap_or(1970), m, day)
}

async fn ctx_company(rpc: &Client) -> Value {
    rpc.company().await.map_or(Value::Null, |c| json!(c))
}
