//! Webhook delivery: event latency under a steady order load, and
//! deliveries per second from a backlog, to a local receiver.
//!
//! ```text
//! cargo run --release --example webhook_bench -- [--rate R] [--seconds S] [--store sqlite|postgres]
//! ```
//!
//! Runs `up` (every tier in this process, embedded ERP) with a partner
//! endpoint subscribed to every event at a receiver on loopback that
//! answers 204 at once. Partner orders (on account, three events each:
//! `order.accepted`, `order.confirmed`, `invoice.issued`) are posted at R per
//! second for S seconds; each event's latency is its arrival at the
//! receiver minus its `timestamp` (when the saga step committed it).
//! Then a replay of every one of those events queues them all at once, and
//! their delivery rate is the backlog's size over the time from the replay's
//! answer to the last arrival. `bench/webhooks.sh` runs both stores.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, routing::post};
use erp_connect::{config::Config, up::App};
use gateway::dev_idp::{DevIdp, TokenRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sqlx::Connection;

// The allocator the erp-connect binary runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0
}

/// (arrival unix ms, latency ms) of every delivery.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(f64, f64)>>>);

async fn receive(State(arrivals): State<Arrivals>, body: String) -> axum::http::StatusCode {
    let now = now_ms();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let occurred = body["timestamp"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map_or(now, |t| t.duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0);
    arrivals.0.lock().expect("lock").push((now, now - occurred));
    axum::http::StatusCode::NO_CONTENT
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let (mut rate, mut seconds, mut postgres) = (20.0_f64, 15_u64, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--rate" => rate = value.parse().expect("--rate R"),
            "--seconds" => seconds = value.parse().expect("--seconds S"),
            "--store" => postgres = value == "postgres",
            other => panic!("unknown flag {other}"),
        }
    }
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: data_dir.path().to_owned(), ..Config::default() };
    // Every order on account within the partner's credit: none is refused.
    config.process.saga.partner_credit_limit = "100000000.00".into();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let databases = ["o2c", "erp", "pay"].map(|d| format!("hooks_{d}_{run}"));
    sqlx::any::install_default_drivers();
    if postgres {
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
        for name in &databases {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("create");
        }
        let url = |name: &str| Some(format!("postgres://postgres@127.0.0.1:5432/{name}"));
        config.process.database_url = url(&databases[0]);
        config.erp.database_url = url(&databases[1]);
        config.payments.database_url = url(&databases[2]);
    }
    let erp_url =
        config.erp.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/erp.db", data_dir.path().display()));

    let arrivals = Arrivals::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_url = format!("http://{}/hooks", receiver.local_addr().expect("addr"));
    let routes = axum::Router::new().route("/hooks", post(receive)).with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(receiver, routes).await.expect("receiver") });

    let app = App::build(config).await.expect("up builds");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = http.local_addr().expect("addr");
    let shutdown = platform::shutdown::Shutdown::new();
    let server = tokio::spawn(app.serve(http, grpc, shutdown.clone()));
    let mut erp = sqlx::AnyConnection::connect(&erp_url).await.expect("ERP database");
    sqlx::query("UPDATE stock SET on_hand = 10000000").execute(&mut erp).await.expect("stock topped up");

    let token = DevIdp::load_or_create(data_dir.path())
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "bench".into(),
            scope: "orders:read orders:write webhooks:manage".into(),
            audience: "erp-connect".into(),
            tenant: Some("bench-partner".into()),
            email: None,
            ttl: Duration::from_secs(3600),
        })
        .expect("token");
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let call = |path: &str, body: String| {
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let client = client.clone();
        async move {
            let response = client.request(request).await.expect("answer");
            let status = response.status();
            let body = response.into_body().collect().await.expect("body").to_bytes();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default())
        }
    };
    let (status, created) =
        call("/partner/v1/webhooks", serde_json::json!({"url": hook_url, "events": ["*"]}).to_string()).await;
    assert_eq!(status, 201, "{created}");
    let endpoint = created["id"].as_str().expect("id").to_owned();

    // Steady load: R orders per second for S seconds.
    let started = now_ms();
    let order = r#"{"lines": [{"sku": "GADGET-2", "quantity": 1}], "payment": {"method": "on_account"},
        "ship_to": {"street": "Kai 7", "city": "Bremen", "postal_code": "28195", "country": "DE"}}"#;
    let total = (rate * seconds as f64) as usize;
    let pace = Duration::from_secs_f64(1.0 / rate);
    let begin = Instant::now();
    let mut posts = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((begin + pace * i as u32).into()).await;
        let post = call("/partner/v1/orders", order.to_owned());
        posts.push(tokio::spawn(post));
    }
    for post in posts {
        let (status, body) = post.await.expect("post");
        assert_eq!(status, 201, "{body}");
    }
    let expected = total * 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.0.lock().expect("lock").len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} events arrived",
            arrivals.0.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies: Vec<f64> = arrivals.0.lock().expect("lock").iter().map(|(_, l)| *l).collect();
    latencies.sort_by(f64::total_cmp);

    // A backlog: every event so far, replayed at once.
    let since = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(started as u64 - 1)).to_string();
    let before = arrivals.0.lock().expect("lock").len();
    let replay = format!("/partner/v1/webhooks/{endpoint}/replay");
    let (status, replayed) = call(&replay, serde_json::json!({"since": since}).to_string()).await;
    let replay_answered = now_ms();
    assert_eq!(status, 202, "{replayed}");
    let backlog = replayed["replayed"].as_u64().expect("replayed") as usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while arrivals.0.lock().expect("lock").len() < before + backlog {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = arrivals.0.lock().expect("lock").iter().map(|(at, _)| *at).fold(0.0, f64::max);
    let per_second = backlog as f64 / ((last - replay_answered) / 1000.0);

    println!(
        "| {} | {rate} | {total} | {expected} | {:.0} | {:.0} | {:.0} | {backlog} | {per_second:.0} |",
        if postgres { "postgres" } else { "sqlite" },
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    shutdown.cancel();
    let _ = server.await;
    if postgres {
        drop(erp);
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL");
        for name in &databases {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("drop");
        }
    }
}
