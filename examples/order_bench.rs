//! Order placement end to end: orders per second from `POST
//! /web/v1/orders` (through the gateway, every tier, the embedded ERP and
//! the payments sandbox) to `confirmed`, and the time each order took.
//!
//! ```text
//! cargo run --release --example order_bench -- [--orders N] [--concurrency C] [--rate R] [--store sqlite|postgres]
//! ```
//!
//! Without `--rate` the clients post as fast as orders are accepted, which
//! measures the most orders confirmed per second (latency then includes the
//! saga backlog); `--rate R` paces the posts at R orders per second for the
//! latency of an order at a load the system sustains.
//!
//! `sqlite` is the embedded defaults (`up`: SQLite files, in-process bus).
//! `postgres` puts the saga store, the embedded ERP and the payments ledger
//! each in a fresh PostgreSQL database at 127.0.0.1:5432 and publishes
//! events to NATS JetStream at 127.0.0.1:4222; the databases and the stream
//! are removed afterwards. `bench/orders.sh` runs both and writes the table.
//!
//! `--one-at-a-time` measures the order path's own share of an order's
//! time instead: orders are placed one after another, each followed to
//! `paid` (six saga steps, each an ERP or payments call) before the next,
//! and the time spent in ERP calls (the connector's
//! `erp_connect_backend_call_duration_seconds`) is summed beside. With
//! `--erp tryton` it runs against the Tryton at `TRYTON_URL` (`TRYTON_DB`,
//! `TRYTON_USER`, `TRYTON_PASSWORD_FILE`; `bench/tryton-overhead.sh` sets
//! one up and runs both). On the embedded ERP the whole order, every tier
//! and store included, bounds what erp-connect adds to a Tryton order.
//!
//! `--accept-latency` measures what a partner waits for an answer:
//! `POST /partner/v1/orders` (on account, with a shipping address) placed
//! one at a time, each timed from request to `201`, and each followed until
//! the saga has moved it past `accepted` before the next, so every POST
//! meets a quiet system; it prints p50 and p99 (`bench/order-accept.sh`
//! runs it against Tryton for this checkout and an earlier revision).
//!
//! The demo seed holds a few hundred units in stock; the run tops every
//! stock row up first (straight in the ERP's tables; a bench fixture, not
//! an API) so that no order is refused for stock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use erp_connect::{config::Config, up::App};
use gateway::dev_idp::{DevIdp, TokenRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use process_apis::order_to_cash::{order::Status, store::Store};
use sqlx::Connection;

struct Args {
    orders: usize,
    concurrency: usize,
    rate: Option<f64>,
    postgres: bool,
    tryton: bool,
    one_at_a_time: bool,
    accept_latency: bool,
}

fn args() -> Args {
    let mut args = Args {
        orders: 2000,
        concurrency: 32,
        rate: None,
        postgres: false,
        tryton: false,
        one_at_a_time: false,
        accept_latency: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--one-at-a-time" {
            args.one_at_a_time = true;
            continue;
        }
        if flag == "--accept-latency" {
            args.accept_latency = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--orders" => args.orders = value.parse().expect("--orders N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency C"),
            "--store" => args.postgres = value == "postgres",
            "--rate" => args.rate = Some(value.parse().expect("--rate R")),
            "--erp" => args.tryton = value == "tryton",
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn now_ms_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn create_database(name: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

async fn drop_database(name: &str) {
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("drop");
}

// The allocator the erp-connect binary runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // `BENCH_TRACE=1 RUST_LOG=warn,sqlx::query=debug` logs every SQL
    // statement, to count what one order costs the stores.
    if std::env::var_os("BENCH_TRACE").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let args = args();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: data_dir.path().to_owned(), ..Config::default() };
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let databases = ["o2c", "erp", "pay"].map(|d| format!("bench_{d}_{run}"));
    if args.postgres {
        config.process.database_url = Some(create_database(&databases[0]).await);
        config.erp.database_url = Some(create_database(&databases[1]).await);
        config.payments.database_url = Some(create_database(&databases[2]).await);
        config.process.events.bus = process_apis::order_to_cash::outbox::BusKind::Nats;
        config.process.events.stream = format!("BENCH_{run}");
        config.process.events.subject_prefix = format!("bench_{run}.erp.events");
    }
    if args.tryton {
        let env = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("--erp tryton needs {key}"));
        config.erp.backend = system_apis::erp::BackendKind::Tryton;
        config.erp.tryton = Some(system_apis::erp::backend::tryton::Config {
            url: env("TRYTON_URL"),
            database: env("TRYTON_DB"),
            username: env("TRYTON_USER"),
            password_file: env("TRYTON_PASSWORD_FILE").into(),
            timeout: Duration::from_secs(30),
        });
        config.process.system_timeout = Duration::from_secs(30);
    }
    let erp_url =
        config.erp.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/erp.db", data_dir.path().display()));
    let store_url = config.process.database_url(&config.data_dir);

    let app = App::build(config.clone()).await.expect("up builds");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = http.local_addr().expect("addr");
    let shutdown = platform::shutdown::Shutdown::new();
    let server = tokio::spawn(app.serve(http, grpc, shutdown.clone()));

    sqlx::any::install_default_drivers();
    let erp = if args.tryton {
        None
    } else {
        let mut erp = sqlx::AnyConnection::connect(&erp_url).await.expect("ERP database");
        sqlx::query("UPDATE stock SET on_hand = 10000000").execute(&mut erp).await.expect("stock topped up");
        Some(erp)
    };

    let token = DevIdp::load_or_create(data_dir.path())
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "bench".into(),
            scope: "orders:read orders:write".into(),
            audience: "erp-connect".into(),
            tenant: args.accept_latency.then(|| "bench-partner".into()),
            email: Some("bench@shoppers.example".into()),
            ttl: Duration::from_secs(3600),
        })
        .expect("token");
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // Tryton quotes no sale for a party without an address.
    let (path, body) = if args.accept_latency {
        let body = br#"{"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "on_account"},
            "ship_to": {"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"}}"#;
        ("partner", bytes::Bytes::from_static(body))
    } else {
        let body =
            br#"{"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"},
            "ship_to": {"street": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}}"#;
        ("web", bytes::Bytes::from_static(body))
    };
    let post = |key: String| {
        let request = http::Request::post(format!("http://{addr}/{path}/v1/orders"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(body.clone()))
            .expect("request");
        let client = client.clone();
        async move {
            let response = client.request(request).await.expect("response");
            let status = response.status();
            let bytes = response.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
            let order: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            order["id"].as_str().expect("id").to_owned()
        }
    };

    // Warm up: connections, caches, the customer's first creation.
    for i in 0..if args.one_at_a_time || args.accept_latency { 3 } else { 20 } {
        post(format!("warmup-{i}-{run}")).await;
    }
    if args.accept_latency {
        let store = Store::open(&store_url).await.expect("saga store");
        accept_latency(&args, &store, post).await;
        shutdown.cancel();
        let _ = server.await;
        return;
    }
    if args.one_at_a_time {
        let store = Store::open(&store_url).await.expect("saga store");
        one_at_a_time(&args, &store, post).await;
        shutdown.cancel();
        let _ = server.await;
        return;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| {
        let next = next.clone();
        let (total, rate) = (args.orders, args.rate);
        async move {
            let mut placed = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return placed;
                }
                if let Some(rate) = rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                let sent = now_ms_f64();
                placed.push((post(format!("bench-{i}")).await, sent));
            }
        }
    });
    let placed: Vec<(String, f64)> = futures_util::future::join_all(workers).await.into_iter().flatten().collect();
    let posting = started.elapsed();

    // Wait until every order has been confirmed (or gone further).
    let store = Store::open(&store_url).await.expect("saga store");
    let mut latencies = Vec::with_capacity(placed.len());
    let mut last_confirmed = 0.0_f64;
    let mut rejected = 0;
    for (id, sent) in &placed {
        loop {
            let order = store.load(id).await.expect("store").expect("order").order;
            if let Some(confirmed) = order.timeline.iter().find(|t| t.step == "confirmed") {
                latencies.push(confirmed.at as f64 - sent);
                last_confirmed = last_confirmed.max(confirmed.at as f64);
                break;
            }
            if matches!(order.status, Status::Rejected | Status::Cancelled) {
                rejected += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let first_sent = placed.iter().map(|(_, s)| *s).fold(f64::MAX, f64::min);
    let span_s = (last_confirmed - first_sent) / 1000.0;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let store_name =
        if args.postgres { "PostgreSQL + NATS JetStream" } else { "embedded defaults (SQLite, in-process bus)" };
    println!(
        "| {store_name} | {orders} | {conc} | {paced} | {rate:.0} | {accept:.0} | {p50:.0} | {p99:.0} | {rejected} |",
        orders = args.orders,
        paced = args.rate.map_or_else(|| "as fast as accepted".to_owned(), |r| format!("{r:.0}/s")),
        conc = args.concurrency,
        rate = latencies.len() as f64 / span_s,
        accept = args.orders as f64 / posting.as_secs_f64(),
        p50 = pct(0.5),
        p99 = pct(0.99),
    );

    shutdown.cancel();
    let _ = server.await;
    if args.postgres {
        drop(store);
        drop(erp);
        for name in &databases {
            drop_database(name).await;
        }
        let nats = async_nats::connect("nats://127.0.0.1:4222").await.expect("nats");
        let _ = async_nats::jetstream::new(nats).delete_stream(format!("BENCH_{run}")).await;
    }
}

/// Seconds spent in ERP calls on the order path so far (calls that ran
/// side by side count twice), from the metrics registry.
fn erp_seconds() -> f64 {
    platform::metrics::install()
        .render()
        .lines()
        .filter(|l| l.starts_with("erp_connect_backend_call_duration_seconds_sum"))
        // The change feed's poller runs beside the orders, not in their path.
        .filter(|l| !l.contains("operation=\"list_changes\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `--one-at-a-time`: orders one after another, each to `paid`.
async fn one_at_a_time<F, Fut>(args: &Args, store: &Store, post: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = String>,
{
    // Settle the warm-up orders first: their calls must not count.
    wait_all_paid(store).await;
    let before = erp_seconds();
    let mut walls = Vec::with_capacity(args.orders);
    for i in 0..args.orders {
        let sent = now_ms_f64();
        let id = post(format!("one-{i}-{}", ulid::Ulid::new())).await;
        let paid = loop {
            let order = store.load(&id).await.expect("store").expect("order").order;
            if let Some(paid) = order.timeline.iter().find(|t| t.step == "paid") {
                break paid.at as f64;
            }
            assert!(!matches!(order.status, Status::Rejected | Status::Cancelled), "order {id}: {:?}", order.status);
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        walls.push(paid - sent);
    }
    let erp_ms = (erp_seconds() - before) * 1000.0;
    let n = args.orders as f64;
    let mean = walls.iter().sum::<f64>() / n;
    walls.sort_by(f64::total_cmp);
    println!(
        "| {erp} | {orders} | {p50:.0} | {mean:.1} | {erp_ms:.1} |",
        erp = if args.tryton { "Tryton 8.0" } else { "embedded (SQLite)" },
        orders = args.orders,
        p50 = walls[walls.len() / 2],
        erp_ms = erp_ms / n,
    );
}

/// `--accept-latency`: partner orders one after another, each POST timed.
async fn accept_latency<F, Fut>(args: &Args, store: &Store, post: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = String>,
{
    let mut posts = Vec::with_capacity(args.orders);
    for i in 0..args.orders {
        // Every POST meets a quiet system: the previous order's saga is
        // past acceptance (or has ended).
        wait_all_past(store, &["accepted"]).await;
        let sent = Instant::now();
        post(format!("accept-{i}-{}", ulid::Ulid::new())).await;
        posts.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    wait_all_past(store, &["accepted"]).await;
    posts.sort_by(f64::total_cmp);
    let at = |q: f64| posts[((posts.len() as f64 * q).ceil() as usize).clamp(1, posts.len()) - 1];
    println!(
        "| {erp} | {orders} | {p50:.1} | {p99:.1} | {max:.1} |",
        erp = if args.tryton { "Tryton 8.0" } else { "embedded (SQLite)" },
        orders = args.orders,
        p50 = at(0.5),
        p99 = at(0.99),
        max = posts[posts.len() - 1],
    );
}

/// Waits until no order is in one of the statuses `waiting`.
async fn wait_all_past(store: &Store, waiting: &[&str]) {
    loop {
        let counts = store.count_by_status().await.expect("counts");
        if counts.iter().all(|(status, n)| *n == 0 || !waiting.contains(&status.as_str())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until no order has a saga step left to run before `paid` (a
/// refused warm-up order has none either, and must not hang the run).
async fn wait_all_paid(store: &Store) {
    const SETTLED: [&str; 5] = ["paid", "shipped", "completed", "rejected", "cancelled"];
    loop {
        let counts = store.count_by_status().await.expect("counts");
        if counts.iter().all(|(status, _)| SETTLED.contains(&status.as_str())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
