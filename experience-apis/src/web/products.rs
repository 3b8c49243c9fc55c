//! `GET /web/v1/products`: the catalogue with price and availability.

use axum::{
    Extension, Json,
    extract::{RawQuery, State},
};
use erp_connect_proto::catalog::v1::{
    CatalogItem, ListCatalogItemsRequest, catalog_service_client::CatalogServiceClient,
};
use platform::{principal::Principal, problem::FieldError};
use serde::Serialize;

use crate::{Upstreams, error::Error};

/// Largest `page_size` a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest `page_token` accepted; real tokens are far shorter.
const MAX_PAGE_TOKEN_LEN: usize = 512;

/// One page of the catalogue.
#[derive(Debug, Serialize)]
pub struct ProductPage {
    /// The products on this page, ordered by SKU.
    pub products: Vec<ProductView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A product as the web shop shows it.
#[derive(Debug, Serialize)]
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
}

/// Availability across warehouses.
#[derive(Debug, Serialize)]
pub struct AvailabilityView {
    /// Units available over all warehouses.
    pub available: i64,
    /// Whether at least one unit is available.
    pub in_stock: bool,
    /// Units available per warehouse.
    pub warehouses: Vec<WarehouseView>,
}

/// Units available in one warehouse.
#[derive(Debug, Serialize)]
pub struct WarehouseView {
    /// Warehouse code.
    pub warehouse: String,
    /// Units available there.
    pub available: i64,
}

impl From<CatalogItem> for ProductView {
    fn from(item: CatalogItem) -> Self {
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
        }
    }
}

/// Validated query of a list call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Requested page size; `None` takes the server default.
    pub page_size: Option<u32>,
    /// Token of the page to read.
    pub page_token: Option<String>,
}

impl ListQuery {
    /// Parses `page_size` and `page_token`; anything else, a repeated
    /// parameter or a bad value is a 400 naming the parameter.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let mut query = ListQuery::default();
        let mut errors = Vec::new();
        let mut seen = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.contains(&key) {
                errors.push(FieldError { field: key.to_string(), message: "given more than once".into() });
                continue;
            }
            seen.push(key.clone());
            match key.as_ref() {
                "page_size" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => query.page_size = Some(n),
                    _ => errors.push(FieldError {
                        field: "page_size".into(),
                        message: format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    }),
                },
                "page_token" if value.len() > MAX_PAGE_TOKEN_LEN => {
                    errors.push(FieldError { field: "page_token".into(), message: "too long".into() })
                }
                "page_token" => query.page_token = Some(value.into_owned()),
                other => errors.push(FieldError { field: other.to_owned(), message: "unknown query parameter".into() }),
            }
        }
        if errors.is_empty() { Ok(query) } else { Err(Error::Invalid(errors)) }
    }
}

/// `GET /web/v1/products?page_size=&page_token=`
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    principal: Option<Extension<Principal>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ProductPage>, Error> {
    // The catalogue is the same for every signed-in user, but no request
    // gets here without one.
    let Some(Extension(_principal)) = principal else {
        return Err(Error::NoPrincipal);
    };
    let query = ListQuery::parse(raw.as_deref())?;
    let page = CatalogServiceClient::new(upstreams.process.clone())
        .list_catalog_items(ListCatalogItemsRequest {
            page_size: query.page_size.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            page_token: query.page_token.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Json(ProductPage {
        products: page.items.into_iter().map(ProductView::from).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn parses_known_parameters() {
        let q = ListQuery::parse(Some("page_size=5&page_token=abc")).expect("valid");
        assert_eq!(q, ListQuery { page_size: Some(5), page_token: Some("abc".into()) });
        assert_eq!(ListQuery::parse(None).expect("empty"), ListQuery::default());
    }

    #[test]
    fn rejects_bad_values_unknown_and_repeated_parameters() {
        assert_eq!(fields(ListQuery::parse(Some("page_size=0")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(ListQuery::parse(Some("page_size=abc")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(ListQuery::parse(Some("page_size=101")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(ListQuery::parse(Some("sort=name")).expect_err("invalid")), ["sort"]);
        assert_eq!(fields(ListQuery::parse(Some("page_size=1&page_size=2")).expect_err("invalid")), ["page_size"]);
    }
}
