//! Stock levels for catalogue pages, cached so that a page read again costs
//! the ERP nothing.
//!
//! A page's SKUs whose levels are not cached, or no longer fresh, are read
//! in one `erp.v1.InventoryService/GetStockLevels` call (a page holds at
//! most 100 products, the call's limit). Levels stop being fresh when:
//! - the change feed reports a sales order or shipment change (the
//!   order-to-cash feed follower calls [`StockCache::invalidate`]): those
//!   reserve or move stock, and the feed does not say which SKUs, so every
//!   cached level goes stale at once; or
//! - they are older than `process.catalog_stock_max_age` (default 10 s):
//!   the backstop for stock the feed does not report (goods received,
//!   inventory counts, a missed poll).
//!
//! Availability on a page is so at most a feed poll behind the ERP for
//! orders and shipments, and at most the max age behind for anything else.
//! A stale level is never shown: if the ERP cannot be asked, the page fails.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use erp_connect_proto::erp::v1::{GetStockLevelsRequest, StockLevel, inventory_service_client::InventoryServiceClient};
use platform::channel::GrpcChannel;
use tokio::time::Instant;
use tonic::Status;

/// A level as read, and when.
#[derive(Debug, Clone)]
struct Held {
    level: StockLevel,
    read_at: Instant,
    /// The invalidation count when the read started.
    generation: u64,
}

/// See the module documentation.
pub struct StockCache {
    levels: Mutex<HashMap<String, Held>>,
    /// Bumped by every [`StockCache::invalidate`].
    generation: AtomicU64,
    max_age: Duration,
    client: InventoryServiceClient<GrpcChannel>,
    timeout: Duration,
}

impl StockCache {
    /// An empty cache over the ERP system API behind `system`.
    pub fn new(system: GrpcChannel, timeout: Duration, max_age: Duration) -> Self {
        Self {
            levels: Mutex::default(),
            generation: AtomicU64::new(0),
            max_age,
            client: InventoryServiceClient::new(system),
            timeout,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.levels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every held level is stale from now on.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The levels of `skus`, in their order: fresh ones from the cache, the
    /// others from the ERP in one call.
    pub async fn levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Status> {
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = |held: &Held| held.generation == generation && held.read_at.elapsed() < self.max_age;
        let mut found: Vec<Option<StockLevel>> = {
            let held = self.held();
            skus.iter().map(|sku| held.get(sku).filter(|h| fresh(h)).map(|h| h.level.clone())).collect()
        };
        let missing: Vec<String> =
            skus.iter().zip(&found).filter(|(_, level)| level.is_none()).map(|(sku, _)| sku.clone()).collect();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        let read_at = Instant::now();
        let mut request = tonic::Request::new(GetStockLevelsRequest { skus: missing });
        let timeout = platform::deadline::bounded(self.timeout);
        request.set_timeout(timeout);
        let mut client = self.client.clone();
        let read = tokio::time::timeout(timeout, client.get_stock_levels(request))
            .await
            .map_err(|_| Status::deadline_exceeded("GetStockLevels timed out"))??
            .into_inner()
            .levels;
        let mut read: HashMap<String, StockLevel> = read.into_iter().map(|l| (l.sku.clone(), l)).collect();
        {
            // Kept with the generation the read started in: an invalidation
            // while it ran leaves them stale.
            let mut held = self.held();
            for level in read.values() {
                held.insert(level.sku.clone(), Held { level: level.clone(), read_at, generation });
            }
        }
        for (sku, slot) in skus.iter().zip(found.iter_mut()) {
            if slot.is_none() {
                // The ERP answers every SKU asked for; one it left out has none.
                *slot = Some(read.remove(sku).unwrap_or_else(|| StockLevel { sku: sku.clone(), ..Default::default() }));
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}
