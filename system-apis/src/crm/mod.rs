//! `crm.v1`: the CRM system API.
//!
//! A [`Connector`] says what a CRM backend can do in `crm.v1` terms; the
//! gRPC service in [`service`] validates and normalises requests (so every
//! backend sees only well-formed input, with e-mail addresses and VAT ids
//! in one form) and turns [`Error`]s into typed gRPC statuses. Backends
//! live in [`backend`]; the embedded reference CRM is the default.
//!
//! What every backend keeps, and `tests/crm_contract.rs` checks for each:
//! a write with an idempotency key already used for the same request
//! answers without writing again, and one used for another request is a
//! conflict; each change raises the customer's `version` by one, and an
//! update that names a stale `expected_version` is refused; every change
//! appears once in the change feed, in commit order, with the fields it
//! changed and the writer's `origin`; an erased customer keeps its id and
//! no personal data, and the feed never holds any.

use std::{collections::BTreeSet, future::Future, path::Path, sync::Arc};

use erp_connect_proto::crm::v1::{Address, Contact, Customer, CustomerChange};
use serde::Deserialize;

pub mod backend;
pub mod service;

/// Every `crm.v1` service name, for reflection.
pub const SERVICE_NAMES: &[&str] = &["crm.v1.CrmService"];

/// Which CRM the system tier wraps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded reference CRM in SQLite or PostgreSQL (default).
    #[default]
    Embedded,
}

/// `[crm]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The backend. Default `embedded`.
    pub backend: BackendKind,
    /// For `embedded`: a `sqlite:` or `postgres:` URL (the PostgreSQL
    /// database must exist, and be the CRM's alone: each store keeps its
    /// own migration history; its tables are created). Default:
    /// `sqlite://<data dir>/crm.db`.
    pub database_url: Option<String>,
}

impl Config {
    /// Checks what types alone cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        match (self.backend, &self.database_url) {
            (BackendKind::Embedded, Some(url)) if platform::database::Dialect::of(url).is_none() => {
                // Not echoed: the URL may carry a password.
                Err("crm.database_url must be a sqlite: or postgres: URL".into())
            }
            _ => Ok(()),
        }
    }
}

/// A boxed error from a backend's client library, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the CRM system API. Each knows whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; retrying it unchanged cannot help.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The request field at fault, e.g. `contacts[1].email`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No customer has this id.
    #[error("no customer {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The customer changed since the caller read it.
    #[error("customer {id:?} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The customer.
        id: String,
        /// The version the caller expected.
        expected: i64,
        /// The version it is at.
        actual: i64,
    },
    /// The customer was erased: it keeps its id and nothing else.
    #[error("customer {id:?} is erased")]
    Erased {
        /// The customer.
        id: String,
    },
    /// An idempotency key was reused with a different request.
    #[error("idempotency key {key:?} was used for a different request")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The backend cannot be reached right now.
    #[error("CRM backend unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend failed in a way a retry will not fix.
    #[error("CRM backend failed")]
    Backend(#[source] BoxError),
    /// The embedded CRM's database could not be opened or migrated.
    #[error("opening the embedded CRM's database failed")]
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

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
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

/// A customer field a write may change, named as in `crm.v1.Customer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `name`.
    Name,
    /// `email`.
    Email,
    /// `phone`.
    Phone,
    /// `vat_id`.
    VatId,
    /// `contacts`, as a whole.
    Contacts,
    /// `addresses`, as a whole.
    Addresses,
    /// `credit_limit`, the ERP's, shown in the CRM.
    CreditLimit,
}

impl Field {
    /// Every field, in the order of `crm.v1.Customer`.
    pub const ALL: [Field; 7] =
        [Field::Name, Field::Email, Field::Phone, Field::VatId, Field::Contacts, Field::Addresses, Field::CreditLimit];

    /// Its name in `crm.v1` (field masks, the change feed).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::VatId => "vat_id",
            Field::Contacts => "contacts",
            Field::Addresses => "addresses",
            Field::CreditLimit => "credit_limit",
        }
    }

    /// The field named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// A customer's values as validated and normalised by the service: e-mail
/// trimmed, VAT id upper-cased without separators, empty optional values
/// as `None`. Contact and address ids are ignored on create and kept on
/// update where they are the customer's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// VAT id, normalised.
    pub vat_id: Option<String>,
    /// People to talk to, in order.
    pub contacts: Vec<Contact>,
    /// Postal addresses, in order.
    pub addresses: Vec<Address>,
    /// Credit limit, normalised to two places (`erp_connect_proto::money`).
    pub credit_limit: Option<String>,
}

/// A validated request to create a customer.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// Replays with the same key return the same customer.
    pub idempotency_key: String,
    /// A digest of the request, to tell a replay from a conflicting reuse.
    pub fingerprint: String,
    /// Who writes, for the change feed.
    pub origin: String,
    /// The customer.
    pub values: Values,
}

/// A validated request to change some of a customer's fields.
#[derive(Debug, Clone)]
pub struct CustomerUpdate {
    /// The customer.
    pub id: String,
    /// Replays with the same key change nothing more.
    pub idempotency_key: String,
    /// A digest of the request, to tell a replay from a conflicting reuse.
    pub fingerprint: String,
    /// Who writes, for the change feed.
    pub origin: String,
    /// `Some`: refuse unless the customer is at this version.
    pub expected_version: Option<i64>,
    /// The fields to set (at least one).
    pub fields: BTreeSet<Field>,
    /// Their values; the other fields' are ignored.
    pub values: Values,
}

/// How to find customers: by a normalised value, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerKey {
    /// The e-mail address, lower-cased.
    Email(String),
    /// The VAT id, normalised.
    VatId(String),
}

/// What a CRM backend can do, in `crm.v1` terms. Inputs are validated by
/// the service before they get here.
pub trait Connector: Send + Sync + 'static {
    /// Creates a customer, once per idempotency key.
    fn create_customer(&self, new: &NewCustomer) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// One customer by id.
    fn get_customer(&self, id: &str) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Every customer with this e-mail or VAT id, oldest first.
    fn find_customers(&self, key: &CustomerKey) -> impl Future<Output = Result<Vec<Customer>, Error>> + Send;
    /// Sets some fields, once per idempotency key. Setting values equal to
    /// the stored ones is no change: the version stays and the feed shows
    /// nothing, so a synchronisation that writes back what it read does not
    /// echo forever.
    fn update_customer(&self, update: &CustomerUpdate) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Erases the customer's personal data, keeping its id; erasing an
    /// erased customer changes nothing.
    fn erase_customer(&self, id: &str, origin: &str) -> impl Future<Output = Result<Customer, Error>> + Send;
    /// Changes after `after` (a cursor this backend returned), oldest
    /// first, and the cursor to resume from.
    fn list_changes(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<CustomerChange>, String), Error>> + Send;
    /// Whether the backend answers right now.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}

/// The configured CRM backend.
#[derive(Clone)]
pub struct Crm {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// The embedded reference CRM.
    Embedded(Arc<backend::embedded::EmbeddedCrm>),
}

impl Crm {
    /// Opens the configured backend (creating and migrating the embedded
    /// CRM's database under `data_dir` when it is used).
    pub async fn open(config: &Config, data_dir: &Path) -> Result<Self, Error> {
        let backend = match config.backend {
            BackendKind::Embedded => Backend::Embedded(Arc::new(
                backend::embedded::EmbeddedCrm::open(config.database_url.as_deref(), data_dir).await?,
            )),
        };
        Ok(Self { backend })
    }

    /// The `crm.v1` gRPC service over this backend.
    pub fn routes(&self) -> tonic::service::Routes {
        match &self.backend {
            Backend::Embedded(c) => service::routes(c.clone()),
        }
    }

    /// Adds the `crm.v1` service to `routes`.
    pub fn add_routes(&self, routes: tonic::service::Routes) -> tonic::service::Routes {
        match &self.backend {
            Backend::Embedded(c) => routes.add_service(service::server(c.clone())),
        }
    }

    /// Whether the system tier can serve CRM calls: the embedded CRM's
    /// database (the tier's own) answers.
    pub async fn is_ready(&self) -> bool {
        match &self.backend {
            Backend::Embedded(c) => c.is_ready().await,
        }
    }
}
