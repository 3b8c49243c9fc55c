//! Deprecated operations (`[[gateway.deprecations]]`): their answers say so
//! with `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the
//! migration note, other operations' answers do not, and the gateway's
//! metrics count who still calls them.

mod harness;

use gateway::deprecation::Config as Deprecation;
use harness::{get, spawn_up_with};
use platform::metrics::parse;

const NOTE: &str = "https://docs.example/erp-connect/orders-v2";

fn deprecated(operation: &str, sunset: Option<&str>) -> Deprecation {
    Deprecation {
        operation: operation.into(),
        since: "2026-12-01T00:00:00Z".into(),
        sunset: sunset.map(Into::into),
        link: NOTE.into(),
    }
}

#[tokio::test]
async fn a_deprecated_operation_is_announced_on_every_answer_and_its_callers_are_counted() {
    let app = spawn_up_with(|config| {
        config.gateway.deprecations = vec![
            deprecated("GET /web/v1/orders", Some("2027-06-30T00:00:00Z")),
            deprecated("GET /partner/v1/orders", None),
        ];
    })
    .await;
    let user = harness::token_for(app.data_dir.path(), "zoe", None, None, "catalog:read orders:read");
    let partner = harness::token_for(app.data_dir.path(), "acme-bot", Some("acme"), None, "orders:read");

    let orders = get(&app.url("/web/v1/orders"), Some(&user)).await;
    assert_eq!(orders.status, 200, "{}", orders.text);
    assert_eq!(orders.headers["deprecation"], "@1796083200");
    assert_eq!(orders.headers["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
    assert_eq!(orders.headers["link"], format!("<{NOTE}>; rel=\"deprecation\"").as_str());
    // Refusals of a deprecated operation carry the notice too.
    let refused = get(&app.url("/partner/v1/orders?page_size=0"), Some(&partner)).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.headers["deprecation"], "@1796083200");
    assert!(refused.headers.get("sunset").is_none(), "no sunset decided");
    let partners = get(&app.url("/partner/v1/orders"), Some(&partner)).await;
    assert_eq!(partners.status, 200, "{}", partners.text);

    let products = get(&app.url("/web/v1/products"), Some(&user)).await;
    assert_eq!(products.status, 200, "{}", products.text);
    for header in ["deprecation", "sunset", "link"] {
        assert!(products.headers.get(header).is_none(), "{header} on an operation not deprecated");
    }

    let metrics = get(&app.url("/metrics"), None).await;
    let calls = |route: &str, consumer: &str| {
        parse(&metrics.text)
            .iter()
            .find(|s| {
                s.name == "erp_connect_deprecated_calls_total"
                    && s.label("route") == Some(route)
                    && s.label("consumer") == Some(consumer)
            })
            .map(|s| s.value)
    };
    assert_eq!(calls("GET /web/v1/orders", "users"), Some(1.0), "{}", metrics.text);
    assert_eq!(calls("GET /partner/v1/orders", "acme"), Some(2.0), "{}", metrics.text);
    app.stop_all().await;
}

#[test]
fn a_deprecation_naming_no_operation_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = harness::test_config(dir.path());
    config.gateway.deprecations = vec![deprecated("GET /web/v1/order", None)];
    let err = config.validate().expect_err("refused");
    assert!(err.to_string().contains("gateway.deprecations"), "{err}");
}
