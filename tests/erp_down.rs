//! Order-to-cash keeps taking orders while the ERP is down: with the
//! test run's own Tryton frozen (SIGSTOP), `up` accepts web and partner
//! orders at once from its price list and saga store, answers them from
//! the store, and the saga waits for Tryton instead of rejecting them.
//! Once Tryton runs again every order reaches `confirmed` or further with
//! exactly one Tryton sale, each new customer is one Tryton party, and
//! `erp-connect reconcile` exits 0.
//!
//! `/readyz` stays 200 meanwhile: the product serves, so no probe takes it
//! out of service for the ERP's outage.
//!
//! No ERP call on the request path is shown by the deadlines: the
//! experience tier gives the process tier 2 s, while a call to the frozen
//! Tryton would wait 3 s for its own timeout (or fail at once with the
//! breaker open), so a POST that touched the ERP would answer 503.

mod harness;

use std::time::Duration;

use harness::{Running, get, post_json, quick_sagas, spawn_up_with};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};

/// Tryton stopped with SIGSTOP until dropped (SIGCONT), so a failing test
/// never leaves it frozen for the run's cleanup.
struct Frozen(i32);

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

impl Frozen {
    fn new(pid: i32) -> Self {
        signal(pid, "STOP");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn token(app: &Running, subject: &str, tenant: Option<&str>, email: Option<&str>, scope: &str) -> String {
    harness::token_for(app.data_dir.path(), subject, tenant, email, scope)
}

/// Polls `GET path` until the order is `confirmed` or further; fails if it
/// ends rejected or cancelled.
async fn wait_confirmed(app: &Running, bearer: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let reply = get(&app.url(path), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        match reply.body["status"].as_str().unwrap_or_default() {
            "confirmed" | "invoiced" | "paid" | "shipped" | "completed" => return reply.body,
            "rejected" | "cancelled" => panic!("the order ended: {}", reply.text),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "not confirmed in time: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Tryton records of `model` matching `domain`, counted in Tryton itself.
async fn count(tryton: &tryton::rpc::Client, model: &str, domain: Value) -> usize {
    let found = tryton
        .call(&format!("model.{model}.search"), vec![domain, json!(0), json!(100), Value::Null])
        .await
        .expect("Tryton answers a search");
    found.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn orders_are_accepted_while_tryton_is_frozen_and_reach_it_once_when_it_runs_again() {
    harness::leaks::watch_logs();
    let mut server =
        tokio::task::spawn_blocking(|| tryton::test_server::config("erp_down")).await.expect("tryton set up");
    let pid = tryton::test_server::pid(&server).expect("this test freezes the run's own Tryton: unset TRYTON_URL");
    server.timeout = Duration::from_secs(3);
    let tryton_rpc = tryton::test_server::rpc_client(&server);
    let config_server = server.clone();
    let app = spawn_up_with(move |config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(config_server);
        config.process.system_timeout = Duration::from_secs(5);
        config.experience.process_timeout = Duration::from_secs(2);
    })
    .await;

    // With Tryton up: one order, so the price list surely holds the SKUs
    // (it is also filled in the background at start).
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let ship_to = json!({"street": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"});
    let warm = token(
        &app,
        &format!("warm-{run}"),
        None,
        Some(&format!("warm-{run}@down.example")),
        "orders:read orders:write",
    );
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}, {"sku": "GADGET-2", "quantity": 1}],
        "payment": {"method": "card", "token": "tok_visa"}, "ship_to": ship_to});
    let placed = post_json(&app.url("/web/v1/orders"), &warm, &body, Some("warm")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    wait_confirmed(&app, &warm, &format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"))).await;

    let frozen = Frozen::new(pid);
    // A shopper and a partner Tryton has never seen.
    let shopper_email = format!("new-{run}@down.example");
    let shopper = token(&app, &format!("new-{run}"), None, Some(&shopper_email), "orders:read orders:write");
    let tenant = format!("partner-{run}");
    let partner = token(&app, &format!("{tenant}-buyer"), Some(&tenant), None, "orders:read orders:write");
    let ops = token(&app, "operator", None, None, "ops");
    let web_body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}],
        "payment": {"method": "card", "token": "tok_visa"}, "ship_to": ship_to});
    let partner_body = json!({"lines": [{"sku": "GADGET-2", "quantity": 3}], "payment": {"method": "on_account"},
        "ship_to": {"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"}});
    let mut placed = Vec::new();
    for (audience, bearer, body, key) in [
        ("web", &shopper, &web_body, "down-web-1"),
        ("partner", &partner, &partner_body, "down-partner-1"),
        (
            "web",
            &shopper,
            &json!({"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}}),
            "down-web-2",
        ),
    ] {
        let reply = post_json(&app.url(&format!("/{audience}/v1/orders")), bearer, body, Some(key)).await;
        assert_eq!(reply.status, 201, "{audience} order while Tryton is frozen: {}", reply.text);
        assert_eq!(reply.body["status"], "accepted", "{}", reply.text);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        // A retried POST is answered from the saga store too.
        let again = post_json(&app.url(&format!("/{audience}/v1/orders")), bearer, body, Some(key)).await;
        assert_eq!((again.status, again.body["id"].as_str()), (201, Some(id.as_str())), "{}", again.text);
        placed.push((audience, bearer.clone(), id));
    }
    // The product stays ready (a probe that followed the ERP would take it
    // out of service); reads answer from the saga store, and the saga waits
    // for Tryton instead of spending its retry budget.
    let ready = get(&app.url("/readyz"), None).await;
    assert_eq!(ready.status, 200, "ready while Tryton is frozen: {}", ready.text);
    for (audience, bearer, id) in &placed {
        let reply = get(&app.url(&format!("/{audience}/v1/orders/{id}")), Some(bearer)).await;
        assert_eq!((reply.status, reply.body["status"].as_str()), (200, Some("accepted")), "{}", reply.text);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for (_, _, id) in &placed {
        loop {
            let reply = get(&app.url(&format!("/ops/v1/orders/{id}")), Some(&ops)).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.body["status"], "accepted", "{}", reply.text);
            if reply.text.contains("waiting:erp") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the order does not wait for the ERP: {}", reply.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    loop {
        let metrics = get(&app.url("/metrics"), None).await.text;
        let waiting = metrics
            .lines()
            .find(|l| l.starts_with("erp_connect_orders_waiting{system=\"erp\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if waiting.is_some_and(|n| n >= 3.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no backlog in /metrics: {waiting:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    drop(frozen);
    for (audience, bearer, id) in &placed {
        wait_confirmed(&app, bearer, &format!("/{audience}/v1/orders/{id}")).await;
        assert_eq!(count(&tryton_rpc, "sale.sale", json!([["reference", "=", id]])).await, 1, "Tryton sales of {id}");
    }
    let external_ids = [format!("web:new-{run}"), format!("partner:{tenant}")];
    let parties = count(&tryton_rpc, "party.party", json!([["code", "in", external_ids]])).await;
    assert_eq!(parties, 2, "one Tryton party per new customer, created once: {external_ids:?}");

    let config_file = app.data_dir.path().join("reconcile.toml");
    std::fs::write(
        &config_file,
        format!(
            "data_dir = {dir:?}\n[erp]\nbackend = \"tryton\"\n[erp.tryton]\nurl = {url:?}\ndatabase = {db:?}\n\
             username = {user:?}\npassword_file = {pass:?}\n",
            dir = app.data_dir.path().display().to_string(),
            url = server.url,
            db = server.database,
            user = server.username,
            pass = server.password_file.display().to_string(),
        ),
    )
    .expect("config written");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::BIN).args(["reconcile", "--config"]).arg(&config_file).output()
    })
    .await
    .expect("joined")
    .expect("reconcile runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "reconcile: {report}");
    app.stop_all().await;
}
