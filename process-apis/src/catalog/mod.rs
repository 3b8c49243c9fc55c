//! `catalog.v1`: the sellable catalogue, each product with its list price
//! and availability across warehouses, composed from `erp.v1` products and
//! inventory. Paging is the ERP's: the page token passes through unchanged.
//!
//! [`prices`] is the tier's price list, which prices orders while the ERP
//! is down.

pub mod prices;

use erp_connect_proto::{
    catalog::v1::{
        Availability, CatalogItem, ListCatalogItemsRequest, ListCatalogItemsResponse, Price, WarehouseAvailability,
        catalog_service_server::{CatalogService, CatalogServiceServer},
    },
    erp::v1::{
        GetStockLevelsRequest, ListProductsRequest, inventory_service_client::InventoryServiceClient,
        product_service_client::ProductServiceClient,
    },
};
use platform::channel::GrpcChannel;
use tonic::{Code, Request, Response, Status};

/// The `catalog.v1` service over the ERP system API reached through `erp`.
pub fn service(erp: GrpcChannel) -> CatalogServiceServer<Catalog> {
    CatalogServiceServer::new(Catalog {
        products: ProductServiceClient::new(erp.clone()),
        inventory: InventoryServiceClient::new(erp),
    })
}

/// Errors of the catalogue flow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system API call failed; its status is kept so that the caller sees
    /// the same code and details (bad page token, ERP unavailable…).
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
            Error::Erp { rpc, status } => match status.code() {
                // The caller's own mistakes and retryable outages pass through with their details.
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

/// See [`service`].
pub struct Catalog {
    products: ProductServiceClient<GrpcChannel>,
    inventory: InventoryServiceClient<GrpcChannel>,
}

#[tonic::async_trait]
impl CatalogService for Catalog {
    #[tracing::instrument(skip_all, fields(rpc = "catalog.v1.CatalogService/ListCatalogItems"))]
    async fn list_catalog_items(
        &self,
        request: Request<ListCatalogItemsRequest>,
    ) -> Result<Response<ListCatalogItemsResponse>, Status> {
        let req = request.into_inner();
        let page = self
            .products
            .clone()
            .list_products(ListProductsRequest { page_size: req.page_size, page_token: req.page_token })
            .await
            .map_err(|status| Error::Erp { rpc: "ListProducts", status })?
            .into_inner();
        let skus: Vec<String> = page.products.iter().map(|p| p.sku.clone()).collect();
        let levels = if skus.is_empty() {
            Vec::new()
        } else {
            self.inventory
                .clone()
                .get_stock_levels(GetStockLevelsRequest { skus })
                .await
                .map_err(|status| Error::Erp { rpc: "GetStockLevels", status })?
                .into_inner()
                .levels
        };
        // The ERP answers stock levels in request order, one per SKU.
        let items = page
            .products
            .into_iter()
            .zip(levels.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(product, level)| {
                let availability = level.map(|l| Availability {
                    available: l.available,
                    in_stock: l.available > 0,
                    warehouses: l
                        .warehouses
                        .into_iter()
                        .map(|w| WarehouseAvailability { warehouse: w.warehouse, available: w.available })
                        .collect(),
                });
                CatalogItem {
                    price: product.list_price.map(|m| Price { currency: m.currency, amount: m.amount }),
                    sku: product.sku,
                    name: product.name,
                    description: product.description,
                    availability: Some(availability.unwrap_or_default()),
                    custom_fields: product.custom_fields,
                }
            })
            .collect();
        Ok(Response::new(ListCatalogItemsResponse { items, next_page_token: page.next_page_token }))
    }
}
