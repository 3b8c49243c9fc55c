//! Rate limits and quotas of partner API keys, by plan (DESIGN.md, "Plans").
//!
//! Two limits per key: requests per second with a burst (GCRA: a key may
//! send `burst` requests at once, then one per `1/rate` seconds), and orders
//! per UTC day, a business quota counted on `POST /partner/v1/orders`. An
//! order counts once: a retry with the same `Idempotency-Key` (which
//! replays the first answer) is let through without counting again, even
//! when the quota is used up meanwhile, and an order refused or failed
//! gives its place back.
//!
//! In memory by default (governor's GCRA, lock-free per key). With
//! `gateway.redis_url` the same GCRA runs inside Redis (one Lua script, on
//! Redis's clock), so a key's limit holds across every gateway replica.
//! When Redis does not answer within [`REDIS_TIMEOUT`] the local limiter
//! stands in (fail open to a per-replica limit rather than refuse traffic),
//! Redis is left alone for [`REDIS_PAUSE`], a warning is logged once per
//! outage and [`Limits::fallbacks`] counts the requests decided locally.
//!
//! Metrics (Prometheus, see `platform::metrics`):
//! `erp_connect_rate_limit_rejections_total{plan, kind}` (`kind` is `rate`
//! or `quota`; [`count_rejection`]), `erp_connect_rate_limit_redis_fallbacks_total`
//! (decisions made locally because the configured Redis did not answer) and
//! `erp_connect_rate_limit_redis_down` (1 during an outage, 0 otherwise;
//! only with Redis configured).

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware, nanos::Nanos,
    state::keyed::DefaultKeyedStateStore,
};
use platform::metrics::facade::{Counter, counter, gauge};
use serde::Deserialize;

/// Longest wait for Redis on the request path before deciding locally.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is left alone after it failed to answer.
pub const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// Longest wait for a connection to Redis: one is made at start
/// ([`Limits::warm_up`]) off the request path, and again after Redis went
/// away; a request still never waits longer than [`REDIS_TIMEOUT`].
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `[gateway.plans.NAME]`: one plan's limits. A limit left out is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Sustained requests per second.
    pub requests_per_second: Option<NonZeroU32>,
    /// Requests allowed at once; default `requests_per_second`.
    pub burst: Option<NonZeroU32>,
    /// Orders a key may place per UTC day.
    pub orders_per_day: Option<u64>,
}

impl Plan {
    const fn builtin(rate: u32, burst: u32, orders: u64) -> Self {
        Self { requests_per_second: NonZeroU32::new(rate), burst: NonZeroU32::new(burst), orders_per_day: Some(orders) }
    }

    /// `(rate, burst)` when requests are limited.
    fn rate(&self) -> Option<(NonZeroU32, NonZeroU32)> {
        let rate = self.requests_per_second?;
        Some((rate, self.burst.unwrap_or(rate)))
    }
}

/// The plan of a new key unless another is asked for.
pub const DEFAULT_PLAN: &str = "bronze";

/// The built-in plans; `[gateway.plans]` overrides them by name or adds more.
pub fn builtin_plans() -> BTreeMap<String, Plan> {
    BTreeMap::from([
        ("bronze".to_owned(), Plan::builtin(10, 20, 1_000)),
        ("silver".to_owned(), Plan::builtin(100, 200, 10_000)),
        ("gold".to_owned(), Plan::builtin(1_000, 2_000, 100_000)),
        ("unmetered".to_owned(), Plan { requests_per_second: None, burst: None, orders_per_day: None }),
    ])
}

/// The answer for one request of a rate-limited key, and what its
/// `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The burst: requests the key may send at once.
    pub limit: u32,
    /// Requests the key may still send right now.
    pub remaining: u32,
    /// Until the key could send a whole burst again.
    pub reset: Duration,
    /// When refused: until the next request would be admitted.
    pub retry_after: Duration,
}

/// The daily order quota of a key, after one order was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether the order may be placed.
    pub allowed: bool,
    /// Orders per day.
    pub limit: u64,
    /// Orders counted today, this one included when allowed.
    pub used: u64,
    /// Until the quota starts over (next UTC midnight).
    pub reset: Duration,
    /// Whether this request was counted (false for a refusal and for a
    /// retry of an order counted already): only then is there a place to
    /// give back with [`Limits::release_order`].
    pub counted: bool,
}

/// Orders of one key on this replica today.
#[derive(Debug, Default)]
struct LocalOrders {
    day: u64,
    count: u64,
    /// Digests of the idempotency keys counted today.
    keys: std::collections::HashSet<String>,
}

type LocalLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, LimitsClock, StateInformationMiddleware>;

/// The limits' time: the system's, or a clock a test sets by hand, so that
/// rates and the UTC day's quota are checked without waiting for either.
/// (Redis's own rate limit runs on the Redis server's clock.)
#[derive(Debug, Clone)]
pub enum LimitsClock {
    /// Monotonic time since the limits were made, and the wall clock's day.
    System(std::time::Instant),
    /// Unix milliseconds, moved by the test.
    Manual(ManualClock),
}

/// A clock at a Unix time in milliseconds, moved by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(std::sync::Arc<AtomicU64>);

impl ManualClock {
    /// A clock at `unix_ms`.
    pub fn at(unix_ms: u64) -> Self {
        Self(std::sync::Arc::new(AtomicU64::new(unix_ms)))
    }

    /// Moves it on by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn unix_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for LimitsClock {
    fn default() -> Self {
        Self::System(std::time::Instant::now())
    }
}

impl Clock for LimitsClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::System(start) => Nanos::from(start.elapsed()),
            Self::Manual(clock) => Nanos::from(Duration::from_millis(clock.unix_ms())),
        }
    }
}

impl LimitsClock {
    /// Days since the Unix epoch (UTC), and the time left in this one.
    fn utc_day(&self) -> (u64, Duration) {
        let now = match self {
            Self::System(_) => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            Self::Manual(clock) => Duration::from_millis(clock.unix_ms()),
        };
        let day = now.as_secs() / 86_400;
        (day, Duration::from_secs((day + 1) * 86_400).saturating_sub(now))
    }
}

/// Every plan's limiters; shared by all requests of one gateway.
pub struct Limits {
    plans: HashMap<String, PlanLimits>,
    redis: Option<SharedCounters>,
    /// Orders per key on this replica today.
    local_orders: Mutex<HashMap<String, LocalOrders>>,
    fallbacks: AtomicU64,
    /// [`Limits::fallbacks`] as a Prometheus counter.
    fallback_counter: Counter,
    /// Whether a key's unknown plan was logged already.
    unknown_plan_logged: AtomicBool,
    /// Failed authentications per client address.
    lockout: crate::lockout::Lockout,
    /// Time for the local limits and the quota's day.
    clock: LimitsClock,
}

fn describe() {
    use platform::metrics::facade::{describe_counter, describe_gauge};
    describe_counter!(
        "erp_connect_rate_limit_rejections_total",
        "Requests refused with 429, by plan and kind (rate, quota)."
    );
    describe_counter!(
        "erp_connect_rate_limit_redis_fallbacks_total",
        "Rate-limit decisions made by the local limiter because the configured Redis did not answer."
    );
    describe_gauge!(REDIS_DOWN, "1 while the configured Redis does not answer (limits are per replica), else 0.");
}

/// The gauge that says Redis, configured, does not answer.
const REDIS_DOWN: &str = "erp_connect_rate_limit_redis_down";

/// Counts a request refused with 429: `kind` is `rate` (requests per
/// second) or `quota` (orders per day). Plans come from the configuration,
/// so the label set stays small.
pub fn count_rejection(plan: &str, kind: &'static str) {
    counter!("erp_connect_rate_limit_rejections_total", "plan" => plan.to_owned(), "kind" => kind).increment(1);
}

struct PlanLimits {
    plan: Plan,
    local: Option<LocalLimiter>,
}

/// Errors building the limits.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `gateway.redis_url` is not a Redis URL.
    #[error("gateway.redis_url: {0}")]
    RedisUrl(redis::RedisError),
    /// A plan with a burst but no rate.
    #[error("gateway.plans.{0}: a burst needs requests_per_second")]
    BurstWithoutRate(String),
}

impl Limits {
    /// Limits for `plans`, in Redis at `redis_url` when given (connected on
    /// first use, so a gateway starts while Redis is down).
    pub fn new(plans: &BTreeMap<String, Plan>, redis_url: Option<&str>) -> Result<Self, Error> {
        Self::with_clock(plans, redis_url, LimitsClock::default())
    }

    /// [`Limits::new`] on `clock` (a test's).
    pub fn with_clock(
        plans: &BTreeMap<String, Plan>,
        redis_url: Option<&str>,
        clock: LimitsClock,
    ) -> Result<Self, Error> {
        if let Some((name, _)) = plans.iter().find(|(_, p)| p.burst.is_some() && p.requests_per_second.is_none()) {
            return Err(Error::BurstWithoutRate(name.clone()));
        }
        let plans = plans
            .iter()
            .map(|(name, plan)| {
                let local = plan.rate().map(|(rate, burst)| {
                    LocalLimiter::new(
                        Quota::per_second(rate).allow_burst(burst),
                        DefaultKeyedStateStore::default(),
                        clock.clone(),
                    )
                });
                (name.clone(), PlanLimits { plan: *plan, local })
            })
            .collect();
        let redis = redis_url.map(SharedCounters::new).transpose()?;
        // Before the first handle: one made without a recorder stays a no-op.
        platform::metrics::install();
        describe();
        if redis.is_some() {
            gauge!(REDIS_DOWN).set(0.0);
        }
        Ok(Self {
            plans,
            redis,
            local_orders: Mutex::new(HashMap::new()),
            fallbacks: AtomicU64::new(0),
            fallback_counter: counter!("erp_connect_rate_limit_redis_fallbacks_total"),
            unknown_plan_logged: AtomicBool::new(false),
            lockout: crate::lockout::Lockout::default(),
            clock,
        })
    }

    /// Connects to Redis and loads the scripts before the first request
    /// needs them: a replica just started (or restarted under load) then
    /// shares its limits from its first request, instead of deciding
    /// locally while a connection and two script loads outlast
    /// [`REDIS_TIMEOUT`]. Without Redis, or when it does not answer, does
    /// nothing but log: the request path copes as ever.
    pub async fn warm_up(&self) {
        if let Some(redis) = &self.redis {
            redis.warm_up().await;
        }
    }

    /// The limits of `plan`. A plan the configuration no longer knows gets
    /// the default plan's limits: a key never gains by a configuration slip.
    pub fn plan(&self, plan: &str) -> Option<Plan> {
        self.plan_limits(plan).map(|p| p.plan)
    }

    fn plan_limits(&self, plan: &str) -> Option<&PlanLimits> {
        self.plans.get(plan).or_else(|| {
            // Once per process: this runs on every request of such a key.
            if !self.unknown_plan_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(plan, "a key has a plan the configuration does not define; the default plan applies");
            }
            self.plans.get(DEFAULT_PLAN)
        })
    }

    /// Counts one request of `key` (a key id) on `plan`; `None` when the
    /// plan does not limit requests.
    pub async fn check_rate(&self, key: &str, plan: &str) -> Option<RateDecision> {
        let limits = self.plan_limits(plan)?;
        let (rate, burst) = limits.plan.rate()?;
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable())
            && let Some(decision) = redis.check_rate(key, rate, burst).await
        {
            return Some(decision);
        }
        self.note_fallback();
        limits.local.as_ref().map(|local| check_local(local, key, rate, burst))
    }

    /// Counts one order of `key` against its plan's daily quota; `None`
    /// when the plan has none. A refused order is not counted, nor is a
    /// retry with an `idempotency_key` counted today already; call
    /// [`Limits::release_order`] when a counted one was not placed after all.
    pub async fn reserve_order(&self, key: &str, plan: &str, idempotency_key: Option<&str>) -> Option<QuotaDecision> {
        let limit = self.plan_limits(plan)?.plan.orders_per_day?;
        let (day, reset) = self.clock.utc_day();
        let digest = idempotency_key.map(digest);
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable())
            && let Some((used, counted)) = redis.reserve_order(key, day, limit, digest.as_deref()).await
        {
            let allowed = counted || used <= limit;
            return Some(QuotaDecision { allowed, limit, used: used.min(limit), reset, counted });
        }
        self.note_fallback();
        let mut orders = self.local_orders.lock().unwrap_or_else(|e| e.into_inner());
        let entry = orders.entry(key.to_owned()).or_default();
        if entry.day != day {
            *entry = LocalOrders { day, ..LocalOrders::default() };
        }
        if digest.as_ref().is_some_and(|d| entry.keys.contains(d)) {
            return Some(QuotaDecision { allowed: true, limit, used: entry.count, reset, counted: false });
        }
        let allowed = entry.count < limit;
        if allowed {
            entry.count += 1;
            entry.keys.extend(digest);
        }
        Some(QuotaDecision { allowed, limit, used: entry.count, reset, counted: allowed })
    }

    /// Gives back an order [`Limits::reserve_order`] counted but that was
    /// not placed (refused, invalid, failed), and forgets its idempotency
    /// key, so a retry that then succeeds counts.
    pub async fn release_order(&self, key: &str, idempotency_key: Option<&str>) {
        let (day, _) = self.clock.utc_day();
        let digest = idempotency_key.map(digest);
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable())
            && redis.release_order(key, day, digest.as_deref()).await
        {
            return;
        }
        let mut orders = self.local_orders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = orders.get_mut(key).filter(|e| e.day == day) {
            entry.count = entry.count.saturating_sub(1);
            if let Some(d) = digest {
                entry.keys.remove(&d);
            }
        }
    }

    /// Orders `key` placed today, without counting one.
    pub async fn orders_today(&self, key: &str) -> u64 {
        let (day, _) = self.clock.utc_day();
        if let Some(redis) = self.redis.as_ref().filter(|r| r.usable())
            && let Some(used) = redis.orders_today(key, day).await
        {
            return used;
        }
        let orders = self.local_orders.lock().unwrap_or_else(|e| e.into_inner());
        orders.get(key).filter(|e| e.day == day).map_or(0, |e| e.count)
    }

    /// Counts failed authentications with `lockout`'s settings.
    pub fn with_lockout(mut self, lockout: crate::lockout::Lockout) -> Self {
        self.lockout = lockout;
        self
    }

    /// Failed authentications per client address.
    pub fn lockout(&self) -> &crate::lockout::Lockout {
        &self.lockout
    }

    /// Requests decided by the local limiter because Redis, configured,
    /// did not answer.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn note_fallback(&self) {
        if self.redis.is_some() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            self.fallback_counter.increment(1);
        }
    }
}

fn check_local(limiter: &LocalLimiter, key: &str, rate: NonZeroU32, burst: NonZeroU32) -> RateDecision {
    let limit = burst.get();
    // One request's capacity comes back every `interval`.
    let interval = Duration::from_secs(1) / rate.get();
    match limiter.check_key(&key.to_owned()) {
        Ok(state) => {
            let remaining = state.remaining_burst_capacity();
            RateDecision {
                allowed: true,
                limit,
                remaining,
                reset: interval * (limit - remaining),
                retry_after: Duration::ZERO,
            }
        }
        Err(not_until) => {
            let retry_after = not_until.wait_time_from(limiter.clock().now());
            RateDecision { allowed: false, limit, remaining: 0, reset: interval * limit, retry_after }
        }
    }
}

/// The counters in Redis, shared by every replica.
struct SharedCounters {
    client: redis::Client,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// Unix ms before which Redis is not asked (after a failure).
    paused_until: AtomicU64,
    /// Whether the last attempt failed: the outage is logged once.
    down: AtomicBool,
    gcra: redis::Script,
    reserve: redis::Script,
}

/// GCRA on Redis's clock, in microseconds. The state is the key's
/// theoretical arrival time (TAT); a request is admitted when the new TAT
/// is at most `burst` intervals ahead of now. Returns `{allowed,
/// remaining, reset_us, retry_after_us}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, tat - now, new_tat - tolerance - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + tolerance - new_tat) / interval), new_tat - now, 0}
";

/// Counts one order unless the quota is used up or the idempotency key's
/// marker (KEYS[2], when given) says it was counted today already; returns
/// `{count, counted}` (count `limit + 1` when refused). Counter and marker
/// expire a day after their day ends.
const RESERVE: &str = r"
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return {tonumber(redis.call('GET', KEYS[1]) or 0), 0}
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 172800) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {n, 0}
end
if KEYS[2] then redis.call('SET', KEYS[2], '1', 'EX', 172800) end
return {n, 1}
";

impl SharedCounters {
    fn new(url: &str) -> Result<Self, Error> {
        Ok(Self {
            client: redis::Client::open(url).map_err(Error::RedisUrl)?,
            connection: tokio::sync::OnceCell::new(),
            paused_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            gcra: redis::Script::new(GCRA),
            reserve: redis::Script::new(RESERVE),
        })
    }

    fn usable(&self) -> bool {
        self.paused_until.load(Ordering::Relaxed) <= now_ms()
    }

    /// The shared connection, made on first use.
    async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(connection.clone())
    }

    /// See [`Limits::warm_up`].
    async fn warm_up(&self) {
        let ready = async {
            let mut connection = self.connection().await?;
            self.gcra.prepare_invoke().load_async(&mut connection).await?;
            self.reserve.prepare_invoke().load_async(&mut connection).await?;
            Ok::<_, redis::RedisError>(())
        };
        // Debug only: an outage is warned about once, by the request path
        // that meets it ([`SharedCounters::run`]), not again from here.
        match tokio::time::timeout(REDIS_CONNECT_TIMEOUT, ready).await {
            Ok(Ok(())) => tracing::debug!("connected to Redis: rate limits are shared across replicas"),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "no Redis connection at start; the first request tries again")
            }
            Err(_) => tracing::debug!("Redis did not answer at start; the first request tries again"),
        }
    }

    /// Runs `call` on the shared connection within [`REDIS_TIMEOUT`];
    /// `None` (and a pause) when Redis does not answer.
    async fn run<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async { call(self.connection().await?).await };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    gauge!(REDIS_DOWN).set(0.0);
                    tracing::info!("Redis answers again: rate limits are shared across replicas again");
                }
                Some(value)
            }
            outcome => {
                self.paused_until.store(now_ms() + REDIS_PAUSE.as_millis() as u64, Ordering::Relaxed);
                if !self.down.swap(true, Ordering::Relaxed) {
                    gauge!(REDIS_DOWN).set(1.0);
                    let error = match outcome {
                        Ok(Err(err)) => err.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(%error, "Redis unavailable: rate limits and quotas are per replica until it is back");
                }
                None
            }
        }
    }

    async fn check_rate(&self, key: &str, rate: NonZeroU32, burst: NonZeroU32) -> Option<RateDecision> {
        let interval_us = 1_000_000 / u64::from(rate.get());
        let mut invocation = self.gcra.key(format!("erp-connect:rate:{key}"));
        invocation.arg(interval_us).arg(burst.get());
        let (allowed, remaining, reset_us, retry_us): (u8, u32, u64, u64) =
            self.run(move |mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Some(RateDecision {
            allowed: allowed == 1,
            limit: burst.get(),
            remaining,
            reset: Duration::from_micros(reset_us),
            retry_after: Duration::from_micros(retry_us),
        })
    }

    async fn reserve_order(&self, key: &str, day: u64, limit: u64, digest: Option<&str>) -> Option<(u64, bool)> {
        let mut invocation = self.reserve.key(orders_key(key, day));
        if let Some(digest) = digest {
            invocation.key(format!("{}:idem:{digest}", orders_key(key, day)));
        }
        invocation.arg(limit);
        let (used, counted): (u64, u8) =
            self.run(move |mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Some((used, counted == 1))
    }

    async fn release_order(&self, key: &str, day: u64, digest: Option<&str>) -> bool {
        let counter = orders_key(key, day);
        let marker = digest.map(|d| format!("{counter}:idem:{d}"));
        self.run(move |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.cmd("DECR").arg(&counter).ignore();
            if let Some(marker) = &marker {
                pipe.cmd("DEL").arg(marker).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .is_some()
    }

    async fn orders_today(&self, key: &str, day: u64) -> Option<u64> {
        let counter = orders_key(key, day);
        self.run(move |mut c| async move { redis::cmd("GET").arg(counter).query_async::<Option<u64>>(&mut c).await })
            .await
            .map(Option::unwrap_or_default)
    }
}

/// An idempotency key as kept beside the quota: a digest, so a client's
/// long or odd key never shapes a Redis key.
fn digest(idempotency_key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(idempotency_key.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn orders_key(key: &str, day: u64) -> String {
    format!("erp-connect:orders:{key}:{day}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
