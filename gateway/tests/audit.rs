//! Every state-changing request leaves one audit record (who, what, which
//! object, outcome, request id) and no credential; reads leave none. A test
//! binary of its own: it installs the process's log subscriber.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Extension, Router, body::Body, extract::Request, routing::any};
use gateway::{
    Route,
    auth::Authenticator,
    dev_idp::{self, DevIdp, TokenRequest},
    router,
    upstream::Upstream,
};
use http::{Method, StatusCode, header};
use platform::principal::Principal;
use tower::ServiceExt;

/// Log lines written by the subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token(idp: &DevIdp, scope: &str) -> String {
    idp.mint(&TokenRequest {
        subject: "alice".into(),
        scope: scope.into(),
        audience: "erp-connect".into(),
        tenant: Some("acme".into()),
        email: Some("alice@example.com".into()),
        ttl: Duration::from_secs(60),
    })
    .expect("mint")
}

async fn status(app: &Router, method: Method, path: &str, token: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "req-audit-1")
        .body(Body::empty())
        .expect("request");
    app.clone().oneshot(request).await.expect("response").status()
}

#[tokio::test]
async fn state_changes_leave_an_audit_record_without_secrets_and_reads_none() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).init();

    let dir = tempfile::tempdir().expect("tempdir");
    let idp = DevIdp::load_or_create(dir.path()).expect("idp");
    let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
    let auth =
        Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30).expect("auth");
    // A stand-in experience tier that answers every request 200.
    let experience = Router::new().fallback(any(|Extension(p): Extension<Principal>| async move { p.subject.clone() }));
    // The routes this test calls; the real table is the experience tier's.
    let routes = [
        Route::new(Method::POST, "/partner/v1/orders", "orders:write"),
        Route::new(Method::GET, "/partner/v1/orders/{id}", "orders:read"),
        Route::new(Method::POST, "/partner/v1/orders/{id}/cancel", "orders:write"),
    ];
    let app = router(auth, Upstream::InProcess(experience, std::time::Duration::from_secs(30)), None, &routes);

    let writer_token = token(&idp, "orders:write orders:read");
    assert_eq!(status(&app, Method::POST, "/partner/v1/orders/ord_01JDX/cancel", &writer_token).await, StatusCode::OK);
    assert_eq!(status(&app, Method::GET, "/partner/v1/orders/ord_01JDX", &writer_token).await, StatusCode::OK);
    let reader = token(&idp, "orders:read");
    assert_eq!(status(&app, Method::POST, "/partner/v1/orders", &reader).await, StatusCode::FORBIDDEN);

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf-8");
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "audit")
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    let fields = |i: usize| &records[i]["fields"];
    assert_eq!(fields(0)["route"], "/partner/v1/orders/{id}/cancel");
    assert_eq!(fields(0)["object"], "ord_01JDX");
    assert_eq!(fields(0)["status"], 200);
    assert_eq!(fields(0)["request_id"], "req-audit-1");
    assert_eq!((fields(0)["subject"].as_str(), fields(0)["tenant"].as_str()), (Some("alice"), Some("acme")));
    assert_eq!((fields(1)["method"].as_str(), fields(1)["status"].as_u64()), (Some("POST"), Some(403)));
    assert!(!text.contains(&writer_token) && !text.contains(&reader), "no credential in the logs");
    assert!(!text.contains("alice@example.com"), "no e-mail address in the logs");
}
