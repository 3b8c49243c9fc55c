//! `GET /web/v1/products`: the catalogue as the web shop shows it.

use axum::{
    Json,
    extract::{RawQuery, State},
};

use crate::{
    Upstreams,
    error::Error,
    extract::Caller,
    products::{self, ProductPage},
};

/// `GET /web/v1/products?page_size=&page_token=`
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
