//! A customer the ERP has never seen is created once, even when the
//! process tier dies between the ERP's create and the saga's record of
//! it: the run's own Tryton sits behind a TCP proxy that lets the
//! `party.party.create` call through and withholds Tryton's answer; the
//! process tier (the real binary) is then killed with SIGKILL, started
//! again, and the order, an on-account partner order that needs the new
//! party's credit limit, goes on to be invoiced in Tryton with one party
//! once the dead tier's lease on it (8 s here) has run out.
//!
//! The proxy is this test's own fault injection; Tryton, the system tier
//! and the process tier are the real ones.

mod harness;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use erp_connect_proto::order_to_cash::v1::{
    self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
};
use harness::{ChildTier, ChildrensSystem, with_token};
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// Forwards connections to `upstream`; on the connection that sends
/// `party.party.create`, reads Tryton's answer and keeps it from the
/// caller (the party exists, nobody hears of it), then says so on `held`.
async fn proxy(listener: TcpListener, upstream: String, held: Arc<Notify>, holding: Arc<AtomicBool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { return };
        let (upstream, held, holding) = (upstream.clone(), held.clone(), holding.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else { return };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let creating = Arc::new(AtomicBool::new(false));
            let seen = creating.clone();
            let to_server = tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    const CREATE: &[u8] = b"model.party.party.create";
                    if buf[..n].windows(CREATE.len()).any(|w| w == CREATE) {
                        seen.store(true, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if creating.load(Ordering::SeqCst) && !holding.swap(true, Ordering::SeqCst) {
                    // Tryton created the party and answered: withhold it,
                    // and this connection's traffic from now on.
                    held.notify_one();
                    std::future::pending::<()>().await;
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            to_server.abort();
        });
    }
}

#[tokio::test]
async fn a_new_customer_is_created_once_when_the_process_tier_dies_between_create_and_record() {
    harness::leaks::watch_logs();
    let server = tokio::task::spawn_blocking(|| tryton::test_server::config("erp_once")).await.expect("tryton set up");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    let (held, holding) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
    tokio::spawn(proxy(listener, server.url.trim_start_matches("http://").to_owned(), held.clone(), holding.clone()));
    let mut behind_proxy = server.clone();
    behind_proxy.url = proxy_url;
    // Short ERP deadlines: the withheld answer fails its attempt in 5 s.
    behind_proxy.timeout = Duration::from_secs(5);
    let system = ChildrensSystem::start_with(
        move |config| {
            config.erp.backend = BackendKind::Tryton;
            config.erp.tryton = Some(behind_proxy);
        },
        "system_timeout = \"20s\"",
        // Longer than a Tryton step, so that one replica runs a saga at a time.
        "8s",
        "",
    )
    .await;

    let tenant = format!("once-{}", ulid::Ulid::new().to_string().to_lowercase());
    let external_id = format!("{tenant}:buyer");
    let request = o2c::PlaceOrderRequest {
        idempotency_key: "once-1".into(),
        tenant: tenant.clone(),
        customer: Some(o2c::CustomerRef { external_id: external_id.clone(), ..Default::default() }),
        lines: vec![o2c::OrderLine { sku: "WIDGET-1".into(), quantity: 2, ..Default::default() }],
        payment: Some(Payment::OnAccount(true)),
        ship_to: Some(o2c::ShipTo {
            street: "Kai 7".into(),
            city: "Bremen".into(),
            postal_code: "28195".into(),
            country: "DE".into(),
        }),
        ..Default::default()
    };
    let config_file = system.config_file.clone();
    let tier = tokio::task::spawn_blocking(move || ChildTier::process(&config_file)).await.expect("started");
    let client = |addr: std::net::SocketAddr| {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        OrderToCashServiceClient::new(with_token(channel, &system.service_token))
    };
    let order = client(tier.addr).place_order(request).await.expect("accepted").into_inner();
    assert_eq!(order.status(), OrderStatus::Accepted);

    // Tryton has created the party; the saga has not heard of it. Die now.
    tokio::time::timeout(Duration::from_secs(120), held.notified()).await.expect("the create reached Tryton");
    tokio::task::spawn_blocking(move || tier.kill()).await.expect("killed");
    let config_file = system.config_file.clone();
    let tier = tokio::task::spawn_blocking(move || ChildTier::process(&config_file)).await.expect("restarted");
    // The dead tier's lease on the saga runs out before the new one resumes it.

    let mut orders = client(tier.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let invoiced = loop {
        let now = orders
            .get_order(o2c::GetOrderRequest { tenant: tenant.clone(), order_id: order.id.clone() })
            .await
            .expect("order")
            .into_inner();
        match now.status() {
            OrderStatus::Invoiced | OrderStatus::Paid => break now,
            OrderStatus::Rejected | OrderStatus::Cancelled => {
                panic!("the order ended: {} {:?}", now.reason, now.timeline)
            }
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "not invoiced in time: {:?}", now.timeline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(invoiced.timeline.iter().any(|t| t.step == "customer_found"), "{:?}", invoiced.timeline);

    let parties = tryton::test_server::rpc_client(&server)
        .call("model.party.party.search", vec![json!([["code", "=", external_id]]), json!(0), json!(10), Value::Null])
        .await
        .expect("search");
    assert_eq!(parties.as_array().map(Vec::len), Some(1), "one party for {external_id}: {parties}");
    tier.kill();
    system.stop().await;
}
