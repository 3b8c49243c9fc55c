//! The outbox holds events while NATS is unreachable and publishes them,
//! in order per order, once it is back; orders keep flowing meanwhile.
//!
//! NATS is reached through a loopback forwarder that the test keeps closed
//! at first (connections wait in its backlog, as with a server that does
//! not answer), then opens.

mod harness;

use std::{collections::HashMap, time::Duration};

use erp_connect::serve::Target;
use erp_connect_proto::order_to_cash::v1::{
    self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
};
use futures_util::StreamExt;
use harness::{quick_sagas, spawn_up_with};
use process_apis::order_to_cash::{outbox::BusKind, store::Store};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

/// Accepts on `listener` only once `open` fires, then pipes each
/// connection to the real NATS server.
fn forwarder(listener: TcpListener, open: tokio::sync::oneshot::Receiver<()>) {
    tokio::spawn(async move {
        if open.await.is_err() {
            return;
        }
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:4222").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_nats_is_down_then_go_out_in_order() {
    let nats_door = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let nats_addr = nats_door.local_addr().expect("addr");
    let (open, opened) = tokio::sync::oneshot::channel();
    forwarder(nats_door, opened);
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let (stream, prefix) = (format!("OUTBOX_{run}"), format!("outbox_{run}.erp.events"));
    let app = spawn_up_with(|config| {
        quick_sagas(config);
        config.process.events.bus = BusKind::Nats;
        config.process.events.nats_url = format!("nats://{nats_addr}");
        config.process.events.stream = stream.clone();
        config.process.events.subject_prefix = prefix.clone();
        config.process.events.poll_interval = Duration::from_millis(50);
    })
    .await;
    let addr = app.grpc.iter().find(|(t, _)| *t == Target::Process).map(|(_, a)| *a).expect("process");
    let mut orders =
        OrderToCashServiceClient::new(Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy());

    // With NATS unreachable, orders still complete their sagas.
    let mut ids = Vec::new();
    for i in 0..5 {
        let request = o2c::PlaceOrderRequest {
            idempotency_key: format!("outbox-{i}"),
            tenant: "web".into(),
            customer: Some(o2c::CustomerRef { external_id: "web:outbox".into(), ..Default::default() }),
            lines: vec![o2c::OrderLine { sku: "GADGET-2".into(), quantity: 1, ..Default::default() }],
            payment: Some(Payment::CardToken("tok_visa".into())),
            ..Default::default()
        };
        ids.push(orders.place_order(request).await.expect("accepted").into_inner().id);
    }
    for id in &ids {
        let mut watch = orders
            .watch_order(o2c::WatchOrderRequest { tenant: "web".into(), order_id: id.clone() })
            .await
            .expect("watch")
            .into_inner();
        while let Some(order) = watch.next().await {
            if order.expect("order").status() == OrderStatus::Paid {
                break;
            }
        }
    }
    let store =
        Store::open(&format!("sqlite://{}", app.data_dir.path().join("process.db").display())).await.expect("store");
    // The saga's own events; the change feed adds `invoice.paid` when it
    // sees the ERP invoice paid, and catalogue events (`product.updated`,
    // no order), whenever that is.
    let from_saga =
        |e: &process_apis::order_to_cash::store::OutboxEvent| !e.order_id.is_empty() && e.event_type != "invoice.paid";
    let waiting: Vec<_> = store.unpublished(1000).await.expect("outbox").into_iter().filter(from_saga).collect();
    // accepted, confirmed, payment.captured, invoice.issued, paid: 5 each.
    assert_eq!(waiting.len(), 5 * 5, "every order's events wait");

    // NATS comes back: the outbox drains, each order's events in order.
    open.send(()).expect("forwarder waiting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.oldest_unpublished().await.expect("outbox").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jetstream = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.expect("nats"));
    let consumer = jetstream
        .create_consumer_on_stream(async_nats::jetstream::consumer::pull::OrderedConfig::default(), stream.as_str())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut received = 0;
    while received < waiting.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message")
            .expect("stream open")
            .expect("message");
        let event: serde_json::Value = serde_json::from_slice(&message.payload).expect("json event");
        assert_eq!(event["schema_version"], 1);
        if event["type"] == "invoice.paid" || event["order_id"].is_null() {
            continue;
        }
        received += 1;
        assert_eq!(message.subject.as_str(), format!("{prefix}.{}", event["type"].as_str().expect("type")));
        let order = event["order_id"].as_str().expect("order id").to_owned();
        seen.entry(order).or_default().push(event["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let written: Vec<String> =
            store.events_of(id).await.expect("events").into_iter().filter(from_saga).map(|e| e.id).collect();
        assert_eq!(seen[id], written, "order {id}: published in the order written");
    }
    jetstream.delete_stream(stream.as_str()).await.expect("stream removed");
    app.stop_all().await;
}
