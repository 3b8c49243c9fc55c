//! `/partner/v1`: the API for partners (resellers, marketplaces, 3PLs).
//!
//! A partner acts for exactly one tenant, named by its credential; every
//! call is confined to that tenant by the process tier, and the partner is
//! one ERP customer, [`Partner::customer`]. A credential without a tenant is not a
//! partner's and gets 403.
//!
//! # Layout
//! - [`products`]: the catalogue, with the partners' product custom fields.
//! - [`orders`]: the tenant's orders: place, list, read, cancel.
//! - [`invoices`]: the invoices of the tenant's orders.
//! - [`webhooks`]: the tenant's webhook endpoints and their delivery log.
//! - [`order_batches`]: order files (CSV, JSON lines) and their row results.

use axum::{
    Router,
    extract::FromRequestParts,
    routing::{get, post},
};
use erp_connect_proto::order_to_cash::v1::CustomerRef;
use http::request::Parts;

use crate::{Upstreams, error::Error, extract::Caller};

pub mod invoices;
pub mod order_batches;
pub mod orders;
pub mod products;
pub mod webhooks;

/// Routes under `/partner/v1`.
pub fn router() -> Router<Upstreams> {
    Router::new()
        .route("/products", get(products::list))
        .route("/orders", get(orders::list).post(orders::place))
        .route("/orders/{id}", get(orders::get))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/invoices/{id}", get(invoices::get))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/webhooks/{id}/replay", post(webhooks::replay))
        .route("/order-batches", post(order_batches::import))
        .route("/order-batches/{id}", get(order_batches::get))
        .route("/order-batches/{id}/results", get(order_batches::results))
}

/// A caller acting for a partner tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// The tenant, from the credential's `tenant` claim.
    pub tenant: String,
}

impl Partner {
    /// The partner as a principal's tenant allows.
    pub fn from_tenant(tenant: Option<&str>) -> Result<Self, Error> {
        match tenant.map(str::trim) {
            None | Some("") => Err(Error::Forbidden("the partner API needs a credential issued to a partner tenant")),
            // The web shop's tenant holds every shop customer's orders; a
            // credential naming it must not read them as a "partner".
            Some(crate::web::orders::TENANT) => Err(Error::Forbidden("this tenant is not a partner tenant")),
            Some(tenant) => Ok(Partner { tenant: tenant.to_owned() }),
        }
    }

    /// The ERP customer the partner orders as.
    pub fn customer(&self) -> CustomerRef {
        CustomerRef { external_id: format!("partner:{}", self.tenant), email: String::new(), name: self.tenant.clone() }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Partner {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        Partner::from_tenant(principal.tenant.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_is_a_tenant_other_than_the_web_shop() {
        let acme = Partner::from_tenant(Some("acme")).expect("partner");
        assert_eq!(acme.tenant, "acme");
        assert_eq!(
            acme.customer(),
            CustomerRef { external_id: "partner:acme".into(), email: String::new(), name: "acme".into() }
        );
        for refused in [None, Some(""), Some("  "), Some("web")] {
            assert!(matches!(Partner::from_tenant(refused), Err(Error::Forbidden(_))), "{refused:?}");
        }
    }
}
