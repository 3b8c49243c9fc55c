//! Two process-tier replicas (the real binary) share one saga store on
//! PostgreSQL. Orders placed on one replica are finished by the other after
//! the first is killed with SIGKILL: its leases expire and the survivor
//! claims the sagas (`FOR UPDATE SKIP LOCKED`), acting once per step.
//!
//! Each run creates its own database and drops it afterwards.

mod harness;

use std::{collections::HashMap, time::Duration};

use erp_connect_proto::{
    order_to_cash::v1::{
        self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
    },
    payments::v1::{self as pay, payment_service_client::PaymentServiceClient},
};
use harness::{ChildTier, ChildrensSystem, ProcessChannel, with_token};
use tonic::transport::Channel;

fn client(addr: std::net::SocketAddr, token: &str) -> OrderToCashServiceClient<ProcessChannel> {
    OrderToCashServiceClient::new(with_token(
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy(),
        token,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_sagas_are_finished_by_another_acting_once_per_step() {
    let database = platform::database::ScratchPostgres::create("o2c_replicas").await;
    let system = ChildrensSystem::start(&format!("database_url = \"{}\"", database.url()), "").await;
    let (system_addr, config_file) = (system.addr, system.config_file.clone());
    let (first, second) = (ChildTier::process(&config_file), ChildTier::process(&config_file));

    // Orders go to the first replica, which dies with its sagas in flight.
    let mut orders = client(first.addr, &system.service_token);
    let mut ids = Vec::new();
    for i in 0..20 {
        let token = if i % 2 == 0 { "tok_visa" } else { "tok_processingError" };
        let request = o2c::PlaceOrderRequest {
            idempotency_key: format!("replica-{i}"),
            tenant: "web".into(),
            customer: Some(o2c::CustomerRef { external_id: "web:replicas".into(), ..Default::default() }),
            lines: vec![o2c::OrderLine { sku: "GADGET-2".into(), quantity: 1, ..Default::default() }],
            payment: Some(Payment::CardToken(token.into())),
            ..Default::default()
        };
        ids.push(orders.place_order(request).await.expect("accepted").into_inner().id);
    }
    first.kill();

    // The survivor sees the same orders (one store) and finishes them.
    let mut survivor = client(second.addr, &system.service_token);
    let mut done: HashMap<String, o2c::Order> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.len() < ids.len() {
        assert!(tokio::time::Instant::now() < deadline, "{} orders never got paid", ids.len() - done.len());
        for id in ids.iter().filter(|id| !done.contains_key(*id)).cloned().collect::<Vec<_>>() {
            let order = survivor
                .get_order(o2c::GetOrderRequest { tenant: "web".into(), order_id: id.clone() })
                .await
                .expect("order")
                .into_inner();
            assert!(!matches!(order.status(), OrderStatus::Rejected | OrderStatus::Cancelled), "{order:?}");
            if order.status() == OrderStatus::Paid {
                done.insert(id, order);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut payments =
        PaymentServiceClient::new(Channel::from_shared(format!("http://{system_addr}")).expect("uri").connect_lazy());
    for order in done.values() {
        // One authorization, one capture, one invoice payment: whichever
        // replica ran a step, it ran once.
        for step in ["sales_order_created", "confirmed", "payment_authorized", "payment_captured", "invoiced", "paid"] {
            let times = order.timeline.iter().filter(|t| t.step == step).count();
            assert_eq!(times, 1, "order {} has {step} {times} times: {:?}", order.id, order.timeline);
        }
        let payment = payments
            .get_payment(pay::GetPaymentRequest { payment_id: order.payment_id.clone() })
            .await
            .expect("payment")
            .into_inner();
        assert_eq!(payment.captured_amount, order.total, "{payment:?}");
    }

    second.kill();
    system.stop().await;
    drop(database);
}
