//! CRM backends behind [`super::Connector`]: one module per CRM.

pub mod embedded;
