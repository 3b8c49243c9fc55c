//! Faults injected on the network while orders flow, in `serve` mode: a
//! fault proxy ([`harness::faults`]) sits in front of the experience,
//! process and system tiers, and in front of the process tier's
//! PostgreSQL, its NATS JetStream and the gateway's Redis. One after the
//! other each gets latency, its connections reset, and a blackhole longer
//! than the deadlines, while web shoppers and a partner keep placing
//! orders and retrying with their `Idempotency-Key`.
//!
//! What must hold: a client only ever sees its order (201/200) or 503/504
//! with `Retry-After`, never a 500; once the faults stop every order ends
//! terminal, the payments ledger holds at most one live authorization per
//! order and captured exactly what completed orders cost, the outbox is
//! drained onto the stream, and `reconcile` finds every invariant holding.

mod harness;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use erp_connect::serve::Target;
use erp_connect_proto::order_to_cash::v1::{self as o2c, OrderStatus};
use harness::faults::{Fault, FaultProxy};
use serde_json::json;

/// Shoppers and partners placing orders at once.
const CLIENTS: usize = 4;
/// Orders each places at most: within the demo stock of its SKU, so that
/// every order can complete.
const ORDERS_PER_CLIENT: usize = 25;
/// What each web shopper buys (client 0 is the partner, buying GADGET-2).
const SKUS: [&str; CLIENTS] = ["GADGET-2", "GADGET-1", "WIDGET-2", "GADGET-2"];
/// How long each fault lasts on each hop.
const FAULT_FOR: Duration = Duration::from_millis(1500);

/// What clients saw: answers by status, and the problems that broke the contract.
#[derive(Default)]
struct Seen {
    statuses: HashMap<u16, usize>,
    broken: Vec<String>,
}

/// Places one order, retrying (same key, same body) on 503/504 as the
/// contract tells a client to; returns its id.
async fn place(url: &str, auth: (&str, &str), body: &serde_json::Value, key: &str, seen: &Mutex<Seen>) -> String {
    for _ in 0..400 {
        let request = http::Request::post(url)
            .header(auth.0, auth.1)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(http_body_util::Full::from(body.to_string()))
            .expect("request");
        let reply = harness::send(request).await;
        {
            let mut seen_now = seen.lock().expect("not poisoned");
            *seen_now.statuses.entry(reply.status).or_default() += 1;
            match reply.status {
                200 | 201 => return reply.body["id"].as_str().expect("id").to_owned(),
                503 | 504 => {
                    if !reply.headers.contains_key("retry-after") {
                        seen_now.broken.push(format!("{} without Retry-After: {}", reply.status, reply.text));
                    }
                }
                _ => seen_now.broken.push(format!("{}: {}", reply.status, reply.text)),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {key} was never accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_latency_resets_and_blackholes_on_every_hop_and_backend() {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let (stream, prefix) = (format!("FAULTS_{run}"), format!("faults_{run}.erp.events"));
    let database = platform::database::ScratchPostgres::create("faults").await;
    let server = |url: &str| -> SocketAddr {
        let authority = url.split("://").nth(1).expect("scheme").split('/').next().expect("authority");
        authority.rsplit('@').next().expect("host").parse().expect("host:port")
    };
    let backends = [
        ("postgres", FaultProxy::start(server(&database.url()))),
        ("nats", FaultProxy::start("127.0.0.1:4222".parse().expect("addr"))),
        ("redis", FaultProxy::start("127.0.0.1:6379".parse().expect("addr"))),
    ];
    let [postgres, nats, redis] = backends.each_ref().map(|(_, proxy)| proxy.addr());
    let database_url = database.url().replace(&server(&database.url()).to_string(), &postgres.to_string());
    let tiers: Arc<Mutex<Vec<(Target, FaultProxy)>>> = Arc::default();
    let app = harness::spawn_serve_routed(
        |config| {
            harness::quick_sagas(config);
            config.process.database_url = Some(database_url);
            config.process.events.bus = process_apis::order_to_cash::outbox::BusKind::Nats;
            config.process.events.nats_url = format!("nats://{nats}");
            config.process.events.stream = stream.clone();
            config.process.events.subject_prefix = prefix.clone();
            config.process.events.poll_interval = Duration::from_millis(50);
            config.gateway.redis_url = Some(format!("redis://{redis}"));
            // Deadlines short enough that a blackhole outlasts them.
            config.gateway.upstream_timeout = Duration::from_secs(1);
            config.experience.process_timeout = Duration::from_millis(800);
            config.process.system_timeout = Duration::from_millis(500);
        },
        |target, addr| {
            let proxy = FaultProxy::start(addr);
            let routed = proxy.addr();
            tiers.lock().expect("not poisoned").push((target, proxy));
            routed
        },
    )
    .await;
    let partner_key = harness::create_key(&app, "acme", "orders:read,orders:write", "gold");
    let shopper = format!(
        "Bearer {}",
        harness::token_for(app.data_dir.path(), "alice", None, Some("alice@example.com"), "orders:read orders:write")
    );

    // The faults, one hop after the other, while the clients place orders.
    let faulting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let schedule = tokio::spawn({
        let (tiers, faulting) = (tiers.clone(), faulting.clone());
        async move {
            let hops: Vec<String> = {
                let tiers = tiers.lock().expect("not poisoned");
                tiers.iter().map(|(t, _)| format!("{t:?}")).collect()
            };
            for index in 0..hops.len() {
                for fault in [Fault::Latency(Duration::from_millis(150)), Fault::Reset, Fault::Blackhole] {
                    tiers.lock().expect("not poisoned")[index].1.set(fault);
                    tokio::time::sleep(FAULT_FOR).await;
                }
                tiers.lock().expect("not poisoned")[index].1.set(Fault::Pass);
            }
            faulting.store(false, std::sync::atomic::Ordering::Relaxed);
            hops
        }
    });
    let backend_schedule = async {
        for (_, proxy) in &backends {
            for fault in [Fault::Latency(Duration::from_millis(150)), Fault::Reset, Fault::Blackhole] {
                proxy.set(fault);
                tokio::time::sleep(FAULT_FOR).await;
            }
            proxy.set(Fault::Pass);
        }
    };
    let seen = Mutex::new(Seen::default());
    let clients = (0..CLIENTS).map(|client| {
        let (faulting, seen, shopper, partner_key) = (faulting.clone(), &seen, &shopper, &partner_key);
        let app = &app;
        async move {
            let mut ids = Vec::new();
            let mut n = 0;
            while (faulting.load(std::sync::atomic::Ordering::Relaxed) || n < 3) && n < ORDERS_PER_CLIENT {
                let key = format!("faults-{client}-{n}");
                let id = if client == 0 {
                    let body = json!({"external_ref": key, "lines": [{"sku": SKUS[client], "quantity": 1}], "payment": {"method": "on_account"}});
                    place(&app.url("/partner/v1/orders"), ("x-api-key", partner_key), &body, &key, seen).await
                } else {
                    let body = json!({"lines": [{"sku": SKUS[client], "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}});
                    place(&app.url("/web/v1/orders"), ("authorization", shopper), &body, &key, seen).await
                };
                ids.push(id);
                n += 1;
                // A pace that spreads the orders over the whole schedule
                // (three faults on three hops, one after the other).
                tokio::time::sleep(FAULT_FOR * 9 / u32::try_from(ORDERS_PER_CLIENT).expect("small")).await;
            }
            ids
        }
    });
    let (placed, ()) = tokio::join!(futures_util::future::join_all(clients), backend_schedule);
    let hops = schedule.await.expect("schedule");
    let ids: HashSet<String> = placed.into_iter().flatten().collect();
    let seen = seen.into_inner().expect("not poisoned");
    eprintln!(
        "{} orders placed through faults on {hops:?} and {:?}; answers by status: {:?}",
        ids.len(),
        backends.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        seen.statuses
    );
    assert!(seen.broken.is_empty(), "answers outside the contract: {:#?}", seen.broken);

    // The faults are over: every order ends terminal.
    let mut orders =
        o2c::order_to_cash_service_client::OrderToCashServiceClient::new(app.grpc_channel(Target::Process));
    let finished = harness::settle_orders(&mut orders, &ids, Duration::from_secs(120)).await;
    let by_status = finished.values().fold(HashMap::<&str, usize>::new(), |mut m, o| {
        *m.entry(o.status().as_str_name()).or_default() += 1;
        m
    });
    let reasons = finished.values().filter(|o| o.status() != OrderStatus::Completed).fold(
        HashMap::<&str, usize>::new(),
        |mut m, o| {
            *m.entry(o.reason.as_str()).or_default() += 1;
            m
        },
    );
    eprintln!("outcomes: {by_status:?}; not completed, by reason: {reasons:?}");
    assert!(finished.values().all(|o| o.status() == OrderStatus::Completed), "{by_status:?}");

    // The ledger: one live authorization per order, and captured what completed orders cost.
    let ledger = harness::payments_ledger(app.data_dir.path()).await;
    harness::assert_charged_once(&ledger, &finished);
    eprintln!("payments ledger: {} payments for {} orders", ledger.values().map(Vec::len).sum::<usize>(), ledger.len());

    // The outbox drains onto the stream, and reconcile agrees.
    let store = process_apis::order_to_cash::store::Store::open(&database.url()).await.expect("store");
    harness::until(Duration::from_secs(30), "the outbox drains", || async {
        store.oldest_unpublished().await.expect("outbox").is_none()
    })
    .await;
    let mut config = harness::test_config(app.data_dir.path());
    config.process.database_url = Some(database.url());
    let system = app.grpc.iter().find(|(t, _)| *t == Target::System).map(|(_, a)| *a).expect("system tier");
    let healthy =
        erp_connect::reconcile::run(&config, Some(&format!("http://{system}"))).await.expect("reconcile runs");
    assert!(healthy, "reconcile found a broken invariant");

    let nats_client = async_nats::connect("nats://127.0.0.1:4222").await.expect("nats");
    let _ = async_nats::jetstream::new(nats_client).delete_stream(stream.as_str()).await;
    app.stop_all().await;
}
