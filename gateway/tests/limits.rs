//! Rate limits and daily order quotas of partner API keys, through the
//! gateway's router: the `RateLimit-*` headers, 429 problems with
//! `Retry-After`, `/partner/v1/usage`; two replicas sharing Redis
//! (127.0.0.1:6379) and a PostgreSQL key store hold one limit between them
//! and both see a revocation; with Redis down, each falls back to its own
//! limit instead of refusing traffic.
//!
//! The experience tier is a stand-in that answers 201 to an order (422 when
//! its body says so) and 200 otherwise: these tests are about the gateway.
//! Redis is reached through the workspace's fault proxy where a test makes
//! it refuse or hang.

#[path = "../../tests/harness/faults.rs"]
#[allow(dead_code)] // only part of it is used here
mod faults;

use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use axum::{Extension, Router, body::Body, extract::Request, routing::any};
use gateway::{
    Route,
    auth::Authenticator,
    key_store::{KeyStore, NewKey},
    keys::ApiKey,
    limits::{Limits, LimitsClock, ManualClock, Plan},
    router_with_limits,
    upstream::Upstream,
};
use http::{Method, StatusCode};
use platform::principal::Principal;
use tower::ServiceExt;

/// A stand-in experience tier: orders are created (201) unless the body
/// asks for a refusal (422); everything else is 200.
fn experience() -> Router {
    Router::new().fallback(any(|Extension(_): Extension<Principal>, request: Request| async move {
        let post = request.method() == Method::POST;
        let body = axum::body::to_bytes(request.into_body(), 1024).await.unwrap_or_default();
        match (post, body.as_ref()) {
            (true, b"refuse") => StatusCode::UNPROCESSABLE_ENTITY,
            (true, _) => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }))
}

fn gateway(store: &KeyStore, limits: Limits) -> Router {
    let auth = Authenticator::new(&[], 30).expect("auth").with_api_keys(store.clone());
    let upstream = Upstream::InProcess(experience(), std::time::Duration::from_secs(30));
    // The routes these tests call; the real table is the experience tier's.
    let routes = [
        Route::new(Method::POST, "/partner/v1/orders", "orders:write"),
        Route::new(Method::GET, "/partner/v1/orders", "orders:read"),
    ];
    router_with_limits(auth, upstream, None, limits, Default::default(), &routes)
}

/// `bronze`'s limits, smaller: 2 requests/s, a burst of 4, 2 orders a day.
fn small_plans() -> BTreeMap<String, Plan> {
    let mut plans = gateway::limits::builtin_plans();
    plans.insert(
        "bronze".into(),
        Plan { requests_per_second: NonZeroU32::new(2), burst: NonZeroU32::new(4), orders_per_day: Some(2) },
    );
    plans
}

async fn new_key(store: &KeyStore, plan: &str) -> (String, ApiKey) {
    let new = NewKey {
        partner: "acme".into(),
        scopes: vec!["orders:read".into(), "orders:write".into()],
        plan: plan.into(),
        expires_at: None,
    };
    let (record, key) = store.create(new, gateway::key_store::now_ms() / 1000, "test").await.expect("create key");
    (record.id, key)
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: serde_json::Value,
}

async fn call(app: &Router, method: Method, path: &str, key: &ApiKey, body: &'static str) -> Reply {
    call_with(app, method, path, key, body, None).await
}

async fn call_with(
    app: &Router,
    method: Method,
    path: &str,
    key: &ApiKey,
    body: &'static str,
    idempotency_key: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key.expose())
        .header("content-type", "application/json");
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let request = request.body(Body::from(body)).expect("request");
    send(app, request).await
}

/// `request` through `app`, and what came back.
async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.expect("body");
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

fn header(reply: &Reply, name: &str) -> Option<u64> {
    reply.headers.get(name)?.to_str().ok()?.parse().ok()
}

fn assert_limited(reply: &Reply, kind: &str) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.body["type"], format!("https://erp-connect.dev/problems/{kind}"));
    assert!(header(reply, "retry-after").is_some_and(|s| s >= 1), "{:?}", reply.headers);
}

/// 2026-12-06T23:59:00Z, a minute before a UTC day ends, in Unix ms.
const LATE_EVENING: u64 = 1_796_601_540_000;

#[tokio::test]
async fn a_key_gets_its_burst_then_429_with_retry_after_and_every_answer_says_what_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    // Time stands still unless the test moves it: no slow machine adds a token.
    let clock = ManualClock::at(LATE_EVENING);
    let limits = Limits::with_clock(&small_plans(), None, LimitsClock::Manual(clock.clone())).expect("limits");
    let app = gateway(&store, limits);
    let (_, key) = new_key(&store, "bronze").await;

    // A burst of 4 at once, then 429.
    let mut remaining = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let reply = call(&app, Method::GET, "/partner/v1/orders", &key, "").await;
        assert_eq!(header(&reply, "ratelimit-limit"), Some(4), "{:?}", reply.headers);
        if reply.status == StatusCode::OK {
            remaining.push(header(&reply, "ratelimit-remaining").expect("remaining"));
        } else {
            refused = Some(reply);
            break;
        }
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    let refused = refused.expect("the burst ends in a 429");
    assert_limited(&refused, "rate-limited");
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    assert_eq!(header(&refused, "ratelimit-reset"), Some(2));
    // 2 a second: one more after half a second, and only one.
    clock.advance(Duration::from_millis(500));
    assert_eq!(call(&app, Method::GET, "/partner/v1/orders", &key, "").await.status, StatusCode::OK);
    assert_limited(&call(&app, Method::GET, "/partner/v1/orders", &key, "").await, "rate-limited");

    // Another key of the same plan has its own budget.
    let (_, other) = new_key(&store, "bronze").await;
    assert_eq!(call(&app, Method::GET, "/partner/v1/orders", &other, "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn orders_beyond_the_daily_quota_are_refused_and_refused_orders_do_not_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let mut plans = small_plans();
    plans.get_mut("bronze").expect("bronze").requests_per_second = NonZeroU32::new(1000);
    plans.get_mut("bronze").expect("bronze").burst = NonZeroU32::new(1000);
    let app = gateway(&store, Limits::new(&plans, None).expect("limits"));
    let (_, key) = new_key(&store, "bronze").await;

    let order = |body| call(&app, Method::POST, "/partner/v1/orders", &key, body);
    assert_eq!(order("refuse").await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(order("{}").await.status, StatusCode::CREATED);
    assert_eq!(order("{}").await.status, StatusCode::CREATED, "the refused order gave its place back");
    assert_limited(&order("{}").await, "quota-exceeded");
    // Reads are not orders.
    assert_eq!(call(&app, Method::GET, "/partner/v1/orders", &key, "").await.status, StatusCode::OK);

    let usage = call(&app, Method::GET, "/partner/v1/usage", &key, "").await;
    assert_eq!(usage.status, StatusCode::OK);
    assert_eq!(usage.body["plan"], "bronze");
    assert_eq!((usage.body["orders_per_day"].as_u64(), usage.body["orders_today"].as_u64()), (Some(2), Some(2)));
    assert_eq!(usage.body["requests_per_second"], 1000);
    assert_eq!(usage.body["burst"], 1000);
    assert!(usage.body["requests_remaining"].as_u64().is_some_and(|r| r < 1000), "{}", usage.body);
}

/// Retries of one order with its `Idempotency-Key` count once, and are let
/// through after the quota is used up; a refused order's key counts when
/// its retry succeeds. `redis`: two replicas sharing it, taken in turn.
async fn an_order_counts_once_however_often_it_is_retried(redis: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let mut plans = small_plans();
    plans.get_mut("bronze").expect("bronze").requests_per_second = NonZeroU32::new(1000);
    plans.get_mut("bronze").expect("bronze").burst = NonZeroU32::new(1000);
    let replicas = [
        gateway(&store, Limits::new(&plans, redis).expect("limits a")),
        gateway(&store, Limits::new(&plans, redis).expect("limits b")),
    ];
    // Without Redis, one replica: its own count is the whole count.
    let turns = if redis.is_some() { 2 } else { 1 };
    let (_, key) = new_key(&store, "bronze").await;
    let mut n = 0;
    let mut order = |body: &'static str, idempotency_key: &'static str| {
        n += 1;
        call_with(&replicas[n % turns], Method::POST, "/partner/v1/orders", &key, body, Some(idempotency_key))
    };
    let placed = [
        order("{}", "order-1").await.status,
        order("{}", "order-1").await.status,
        order("{}", "order-1").await.status,
        order("{}", "order-1").await.status,
        order("{}", "order-2").await.status,
        order("{}", "order-1").await.status,
    ];
    assert_eq!(placed, [StatusCode::CREATED; 6], "two orders, each retried, within a quota of two");
    assert_limited(&order("{}", "order-3").await, "quota-exceeded");
    let usage = call(&replicas[0], Method::GET, "/partner/v1/usage", &key, "").await;
    assert_eq!(usage.body["orders_today"].as_u64(), Some(2), "{}", usage.body);

    let (_, other) = new_key(&store, "bronze").await;
    let mut order = |body: &'static str, idempotency_key: &'static str| {
        n += 1;
        call_with(&replicas[n % turns], Method::POST, "/partner/v1/orders", &other, body, Some(idempotency_key))
    };
    assert_eq!(order("refuse", "order-9").await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(order("{}", "order-9").await.status, StatusCode::CREATED, "its retry, corrected");
    assert_eq!(order("{}", "order-10").await.status, StatusCode::CREATED);
    assert_limited(&order("{}", "order-11").await, "quota-exceeded");
}

#[tokio::test]
async fn an_order_retried_with_its_idempotency_key_counts_once_against_the_quota() {
    an_order_counts_once_however_often_it_is_retried(None).await;
}

#[tokio::test]
async fn an_order_retried_on_two_replicas_sharing_redis_counts_once_against_the_quota() {
    an_order_counts_once_however_often_it_is_retried(Some(REDIS)).await;
}

/// The daily quota ends with the UTC day: used up a minute before
/// midnight, it is whole again a minute after, on one replica or on two
/// sharing Redis (each of which counts the day by its own clock).
async fn the_quota_is_whole_again_after_utc_midnight(redis: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let mut plans = small_plans();
    plans.get_mut("bronze").expect("bronze").requests_per_second = NonZeroU32::new(1000);
    plans.get_mut("bronze").expect("bronze").burst = NonZeroU32::new(1000);
    let clock = ManualClock::at(LATE_EVENING);
    let replica =
        || gateway(&store, Limits::with_clock(&plans, redis, LimitsClock::Manual(clock.clone())).expect("limits"));
    let replicas = [replica(), replica()];
    let (_, key) = new_key(&store, "bronze").await;
    let order = |replica: usize| call(&replicas[replica], Method::POST, "/partner/v1/orders", &key, "{}");
    let last = if redis.is_some() { 1 } else { 0 };
    assert_eq!(order(0).await.status, StatusCode::CREATED);
    assert_eq!(order(last).await.status, StatusCode::CREATED);
    let refused = order(0).await;
    assert_limited(&refused, "quota-exceeded");
    // The quota's Retry-After is the time to midnight: a minute.
    assert_eq!(header(&refused, "retry-after"), Some(60), "{:?}", refused.headers);
    clock.advance(Duration::from_secs(120));
    assert_eq!(order(last).await.status, StatusCode::CREATED, "a new UTC day");
    let usage = call(&replicas[0], Method::GET, "/partner/v1/usage", &key, "").await;
    assert_eq!(usage.body["orders_today"].as_u64(), Some(1), "{}", usage.body);
}

#[tokio::test]
async fn the_daily_quota_resets_at_utc_midnight() {
    the_quota_is_whole_again_after_utc_midnight(None).await;
}

#[tokio::test]
async fn the_daily_quota_shared_in_redis_resets_at_utc_midnight_on_every_replica() {
    the_quota_is_whole_again_after_utc_midnight(Some(REDIS)).await;
}

#[tokio::test]
async fn an_unmetered_key_gets_no_limit_and_no_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let app = gateway(&store, Limits::new(&small_plans(), None).expect("limits"));
    let (_, key) = new_key(&store, "unmetered").await;
    for _ in 0..50 {
        let reply = call(&app, Method::POST, "/partner/v1/orders", &key, "{}").await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert!(reply.headers.get("ratelimit-limit").is_none());
    }
    let usage = call(&app, Method::GET, "/partner/v1/usage", &key, "").await;
    assert_eq!(usage.body["plan"], "unmetered");
    assert!(usage.body["orders_per_day"].is_null() && usage.body["burst"].is_null(), "{}", usage.body);
}

/// A fresh Redis database number is not needed: key ids are unique per key.
const REDIS: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_hold_one_limit_and_both_see_a_revocation() {
    let pg = platform::database::ScratchPostgres::create("gateway_limits").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = [
        KeyStore::open(Some(&pg.url()), dir.path()).await.expect("store a"),
        KeyStore::open(Some(&pg.url()), dir.path()).await.expect("store b"),
    ];
    let replicas = [
        gateway(&stores[0], Limits::new(&small_plans(), Some(REDIS)).expect("limits a")),
        gateway(&stores[1], Limits::new(&small_plans(), Some(REDIS)).expect("limits b")),
    ];
    let (id, key) = new_key(&stores[0], "bronze").await;

    // 40 requests at once, half to each replica. Per-replica limits would
    // admit a burst on each (8); a shared one admits the burst (4) plus
    // what the rate gave back while the requests were in flight.
    let start = Instant::now();
    let replies = futures_util::future::join_all(
        (0..40).map(|i| call(&replicas[i % 2], Method::GET, "/partner/v1/orders", &key, "")),
    )
    .await;
    let elapsed = start.elapsed();
    let admitted = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != StatusCode::OK).collect();
    let bound = 4 + (elapsed.as_secs_f64() * 2.0).ceil() as usize;
    assert!(admitted >= 4 && admitted <= bound, "admitted {admitted} in {elapsed:?}, limit + burst {bound}");
    for reply in refused {
        assert_limited(reply, "rate-limited");
    }

    // Revoked through replica A's store; both refuse it within 5 s.
    let admin = stores[0].revoke(&id, gateway::key_store::now_ms() / 1000, "test").await.expect("revoke");
    assert!(admin.revoked_at.is_some());
    let revoked = Instant::now();
    for replica in &replicas {
        loop {
            let status = call(replica, Method::GET, "/partner/v1/usage", &key, "").await.status;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(revoked.elapsed() < Duration::from_secs(5), "still {status} 5 s after the revocation");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn with_redis_down_each_replica_keeps_its_own_limit() {
    // Every connection to "Redis" is reset at once.
    let redis = faults::FaultProxy::start("127.0.0.1:6379".parse().expect("addr"));
    redis.set(faults::Fault::Reset);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let clock = LimitsClock::Manual(ManualClock::at(LATE_EVENING));
    let limits = Limits::with_clock(&small_plans(), Some(&format!("redis://{}", redis.addr())), clock).expect("limits");
    let app = gateway(&store, limits);
    let (_, key) = new_key(&store, "bronze").await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(call(&app, Method::GET, "/partner/v1/orders", &key, "").await.status);
    }
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(admitted, 4, "the local limit stands in, its burst of 4: {statuses:?}");
    assert_eq!(statuses[0], StatusCode::OK, "Redis being down refuses nobody");
}

/// The log lines written on this thread while `guard` lives (a
/// current-thread runtime runs every task of the test on it).
struct Logged(std::sync::Arc<std::sync::Mutex<String>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (std::sync::Arc<std::sync::Mutex<String>>, tracing::subscriber::DefaultGuard) {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || Logged(writer.clone()))
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_redis_that_hangs_is_given_up_on_and_reported_once_per_outage() {
    let (logs, _guard) = capture_logs();
    let count = |what: &str| logs.lock().expect("not poisoned").matches(what).count();
    let redis = faults::FaultProxy::start("127.0.0.1:6379".parse().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let limits =
        Limits::new(&gateway::limits::builtin_plans(), Some(&format!("redis://{}", redis.addr()))).expect("limits");
    let app = gateway(&store, limits);
    let (_, key) = new_key(&store, "gold").await;
    let get = || call(&app, Method::GET, "/partner/v1/orders", &key, "");
    assert_eq!(get().await.status, StatusCode::OK, "Redis answers");

    for outage in 1..=2 {
        // Redis hangs: connected, never answering. Each request is still
        // answered (decided on this replica), and the outage logged once.
        redis.set(faults::Fault::Blackhole);
        for _ in 0..20 {
            assert_eq!(get().await.status, StatusCode::OK, "outage {outage}: served");
        }
        assert_eq!(count("Redis unavailable"), outage, "one warning per outage: {}", logs.lock().expect("logs"));
        // It answers again: the next request after the pause goes to it.
        redis.set(faults::Fault::Pass);
        let deadline = Instant::now() + Duration::from_secs(30);
        while count("Redis answers again") < outage {
            assert!(Instant::now() < deadline, "Redis never used again: {}", logs.lock().expect("logs"));
            assert_eq!(get().await.status, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A request with a key from a client address, as the listener marks it.
async fn call_from(app: &Router, client: &str, key: &str) -> Reply {
    let peer: std::net::SocketAddr = format!("{client}:40000").parse().expect("address");
    let mut request =
        Request::builder().uri("/partner/v1/orders").header("x-api-key", key).body(Body::empty()).expect("request");
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    send(app, request).await
}

#[tokio::test]
async fn an_address_that_keeps_presenting_wrong_keys_is_locked_out_and_others_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = KeyStore::open(None, dir.path()).await.expect("store");
    let lockout = gateway::lockout::Lockout::new(5, Duration::from_secs(60), Vec::new());
    let app =
        gateway(&store, Limits::new(&gateway::limits::builtin_plans(), None).expect("limits").with_lockout(lockout));
    let (_, key) = new_key(&store, "unmetered").await;
    for _ in 0..5 {
        let unknown = ApiKey::generate().expect("random");
        assert_eq!(call_from(&app, "10.0.0.1", unknown.expose()).await.status, StatusCode::UNAUTHORIZED);
    }
    // Locked now, even for a key that works: a stuffing run learns nothing.
    let locked = call_from(&app, "10.0.0.1", key.expose()).await;
    assert_limited(&locked, "too-many-failed-authentications");
    assert!(header(&locked, "retry-after").is_some_and(|s| s <= 60), "{:?}", locked.headers);
    assert_eq!(call_from(&app, "10.0.0.2", key.expose()).await.status, StatusCode::OK, "another address");
}
