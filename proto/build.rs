//! Compiles `proto/**/*.proto` with protox (pure Rust, so no `protoc` is
//! needed on a fresh machine), keeps the descriptor set for gRPC reflection,
//! and generates tonic clients and servers from it.

use prost::Message;

const PROTOS: &[&str] = &[
    "erp/v1/erp.proto",
    "payments/v1/payments.proto",
    "catalog/v1/catalog.proto",
    "order_to_cash/v1/order_to_cash.proto",
    "webhooks/v1/webhooks.proto",
    "order_batches/v1/order_batches.proto",
    "crm/v1/crm.proto",
    "master_data/v1/master_data.proto",
    "audit/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // tonic-prost-build does not write `file_descriptor_set_path` when fed a
    // descriptor set, so reflection's copy is written here.
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;
    // Custom field values are kept in the saga's order documents as JSON.
    let serde = "#[derive(serde::Serialize, serde::Deserialize)]";
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute("erp.v1.CustomValue", serde)
        .type_attribute("erp.v1.CustomValue.value", serde)
        .type_attribute("erp.v1.CustomValue.value", "#[serde(rename_all = \"snake_case\")]")
        .compile_fds(fds)?;
    Ok(())
}
