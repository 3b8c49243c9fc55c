//! `/mobile/v1`: the mobile app's API, for the web shop's signed-in
//! customers on small screens and slow networks.
//!
//! Same customers, same orders and same scopes as [`crate::web`]; only the
//! shape differs: a handful of fields per product or order, small default
//! pages, and the order's status pushed as server-sent events instead of
//! polled.
//!
//! # Layout
//! - [`products`]: the catalogue, compact, with an optional `fields=` selection.
//! - [`orders`]: the customer's orders, compact; placing one.
//! - [`events`]: `GET /mobile/v1/orders/{id}/events`, the order's status as SSE.

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::Upstreams;

pub mod events;
pub mod orders;
pub mod products;

/// Default page size of the mobile lists: a phone screen's worth.
pub const DEFAULT_PAGE_SIZE: u32 = 10;

/// Routes under `/mobile/v1`, each with its operation.
pub fn router() -> OpenApiRouter<Upstreams> {
    OpenApiRouter::default()
        .routes(routes!(products::list))
        .routes(routes!(orders::list, orders::place))
        .routes(routes!(orders::get))
        .routes(routes!(events::stream))
}
