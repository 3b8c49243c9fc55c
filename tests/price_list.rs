//! Orders are priced from the process tier's price list, which follows the
//! ERP through its change feed: a list price edited in the embedded ERP's
//! own database (behind every API, as a clerk edits it in the ERP) prices
//! the next order within a feed poll, and an order accepted before keeps
//! the price it was accepted at.

mod harness;

use std::time::Duration;

use harness::{post_json, quick_sagas, spawn_up_with};
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
