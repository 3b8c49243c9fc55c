//! Order files: rows per second through `POST /partner/v1/order-batches`,
//! and the process's peak resident memory, for a generated CSV.
//!
//! ```text
//! cargo run --release --example import_bench -- [--rows N] [--dry-run]
//! ```
//!
//! Runs `up` (every tier in this process, embedded ERP on SQLite) with a
//! partner mapping (a SKU cross-reference, a unit, decimal commas), writes
//! a CSV of N one-line orders (every 50th with an unknown SKU, to be
//! quarantined), streams it in, and follows the batch until done. It prints
//! the upload time, the rows per second from the first byte sent to the
//! last row's result, and `VmHWM` (peak RSS) of this process before the
//! upload and at the end: the file is streamed and imported page by page,
//! so memory does not grow with it (compare N = 10,000 with 100,000).
//! `--dry-run` maps and checks every row without creating orders.
//! `bench/import.sh` runs both sizes.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use erp_connect::{config::Config, up::App};
use gateway::dev_idp::{DevIdp, TokenRequest};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sqlx::Connection;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Peak resident memory of this process so far, MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    // RUST_LOG=warn,sqlx::query=debug shows each statement and its time.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let (mut rows, mut dry_run) = (100_000_usize, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--rows" => rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--dry-run" => dry_run = true,
            other => panic!("unknown flag {other}"),
        }
    }
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: data_dir.path().to_owned(), ..Config::default() };
    config.process.saga.partner_credit_limit = "1000000000.00".into();
    config.partners.insert(
        "bench".into(),
        serde_json::from_value(serde_json::json!({
            "sku_xref": {"B-0042": "WIDGET-1", "B-0077": "GADGET-2"},
            "units": {"BOX2": 2},
            "decimal_separator": ",",
        }))
        .expect("mapping"),
    );
    let file = data_dir.path().join("orders.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("file"));
        writeln!(out, "external_ref;sku;quantity;unit;ship_to_street;ship_to_city;ship_to_postal_code;ship_to_country")
            .expect("write");
        for n in 0..rows {
            let sku = match n % 50 {
                49 => "NOPE-1",
                k if k % 2 == 0 => "B-0042",
                _ => "B-0077",
            };
            let unit = if n % 3 == 0 { "BOX2" } else { "" };
            writeln!(out, "PO-{n};{sku};1,0;{unit};Kai 7;Bremen;28195;DE").expect("write");
        }
    }
    let size = std::fs::metadata(&file).expect("file").len();

    let erp_url = format!("sqlite://{}/erp.db", data_dir.path().display());
    let app = App::build(config).await.expect("up builds");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = http.local_addr().expect("addr");
    let shutdown = platform::shutdown::Shutdown::new();
    let server = tokio::spawn(app.serve(http, grpc, shutdown.clone()));
    sqlx::any::install_default_drivers();
    let mut erp = sqlx::AnyConnection::connect(&erp_url).await.expect("ERP database");
    sqlx::query("UPDATE stock SET on_hand = 1000000000").execute(&mut erp).await.expect("stock topped up");

    let token = DevIdp::load_or_create(data_dir.path())
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "bench".into(),
            scope: "orders:read orders:write".into(),
            audience: "erp-connect".into(),
            tenant: Some("bench".into()),
            email: None,
            ttl: Duration::from_secs(3600),
        })
        .expect("token");
    let before = peak_rss_mib();
    let started = Instant::now();
    // The file streamed from disk, 64 KiB at a time.
    let opened = tokio::fs::File::open(&file).await.expect("open");
    let chunks = futures_util::stream::unfold(Some(opened), |f| async move {
        let mut f = f?;
        let mut buf = vec![0; 64 * 1024];
        match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(buf))), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let body = StreamBody::new(Box::pin(chunks));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(format!(
        "http://{addr}/partner/v1/order-batches{}",
        if dry_run { "?dry_run=true" } else { "" }
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "text/csv")
    .body(body)
    .expect("request");
    let response = client.request(request).await.expect("answer");
    let status = response.status();
    let batch: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(status, 202, "{batch}");
    let uploaded = started.elapsed();
    let id = batch["id"].as_str().expect("id").to_owned();
    let get: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let done = loop {
        let request = http::Request::get(format!("http://{addr}/partner/v1/order-batches/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .expect("request");
        let response = get.request(request).await.expect("answer");
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json");
        if body["status"] == "done" {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    println!(
        "| {rows} | {:.1} | {} | {:.1} | {:.0} | {} | {} | {:.0} | {:.0} |",
        size as f64 / 1_048_576.0,
        if dry_run { "dry run" } else { "import" },
        uploaded.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        done["orders_accepted"],
        done["rows_quarantined"].as_i64().unwrap_or(0) + done["rows_rejected"].as_i64().unwrap_or(0),
        before,
        peak_rss_mib(),
    );
    shutdown.cancel();
    let _ = server.await;
}
