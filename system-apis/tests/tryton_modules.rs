//! What the connector learns about Tryton's modules, against real Tryton
//! servers of this run (set up by `deploy/tryton/setup.sh`):
//! - a database without a module erp-connect needs (only `party`, snapshot
//!   `erp_no_sale`) is refused when the system tier starts, with an error
//!   naming the module, instead of a tier that starts and fails every order;
//! - a module activated while erp-connect runs (on a `sale`-only database,
//!   snapshot `erp_sale_only`) is used once the connector logs in again.

use erp_connect_proto::erp::v1::{
    GetCapabilitiesRequest, ListProductsRequest, capabilities_service_client::CapabilitiesServiceClient,
    product_service_client::ProductServiceClient,
};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, Config, Error, backend::tryton::test_server};

#[tokio::test]
async fn a_tryton_without_sale_is_refused_at_start_naming_the_module() {
    let server =
        tokio::task::spawn_blocking(|| test_server::without_sale_config("erp_no_sale")).await.expect("tryton set up");
    let config = Config { backend: BackendKind::Tryton, tryton: Some(server), ..Config::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = system_apis::SystemTier::start(&config, &Default::default(), &Default::default(), dir.path())
        .await
        .err()
        .expect("the tier does not start");
    let system_apis::StartError::Erp(Error::FailedPrecondition { reason, subject, message }) = &refused else {
        panic!("not a missing-module refusal: {refused}")
    };
    assert_eq!((*reason, subject.as_str()), ("MISSING_MODULE", "sale"), "{refused}");
    assert!(message.contains("no activated module sale"), "{message}");
    assert!(refused.to_string().contains("sale"), "the error a user sees names it: {refused}");
}

#[tokio::test]
async fn a_module_activated_in_tryton_is_used_after_the_next_login() {
    let server =
        tokio::task::spawn_blocking(|| test_server::sale_only_config("erp_rediscover")).await.expect("tryton set up");
    let config = Config { backend: BackendKind::Tryton, tryton: Some(server.clone()), ..Config::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = system_apis::SystemTier::start(&config, &Default::default(), &Default::default(), dir.path())
        .await
        .expect("start");
    let channel = platform::channel::in_process(tier.routes());
    let mut capabilities = CapabilitiesServiceClient::new(channel.clone());
    let mut products = ProductServiceClient::new(channel);
    let caps = capabilities.get_capabilities(GetCapabilitiesRequest {}).await.expect("caps").into_inner();
    assert!(!caps.credit_limits, "a sale-only database: {caps:?}");

    // An administrator activates sale_credit_limit, as Tryton's client does
    // (Modules, Activate, Perform pending activation).
    let rpc = test_server::rpc_client(&server);
    let module = rpc
        .call(
            "model.ir.module.search",
            vec![json!([["name", "=", "sale_credit_limit"]]), json!(0), json!(1), Value::Null],
        )
        .await
        .expect("module");
    rpc.call("model.ir.module.activate", vec![module]).await.expect("mark for activation");
    let wizard = rpc.call("wizard.ir.module.activate_upgrade.create", vec![]).await.expect("wizard");
    rpc.call("wizard.ir.module.activate_upgrade.execute", vec![wizard[0].clone(), json!({}), json!("upgrade")])
        .await
        .expect("activate");

    // Discovery runs at login: until the session ends, nothing changes.
    let caps = capabilities.get_capabilities(GetCapabilitiesRequest {}).await.expect("caps").into_inner();
    assert!(!caps.credit_limits, "{caps:?}");
    let ended = server.clone();
    tokio::task::spawn_blocking(move || test_server::end_sessions(&ended)).await.expect("sessions ended");
    // The next call logs in again, and the connector looks again.
    products.list_products(ListProductsRequest::default()).await.expect("products after a new login");
    let caps = capabilities.get_capabilities(GetCapabilitiesRequest {}).await.expect("caps").into_inner();
    assert!(caps.credit_limits, "{caps:?}");
    assert!(caps.modules.iter().any(|m| m == "sale_credit_limit"), "{caps:?}");
}
