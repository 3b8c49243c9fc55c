//! Partner mapping and validation rules on the order API (`up` mode): a
//! partner orders with its own SKU and gets our product; an order that
//! breaks a configured rule is a 422 naming the rule and the field, and
//! nothing is created; another tenant meets only the global rules.

mod harness;

use std::collections::BTreeMap;

use harness::{assert_problem, post_json, spawn_up_with, token_for};
use process_apis::partners::{mapping::PartnerConfig, rules::RulesConfig};
use serde_json::json;

#[tokio::test]
async fn a_partners_skus_are_mapped_and_its_rules_refuse_orders_naming_rule_and_field() {
    let app = spawn_up_with(|config| {
        let acme: PartnerConfig = serde_json::from_value(json!({
            "sku_xref": {"ACME-0042": "WIDGET-1"},
            "rules": {"max_quantity_per_line": 3, "allowed_countries": ["DE", "AT"]},
        }))
        .expect("acme's mapping");
        config.partners = BTreeMap::from([("acme".to_owned(), acme)]);
        config.rules = RulesConfig { max_order_value: Some("30.00".into()), ..RulesConfig::default() };
    })
    .await;
    let dir = app.data_dir.path();
    let acme = token_for(dir, "acme-erp", Some("acme"), None, "orders:read orders:write");
    let globex = token_for(dir, "globex-shop", Some("globex"), None, "orders:read orders:write");
    let order = |sku: &str, quantity: i64, country: &str| {
        json!({"lines": [{"sku": sku, "quantity": quantity}], "payment": {"method": "on_account"},
               "ship_to": {"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": country}})
    };
    let url = app.url("/partner/v1/orders");

    let placed = post_json(&url, &acme, &order("ACME-0042", 2, "DE"), None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.body["lines"][0]["sku"], "WIDGET-1", "{}", placed.text);
    assert_eq!(placed.body["total"], "25.00");

    for (body, field, rule) in [
        (order("ACME-0042", 4, "DE"), "lines[0].quantity", "max_quantity_per_line"),
        (order("ACME-0042", 1, "FR"), "ship_to.country", "allowed_countries"),
        // The global rule, under acme's own: 3 × 12.50 is over 30.00.
        (order("WIDGET-1", 3, "AT"), "lines", "max_order_value"),
    ] {
        let refused = post_json(&url, &acme, &body, None).await;
        assert_problem(&refused, 422);
        assert_eq!(refused.body["errors"][0]["field"], field, "{}", refused.text);
        let message = refused.body["errors"][0]["message"].as_str().expect("message");
        assert!(message.starts_with(&format!("{rule}: ")), "{message}");
    }
    // Another partner meets the global rules only: France and 3 lines of
    // one unit are fine, 30.00 still caps the order.
    let elsewhere = post_json(&url, &globex, &order("WIDGET-1", 2, "FR"), None).await;
    assert_eq!(elsewhere.status, 201, "{}", elsewhere.text);
    assert_problem(&post_json(&url, &globex, &order("GADGET-2", 1, "FR"), None).await, 422);
    // The web shop is no partner: no partner rule caps its orders.
    let shopper = token_for(dir, "shopper", None, Some("shopper@rules.example"), "orders:read orders:write");
    let web =
        json!({"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}});
    let shop = post_json(&app.url("/web/v1/orders"), &shopper, &web, None).await;
    assert_eq!(shop.status, 201, "{}", shop.text);
    let listed = harness::get(&app.url("/partner/v1/orders"), Some(&acme)).await;
    assert_eq!(listed.body["orders"].as_array().map(Vec::len), Some(1), "refused orders are not created");
    app.stop_all().await;
}
