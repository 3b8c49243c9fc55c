//! The OpenAPI document describes exactly the routes the gateway forwards,
//! each with the scope the gateway enforces, and every error as
//! problem+json.

use std::collections::BTreeSet;

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
        .map(|(method, path, scope)| (method.as_str().to_owned(), (*path).to_owned(), (*scope).to_owned()))
        .collect();
    assert_eq!(documented, routed);
}
