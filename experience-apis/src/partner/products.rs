//! `GET /partner/v1/products`: the catalogue as partners see it, with the
//! product custom fields shown to partners (HS codes, pack sizes...).

use crate::body::Json;
use axum::extract::{RawQuery, State};

use super::Partner;
use crate::{
    Upstreams,
    error::Error,
    openapi::ReadRefusals,
    products::{self, ProductPage},
};

/// The catalogue with price and availability, and the product custom fields shown to partners.
#[utoipa::path(get, path = "/products", tag = "partner", operation_id = "list_partner_products",
    params(
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 400, description = "Bad query parameters"),
        (status = 403, description = "Without scope catalog:read"),
        (status = 429, description = "The API key's rate limit is reached; retry after Retry-After seconds"),
        ReadRefusals
    ),
    security(("bearer" = ["catalog:read"]), ("api_key" = ["catalog:read"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn list(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    RawQuery(raw): RawQuery,
) -> Result<Json<ProductPage>, Error> {
    products::page(&upstreams, raw.as_deref(), "partner").await
}
