//! Orders through every tier (`serve` mode) into a Tryton as many
//! installations run it: only the `sale` module and its dependencies, so
//! no credit limits on parties. The connector discovers that when it
//! connects and degrades as documented instead of failing: customers are
//! created without a limit, and on-account orders are credit-checked
//! against erp-connect's own `process.saga.partner_credit_limit`.
//!
//! The run's own Tryton is set up by `deploy/tryton/setup.sh` with
//! `MODULES=sale` (a golden snapshot of its own, `erp_sale_only`).

mod harness;

use harness::{Running, post_json, quick_sagas, spawn_serve_with};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};

async fn start() -> (Running, tryton::Config) {
    harness::leaks::watch_logs();
    let server = tokio::task::spawn_blocking(|| tryton::test_server::sale_only_config("erp_sale_only"))
        .await
        .expect("tryton set up");
    let for_app = server.clone();
    let app = spawn_serve_with(move |config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(for_app);
        config.process.system_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    (app, server)
}

/// Polls `GET path` until the order is past `confirmed` or at `wanted`.
async fn wait_for(app: &Running, bearer: &str, path: &str, wanted: &[&str]) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let reply = harness::get(&app.url(path), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if wanted.contains(&reply.body["status"].as_str().unwrap_or_default()) {
            return reply.body;
        }
        assert!(std::time::Instant::now() < deadline, "not {wanted:?} in time: {}", reply.text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn web_and_partner_orders_are_sold_by_a_tryton_without_credit_limits() {
    let (app, server) = start().await;
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let tryton_rpc = tryton::test_server::rpc_client(&server);
    let modules = tryton_rpc
        .call(
            "model.ir.module.search",
            vec![
                json!([["state", "=", "activated"], ["name", "like", "%credit_limit"]]),
                json!(0),
                json!(10),
                Value::Null,
            ],
        )
        .await
        .expect("modules");
    assert_eq!(modules.as_array().map(Vec::len), Some(0), "this Tryton has no credit-limit module: {modules}");

    let shopper = harness::token_for(
        app.data_dir.path(),
        &format!("shopper-{run}"),
        None,
        Some(&format!("shopper-{run}@sale-only.example")),
        "orders:read orders:write",
    );
    let tenant = format!("partner-{run}");
    let partner = harness::token_for(
        app.data_dir.path(),
        &format!("{tenant}-buyer"),
        Some(&tenant),
        None,
        "orders:read orders:write",
    );
    let ship_to = json!({"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"});

    let web = json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "card", "token": "tok_visa"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/web/v1/orders"), &shopper, &web, Some("sale-only-web")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let web_path = format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let paid = wait_for(&app, &shopper, &web_path, &["paid"]).await;
    assert!(paid["erp"]["sales_order"].as_str().is_some_and(|n| !n.is_empty()), "{paid}");

    // On account: within erp-connect's own limit (5000.00), invoiced.
    let small =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "on_account"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &small, Some("sale-only-partner-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("id").to_owned();
    let invoiced = wait_for(&app, &partner, &format!("/partner/v1/orders/{id}"), &["invoiced"]).await;
    assert!(invoiced["erp"]["invoice"].as_str().is_some_and(|n| !n.is_empty()), "{invoiced}");
    // ... and over it (500 × 12.50), rejected with the reason.
    let big = json!({"lines": [{"sku": "WIDGET-1", "quantity": 500}], "payment": {"method": "on_account"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &big, Some("sale-only-partner-2")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/partner/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let rejected = wait_for(&app, &partner, &path, &["rejected"]).await;
    assert!(rejected["reason"].as_str().is_some_and(|r| r.contains("erp-connect's credit limit")), "{rejected}");

    for (external_id, sales) in [(format!("partner:{tenant}"), 1), (format!("web:shopper-{run}"), 1)] {
        let party = tryton_rpc
            .call(
                "model.party.party.search",
                vec![json!([["code", "=", external_id]]), json!(0), json!(10), Value::Null],
            )
            .await
            .expect("party");
        let party = party.as_array().and_then(|p| p.first()).cloned().expect("one party");
        let found = tryton_rpc
            .call("model.sale.sale.search", vec![json!([["party", "=", party]]), json!(0), json!(10), Value::Null])
            .await
            .expect("sales");
        assert_eq!(found.as_array().map(Vec::len), Some(sales), "Tryton sales of {external_id}: {found}");
    }
    app.stop_all().await;
}
