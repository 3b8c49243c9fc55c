//! The catalogue cache (named for its first use, the price list): every
//! sellable product by SKU, in SKU order, as the ERP's whole `erp.v1`
//! `Product` message, so that orders are priced and catalogue pages are
//! served without the ERP on the request path. It is the one catalogue
//! cache of the product; keeping whole messages means a field added to
//! `Product` reaches the catalogue without touching this cache.
//!
//! Filled from `erp.v1.ProductService/ListProducts` when the tier starts
//! (retried until the ERP answers; a catalogue page asked for before then
//! runs the fill itself, so it still costs the ERP one pass, not one per
//! page), completed on a miss by `GetProduct`, and kept current by the ERP
//! change feed: the order-to-cash feed follower calls [`PriceList::refresh`]
//! for every product change, so a price edited in the ERP is used here one
//! feed poll later (`process.saga.feed_poll_interval`). While the ERP is
//! down the list answers from what it holds; a SKU it has never seen is
//! then [`Error::Unavailable`].
//!
//! It also holds the stock levels last read for catalogue pages
//! ([`PriceList::stock`], see [`super::stock`]).
//!
//! One list per process tier replica, shared by the flows that price or
//! show products.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use erp_connect_proto::erp::v1::{
    GetProductRequest, ListProductsRequest, Product, product_service_client::ProductServiceClient,
};
use platform::channel::GrpcChannel;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::stock::StockCache;

/// Products per `ListProducts` page while filling.
const FILL_PAGE: i32 = 100;

/// How long catalogue pages may show stock levels the change feed has not
/// invalidated; see [`super::stock`]. Default of `process.catalog_stock_max_age`.
pub const DEFAULT_STOCK_MAX_AGE: Duration = Duration::from_secs(10);

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

/// One cached product: the ERP's message, and its price when it parsed.
#[derive(Debug, Clone)]
struct Entry {
    product: Arc<Product>,
    priced: Option<Arc<Priced>>,
}

impl Entry {
    fn new(product: Product) -> Self {
        let priced = match priced(&product) {
            Ok(p) => Some(Arc::new(p)),
            Err(err) => {
                // Shown in the catalogue as the ERP sent it; never priced.
                tracing::warn!(error = %err, "product left out of the price list");
                None
            }
        };
        Self { product: Arc::new(product), priced }
    }
}

/// A page of the cached catalogue.
#[derive(Debug)]
pub struct CataloguePage {
    /// Active products after the asked-for SKU, in SKU order.
    pub products: Vec<Arc<Product>>,
    /// Whether active products follow the last one.
    pub more: bool,
}

/// See the module documentation.
pub struct PriceList {
    products: RwLock<BTreeMap<String, Entry>>,
    /// Set once a whole pass of `ListProducts` went into `products`.
    filled: AtomicBool,
    /// One fill at a time, whether started at start or by a page.
    filling: tokio::sync::Mutex<()>,
    client: ProductServiceClient<GrpcChannel>,
    stock: StockCache,
    timeout: Duration,
}

fn priced(product: &Product) -> Result<Priced, Error> {
    let price = product.list_price.clone().unwrap_or_default();
    let unit_price = price.amount.parse().map_err(|_| Error::Malformed(product.sku.clone()))?;
    Ok(Priced {
        sku: product.sku.clone(),
        name: product.name.clone(),
        unit_price,
        currency: price.currency,
        active: product.active,
    })
}

/// Whether a system API status means the ERP could not be asked (as
/// opposed to an answer about the product).
pub(crate) fn is_outage(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled)
}

impl PriceList {
    /// An empty list over the ERP system API behind `system`; each call
    /// bounded by `timeout`; stock levels kept [`DEFAULT_STOCK_MAX_AGE`].
    pub fn new(system: GrpcChannel, timeout: Duration) -> Arc<Self> {
        Self::with_stock_max_age(system, timeout, DEFAULT_STOCK_MAX_AGE)
    }

    /// As [`PriceList::new`], stock levels kept at most `stock_max_age`.
    pub fn with_stock_max_age(system: GrpcChannel, timeout: Duration, stock_max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            products: RwLock::default(),
            filled: AtomicBool::new(false),
            filling: tokio::sync::Mutex::new(()),
            client: ProductServiceClient::new(system.clone()),
            stock: StockCache::new(system, timeout, stock_max_age),
            timeout,
        })
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

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.products.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.products.read().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, product: Product) -> Entry {
        let entry = Entry::new(product);
        self.write().insert(entry.product.sku.clone(), entry.clone());
        entry
    }

    /// Products held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the list holds nothing yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the whole catalogue has been read once.
    pub fn is_filled(&self) -> bool {
        self.filled.load(Ordering::Acquire)
    }

    /// The stock levels of catalogue pages.
    pub fn stock(&self) -> &StockCache {
        &self.stock
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
                self.put(product);
                read += 1;
            }
            if page.next_page_token.is_empty() {
                self.filled.store(true, Ordering::Release);
                return Ok(read);
            }
            token = page.next_page_token;
        }
    }

    /// Fills the list unless it is filled; one fill at a time.
    async fn fill_once(&self) -> Result<(), Status> {
        if self.is_filled() {
            return Ok(());
        }
        let _one = self.filling.lock().await;
        if self.is_filled() {
            return Ok(());
        }
        let read = self.fill().await?;
        tracing::info!(products = read, "price list filled");
        Ok(())
    }

    /// Fills the list in the background, retrying with capped backoff
    /// until the ERP answers or `shutdown`.
    pub fn spawn_fill(self: &Arc<Self>, shutdown: CancellationToken) {
        let list = self.clone();
        tokio::spawn(async move {
            let retry = platform::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).builder();
            let fill = backon::Retryable::retry(|| list.fill_once(), retry).notify(|status: &Status, wait| {
                tracing::warn!(code = ?status.code(), retry_in = ?wait, "cannot fill the price list yet");
            });
            tokio::select! {
                filled = fill => if let Err(status) = filled {
                    tracing::warn!(code = ?status.code(), "price list not filled");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// Up to `limit` active products after `after` (from the first when
    /// `None`), in SKU order; fills the list first if it is not filled yet.
    pub async fn page(&self, after: Option<&str>, limit: usize) -> Result<CataloguePage, Status> {
        self.fill_once().await?;
        let products = self.read();
        let start = after.map_or(Bound::Unbounded, |sku| Bound::Excluded(sku.to_owned()));
        let mut active = products
            .range((start, Bound::Unbounded))
            .filter(|(_, entry)| entry.product.active)
            .map(|(_, entry)| entry.product.clone());
        let page: Vec<_> = active.by_ref().take(limit).collect();
        let more = active.next().is_some();
        Ok(CataloguePage { products: page, more })
    }

    /// The product `sku`: from the list, else from the ERP (and kept).
    /// `Ok(None)` when the ERP does not know it.
    pub async fn get(&self, sku: &str) -> Result<Option<Arc<Priced>>, Error> {
        let cached = self.read().get(sku).cloned();
        match cached {
            Some(Entry { priced: Some(found), .. }) => Ok(Some(found)),
            Some(Entry { priced: None, .. }) => Err(Error::Malformed(sku.to_owned())),
            None => self.fetch(sku).await,
        }
    }

    /// Reads `sku` from the ERP again, after the change feed reported a
    /// change to it; a product the ERP no longer knows leaves the list
    /// (`None`).
    pub async fn refresh(&self, sku: &str) -> Result<Option<Arc<Priced>>, Error> {
        self.fetch(sku).await
    }

    async fn fetch(&self, sku: &str) -> Result<Option<Arc<Priced>>, Error> {
        let mut client = self.client.clone();
        let call = client.get_product(self.request(GetProductRequest { sku: sku.to_owned() }));
        let answer = match tokio::time::timeout(self.timeout(), call).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded("GetProduct timed out")),
        };
        match answer {
            Ok(product) => match self.put(product.into_inner()).priced {
                Some(found) => Ok(Some(found)),
                None => Err(Error::Malformed(sku.to_owned())),
            },
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                self.write().remove(sku);
                Ok(None)
            }
            Err(status) if is_outage(&status) => Err(Error::Unavailable { sku: sku.to_owned(), status }),
            Err(status) => Err(Error::Erp(status)),
        }
    }
}
