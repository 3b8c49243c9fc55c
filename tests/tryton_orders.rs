//! Orders through every tier (`serve` mode: gateway → experience →
//! process → system over the network) into a real Tryton server: the web
//! shop's card order becomes a Tryton sale, invoice and shipment, is paid,
//! and completes when the shipment is done in Tryton; a declined card
//! leaves the Tryton sale cancelled.
//!
//! Tryton is set up once per run by the project's `deploy/tryton/setup.sh`
//! (`system_apis::erp::backend::tryton::test_server`: a database of the
//! run's own, dropped when the run ends), or taken from `TRYTON_URL`,
//! `TRYTON_DB`, `TRYTON_USER`, `TRYTON_PASSWORD_FILE`.

mod harness;

use erp_connect::serve::Target;
use erp_connect_proto::erp::v1::{self as erp, sales_order_service_client::SalesOrderServiceClient};
use harness::{Running, post_json, quick_sagas, spawn_serve_with, wait_for_order};
use serde_json::json;
use system_apis::erp::{BackendKind, backend::tryton};

async fn start() -> Running {
    // The tiers run in this process: their warnings and errors are shown
    // with a failing test's output (libtest keeps them otherwise).
    harness::leaks::watch_logs();
    let server =
        tokio::task::spawn_blocking(|| tryton::test_server::config("erp_orders")).await.expect("tryton set up");
    spawn_serve_with(|config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(server);
        // Tryton answers in tens of milliseconds per call.
        config.process.system_timeout = std::time::Duration::from_secs(30);
    })
    .await
}

fn token(app: &Running, subject: &str, scope: &str) -> String {
    let email = format!("{subject}@tryton-shoppers.example");
    harness::token_for(app.data_dir.path(), subject, None, Some(&email), scope)
}

async fn tryton_sale(app: &Running, id: &str) -> erp::SalesOrder {
    let addr = app.grpc.iter().find(|(t, _)| *t == Target::System).map(|(_, a)| *a).expect("system tier");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
    SalesOrderServiceClient::new(channel)
        .get_sales_order(erp::SalesOrderRequest { id: id.into() })
        .await
        .expect("the sale exists in Tryton")
        .into_inner()
}

#[tokio::test]
async fn a_web_card_order_becomes_a_tryton_sale_and_completes_when_tryton_ships_it() {
    let app = start().await;
    let shopper = token(&app, &format!("shopper-{}", ulid::Ulid::new()), "orders:read orders:write");
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "card", "token": "tok_visa"},
        "ship_to": {"street": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}});
    let placed = post_json(&app.url("/web/v1/orders"), &shopper, &body, Some("tryton-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let paid = wait_for_order(&app, &shopper, &path, "paid").await;
    // What Tryton says the customer owes: the lines, plus taxes if any.
    assert!(paid["total"].as_str().is_some_and(|t| t.parse::<f64>().is_ok_and(|v| v >= 25.0)), "{paid}");

    assert!(paid["erp"]["sales_order"].as_str().is_some_and(|n| !n.is_empty()), "{paid}");
    let ops = token(&app, "operator", "ops");
    for shipment in paid["erp"]["shipments"].as_array().expect("shipments") {
        let shipment = shipment.as_str().expect("shipment id");
        let done = post_json(&app.url(&format!("/ops/v1/shipments/{shipment}/complete")), &ops, &json!({}), None).await;
        assert!(done.status < 300, "{}", done.text);
    }
    wait_for_order(&app, &shopper, &path, "completed").await;
    // The process API holds the ERP's ids; the sale is Tryton's own record.
    let order = process_order(&app, paid["id"].as_str().expect("id")).await;
    let sale = tryton_sale(&app, &order.erp.expect("refs").sales_order_id).await;
    assert_eq!(sale.state(), erp::SalesOrderState::Done, "{sale:?}");
    assert_eq!(sale.reference, order.id);
    app.stop_all().await;
}

#[tokio::test]
async fn a_declined_card_leaves_the_tryton_sale_cancelled() {
    let app = start().await;
    let shopper = token(&app, &format!("shopper-{}", ulid::Ulid::new()), "orders:read orders:write");
    let body = json!({"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "card", "token": "tok_chargeDeclined"},
        "ship_to": {"street": "Marktplatz 2", "city": "Bonn"}});
    let placed = post_json(&app.url("/web/v1/orders"), &shopper, &body, Some("tryton-2")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let rejected = wait_for_order(&app, &shopper, &path, "rejected").await;
    assert!(rejected["reason"].as_str().is_some_and(|r| r.contains("declined")), "{rejected}");
    let order = process_order(&app, rejected["id"].as_str().expect("id")).await;
    let sale = tryton_sale(&app, &order.erp.expect("refs").sales_order_id).await;
    assert_eq!(sale.state(), erp::SalesOrderState::Cancelled, "{sale:?}");
    app.stop_all().await;
}

/// The order as the process API holds it (with the ERP's ids).
async fn process_order(app: &Running, id: &str) -> erp_connect_proto::order_to_cash::v1::Order {
    use erp_connect_proto::order_to_cash::v1::{
        GetOrderRequest, order_to_cash_service_client::OrderToCashServiceClient,
    };
    OrderToCashServiceClient::new(app.grpc_channel(Target::Process))
        .get_order(GetOrderRequest { tenant: String::new(), order_id: id.into() })
        .await
        .expect("order")
        .into_inner()
}

#[tokio::test]
async fn a_partners_invoiced_order_cancelled_in_time_is_credited_and_cancelled_in_tryton() {
    let app = start().await;
    let tenant = format!("partner-{}", ulid::Ulid::new().to_string().to_lowercase());
    let partner = partner_token(&app, &tenant, "orders:read orders:write");
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"},
        "ship_to": {"street": "Hafenstr. 3", "city": "Hamburg", "postal_code": "20457", "country": "DE"}});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &body, Some("tryton-3")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("id").to_owned();
    let path = format!("/partner/v1/orders/{id}");
    wait_for_order(&app, &partner, &path, "invoiced").await;
    let cancelled =
        post_json(&app.url(&format!("{path}/cancel")), &partner, &json!({"reason": "wrong size"}), None).await;
    assert!(cancelled.status < 300, "{}", cancelled.text);
    // The answer shows the order as it stood after a short wait; crediting
    // and cancelling in a busy Tryton may take longer.
    wait_for_order(&app, &partner, &path, "cancelled").await;
    let order = process_order(&app, &id).await;
    assert_eq!(order.status(), erp_connect_proto::order_to_cash::v1::OrderStatus::Cancelled, "{order:?}");
    assert_eq!(order.reason, "wrong size");
    let sale = tryton_sale(&app, &order.erp.expect("refs").sales_order_id).await;
    assert_eq!(sale.state(), erp::SalesOrderState::Cancelled, "{sale:?}");
    app.stop_all().await;
}

fn partner_token(app: &Running, tenant: &str, scope: &str) -> String {
    harness::token_for(app.data_dir.path(), &format!("{tenant}-buyer"), Some(tenant), None, scope)
}

#[tokio::test]
async fn on_account_orders_are_credit_checked_against_tryton_and_paid_by_cash_application() {
    let app = start().await;
    let tenant = format!("partner-{}", ulid::Ulid::new().to_string().to_lowercase());
    let partner = partner_token(&app, &tenant, "orders:read orders:write invoices:read");
    let ship_to = json!({"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"});

    // 500 × 12.50 = 6250.00 is over the new account's 5000.00 limit.
    let big = json!({"lines": [{"sku": "WIDGET-1", "quantity": 500}], "payment": {"method": "on_account"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &big, Some("tryton-4")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/partner/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let rejected = wait_for_order(&app, &partner, &path, "rejected").await;
    assert!(rejected["reason"].as_str().is_some_and(|r| r.contains("credit limit")), "{rejected}");

    // Within the limit: invoiced in Tryton, paid by cash application, and
    // completed once Tryton ships it.
    let small =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "on_account"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/partner/v1/orders"), &partner, &small, Some("tryton-5")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/partner/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let invoiced = wait_for_order(&app, &partner, &path, "invoiced").await;
    let invoice_id = invoiced["erp"]["invoice_id"].as_str().expect("invoice id");
    let invoice = harness::get(&app.url(&format!("/partner/v1/invoices/{invoice_id}")), Some(&partner)).await;
    assert_eq!(invoice.status, 200, "{}", invoice.text);
    assert_eq!(invoice.body["state"], "posted", "{}", invoice.text);
    let ops = token(&app, "operator", "ops");
    // Tryton refuses a payment over what is due: the caller hears why, as
    // a conflict, never a 500.
    let due: f64 = invoice.body["amount_due"].as_str().and_then(|d| d.parse().ok()).expect("amount due");
    let over = json!({"order_id": invoiced["id"], "amount": format!("{:.2}", due + 100.0), "currency": "EUR"});
    let refused = post_json(&app.url("/ops/v1/payments"), &ops, &over, Some("tryton-cash-over")).await;
    harness::assert_problem(&refused, 409);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("due")), "{}", refused.text);
    let payment = json!({"order_id": invoiced["id"], "amount": invoice.body["amount_due"], "currency": "EUR"});
    let paid = post_json(&app.url("/ops/v1/payments"), &ops, &payment, Some("tryton-cash-1")).await;
    assert!(paid.status < 300, "{}", paid.text);
    let paid = wait_for_order(&app, &partner, &path, "paid").await;
    for shipment in paid["erp"]["shipments"].as_array().expect("shipments") {
        let shipment = shipment.as_str().expect("shipment id");
        let done = post_json(&app.url(&format!("/ops/v1/shipments/{shipment}/complete")), &ops, &json!({}), None).await;
        assert!(done.status < 300, "{}", done.text);
    }
    wait_for_order(&app, &partner, &path, "completed").await;
    app.stop_all().await;
}
