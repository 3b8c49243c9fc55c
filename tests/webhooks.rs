//! Partner webhooks end to end: a partner subscribes a local receiver that
//! fails twice before it answers, an order goes from acceptance to
//! completion (cash applied, shipment done in the ERP), and every event
//! arrives: the same `webhook-id` across retries, each order's events in
//! the order they were written, signatures and payloads checked by
//! `standardwebhooks` and `jsonschema` from PyPI against `/asyncapi.json`,
//! the attempts in the delivery log; then secret rotation and replay.

mod harness;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post};
use harness::{Running, get, post_json, quick_sagas, send, spawn_up_with, token_for};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on a port of its own that answers 500 to its first
/// `failures` requests and 200 after.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    failures: usize,
}

impl Receiver {
    async fn start(failures: usize) -> (Self, String) {
        let receiver = Self { got: Arc::default(), arrived: Arc::default(), failures };
        let listener = harness::listener().await;
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route("/hooks", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        (receiver, url)
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// The 2xx deliveries, in arrival order.
    fn delivered(&self) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.answered == 200).collect()
    }

    /// Waits, up to a minute, until `done` holds for what arrived.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.all();
            if done(&got) {
                return got;
            }
            let summary: Vec<String> = got.iter().map(|r| format!("{} {}", r.answered, r.json()["type"])).collect();
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "waited in vain for {what}; got {summary:?}"
            );
        }
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> axum::http::StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let answered = {
        let mut got = receiver.got.lock().expect("lock");
        let answered = if got.len() < receiver.failures { 500 } else { 200 };
        got.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
            answered,
        });
        answered
    };
    receiver.arrived.notify_waiters();
    axum::http::StatusCode::from_u16(answered).expect("status")
}

/// Which of `secrets` verify each of `received`, and its schema errors,
/// as `standardwebhooks` and `jsonschema` (PyPI) see them.
fn verify(received: &[Received], secrets: &[(&str, &str)], asyncapi: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    use std::io::Write;
    let input = json!({
        "secrets": secrets.iter().map(|(name, s)| (name.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "deliveries": received.iter().map(|r| json!({
            "headers": {"webhook-id": r.id, "webhook-timestamp": r.timestamp, "webhook-signature": r.signature},
            "body": r.body,
        })).collect::<Vec<_>>(),
        "asyncapi": asyncapi,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_verifier/verify.sh");
    let mut child = std::process::Command::new("bash")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the verifier starts");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("input written");
    let output = child.wait_with_output().expect("the verifier ran");
    assert!(output.status.success(), "the verifier failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the verifier's JSON");
    results
        .iter()
        .map(|r| {
            let list = |key: &str| {
                r[key].as_array().expect("list").iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
            };
            (list("verified_by"), list("schema_errors"))
        })
        .collect()
}

async fn request(method: &str, url: &str, bearer: &str, body: Option<Value>) -> harness::Reply {
    let mut request =
        http::Request::builder().method(method).uri(url).header("authorization", format!("Bearer {bearer}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(|b| Full::new(bytes::Bytes::from(b.to_string()))).unwrap_or_default();
    send(request.body(body).expect("request")).await
}

async fn wait_for(app: &Running, bearer: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&app.url(path), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        assert!(std::time::Instant::now() < deadline, "not in time: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The grace period of a rotated secret in this test.
const GRACE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_partner_receives_every_event_of_an_order_in_order_signed_retried_and_replayable() {
    let (receiver, url) = Receiver::start(2).await;
    let app = spawn_up_with(|c| {
        quick_sagas(c);
        c.webhooks.retry_schedule = vec![Duration::from_millis(50).into(); 7];
        c.webhooks.poll_interval = Duration::from_millis(20);
        c.webhooks.secret_grace = GRACE;
    })
    .await;
    let dir = app.data_dir.path();
    let acme = token_for(dir, "acme-erp", Some("acme"), None, "orders:read orders:write webhooks:manage");
    let globex = token_for(dir, "globex-shop", Some("globex"), None, "webhooks:manage");
    let orders_only = token_for(dir, "acme-orders", Some("acme"), None, "orders:read orders:write");
    let ops = token_for(dir, "operator", None, None, "ops");
    let asyncapi = get(&app.url("/asyncapi.json"), None).await;
    assert_eq!(asyncapi.status, 200, "{}", asyncapi.text);
    assert_eq!(asyncapi.body["asyncapi"], "3.0.0");

    // Subscribing: the scope, the event names and the URL are checked.
    let subscription = json!({"url": url, "events": ["order.*", "invoice.*", "shipment.*"], "description": "ERP sync"});
    harness::assert_problem(&post_json(&app.url("/partner/v1/webhooks"), &orders_only, &subscription, None).await, 403);
    let unknown = json!({"url": url, "events": ["order.*", "orders.shipped"]});
    let refused = post_json(&app.url("/partner/v1/webhooks"), &acme, &unknown, None).await;
    harness::assert_problem(&refused, 422);
    assert_eq!(refused.body["errors"][0]["field"], "events[1]", "{}", refused.text);
    let ftp = json!({"url": "ftp://127.0.0.1/hooks", "events": ["order.*"]});
    harness::assert_problem(&post_json(&app.url("/partner/v1/webhooks"), &acme, &ftp, None).await, 422);
    let created = post_json(&app.url("/partner/v1/webhooks"), &acme, &subscription, None).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.body["status"], "enabled");
    let endpoint = created.body["id"].as_str().expect("id").to_owned();
    let listed = get(&app.url("/partner/v1/webhooks"), Some(&acme)).await;
    assert_eq!(listed.body["webhooks"][0]["id"], endpoint.as_str(), "{}", listed.text);
    assert!(listed.body["webhooks"][0].get("secret").is_none(), "the secret is shown once: {}", listed.text);
    harness::assert_problem(&get(&app.url(&format!("/partner/v1/webhooks/{endpoint}")), Some(&globex)).await, 404);
    let for_ops = get(&app.url("/ops/v1/webhooks"), Some(&ops)).await;
    assert_eq!(for_ops.body["webhooks"][0]["tenant"], "acme", "{}", for_ops.text);

    // An order from acceptance to completion: cash applied by an
    // operator, the shipment done in the ERP.
    let order = json!({"lines": [{"sku": "DRILL-10", "quantity": 1}], "payment": {"method": "on_account"}});
    let placed = post_json(&app.url("/partner/v1/orders"), &acme, &order, None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("order id").to_owned();
    let path = format!("/partner/v1/orders/{id}");
    let invoiced = wait_for(&app, &acme, &path, |o| o["status"] == "invoiced").await;
    let total = invoiced["total"].as_str().expect("total").to_owned();
    let payment = json!({"order_id": id, "amount": total, "currency": "EUR"});
    let paid = post_json(&app.url("/ops/v1/payments"), &ops, &payment, Some("statement-1")).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let paid = wait_for(&app, &acme, &path, |o| {
        o["status"] == "paid" && o["erp"]["shipments"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    let shipment = paid["erp"]["shipments"][0].as_str().expect("shipment").to_owned();
    let done = post_json(&app.url(&format!("/ops/v1/shipments/{shipment}/complete")), &ops, &json!({}), None).await;
    assert_eq!(done.status, 200, "{}", done.text);

    let expected: BTreeSet<&str> = [
        "order.accepted",
        "order.confirmed",
        "invoice.issued",
        "order.paid",
        "invoice.paid",
        "order.shipped",
        "shipment.shipped",
        "order.completed",
    ]
    .into();
    let got = receiver
        .wait_until("every event of the order", |got| {
            let types: BTreeSet<String> = got
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
                .collect();
            expected.iter().all(|t| types.contains(*t))
        })
        .await;

    // The first event was tried three times, with one webhook-id.
    let first: Vec<(&str, u16)> = got[..3].iter().map(|r| (r.id.as_str(), r.answered)).collect();
    assert_eq!(first, [(got[0].id.as_str(), 500), (got[0].id.as_str(), 500), (got[0].id.as_str(), 200)]);
    assert_eq!(got[0].json()["type"], "order.accepted");

    // Each event once (no retry after a 200), in the order the store wrote them.
    let delivered = receiver.delivered();
    let arrived: Vec<String> = delivered.iter().map(|r| r.id.clone()).collect();
    let store =
        process_apis::order_to_cash::store::Store::open(&format!("sqlite://{}", dir.join("process.db").display()))
            .await
            .expect("store");
    let written: Vec<String> = store.events_of(&id).await.expect("events").into_iter().map(|e| e.id).collect();
    assert_eq!(arrived, written, "every event of the order once, in the order written");
    let types: Vec<String> = delivered.iter().map(|r| r.json()["type"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(types.iter().map(String::as_str).collect::<BTreeSet<_>>(), expected, "{types:?}");
    let sequences: Vec<u64> = delivered
        .iter()
        .filter(|r| r.json()["type"].as_str().is_some_and(|t| t.starts_with("order.")))
        .map(|r| r.json()["data"]["sequence"].as_u64().expect("sequence"))
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "sequence numbers increase: {sequences:?}");
    assert!(delivered.iter().all(|r| r.json()["data"]["order_id"] == id.as_str()));

    // Verified by a verifier nobody here wrote; payloads match /asyncapi.json.
    for (received, (verified_by, schema_errors)) in
        got.iter().zip(verify(&got, &[("current", &secret)], &asyncapi.body))
    {
        assert_eq!(verified_by, ["current"], "{}", received.body);
        assert!(schema_errors.is_empty(), "{}: {schema_errors:?}", received.body);
    }

    // The delivery log shows the attempts.
    let log = get(&app.url(&format!("/partner/v1/webhooks/{endpoint}/deliveries?page_size=100")), Some(&acme)).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let entries = log.body["deliveries"].as_array().expect("deliveries");
    let accepted = entries.iter().find(|d| d["event_id"] == got[0].id.as_str()).expect("the first event in the log");
    let statuses: Vec<u64> = accepted["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [500, 500, 200], "{accepted}");
    assert_eq!(accepted["status"], "delivered");
    assert!(entries.iter().all(|d| d["status"] == "delivered"), "{}", log.text);
    let failed = get(&app.url("/ops/v1/webhooks/deliveries?status=failed"), Some(&ops)).await;
    assert_eq!(failed.body["deliveries"], json!([]), "{}", failed.text);

    // Replay by event id resends exactly that event, body and id unchanged.
    let confirmed = delivered.iter().find(|r| r.json()["type"] == "order.confirmed").expect("confirmed").clone();
    let replay = format!("/partner/v1/webhooks/{endpoint}/replay");
    let before = receiver.delivered().len();
    let replayed = post_json(&app.url(&replay), &acme, &json!({"event_id": confirmed.id}), None).await;
    assert_eq!((replayed.status, replayed.body["replayed"].as_u64()), (202, Some(1)), "{}", replayed.text);
    receiver.wait_until("the replayed event", |got| got.iter().filter(|r| r.answered == 200).count() > before).await;
    let again = receiver.delivered()[before].clone();
    assert_eq!((again.id.as_str(), again.body.as_str()), (confirmed.id.as_str(), confirmed.body.as_str()));
    harness::assert_problem(&post_json(&app.url(&replay), &acme, &json!({"event_id": "evt_nope"}), None).await, 404);
    harness::assert_problem(&post_json(&app.url(&replay), &acme, &json!({}), None).await, 422);

    // Replay by time resends every subscribed event since then, and only those.
    let since = delivered.iter().find(|r| r.json()["type"] == "order.paid").expect("paid").json()["timestamp"]
        .as_str()
        .expect("timestamp")
        .to_owned();
    let wanted: BTreeSet<String> = delivered
        .iter()
        .filter(|r| r.json()["timestamp"].as_str().expect("timestamp") >= since.as_str())
        .map(|r| r.id.clone())
        .collect();
    let before = receiver.delivered().len();
    let replayed = post_json(&app.url(&replay), &acme, &json!({"since": since}), None).await;
    assert_eq!(replayed.status, 202, "{}", replayed.text);
    assert_eq!(replayed.body["replayed"].as_u64(), Some(wanted.len() as u64), "{}", replayed.text);
    receiver
        .wait_until("the events since", |got| got.iter().filter(|r| r.answered == 200).count() >= before + wanted.len())
        .await;
    let resent: BTreeSet<String> = receiver.delivered()[before..].iter().map(|r| r.id.clone()).collect();
    assert_eq!(resent, wanted);

    // Rotation: during the grace period both secrets sign; after it only the new.
    let rotated =
        post_json(&app.url(&format!("/partner/v1/webhooks/{endpoint}/rotate-secret")), &acme, &json!({}), None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let grace_ends = tokio::time::Instant::now() + GRACE;
    let new_secret = rotated.body["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated.body["previous_secret_expires_at"].is_string(), "{}", rotated.text);
    let secrets = [("old", secret.as_str()), ("new", new_secret.as_str())];
    let test_event = |receiver: Receiver| {
        let (url, acme) = (app.url(&format!("/partner/v1/webhooks/{endpoint}/test")), acme.clone());
        async move {
            let before = receiver.delivered().len();
            let queued = post_json(&url, &acme, &json!({}), None).await;
            assert_eq!(queued.status, 202, "{}", queued.text);
            assert_eq!(queued.body["event_type"], "webhook.test");
            receiver
                .wait_until("the test event", |got| got.iter().filter(|r| r.answered == 200).count() > before)
                .await;
            receiver.delivered()[before].clone()
        }
    };
    let during = test_event(receiver.clone()).await;
    assert_eq!(during.signature.split(' ').count(), 2, "{}", during.signature);
    let (mut verified_by, schema_errors) = verify(std::slice::from_ref(&during), &secrets, &asyncapi.body).remove(0);
    verified_by.sort();
    assert_eq!((verified_by, schema_errors), (vec!["new".to_owned(), "old".to_owned()], vec![]));
    tokio::time::sleep_until(grace_ends + Duration::from_millis(50)).await;
    let after = test_event(receiver.clone()).await;
    let (verified_by, _) = verify(std::slice::from_ref(&after), &secrets, &asyncapi.body).remove(0);
    assert_eq!(verified_by, ["new"]);

    // The owner removes the endpoint; it is gone for operators too.
    let removed = request("DELETE", &app.url(&format!("/partner/v1/webhooks/{endpoint}")), &acme, None).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    harness::assert_problem(&get(&app.url(&format!("/ops/v1/webhooks/{endpoint}")), Some(&ops)).await, 404);
    app.stop_all().await;
}

/// With the tiers apart (a real gRPC hop between experience and process),
/// each change to an endpoint lands on the process tier's audit trail with
/// the caller who made it: the partner's subject for its own changes, the
/// operator's for a removal from the ops API; `audit verify` holds.
#[tokio::test]
async fn endpoint_changes_reach_the_process_tiers_audit_trail_with_their_caller() {
    let (_receiver, url) = Receiver::start(0).await;
    let app = harness::spawn_serve().await;
    let dir = app.data_dir.path();
    let acme = token_for(dir, "acme-erp", Some("acme"), None, "webhooks:manage");
    let ops = token_for(dir, "operator", None, None, "ops");
    let created =
        post_json(&app.url("/partner/v1/webhooks"), &acme, &json!({"url": url, "events": ["order.*"]}), None).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let rotated = request("POST", &app.url(&format!("/partner/v1/webhooks/{id}/rotate-secret")), &acme, None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let deleted = request("DELETE", &app.url(&format!("/ops/v1/webhooks/{id}")), &ops, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("process.db").display())).await.expect("db");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, object FROM audit_log ORDER BY seq").fetch_all(&db).await.expect("rows");
    db.close().await;
    let expected =
        [("acme-erp", "webhooks.create"), ("acme-erp", "webhooks.rotate_secret"), ("operator", "webhooks.delete")];
    assert_eq!(rows.iter().map(|(a, b, _)| (a.as_str(), b.as_str())).collect::<Vec<_>>(), expected);
    assert!(rows.iter().all(|(_, _, object)| *object == id), "{rows:?}");

    let verified = std::process::Command::new(harness::BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .env_remove("ERP_CONNECT_CONFIG")
        .env("RUST_LOG", "off")
        .output()
        .expect("audit verify");
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{stdout}");
    assert!(stdout.contains("process: 3 rows checked, chain intact"), "{stdout}");
    app.stop_all().await;
}
