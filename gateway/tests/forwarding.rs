//! What the experience tier receives from the gateway over HTTP (`serve`
//! mode): the verified principal, signed, and never the caller's own
//! credential, whether a bearer token or a partner API key.
//!
//! The experience tier is a stand-in on a port of its own that echoes the
//! headers it got: this test is about the gateway's side of the hop.

use std::time::Duration;

use axum::{Json, Router, body::Body, extract::Request, routing::any};
use gateway::{
    Route,
    auth::Authenticator,
    dev_idp::{self, DevIdp, TokenRequest},
    key_store::{KeyStore, NewKey},
    router,
    upstream::Upstream,
};
use http::{Method, StatusCode, header};
use platform::principal::{self, Principal, PrincipalSigner};
use tower::ServiceExt;

/// A stand-in experience tier answering every request with the headers it
/// received, as a JSON object.
async fn echo_tier() -> String {
    let app = Router::new().fallback(any(|request: Request| async move {
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").into()))
            .collect();
        Json(headers)
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn forwarded(app: &Router, credential: (&str, String)) -> serde_json::Value {
    let request = Request::builder()
        .uri("/partner/v1/orders/ord_1")
        .header(credential.0, credential.1)
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.expect("body");
    serde_json::from_slice(&body).expect("echoed headers")
}

#[tokio::test]
async fn the_experience_tier_gets_a_signed_principal_and_never_the_callers_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = DevIdp::load_or_create(dir.path()).expect("idp");
    let jwks = serde_json::from_value(idp.jwks()).expect("jwks");
    let store = KeyStore::lazy(None, dir.path().to_owned());
    let new = NewKey {
        partner: "acme".into(),
        scopes: vec!["orders:read".into()],
        plan: "unmetered".into(),
        expires_at: None,
    };
    let (record, key) = store.create(new, gateway::key_store::now_ms() / 1000, "test").await.expect("key");
    let auth = Authenticator::new(&[(dev_idp::ISSUER.to_owned(), vec!["erp-connect".to_owned()], jwks)], 30)
        .expect("auth")
        .with_api_keys(store);
    let signer = PrincipalSigner::new(&[9u8; 32]).expect("signer");
    let upstream = Upstream::http(&echo_tier().await, signer.clone(), Duration::from_secs(5), None).expect("upstream");
    // The route this test calls; the real table is the experience tier's.
    let routes = [Route::new(Method::GET, "/partner/v1/orders/{id}", "orders:read")];
    let app = router(auth, upstream, None, &routes);

    let token = idp
        .mint(&TokenRequest {
            subject: "alice".into(),
            scope: "orders:read".into(),
            audience: "erp-connect".into(),
            tenant: Some("acme".into()),
            email: None,
            ttl: Duration::from_secs(60),
        })
        .expect("mint");
    let by_key = (("x-api-key", key.expose().to_owned()), record.id.as_str());
    let by_bearer_key = ((header::AUTHORIZATION.as_str(), format!("Bearer {}", key.expose())), record.id.as_str());
    let by_token = ((header::AUTHORIZATION.as_str(), format!("Bearer {token}")), "alice");
    // Twice each: the second assertion may come from the gateway's cache,
    // and must be as good as the first.
    for ((name, value), subject) in [by_key.clone(), by_bearer_key, by_token, by_key] {
        let got = forwarded(&app, (name, value.clone())).await;
        let text = got.to_string();
        assert!(!text.contains(key.expose()) && !text.contains(&token), "a credential was forwarded: {text}");
        assert!(got.get("authorization").is_none() && got.get("x-api-key").is_none(), "{text}");
        let assertion = got[principal::HEADER].as_str().expect("a principal header");
        let principal: Principal = signer.verify(assertion).expect("signed by the gateway");
        assert_eq!((principal.subject.as_str(), principal.tenant.as_deref()), (subject, Some("acme")));
        let other = PrincipalSigner::new(&[8u8; 32]).expect("signer");
        assert!(other.verify(assertion).is_err(), "verifiable with the shared secret only");
    }
}
