//! The `tryton` backend: `erp.v1` over a real Tryton 8.x server through its
//! JSON-RPC API ([`rpc`]).
//!
//! One module per `erp.v1` service, each saying which Tryton models it maps
//! and how: [`catalogue`] (products), [`inventory`] (stock levels),
//! [`customers`] (parties), [`sales_orders`], [`invoices`] (with the credit
//! and pay wizards), [`shipments`], [`receivables`] (open amounts) and
//! [`changes`] (the change feed). Each adds inherent methods to
//! [`TrytonErp`]; this module holds the connector itself, what it learns of
//! the database on first contact ([`Setup`]), the small RPC wrappers every
//! aggregate uses, and the one [`Connector`] impl, whose methods each hand
//! over to the method of the same name in the aggregate's module (Rust
//! looks up inherent methods before trait methods, so these are not
//! recursive). Records are decoded into typed structs ([`records`]); the
//! deployment's custom fields map onto fields of the same records
//! ([`custom_fields`]).
//!
//! Ids are `<kind>-<tryton id>` (`party-3`, `sale-12`, `invoice-5`,
//! `shipment-8`); SKUs are product codes; warehouses are `stock.location`
//! records of type `warehouse`, named by their code.

mod catalogue;
mod changes;
pub mod custom_fields;
mod customers;
mod inventory;
mod invoices;
mod receivables;
mod records;
pub mod rpc;
mod sales_orders;
mod shipments;
#[cfg(feature = "test-support")]
pub mod test_server;

use std::{path::PathBuf, sync::Arc, time::Duration};

use custom_fields::Mapping;
use erp_connect_proto::{
    custom_fields::Definitions,
    erp::v1::{
        Address, Capabilities, Change, Customer, ErasureAction, Invoice, OpenAmount, Product, SalesOrder, Shipment,
        StockLevel,
    },
};
use records::{Code, Id, decode};
use rpc::{Client, RpcError};
use rust_decimal::Decimal;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use std::sync::RwLock as SyncRwLock;

use crate::erp::{Connector, CustomerChange, CustomerKey, Error, InvoicePayment, NewCustomer, NewSalesOrder, Page};

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

impl From<records::Undecodable> for Error {
    fn from(err: records::Undecodable) -> Self {
        Error::Backend(Box::new(err))
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
    /// The client's login count when this was discovered.
    logins: u64,
}

/// The Tryton connector.
#[derive(Debug)]
pub struct TrytonErp {
    rpc: Client,
    /// What was discovered, at which login ([`Setup::logins`]).
    setup: SyncRwLock<Option<Arc<Setup>>>,
    /// One discovery at a time.
    discovering: tokio::sync::Mutex<()>,
    custom: Arc<Definitions>,
}

/// `ir.module`: `name`.
#[derive(Debug, Deserialize)]
struct ModuleRecord {
    name: String,
}

/// `company.company`: `currency`, `currency.code`.
#[derive(Debug, Deserialize)]
struct CompanyRecord {
    currency: i64,
    #[serde(rename = "currency.")]
    currency_code: Code,
}

/// `stock.location` (warehouses): `code`.
#[derive(Debug, Deserialize)]
struct WarehouseRecord {
    id: i64,
    code: Option<String>,
}

/// `kind-<id>` → the Tryton id, or not found.
fn parse_id(kind: &'static str, prefix: &str, id: &str) -> Result<i64, Error> {
    id.strip_prefix(prefix)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::not_found(kind, id))
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
        Ok(Self { rpc, setup: SyncRwLock::new(None), discovering: tokio::sync::Mutex::new(()), custom })
    }

    async fn discover(&self) -> Result<Capabilities, Error> {
        let release = self.rpc.server_version().await?;
        let mut modules: Vec<String> = self
            .search_read::<ModuleRecord>("ir.module", json!([["state", "=", "activated"]]), None, None, &["name"])
            .await?
            .into_iter()
            .map(|m| m.name)
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

    /// What the connected Tryton has: discovered on first use and again
    /// after every new login, since a login after the first means the
    /// session expired or the server restarted, possibly with modules
    /// activated or removed (which takes a restart in Tryton).
    async fn setup(&self) -> Result<Arc<Setup>, Error> {
        if let Some(setup) = self.current_setup() {
            return Ok(setup);
        }
        let _one = self.discovering.lock().await;
        if let Some(setup) = self.current_setup() {
            return Ok(setup);
        }
        let setup = Arc::new(self.discover_setup().await?);
        *self.setup.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(setup.clone());
        Ok(setup)
    }

    /// The setup discovered at the current login, if any. Before the first
    /// login (Tryton never answered) there is none.
    fn current_setup(&self) -> Option<Arc<Setup>> {
        let logins = self.rpc.logins();
        let setup = self.setup.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        setup.as_ref().filter(|s| s.logins == logins).cloned()
    }

    async fn discover_setup(&self) -> Result<Setup, Error> {
        if self.setup.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some() {
            tracing::info!("logged in to Tryton again: rediscovering what it has");
        }
        let capabilities = self.discover().await?;
        let custom = Mapping::discover(&self.rpc, &self.custom).await?;
        let company = self
            .search_read::<CompanyRecord>("company.company", json!([]), Some(1), None, &["currency", "currency.code"])
            .await?
            .pop()
            .ok_or_else(|| Error::Misconfigured("the Tryton database has no company".into()))?;
        let company_currency = company
            .currency_code
            .code
            .ok_or_else(|| Error::Misconfigured("the Tryton company's currency has no code".into()))?;
        let warehouses = self
            .search_read::<WarehouseRecord>(
                "stock.location",
                json!([["type", "=", "warehouse"]]),
                None,
                Some(json!([["code", "ASC"]])),
                &["code"],
            )
            .await?
            .into_iter()
            // A warehouse without a code is listed unnamed, as before.
            .map(|w| (w.id, w.code.unwrap_or_default()))
            .collect();
        let terms = self.search_read::<Id>("account.invoice.payment_term", json!([]), Some(1), None, &["id"]).await?;
        Ok(Setup {
            capabilities,
            company_currency,
            currency_id: company.currency,
            warehouses,
            payment_term: terms.first().map(|t| t.id),
            custom,
            // Read last: a login during discovery is covered by it.
            logins: self.rpc.logins(),
        })
    }

    /// `search_read` on `model`, each record decoded as `T` (`Value` for
    /// records whose custom fields are read too).
    async fn search_read<T: DeserializeOwned>(
        &self,
        model: &str,
        domain: Value,
        limit: Option<usize>,
        order: Option<Value>,
        fields: &[&str],
    ) -> Result<Vec<T>, Error> {
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
        Ok(decode(model, &result)?)
    }

    /// Like [`Self::search_read`], inactive records included. Through the
    /// context (`active_test` false), not the domain: Tryton 8 still hides
    /// inactive records from a domain that names `active` beside an `OR`
    /// clause.
    async fn search_read_inactive_too<T: DeserializeOwned>(
        &self,
        model: &str,
        domain: Value,
        limit: Option<usize>,
        order: Option<Value>,
        fields: &[&str],
    ) -> Result<Vec<T>, Error> {
        let mut context = serde_json::Map::new();
        context.insert("active_test".into(), json!(false));
        let result = self
            .rpc
            .call_with_context(
                &format!("model.{model}.search_read"),
                vec![
                    domain,
                    json!(0),
                    limit.map_or(Value::Null, |l| json!(l)),
                    order.unwrap_or(Value::Null),
                    json!(fields),
                ],
                Some(&context),
            )
            .await?;
        Ok(decode(model, &result)?)
    }

    /// `read` of `ids` on `model`, each record decoded as `T`.
    async fn read<T: DeserializeOwned>(&self, model: &str, ids: &[i64], fields: &[&str]) -> Result<Vec<T>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.rpc.call(&format!("model.{model}.read"), vec![json!(ids), json!(fields)]).await?;
        Ok(decode(model, &result)?)
    }

    /// One record of `model`, or a not-found of `kind`.
    async fn read_one<T: DeserializeOwned>(
        &self,
        model: &str,
        kind: &'static str,
        id: i64,
        fields: &[&str],
    ) -> Result<T, Error> {
        // Reading a missing id raises in Tryton; searching first gives a clean not-found.
        let found = self
            .rpc
            .call(&format!("model.{model}.search"), vec![json!([["id", "=", id]]), json!(0), json!(1), Value::Null])
            .await?;
        if decode::<Vec<i64>>(model, &found)?.is_empty() {
            return Err(Error::not_found(kind, id.to_string()));
        }
        self.read(model, &[id], fields).await?.pop().ok_or_else(|| Error::not_found(kind, id.to_string()))
    }

    /// `create` of one record on `model`: its id.
    async fn create(&self, model: &str, values: Value) -> Result<i64, Error> {
        let created = self.rpc.call(&format!("model.{model}.create"), vec![json!([values])]).await?;
        decode::<Vec<i64>>(model, &created)?
            .first()
            .copied()
            .ok_or_else(|| Error::Backend(format!("{model}.create returned no id").into()))
    }

    /// A button (a workflow transition) on one record.
    async fn button(&self, model: &str, method: &str, id: i64) -> Result<(), Error> {
        self.rpc.call(&format!("model.{model}.{method}"), vec![json!([id])]).await?;
        Ok(())
    }
}

/// Each method hands over to the aggregate module's method of the same name.
impl Connector for TrytonErp {
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        self.list_products(after, limit).await
    }

    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        self.get_product(sku).await
    }

    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        self.stock_levels(skus).await
    }

    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.get_customer(id).await
    }

    async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        self.find_customer(key).await
    }

    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        self.create_customer(new).await
    }

    async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        self.update_credit_limit(id, limit).await
    }

    async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        self.add_address(id, address).await
    }

    async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        self.update_customer(id, change).await
    }

    async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        self.erase_customer(id).await
    }

    async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        self.create_sales_order(new).await
    }

    async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.quote_sales_order(id).await
    }

    async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.confirm_sales_order(id).await
    }

    async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.cancel_sales_order(id).await
    }

    async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.get_sales_order(id).await
    }

    async fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SalesOrder>, Error> {
        self.list_sales_orders(customer_id, after, limit).await
    }

    async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
        self.list_invoices(sales_order_id).await
    }

    async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.get_invoice(id).await
    }

    async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.post_invoice(id).await
    }

    async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        self.record_invoice_payment(payment).await
    }

    async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.credit_invoice(id).await
    }

    async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        self.list_shipments(sales_order_id).await
    }

    async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        self.complete_shipment(id).await
    }

    async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        self.open_amount(customer_id).await
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        Ok(self.setup().await?.capabilities.clone())
    }

    async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
        self.list_changes(since, limit).await
    }

    async fn is_ready(&self) -> bool {
        self.rpc.ping().await
    }
}
