//! The outbox holds events while NATS is unreachable and publishes them,
//! in order per order, once it is back; orders keep flowing meanwhile.
//!
//! NATS is reached through a fault proxy that holds every connection at
//! first (a blackhole: connected, never answered, as with a server that
//! does not answer), then passes them on. And a broker of the test's own
//! is SIGKILLed and stopped while events are published: each committed
//! event still reaches the stream exactly once.

mod harness;

use std::{collections::HashMap, time::Duration};

use erp_connect::serve::Target;
use erp_connect_proto::order_to_cash::v1::{
    self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
};
use futures_util::StreamExt;
use harness::{
    faults::{Fault, FaultProxy},
    quick_sagas, spawn_up_with,
};
use process_apis::order_to_cash::{outbox::BusKind, store::Store};
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_nats_is_down_then_go_out_in_order() {
    let nats = FaultProxy::start("127.0.0.1:4222".parse().expect("addr"));
    nats.set(Fault::Blackhole);
    let nats_addr = nats.addr();
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
    nats.set(Fault::Pass);
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

/// A NATS JetStream server of the test's own (the machine's stays up for
/// the other tests), its data in `store`, on a port it picks.
struct Nats {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Nats {
    /// Starts `nats-server` and reads its port from its own log line, so
    /// nothing binds a port for it or waits on a timer.
    fn start(store: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nats-server starts (Debian's nats-server package)");
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.split("Listening for client connections on ").nth(1).map(str::to_owned))
            .expect("nats-server names its port")
            .trim()
            .parse()
            .expect("host:port");
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, addr }
    }

    /// SIGKILL: no flush, no goodbye to clients.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM: the server's own orderly stop.
    fn stop(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("reaped");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Orders placed while the broker is killed and restarted under them.
const BROKER_ORDERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_is_on_the_stream_once_though_the_broker_is_killed_and_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("jetstream");
    let nats = Nats::start(&store_dir);
    let proxy = FaultProxy::start(nats.addr);
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let prefix = format!("broker_{run}.erp.events");
    let app = spawn_up_with(|config| {
        quick_sagas(config);
        config.process.events.bus = BusKind::Nats;
        config.process.events.nats_url = format!("nats://{}", proxy.addr());
        config.process.events.stream = "BROKER_FAULTS".into();
        config.process.events.subject_prefix = prefix.clone();
        config.process.events.poll_interval = Duration::from_millis(50);
    })
    .await;
    let orders = OrderToCashServiceClient::new(app.grpc_channel(Target::Process));
    let outbox = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.data_dir.path().join("process.db").display()))
        .await
        .expect("outbox");
    let published = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL")
            .fetch_one(&outbox)
            .await
            .expect("count")
    };

    // Orders flow while the broker dies twice: once SIGKILLed mid-publish,
    // once stopped in order; each time it comes back on its own store.
    let placing = tokio::spawn({
        let mut orders = orders.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..BROKER_ORDERS {
                let request = o2c::PlaceOrderRequest {
                    idempotency_key: format!("broker-{i}"),
                    tenant: "web".into(),
                    customer: Some(o2c::CustomerRef { external_id: "web:broker".into(), ..Default::default() }),
                    lines: vec![o2c::OrderLine { sku: "GADGET-2".into(), quantity: 1, ..Default::default() }],
                    payment: Some(Payment::CardToken("tok_visa".into())),
                    ..Default::default()
                };
                ids.push(orders.place_order(request).await.expect("accepted").into_inner().id);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            ids
        }
    });
    harness::until(Duration::from_secs(30), "events published before the kill", || async { published().await >= 10 })
        .await;
    let before_kill = published().await;
    nats.kill();
    let nats = Nats::start(&store_dir);
    proxy.set_upstream(nats.addr);
    harness::until(Duration::from_secs(30), "events published after the kill", || async {
        published().await >= before_kill + 20
    })
    .await;
    nats.stop();
    let nats = Nats::start(&store_dir);
    proxy.set_upstream(nats.addr);
    let ids = placing.await.expect("orders placed");
    for id in &ids {
        harness::until(Duration::from_secs(60), "each order paid", || {
            let (mut orders, id) = (orders.clone(), id.clone());
            async move {
                let order = orders
                    .get_order(o2c::GetOrderRequest { tenant: String::new(), order_id: id })
                    .await
                    .expect("order")
                    .into_inner();
                order.status() == OrderStatus::Paid
            }
        })
        .await;
    }
    harness::until(Duration::from_secs(60), "the outbox drains", || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&outbox)
            .await
            .expect("count")
            == 0
    })
    .await;

    // The audit: every committed event once on the stream, nothing else.
    let committed: Vec<String> =
        sqlx::query_scalar("SELECT id FROM outbox").fetch_all(&outbox).await.expect("outbox ids");
    let on_stream = harness::stream_message_ids(&format!("nats://{}", nats.addr), "BROKER_FAULTS").await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in &on_stream {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = committed.iter().filter(|id| !copies.contains_key(id.as_str())).collect();
    eprintln!(
        "{} orders, {} events committed, {} on the stream after a SIGKILL and a SIGTERM of the broker \
         ({before_kill} published before the kill)",
        ids.len(),
        committed.len(),
        on_stream.len()
    );
    assert!(twice.is_empty(), "events on the stream more than once: {twice:?}");
    assert!(missing.is_empty(), "committed events not on the stream: {missing:?}");
    assert_eq!(on_stream.len(), committed.len(), "nothing on the stream but the outbox's events");
    app.stop_all().await;
    drop(nats);
}
