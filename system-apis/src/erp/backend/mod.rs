//! ERP backends behind [`super::Connector`]: one module per ERP.

pub mod embedded;
pub mod tryton;
