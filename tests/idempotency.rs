//! `Idempotency-Key` under a burst: 20 identical `POST /partner/v1/orders`
//! with one key at once create exactly one order, and every answer is that
//! order (201) or a 409 asking to retry; the same key with another body is
//! 422.

mod harness;

use std::time::Duration;

use gateway::dev_idp::{DevIdp, TokenRequest};
use harness::{assert_problem, get, post_json, quick_sagas, spawn_up_with};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_posts_with_one_key_create_one_order() {
    let app = spawn_up_with(quick_sagas).await;
    let token = DevIdp::load_or_create(app.data_dir.path())
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "burst-buyer".into(),
            scope: "orders:read orders:write".into(),
            audience: "erp-connect".into(),
            tenant: Some("burst".into()),
            email: None,
            ttl: Duration::from_secs(600),
        })
        .expect("mint");
    let url = app.url("/partner/v1/orders");
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"}});
    let replies =
        futures_util::future::join_all((0..20).map(|_| post_json(&url, &token, &body, Some("burst-1")))).await;
    let mut ids = std::collections::BTreeSet::new();
    for reply in &replies {
        match reply.status {
            201 => {
                ids.insert(reply.body["id"].as_str().expect("id").to_owned());
            }
            409 => assert_problem(reply, 409),
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert_eq!(ids.len(), 1, "every accepted answer is the same order: {ids:?}");
    let list = get(&url, Some(&token)).await;
    assert_eq!(list.body["orders"].as_array().map(Vec::len), Some(1), "{}", list.text);

    let other = json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "on_account"}});
    assert_problem(&post_json(&url, &token, &other, Some("burst-1")).await, 422);
    app.stop_all().await;
}
