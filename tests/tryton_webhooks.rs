//! Change data capture to webhooks (`serve` mode) against the run's own
//! Tryton: what a clerk does in Tryton itself, over Tryton's own JSON-RPC
//! and not through erp-connect, reaches a partner's webhook endpoint. An
//! invoice of the partner's order paid with Tryton's pay wizard arrives as
//! `invoice.paid` (and the order as `order.paid`); a list price changed on
//! a product arrives as `product.updated` with the new price; the partner's
//! party renamed arrives as `customer.updated`.

mod harness;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, routing::post};
use harness::{post_json, quick_sagas, spawn_serve_with};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};
use tokio::sync::Notify;

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
}

async fn receive(State(receiver): State<Receiver>, body: String) -> axum::http::StatusCode {
    receiver.bodies.lock().expect("lock").push(serde_json::from_str(&body).expect("JSON"));
    receiver.arrived.notify_waiters();
    axum::http::StatusCode::NO_CONTENT
}

impl Receiver {
    /// The first body `wanted` accepts, waiting up to two minutes for it.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(found) = self.bodies.lock().expect("lock").iter().find(|b| wanted(b)) {
                return found.clone();
            }
            let seen: Vec<Value> = self.bodies.lock().expect("lock").clone();
            assert!(tokio::time::timeout_at(deadline, arrived).await.is_ok(), "no {what} arrived; got {seen:?}");
        }
    }
}

async fn call(rpc: &tryton::rpc::Client, method: &str, args: Vec<Value>) -> Value {
    rpc.call(method, args).await.unwrap_or_else(|e| panic!("{method}: {e:?}"))
}

fn decimal(text: &str) -> Value {
    json!({"__class__": "Decimal", "decimal": text})
}

/// Pays invoice `id` in full with Tryton's `account.invoice.pay` wizard,
/// as a clerk does in the Tryton client.
async fn pay_in_tryton(rpc: &tryton::rpc::Client, id: i64) {
    let invoice = call(
        rpc,
        "model.account.invoice.read",
        vec![json!([id]), json!(["party", "account", "amount_to_pay", "currency", "company"])],
    )
    .await;
    let invoice = &invoice[0];
    let amount = invoice["amount_to_pay"]["decimal"].as_str().expect("amount to pay").to_owned();
    let method = call(rpc, "model.account.invoice.payment.method.search", vec![json!([]), json!(0), json!(1)]).await;
    let today = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    let (year, month, day) = (&today[0..4], &today[5..7], &today[8..10]);
    let date = json!({"__class__": "date", "year": year.parse::<i32>().expect("year"),
                      "month": month.parse::<u32>().expect("month"), "day": day.parse::<u32>().expect("day")});
    let mut ctx = serde_json::Map::new();
    ctx.insert("active_model".into(), json!("account.invoice"));
    ctx.insert("active_id".into(), json!(id));
    ctx.insert("active_ids".into(), json!([id]));
    let wizard = |method: &'static str, args: Vec<Value>| {
        let ctx = ctx.clone();
        async move { rpc.call_with_context(method, args, Some(&ctx)).await.unwrap_or_else(|e| panic!("{method}: {e:?}")) }
    };
    let session = wizard("wizard.account.invoice.pay.create", vec![]).await[0].clone();
    wizard("wizard.account.invoice.pay.execute", vec![session.clone(), json!({}), json!("start")]).await;
    let start = json!({"start": {
        "payee": invoice["party"], "company": invoice["company"], "currency": invoice["currency"],
        "amount": decimal(&amount), "invoice_account": invoice["account"], "date": date,
        "payment_method": method[0], "description": "paid at the counter",
    }});
    let reply = wizard("wizard.account.invoice.pay.execute", vec![session.clone(), start, json!("choice")]).await;
    assert!(reply.get("view").is_none(), "a full payment needs no question: {reply}");
    wizard("wizard.account.invoice.pay.delete", vec![session]).await;
    let state = call(rpc, "model.account.invoice.read", vec![json!([id]), json!(["state"])]).await;
    assert_eq!(state[0]["state"], "paid", "{state}");
}

#[tokio::test]
async fn an_invoice_paid_a_price_changed_and_a_party_renamed_in_tryton_arrive_as_webhooks() {
    harness::leaks::watch_logs();
    let server = tokio::task::spawn_blocking(|| tryton::test_server::config("erp_hooks")).await.expect("tryton set up");
    let rpc = tryton::test_server::rpc_client(&server);
    let receiver = Receiver::default();
    let listener = harness::listener().await;
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let routes = axum::Router::new().route("/hooks", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, routes).await.expect("receiver") });
    let app = spawn_serve_with(move |config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(server);
        config.process.system_timeout = Duration::from_secs(30);
        config.webhooks.poll_interval = Duration::from_millis(20);
    })
    .await;
    let partner = harness::token_for(
        app.data_dir.path(),
        "hooks-buyer",
        Some("hooks"),
        None,
        "orders:read orders:write webhooks:manage",
    );
    let subscription =
        json!({"url": url, "events": ["invoice.paid", "product.updated", "order.paid", "customer.updated"]});
    let created = post_json(&app.url("/partner/v1/webhooks"), &partner, &subscription, None).await;
    assert_eq!(created.status, 201, "{}", created.text);

    let ship_to = json!({"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"});
    let order =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &order, None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("id").to_owned();
    let invoiced = harness::wait_for_order(&app, &partner, &format!("/partner/v1/orders/{id}"), "invoiced").await;
    let invoice_id = invoiced["erp"]["invoice_id"].as_str().expect("invoice id").to_owned();

    // A clerk pays the invoice in Tryton.
    let tryton_id = invoice_id.strip_prefix("invoice-").and_then(|n| n.parse().ok()).expect("invoice-<Tryton id>");
    pay_in_tryton(&rpc, tryton_id).await;
    let paid = receiver
        .wait_for("invoice.paid", |b| b["type"] == "invoice.paid" && b["data"]["invoice_id"] == invoice_id.as_str())
        .await;
    assert_eq!(paid["data"]["order_id"], id.as_str(), "{paid}");
    receiver.wait_for("order.paid", |b| b["type"] == "order.paid" && b["data"]["order_id"] == id.as_str()).await;

    // A clerk changes WIDGET-1's list price in Tryton.
    let found = call(
        &rpc,
        "model.product.product.search_read",
        vec![json!([["code", "=", "WIDGET-1"]]), json!(0), json!(1), Value::Null, json!(["template"])],
    )
    .await;
    // The variant's own price is the one used (deploy/tryton/README.md).
    let product = found[0]["id"].as_i64().expect("WIDGET-1");
    call(&rpc, "model.product.product.write", vec![json!([product]), json!({"list_price": decimal("12.34")})]).await;
    let updated = receiver
        .wait_for("product.updated", |b| {
            b["type"] == "product.updated" && b["data"]["sku"] == "WIDGET-1" && b["data"]["price"] == "12.34"
        })
        .await;
    assert_eq!(updated["data"]["active"], true, "{updated}");

    // A clerk renames the partner's party in Tryton: its tenant hears of it.
    let customer_id = invoiced["customer_id"].as_str().unwrap_or_default().to_owned();
    let party: i64 = customer_id.strip_prefix("party-").and_then(|n| n.parse().ok()).expect("party-<Tryton id>");
    let written_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    call(&rpc, "model.party.party.write", vec![json!([party]), json!({"name": "Hooks Trading GmbH"})]).await;
    receiver
        .wait_for("customer.updated", |b| {
            b["type"] == "customer.updated"
                && b["data"]["customer_id"] == customer_id.as_str()
                && b["data"]["sequence"].as_u64().is_some_and(|at| u128::from(at) + 50 >= written_at)
        })
        .await;
    app.stop_all().await;
}
