//! Custom fields end to end (`serve` mode) against the run's own Tryton
//! (demo modules, `product_attribute` among them), configured the way an
//! operator does in `[[erp.custom_fields]]`:
//! - a sales order field mapped to a standard Tryton field outside
//!   `erp.v1` (`sale.sale.comment`), writable by partners and shown to
//!   partners and operators;
//! - a product field mapped to one key of `product.product.attributes`
//!   (a Tryton `Dict`), shown to partners only.
//!
//! A partner order sets the first and Tryton's sale holds it; the partner
//! catalogue shows the second and the web shop's does not. A field mapped
//! to something Tryton does not have stops the system tier at start with
//! exit status 64, naming it.

mod harness;

use erp_connect_proto::custom_fields::{Definition, Entity, FieldType};
use harness::{Running, post_json, quick_sagas, spawn_serve_with};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};

/// The run's Tryton, set up once per test process.
async fn server() -> tryton::Config {
    harness::leaks::watch_logs();
    tokio::task::spawn_blocking(|| tryton::test_server::config("erp_custom")).await.expect("tryton set up")
}

async fn call(rpc: &tryton::rpc::Client, method: &str, args: Vec<Value>) -> Value {
    rpc.call(method, args).await.unwrap_or_else(|e| panic!("{method}: {e:?}"))
}

/// Gives WIDGET-1 the attribute `key` = `value` in Tryton, as a clerk does:
/// an attribute, an attribute set holding it on the product's template, the
/// value on the product.
async fn set_attribute(rpc: &tryton::rpc::Client, key: &str, value: &str) {
    let attribute =
        call(rpc, "model.product.attribute.create", vec![json!([{"name": key, "string": "HS code", "type_": "char"}])])
            .await;
    let set = call(
        rpc,
        "model.product.attribute.set.create",
        vec![json!([{"name": format!("Customs {key}"), "attributes": [["add", attribute]]}])],
    )
    .await;
    let found = call(
        rpc,
        "model.product.product.search_read",
        vec![json!([["code", "=", "WIDGET-1"]]), json!(0), json!(1), Value::Null, json!(["template"])],
    )
    .await;
    let product = found[0]["id"].as_i64().expect("WIDGET-1");
    let template = found[0]["template"].as_i64().expect("its template");
    call(rpc, "model.product.template.write", vec![json!([template]), json!({"attribute_set": set[0]})]).await;
    call(rpc, "model.product.product.write", vec![json!([product]), json!({"attributes": {key: value}})]).await;
}

fn definitions(key: &str) -> Vec<Definition> {
    vec![
        Definition {
            entity: Entity::SalesOrder,
            name: "delivery_note".into(),
            erp_field: "comment".into(),
            field_type: FieldType::String,
            writable: true,
            audiences: vec!["partner".into(), "ops".into()],
        },
        Definition {
            entity: Entity::Product,
            name: "hs_code".into(),
            erp_field: format!("attributes.{key}"),
            field_type: FieldType::String,
            writable: false,
            audiences: vec!["partner".into()],
        },
    ]
}

async fn start(server: tryton::Config, key: &str) -> Running {
    let custom_fields = definitions(key);
    spawn_serve_with(move |config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(server);
        config.erp.custom_fields = custom_fields;
        config.process.system_timeout = std::time::Duration::from_secs(30);
    })
    .await
}

/// WIDGET-1 in the catalogue page `path` answers to `bearer`.
async fn widget(app: &Running, bearer: &str, path: &str) -> Value {
    let reply = harness::get(&app.url(&format!("{path}?page_size=100")), Some(bearer)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let products = reply.body["products"].as_array().expect("products");
    products.iter().find(|p| p["sku"] == "WIDGET-1").cloned().expect("WIDGET-1 in the catalogue")
}

#[tokio::test]
async fn a_partner_sets_a_sales_order_field_and_sees_a_product_attribute_the_web_shop_does_not() {
    let server = server().await;
    let rpc = tryton::test_server::rpc_client(&server);
    let run = ulid::Ulid::new().to_string().to_lowercase();
    // Unique per run: attribute names are unique in a Tryton database.
    let key = format!("hs_code_{run}");
    set_attribute(&rpc, &key, "8471.30").await;
    let app = start(server, &key).await;

    let tenant = format!("partner-{run}");
    let partner = harness::token_for(
        app.data_dir.path(),
        &format!("{tenant}-buyer"),
        Some(&tenant),
        None,
        "catalog:read orders:read orders:write",
    );
    let shopper = harness::token_for(
        app.data_dir.path(),
        &format!("shopper-{run}"),
        None,
        Some(&format!("shopper-{run}@custom.example")),
        "catalog:read orders:write",
    );

    // The product attribute: shown to partners, not to the web shop.
    assert_eq!(widget(&app, &partner, "/partner/v1/products").await["custom_fields"], json!({"hs_code": "8471.30"}));
    assert_eq!(widget(&app, &shopper, "/web/v1/products").await["custom_fields"], json!({}));

    // Refused before anything is accepted: a field that is not the
    // partner's to set, an unknown one, a value of the wrong type.
    let ship_to = json!({"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"});
    let order = |custom: Value| {
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"},
               "ship_to": ship_to, "custom_fields": custom})
    };
    for (custom, field) in [
        (json!({"hs_code": "1234"}), "custom_fields.hs_code"),
        (json!({"gate": "4"}), "custom_fields.gate"),
        (json!({"delivery_note": 4}), "custom_fields.delivery_note"),
    ] {
        let reply = post_json(&app.url("/partner/v1/orders"), &partner, &order(custom), None).await;
        harness::assert_problem(&reply, 422);
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.text);
    }
    let web_order = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}],
        "payment": {"method": "card", "token": "tok_visa"}, "custom_fields": {"delivery_note": "x"}});
    let reply = post_json(&app.url("/web/v1/orders"), &shopper, &web_order, None).await;
    harness::assert_problem(&reply, 422);

    // The partner's note reaches Tryton's sale.
    let note = "Gate 4, ask for Ana";
    let placed =
        post_json(&app.url("/partner/v1/orders"), &partner, &order(json!({"delivery_note": note})), Some("cf-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.body["custom_fields"], json!({"delivery_note": note}));
    let id = placed.body["id"].as_str().expect("id").to_owned();
    let invoiced = harness::wait_for_order(&app, &partner, &format!("/partner/v1/orders/{id}"), "invoiced").await;
    assert_eq!(invoiced["custom_fields"], json!({"delivery_note": note}));
    let sales = call(
        &rpc,
        "model.sale.sale.search_read",
        vec![json!([["reference", "=", id]]), json!(0), json!(10), Value::Null, json!(["comment", "state"])],
    )
    .await;
    assert_eq!(sales.as_array().map(Vec::len), Some(1), "one Tryton sale: {sales}");
    assert_eq!(sales[0]["comment"], note, "{sales}");
    assert_eq!(sales[0]["state"], "processing", "{sales}");

    let ops = harness::token(app.data_dir.path(), "ops");
    let seen = harness::get(&app.url(&format!("/ops/v1/orders/{id}")), Some(&ops)).await;
    assert_eq!(seen.body["custom_fields"], json!({"delivery_note": note}), "{}", seen.text);
    app.stop_all().await;
}

#[tokio::test]
async fn a_field_tryton_does_not_have_stops_the_system_tier_at_start_with_exit_64() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[system]\nlisten = \"127.0.0.1:0\"\n\n[erp]\nbackend = \"tryton\"\n\n[erp.tryton]\nurl = {:?}\n\
         database = {:?}\nusername = {:?}\npassword_file = {:?}\n\n[[erp.custom_fields]]\n\
         entity = \"sales_order\"\nname = \"delivery_note\"\nerp_field = \"delivery_notes\"\ntype = \"string\"\n",
        server.url,
        server.database,
        server.username,
        server.password_file.display().to_string(),
    );
    let file = dir.path().join("erp-connect.toml");
    std::fs::write(&file, config).expect("config");
    let data_dir = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::BIN)
            .args(["serve", "--target", "system", "--data-dir"])
            .arg(&data_dir)
            .arg("--config")
            .arg(&file)
            .env_remove("ERP_CONNECT_CONFIG")
            .env("RUST_LOG", "off")
            .output()
            .expect("run erp-connect")
    })
    .await
    .expect("joined");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("sale.sale.delivery_notes") && stderr.contains("no such field"), "{stderr}");
}
