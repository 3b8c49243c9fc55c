//! Every gRPC tier answers `grpc.health.v1` and lists its services through
//! gRPC reflection (`v1` and `v1alpha` alike), and the process APIs are callable directly by internal
//! teams, in both run modes; the system tier's `crm.v1` answers over the
//! network in `serve` mode.

mod harness;

use erp_connect_proto::catalog::v1::{ListCatalogItemsRequest, catalog_service_client::CatalogServiceClient};
use harness::{Running, spawn_serve, spawn_up};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

async fn listed_services(ch: Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    match reply.message_response.expect("response") {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection reply {other:?}"),
    }
}

/// The services listed by reflection `v1alpha`, which older grpcurl,
/// Python's grpcio-reflection and GUI clients speak.
async fn listed_services_v1alpha(ch: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    match reply.message_response.expect("response") {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection reply {other:?}"),
    }
}

async fn check_tiers(app: &Running) {
    for (target, addr) in &app.grpc {
        let ch = channel(*addr).await;
        let health = HealthClient::new(ch.clone())
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32, "{target:?}");
        let services = listed_services(ch.clone()).await;
        let expected: &[&str] = match target {
            erp_connect::serve::Target::Process => {
                &["catalog.v1.CatalogService", "audit.v1.AuditService", "grpc.health.v1.Health"]
            }
            _ => &["erp.v1.ProductService", "erp.v1.InventoryService", "crm.v1.CrmService", "grpc.health.v1.Health"],
        };
        for name in expected.iter().chain(&["grpc.reflection.v1.ServerReflection"]) {
            assert!(services.iter().any(|s| s == name), "{target:?} lists {services:?}");
        }
        let alpha = listed_services_v1alpha(ch).await;
        assert_eq!(alpha, services, "{target:?}: both reflection versions list the same services");
    }
}

#[tokio::test]
async fn up_mode_process_apis_answer_health_reflection_and_calls() {
    let app = spawn_up().await;
    check_tiers(&app).await;
    let (_, addr) = app.grpc[0];
    let page = CatalogServiceClient::new(channel(addr).await)
        .list_catalog_items(ListCatalogItemsRequest { page_size: 3, page_token: String::new() })
        .await
        .expect("catalog call")
        .into_inner();
    assert_eq!(page.items.len(), 3);
    assert!(!page.next_page_token.is_empty());
    app.stop_all().await;
}

#[tokio::test]
async fn serve_mode_grpc_tiers_answer_health_and_reflection() {
    let app = spawn_serve().await;
    check_tiers(&app).await;
    app.stop_all().await;
}

#[tokio::test]
async fn serve_mode_system_tier_serves_crm_v1() {
    use erp_connect_proto::crm::v1::{
        CreateCustomerRequest, FindCustomersRequest, ListChangesRequest, crm_service_client::CrmServiceClient,
        find_customers_request::Key,
    };
    let app = spawn_serve().await;
    let (_, addr) = app.grpc.iter().find(|(t, _)| *t == erp_connect::serve::Target::System).expect("system tier");
    let mut crm = CrmServiceClient::new(channel(*addr).await);
    let created = crm
        .create_customer(CreateCustomerRequest {
            idempotency_key: "grpc-crm-1".into(),
            name: "Over the wire".into(),
            email: "Wire@Example.com".into(),
            vat_id: "de 999 888 777".into(),
            origin: "tests/grpc.rs".into(),
            ..Default::default()
        })
        .await
        .expect("create over gRPC")
        .into_inner()
        .customer
        .expect("a customer");
    assert_eq!((created.vat_id.as_str(), created.version), ("DE999888777", 1));
    let found = crm
        .find_customers(FindCustomersRequest { key: Some(Key::Email("wire@example.com".into())) })
        .await
        .expect("find")
        .into_inner()
        .customers;
    assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [created.id.as_str()]);
    let feed = crm.list_changes(ListChangesRequest::default()).await.expect("changes").into_inner();
    assert!(feed.changes.iter().any(|c| c.customer_id == created.id && c.origin == "tests/grpc.rs"), "{feed:?}");
    app.stop_all().await;
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_with_field_details() {
    use tonic_types::StatusExt;
    let app = spawn_up().await;
    let (_, addr) = app.grpc[0];
    let status = CatalogServiceClient::new(channel(addr).await)
        .list_catalog_items(ListCatalogItemsRequest { page_size: -5, page_token: String::new() })
        .await
        .expect_err("negative page size");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("bad request details").field_violations;
    assert_eq!(violations[0].field, "page_size");
    app.stop_all().await;
}
