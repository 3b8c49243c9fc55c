//! Crash safety of order-to-cash: the process tier (the real binary, in
//! `serve` mode, events to NATS JetStream) is killed with SIGKILL at random
//! moments while orders are in flight, and restarted. Afterwards every
//! order ends in a terminal state, `erp-connect reconcile` exits 0, no
//! payment is captured twice, every event is in the outbox and on the
//! stream at least once, and the customers the orders bring (new to the
//! ERP, two orders each) are each created once, no order refused for it.

mod harness;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    process::Command,
    time::Duration,
};

use erp_connect_proto::order_to_cash::v1::{
    self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
};
use futures_util::StreamExt;
use harness::{BIN, ChildTier, ChildrensSystem, ProcessChannel, with_token};
use process_apis::order_to_cash::store::Store;
use tonic::transport::Channel;

/// Orders placed while the process tier is being killed.
const ORDERS: usize = 60;
/// SIGKILLs while they are in flight.
const KILLS: usize = 4;

/// PlaceOrder calls that found the tier down, for the test's log.
static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn random_below(n: u64) -> u64 {
    getrandom::u64().expect("randomness") % n
}

async fn client(addr: SocketAddr, token: &str) -> OrderToCashServiceClient<ProcessChannel> {
    OrderToCashServiceClient::new(with_token(
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy(),
        token,
    ))
}

/// Like a client that keeps its idempotency key: retries until the
/// process tier (being killed meanwhile) answers.
async fn place(
    addr: &tokio::sync::watch::Receiver<SocketAddr>,
    token: &str,
    request: o2c::PlaceOrderRequest,
) -> o2c::Order {
    for _ in 0..600 {
        let mut orders = client(*addr.borrow(), token).await;
        match orders.place_order(request.clone()).await {
            Ok(order) => return order.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("order refused: {status}"),
        }
    }
    panic!("the process tier never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_process_tier_loses_no_order_and_charges_nobody_twice() {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let (stream, prefix) = (format!("CRASH_{run}"), format!("crash_{run}.erp.events"));
    // The system tier stays up in this process: the ERP and the payment
    // ledger are what must not see a side effect twice.
    let system = ChildrensSystem::start(
        "",
        &format!(
            "[process.events]\nbus = \"nats\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n\
             poll_interval = \"50ms\""
        ),
    )
    .await;
    let (system_addr, config_file) = (system.addr, system.config_file.clone());

    // Place the orders while a killer restarts the tier at random moments,
    // each once a saga holds its lease (a step under way): the kill lands
    // mid-step, which the count of leases just before it shows. The orders
    // come in waves, one per life of the tier, each spread over a second
    // and let go only once the kill before it is done, so every kill finds
    // work in flight however fast the sagas run on this machine.
    let tier = ChildTier::process(&config_file);
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(tier.addr);
    let (kills_tx, kills_rx) = tokio::sync::watch::channel(0usize);
    let sagas = sqlx::SqlitePool::connect(&format!("sqlite://{}", system.data_dir.path().join("process.db").display()))
        .await
        .expect("saga store");
    let killer = tokio::spawn({
        let config_file = config_file.clone();
        async move {
            let mut tier = tier;
            let mut mid_step = Vec::new();
            // The leases of a killed tier outlive it (until they lapse):
            // only a lease of the tier now running is a step under way.
            let mut dead_owners = HashSet::new();
            for kill in 1..=KILLS {
                tokio::time::sleep(Duration::from_millis(random_below(300))).await;
                // A step holds its lease for milliseconds: look often.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                let leased = loop {
                    let now = i64::try_from(
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis(),
                    )
                    .expect("ms");
                    let owners = sqlx::query_scalar::<_, String>(
                        "SELECT COALESCE(lease_owner, '') FROM orders WHERE lease_until > ? \
                         AND status NOT IN ('completed', 'rejected', 'cancelled')",
                    )
                    .bind(now)
                    .fetch_all(&sagas)
                    .await
                    .expect("leases");
                    let live: Vec<String> = owners.into_iter().filter(|o| !dead_owners.contains(o)).collect();
                    if !live.is_empty() {
                        break live;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "not in 20s: a saga in a step to kill");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                mid_step.push(leased.len());
                dead_owners.extend(leased);
                tier.kill();
                tier = tokio::task::spawn_blocking({
                    let config_file = config_file.clone();
                    move || ChildTier::process(&config_file)
                })
                .await
                .expect("restart");
                addr_tx.send(tier.addr).expect("address watched");
                kills_tx.send(kill).expect("kills watched");
            }
            (tier, mid_step)
        }
    });
    let placing = (0..ORDERS).map(|i| {
        let addr = addr_rx.clone();
        let mut kills = kills_rx.clone();
        let token = system.service_token.clone();
        async move {
            // A killer that failed drops its sender: its own panic says why.
            kills.wait_for(|done| *done >= i % (KILLS + 1)).await.ok()?;
            let (tenant, payment) = match i % 6 {
                0 => ("acme", Payment::OnAccount(true)),
                1 => ("web", Payment::CardToken("tok_chargeDeclined".into())),
                2 => ("web", Payment::CardToken("tok_processingError".into())),
                _ => ("web", Payment::CardToken("tok_visa".into())),
            };
            tokio::time::sleep(Duration::from_millis(random_below(1000))).await;
            let request = o2c::PlaceOrderRequest {
                idempotency_key: format!("crash-{i}"),
                tenant: tenant.into(),
                // A customer the ERP has never seen, shared by two orders:
                // the saga creates it, once, however the kills fall
                // between its create and the record of it.
                customer: Some(o2c::CustomerRef {
                    external_id: format!("{tenant}:crash-{}", i / 2),
                    ..Default::default()
                }),
                lines: vec![o2c::OrderLine { sku: "GADGET-2".into(), quantity: 1, ..Default::default() }],
                payment: Some(payment),
                ..Default::default()
            };
            Some(place(&addr, &token, request).await)
        }
    });
    let accepted = futures_util::future::join_all(placing).await;
    let (tier, mid_step) = killer.await.expect("killer");
    let accepted: Vec<o2c::Order> = accepted.into_iter().map(|o| o.expect("every wave let go")).collect();
    let ids: HashSet<String> = accepted.iter().map(|o| o.id.clone()).collect();
    assert_eq!(ids.len(), ORDERS, "one order per idempotency key");

    // Finish every order: pay the on-account ones, ship whatever waits.
    let mut orders = client(tier.addr, &system.service_token).await;
    let finished = harness::settle_orders(&mut orders, &ids, Duration::from_secs(120)).await;
    let by_status = finished.values().fold(HashMap::<i32, usize>::new(), |mut m, o| {
        *m.entry(o.status).or_default() += 1;
        m
    });
    eprintln!(
        "{ORDERS} orders, {KILLS} SIGKILLs with {mid_step:?} sagas mid-step, {} PlaceOrder calls found the tier \
         down; outcomes {by_status:?}",
        REFUSED.load(std::sync::atomic::Ordering::Relaxed)
    );
    let declined = finished.values().filter(|o| o.status() == OrderStatus::Rejected).count();
    assert_eq!(declined, ORDERS / 6, "only the declined cards are rejected: {by_status:?}");

    // Each new customer is one ERP customer, whichever order created it.
    let mut customers: HashMap<&str, HashSet<&str>> = HashMap::new();
    for order in finished.values() {
        customers.entry(order.customer_external_id.as_str()).or_default().insert(order.customer_id.as_str());
    }
    let placed: HashSet<&str> = accepted.iter().map(|o| o.customer_external_id.as_str()).collect();
    assert_eq!(customers.keys().copied().collect::<HashSet<_>>(), placed, "every order's customer");
    assert!(customers.values().all(|ids| ids.len() == 1 && !ids.contains("")), "{customers:?}");

    // No payment captured twice (or for more than the order), counting
    // every payment in the ledger, not only the one each order names.
    let ledger = harness::payments_ledger(system.data_dir.path()).await;
    harness::assert_charged_once(&ledger, &finished);

    // Let the outbox drain, then compare it with the stream.
    let store =
        Store::open(&format!("sqlite://{}", system.data_dir.path().join("process.db").display())).await.expect("store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.oldest_unpublished().await.expect("outbox").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut outbox = Vec::new();
    for id in &ids {
        let events = store.events_of(id).await.expect("events");
        // The saga's milestones; the change feed's `invoice.paid` and
        // `shipment.shipped` come whenever it sees the ERP change.
        let types: Vec<&str> = events
            .iter()
            .map(|e| e.event_type.as_str())
            .filter(|t| !matches!(*t, "invoice.paid" | "shipment.shipped"))
            .collect();
        assert_eq!(types.first(), Some(&"order.accepted"), "{id}: {types:?}");
        let last = *types.last().expect("events");
        assert!(matches!(last, "order.completed" | "order.rejected"), "{id}: {types:?}");
        outbox.extend(events);
    }
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.expect("nats");
    let jetstream = async_nats::jetstream::new(nats);
    let consumer = jetstream
        .create_consumer_on_stream(async_nats::jetstream::consumer::pull::OrderedConfig::default(), stream.as_str())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut on_stream = HashSet::new();
    let wanted: HashSet<&str> = outbox.iter().map(|e| e.id.as_str()).collect();
    while !wanted.iter().all(|id| on_stream.contains(*id)) {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("every outbox event reaches the stream")
            .expect("stream open")
            .expect("message");
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.to_string()).expect("msg id");
        on_stream.insert(id);
    }
    jetstream.delete_stream(stream.as_str()).await.expect("stream removed");

    // And the invariants hold, as the operator's command sees them.
    let reconcile = Command::new(BIN)
        .args(["reconcile", "--config"])
        .arg(&config_file)
        .args(["--system-url", &format!("http://{system_addr}")])
        .output()
        .expect("reconcile runs");
    let report = String::from_utf8_lossy(&reconcile.stdout);
    assert!(reconcile.status.success(), "reconcile: {report}{}", String::from_utf8_lossy(&reconcile.stderr));
    assert!(report.contains(&format!("orders checked: {ORDERS}")), "{report}");

    tier.kill();
    system.stop().await;
}
