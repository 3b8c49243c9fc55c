//! `/web/v1`: the web shop's API, for signed-in end users.

use axum::{Router, routing::get};

use crate::Upstreams;

pub mod products;

/// Routes under `/web/v1`.
pub fn router() -> Router<Upstreams> {
    Router::new().route("/products", get(products::list))
}
