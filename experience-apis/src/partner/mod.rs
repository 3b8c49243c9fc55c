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

use axum::extract::FromRequestParts;
use erp_connect_proto::order_to_cash::v1::CustomerRef;
use http::request::Parts;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{Upstreams, error::Error, extract::Caller};

pub mod invoices;
pub mod order_batches;
pub mod orders;
pub mod products;
pub mod webhooks;

/// Routes under `/partner/v1`, each with its operation.
pub fn router() -> OpenApiRouter<Upstreams> {
    OpenApiRouter::default()
        .routes(routes!(products::list))
        .routes(routes!(orders::list, orders::place))
        .routes(routes!(orders::get))
        .routes(routes!(orders::cancel))
        .routes(routes!(invoices::get))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::replay))
        .routes(routes!(order_batches::import))
        .routes(routes!(order_batches::get))
        .routes(routes!(order_batches::results))
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
