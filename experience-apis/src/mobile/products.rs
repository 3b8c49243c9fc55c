//! `GET /mobile/v1/products`: the catalogue in as few bytes as a phone
//! needs, `sku`, `name`, `price`, `currency` and `in_stock` per product, or
//! only the fields named in `fields=`.

use crate::body::Json;
use axum::extract::{RawQuery, State};
use erp_connect_proto::catalog::v1::{ListCatalogItemsRequest, catalog_service_client::CatalogServiceClient};
use serde::Serialize;

use crate::{Upstreams, error::Error, extract::Caller, openapi::ReadRefusals, page::PageQuery};

/// The fields a mobile product has, in the order they are written.
pub const FIELDS: &[&str] = &["sku", "name", "price", "currency", "in_stock"];

/// One page of the compact catalogue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MobileProductPage {
    /// The products on this page, ordered by SKU, each with the selected fields.
    pub products: Vec<MobileProduct>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A product as the mobile app sees it. With `fields=`, only the fields
/// named are present.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MobileProduct {
    /// Stock keeping unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unit price as a decimal string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// ISO 4217 currency of `price`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Whether at least one unit can be ordered now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
}

/// `fields=`: a comma-separated selection out of [`FIELDS`].
fn parse_fields(value: &str) -> Result<Vec<&'static str>, String> {
    value
        .split(',')
        .map(|name| {
            FIELDS
                .iter()
                .copied()
                .find(|f| *f == name.trim())
                .ok_or_else(|| format!("must be a comma-separated list out of {}", FIELDS.join(", ")))
        })
        .collect()
}

/// The catalogue for small screens: a few fields per product, small pages.
#[utoipa::path(get, path = "/products", tag = "mobile", operation_id = "list_mobile_products",
    params(
        ("fields" = Option<String>, Query, description = "Comma-separated selection out of sku, name, price, currency, \
            in_stock; default all", example = "sku,price,in_stock"),
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 10", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = MobileProductPage),
        (status = 400, description = "Bad query parameters, e.g. an unknown field"),
        (status = 403, description = "Without scope catalog:read"),
        ReadRefusals
    ),
    security(("bearer" = ["catalog:read"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<MobileProductPage>, Error> {
    let mut fields: Vec<&'static str> = FIELDS.to_vec();
    let query = PageQuery::parse_with(raw.as_deref(), |name, value| {
        (name == "fields").then(|| parse_fields(value).map(|selected| fields = selected))
    })?;
    let page = CatalogServiceClient::new(upstreams.process.clone())
        .list_catalog_items(ListCatalogItemsRequest {
            page_size: query.page_size.unwrap_or(super::DEFAULT_PAGE_SIZE) as i32,
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .map_err(Error::from_query_status)?
        .into_inner();
    let products = page
        .items
        .into_iter()
        .map(|item| {
            let price = item.price.unwrap_or_default();
            let wanted = |field: &str| fields.contains(&field);
            MobileProduct {
                sku: wanted("sku").then_some(item.sku),
                name: wanted("name").then_some(item.name),
                price: wanted("price").then_some(price.amount),
                currency: wanted("currency").then_some(price.currency),
                in_stock: wanted("in_stock").then(|| item.availability.is_some_and(|a| a.in_stock)),
            }
        })
        .collect();
    Ok(Json(MobileProductPage { products, next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_known_fields_only() {
        assert_eq!(parse_fields("in_stock,sku"), Ok(vec!["in_stock", "sku"]));
        assert_eq!(parse_fields("price, price"), Ok(vec!["price", "price"]));
        assert!(parse_fields("sku,description").is_err());
        assert!(parse_fields("").is_err());
    }
}
