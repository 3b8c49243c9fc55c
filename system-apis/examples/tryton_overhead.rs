//! How much the Tryton connector adds to Tryton's own latency.
//!
//! Runs the same read, `product.product.search_read` of one SKU, three ways,
//! interleaved, `ROUNDS` times each: (1) a direct JSON-RPC call over HTTP
//! with a reused session (the floor), (2) `erp.v1 GetProduct` through the
//! connector, and (3) the same through the gRPC service in-process (the
//! system tier's full stack minus the socket). Prints medians, p90s and
//! the overhead of (2) and (3) over (1) as a share of (1).
//!
//! `bench/tryton-overhead.sh` sets Tryton up and runs this in release mode;
//! by hand: `TRYTON_URL=... TRYTON_DB=... TRYTON_USER=admin
//! TRYTON_PASSWORD_FILE=... cargo run --release -p system-apis --example tryton_overhead`.

use std::time::{Duration, Instant};

use base64::Engine;
use erp_connect_proto::erp::v1::{GetProductRequest, product_service_client::ProductServiceClient};
use http_body_util::{BodyExt, Full};
use system_apis::erp::{BackendKind, Config, Connector, backend::tryton};

const ROUNDS: usize = 300;
const SKU: &str = "WIDGET-1";

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("set {key}"))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (url, db, user) = (env("TRYTON_URL"), env("TRYTON_DB"), env("TRYTON_USER"));
    let password_file = std::path::PathBuf::from(env("TRYTON_PASSWORD_FILE"));
    let password = std::fs::read_to_string(&password_file).expect("password").trim().to_owned();

    // (1) direct JSON-RPC: log in once, then post the same call each round.
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let endpoint = format!("{url}/{db}/rpc/");
    let post = |body: serde_json::Value, auth: Option<String>| {
        let http = http.clone();
        let endpoint = endpoint.clone();
        async move {
            let mut req = http::Request::post(endpoint).header("content-type", "application/json");
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let res = http
                .request(req.body(Full::from(serde_json::to_vec(&body).expect("json"))).expect("req"))
                .await
                .expect("post");
            let bytes = res.into_body().collect().await.expect("body").to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("reply")
        }
    };
    let login = post(
        serde_json::json!({"id": 1, "method": "common.db.login", "params": [user, {"password": password}, "en"]}),
        None,
    )
    .await;
    let (uid, token) =
        (login["result"][0].as_i64().expect("uid"), login["result"][1].as_str().expect("token").to_owned());
    let auth = format!("Session {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{uid}:{token}")));
    let prefs = post(
        serde_json::json!({"id": 2, "method": "model.res.user.get_preferences", "params": [true, {}]}),
        Some(auth.clone()),
    )
    .await;
    let context = prefs["result"].clone();
    let direct_call = serde_json::json!({"id": 3, "method": "model.product.product.search_read",
        "params": [[["code", "=", SKU]], 0, 1, null, ["code", "name", "description", "list_price_used", "default_uom.name", "active"], context]});

    // (2) the connector, and (3) the gRPC service over it.
    let config = tryton::Config { url, database: db, username: user, password_file, timeout: Duration::from_secs(30) };
    let connector = tryton::TrytonErp::open(&config, Default::default()).expect("connector");
    let erp_config = Config { backend: BackendKind::Tryton, tryton: Some(config), ..Config::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = system_apis::SystemTier::start(&erp_config, &Default::default(), &Default::default(), dir.path())
        .await
        .expect("tier");
    let mut grpc = ProductServiceClient::new(platform::channel::in_process(tier.routes()));

    // Warm up every path (logins, caches, connections).
    for _ in 0..20 {
        post(direct_call.clone(), Some(auth.clone())).await;
        connector.get_product(SKU).await.expect("connector");
        grpc.get_product(GetProductRequest { sku: SKU.into() }).await.expect("grpc");
    }
    let (mut direct, mut via_connector, mut via_grpc) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let reply = post(direct_call.clone(), Some(auth.clone())).await;
        direct.push(t.elapsed());
        assert!(reply["result"][0]["code"] == SKU);
        let t = Instant::now();
        connector.get_product(SKU).await.expect("connector");
        via_connector.push(t.elapsed());
        let t = Instant::now();
        grpc.get_product(GetProductRequest { sku: SKU.into() }).await.expect("grpc");
        via_grpc.push(t.elapsed());
    }
    let report = |name: &str, samples: &mut Vec<Duration>, floor: Duration| {
        let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
        let overhead = p50.as_secs_f64() - floor.as_secs_f64();
        println!(
            "| {name} | {:.3} | {:.3} | {:+.3} | {:+.2}% |",
            p50.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            overhead * 1e3,
            overhead / floor.as_secs_f64() * 100.0
        );
    };
    let floor = percentile(&mut direct, 0.5);
    println!("Tryton read of one product, {ROUNDS} rounds interleaved (ms)\n");
    println!("| path | p50 | p90 | overhead p50 | overhead / Tryton |");
    println!("|---|---|---|---|---|");
    report("direct JSON-RPC", &mut direct, floor);
    report("connector (TrytonErp::get_product)", &mut via_connector, floor);
    report("erp.v1 GetProduct over in-process gRPC", &mut via_grpc, floor);
}
