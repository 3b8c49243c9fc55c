//! The catalogue with price and availability as every audience sees it
//! (`GET /web/v1/products`, `GET /partner/v1/products`): the same products,
//! each with the product custom fields shown to the audience.

use crate::body::Json;
use erp_connect_proto::catalog::v1::{
    CatalogItem, ListCatalogItemsRequest, catalog_service_client::CatalogServiceClient,
};
use erp_connect_proto::custom_fields::{Definitions, Entity};
use serde::Serialize;

use crate::{Upstreams, error::Error, page::PageQuery};

/// One page of the catalogue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// The products on this page, ordered by SKU.
    pub products: Vec<ProductView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A product as an audience sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    /// Stock keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Longer text.
    pub description: String,
    /// Unit price as a decimal string.
    pub price: String,
    /// ISO 4217 currency of `price`.
    pub currency: String,
    /// Stock that can be ordered now.
    pub availability: AvailabilityView,
    /// The product custom fields this audience sees, by name; `{}` when none.
    #[schema(value_type = Object)]
    pub custom_fields: serde_json::Map<String, serde_json::Value>,
}

/// Availability across warehouses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvailabilityView {
    /// Units available over all warehouses.
    pub available: i64,
    /// Whether at least one unit is available.
    pub in_stock: bool,
    /// Units available per warehouse.
    pub warehouses: Vec<WarehouseView>,
}

/// Units available in one warehouse.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WarehouseView {
    /// Warehouse code.
    pub warehouse: String,
    /// Units available there.
    pub available: i64,
}

impl ProductView {
    /// `item` as `audience` sees it.
    pub fn shown_to(item: CatalogItem, custom: &Definitions, audience: &str) -> Self {
        let price = item.price.unwrap_or_default();
        let availability = item.availability.unwrap_or_default();
        Self {
            sku: item.sku,
            name: item.name,
            description: item.description,
            price: price.amount,
            currency: price.currency,
            availability: AvailabilityView {
                available: availability.available,
                in_stock: availability.in_stock,
                warehouses: availability
                    .warehouses
                    .into_iter()
                    .map(|w| WarehouseView { warehouse: w.warehouse, available: w.available })
                    .collect(),
            },
            custom_fields: custom.to_json(Entity::Product, audience, &item.custom_fields),
        }
    }
}

/// One page of the catalogue for `audience`, from the query `raw`
/// (`page_size`, `page_token`).
pub async fn page(upstreams: &Upstreams, raw: Option<&str>, audience: &str) -> Result<Json<ProductPage>, Error> {
    let query = PageQuery::parse(raw)?;
    let page = CatalogServiceClient::new(upstreams.process.clone())
        .list_catalog_items(ListCatalogItemsRequest {
            page_size: query.page_size(),
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        // A page token the catalogue does not know is a bad query parameter.
        .map_err(Error::from_query_status)?
        .into_inner();
    Ok(Json(ProductPage {
        products: page
            .items
            .into_iter()
            .map(|i| ProductView::shown_to(i, &upstreams.custom_fields, audience))
            .collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}
