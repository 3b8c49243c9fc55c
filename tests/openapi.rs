//! The OpenAPI document and the gateway's route table come from one
//! declaration per route (the experience tier's handlers, and the
//! gateway's own routes): the gateway answers exactly the documented
//! operations, each with the documented scope, every one of them reaches a
//! handler, nothing else is routed, and every error is problem+json.

mod harness;

use std::collections::BTreeSet;

use harness::{Reply, get, send, spawn_serve, spawn_up, token_for};
use http_body_util::Full;

/// An operation: method, path template and the one scope it needs.
type Operation = (String, String, String);

/// The document's operations, each checked to name one scope (whatever the
/// credential) and to answer every error as a problem.
fn documented() -> BTreeSet<Operation> {
    let doc: serde_json::Value = serde_json::from_str(&experience_apis::openapi::json()).expect("JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let scopes: BTreeSet<String> = operation["security"]
                .as_array()
                .expect("security")
                .iter()
                .flat_map(|requirement| requirement.as_object().expect("requirement").values())
                .flat_map(|scopes| {
                    scopes.as_array().expect("scopes").iter().map(|s| s.as_str().expect("scope").to_owned())
                })
                .collect();
            assert_eq!(scopes.len(), 1, "{method} {path}: one scope, whatever the credential: {scopes:?}");
            let scope = scopes.into_iter().next().expect("scope");
            assert!(gateway::SCOPES.contains(&scope.as_str()), "{method} {path}: unknown scope {scope}");
            documented.insert((method.to_uppercase(), path.clone(), scope));
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if !status.starts_with('2') {
                    assert!(
                        response["content"]["application/problem+json"]["schema"]["$ref"]
                            == "#/components/schemas/Problem",
                        "{method} {path} {status} is not a problem: {response}"
                    );
                }
            }
        }
    }
    documented
}

/// Every route the gateway of `up` and `serve` answers with a scope.
fn gateway_table() -> Vec<Operation> {
    gateway::routes(erp_connect::forwarded_routes())
        .into_iter()
        .map(|route| (route.method.as_str().to_owned(), route.path.to_string(), route.scope.to_string()))
        .collect()
}

#[test]
fn the_gateways_route_table_is_the_documents_operations() {
    let table = gateway_table();
    let routed: BTreeSet<Operation> = table.iter().cloned().collect();
    assert_eq!(routed.len(), table.len(), "a route twice in the table: {table:?}");
    assert_eq!(routed, documented());
}

/// `path` with its `{id}` filled in as a client would.
fn concrete(path: &str) -> String {
    path.replace("{id}", "x_1")
}

async fn call(method: &str, url: &str, bearer: Option<&str>) -> Reply {
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(Full::default()).expect("request")).await
}

/// Through `up`, every documented operation is routed: without a
/// credential it is the gateway's 401, with one that has every scope it is
/// its handler's answer (to an empty request and an unknown id), never the
/// router's 404 or 405. What the document does not list is not routed.
#[tokio::test]
async fn every_documented_operation_and_nothing_else_is_routed() {
    // One anonymous call per operation: more than the lockout's 50 a
    // minute, which is not what this test is about.
    let app = harness::spawn_up_with(|config| config.gateway.auth_failures_per_minute = 0).await;
    let every_scope = gateway::SCOPES.join(" ");
    let token = token_for(app.data_dir.path(), "alice", Some("acme"), Some("alice@example.com"), &every_scope);
    for (method, path, _) in documented() {
        let url = app.url(&concrete(&path));
        let anonymous = call(&method, &url, None).await;
        harness::assert_problem(&anonymous, 401);
        assert!(anonymous.headers.contains_key("www-authenticate"), "{method} {path}");
        let reply = call(&method, &url, Some(&token)).await;
        assert!(
            reply.status != 405 && reply.body["detail"] != "no such route" && reply.status < 500,
            "{method} {path}: {} {}",
            reply.status,
            reply.text
        );
    }
    let documented_paths: BTreeSet<String> = documented().into_iter().map(|(_, path, _)| path).collect();
    for (method, path, status) in [
        ("GET", "/web/v1/orders/x_1/lines", 404),
        ("GET", "/ops/v1/reports", 404),
        ("GET", "/partner/v2/orders", 404),
        ("DELETE", "/web/v1/orders/x_1", 405),
        ("GET", "/partner/v1/orders/x_1/cancel", 405),
    ] {
        let template = path.replace("x_1", "{id}");
        assert_eq!(documented_paths.contains(&template), status == 405, "{path}: the case is what it says");
        let reply = call(method, &app.url(path), Some(&token)).await;
        harness::assert_problem(&reply, status);
    }
    app.stop_all().await;
}

#[tokio::test]
async fn the_document_and_the_reference_page_are_public_and_every_answer_has_security_headers() {
    for app in [spawn_up().await, spawn_serve().await] {
        let doc = get(&app.url("/openapi.json"), None).await;
        assert_eq!(doc.status, 200, "{}", doc.text);
        assert_eq!(doc.headers["content-type"], "application/json");
        let paths: BTreeSet<String> = gateway_table().into_iter().map(|(_, path, _)| path).collect();
        assert_eq!(doc.body["paths"].as_object().map(|p| p.len()), Some(paths.len()), "{}", doc.text);
        let page = get(&app.url("/docs"), None).await;
        assert_eq!(page.status, 200);
        assert!(page.headers["content-type"].to_str().is_ok_and(|t| t.starts_with("text/html")));
        assert!(page.headers["content-security-policy"].to_str().is_ok_and(|p| p.starts_with("default-src 'none'")));
        for reply in [&doc, &page, &get(&app.url("/web/v1/orders"), None).await] {
            assert_eq!(reply.headers["x-content-type-options"], "nosniff", "{}", reply.text);
            assert_eq!(reply.headers["x-frame-options"], "DENY");
        }
        // Nothing is stored but what a client can revalidate by its ETag:
        // the document (public), successful reads (per user, tests/mobile.rs).
        assert_eq!(page.headers["cache-control"], "no-store");
        assert_eq!(get(&app.url("/web/v1/orders"), None).await.headers["cache-control"], "no-store");
        assert_eq!(doc.headers["cache-control"], "no-cache");
        assert!(doc.headers["etag"].to_str().is_ok_and(|t| t.starts_with("W/\"")), "{:?}", doc.headers);
        // Everything the page needs is in it: no script or style from elsewhere.
        assert!(page.text.contains("fetch(\"/openapi.json\")") && !page.text.contains("src=\"http"), "{}", page.text);
        // The events' contract is linked, and public like the API's.
        assert!(page.text.contains("href=\"/asyncapi.json\""), "{}", page.text);
        let events = get(&app.url("/asyncapi.json"), None).await;
        assert_eq!((events.status, &events.body["asyncapi"]), (200, &serde_json::json!("3.0.0")), "{}", events.text);
        app.stop_all().await;
    }
}
