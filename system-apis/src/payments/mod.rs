//! `payments.v1`: the payments system API.
//!
//! # Layout
//! - [`Provider`]: what a payment provider can do (authorize, capture, void,
//!   refund), one implementation per provider in [`backend`]; `sandbox`, a
//!   provider's test mode with deterministic test cards, is the default.
//! - [`ledger`]: our own record of every payment and every idempotency key,
//!   in SQLite (`<data_dir>/payments.db`) or PostgreSQL
//!   (`migrations/payments/`). It checks
//!   the state machine and the amounts before a provider is asked, and
//!   answers replays itself, so every provider behaves alike behind
//!   `payments.v1` and none is asked twice for the same key.
//! - [`service`]: `payments.v1.PaymentService`: request validation and the
//!   one conversion of [`Error`] into `tonic::Status`.
//!
//! A declined card is a business result, not an error: `Authorize` answers a
//! `Payment` in status `DECLINED` with a `decline_reason` (recorded and
//! replayed like any payment), so a caller can tell "declined, compensate"
//! from `UNAVAILABLE`, "retry later". `proto/payments/v1/payments.proto`
//! documents every status code a caller can meet.

use std::{future::Future, path::Path, sync::Arc};

use rust_decimal::Decimal;
use serde::Deserialize;

pub mod backend;
pub mod ledger;
pub mod service;

/// Every `payments.v1` service name, for reflection.
pub const SERVICE_NAMES: &[&str] = &["payments.v1.PaymentService"];

/// Which payment provider the system tier wraps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Test mode with deterministic test cards (default).
    #[default]
    Sandbox,
}

/// `[payments]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The provider. Default `sandbox`.
    pub provider: ProviderKind,
    /// A `sqlite:` or `postgres:` URL of the payments ledger (the
    /// PostgreSQL database must exist; its tables are created). Default:
    /// `sqlite://<data dir>/payments.db`.
    pub database_url: Option<String>,
}

impl Config {
    /// Checks what types alone cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        match &self.database_url {
            Some(url) if platform::database::Dialect::of(url).is_none() => {
                // Not echoed: the URL may carry a password.
                Err("payments.database_url must be a sqlite: or postgres: URL".into())
            }
            _ => Ok(()),
        }
    }
}

/// A boxed error from a provider's client library, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the payments system API. Each knows whether a retry can help;
/// where it failed (the caller's request, the payment's state, the provider
/// upstream, our own store) is in the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; retrying it unchanged cannot help.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it, for the caller.
        message: String,
    },
    /// No payment with this id.
    #[error("no payment {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The payment's state forbids the call (capture after void, refund
    /// beyond what was captured...).
    #[error("{message}")]
    FailedPrecondition {
        /// A stable machine-readable reason, e.g. `PAYMENT_NOT_AUTHORIZED`.
        reason: &'static str,
        /// The payment concerned.
        payment_id: String,
        /// What went wrong, for the caller.
        message: String,
    },
    /// An idempotency key was reused with a different request.
    #[error("idempotency key {key:?} was used for a different request")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The provider cannot answer right now (down, timed out, or a
    /// processing error it asks to retry).
    #[error("payment provider unavailable")]
    ProviderUnavailable(#[source] BoxError),
    /// The provider failed in a way a retry will not fix.
    #[error("payment provider failed")]
    Provider(#[source] BoxError),
    /// The ledger's database is busy or unreachable right now.
    #[error("payments ledger unavailable")]
    StoreUnavailable(#[source] sqlx::Error),
    /// The ledger's database failed.
    #[error("payments ledger failed")]
    Store(#[source] sqlx::Error),
    /// A row of the ledger cannot be read back: a bug or a hand-edited database.
    #[error("corrupt payments ledger: {0}")]
    Corrupt(String),
    /// The ledger's database could not be opened or migrated.
    #[error("opening the payments ledger failed")]
    Database(#[from] platform::database::Error),
}

impl Error {
    /// Whether the same call (same idempotency key) may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ProviderUnavailable(_) | Error::StoreUnavailable(_) => true,
            Error::Database(err) => err.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field, message: message.into() }
    }

    pub(crate) fn precondition(reason: &'static str, payment_id: &str, message: impl Into<String>) -> Self {
        Error::FailedPrecondition { reason, payment_id: payment_id.to_owned(), message: message.into() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), also as extended
        // codes: another writer held the database past the busy timeout.
        // PostgreSQL (SQLSTATE): serialization failure, deadlock, lock not
        // available, too many connections, server shutting down.
        let code = err.as_database_error().and_then(|db| db.code()).map(|c| c.into_owned()).unwrap_or_default();
        let busy = matches!(code.as_str(), "40001" | "40P01" | "55P03" | "53300" | "57P01")
            || (code.len() != 5 && code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6)));
        match err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Error::StoreUnavailable(err)
            }
            _ if busy => Error::StoreUnavailable(err),
            other => Error::Store(other),
        }
    }
}

/// A validated request to hold money on a card.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The caller's key; providers take it as their own idempotency key.
    pub idempotency_key: String,
    /// The provider's token for the card.
    pub payment_token: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Positive, at most two decimal places.
    pub amount: Decimal,
    /// The caller's reference, e.g. an order id; may be empty.
    pub reference: String,
}

/// What a provider decided about an [`Authorization`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The money is held.
    Approved {
        /// The provider's id of the authorization, for later calls.
        provider_reference: String,
    },
    /// The card was declined; a business result, not an error.
    Declined {
        /// The provider's decline code, e.g. `insufficient_funds`.
        reason: String,
    },
}

/// A capture, void or refund as a provider sees it: the ledger has already
/// checked that the payment's state and amounts allow it.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    /// The caller's key; providers take it as their own idempotency key.
    pub idempotency_key: &'a str,
    /// The provider's id of the authorization.
    pub provider_reference: &'a str,
    /// ISO 4217 code of the payment.
    pub currency: &'a str,
    /// The amount captured or refunded; for a void, the amount released.
    pub amount: Decimal,
}

/// What a payment provider can do. Inputs are validated and checked against
/// the ledger before they get here.
///
/// Implementations must honour the idempotency key (real providers take it
/// as a request header): the same key must never act twice, because the
/// ledger may ask again after a lost reply or when two duplicates race.
pub trait Provider: Send + Sync + 'static {
    /// The name recorded with each payment, e.g. `sandbox`.
    fn name(&self) -> &'static str;
    /// Holds the amount on the card, or declines.
    fn authorize(&self, authorization: &Authorization) -> impl Future<Output = Result<Decision, Error>> + Send;
    /// Takes `amount` (at most the authorized amount) of an authorization.
    fn capture(&self, operation: &Operation<'_>) -> impl Future<Output = Result<(), Error>> + Send;
    /// Releases an authorization that was not captured.
    fn void(&self, operation: &Operation<'_>) -> impl Future<Output = Result<(), Error>> + Send;
    /// Gives back `amount` (at most what is captured and not yet refunded).
    fn refund(&self, operation: &Operation<'_>) -> impl Future<Output = Result<(), Error>> + Send;
    /// Whether the provider answers right now.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}

/// The payments system API over the configured provider.
#[derive(Clone)]
pub enum Payments {
    /// The sandbox provider.
    Sandbox(Arc<ledger::Ledger<backend::sandbox::Sandbox>>),
}

impl Payments {
    /// Opens (creating and migrating) the ledger and the configured provider.
    pub async fn open(config: &Config, data_dir: &Path) -> Result<Self, Error> {
        match config.provider {
            ProviderKind::Sandbox => {
                let ledger =
                    ledger::Ledger::open(config.database_url.as_deref(), data_dir, backend::sandbox::Sandbox::new())
                        .await?;
                Ok(Payments::Sandbox(Arc::new(ledger)))
            }
        }
    }

    /// Adds the `payments.v1` gRPC service to `routes`.
    pub fn add_routes(&self, routes: tonic::service::Routes) -> tonic::service::Routes {
        match self {
            Payments::Sandbox(ledger) => routes.add_service(service::server(ledger.clone())),
        }
    }

    /// The `payments.v1` gRPC service alone.
    pub fn routes(&self) -> tonic::service::Routes {
        match self {
            Payments::Sandbox(ledger) => tonic::service::Routes::new(service::server(ledger.clone())),
        }
    }

    /// Whether the ledger and the provider answer right now.
    pub async fn is_ready(&self) -> bool {
        match self {
            Payments::Sandbox(ledger) => ledger.is_ready().await,
        }
    }

    /// Closes the ledger's database connections (for a clean shutdown).
    pub async fn close(&self) {
        match self {
            Payments::Sandbox(ledger) => ledger.close().await,
        }
    }
}
