//! `catalog.v1`: the sellable catalogue, each product with its list price
//! and availability across warehouses.
//!
//! Pages come from the tier's one catalogue cache, [`prices`] (the price
//! list that prices orders while the ERP is down): a page costs no
//! `erp.v1` `ListProducts` call, and its availability comes from
//! [`stock`], which reads what it does not hold fresh in one
//! `GetStockLevels` call. Paging is keyset-based: a page token is the
//! opaque form of "after this SKU", so pages stay stable while products
//! are added or removed.

pub mod prices;
pub mod stock;

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use erp_connect_proto::catalog::v1::{
    Availability, CatalogItem, ListCatalogItemsRequest, ListCatalogItemsResponse, Price, WarehouseAvailability,
    catalog_service_server::{CatalogService, CatalogServiceServer},
};
use erp_connect_proto::erp::v1::{Product, StockLevel};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use prices::PriceList;

/// Page size when the caller gives none, as `erp.v1`'s.
const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page: also the most SKUs one `GetStockLevels` call takes.
const MAX_PAGE_SIZE: usize = 100;
/// Marks our page tokens, so that another service's token is refused.
const PAGE_TOKEN_PREFIX: &str = "catalog.v1:";

/// The `catalog.v1` service over the catalogue cache `prices`.
pub fn service(prices: Arc<PriceList>) -> CatalogServiceServer<Catalog> {
    CatalogServiceServer::new(Catalog { prices })
}

/// Errors of the catalogue flow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: &'static str,
    },
    /// A system API call failed; its status is kept so that the caller sees
    /// the same code and details (ERP unavailable…).
    #[error("erp.v1 {rpc} failed: {status}")]
    Erp {
        /// The system API method.
        rpc: &'static str,
        /// What it answered.
        status: Status,
    },
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid {field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            Error::Erp { rpc, status } => match status.code() {
                // Retryable outages pass through with their details.
                Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted => status,
                code => {
                    tracing::error!(rpc, ?code, message = status.message(), "system API call failed");
                    Status::internal("the catalogue could not be read")
                }
            },
        }
    }
}

fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::Invalid { field: "page_size", message: "must not be negative" }),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

fn encode_page_token(last_sku: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last_sku}"))
}

fn decode_page_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::Invalid { field: "page_token", message: "not a token from a previous page" };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    Ok(Some(text.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?.to_owned()))
}

/// A catalogue item from the ERP's product and stock level.
fn item(product: &Product, level: StockLevel) -> CatalogItem {
    CatalogItem {
        price: product.list_price.as_ref().map(|m| Price { currency: m.currency.clone(), amount: m.amount.clone() }),
        sku: product.sku.clone(),
        name: product.name.clone(),
        description: product.description.clone(),
        custom_fields: product.custom_fields.clone(),
        availability: Some(Availability {
            available: level.available,
            in_stock: level.available > 0,
            warehouses: level
                .warehouses
                .into_iter()
                .map(|w| WarehouseAvailability { warehouse: w.warehouse, available: w.available })
                .collect(),
        }),
    }
}

/// See [`service`].
pub struct Catalog {
    prices: Arc<PriceList>,
}

#[tonic::async_trait]
impl CatalogService for Catalog {
    #[tracing::instrument(skip_all, fields(rpc = "catalog.v1.CatalogService/ListCatalogItems"))]
    async fn list_catalog_items(
        &self,
        request: Request<ListCatalogItemsRequest>,
    ) -> Result<Response<ListCatalogItemsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let after = decode_page_token(&req.page_token)?;
        let page = self
            .prices
            .page(after.as_deref(), limit)
            .await
            .map_err(|status| Error::Erp { rpc: "ListProducts", status })?;
        let skus: Vec<String> = page.products.iter().map(|p| p.sku.clone()).collect();
        let levels =
            self.prices.stock().levels(&skus).await.map_err(|status| Error::Erp { rpc: "GetStockLevels", status })?;
        let next_page_token = match (page.more, skus.last()) {
            (true, Some(last)) => encode_page_token(last),
            _ => String::new(),
        };
        let items = page.products.iter().zip(levels).map(|(product, level)| item(product, level)).collect();
        Ok(Response::new(ListCatalogItemsResponse { items, next_page_token }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use erp_connect_proto::erp::v1::{
        GetStockLevelsRequest, GetStockLevelsResponse, ListProductsRequest, ListProductsResponse, Money, WarehouseStock,
    };

    use super::*;
    use crate::order_to_cash::steps::fake::Fake;

    #[test]
    fn catalogue_page_tokens_round_trip_and_garbage_is_rejected() {
        let token = encode_page_token("WIDGET-1");
        assert_eq!(decode_page_token(&token).expect("valid").as_deref(), Some("WIDGET-1"));
        assert_eq!(decode_page_token("").expect("empty"), None);
        let foreign = URL_SAFE_NO_PAD.encode("page:WIDGET-1");
        for bad in ["garbage!", "AAAA", foreign.as_str()] {
            assert!(matches!(decode_page_token(bad), Err(Error::Invalid { field: "page_token", .. })), "{bad}");
        }
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(1_000).expect("capped"), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }

    fn product(sku: &str, active: bool) -> Product {
        Product {
            sku: sku.into(),
            name: format!("{sku} name"),
            description: format!("{sku} text"),
            uom: "unit".into(),
            list_price: Some(Money { currency: "EUR".into(), amount: "2.50".into() }),
            active,
            custom_fields: Default::default(),
        }
    }

    fn levels(skus: &[&str], available: i64) -> GetStockLevelsResponse {
        let level = |sku: &&str| StockLevel {
            sku: (*sku).into(),
            warehouses: vec![WarehouseStock { warehouse: "WH".into(), on_hand: available, available }],
            on_hand: available,
            available,
        };
        GetStockLevelsResponse { levels: skus.iter().map(level).collect() }
    }

    async fn page(catalog: &Catalog, page_size: i32, page_token: &str) -> ListCatalogItemsResponse {
        let request = Request::new(ListCatalogItemsRequest { page_size, page_token: page_token.into() });
        catalog.list_catalog_items(request).await.expect("a page").into_inner()
    }

    fn skus(page: &ListCatalogItemsResponse) -> Vec<&str> {
        page.items.iter().map(|i| i.sku.as_str()).collect()
    }

    fn stock_reads(fake: &Fake) -> Vec<Vec<String>> {
        fake.requests::<GetStockLevelsRequest>("GetStockLevels").into_iter().map(|r| r.skus).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn catalogue_pages_come_from_the_one_cache_and_stock_is_read_only_when_stale() {
        let fake = Fake::new();
        let products = vec![product("A", true), product("B", false), product("C", true), product("D", true)];
        fake.answer("ListProducts", ListProductsResponse { products, next_page_token: String::new() })
            .answer("GetStockLevels", levels(&["A", "C"], 3))
            .answer("GetStockLevels", levels(&["D"], 0))
            .answer("GetStockLevels", levels(&["A", "C"], 1))
            .answer("GetStockLevels", levels(&["A", "C"], 7));
        let prices = PriceList::with_stock_max_age(fake.channel(), Duration::from_secs(5), Duration::from_secs(10));
        let catalog = Catalog { prices: prices.clone() };

        // The first page fills the cache (one pass), then pages in SKU
        // order without inactive products, with keyset tokens.
        let first = page(&catalog, 2, "").await;
        assert_eq!(skus(&first), ["A", "C"]);
        let a = &first.items[0];
        assert_eq!((a.name.as_str(), a.description.as_str()), ("A name", "A text"), "the ERP's product, whole");
        assert_eq!(a.price.as_ref().map(|p| p.amount.as_str()), Some("2.50"));
        assert_eq!(a.availability.as_ref().map(|s| (s.available, s.in_stock)), Some((3, true)));
        let second = page(&catalog, 2, &first.next_page_token).await;
        assert_eq!(skus(&second), ["D"]);
        assert!(second.next_page_token.is_empty(), "the last page");
        assert_eq!(second.items[0].availability.as_ref().map(|s| s.in_stock), Some(false));

        // Read again: nothing from the ERP.
        assert_eq!(skus(&page(&catalog, 2, "").await), ["A", "C"]);
        assert_eq!(fake.requests::<ListProductsRequest>("ListProducts").len(), 1, "one fill, no page reads");
        assert_eq!(stock_reads(&fake), [vec!["A", "C"], vec!["D"]], "one stock read per page, once");

        // The change feed saw an order: the page's stock is read again.
        prices.stock().invalidate();
        let after_order = page(&catalog, 2, "").await;
        assert_eq!(after_order.items[0].availability.as_ref().map(|s| s.available), Some(1));
        // Unreported stock moves show within the max age.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(stock_reads(&fake).len(), 3);
        page(&catalog, 2, "").await;
        assert_eq!(stock_reads(&fake).len(), 3, "still fresh");
        tokio::time::advance(Duration::from_secs(2)).await;
        let aged = page(&catalog, 2, "").await;
        assert_eq!(aged.items[0].availability.as_ref().map(|s| s.available), Some(7));
        assert_eq!(stock_reads(&fake).len(), 4);

        // The same cache prices orders.
        let priced = prices.get("C").await.expect("priced").expect("known");
        assert_eq!(priced.unit_price.to_string(), "2.50");
        assert!(fake.requests::<erp_connect_proto::erp::v1::GetProductRequest>("GetProduct").is_empty());
    }

    #[tokio::test]
    async fn catalogue_pages_fail_while_the_erp_cannot_fill_the_cache_or_give_stale_stock() {
        let fake = Fake::new();
        fake.fail("ListProducts", Status::unavailable("down"));
        let catalog = Catalog { prices: PriceList::new(fake.channel(), Duration::from_secs(5)) };
        let request = || Request::new(ListCatalogItemsRequest { page_size: 2, page_token: String::new() });
        let down = catalog.list_catalog_items(request()).await.expect_err("no cache yet");
        assert_eq!(down.code(), Code::Unavailable);

        let products = vec![product("A", true)];
        fake.answer("ListProducts", ListProductsResponse { products, next_page_token: String::new() })
            .fail("GetStockLevels", Status::unavailable("down"));
        let stale = catalog.list_catalog_items(request()).await.expect_err("no stock");
        assert_eq!(stale.code(), Code::Unavailable);
        let bad = catalog
            .list_catalog_items(Request::new(ListCatalogItemsRequest { page_size: 2, page_token: "x!".into() }))
            .await
            .expect_err("bad token");
        assert_eq!(bad.code(), Code::InvalidArgument);
    }
}
