//! Payment providers behind [`super::Provider`]: one module per provider.

pub mod sandbox;
