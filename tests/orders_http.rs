//! Orders over HTTP through every tier down to the embedded ERP and the
//! sandbox payment provider: the web shop's customer orders, partners
//! confined to their tenant, operators applying cash and completing
//! shipments, and what each gets for bad input.
//!
//! The order-to-cash saga runs in the background, so tests wait for a
//! status by polling `GET` under one overall deadline; a short, growing
//! pause between polls keeps two cores free for the saga itself.

mod harness;

use std::time::{Duration, Instant};

use harness::{Reply, Running, assert_problem, get, send, spawn_serve, spawn_up};
use http_body_util::Full;
use serde_json::{Value, json};

/// Longest a saga may take to reach a status in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

const WEB_SCOPES: &str = "orders:read orders:write";
const PARTNER_SCOPES: &str = "orders:read orders:write invoices:read";

/// A dev token for `subject`, with a tenant claim for partners.
fn token(app: &Running, subject: &str, scope: &str, tenant: Option<&str>) -> String {
    // alice@example.com is also a customer in the demo seed (without an
    // external id), so the web shop's Alice is found by e-mail.
    harness::token_for(app.data_dir.path(), subject, tenant, Some(&format!("{subject}@example.com")), scope)
}

/// `POST url` with `body` as JSON, an optional `Idempotency-Key`.
async fn post(url: &str, bearer: &str, body: &str, key: Option<&str>) -> Reply {
    post_raw(url, bearer, Some("application/json"), body.as_bytes().to_vec(), key).await
}

async fn post_raw(url: &str, bearer: &str, content_type: Option<&str>, body: Vec<u8>, key: Option<&str>) -> Reply {
    let mut request = http::Request::post(url).header("authorization", format!("Bearer {bearer}"));
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    send(request.body(Full::new(bytes::Bytes::from(body))).expect("request")).await
}

fn card_order(sku: &str, quantity: i64) -> String {
    json!({"lines": [{"sku": sku, "quantity": quantity}], "payment": {"method": "card", "token": "tok_visa"}})
        .to_string()
}

fn on_account_order(sku: &str, quantity: i64, external_ref: &str) -> String {
    json!({"external_ref": external_ref, "lines": [{"sku": sku, "quantity": quantity}], "payment": {"method": "on_account"}})
        .to_string()
}

/// Polls `GET path` until `done` holds for the order, failing at the
/// deadline or when the order ends in a terminal status `done` rejects.
async fn wait_for(app: &Running, bearer: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let reply = get(&app.url(path), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        let status = reply.body["status"].as_str().unwrap_or_default();
        assert!(
            !matches!(status, "rejected" | "cancelled" | "completed"),
            "waiting for {what}, the order ended {status}: {}",
            reply.text
        );
        assert!(start.elapsed() < DEADLINE, "no {what} after {DEADLINE:?}: {}", reply.text);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

async fn wait_for_status(app: &Running, bearer: &str, path: &str, status: &str) -> Value {
    wait_for(app, bearer, path, status, |order| order["status"] == status).await
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap_or_else(|| panic!("no id in {}", reply.text)).to_owned()
}

const STATUSES: &[&str] =
    &["accepted", "confirmed", "invoiced", "paid", "shipped", "completed", "cancelled", "rejected"];

/// Every RFC 3339 time the order carries is UTC, in a timeline of statuses.
fn assert_utc_times(order: &Value) {
    assert!(order["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{order}");
    let timeline = order["timeline"].as_array().expect("timeline");
    assert_eq!(timeline[0]["step"], "accepted", "{order}");
    for step in timeline {
        assert!(step["at"].as_str().is_some_and(|t| t.len() >= 20 && t.ends_with('Z')), "{step}");
        // The public timeline shows the contract's statuses, not the saga's inner steps.
        let name = step["step"].as_str().unwrap_or_default();
        assert!(STATUSES.contains(&name), "{name} in {order}");
    }
}

/// The web shop's happy path: a card order is placed, paid, listed, and a
/// replay of its request is the same order.
async fn a_card_order_is_paid(app: &Running) {
    let alice = token(app, "alice", WEB_SCOPES, None);
    let url = app.url("/web/v1/orders");
    let body = card_order("GADGET-1", 2);

    let placed = post(&url, &alice, &body, Some("order-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.headers["content-type"], "application/json");
    let id = id_of(&placed);
    assert!(id.starts_with("ord_"), "{id}");
    assert_eq!(placed.headers["location"], format!("/web/v1/orders/{id}"));
    let order = &placed.body;
    assert_eq!(order["currency"], "EUR");
    assert_eq!(
        order["lines"],
        json!([{"sku": "GADGET-1", "quantity": 2, "unit_price": "24.00", "amount": "48.00", "custom_fields": {}}])
    );
    assert_eq!(order["total"], "48.00");
    assert_eq!(order["payment"], json!({"method": "card"}));
    assert!(order["erp"].is_object() && order.get("reason").is_none(), "{order}");
    assert!(!placed.text.contains("tok_visa"), "the card token is never echoed");

    let paid = wait_for_status(app, &alice, &format!("/web/v1/orders/{id}"), "paid").await;
    assert!(paid["erp"]["sales_order"].is_string(), "{paid}");
    assert!(paid["customer_id"].is_string(), "{paid}");
    assert_utc_times(&paid);

    // The same key and body: the same order, answered as on creation.
    let replay = post(&url, &alice, &body, Some("order-1")).await;
    assert_eq!(replay.status, 201, "{}", replay.text);
    assert_eq!(id_of(&replay), id);
    assert_eq!(replay.headers["location"], format!("/web/v1/orders/{id}"));
    // The same key with another body is refused.
    let reused = post(&url, &alice, &card_order("GADGET-1", 3), Some("order-1")).await;
    assert_problem(&reused, 422);

    let list = get(&app.url("/web/v1/orders"), Some(&alice)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> =
        list.body["orders"].as_array().expect("orders").iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()], "one order, placed once: {}", list.text);
}

#[tokio::test]
async fn up_mode_a_card_order_reaches_paid_and_replays_are_the_same_order() {
    let app = spawn_up().await;
    a_card_order_is_paid(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn serve_mode_a_card_order_reaches_paid_and_replays_are_the_same_order() {
    let app = spawn_serve().await;
    a_card_order_is_paid(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn serve_mode_over_mutual_tls_between_tiers_a_card_order_reaches_paid() {
    let app = harness::spawn_serve_with(|config| {
        config.internal.tls = Some(harness::internal_tls(&config.data_dir.join("tls"), true));
    })
    .await;
    a_card_order_is_paid(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn bad_order_input_gets_a_problem_naming_the_field() {
    let app = spawn_up().await;
    let alice = token(&app, "alice", WEB_SCOPES, None);
    let url = app.url("/web/v1/orders");
    let fields = |reply: &Reply| -> Vec<String> {
        reply.body["errors"].as_array().map_or_else(Vec::new, |errors| {
            errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect()
        })
    };

    let unknown_sku = post(&url, &alice, &card_order("NO-SUCH-SKU", 1), None).await;
    assert_problem(&unknown_sku, 422);
    assert!(fields(&unknown_sku).iter().any(|f| f.contains("sku")), "{}", unknown_sku.text);

    let zero = post(&url, &alice, &card_order("GADGET-1", 0), None).await;
    assert_problem(&zero, 422);
    assert!(fields(&zero).iter().any(|f| f.contains("quantity")), "{}", zero.text);

    let malformed = post(&url, &alice, r#"{"lines": [{"sku": "GADGET-1", "quantity": 1}"#, None).await;
    assert_problem(&malformed, 400);

    let wrong_type = post(
        &url,
        &alice,
        r#"{"lines": [{"sku": "GADGET-1", "quantity": "one"}], "payment": {"method": "on_account"}}"#,
        None,
    )
    .await;
    assert_problem(&wrong_type, 400);
    assert_eq!(fields(&wrong_type), ["lines[0].quantity"], "{}", wrong_type.text);
    assert!(!wrong_type.text.contains("i64"), "serde's words stay inside: {}", wrong_type.text);

    let unknown_field = post(
        &url,
        &alice,
        r#"{"lines": [{"sku": "GADGET-1", "quantity": 1}], "payment": {"method": "on_account"}, "discount": "50%"}"#,
        None,
    )
    .await;
    assert_problem(&unknown_field, 400);
    assert_eq!(fields(&unknown_field), ["discount"], "{}", unknown_field.text);

    let untyped = post_raw(&url, &alice, None, card_order("GADGET-1", 1).into_bytes(), None).await;
    assert_problem(&untyped, 415);
    let form = post_raw(&url, &alice, Some("application/x-www-form-urlencoded"), b"sku=GADGET-1".to_vec(), None).await;
    assert_problem(&form, 415);

    let huge = json!({"external_ref": "x".repeat(70 * 1024), "lines": [], "payment": {"method": "on_account"}});
    assert_problem(&post(&url, &alice, &huge.to_string(), None).await, 413);

    let bad_key = post(&url, &alice, &card_order("GADGET-1", 1), Some("has spaces in it")).await;
    assert_problem(&bad_key, 400);

    // The gateway checks the scope before any of this.
    let reader = token(&app, "alice", "orders:read", None);
    assert_problem(&post(&url, &reader, &card_order("GADGET-1", 1), None).await, 403);
    assert_problem(&get(&app.url("/web/v1/orders/not%20an%20id"), Some(&alice)).await, 404);
    assert_problem(&get(&app.url("/web/v1/orders?page_size=0"), Some(&alice)).await, 400);
    app.stop_all().await;
}

#[tokio::test]
async fn a_customer_never_sees_another_customers_order() {
    let app = spawn_up().await;
    let alice = token(&app, "alice", WEB_SCOPES, None);
    let bob = token(&app, "bob", WEB_SCOPES, None);
    let placed = post(&app.url("/web/v1/orders"), &alice, &card_order("WIDGET-2", 1), None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = id_of(&placed);

    assert_eq!(get(&app.url(&format!("/web/v1/orders/{id}")), Some(&alice)).await.status, 200);
    let foreign = get(&app.url(&format!("/web/v1/orders/{id}")), Some(&bob)).await;
    assert_problem(&foreign, 404);
    let unknown = get(&app.url("/web/v1/orders/ord_01JDX3NOSUCHORDER0000000000"), Some(&bob)).await;
    assert_problem(&unknown, 404);
    assert_eq!(foreign.body["detail"], unknown.body["detail"], "someone else's order looks like no order");

    let bobs = get(&app.url("/web/v1/orders"), Some(&bob)).await;
    assert_eq!(bobs.status, 200, "{}", bobs.text);
    assert_eq!(bobs.body["orders"], json!([]), "{}", bobs.text);

    // Bob reusing Alice's idempotency key gets his own order, not hers.
    let first = post(&app.url("/web/v1/orders"), &alice, &card_order("WIDGET-2", 1), Some("shared-key")).await;
    let second = post(&app.url("/web/v1/orders"), &bob, &card_order("WIDGET-2", 1), Some("shared-key")).await;
    assert_eq!((first.status, second.status), (201, 201), "{} / {}", first.text, second.text);
    assert_ne!(id_of(&first), id_of(&second));
    app.stop_all().await;
}

#[tokio::test]
async fn a_partner_sees_only_its_tenant_and_can_cancel_an_order() {
    let app = spawn_up().await;
    let acme = token(&app, "acme-erp", PARTNER_SCOPES, Some("acme"));
    let globex = token(&app, "globex-shop", PARTNER_SCOPES, Some("globex"));
    let url = app.url("/partner/v1/orders");

    let ours = post(&url, &acme, &on_account_order("BOLT-M8", 4, "PO-4711"), Some("po-4711")).await;
    assert_eq!(ours.status, 201, "{}", ours.text);
    let ours_id = id_of(&ours);
    assert_eq!(ours.headers["location"], format!("/partner/v1/orders/{ours_id}"));
    assert_eq!(ours.body["external_ref"], "PO-4711");
    assert_eq!(ours.body["payment"], json!({"method": "on_account"}));
    let theirs = post(&url, &globex, &on_account_order("NUT-M6", 2, "G-1"), None).await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    let theirs_id = id_of(&theirs);

    let listed = get(&url, Some(&acme)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let ids: Vec<&str> =
        listed.body["orders"].as_array().expect("orders").iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, [ours_id.as_str()], "{}", listed.text);
    assert_problem(&get(&app.url(&format!("/partner/v1/orders/{theirs_id}")), Some(&acme)).await, 404);
    assert_problem(&post(&app.url(&format!("/partner/v1/orders/{theirs_id}/cancel")), &acme, "{}", None).await, 404);

    // A credential without a tenant is no partner's; neither is the web shop's tenant.
    let tenantless = token(&app, "someone", PARTNER_SCOPES, None);
    assert_problem(&get(&url, Some(&tenantless)).await, 403);
    let web = token(&app, "someone", PARTNER_SCOPES, Some("web"));
    assert_problem(&get(&url, Some(&web)).await, 403);

    let cancel = app.url(&format!("/partner/v1/orders/{ours_id}/cancel"));
    let cancelled = post(&cancel, &acme, r#"{"reason": "duplicate purchase order"}"#, None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(id_of(&cancelled), ours_id);
    let order =
        wait_for(&app, &acme, &format!("/partner/v1/orders/{ours_id}"), "cancelled", |o| o["status"] == "cancelled")
            .await;
    assert_eq!(order["reason"], "duplicate purchase order", "{order}");
    // Globex's order is untouched.
    let theirs_now = get(&app.url(&format!("/partner/v1/orders/{theirs_id}")), Some(&globex)).await;
    assert_ne!(theirs_now.body["status"], "cancelled", "{}", theirs_now.text);
    app.stop_all().await;
}

#[tokio::test]
async fn cash_application_pays_an_on_account_order_and_a_completed_shipment_completes_it() {
    let app = spawn_up().await;
    let acme = token(&app, "acme-erp", PARTNER_SCOPES, Some("acme"));
    let ops = token(&app, "operator", "ops", None);
    let placed = post(&app.url("/partner/v1/orders"), &acme, &on_account_order("DRILL-10", 2, "PO-9"), None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = id_of(&placed);
    let path = format!("/partner/v1/orders/{id}");

    let invoiced = wait_for_status(&app, &acme, &path, "invoiced").await;
    assert_eq!(invoiced["total"], "178.00", "{invoiced}");
    assert!(invoiced["erp"]["invoice"].is_string(), "{invoiced}");
    let invoice_id = invoiced["erp"]["invoice_id"].as_str().expect("invoice id").to_owned();
    let invoice = get(&app.url(&format!("/partner/v1/invoices/{invoice_id}")), Some(&acme)).await;
    assert_eq!(invoice.status, 200, "{}", invoice.text);
    assert_eq!(
        (invoice.body["order_id"].as_str(), invoice.body["amount_due"].as_str()),
        (Some(id.as_str()), Some("178.00"))
    );
    let other = token(&app, "globex-shop", PARTNER_SCOPES, Some("globex"));
    assert_problem(&get(&app.url(&format!("/partner/v1/invoices/{invoice_id}")), Some(&other)).await, 404);

    // Only operators apply cash.
    let payment = json!({"order_id": id, "amount": "178.00", "currency": "EUR"}).to_string();
    assert_problem(&post(&app.url("/ops/v1/payments"), &acme, &payment, None).await, 403);
    let float = json!({"order_id": id, "amount": 178.0, "currency": "EUR"}).to_string();
    assert_problem(&post(&app.url("/ops/v1/payments"), &ops, &float, None).await, 400);
    let recorded = post(&app.url("/ops/v1/payments"), &ops, &payment, Some("bank-statement-42")).await;
    assert_eq!(recorded.status, 200, "{}", recorded.text);
    assert_eq!(id_of(&recorded), id);
    let paid = wait_for(&app, &acme, &path, "paid", |o| {
        o["status"] == "paid" && !o["erp"]["shipments"].as_array().is_none_or(Vec::is_empty)
    })
    .await;

    let shipment = paid["erp"]["shipments"][0].as_str().expect("shipment id").to_owned();
    let done = post(&app.url(&format!("/ops/v1/shipments/{shipment}/complete")), &ops, "", None).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(
        (done.body["order_id"].as_str(), done.body["shipment_id"].as_str()),
        (Some(id.as_str()), Some(shipment.as_str()))
    );
    let completed = wait_for(&app, &acme, &path, "completed", |o| o["status"] == "completed").await;
    let steps: Vec<&str> =
        completed["timeline"].as_array().expect("timeline").iter().filter_map(|s| s["step"].as_str()).collect();
    assert!(steps.contains(&"shipped") && steps.last() == Some(&"completed"), "{steps:?}");
    assert_utc_times(&completed);

    // A completed order cannot be cancelled; an unknown one cannot be paid.
    let too_late = post(&app.url(&format!("{path}/cancel")), &acme, "", None).await;
    assert_problem(&too_late, 409);
    let unknown = json!({"order_id": "ord_01JDX3NOSUCHORDER0000000000", "amount": "1.00", "currency": "EUR"});
    assert_problem(&post(&app.url("/ops/v1/payments"), &ops, &unknown.to_string(), None).await, 404);
    app.stop_all().await;
}
