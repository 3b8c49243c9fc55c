//! In `serve` mode the process tier admits a gRPC call only with a service
//! JWT for the audience `process-apis`; reflection and health stay open;
//! the experience tier presents its own token on every call, minted by the
//! dev identity provider or, in production, read from a file.

mod harness;

use std::{net::SocketAddr, path::Path, time::Duration};

use erp_connect::{config::Mode, serve::Target, service_auth::AUDIENCE};
use erp_connect_proto::catalog::v1::{ListCatalogItemsRequest, catalog_service_client::CatalogServiceClient};
use gateway::dev_idp::{DevIdp, TokenRequest};
use harness::{Running, get, spawn_serve, spawn_serve_with, with_token};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

fn process_addr(app: &Running) -> SocketAddr {
    app.grpc.iter().find(|(t, _)| *t == Target::Process).map(|(_, a)| *a).expect("process tier")
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy()
}

fn mint(data_dir: &Path, audience: &str) -> String {
    DevIdp::load_or_create(data_dir)
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "internal-team".into(),
            scope: "catalog:read".into(),
            audience: audience.into(),
            tenant: None,
            email: None,
            ttl: Duration::from_secs(300),
        })
        .expect("mint")
}

/// `ListCatalogItems` with `authorization` set to `header`, if any.
async fn list_catalog(addr: SocketAddr, header: Option<&str>) -> Result<usize, tonic::Status> {
    let mut request = tonic::Request::new(ListCatalogItemsRequest { page_size: 3, page_token: String::new() });
    if let Some(header) = header {
        request.metadata_mut().insert("authorization", header.parse().expect("header"));
    }
    CatalogServiceClient::new(channel(addr)).list_catalog_items(request).await.map(|page| page.into_inner().items.len())
}

fn assert_unauthenticated(result: Result<usize, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(
        matches!(
            status.message(),
            "invalid service token" | "a service token is required: authorization: Bearer <JWT> with aud process-apis"
        ),
        "{what}: no internal detail in {status:?}"
    );
}

#[tokio::test]
async fn the_process_tier_refuses_calls_without_a_valid_service_token() {
    let app = spawn_serve().await;
    let addr = process_addr(&app);
    assert_unauthenticated(list_catalog(addr, None).await, "no token");
    assert_unauthenticated(list_catalog(addr, Some("Bearer")).await, "an empty bearer");
    assert_unauthenticated(list_catalog(addr, Some("Bearer not.a.jwt")).await, "garbage");
    let users_token = mint(app.data_dir.path(), "erp-connect");
    assert_unauthenticated(list_catalog(addr, Some(&format!("Bearer {users_token}"))).await, "the HTTP APIs' audience");
    let stranger = tempfile::tempdir().expect("tempdir");
    let foreign = mint(stranger.path(), AUDIENCE);
    assert_unauthenticated(list_catalog(addr, Some(&format!("Bearer {foreign}"))).await, "an untrusted signer");
    let service_token = mint(app.data_dir.path(), AUDIENCE);
    assert_eq!(list_catalog(addr, Some(&format!("Bearer {service_token}"))).await.expect("a service token"), 3);
    let via_harness = CatalogServiceClient::new(with_token(channel(addr), &app.service_token()))
        .list_catalog_items(ListCatalogItemsRequest { page_size: 1, page_token: String::new() })
        .await
        .expect("the harness's service token");
    assert_eq!(via_harness.into_inner().items.len(), 1);
    app.stop_all().await;
}

#[tokio::test]
async fn reflection_and_health_need_no_token() {
    let app = spawn_serve().await;
    let ch = channel(process_addr(&app));
    let health = HealthClient::new(ch.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health without a token")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "order_to_cash.v1.OrderToCashService"), "{list:?}");
    // v1alpha too (Python's grpcio-reflection, older grpcurl): also open.
    use tonic_reflection::pb::v1alpha;
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "order_to_cash.v1.OrderToCashService".into(),
        )),
    };
    let mut replies = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(process_addr(&app)))
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha without a token")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        reply.message_response
    else {
        panic!("unexpected reflection reply {reply:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty(), "the file describing the service");
    app.stop_all().await;
}

#[tokio::test]
async fn the_experience_tier_presents_its_minted_token() {
    let app = spawn_serve().await;
    let reply = get(&app.url("/web/v1/products?page_size=2"), Some(&app.token("catalog:read"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["products"].as_array().map(Vec::len), Some(2), "{}", reply.text);
    app.stop_all().await;
}

/// Production: only configured issuers are trusted, and the experience
/// tier's token comes from a file, as a Kubernetes projected token would.
/// The dev identity provider's key stands in for a real provider here.
#[tokio::test]
async fn in_production_configured_issuers_sign_and_the_token_comes_from_a_file() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let idp = DevIdp::load_or_create(secrets.path()).expect("idp");
    let jwks_file = secrets.path().join("jwks.json");
    std::fs::write(&jwks_file, idp.jwks().to_string()).expect("jwks written");
    let token_file = secrets.path().join("process-apis.token");
    std::fs::write(&token_file, format!("{}\n", mint(secrets.path(), AUDIENCE))).expect("token written");
    let issuer = serde_json::json!({"issuer": gateway::dev_idp::ISSUER, "jwks_file": jwks_file});
    let app = spawn_serve_with(|config| {
        config.mode = Mode::Production;
        config.internal.principal_secret = Some("a-test-secret-of-at-least-32-bytes-long".into());
        config.webhooks.secret_key = Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
        config.gateway.issuers = vec![serde_json::from_value(issuer.clone()).expect("gateway issuer")];
        config.process.service_issuers = vec![serde_json::from_value(issuer.clone()).expect("service issuer")];
        config.experience.service_token_file = Some(token_file.clone());
    })
    .await;

    let users_token = mint(secrets.path(), "erp-connect");
    let reply = get(&app.url("/web/v1/products?page_size=2"), Some(&users_token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let addr = process_addr(&app);
    assert_unauthenticated(list_catalog(addr, Some(&format!("Bearer {users_token}"))).await, "a user's token");
    let own_dev_idp = app.service_token();
    assert_unauthenticated(list_catalog(addr, Some(&format!("Bearer {own_dev_idp}"))).await, "the dev IdP");
    let service_token = std::fs::read_to_string(&token_file).expect("token");
    assert_eq!(list_catalog(addr, Some(&format!("Bearer {}", service_token.trim()))).await.expect("accepted"), 3);
    app.stop_all().await;
}

#[test]
fn production_without_a_service_issuer_exits_64_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = DevIdp::load_or_create(dir.path()).expect("idp");
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, idp.jwks().to_string()).expect("jwks written");
    let config = dir.path().join("erp-connect.toml");
    let toml = format!(
        "mode = \"production\"\ndata_dir = {data:?}\n\
         [[gateway.issuers]]\nissuer = \"https://idp.example.com/\"\njwks_file = {jwks:?}\n",
        data = dir.path().display().to_string(),
        jwks = jwks_file.display().to_string(),
    );
    std::fs::write(&config, toml).expect("config written");
    for (target, key) in [("process", "process.service_issuers"), ("experience", "experience.service_token_file")] {
        let out = std::process::Command::new(harness::BIN)
            .args(["serve", "--target", target, "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("ERP_CONNECT__INTERNAL__PRINCIPAL_SECRET", "a-test-secret-of-at-least-32-bytes-long")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{target}: {stderr}");
        assert!(stderr.contains(key), "{target}: {stderr}");
    }
}

#[tokio::test]
async fn with_a_subject_allow_list_other_services_get_permission_denied() {
    let app = spawn_serve_with(|config| {
        config.process.service_subjects = vec![erp_connect::service_auth::EXPERIENCE_SUBJECT.to_owned()];
    })
    .await;
    let other_service = mint(app.data_dir.path(), AUDIENCE);
    let status = list_catalog(process_addr(&app), Some(&format!("Bearer {other_service}")))
        .await
        .expect_err("a subject outside the list");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "this service may not call the process APIs");
    let reply = get(&app.url("/web/v1/products?page_size=2"), Some(&app.token("catalog:read"))).await;
    assert_eq!(reply.status, 200, "the experience tier is on the list: {}", reply.text);
    app.stop_all().await;
}
