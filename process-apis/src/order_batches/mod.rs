//! Order files from partners (`order_batches.v1`): a CSV or JSON-lines
//! file streamed in, stored row by row, then imported in the background
//! through the partner's mapping, its rules and the order-to-cash
//! `PlaceOrder` path; a result per row; and the quarantine, where what
//! failed waits, with its original records and every reason, for an
//! operator to replay (corrected or not) or discard. Nothing is dropped.
//!
//! # Layout
//! - [`service`]: the gRPC API: import, batch status, row results, quarantine.
//! - [`import`]: importing a batch, one order at a time.
//! - [`inbox`]: the inbox folder, for partners that drop files.
//! - [`store`]: batches, rows and the quarantine in the process tier's store.
//! - [`metrics`]: records per outcome, the quarantine's size and age.

use std::{sync::Arc, time::Duration};

use platform::database::Database;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub mod import;
pub mod inbox;
pub mod metrics;
pub mod service;
pub mod store;

/// What the service and the importer share.
pub struct Shared {
    store: store::Store,
    partners: Arc<crate::partners::Partners>,
    orders: crate::order_to_cash::service::Service,
    wake: Notify,
    poll_interval: Duration,
    max_file_bytes: u64,
}

/// Order batches of one process replica.
#[derive(Clone)]
pub struct OrderBatches {
    shared: Arc<Shared>,
}

/// The largest order file accepted: 256 MiB (about two million rows).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

impl OrderBatches {
    /// Batches over the process tier's store `db`, placing orders through
    /// `orders` with `partners`' mappings; the importer runs until `tasks`
    /// is cancelled.
    pub fn start(
        db: Database,
        partners: Arc<crate::partners::Partners>,
        orders: crate::order_to_cash::service::Service,
        files: &crate::FilesConfig,
        tasks: CancellationToken,
    ) -> Self {
        metrics::describe();
        let shared = Arc::new(Shared {
            store: store::Store::new(db),
            partners,
            orders,
            wake: Notify::new(),
            poll_interval: Duration::from_millis(500),
            max_file_bytes: MAX_FILE_BYTES,
        });
        tokio::spawn(import::run(shared.clone(), tasks.clone()));
        if let Some(dir) = &files.inbox_dir {
            tokio::spawn(inbox::run(shared.clone(), dir.clone(), files.inbox_poll_interval, tasks.clone()));
        }
        tokio::spawn(metrics::run_gauges(shared.store.clone(), tasks));
        Self { shared }
    }

    /// The gRPC service.
    pub fn service(
        &self,
    ) -> erp_connect_proto::order_batches::v1::order_batch_service_server::OrderBatchServiceServer<service::Service>
    {
        erp_connect_proto::order_batches::v1::order_batch_service_server::OrderBatchServiceServer::new(
            service::Service::new(self.shared.clone()),
        )
    }
}

/// What can go wrong in a batch or quarantine call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: (field, message) pairs.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<(String, String)>),
    /// No such batch or entry (or another tenant's).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The entry is resolved already.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("batch store: {0}")]
    Store(#[from] store::Error),
    /// A system the orders need did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(errors) => crate::grpc_status::invalid_argument(&errors),
            Error::NotFound(what) => Status::not_found(format!("no such {what}")),
            Error::Conflict(what) => crate::grpc_status::failed_precondition("RESOLVED", "quarantine", what),
            Error::Store(err) => {
                tracing::warn!(error = %err, "batch store unavailable");
                Status::unavailable("the batch store is unavailable; retry later")
            }
            Error::Unavailable(why) => {
                tracing::warn!(%why, "a system the orders need is unavailable");
                Status::unavailable("a system the orders need is unavailable; retry later")
            }
        }
    }
}
