//! `/web/v1`: the web shop's API, for signed-in end users.
//!
//! # Layout
//! - [`products`]: the catalogue with price and availability.
//! - [`orders`]: the signed-in customer's orders.

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::Upstreams;

pub mod orders;
pub mod products;

/// Routes under `/web/v1`, each with its operation.
pub fn router() -> OpenApiRouter<Upstreams> {
    OpenApiRouter::default()
        .routes(routes!(products::list))
        .routes(routes!(orders::list, orders::place))
        .routes(routes!(orders::get))
}
