//! The OpenAPI document describes exactly the routes the gateway forwards,
//! each with the scope the gateway enforces, and every error as
//! problem+json.

mod harness;

use std::collections::BTreeSet;

use harness::{get, spawn_serve, spawn_up};

#[test]
fn every_gateway_route_is_documented_with_its_scope_and_nothing_else_is() {
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
            documented.insert((method.to_uppercase(), path.clone(), scopes.into_iter().next().expect("scope")));
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
    let routed: BTreeSet<(String, String, String)> = gateway::ROUTES
        .iter()
        .chain(gateway::KEY_ADMIN_ROUTES)
        .chain(gateway::OVERVIEW_ROUTES)
        .map(|(method, path, scope)| (method.as_str().to_owned(), (*path).to_owned(), (*scope).to_owned()))
        .collect();
    assert_eq!(documented, routed);
}

#[tokio::test]
async fn the_document_and_the_reference_page_are_public_and_every_answer_has_security_headers() {
    for app in [spawn_up().await, spawn_serve().await] {
        let doc = get(&app.url("/openapi.json"), None).await;
        assert_eq!(doc.status, 200, "{}", doc.text);
        assert_eq!(doc.headers["content-type"], "application/json");
        let paths: BTreeSet<&str> = gateway::ROUTES
            .iter()
            .chain(gateway::KEY_ADMIN_ROUTES)
            .chain(gateway::OVERVIEW_ROUTES)
            .map(|(_, path, _)| *path)
            .collect();
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
