//! The contracts between the tiers, generated from the `.proto` files in
//! this folder. A tier crate never imports another tier's crate: it speaks
//! through these types over gRPC, or in-process through the same generated
//! clients and servers.
//!
//! # Layout
//! - `erp/v1`: the ERP system API (products, inventory, later orders…).
//! - `payments/v1`: the payments system API.
//! - `catalog/v1`: the catalogue process API.
//! - `order_to_cash/v1`: the order-to-cash process API.
//! - `webhooks/v1`: partners' webhook endpoints and their deliveries.
//! - `order_batches/v1`: order files from partners and the quarantine.
//! - `crm/v1`: the CRM system API (customers, contacts, addresses, changes).
//! - `master_data/v1`: customer master data across CRM and ERP (golden
//!   records, quarantine, data-subject requests).
//! - `audit/v1`: the process tier's audit trail, read-only.
//!
//! [`FILE_DESCRIPTOR_SET`] holds all of them for gRPC reflection,
//! [`money`] the one rule by which every tier writes and rounds the
//! decimal amounts the contracts carry, [`custom_fields`] the rules of
//! the deployment's custom fields that every tier applies, and [`acting`]
//! who a state-changing call acts for (for the audit trail).

#![allow(missing_docs)] // generated code; the documentation is in the .proto files

pub mod acting;
pub mod custom_fields;
pub mod events;
pub mod money;

/// Encoded `FileDescriptorSet` of every package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// `erp.v1`: what an ERP can do.
pub mod erp {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("erp.v1");
    }
}

/// `payments.v1`: what a payment provider can do.
pub mod payments {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("payments.v1");
    }
}

/// `catalog.v1`: products with price and availability.
pub mod catalog {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("catalog.v1");
    }
}

/// `order_to_cash.v1`: the order-to-cash flow.
pub mod order_to_cash {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("order_to_cash.v1");
    }
}

/// `webhooks.v1`: partner webhook endpoints and their deliveries.
pub mod webhooks {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("webhooks.v1");
    }
}

/// `order_batches.v1`: order files from partners and the quarantine.
pub mod order_batches {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("order_batches.v1");
    }
}

/// `crm.v1`: what a CRM can do.
pub mod crm {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("crm.v1");
    }
}

pub mod master_data {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("master_data.v1");
    }
}

/// `audit.v1`: the process tier's audit trail.
pub mod audit {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("audit.v1");
    }
}
