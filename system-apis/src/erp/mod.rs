//! `erp.v1`: the ERP system API.
//!
//! A [`Connector`] says what an ERP backend can do in `erp.v1` terms; the
//! gRPC services in [`service`] validate requests, paginate and turn
//! [`Error`]s into typed gRPC statuses. Backends live in [`backend`].
//!
//! Paging is keyset-based on the SKU: a page token is the opaque form of
//! "after this SKU", so pages stay stable while products are added.

use std::{future::Future, path::Path, sync::Arc};

use erp_connect_proto::erp::v1::{Product, StockLevel};
use serde::Deserialize;

pub mod backend;
pub mod service;

/// Default and maximum page sizes of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// See [`DEFAULT_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: usize = 100;
/// Most SKUs one stock query may ask for.
pub const MAX_SKUS_PER_QUERY: usize = 100;

/// Which ERP the system tier wraps.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded reference ERP in SQLite (default).
    #[default]
    Embedded,
}

/// `[system.erp]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The backend. Default `embedded`.
    pub backend: BackendKind,
    /// For `embedded`: a `sqlite:` URL. Default: `sqlite://<data dir>/erp.db`.
    pub database_url: Option<String>,
}

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
    /// No product with this SKU.
    #[error("no product with SKU {sku:?}")]
    ProductNotFound {
        /// The SKU asked for.
        sku: String,
    },
    /// The backend cannot be reached right now.
    #[error("ERP backend unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The backend failed in a way a retry will not fix.
    #[error("ERP backend failed")]
    Backend(#[source] sqlx::Error),
    /// The embedded ERP's schema could not be brought up to date.
    #[error("migrating the embedded ERP failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The data directory cannot be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Error::Unavailable(err)
            }
            other => Error::Backend(other),
        }
    }
}

/// A page of products and whether more follow.
#[derive(Debug)]
pub struct ProductPage {
    /// At most the requested number of products, ordered by SKU.
    pub products: Vec<Product>,
    /// Whether products after the last one exist.
    pub more: bool,
}

/// What an ERP backend can do, in `erp.v1` terms.
pub trait Connector: Send + Sync + 'static {
    /// Active products ordered by SKU, starting after `after`.
    fn list_products(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<ProductPage, Error>> + Send;
    /// One product by SKU.
    fn get_product(&self, sku: &str) -> impl Future<Output = Result<Product, Error>> + Send;
    /// Stock per warehouse for each SKU, in the order asked; unknown SKUs have none.
    fn stock_levels(&self, skus: &[String]) -> impl Future<Output = Result<Vec<StockLevel>, Error>> + Send;
    /// Whether the backend answers right now.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}

/// The configured ERP backend.
#[derive(Clone)]
pub enum Erp {
    /// The embedded reference ERP.
    Embedded(Arc<backend::embedded::EmbeddedErp>),
}

impl Erp {
    /// Opens the configured backend.
    pub async fn open(config: &Config, data_dir: &Path) -> Result<Self, Error> {
        match config.backend {
            BackendKind::Embedded => {
                let erp = backend::embedded::EmbeddedErp::open(config.database_url.as_deref(), data_dir).await?;
                Ok(Erp::Embedded(Arc::new(erp)))
            }
        }
    }

    /// The `erp.v1` gRPC services over this backend.
    pub fn routes(&self) -> tonic::service::Routes {
        match self {
            Erp::Embedded(c) => service::routes(c.clone()),
        }
    }

    /// Whether the backend answers right now.
    pub async fn is_ready(&self) -> bool {
        match self {
            Erp::Embedded(c) => c.is_ready().await,
        }
    }
}
