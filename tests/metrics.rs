//! Metrics end to end: `GET /metrics` on the gateway (and on every tier in
//! `serve` mode) serves each family the operators chart, with bounded label
//! sets however many different ids were requested; `GET /ops/v1/overview`
//! answers the ops console's charts from the same measurements.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use erp_connect::serve::{Target, Tier};
use harness::{
    Running, assert_problem, get, listener, post_json, quick_sagas, spawn_serve, spawn_up_with, test_config,
};
use serde_json::{Value, json};

/// One sample: series name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A small reader of the Prometheus text format, independent of the one
/// the product uses, so that a bug there cannot hide here.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("value");
        let value: f64 = if value == "+Inf" { f64::INFINITY } else { value.parse().expect("number") };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once("=\"").expect("label");
                    labels.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        samples.push((name, labels, value));
    }
    samples
}

fn family<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |(n, ..)| n == name)
}

async fn scrape(url: &str) -> (String, Vec<Sample>) {
    let reply = get(url, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.headers["content-type"].to_str().expect("ascii");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let samples = parse(&reply.text);
    (reply.text, samples)
}

/// 404s for `count` order ids nobody has, and as many unknown paths.
async fn burst(app: &Running, bearer: &str, round: usize, count: usize) {
    for i in 0..count {
        let id = format!("ord_burst{round}x{i}");
        assert_problem(&get(&app.url(&format!("/web/v1/orders/{id}")), Some(bearer)).await, 404);
        assert_problem(&get(&app.url(&format!("/nowhere/burst{round}x{i}")), Some(bearer)).await, 404);
    }
}

fn card_order() -> Value {
    json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}})
}

/// Series of `name` per distinct value of the labels `keys`.
fn label_sets(samples: &[Sample], name: &str, keys: &[&str]) -> BTreeSet<Vec<String>> {
    family(samples, name)
        .map(|(_, labels, _)| keys.iter().map(|k| labels.get(*k).cloned().unwrap_or_default()).collect())
        .collect()
}

#[tokio::test]
async fn every_family_is_on_metrics_with_bounded_labels_after_a_burst_of_ids() {
    // Redis configured but unreachable: the limiter falls back to local
    // limits, serves on, and says so in the metrics.
    let app = spawn_up_with(|config| {
        quick_sagas(config);
        config.gateway.redis_url = Some("redis://127.0.0.1:1".into());
    })
    .await;
    let user = app.token("orders:read orders:write");
    let ops = app.token("ops");

    // A partner key on the bronze plan (burst 20) sent 40 requests at once.
    let created = post_json(
        &app.url("/ops/v1/keys"),
        &ops,
        &json!({"partner": "acme", "scopes": ["orders:read"], "plan": "bronze"}),
        None,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["key"].as_str().expect("key").to_owned();
    let mut refused = 0;
    for i in 0..40 {
        let reply = get(&app.url(&format!("/partner/v1/orders/ord_burstkey{i}")), Some(&key)).await;
        refused += usize::from(reply.status == 429);
    }
    assert!(refused > 0, "the bronze burst is 20 requests");

    // Real orders: one placed twice with the same Idempotency-Key, paid,
    // then shipped in the ERP so the change feed carries it to `completed`.
    let placed = post_json(&app.url("/web/v1/orders"), &user, &card_order(), Some("metrics-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let replayed = post_json(&app.url("/web/v1/orders"), &user, &card_order(), Some("metrics-1")).await;
    assert!(replayed.status < 300, "{}", replayed.text);
    assert_eq!(replayed.body["id"], placed.body["id"]);
    let path = format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"));
    let paid = harness::wait_for_order(&app, &user, &path, "paid").await;
    let shipment = paid["erp"]["shipments"][0].as_str().expect("shipment").to_owned();
    let done = post_json(&app.url(&format!("/ops/v1/shipments/{shipment}/complete")), &ops, &json!({}), None).await;
    assert_eq!(done.status, 200, "{}", done.text);
    harness::wait_for_order(&app, &user, &path, "completed").await;

    burst(&app, &user, 1, 100).await;
    let (_, first) = scrape(&app.url("/metrics")).await;
    burst(&app, &user, 2, 100).await;
    let (text, samples) = scrape(&app.url("/metrics")).await;

    // No id and no raw path ever becomes a label value.
    assert!(!text.contains("burst"), "ids leaked into labels");

    // Request metrics of all four tiers, by route template and RPC.
    let http = label_sets(&samples, "erp_connect_http_requests_total", &["tier", "method", "route", "status"]);
    for expected in [
        ["gateway", "GET", "/web/v1/orders/{id}", "404"],
        ["gateway", "GET", "unmatched", "404"],
        ["gateway", "POST", "/web/v1/orders", "201"],
        ["gateway", "GET", "/partner/v1/orders/{id}", "429"],
        ["experience", "GET", "/web/v1/orders/{id}", "404"],
    ] {
        assert!(http.contains(expected.map(str::to_owned).as_slice()), "{expected:?} missing in {http:?}");
    }
    assert!(http.len() < 60, "{} HTTP series for 400 different paths: {http:?}", http.len());
    let grpc = label_sets(&samples, "erp_connect_grpc_requests_total", &["tier", "service", "method", "code"]);
    for expected in [
        ["process", "order_to_cash.v1.OrderToCashService", "GetOrder", "NotFound"],
        ["process", "order_to_cash.v1.OrderToCashService", "PlaceOrder", "OK"],
        ["system", "erp.v1.SalesOrderService", "CreateSalesOrder", "OK"],
    ] {
        assert!(grpc.contains(expected.map(str::to_owned).as_slice()), "{expected:?} missing in {grpc:?}");
    }
    assert!(grpc.len() < 80, "{} gRPC series: {grpc:?}", grpc.len());
    // The second burst of 200 new paths added no series at all.
    for name in ["erp_connect_http_requests_total", "erp_connect_http_request_duration_seconds_bucket"] {
        let before = label_sets(&first, name, &["tier", "route"]);
        let after = label_sets(&samples, name, &["tier", "route"]);
        let web_orders =
            |sets: &BTreeSet<Vec<String>>| sets.iter().filter(|s| s[1].starts_with("/web/v1/orders")).count();
        assert_eq!(web_orders(&before), web_orders(&after), "{name}");
    }

    // Durations as histograms with buckets.
    for name in [
        "erp_connect_http_request_duration_seconds_bucket",
        "erp_connect_grpc_request_duration_seconds_bucket",
        "erp_connect_backend_call_duration_seconds_bucket",
        "erp_connect_saga_step_duration_seconds_bucket",
        "erp_connect_change_feed_lag_seconds_bucket",
    ] {
        assert!(family(&samples, name).any(|(_, l, _)| l.get("le").is_some_and(|le| le == "+Inf")), "{name} missing");
    }
    let positive = |name: &str, labels: &[(&str, &str)]| {
        family(&samples, name)
            .filter(|(_, l, _)| labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
            .map(|(.., v)| *v)
            .sum::<f64>()
            > 0.0
    };
    assert!(positive("erp_connect_backend_calls_total", &[("backend", "embedded"), ("outcome", "ok")]));
    for outcome in ["accepted", "confirmed", "completed"] {
        assert!(positive("erp_connect_saga_outcomes_total", &[("outcome", outcome)]), "{outcome}");
    }
    assert!(positive("erp_connect_saga_step_duration_seconds_count", &[("step", "capture"), ("result", "ok")]));
    assert!(positive("erp_connect_idempotent_replays_total", &[("operation", "PlaceOrder")]));
    assert!(positive("erp_connect_rate_limit_rejections_total", &[("plan", "bronze"), ("kind", "rate")]));
    assert!(positive("erp_connect_rate_limit_redis_fallbacks_total", &[]));
    assert!(positive("erp_connect_rate_limit_redis_down", &[]));
    assert!(positive("erp_connect_change_feed_lag_seconds_count", &[]));

    // Gauges: breaker, outbox, orders per status.
    let breaker: Vec<_> = family(&samples, "erp_connect_circuit_breaker_state")
        .filter(|(_, l, _)| l.get("backend").is_some_and(|b| b == "embedded"))
        .collect();
    assert!(!breaker.is_empty() && breaker.iter().all(|(_, l, v)| l["system"] == "erp" && *v == 0.0), "{breaker:?}");
    for name in ["erp_connect_outbox_depth", "erp_connect_outbox_oldest_age_seconds"] {
        assert!(family(&samples, name).next().is_some(), "{name} missing");
    }
    let statuses = label_sets(&samples, "erp_connect_orders", &["status"]);
    assert!(statuses.contains(&vec!["completed".to_owned()]), "{statuses:?}");
    assert!(statuses.len() <= 8, "{statuses:?}");
    app.stop_all().await;
}

#[tokio::test]
async fn the_overview_charts_each_tier_from_this_processs_metrics() {
    let app = spawn_up_with(quick_sagas).await;
    let reader = app.token("catalog:read");
    for _ in 0..5 {
        assert_eq!(get(&app.url("/web/v1/products"), Some(&reader)).await.status, 200);
    }
    assert_problem(&get(&app.url("/ops/v1/overview"), None).await, 401);
    assert_problem(&get(&app.url("/ops/v1/overview"), Some(&reader)).await, 403);
    let reply = get(&app.url("/ops/v1/overview"), Some(&app.token("ops"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.body;
    assert_eq!((body["step_seconds"].as_u64(), body["window_seconds"].as_u64()), (Some(10), Some(900)));
    let tiers = body["tiers"].as_array().expect("tiers");
    let names: Vec<&str> = tiers.iter().filter_map(|t| t["tier"].as_str()).collect();
    assert_eq!(names, ["gateway", "experience", "process", "system"]);
    for tier in tiers {
        let points = tier["points"].as_array().expect("points");
        assert_eq!(points.len(), 90, "one point per 10 s step, empty ones included");
        let times: Vec<u64> = points.iter().map(|p| p["t"].as_u64().expect("t")).collect();
        assert!(times.windows(2).all(|w| w[1] == w[0] + 10) && times[0].is_multiple_of(10), "{times:?}");
        for point in points {
            let requests = point["requests"].as_u64().expect("requests");
            assert!(point["errors"].as_u64().is_some_and(|e| e <= requests), "{point}");
            for quantile in ["p50_ms", "p99_ms"] {
                assert_eq!(point[quantile].is_null(), requests == 0, "{point}");
            }
        }
    }
    let served = |tier: usize| {
        tiers[tier]["points"].as_array().map_or(0, |p| p.iter().filter_map(|p| p["requests"].as_u64()).sum())
    };
    assert!(served(0) >= 5 && served(1) >= 5 && served(2) >= 5, "{}", reply.text);
    assert!(body["orders_by_status"].is_object(), "{}", reply.text);
    assert!(body["outbox"]["depth"].is_u64() && body["outbox"]["oldest_age_seconds"].is_number(), "{}", reply.text);
    assert!(body.as_object().is_some_and(|o| o.contains_key("change_feed_lag_seconds")));
    assert_eq!(body["backends"], json!([{"name": "erp", "backend": "embedded", "breaker": "closed"}]));
    assert!(body["rate_limit"]["rejections"].is_u64() && body["rate_limit"]["redis_fallbacks"].is_u64());
    app.stop_all().await;
}

#[tokio::test]
async fn each_tier_serves_metrics_when_the_tiers_run_apart() {
    let app = spawn_serve().await;
    let reader = app.token("catalog:read");
    assert_eq!(get(&app.url("/web/v1/products"), Some(&reader)).await.status, 200);
    let (_, gateway) = scrape(&app.url("/metrics")).await;
    assert!(family(&gateway, "erp_connect_http_requests_total").any(|(_, l, _)| l["tier"] == "gateway"));
    // The gRPC tiers answer Prometheus (HTTP/1.1) on their gRPC port, with
    // no service token.
    for (target, tier) in [(Target::Process, "process"), (Target::System, "system")] {
        let addr = app.grpc.iter().find(|(t, _)| *t == target).map(|(_, a)| *a).expect("address");
        let (_, samples) = scrape(&format!("http://{addr}/metrics")).await;
        assert!(family(&samples, "erp_connect_grpc_requests_total").any(|(_, l, _)| l["tier"] == tier), "{tier}");
    }
    // The experience tier serves it without a gateway-signed principal.
    let dir = tempfile::tempdir().expect("tempdir");
    let experience = Tier::build(Target::Experience, &test_config(dir.path())).await.expect("experience builds");
    let (listener, shutdown) = (listener().await, platform::shutdown::Shutdown::new());
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let task = tokio::spawn(experience.serve(listener, shutdown.clone()));
    let (_, samples) = scrape(&url).await;
    assert!(family(&samples, "erp_connect_http_requests_total").any(|(_, l, _)| l["tier"] == "experience"));
    shutdown.cancel();
    task.await.expect("task").expect("experience serves");
    app.stop_all().await;
}

/// The real binary, in a process of its own: every family that a tier
/// registers at start (before any request) is there, which a test sharing
/// its process with other tests' recorders could not show.
#[tokio::test]
async fn a_fresh_up_process_shows_its_gauges_before_any_request() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(harness::BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("ERP_CONNECT_CONFIG")
        .env("ERP_CONNECT__GATEWAY__REDIS_URL", "redis://127.0.0.1:1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start erp-connect up");
    let stdout = child.stdout.take().expect("stdout");
    let base = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned))
    })
    .await
    .expect("reader")
    .expect("the banner names the HTTP address");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let wanted = [
        "erp_connect_circuit_breaker_state",
        "erp_connect_orders",
        "erp_connect_outbox_depth",
        "erp_connect_outbox_oldest_age_seconds",
        "erp_connect_rate_limit_redis_fallbacks_total",
        "erp_connect_rate_limit_redis_down",
    ];
    let samples = loop {
        let (_, samples) = scrape(&format!("{base}/metrics")).await;
        if wanted.iter().all(|name| family(&samples, name).next().is_some()) || std::time::Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    child.kill().expect("stop erp-connect up");
    child.wait().expect("reap");
    for name in wanted {
        assert!(family(&samples, name).next().is_some(), "{name} missing");
    }
    let breaker: Vec<_> = family(&samples, "erp_connect_circuit_breaker_state").collect();
    assert_eq!(breaker.len(), 1, "{breaker:?}");
    assert_eq!((breaker[0].1["backend"].as_str(), breaker[0].2), ("embedded", 0.0));
}
