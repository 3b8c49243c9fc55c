//! The price list: every sellable product's name, list price, currency and
//! active flag by SKU, held in memory so that orders are priced without
//! the ERP on the request path.
//!
//! Filled from `erp.v1.ProductService/ListProducts` when the tier starts
//! (retried until the ERP answers), completed on a miss by `GetProduct`,
//! and kept current by the ERP change feed: the order-to-cash feed follower
//! calls [`PriceList::refresh`] for every product change, so a price edited
//! in the ERP is used here one feed poll later (`process.saga.
//! feed_poll_interval`). While the ERP is down the list answers from what
//! it holds; a SKU it has never seen is then [`Error::Unavailable`].
//!
//! One list per process tier replica, shared by the flows that price or
//! show products.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use erp_connect_proto::erp::v1::{
    GetProductRequest, ListProductsRequest, Product, product_service_client::ProductServiceClient,
};
use platform::channel::GrpcChannel;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// Products per `ListProducts` page while filling.
const FILL_PAGE: i32 = 100;

/// One product as orders are priced from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Stock keeping unit.
    pub sku: String,
    /// For the caller.
    pub name: String,
    /// The list price per unit.
    pub unit_price: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// Still sold.
    pub active: bool,
}

/// Why a price could not be given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ERP did not answer and the list has never seen the SKU:
    /// retryable, a 503 for the caller.
    #[error("the ERP is unavailable and {sku} is not in the price list")]
    Unavailable {
        /// The SKU asked for.
        sku: String,
        /// What the system API answered.
        status: Status,
    },
    /// The system API answered something else unexpected.
    #[error("erp.v1 GetProduct: {0}")]
    Erp(Status),
    /// The ERP sent a price that is not a decimal.
    #[error("the ERP sent a malformed list price for {0}")]
    Malformed(String),
}

/// See the module documentation.
pub struct PriceList {
    products: RwLock<HashMap<String, Arc<Priced>>>,
    client: ProductServiceClient<GrpcChannel>,
    timeout: Duration,
}

fn priced(product: Product) -> Result<Priced, Error> {
    let price = product.list_price.unwrap_or_default();
    let unit_price = price.amount.parse().map_err(|_| Error::Malformed(product.sku.clone()))?;
    Ok(Priced { sku: product.sku, name: product.name, unit_price, currency: price.currency, active: product.active })
}

/// Whether a system API status means the ERP could not be asked (as
/// opposed to an answer about the product).
fn is_outage(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled)
}

impl PriceList {
    /// An empty list over the ERP system API behind `system`; each call
    /// bounded by `timeout`.
    pub fn new(system: GrpcChannel, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { products: RwLock::default(), client: ProductServiceClient::new(system), timeout })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout());
        request
    }

    /// The system timeout, cut to what is left of the caller's deadline.
    fn timeout(&self) -> Duration {
        platform::deadline::bounded(self.timeout)
    }

    fn put(&self, product: Priced) {
        self.products.write().unwrap_or_else(|e| e.into_inner()).insert(product.sku.clone(), Arc::new(product));
    }

    fn cached(&self, sku: &str) -> Option<Arc<Priced>> {
        self.products.read().unwrap_or_else(|e| e.into_inner()).get(sku).cloned()
    }

    /// Products held.
    pub fn len(&self) -> usize {
        self.products.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the list holds nothing yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the whole catalogue from the ERP, page by page; returns how
    /// many products it read.
    pub async fn fill(&self) -> Result<usize, Status> {
        let mut token = String::new();
        let mut read = 0;
        loop {
            let mut client = self.client.clone();
            let call =
                client.list_products(self.request(ListProductsRequest { page_size: FILL_PAGE, page_token: token }));
            let page = tokio::time::timeout(self.timeout(), call)
                .await
                .map_err(|_| Status::deadline_exceeded("ListProducts timed out"))??
                .into_inner();
            for product in page.products {
                match priced(product) {
                    Ok(p) => self.put(p),
                    Err(err) => tracing::warn!(error = %err, "product left out of the price list"),
                }
                read += 1;
            }
            if page.next_page_token.is_empty() {
                return Ok(read);
            }
            token = page.next_page_token;
        }
    }

    /// Fills the list in the background, retrying with capped backoff
    /// until the ERP answers or `shutdown`.
    pub fn spawn_fill(self: &Arc<Self>, shutdown: CancellationToken) {
        let list = self.clone();
        tokio::spawn(async move {
            let retry = platform::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).builder();
            let fill = backon::Retryable::retry(|| list.fill(), retry).notify(|status: &Status, wait| {
                tracing::warn!(code = ?status.code(), retry_in = ?wait, "cannot fill the price list yet");
            });
            tokio::select! {
                filled = fill => match filled {
                    Ok(n) => tracing::info!(products = n, "price list filled"),
                    Err(status) => tracing::warn!(code = ?status.code(), "price list not filled"),
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// The product `sku`: from the list, else from the ERP (and kept).
    /// `Ok(None)` when the ERP does not know it.
    pub async fn get(&self, sku: &str) -> Result<Option<Arc<Priced>>, Error> {
        if let Some(found) = self.cached(sku) {
            return Ok(Some(found));
        }
        self.fetch(sku).await
    }

    /// Reads `sku` from the ERP again, after the change feed reported a
    /// change to it; a product the ERP no longer knows leaves the list.
    pub async fn refresh(&self, sku: &str) -> Result<(), Error> {
        self.fetch(sku).await.map(|_| ())
    }

    async fn fetch(&self, sku: &str) -> Result<Option<Arc<Priced>>, Error> {
        let mut client = self.client.clone();
        let call = client.get_product(self.request(GetProductRequest { sku: sku.to_owned() }));
        let answer = match tokio::time::timeout(self.timeout(), call).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded("GetProduct timed out")),
        };
        match answer {
            Ok(product) => {
                let product = Arc::new(priced(product.into_inner())?);
                self.products.write().unwrap_or_else(|e| e.into_inner()).insert(sku.to_owned(), product.clone());
                Ok(Some(product))
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                self.products.write().unwrap_or_else(|e| e.into_inner()).remove(sku);
                Ok(None)
            }
            Err(status) if is_outage(&status) => Err(Error::Unavailable { sku: sku.to_owned(), status }),
            Err(status) => Err(Error::Erp(status)),
        }
    }
}
