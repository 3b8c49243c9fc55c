//! `erp.v1`: the ERP system API.
//!
//! A [`Connector`] says what an ERP backend can do in `erp.v1` terms; the
//! gRPC services in [`service`] validate requests (so every backend sees
//! only well-formed input), paginate, and turn [`Error`]s into typed gRPC
//! statuses. Backends live in [`backend`].
//!
//! Paging is keyset-based: a page token is the opaque form of "after this
//! key", so pages stay stable while records are added.

use std::{collections::HashMap, future::Future, path::Path, sync::Arc};

use erp_connect_proto::custom_fields::{Definition, Definitions};
use erp_connect_proto::erp::v1::{
    Address, Capabilities, Change, CustomValue, Customer, ErasureAction, Invoice, InvoiceState, OpenAmount, Product,
    SalesOrder, Shipment, StockLevel, WarehouseStock,
};
use resilience::{Policy, Resilient};
use rust_decimal::Decimal;
use serde::Deserialize;

pub mod backend;
pub mod resilience;
pub mod service;

/// Default and maximum page sizes of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// See [`DEFAULT_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: usize = 100;
/// Most SKUs one stock query may ask for.
pub const MAX_SKUS_PER_QUERY: usize = 100;
/// How long the system tier waits at start to learn what the ERP has.
const STARTUP_DISCOVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Most lines on one sales order.
pub const MAX_LINES: usize = 200;

/// Which ERP the system tier wraps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded reference ERP in SQLite or PostgreSQL (default).
    #[default]
    Embedded,
    /// A Tryton 8.x server over JSON-RPC (`[erp.tryton]`).
    Tryton,
}

/// `[erp]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The backend. Default `embedded`.
    pub backend: BackendKind,
    /// For `embedded`: a `sqlite:` or `postgres:` URL (the PostgreSQL
    /// database must exist; its tables are created). Default:
    /// `sqlite://<data dir>/erp.db`.
    pub database_url: Option<String>,
    /// For `tryton`: where and how to log in.
    pub tryton: Option<backend::tryton::Config>,
    /// Deadline, read retries, circuit breaker and load caps of every ERP call.
    pub resilience: Policy,
    /// `[[erp.custom_fields]]`: ERP fields outside `erp.v1` that this
    /// deployment maps onto named custom fields (see
    /// `erp_connect_proto::custom_fields`). The Tryton backend checks each
    /// against the model's `fields_get` when it connects.
    pub custom_fields: Vec<Definition>,
}

impl Config {
    /// Checks what types alone cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        self.resilience.validate()?;
        Definitions::new(self.custom_fields.clone())?;
        match (self.backend, &self.tryton) {
            (BackendKind::Tryton, None) => Err("backend \"tryton\" needs an [erp.tryton] section".into()),
            (BackendKind::Tryton, Some(t)) if !t.password_file.is_file() => {
                Err(format!("erp.tryton.password_file {} does not exist", t.password_file.display()))
            }
            (BackendKind::Tryton, Some(t)) if !(t.url.starts_with("http://") || t.url.starts_with("https://")) => {
                Err(format!("erp.tryton.url {:?} must start with http://", t.url))
            }
            (BackendKind::Embedded, _) => match &self.database_url {
                Some(url) if platform::database::Dialect::of(url).is_none() => {
                    // Not echoed: the URL may carry a password.
                    Err("erp.database_url must be a sqlite: or postgres: URL".into())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// A boxed error from a backend's client library, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the ERP system API. Each knows whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; retrying it unchanged cannot help.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No such record.
    #[error("no {kind} {id:?}")]
    NotFound {
        /// `product`, `customer`, `sales order`, `invoice` or `shipment`.
        kind: &'static str,
        /// The id or key asked for.
        id: String,
    },
    /// A business rule forbids it in the record's current state (stock
    /// short, order already shipped, over-payment...).
    #[error("{message}")]
    FailedPrecondition {
        /// A stable machine-readable reason, e.g. `INSUFFICIENT_STOCK`.
        reason: &'static str,
        /// The record concerned.
        subject: String,
        /// What went wrong, for the caller.
        message: String,
    },
    /// An idempotency key was reused with a different request.
    #[error("idempotency key {key:?} was used for a different request")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The backend cannot be reached right now.
    #[error("ERP backend unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend failed in a way a retry will not fix.
    #[error("ERP backend failed")]
    Backend(#[source] BoxError),
    /// The ERP does not have what the configuration maps onto it (a custom
    /// field's ERP field is missing or of another type): a start-up error,
    /// exit status 64.
    #[error("{0}")]
    Misconfigured(String),
    /// The embedded ERP's database could not be opened or migrated.
    #[error("opening the embedded ERP's database failed")]
    Database(#[from] platform::database::Error),
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(err) => err.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound { kind, id: id.into() }
    }

    pub(crate) fn precondition(reason: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Error::FailedPrecondition { reason, subject: subject.into(), message: message.into() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Error::Unavailable(Box::new(err))
            }
            other => Error::Backend(Box::new(other)),
        }
    }
}

/// A page of records and whether more follow.
#[derive(Debug)]
pub struct Page<T> {
    /// At most the requested number of records, in key order.
    pub items: Vec<T>,
    /// Whether records after the last one exist.
    pub more: bool,
}

/// How to find a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerKey {
    /// The id in the caller's systems.
    ExternalId(String),
    /// The e-mail address (compared case-insensitively).
    Email(String),
}

/// A validated request to create a customer.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// Replays with the same key return the same customer.
    pub idempotency_key: String,
    /// A digest of the request, to tell a replay from a conflicting reuse.
    pub fingerprint: String,
    /// The caller's id for the customer.
    pub external_id: Option<String>,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// Credit limit in `currency`.
    pub credit_limit: Decimal,
    /// Postal addresses.
    pub addresses: Vec<Address>,
    /// Writable customer custom fields, checked against their definitions.
    pub custom_fields: HashMap<String, CustomValue>,
}

/// A validated change to a customer's name or e-mail (`UpdateCustomer`):
/// `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerChange {
    /// The new display name, never empty.
    pub name: Option<String>,
    /// The new e-mail address; `Some(None)` removes it.
    pub email: Option<Option<String>>,
}

/// The name an erased customer keeps: its orders and invoices still point
/// at it, and they must read as someone, not as a blank.
pub const ERASED_NAME: &str = "Erased customer";

/// Why an erasure keeps a customer's sales orders and invoices: every
/// backend reports the same reason.
pub const RETENTION_REASON: &str = "retained for bookkeeping (tax law)";

/// One [`ErasureAction`], as the backends report them.
pub(crate) fn erasure_action(subject: &str, outcome: &str, reason: &str, count: usize) -> ErasureAction {
    ErasureAction {
        subject: subject.to_owned(),
        outcome: outcome.to_owned(),
        reason: reason.to_owned(),
        count: i64::try_from(count).unwrap_or(i64::MAX),
    }
}

/// The refusal of a change to an erased customer, the same from every backend.
pub(crate) fn erased(id: &str) -> Error {
    Error::precondition("ERASED", id, "the customer was erased and can no longer be changed")
}

/// A validated sales order line.
#[derive(Debug, Clone)]
pub struct NewLine {
    /// The product.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: i64,
    /// `None` takes the list price.
    pub unit_price: Option<Decimal>,
    /// Writable order line custom fields, checked against their definitions.
    pub custom_fields: HashMap<String, CustomValue>,
}

/// A validated request to create a sales order.
#[derive(Debug, Clone)]
pub struct NewSalesOrder {
    /// Replays with the same key return the same order.
    pub idempotency_key: String,
    /// A digest of the request, to tell a replay from a conflicting reuse.
    pub fingerprint: String,
    /// The customer.
    pub customer_id: String,
    /// The caller's reference, e.g. its order id.
    pub reference: String,
    /// `None` takes the customer's currency.
    pub currency: Option<String>,
    /// At least one line.
    pub lines: Vec<NewLine>,
    /// Writable sales order custom fields, checked against their definitions.
    pub custom_fields: HashMap<String, CustomValue>,
}

/// A validated payment against an invoice.
#[derive(Debug, Clone)]
pub struct InvoicePayment {
    /// Replays with the same key record nothing more.
    pub idempotency_key: String,
    /// The invoice.
    pub invoice_id: String,
    /// Must be the invoice's currency.
    pub currency: String,
    /// Positive, at most the amount due.
    pub amount: Decimal,
}

impl InvoicePayment {
    /// Checks that this payment may be applied to `invoice` (posted, same
    /// currency, not more than is due) and returns the amount still due
    /// before it. The same business rule for every backend.
    pub fn check_against(&self, invoice: &Invoice) -> Result<Decimal, Error> {
        let id = &self.invoice_id;
        match InvoiceState::try_from(invoice.state) {
            Ok(InvoiceState::Posted) => {}
            Ok(InvoiceState::Draft) => return Err(Error::precondition("NOT_POSTED", id, "post the invoice first")),
            Ok(InvoiceState::Paid) => return Err(Error::precondition("ALREADY_PAID", id, "the invoice is paid")),
            _ => return Err(Error::precondition("CANCELLED", id, "the invoice is cancelled")),
        }
        if self.currency != invoice.currency {
            return Err(Error::InvalidArgument {
                field: "currency",
                message: format!("the invoice is in {}", invoice.currency),
            });
        }
        let due: Decimal = invoice
            .amount_due
            .parse()
            .map_err(|e| Error::Backend(format!("amount due {:?}: {e}", invoice.amount_due).into()))?;
        if self.amount > due {
            return Err(Error::precondition(
                "OVERPAYMENT",
                id,
                format!("only {} is due", erp_connect_proto::money::format(due)),
            ));
        }
        Ok(due)
    }
}

/// The stock of `sku` in `warehouses`, with the totals `erp.v1` defines:
/// sums over all warehouses. The same rule for every backend. The sums
/// saturate: a backend's absurd quantities (Tryton's are floats, read as
/// up to `i64::MAX` each) must neither panic nor wrap into a negative stock.
pub(crate) fn stock_level(sku: &str, warehouses: Vec<WarehouseStock>) -> StockLevel {
    let on_hand = warehouses.iter().map(|w| w.on_hand).fold(0, i64::saturating_add);
    let available = warehouses.iter().map(|w| w.available).fold(0, i64::saturating_add);
    StockLevel { sku: sku.to_owned(), on_hand, available, warehouses }
}

/// What an ERP backend can do, in `erp.v1` terms. Inputs are validated by
/// the service before they get here.
pub trait Connector: Send + Sync + 'static {
    /// Active products ordered by SKU, starting after `after`.
    fn list_products(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Product>, Error>> + Send;
    /// One product by SKU.
    fn get_product(&self, sku: &str) -> impl Future<Output = Result<Product, Error>> + Send;
    /// Stock per warehouse for each SKU, in the order asked; unknown SKUs have none.
    fn stock_levels(&self, skus: &[String]) -> impl Future<Output = Result<Vec<StockLevel>, Error>> + Send;

    /// One customer by id.
    fn get_customer(&self, id: &str) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// One customer by external id or e-mail.
    fn find_customer(&self, key: &CustomerKey) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Creates a customer, once per idempotency key.
    fn create_customer(&self, new: &NewCustomer) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Sets the credit limit.
    fn update_credit_limit(&self, id: &str, limit: Decimal) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Adds a postal address.
    fn add_address(&self, id: &str, address: &Address) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Changes the name or e-mail; an erased customer is a failed
    /// precondition (reason `ERASED`).
    fn update_customer(
        &self,
        id: &str,
        change: &CustomerChange,
    ) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Anonymises a customer and deactivates it, keeping its sales orders
    /// and invoices; what was done and kept, in order. Repeating it
    /// answers the same without changing anything.
    fn erase_customer(&self, id: &str) -> impl Future<Output = Result<(Customer, Vec<ErasureAction>), Error>> + Send;

    /// Creates a draft sales order, once per idempotency key.
    fn create_sales_order(&self, new: &NewSalesOrder) -> impl Future<Output = Result<SalesOrder, Error>> + Send;
    /// Draft → quotation (idempotent).
    fn quote_sales_order(&self, id: &str) -> impl Future<Output = Result<SalesOrder, Error>> + Send;
    /// Quotation → processing: reserves stock, creates invoice and shipment (idempotent).
    fn confirm_sales_order(&self, id: &str) -> impl Future<Output = Result<SalesOrder, Error>> + Send;
    /// Cancels and releases stock, unless shipped or while an invoice is
    /// posted or paid and not credited (idempotent).
    fn cancel_sales_order(&self, id: &str) -> impl Future<Output = Result<SalesOrder, Error>> + Send;
    /// One sales order.
    fn get_sales_order(&self, id: &str) -> impl Future<Output = Result<SalesOrder, Error>> + Send;
    /// A customer's sales orders by id, after `after`.
    fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<SalesOrder>, Error>> + Send;

    /// The invoices of a sales order.
    fn list_invoices(&self, sales_order_id: &str) -> impl Future<Output = Result<Vec<Invoice>, Error>> + Send;
    /// One invoice.
    fn get_invoice(&self, id: &str) -> impl Future<Output = Result<Invoice, Error>> + Send;
    /// Draft → posted (idempotent).
    fn post_invoice(&self, id: &str) -> impl Future<Output = Result<Invoice, Error>> + Send;
    /// Records a payment, once per idempotency key.
    fn record_invoice_payment(&self, payment: &InvoicePayment) -> impl Future<Output = Result<Invoice, Error>> + Send;
    /// Credits a posted or paid invoice in full: it then reads cancelled with
    /// nothing due, and no longer counts in the open amount (idempotent; a
    /// draft is a failed precondition).
    fn credit_invoice(&self, id: &str) -> impl Future<Output = Result<Invoice, Error>> + Send;

    /// The shipments of a sales order.
    fn list_shipments(&self, sales_order_id: &str) -> impl Future<Output = Result<Vec<Shipment>, Error>> + Send;
    /// Ships (idempotent).
    fn complete_shipment(&self, id: &str) -> impl Future<Output = Result<Shipment, Error>> + Send;

    /// What a customer's posted invoices still owe.
    fn open_amount(&self, customer_id: &str) -> impl Future<Output = Result<OpenAmount, Error>> + Send;

    /// What the ERP is and which parts of the contract it keeps.
    fn capabilities(&self) -> impl Future<Output = Result<Capabilities, Error>> + Send;

    /// Changes after `since` (a cursor this backend returned), oldest first,
    /// and the cursor to resume from.
    fn list_changes(
        &self,
        since: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Change>, String), Error>> + Send;

    /// Whether the backend answers right now.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}

/// The configured ERP backend and the deployment's custom fields.
#[derive(Clone)]
pub struct Erp {
    backend: Backend,
    custom: Arc<Definitions>,
}

#[derive(Clone)]
enum Backend {
    /// The embedded reference ERP.
    Embedded(Arc<Resilient<backend::embedded::EmbeddedErp>>),
    /// A Tryton server.
    Tryton(Arc<Resilient<backend::tryton::TrytonErp>>),
}

impl Erp {
    /// Opens the configured backend. A Tryton database without a module
    /// erp-connect needs, or without a field a custom field maps onto, is
    /// refused here, naming it; a Tryton that does not answer yet is not
    /// (what it has is discovered, and custom fields checked, on first use).
    pub async fn open(config: &Config, data_dir: &Path) -> Result<Self, Error> {
        let custom = Arc::new(Definitions::new(config.custom_fields.clone()).map_err(Error::Misconfigured)?);
        let backend = match config.backend {
            BackendKind::Embedded => {
                let erp = backend::embedded::EmbeddedErp::open(config.database_url.as_deref(), data_dir).await?;
                let erp = Arc::new(Resilient::named(erp, config.resilience.clone(), "embedded"));
                let _ = erp.capabilities().await;
                Backend::Embedded(erp)
            }
            BackendKind::Tryton => {
                let tryton = config.tryton.as_ref().ok_or_else(|| Error::Backend("no [erp.tryton] section".into()))?;
                let erp = backend::tryton::TrytonErp::open(tryton, custom.clone())?;
                let policy = config.resilience.clone().with_default_caps(
                    resilience::TRYTON_MAX_CONCURRENT_CALLS,
                    resilience::TRYTON_MAX_CALLS_PER_SECOND,
                );
                let erp = Arc::new(Resilient::named(erp, policy, "tryton"));
                match tokio::time::timeout(STARTUP_DISCOVERY, erp.capabilities()).await {
                    Ok(Err(err @ (Error::FailedPrecondition { .. } | Error::Misconfigured(_)))) => return Err(err),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "Tryton does not answer yet; its modules are read on first use")
                    }
                    Err(_) => tracing::warn!("Tryton does not answer yet; its modules are read on first use"),
                    Ok(Ok(_)) => {}
                }
                Backend::Tryton(erp)
            }
        };
        Ok(Self { backend, custom })
    }

    /// The `erp.v1` gRPC services over this backend.
    pub fn routes(&self) -> tonic::service::Routes {
        match &self.backend {
            Backend::Embedded(c) => service::routes(c.clone(), self.custom.clone()),
            Backend::Tryton(c) => service::routes(c.clone(), self.custom.clone()),
        }
    }

    /// Whether the system tier can serve ERP calls, for its readiness: the
    /// embedded ERP's database (the tier's own) answers. A remote ERP that
    /// does not answer does not make the tier unready: its calls fail fast
    /// with `UNAVAILABLE` through the breaker, the process tier keeps
    /// accepting orders and queues them, and readiness probes that followed
    /// the ERP would take every replica of every tier out of service, an
    /// outage of the whole product for one of the ERP.
    pub async fn is_ready(&self) -> bool {
        match &self.backend {
            Backend::Embedded(c) => c.is_ready().await,
            Backend::Tryton(_) => true,
        }
    }
}

/// Every `erp.v1` service name, for reflection.
pub const SERVICE_NAMES: &[&str] = &[
    "erp.v1.ProductService",
    "erp.v1.InventoryService",
    "erp.v1.CustomerService",
    "erp.v1.SalesOrderService",
    "erp.v1.InvoiceService",
    "erp.v1.ShipmentService",
    "erp.v1.ReceivablesService",
    "erp.v1.ChangeFeedService",
    "erp.v1.CapabilitiesService",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_totals_add_up_the_warehouses_and_saturate() {
        let at = |on_hand, available| WarehouseStock { warehouse: "WH".into(), on_hand, available };
        let level = stock_level("W", vec![at(2, 1), at(3, 3)]);
        assert_eq!((level.on_hand, level.available), (5, 4));
        // Found with fuzz/fuzz_targets/tryton_answer.rs: two warehouses of
        // 9e18 units each overflowed the sum.
        let level = stock_level("W", vec![at(i64::MAX - 1, 9), at(i64::MAX - 1, 9)]);
        assert_eq!((level.on_hand, level.available), (i64::MAX, 18));
    }
}
