//! `ProductService` over Tryton: products are `product.product` variants
//! with a code (the SKU) whose `product.template` is salable; the name,
//! description, unit and list price come from the template through the
//! variant's fields (`list_price_used` is the template's list price in the
//! company's currency). Pages are ordered by code, and a page token is the
//! last code of the page before. Custom fields of products are fields of
//! `product.product`, read with the product.

use erp_connect_proto::{
    custom_fields::Entity,
    erp::v1::{Money, Product},
    money::format as money,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Setup, TrytonErp,
    records::{Amount, decode, flag},
};
use crate::erp::{Error, Page};

/// The `product.product` fields every product read asks for.
const PRODUCT_FIELDS: &[&str] =
    &["code", "name", "description", "list_price_used", "default_uom.name", "active", "salable"];

/// `product.product` read with [`PRODUCT_FIELDS`].
#[derive(Debug, Deserialize)]
struct ProductRecord {
    code: Option<String>,
    name: String,
    description: Option<String>,
    list_price_used: Option<Amount>,
    #[serde(rename = "default_uom.")]
    default_uom: Uom,
    #[serde(deserialize_with = "flag")]
    active: bool,
    /// From the `sale` module: whether the template may be sold.
    #[serde(deserialize_with = "flag")]
    salable: bool,
}

/// `product.uom` read as `default_uom.name`.
#[derive(Debug, Deserialize)]
struct Uom {
    name: String,
}

impl TrytonErp {
    /// The product fields to read: ours and the custom fields'.
    fn product_fields(setup: &Setup) -> Vec<&str> {
        let mut fields = PRODUCT_FIELDS.to_vec();
        fields.extend(setup.custom.fields(Entity::Product));
        fields
    }

    /// A product from its record, kept raw for the custom fields.
    fn product(setup: &Setup, raw: &Value) -> Result<Product, Error> {
        let record: ProductRecord = decode("product.product", raw)?;
        Ok(Product {
            sku: record.code.unwrap_or_default(),
            name: record.name,
            description: record.description.unwrap_or_default(),
            uom: record.default_uom.name.to_lowercase(),
            list_price: Some(Money {
                currency: setup.company_currency.clone(),
                // Tryton allows a template without a list price; it is listed at zero.
                amount: money(record.list_price_used.map(|a| a.0).unwrap_or_default()),
            }),
            // Listing keeps to salable products; a product read on its own
            // (a price list refresh from the change feed) must agree.
            active: record.active && record.salable,
            custom_fields: setup.custom.read(Entity::Product, raw),
        })
    }

    pub(super) async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        let setup = self.setup().await?;
        let mut domain = vec![json!(["salable", "=", true]), json!(["code", "!=", null])];
        if let Some(after) = after {
            domain.push(json!(["code", ">", after]));
        }
        let mut records: Vec<Value> = self
            .search_read(
                "product.product",
                json!(domain),
                Some(limit + 1),
                Some(json!([["code", "ASC"]])),
                &Self::product_fields(&setup),
            )
            .await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let items = records.iter().map(|r| Self::product(&setup, r)).collect::<Result<_, _>>()?;
        Ok(Page { items, more })
    }

    pub(super) async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        let setup = self.setup().await?;
        let fields = Self::product_fields(&setup);
        let found: Vec<Value> =
            self.search_read("product.product", json!([["code", "=", sku]]), Some(1), None, &fields).await?;
        match found.first() {
            Some(record) => Self::product(&setup, record),
            None => Err(Error::not_found("product", sku)),
        }
    }
}
