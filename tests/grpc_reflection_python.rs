//! A Python team with nothing but `grpcio` and `grpcio-reflection` (which
//! speaks reflection `v1alpha` only) discovers the gRPC tiers and calls
//! `catalog.v1` and `order_to_cash.v1`: no generated stubs, no `.proto`
//! files, every message type built from what reflection returned.
//!
//! The client is `tests/grpc_reflection/client.py`, run by `run.sh` in a
//! cached virtualenv with pinned versions (created on first use, under a
//! lock shared by parallel tests); it prints what it saw as JSON.

mod harness;

use std::net::SocketAddr;

use erp_connect::serve::Target;
use harness::{Running, spawn_serve, spawn_up};
use serde_json::Value;

/// Runs the Python client against `process` (and `system`, if given), with
/// `token` as its service token; returns its JSON.
async fn python_client(process: SocketAddr, system: Option<SocketAddr>, token: Option<String>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_reflection/run.sh");
    let mut command = tokio::process::Command::new("bash");
    command.arg(script).arg("--process").arg(process.to_string()).kill_on_drop(true);
    if let Some(system) = system {
        command.arg("--system").arg(system.to_string());
    }
    command.env_remove("ERP_CONNECT_SERVICE_TOKEN");
    if let Some(token) = token {
        command.env("ERP_CONNECT_SERVICE_TOKEN", token);
    }
    let output = command.output().await.expect("bash runs the Python client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python client failed ({}):\n{stderr}", output.status);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the Python client's JSON: {e}\n{}", String::from_utf8_lossy(&output.stdout)))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().expect("a list").iter().filter_map(Value::as_str).collect()
}

/// What the client saw of the process tier: the services listed, a page of
/// the catalogue, and a card order placed, read back and listed.
fn assert_process_tier(seen: &Value) {
    let services = names(&seen["services"]);
    for name in [
        "catalog.v1.CatalogService",
        "order_to_cash.v1.OrderToCashService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.contains(&name), "{name} is listed: {services:?}");
    }

    let items = seen["catalog"]["items"].as_array().expect("catalogue items");
    assert_eq!(items.len(), 2, "{}", seen["catalog"]);
    for item in items {
        assert!(item["sku"].as_str().is_some_and(|s| !s.is_empty()), "{item}");
        let amount = item["price"]["amount"].as_str().expect("a price as a decimal string");
        assert!(amount.parse::<rust_decimal::Decimal>().is_ok(), "{item}");
    }
    assert!(seen["catalog"]["next_page_token"].as_str().is_some_and(|t| !t.is_empty()), "more pages");
    let sku = items[0]["sku"].as_str().expect("sku");

    let placed = &seen["placed"];
    let id = placed["id"].as_str().expect("the placed order's id");
    assert!(id.starts_with("ord_"), "{placed}");
    assert_eq!(placed["payment_method"], "PAYMENT_METHOD_CARD", "{placed}");
    assert_eq!(placed["lines"][0]["sku"], sku, "{placed}");

    let fetched = &seen["fetched"];
    assert_eq!(fetched["id"], id, "GetOrder answers the order: {fetched}");
    assert_eq!(fetched["tenant"], "web", "{fetched}");
    assert_eq!(fetched["external_ref"], "PY-REFLECTION-1", "{fetched}");
    assert_eq!(fetched["customer_external_id"], placed["customer_external_id"], "{fetched}");
    assert_eq!(fetched["lines"][0]["sku"], sku, "{fetched}");
    // int64 travels as a string in proto3 JSON.
    assert_eq!(fetched["lines"][0]["quantity"], "1", "{fetched}");
    let total = fetched["total"].as_str().expect("a total");
    assert_eq!(Some(total), fetched["lines"][0]["amount"].as_str(), "one line: {fetched}");
    let status = fetched["status"].as_str().expect("a status");
    assert!(
        !["ORDER_STATUS_REJECTED", "ORDER_STATUS_CANCELLED", "ORDER_STATUS_UNSPECIFIED"].contains(&status),
        "a card order with a good card goes ahead: {fetched}"
    );

    let listed: Vec<&str> =
        seen["listed"].as_array().expect("orders").iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(listed, [id], "ListOrders finds the customer's one order");
}

#[tokio::test]
async fn python_grpcio_reflection_discovers_and_calls_the_process_and_system_apis_in_serve_mode() {
    let app: Running = spawn_serve().await;
    let addr = |target| app.grpc.iter().find(|(t, _)| *t == target).map(|(_, a)| *a).expect("tier running");
    let seen = python_client(addr(Target::Process), Some(addr(Target::System)), Some(app.service_token())).await;
    assert_process_tier(&seen["process"]);

    let system = &seen["system"];
    let services = names(&system["services"]);
    for name in
        ["erp.v1.ProductService", "erp.v1.InventoryService", "payments.v1.PaymentService", "grpc.health.v1.Health"]
    {
        assert!(services.contains(&name), "{name} is listed: {services:?}");
    }
    assert!(system["input_type"].as_str().is_some_and(|t| t.starts_with("erp.v1.")), "{system}");
    app.stop_all().await;
}

#[tokio::test]
async fn python_grpcio_reflection_discovers_and_calls_the_process_apis_of_up() {
    let app = spawn_up().await;
    let (_, process) = app.grpc[0];
    // `up` composes the tiers in-process and asks internal callers for no token.
    let seen = python_client(process, None, None).await;
    assert_process_tier(&seen["process"]);
    app.stop_all().await;
}
