//! Orders are priced from the process tier's price list, which follows the
//! ERP through its change feed: a list price edited in the embedded ERP's
//! own database (behind every API, as a clerk edits it in the ERP) prices
//! the next order within a feed poll, and an order accepted before keeps
//! the price it was accepted at. The catalogue's stock levels, held by the
//! same cache, follow orders through the same feed.

mod harness;

use std::time::Duration;

use harness::{Running, get, post_json, quick_sagas, spawn_up_with};
use serde_json::json;

#[tokio::test]
async fn a_price_edited_in_the_erp_prices_the_next_order_and_earlier_orders_keep_theirs() {
    let app = spawn_up_with(quick_sagas).await;
    let token = app.token("orders:read orders:write");
    let body =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "card", "token": "tok_visa"}});
    let before = post_json(&app.url("/web/v1/orders"), &token, &body, Some("price-0")).await;
    assert_eq!(before.status, 201, "{}", before.text);
    assert_eq!(before.body["lines"][0]["unit_price"], "12.50", "{}", before.text);

    let erp = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.data_dir.path().join("erp.db").display()))
        .await
        .expect("the embedded ERP's database");
    sqlx::query("UPDATE products SET list_price = '13.75' WHERE sku = 'WIDGET-1'")
        .execute(&erp)
        .await
        .expect("price edited in the ERP");
    erp.close().await;

    // Each try is a new order; the feed is polled every 50 ms here.
    let mut tries = 0;
    let after = loop {
        tries += 1;
        let reply = post_json(&app.url("/web/v1/orders"), &token, &body, Some(&format!("price-{tries}"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        if reply.body["lines"][0]["unit_price"] == "13.75" || tries == 100 {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.body["lines"][0]["unit_price"], "13.75", "after {tries} orders: {}", after.text);
    assert_eq!(after.body["total"], "27.50", "{}", after.text);

    let id = before.body["id"].as_str().expect("id");
    let first = harness::wait_for_order(&app, &token, &format!("/web/v1/orders/{id}"), "paid").await;
    assert_eq!((first["lines"][0]["unit_price"].as_str(), first["total"].as_str()), (Some("12.50"), Some("25.00")));
    app.stop_all().await;
}

/// WIDGET-1's availability on the catalogue.
async fn widget_available(app: &Running, token: &str) -> i64 {
    let reply = get(&app.url("/web/v1/products?page_size=100"), Some(token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let products = reply.body["products"].as_array().expect("products");
    let widget = products.iter().find(|p| p["sku"] == "WIDGET-1").expect("WIDGET-1 on the first page");
    widget["availability"]["available"].as_i64().expect("available")
}

#[tokio::test]
async fn catalogue_availability_follows_an_order_through_the_change_feed() {
    let app = spawn_up_with(|config| {
        quick_sagas(config);
        // An hour: only the change feed can make the held levels stale here.
        config.process.catalog_stock_max_age = Duration::from_secs(3600);
    })
    .await;
    let reader = app.token("catalog:read");
    let before = widget_available(&app, &reader).await;
    assert!(before > 3, "{before}");

    let token = app.token("orders:read orders:write");
    let body =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 3}], "payment": {"method": "card", "token": "tok_visa"}});
    let order = post_json(&app.url("/web/v1/orders"), &token, &body, Some("stock-1")).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let id = order.body["id"].as_str().expect("id");
    harness::wait_for_order(&app, &token, &format!("/web/v1/orders/{id}"), "paid").await;

    // The confirmed sales order reserved 3; the feed is polled every 50 ms here.
    let mut tries = 0;
    let after = loop {
        tries += 1;
        let now = widget_available(&app, &reader).await;
        if now != before || tries == 100 {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after, before - 3, "after {tries} reads");
    app.stop_all().await;
}
