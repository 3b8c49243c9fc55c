//! Metrics: Prometheus text for `GET /metrics`, and a short in-process
//! history of each tier's traffic for the ops console's overview.
//!
//! One recorder per process ([`install`], idempotent): every tier's router
//! installs it when it is built, so `up` (all tiers in one process) renders
//! every tier's series at one `/metrics`, and `serve` renders the one
//! tier's. Tier crates record their own families (saga outcomes, breaker
//! states, rate-limit rejections ...) through the `metrics` facade,
//! re-exported here as [`facade`]; this module records what every tier has:
//!
//! - HTTP tiers ([`instrument_http`]): `erp_connect_http_requests_total`
//!   `{tier, method, route, status}` and
//!   `erp_connect_http_request_duration_seconds{tier, method, route}`. The
//!   route is the router's template (`/web/v1/orders/{id}`) or `unmatched`,
//!   never the raw path.
//! - gRPC tiers ([`instrument_grpc`]): `erp_connect_grpc_requests_total`
//!   `{tier, service, method, code}` and
//!   `erp_connect_grpc_request_duration_seconds{tier, service, method}`; a
//!   call's code comes from `grpc-status` in the headers or the trailers,
//!   and its duration runs to the end of the response stream. A method the
//!   service does not have is `unimplemented`, so made-up paths add no series.
//! - [`history`]: per tier, requests, errors and p50/p99 latency in 10 s
//!   steps over the last 15 minutes, kept in a ring buffer that a
//!   background thread fills; requests only add to a few atomics.
//!
//! Errors, for the history: HTTP 5xx answers; gRPC codes whose HTTP
//! equivalent is 5xx (`Unknown`, `DeadlineExceeded`, `Unimplemented`,
//! `Internal`, `Unavailable`, `DataLoss`). A caller's mistakes
//! (`NotFound`, `InvalidArgument`, `AlreadyExists`, `FailedPrecondition`,
//! `PermissionDenied`, ...) are not the service failing.
//!
//! The request path stays cheap: label values are `&'static str` (route
//! templates and method names are interned once, process-wide, with a cap),
//! and each worker thread keeps the counter and histogram handles it has
//! used, so a request costs a thread-local lookup and a few atomic adds:
//! about half a microsecond with axum's own cost of a layer, on the 2-core
//! machine (`metrics_overhead`, an ignored test, measures it).

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        LazyLock, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use ::metrics as facade;
use ::metrics::{Counter, Histogram, counter, histogram};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{MatchedPath, Request},
    response::{IntoResponse, Response},
};
use http::{Method, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// Bucket bounds (seconds) of every `*_duration_seconds` histogram: from
/// 100 µs (the gateway's own work) to 10 s (a slow ERP).
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds (seconds) of data-latency histograms (`*_lag_seconds`):
/// from a poll interval to minutes.
pub const LAG_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Distinct interned label values (route templates, gRPC methods, status
/// codes) per process; past it, new values are recorded as `other`. Far
/// above what the route tables hold, low enough to bound memory and series.
const MAX_INTERNED: usize = 512;

/// A tier, as the `tier` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The authenticating gateway (HTTP).
    Gateway,
    /// The experience APIs (HTTP).
    Experience,
    /// The process APIs (gRPC).
    Process,
    /// The system APIs (gRPC).
    System,
}

impl Tier {
    /// Every tier, front to back.
    pub const ALL: [Tier; 4] = [Tier::Gateway, Tier::Experience, Tier::Process, Tier::System];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Gateway => "gateway",
            Tier::Experience => "experience",
            Tier::Process => "process",
            Tier::System => "system",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Installs the process's Prometheus recorder on first call and returns
/// its handle; later calls return the same handle. Also starts the thread
/// that keeps histograms drained and [`history`] sampled.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (matcher, buckets) in [
            (Matcher::Suffix("_duration_seconds".into()), &LATENCY_BUCKETS[..]),
            (Matcher::Suffix("_lag_seconds".into()), &LAG_BUCKETS[..]),
            (Matcher::Suffix("_latency_seconds".into()), &LAG_BUCKETS[..]),
        ] {
            // Only an empty bucket list is refused; these are constants.
            builder = match builder.set_buckets_for_metric(matcher, buckets) {
                Ok(builder) => builder,
                Err(err) => unreachable!("constant buckets refused: {err}"),
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only the request history");
        }
        describe();
        LazyLock::force(&HISTORY);
        let upkeep = handle.clone();
        let started = std::thread::Builder::new().name("metrics".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                upkeep.run_upkeep();
                history_tick(unix_now());
            }
        });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot start the metrics thread; the overview history stays empty");
        }
        handle
    })
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "erp_connect_http_requests_total",
        "HTTP requests answered, by tier, method, route template and status."
    );
    describe_histogram!(
        "erp_connect_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by tier, method and route template."
    );
    describe_counter!("erp_connect_grpc_requests_total", "gRPC calls answered, by tier, service, method and code.");
    describe_histogram!(
        "erp_connect_grpc_request_duration_seconds",
        Unit::Seconds,
        "Time of a gRPC call to the end of its response stream, by tier, service and method."
    );
}

/// The Prometheus text of every series of this process.
pub fn render() -> String {
    install().render()
}

/// `GET /metrics`: the Prometheus text exposition format.
pub async fn endpoint() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render()).into_response()
}

/// `router` with `GET /metrics` (outside any layer already on it, so a
/// scraper needs no credential).
pub fn with_endpoint(router: Router) -> Router {
    router.route("/metrics", axum::routing::get(endpoint))
}

/// `routes` with `GET /metrics` answered over HTTP/1.1 or HTTP/2 on the
/// gRPC port (the server must accept HTTP/1.1 for Prometheus).
pub fn grpc_with_endpoint(routes: tonic::service::Routes) -> tonic::service::Routes {
    tonic::service::Routes::from(with_endpoint(routes.into_axum_router()))
}

// ---------------------------------------------------------------------------
// Label values

/// A `&'static str` equal to `value`: from this thread's cache, else from
/// the process-wide table (leaked once per distinct value, at most
/// [`MAX_INTERNED`] of them; `other` beyond).
fn intern(value: &str) -> &'static str {
    thread_local! {
        static LOCAL: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
    }
    static GLOBAL: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(|| Mutex::new(HashSet::new()));
    if let Some(found) = LOCAL.with(|local| local.borrow().get(value).copied()) {
        return found;
    }
    let mut global = GLOBAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let interned = match global.get(value) {
        Some(found) => *found,
        None if global.len() >= MAX_INTERNED => return "other",
        None => {
            let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
            global.insert(leaked);
            leaked
        }
    };
    drop(global);
    LOCAL.with(|local| local.borrow_mut().insert(interned));
    interned
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The label of a gRPC code (as grpc-go's Prometheus middleware names them).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Whether a gRPC code means the service failed (its HTTP equivalent is 5xx).
pub fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}

// ---------------------------------------------------------------------------
// HTTP

/// `router` with every request counted and timed as `tier`. Added with
/// [`Router::layer`], so it sees the matched route template; apply it after
/// the routes and the fallback are in place.
pub fn instrument_http(router: Router, tier: Tier) -> Router {
    router.layer(http_layer(tier))
}

/// [`instrument_http`]'s layer, to stack with a tier's other layers in one
/// [`Router::layer`] call (each call boxes every route once more).
pub fn http_layer(tier: Tier) -> HttpLayer {
    install();
    HttpLayer(tier)
}

/// [`http_layer`]: a plain service rather than `middleware::from_fn`, which
/// boxes a future and a service per request (measured: twice what the
/// recording itself costs).
#[derive(Debug, Clone, Copy)]
pub struct HttpLayer(Tier);

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpService<S>;

    fn layer(&self, inner: S) -> HttpService<S> {
        HttpService { inner, tier: self.0 }
    }
}

/// [`HttpLayer`]'s service.
#[derive(Debug, Clone)]
pub struct HttpService<S> {
    inner: S,
    tier: Tier,
}

impl<S> tower::Service<Request> for HttpService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HttpFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| intern(path.as_str()));
        HttpFuture { inner: self.inner.call(request), tier: self.tier, method, route, started: Instant::now() }
    }
}

pin_project_lite::pin_project! {
    /// The routed request's future; records its answer when it is ready.
    pub struct HttpFuture<F> {
        #[pin]
        inner: F,
        tier: Tier,
        method: &'static str,
        route: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for HttpFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            observe_http(*this.tier, this.method, this.route, response.status(), this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

fn observe_http(tier: Tier, method: &'static str, route: &'static str, status: http::StatusCode, elapsed: Duration) {
    pulse(tier).record(elapsed, status.is_server_error());
    let key = HttpKey { tier, method, route, status: status.as_u16() };
    HTTP_HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let handles = handles.entry(key).or_insert_with(|| {
            let (tier, status) = (tier.as_str(), intern(status.as_str()));
            HttpHandles {
                requests: counter!("erp_connect_http_requests_total",
                    "tier" => tier, "method" => method, "route" => route, "status" => status),
                duration: histogram!("erp_connect_http_request_duration_seconds",
                    "tier" => tier, "method" => method, "route" => route),
            }
        });
        handles.requests.increment(1);
        handles.duration.record(elapsed.as_secs_f64());
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HttpKey {
    tier: Tier,
    method: &'static str,
    route: &'static str,
    status: u16,
}

struct HttpHandles {
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    static HTTP_HANDLES: RefCell<HashMap<HttpKey, HttpHandles>> = RefCell::new(HashMap::new());
    static GRPC_HANDLES: RefCell<HashMap<GrpcKey, HttpHandles>> = RefCell::new(HashMap::new());
}

// ---------------------------------------------------------------------------
// gRPC

/// `routes` with every gRPC call counted and timed as `tier`. Requests that
/// are not gRPC (e.g. `GET /metrics`) pass untouched.
pub fn instrument_grpc(routes: tonic::service::Routes, tier: Tier) -> tonic::service::Routes {
    install();
    tonic::service::Routes::from(routes.into_axum_router().layer(GrpcLayer(tier)))
}

/// [`instrument_grpc`]'s layer: a plain service, as [`HttpLayer`] is.
#[derive(Debug, Clone, Copy)]
struct GrpcLayer(Tier);

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService { inner, tier: self.0 }
    }
}

#[derive(Debug, Clone)]
struct GrpcService<S> {
    inner: S,
    tier: Tier,
}

impl<S> tower::Service<Request> for GrpcService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GrpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        // Routes are `/{package.Service}/{*rest}`: the template names the service.
        let call = is_grpc.then(|| {
            let service = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |path| intern(path.as_str().trim_start_matches('/').trim_end_matches("/{*rest}")));
            GrpcCall { tier: self.tier, service, method: MethodName::of(request.uri().path()), started: Instant::now() }
        });
        GrpcFuture { inner: self.inner.call(request), call }
    }
}

pin_project_lite::pin_project! {
    /// The call's future; records it when the answer's head says how it
    /// ended, else hands the recording to the body.
    struct GrpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<GrpcCall>,
    }
}

impl<F, E> Future for GrpcFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match (result, this.call.take()) {
            (Ok(response), Some(call)) => Ok(metered(response, call)),
            (result, _) => result,
        })
    }
}

/// A method name copied out of the request path without allocating; names
/// longer than this are recorded as `other`.
#[derive(Clone, Copy)]
struct MethodName {
    bytes: [u8; 64],
    len: usize,
}

impl MethodName {
    fn of(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or("");
        let mut bytes = [0; 64];
        let len = if name.len() <= bytes.len() { name.len() } else { 0 };
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self { bytes, len }
    }

    fn label(&self, code: tonic::Code) -> &'static str {
        if code == tonic::Code::Unimplemented {
            return "unimplemented";
        }
        match std::str::from_utf8(&self.bytes[..self.len]) {
            Ok("") | Err(_) => "other",
            Ok(name) => intern(name),
        }
    }
}

struct GrpcCall {
    tier: Tier,
    service: &'static str,
    method: MethodName,
    started: Instant,
}

impl GrpcCall {
    fn finish(self, code: tonic::Code) {
        let elapsed = self.started.elapsed();
        pulse(self.tier).record(elapsed, is_server_error(code));
        let key = GrpcKey { tier: self.tier, service: self.service, method: self.method.label(code), code };
        GRPC_HANDLES.with(|handles| {
            let mut handles = handles.borrow_mut();
            let handles = handles.entry(key).or_insert_with(|| {
                let (tier, service, method) = (key.tier.as_str(), key.service, key.method);
                HttpHandles {
                    requests: counter!("erp_connect_grpc_requests_total",
                        "tier" => tier, "service" => service, "method" => method, "code" => code_label(code)),
                    duration: histogram!("erp_connect_grpc_request_duration_seconds",
                        "tier" => tier, "service" => service, "method" => method),
                }
            });
            handles.requests.increment(1);
            handles.duration.record(elapsed.as_secs_f64());
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GrpcKey {
    tier: Tier,
    service: &'static str,
    method: &'static str,
    code: tonic::Code,
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers.get("grpc-status").map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// `response` of `call`, recorded now if its head says how the call ended
/// (a trailers-only answer, most errors), else when its trailers pass.
fn metered(response: Response, call: GrpcCall) -> Response {
    if let Some(code) = grpc_status(response.headers()) {
        call.finish(code);
        return response;
    }
    if !response.status().is_success() {
        call.finish(tonic::Code::Unknown);
        return response;
    }
    response.map(|inner| Body::new(MeteredBody { inner, call: Some(call) }))
}

/// A gRPC response body that records the call when its trailers arrive
/// (or when it is dropped first: the caller went away).
struct MeteredBody {
    inner: Body,
    call: Option<GrpcCall>,
}

impl MeteredBody {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(tonic::Code::Internal),
            Poll::Ready(None) => this.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

// ---------------------------------------------------------------------------
// History for the overview

/// One step of [`history`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Start of the step, unix seconds (a multiple of [`STEP_SECONDS`]).
    pub t: u64,
    /// Requests answered in the step.
    pub requests: u64,
    /// Of which errors (see the module docs).
    pub errors: u64,
    /// Median latency in the step, milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// One tier's [`Point`]s, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierHistory {
    /// `gateway`, `experience`, `process` or `system`.
    pub tier: &'static str,
    /// [`HISTORY_STEPS`] points; the last is the step in progress.
    pub points: Vec<Point>,
}

/// Length of one history step.
pub const STEP_SECONDS: u64 = 10;
/// Steps kept: 15 minutes.
pub const HISTORY_STEPS: usize = 90;

const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// A tier's running totals, added to by every request.
struct Pulse {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per [`LATENCY_BUCKETS`] bucket (not cumulative); the last
    /// is above the highest bound.
    buckets: [AtomicU64; BUCKETS],
}

impl Pulse {
    const fn new() -> Self {
        Self { requests: AtomicU64::new(0), errors: AtomicU64::new(0), buckets: [const { AtomicU64::new(0) }; BUCKETS] }
    }

    fn record(&self, elapsed: Duration, error: bool) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

static PULSES: [Pulse; 4] = [const { Pulse::new() }; 4];

fn pulse(tier: Tier) -> &'static Pulse {
    &PULSES[tier.index()]
}

/// Counts at one moment, or between two.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    requests: u64,
    errors: u64,
    buckets: [u64; BUCKETS],
}

impl Totals {
    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    fn point(&self, t: u64) -> Point {
        Point {
            t,
            requests: self.requests,
            errors: self.errors,
            p50_ms: quantile(&self.buckets, 0.5),
            p99_ms: quantile(&self.buckets, 0.99),
        }
    }
}

/// The `q` quantile of bucketed counts in milliseconds, interpolated
/// linearly inside its bucket as Prometheus's `histogram_quantile` does;
/// `None` without observations.
fn quantile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let Some(upper) = LATENCY_BUCKETS.get(i) else {
                // Above the highest bound: the bound is all there is to say.
                return Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let seconds = lower + (upper - lower) * ((rank - below as f64) / *count as f64);
            return Some((seconds * 1_000_000.0).round() / 1000.0);
        }
        below += count;
    }
    None
}

struct History {
    /// Start of the step in progress (unix seconds).
    step: u64,
    /// Each tier's totals when that step began.
    at_step: [Totals; 4],
    /// Finished steps, by `(t / STEP_SECONDS) % HISTORY_STEPS`, with their `t`.
    ring: Vec<(u64, [Totals; 4])>,
}

static HISTORY: LazyLock<Mutex<History>> = LazyLock::new(|| {
    let now = unix_now();
    Mutex::new(History {
        step: now - now % STEP_SECONDS,
        at_step: Tier::ALL.map(|tier| pulse(tier).totals()),
        ring: vec![(0, [Totals::default(); 4]); HISTORY_STEPS],
    })
});

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Closes the step in progress once `now` is past it.
fn history_tick(now: u64) {
    let step = now - now % STEP_SECONDS;
    let mut history = HISTORY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if step <= history.step {
        return;
    }
    let totals = Tier::ALL.map(|tier| pulse(tier).totals());
    let finished = std::array::from_fn(|i| totals[i].since(&history.at_step[i]));
    let slot = (history.step / STEP_SECONDS) as usize % HISTORY_STEPS;
    history.ring[slot] = (history.step, finished);
    history.step = step;
    history.at_step = totals;
}

/// Each tier's requests, errors and latency over the last 15 minutes, one
/// point per 10 s step, oldest first; the last point is the step in
/// progress, so traffic shows at once. Steps without traffic (or from
/// before the process started) are points with zero requests.
pub fn history() -> Vec<TierHistory> {
    install();
    history_tick(unix_now());
    let history = HISTORY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Tier::ALL
        .iter()
        .map(|tier| {
            let i = tier.index();
            let mut points: Vec<Point> = (1..HISTORY_STEPS as u64)
                .rev()
                .filter_map(|back| history.step.checked_sub(back * STEP_SECONDS))
                .map(|t| {
                    let (at, steps) = &history.ring[(t / STEP_SECONDS) as usize % HISTORY_STEPS];
                    if *at == t { steps[i].point(t) } else { Totals::default().point(t) }
                })
                .collect();
            points.push(pulse(*tier).totals().since(&history.at_step[i]).point(history.step));
            TierHistory { tier: tier.as_str(), points }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Reading the exposition back

/// One sample of the Prometheus text: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (`_bucket`, `_sum`, `_count` included for histograms).
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text (as [`render`] writes it) into samples; comments
/// and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    (!name.is_empty()).then(|| Sample { name: name.to_owned(), labels, value })
}

fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut buckets = [0; BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), None);
        // 100 requests between 1 ms and 2.5 ms.
        buckets[4] = 100;
        let p50 = quantile(&buckets, 0.5).expect("p50");
        assert!((p50 - 1.75).abs() < 0.001, "{p50}");
        buckets[BUCKETS - 1] = 100;
        assert_eq!(quantile(&buckets, 0.99), Some(10_000.0));
    }

    #[test]
    fn the_exposition_parses_back() {
        let text = "# HELP x y\nerp_x_total{tier=\"gateway\",route=\"/a/{id}\",q=\"a\\\"b\"} 3\nplain 1.5\nh_bucket{le=\"+Inf\"} 2\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].label("route"), Some("/a/{id}"));
        assert_eq!(samples[0].label("q"), Some("a\"b"));
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].name, "plain");
        assert_eq!(samples[2].label("le"), Some("+Inf"));
    }

    /// What the HTTP middleware adds to one request; run with
    /// `cargo test --release -p platform -- --ignored --nocapture overhead`.
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    async fn metrics_overhead() {
        let plain = Router::new().route("/things/{id}", get(|| async { "ok" }));
        let metered = instrument_http(plain.clone(), Tier::Gateway);
        let time = |app: Router| async move {
            let n = 200_000u32;
            let started = Instant::now();
            for _ in 0..n {
                let request = Request::builder().uri("/things/t_1").body(Body::empty()).expect("request");
                app.clone().oneshot(request).await.expect("response");
            }
            started.elapsed() / n
        };
        async fn noop(request: Request, next: axum::middleware::Next) -> Response {
            next.run(request).await
        }
        let n = 1_000_000u32;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(Instant::now());
        }
        println!("Instant::now: {:?}", started.elapsed() / n);
        install();
        let h = histogram!("erp_connect_x_duration_seconds", "a" => "b");
        let started = Instant::now();
        for _ in 0..n {
            h.record(0.001);
        }
        println!("histogram record: {:?}", started.elapsed() / n);
        let started = Instant::now();
        for _ in 0..n {
            pulse(Tier::System).record(Duration::from_micros(300), false);
        }
        println!("pulse: {:?}", started.elapsed() / n);
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(intern(std::hint::black_box("/things/{id}")));
        }
        println!("intern: {:?}", started.elapsed() / n);
        let noop_app = plain.clone().layer(axum::middleware::from_fn(noop));
        println!("noop from_fn: {:?}", time(noop_app.clone()).await.min(time(noop_app).await));
        let (base, with) = (time(plain.clone()).await, time(metered.clone()).await);
        let (base, with) = (base.min(time(plain).await), with.min(time(metered).await));
        println!("per request: {base:?} without metrics, {with:?} with: +{:?}", with.saturating_sub(base));
    }

    #[tokio::test]
    async fn http_requests_are_counted_by_route_template_never_by_path() {
        let app = instrument_http(
            Router::new().route("/things/{id}", get(|| async { "ok" })).fallback(|| async { "nothing" }),
            Tier::Experience,
        );
        let before = pulse(Tier::Experience).totals().requests;
        for id in 0..20 {
            let request = Request::builder().uri(format!("/things/t_{id}")).body(Body::empty()).expect("request");
            app.clone().oneshot(request).await.expect("response");
        }
        let request = Request::builder().uri("/elsewhere/t_1").body(Body::empty()).expect("request");
        app.clone().oneshot(request).await.expect("response");
        assert!(pulse(Tier::Experience).totals().requests >= before + 21);
        let samples = parse(&render());
        let routes: HashSet<&str> = samples
            .iter()
            .filter(|s| s.name == "erp_connect_http_requests_total" && s.label("tier") == Some("experience"))
            .filter_map(|s| s.label("route"))
            .collect();
        assert!(routes.contains("/things/{id}") && routes.contains("unmatched"), "{routes:?}");
        assert!(routes.iter().all(|r| !r.contains("t_")), "{routes:?}");
        let history = history();
        assert_eq!(history.len(), 4);
        assert!(history.iter().all(|h| h.points.len() == HISTORY_STEPS));
        let experience = &history[1];
        assert!(experience.points.windows(2).all(|w| w[1].t == w[0].t + STEP_SECONDS));
        assert!(experience.points.iter().map(|p| p.requests).sum::<u64>() >= 21);
    }
}
