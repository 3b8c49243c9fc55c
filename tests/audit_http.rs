//! The process tier's audit trail over HTTP, end to end with the tiers
//! apart (a real gRPC hop between experience and process): changes to a
//! webhook endpoint, one by the partner and one by an operator, are read
//! back through the gateway at `GET /ops/v1/audit/process` with the actor
//! each was made by; the gateway's own `GET /ops/v1/audit` (API keys)
//! still answers beside it.

mod harness;

use harness::{assert_problem, get, post_json, send, token_for};
use http_body_util::Full;
use serde_json::json;

#[tokio::test]
async fn the_process_trail_shows_each_endpoint_change_with_its_actor_through_the_gateway() {
    let app = harness::spawn_serve().await;
    let dir = app.data_dir.path();
    let acme = token_for(dir, "acme-erp", Some("acme"), None, "webhooks:manage");
    let ops = token_for(dir, "operator", None, None, "ops");
    // Nothing listens there: deliveries are not what this test is about.
    let subscription = json!({"url": "http://127.0.0.1:9/hooks", "events": ["order.*"]});
    let created = post_json(&app.url("/partner/v1/webhooks"), &acme, &subscription, None).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let delete = http::Request::delete(app.url(&format!("/ops/v1/webhooks/{id}")))
        .header("authorization", format!("Bearer {ops}"))
        .body(Full::default())
        .expect("request");
    assert_eq!(send(delete).await.status, 204);

    let created = get(&app.url("/ops/v1/audit/process?action=webhooks.create"), Some(&ops)).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let records = created.body["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{}", created.text);
    assert_eq!((&records[0]["actor"], &records[0]["object"]), (&json!("acme-erp"), &json!(id)));
    assert_eq!(records[0]["detail"]["tenant"], "acme");
    assert_eq!(created.body["next_page_token"], serde_json::Value::Null);

    let deleted = get(&app.url("/ops/v1/audit/process?action=webhooks.delete&actor=operator"), Some(&ops)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.body["records"][0]["object"], json!(id), "the operator's removal: {}", deleted.text);

    // Newest first, a page at a time, the token handed back as given.
    let first = get(&app.url("/ops/v1/audit/process?page_size=1"), Some(&ops)).await;
    assert_eq!(first.body["records"][0]["action"], "webhooks.delete", "{}", first.text);
    let token = first.body["next_page_token"].as_str().expect("a second page").to_owned();
    let second = get(&app.url(&format!("/ops/v1/audit/process?page_size=1&page_token={token}")), Some(&ops)).await;
    assert_eq!(second.body["records"][0]["action"], "webhooks.create", "{}", second.text);

    assert_problem(&get(&app.url("/ops/v1/audit/process?since=yesterday"), Some(&ops)).await, 400);
    assert_problem(&get(&app.url("/ops/v1/audit/process"), Some(&acme)).await, 403);
    // The gateway's own trail is another route, with none of these rows.
    let keys = get(&app.url("/ops/v1/audit"), Some(&ops)).await;
    assert!(!keys.text.contains("webhooks."), "{}", keys.text);
    app.stop_all().await;
}
