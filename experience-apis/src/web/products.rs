//! `GET /web/v1/products`: the catalogue as the web shop shows it.

use crate::body::Json;
use axum::extract::{RawQuery, State};

use crate::{
    Upstreams,
    error::Error,
    extract::Caller,
    openapi::ReadRefusals,
    products::{self, ProductPage},
};

/// The catalogue with price and availability.
#[utoipa::path(get, path = "/products", tag = "web", operation_id = "list_products",
    params(
        ("page_size" = Option<u32>, Query, description = "1 to 100, default 20", minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, description = "next_page_token of the previous page", max_length = 512)
    ),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 400, description = "Bad query parameters"),
        (status = 403, description = "Without scope catalog:read"),
        ReadRefusals
    ),
    security(("bearer" = ["catalog:read"]))
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(upstreams): State<Upstreams>,
    // The catalogue is the same for every signed-in user, but no request
    // gets here without one.
    _caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ProductPage>, Error> {
    products::page(&upstreams, raw.as_deref(), "web").await
}
