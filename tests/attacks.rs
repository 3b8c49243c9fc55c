//! The gateway's attack suite: forged, stale and misdirected tokens, bodies
//! too large or with fields nobody asked for, and reaching for another
//! tenant's objects. Each is refused with the right status and an RFC 9457
//! problem body, and nothing is created.

mod harness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use gateway::dev_idp::{DevIdp, ISSUER, TokenRequest};
use harness::{Running, assert_problem, get, post_json, quick_sagas, send, spawn_up_with, wait_for_order};
use http_body_util::Full;
use serde_json::json;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn idp(app: &Running) -> DevIdp {
    DevIdp::load_or_create(app.data_dir.path()).expect("dev idp")
}

/// Claims that pass, to be spoiled one at a time.
fn claims() -> serde_json::Value {
    json!({"iss": ISSUER, "aud": "erp-connect", "sub": "mallory", "exp": now() + 600, "nbf": now() - 10,
           "scope": "orders:read orders:write invoices:read", "tenant": "acme"})
}

fn kid(idp: &DevIdp) -> String {
    idp.jwks()["keys"][0]["kid"].as_str().expect("kid").to_owned()
}

/// A token with any header and claims and the given signature bytes.
fn forge(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(signature))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HS256 by hand, as an attacker would compute it: the point is that the
    // gateway never accepts HMAC at all, whatever the key.
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

async fn refused_with_401(app: &Running, token: &str, what: &str) {
    let reply = get(&app.url("/partner/v1/orders"), Some(token)).await;
    assert_eq!(reply.status, 401, "{what}: {}", reply.text);
    assert_problem(&reply, 401);
    assert!(reply.headers.contains_key("www-authenticate"), "{what}");
}

#[tokio::test]
async fn forged_stale_and_misdirected_tokens_get_401_problems() {
    let app = spawn_up_with(quick_sagas).await;
    let idp = idp(&app);
    let good = idp.sign(&claims()).expect("sign");
    assert_eq!(get(&app.url("/partner/v1/orders"), Some(&good)).await.status, 200, "the control token passes");
    let kid = kid(&idp);
    let signed_part = good.rsplit_once('.').expect("signature").0.to_owned();

    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = forge(&json!({"alg": alg, "typ": "JWT", "kid": kid}), &claims(), b"");
        refused_with_401(&app, &token, &format!("alg {alg}")).await;
        refused_with_401(&app, token.trim_end_matches('.'), &format!("alg {alg}, no signature part")).await;
    }
    // HS256 "signed" with the issuer's public key, the classic confusion.
    let public_key = B64.decode(idp.jwks()["keys"][0]["x"].as_str().expect("x")).expect("key bytes");
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims().to_string()));
    let hs256 = format!("{message}.{}", B64.encode(hmac_sha256(&public_key, message.as_bytes())));
    refused_with_401(&app, &hs256, "HS256 with the public key").await;

    let spoiled = |key: &str, value: serde_json::Value| {
        let mut c = claims();
        c[key] = value;
        idp.sign(&c).expect("sign")
    };
    refused_with_401(&app, &spoiled("exp", json!(now() - 120)), "expired").await;
    refused_with_401(&app, &spoiled("nbf", json!(now() + 300)), "not yet valid").await;
    refused_with_401(&app, &spoiled("aud", json!("someone-else")), "wrong audience").await;
    refused_with_401(&app, &spoiled("iss", json!("https://evil.example/")), "wrong issuer").await;
    refused_with_401(&app, &spoiled("exp", json!((now() + 600).to_string())), "exp as a string").await;
    let mut no_exp = claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    refused_with_401(&app, &idp.sign(&no_exp).expect("sign"), "no exp").await;

    let unknown_kid = format!(
        "{}.{}",
        B64.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": "not-a-key-we-know"}).to_string()),
        good.split_once('.').expect("parts").1
    );
    refused_with_401(&app, &unknown_kid, "unknown kid").await;
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    refused_with_401(&app, &String::from_utf8(tampered).expect("ascii"), "tampered signature").await;
    let mut other_claims = claims();
    other_claims["tenant"] = json!("globex");
    let swapped = format!("{}.{}", B64.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string()), {
        let body = B64.encode(other_claims.to_string());
        format!("{body}.{}", good.rsplit_once('.').expect("sig").1)
    });
    assert_ne!(swapped.rsplit_once('.').expect("sig").0, signed_part);
    refused_with_401(&app, &swapped, "claims swapped under a valid signature").await;
    refused_with_401(&app, "not-a-token", "garbage").await;
    app.stop_all().await;
}

#[tokio::test]
async fn bodies_too_large_or_with_unknown_fields_and_other_tenants_objects_are_refused() {
    let app = spawn_up_with(quick_sagas).await;
    let idp = idp(&app);
    let partner = |tenant: &str| {
        idp.mint(&TokenRequest {
            subject: format!("{tenant}-buyer"),
            scope: "orders:read orders:write invoices:read".into(),
            audience: "erp-connect".into(),
            tenant: Some(tenant.into()),
            email: None,
            ttl: Duration::from_secs(600),
        })
        .expect("mint")
    };
    let (acme, globex) = (partner("acme"), partner("globex"));
    let url = app.url("/partner/v1/orders");

    let unknown_field = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"},
                               "discount": "100%"});
    let reply = post_json(&url, &acme, &unknown_field, Some("attack-1")).await;
    assert_problem(&reply, 400);
    assert!(reply.text.contains("discount"), "names the field: {}", reply.text);

    let huge = format!(
        r#"{{"lines": [{{"sku": "{}", "quantity": 1}}], "payment": {{"method": "on_account"}}}}"#,
        "W".repeat(2 << 20)
    );
    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {acme}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(huge)))
        .expect("request");
    assert_problem(&send(request).await, 413);

    let list = get(&url, Some(&acme)).await;
    assert_eq!(list.body["orders"].as_array().map(Vec::len), Some(0), "nothing was created: {}", list.text);

    // Acme's order and invoice are invisible to Globex.
    let order = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"}});
    let placed = post_json(&url, &acme, &order, Some("attack-2")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let path = format!("/partner/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let invoiced = wait_for_order(&app, &acme, &path, "invoiced").await;
    assert_problem(&get(&app.url(&path), Some(&globex)).await, 404);
    let cancel = post_json(&app.url(&format!("{path}/cancel")), &globex, &json!({}), None).await;
    assert_problem(&cancel, 404);
    let invoice = format!("/partner/v1/invoices/{}", invoiced["erp"]["invoice_id"].as_str().expect("invoice id"));
    assert_problem(&get(&app.url(&invoice), Some(&globex)).await, 404);
    assert_eq!(get(&app.url(&invoice), Some(&acme)).await.status, 200);
    // And a token without the route's scope is 403.
    let reader = idp
        .mint(&TokenRequest {
            subject: "reader".into(),
            scope: "orders:read".into(),
            audience: "erp-connect".into(),
            tenant: Some("acme".into()),
            email: None,
            ttl: Duration::from_secs(600),
        })
        .expect("mint");
    assert_problem(&post_json(&url, &reader, &order, Some("attack-3")).await, 403);
    app.stop_all().await;
}

/// The leak scanner every in-process suite runs (`harness::leaks`) finds
/// what it must, so its silence means something.
#[test]
fn the_scanner_finds_each_kind_of_secret_and_nothing_else() {
    let key = format!("erpk_live_{}", "A2".repeat(16));
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    assert_eq!(harness::leaks::secret_in(&format!("x-api-key: {key}")), Some("a partner API key"));
    assert_eq!(harness::leaks::secret_in(&format!("token {jwt} refused")), Some("a JWT"));
    assert_eq!(
        harness::leaks::secret_in("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        Some("a webhook signing secret")
    );
    for fine in ["key key_01JDEMO refused", "erpk_live_ (a prefix)", "whsec_ is the prefix", "eyJ alone"] {
        assert_eq!(harness::leaks::secret_in(fine), None, "{fine}");
    }
    assert!(
        harness::leaks::issues_secret("POST", "/partner/v1/webhooks")
            && !harness::leaks::issues_secret("GET", "/partner/v1/webhooks")
    );
}
