//! The first read path, `GET /web/v1/products`, through all four tiers down
//! to the embedded ERP, in both run modes; and what the gateway answers
//! without a valid credential.

mod harness;

use erp_connect::serve::Target;
use harness::{Running, assert_problem, get, spawn_serve, spawn_up};

/// Reads every page and checks what users rely on: price, availability,
/// paging without gaps or repeats.
async fn reads_the_whole_catalogue(app: &Running) {
    let token = app.token("catalog:read");
    let mut skus = Vec::new();
    let mut url = app.url("/web/v1/products?page_size=7");
    let mut pages = 0;
    loop {
        let reply = get(&url, Some(&token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert!(reply.headers.contains_key("x-request-id"));
        let products = reply.body["products"].as_array().expect("products");
        assert!(products.len() <= 7);
        for p in products {
            assert_eq!(p["currency"], "EUR", "{p}");
            let price = p["price"].as_str().expect("price is a decimal string");
            assert!(price.parse::<f64>().is_ok_and(|v| v > 0.0), "{price}");
            let availability = &p["availability"];
            let total = availability["available"].as_i64().expect("available");
            let warehouses = availability["warehouses"].as_array().expect("warehouses");
            assert_eq!(warehouses.len(), 2, "{p}");
            assert_eq!(total, warehouses.iter().map(|w| w["available"].as_i64().expect("n")).sum::<i64>());
            assert_eq!(availability["in_stock"], total > 0);
            skus.push(p["sku"].as_str().expect("sku").to_owned());
        }
        pages += 1;
        match reply.body["next_page_token"].as_str() {
            Some(next) => url = app.url(&format!("/web/v1/products?page_size=7&page_token={next}")),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert!(skus.len() >= 20, "{} products", skus.len());
    let mut sorted = skus.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(skus, sorted, "pages overlap or are out of order");
    assert!(pages >= 3);
}

#[tokio::test]
async fn up_mode_serves_products_with_price_and_availability() {
    let app = spawn_up().await;
    reads_the_whole_catalogue(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn serve_mode_four_tiers_serve_products_with_price_and_availability() {
    let app = spawn_serve().await;
    reads_the_whole_catalogue(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn missing_malformed_and_foreign_tokens_get_401_problems() {
    let app = spawn_up().await;
    let url = app.url("/web/v1/products");

    let missing = get(&url, None).await;
    assert_problem(&missing, 401);
    assert!(missing.headers.contains_key("www-authenticate"));

    let garbage = get(&url, Some("not.a.jwt")).await;
    assert_problem(&garbage, 401);

    // Signed by another data directory's dev identity provider.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let foreign = get(&url, Some(&harness::token(elsewhere.path(), "catalog:read"))).await;
    assert_problem(&foreign, 401);

    // A valid token with its signature tampered with.
    let valid = app.token("catalog:read");
    let tampered = format!("{}x", &valid[..valid.len() - 1]);
    assert_problem(&get(&url, Some(&tampered)).await, 401);
    app.stop_all().await;
}

#[tokio::test]
async fn a_token_without_the_scope_gets_403_and_unknown_routes_404() {
    let app = spawn_up().await;
    let token = app.token("orders:read");
    assert_problem(&get(&app.url("/web/v1/products"), Some(&token)).await, 403);
    assert_problem(&get(&app.url("/web/v1/nothing-here"), Some(&token)).await, 404);
    app.stop_all().await;
}

#[tokio::test]
async fn bad_query_parameters_get_400_naming_the_parameter() {
    let app = spawn_serve().await;
    let token = app.token("catalog:read");
    for (query, field) in [("page_size=0", "page_size"), ("page_token=garbage!", "page_token"), ("color=red", "color")]
    {
        let reply = get(&app.url(&format!("/web/v1/products?{query}")), Some(&token)).await;
        assert_problem(&reply, 400);
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    }
    app.stop_all().await;
}

#[tokio::test]
async fn the_experience_tier_refuses_requests_that_bypass_the_gateway() {
    // In serve mode the experience tier only trusts a principal the gateway signed.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config = harness::test_config(data_dir.path());
    let tier = erp_connect::serve::Tier::build(Target::Experience, &config).await.expect("build");
    let listener = harness::listener().await;
    let addr = listener.local_addr().expect("addr");
    let shutdown = platform::shutdown::Shutdown::new();
    let task = tokio::spawn(tier.serve(listener, shutdown.clone()));
    let url = format!("http://{addr}/web/v1/products");
    assert_problem(&get(&url, None).await, 401);
    let mut forged = http::Request::get(&url);
    forged = forged.header("x-erp-principal", "eyJhbGciOiJIUzI1NiJ9.e30.forged");
    assert_problem(&harness::send(forged.body(Default::default()).expect("request")).await, 401);
    shutdown.cancel();
    task.await.expect("task").expect("serve");
}

#[tokio::test]
async fn readyz_fails_while_the_system_tier_is_down() {
    let mut app = spawn_serve().await;
    let ready = get(&app.url("/readyz"), None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(get(&app.url("/healthz"), None).await.status, 200);

    app.stop(Target::System).await;
    let not_ready = get(&app.url("/readyz"), None).await;
    assert_problem(&not_ready, 503);
    assert!(not_ready.headers.contains_key("retry-after"));
    // The gateway process itself is still alive.
    assert_eq!(get(&app.url("/healthz"), None).await.status, 200);
    // And a read now fails cleanly instead of hanging or leaking internals.
    let read = get(&app.url("/web/v1/products"), Some(&app.token("catalog:read"))).await;
    assert_problem(&read, 503);
    assert!(!read.text.contains("127.0.0.1"), "{}", read.text);
    app.stop_all().await;
}
