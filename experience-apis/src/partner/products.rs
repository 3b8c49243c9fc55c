//! `GET /partner/v1/products`: the catalogue as partners see it, with the
//! product custom fields shown to partners (HS codes, pack sizes...).

use axum::{
    Json,
    extract::{RawQuery, State},
};

use super::Partner;
use crate::{
    Upstreams,
    error::Error,
    products::{self, ProductPage},
};

/// `GET /partner/v1/products?page_size=&page_token=`
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn list(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    RawQuery(raw): RawQuery,
) -> Result<Json<ProductPage>, Error> {
    products::page(&upstreams, raw.as_deref(), "partner").await
}
