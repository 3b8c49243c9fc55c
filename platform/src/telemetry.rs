//! Traces and logs: what a process writes about itself, and how one trace
//! follows a request from the gateway down to the ERP call.
//!
//! - [`init`] installs the process's `tracing` subscriber: log lines on
//!   stderr (JSON lines, or human-readable when stderr is a terminal; levels
//!   from `RUST_LOG`), and, when an OTLP endpoint is configured, an
//!   OpenTelemetry layer exporting spans over OTLP, `grpc` or
//!   `http/protobuf` ([`Config`], [`Export`]).
//! - Every log line written inside a traced span carries its `trace_id` and
//!   `span_id`, and so does every problem+json body ([`current_trace_id`]),
//!   so that a support ticket quoting either leads to the trace.
//! - W3C Trace Context crosses the tiers as the `traceparent` and
//!   `tracestate` headers, over HTTP and as gRPC metadata alike: [`inject`]
//!   and [`extract`]; [`current_traceparent`] and [`follow`] store a
//!   context with work that outlives the request (a saga, an event).
//! - Spans named and attributed after the OpenTelemetry semantic
//!   conventions: [`HttpTier`] (a layer over a tier's routes), [`grpc_server`] (tonic
//!   routes), [`grpc_client`] (a gRPC channel) and [`http_client_span`].
//!   Attributes are methods, route templates, service and method names and
//!   status codes: never bodies, credentials, query strings or personal data.
//!
//! Off by default. Without an endpoint there is no exporter and no
//! OpenTelemetry layer, and the span helpers here create nothing, so a
//! request pays one flag check. Nor are trace ids made up then: with no
//! trace to look up, log lines and problem bodies carry the request id
//! (`x-request-id`) alone.
//!
//! Traces start where requests arrive: a span without a parent is recorded
//! only when it is a server span; background work (change-feed polls, the
//! saga runner's own loop) starts no trace, while a saga's steps join the
//! trace of the request that placed the order.

use std::{
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample},
};
use serde::Deserialize;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// `service.name` of exported spans unless configured.
pub const DEFAULT_SERVICE_NAME: &str = "erp-connect";

/// The W3C Trace Context headers. The gateway drops a caller's before
/// forwarding: the trace inside is the gateway's, not the caller's.
pub static TRACE_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static("traceparent"), HeaderName::from_static("tracestate")];

/// Whether spans are exported (set once by [`init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces; when not, the span helpers here
/// do nothing.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `[telemetry]` in the config file. The standard `OTEL_*` environment
/// variables win over it, so the usual collector setup works unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// OTLP endpoint spans are exported to: a collector's base URL, e.g.
    /// `http://otel-collector:4317` (gRPC) or `http://otel-collector:4318`
    /// (HTTP, where `/v1/traces` is appended). Default none: no export.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (a full URL, used as it is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL) override it;
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export
    /// off.
    pub otlp_endpoint: Option<String>,
    /// How spans travel: `grpc` or `http/protobuf`. Default: `http/protobuf`
    /// when the endpoint's port is 4318 (OTLP/HTTP's), else `grpc` (what
    /// earlier releases spoke to any endpoint).
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, override it.
    pub otlp_protocol: Option<Protocol>,
    /// `service.name` of the exported spans. Default `erp-connect` (`up`)
    /// or `erp-connect-<tier>` (`serve`); `OTEL_SERVICE_NAME` overrides it.
    pub service_name: Option<String>,
}

/// The OTLP transports spans can be exported over (`http/json` is not
/// offered: collectors that take it take `http/protobuf` as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC, by default on port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, by default on port 4318, traces
    /// POSTed to `/v1/traces`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    /// The protocol an `OTEL_EXPORTER_OTLP_*PROTOCOL` value names.
    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// OTLP/HTTP's port: an endpoint on it, with no protocol named, is spoken
/// to in `http/protobuf`.
const OTLP_HTTP_PORT: u16 = 4318;

/// Where and how spans are exported, as resolved from the environment and
/// the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The transport.
    pub protocol: Protocol,
    /// The URL the exporter sends to: the collector's for `grpc`, the traces
    /// endpoint's (e.g. `http://collector:4318/v1/traces`) for
    /// `http/protobuf`.
    pub url: String,
}

/// A telemetry setup that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OTLP protocol other than `grpc` and `http/protobuf` was asked for.
    #[error("{var}={value:?}: the OTLP protocols spoken are `grpc` and `http/protobuf`")]
    Protocol {
        /// The variable that asked for it.
        var: &'static str,
        /// What it asked for.
        value: String,
    },
    /// The endpoint is not an `http://host:port[/path]` URL.
    #[error("OTLP endpoint {0:?} must look like http://host:port")]
    Endpoint(String),
    /// Spans over OTLP/HTTP need a Tokio runtime for their client.
    #[error("OTLP/HTTP export must be set up inside a Tokio runtime")]
    NoRuntime,
    /// The exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A subscriber was installed already (a second `init`).
    #[error("logging is already set up")]
    AlreadyInstalled,
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

impl Config {
    /// Where spans go and how, if anywhere: the environment over the file.
    pub fn export(&self) -> Result<Option<Export>, Error> {
        self.export_in(env)
    }

    /// [`Config::export`] with the environment read through `env`.
    ///
    /// The OTLP exporter specification's rules: the signal's own variables
    /// win over the general ones; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
    /// used as it is, while to a base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `telemetry.otlp_endpoint`) `http/protobuf` appends `v1/traces`.
    fn export_in(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<Export>, Error> {
        let env = |var: &str| env(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if off {
            return Ok(None);
        }
        let file = self.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned);
        let (endpoint, is_base) = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(signal) => (signal, false),
            None => match env("OTEL_EXPORTER_OTLP_ENDPOINT").or(file) {
                Some(base) => (base, true),
                None => return Ok(None),
            },
        };
        // Plain HTTP: the collector is a sidecar or in the cluster (no TLS
        // stack is built in for this).
        let uri: http::Uri = endpoint.parse().map_err(|_| Error::Endpoint(endpoint.clone()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::Endpoint(endpoint));
        }
        let mut protocol = None;
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(value) = env(var) {
                protocol = Some(Protocol::parse(&value).ok_or(Error::Protocol { var, value })?);
                break; // the signal's own variable wins
            }
        }
        let protocol = protocol.or(self.otlp_protocol).unwrap_or(match uri.port_u16() {
            Some(OTLP_HTTP_PORT) => Protocol::HttpProtobuf,
            _ => Protocol::Grpc,
        });
        let url = match protocol {
            Protocol::HttpProtobuf if is_base => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            _ => endpoint,
        };
        Ok(Some(Export { protocol, url }))
    }

    /// `service.name`: `OTEL_SERVICE_NAME`, the file, or `default`.
    pub fn service_name(&self, default: &str) -> String {
        env("OTEL_SERVICE_NAME")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.service_name.clone())
            .unwrap_or_else(|| default.to_owned())
    }

    /// Checks the endpoint and protocol, before anything starts.
    pub fn validate(&self) -> Result<(), Error> {
        self.export().map(drop)
    }
}

/// What [`init`] set up. Dropping it flushes the spans not yet exported.
#[must_use = "dropping it stops the export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans not yet exported and stops, without holding up the
    /// runtime the exporters' connections run on (a one-thread runtime
    /// included), which dropping it from async code would.
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else { return };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "not every span could be exported"),
            Err(err) => tracing::warn!(error = %err, "the span export did not finish"),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "not every span could be exported");
        }
    }
}

/// Logs only, for commands that serve nothing (`keys`, `token`, ...).
pub fn init_logs() {
    // Only fails when a subscriber is installed already; that one stays.
    let _ = install(None);
}

/// Logs, and spans exported to the endpoint `config` names (if any) with
/// `service.name` `default_service` unless configured. Call once, inside a
/// Tokio runtime: the exporter's gRPC channel or HTTP client runs on it.
pub fn init(config: &Config, default_service: &str) -> Result<Telemetry, Error> {
    let provider = match config.export()? {
        None => None,
        Some(export) => {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let exporter = match export.protocol {
                Protocol::Grpc => {
                    opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(export.url).build()
                }
                Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(export.url)
                    .with_http_client(OnRuntime::current()?)
                    .build(),
            }
            .map_err(|e| Error::Exporter(e.to_string()))?;
            let resource = Resource::builder().with_service_name(config.service_name(default_service)).build();
            Some(
                SdkTracerProvider::builder()
                    .with_sampler(Sampler::ParentBased(Box::new(RootsAtServers)))
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    install(provider.as_ref())?;
    Ok(Telemetry { provider })
}

/// The OTLP/HTTP exporter's client: hyper, its requests run as tasks of the
/// runtime [`init`] was called in. The batch exporter calls it from a
/// thread of its own, outside any runtime, where hyper's connections and
/// timers could not run; this hands each request to the runtime and waits.
#[derive(Debug, Clone)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

impl OnRuntime {
    fn current() -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Ok(Self { runtime, client: opentelemetry_http::hyper::HyperClient::with_default_connector(timeout(), None) })
    }
}

/// Each request's time limit: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else the specification's
/// default of 10 s. (The exporter applies the same limit to an export with
/// its retries.)
fn timeout() -> std::time::Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .into_iter()
        .find_map(|var| env(var)?.trim().parse().ok())
        .map_or(std::time::Duration::from_secs(10), std::time::Duration::from_millis)
}

// The trait is declared with `#[async_trait]`; this is the signature it
// expands to, spelled out rather than taking the macro crate for one impl.
impl opentelemetry_http::HttpClient for OnRuntime {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move { client.send_bytes(request).await });
        Box::pin(async move { sent.await.map_err(|e| Box::new(e) as opentelemetry_http::HttpError)? })
    }
}

fn install(provider: Option<&SdkTracerProvider>) -> Result<(), Error> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr, so that stdout carries only what a command prints.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if std::io::stderr().is_terminal() {
        fmt.map_event_format(|inner| WithTraceIds { inner }).with_filter(filter).boxed()
    } else {
        fmt.event_format(crate::log_line::JsonLine).fmt_fields(crate::log_line::JsonFields).with_filter(filter).boxed()
    };
    // Spans only, at info and above, whatever RUST_LOG says about log lines:
    // log lines stay in the logs (linked by trace id), not in span events.
    let otel = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("erp-connect"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(fmt).with(otel).try_init().map_err(|_| Error::AlreadyInstalled)?;
    ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Ok(())
}

/// Samples a trace when it starts at a server span (a request arrived);
/// the rest follow their parent ([`Sampler::ParentBased`]).
#[derive(Debug, Clone)]
struct RootsAtServers;

impl ShouldSample for RootsAtServers {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        _trace_id: TraceId,
        _name: &str,
        kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let decision =
            if *kind == SpanKind::Server { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop };
        let trace_state = parent.map(|cx| cx.span().span_context().trace_state().clone()).unwrap_or_default();
        SamplingResult { decision, attributes: Vec::new(), trace_state }
    }
}

/// Puts `trace_id=` in front of each terminal line written inside a
/// traced span (JSON lines carry it as a field: [`crate::log_line`]).
struct WithTraceIds<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some((trace_id, _)) = current_ids() {
            write!(writer, "trace_id={trace_id} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// The trace and span ids of the span the caller is in (as the
/// OpenTelemetry layer made it current), when it is a recorded trace: one
/// that was dropped cannot be looked up.
pub(crate) fn current_ids() -> Option<(TraceId, opentelemetry::trace::SpanId)> {
    if !enabled() {
        return None;
    }
    let cx = Context::current();
    let span = cx.span();
    let ids = span.span_context();
    (ids.is_valid() && ids.is_sampled()).then(|| (ids.trace_id(), ids.span_id()))
}

/// The trace id (32 hex digits) of the span the caller is in, when traced.
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    let span = cx.span();
    let ids = span.span_context();
    // A trace that is not recorded cannot be looked up.
    (ids.is_valid() && ids.is_sampled()).then(|| ids.trace_id().to_string())
}

/// The W3C `traceparent` of the span the caller is in, when traced: what
/// a saga or an event keeps to join or link to the request's trace.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The trace id inside a `traceparent` value.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32 && *id != "0".repeat(32))
}

/// Makes `span` (not yet entered) a child of the stored `traceparent`, e.g.
/// a saga step of the request that placed the order.
pub fn follow(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| enabled()) else { return };
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(traceparent) else { return };
    headers.insert(&TRACE_HEADERS[0], value);
    let cx = extract(&headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s context into `headers` (HTTP headers, or gRPC metadata,
/// which travels as HTTP/2 headers).
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if enabled() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

/// The context a caller sent in `headers` (empty when it sent none).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Which HTTP tier a server span belongs to, and whether it is the edge
/// (the gateway), which starts the trace and logs one line per request.
#[derive(Debug, Clone, Copy)]
pub struct HttpTier {
    /// `erp_connect.tier` of the spans, e.g. `gateway`.
    pub name: &'static str,
    /// The first tier a request reaches.
    pub edge: bool,
}

/// The layer (outermost of the tier's own): an HTTP server span
/// `{method} {http.route}` around the request, child of the caller's
/// `traceparent` (the edge starts a new trace and only links a caller's),
/// and at the edge one log line per request, in the span.
///
/// A plain service: every request of every tier passes through it, and
/// with tracing off (the default) it costs a flag check and, at the edge,
/// the log line.
impl<S> tower::Layer<S> for HttpTier {
    type Service = HttpServer<S>;

    fn layer(&self, inner: S) -> HttpServer<S> {
        HttpServer { inner, tier: *self }
    }
}

/// [`HttpTier`]'s service.
#[derive(Debug, Clone)]
pub struct HttpServer<S> {
    inner: S,
    tier: HttpTier,
}

impl<S> tower::Service<Request> for HttpServer<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HttpServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let tier = self.tier;
        let started = Instant::now();
        let route = request.extensions().get::<MatchedPath>().cloned();
        // Probes and scrapes arrive every few seconds and say nothing about a
        // request: no trace for them.
        let traced = enabled() && !route.as_ref().is_some_and(|r| is_probe(r.as_str()));
        let log = tier.edge.then(|| LogLine { method: request.method().clone(), route: route.clone(), started });
        if !traced {
            return HttpServerFuture::Plain { inner: self.inner.call(request), log };
        }
        let method = request.method();
        let name = match &route {
            Some(route) => format!("{method} {}", route.as_str()),
            None => method.to_string(),
        };
        let span = tracing::info_span!(
            "http.server",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = Empty,
            "http.request.method" = %method,
            "http.route" = route.as_ref().map(MatchedPath::as_str),
            "url.scheme" = "http",
            "url.path" = request.uri().path(),
            "http.response.status_code" = Empty,
            "erp_connect.tier" = tier.name,
        );
        let caller = extract(request.headers());
        if tier.edge {
            span.add_link(caller.span().span_context().clone());
        } else if caller.span().span_context().is_valid() {
            let _ = span.set_parent(caller);
        }
        let inner = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        HttpServerFuture::Traced { inner, span, log }
    }
}

/// What the edge's log line needs, taken from the request.
#[derive(Debug)]
pub struct LogLine {
    method: http::Method,
    route: Option<MatchedPath>,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// [`HttpServer`]'s future: the answer, then the span's status and the
    /// edge's log line.
    #[project = HttpServerProj]
    #[allow(missing_docs)] // the macro takes no docs on variants' fields
    pub enum HttpServerFuture<F> {
        /// Tracing is off, or the request is a probe.
        Plain { #[pin] inner: F, log: Option<LogLine> },
        /// In its server span.
        Traced { #[pin] inner: tracing::instrument::Instrumented<F>, span: Span, log: Option<LogLine> },
    }
}

impl<F, E> Future for HttpServerFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            HttpServerProj::Plain { inner, log } => {
                let result = std::task::ready!(inner.poll(cx));
                if let (Ok(response), Some(log)) = (&result, log.take()) {
                    log_request(&log, response);
                }
                Poll::Ready(result)
            }
            HttpServerProj::Traced { inner, span, log } => {
                let result = std::task::ready!(inner.poll(cx));
                if let Ok(response) = &result {
                    let status = response.status();
                    span.record("http.response.status_code", i64::from(status.as_u16()));
                    if status.is_server_error() {
                        span.record("otel.status_code", "error");
                    }
                    if let Some(log) = log.take() {
                        span.in_scope(|| log_request(&log, response));
                    }
                }
                Poll::Ready(result)
            }
        }
    }
}

/// Routes of the orchestrator's probes and Prometheus' scrapes.
fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// The edge's one line per request; no query, body or credential. Probes
/// and scrapes are logged at debug level, not every few seconds.
fn log_request(line: &LogLine, response: &Response) {
    let LogLine { method, route, started } = line;
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let (route, status) = (route.as_ref().map_or("-", MatchedPath::as_str), response.status().as_u16());
    // Microsecond precision is plenty, and keeps the line short.
    let duration_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    if is_probe(route) {
        tracing::debug!(target: "http", method = %method, route, status, duration_ms, request_id, "request");
    } else {
        tracing::info!(target: "http", method = %method, route, status, duration_ms, request_id, "request");
    }
}

/// An HTTP client span `{method}` for a call to `server` (`host:port`, or
/// none in-process); record the answer with [`record_http_status`].
pub fn http_client_span(method: &http::Method, server: Option<&http::uri::Authority>) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = Empty,
        "http.request.method" = %method,
        "server.address" = server.map(http::uri::Authority::host),
        "server.port" = server.and_then(http::uri::Authority::port_u16).map(i64::from),
        "http.response.status_code" = Empty,
    )
}

/// Records the status a client span's call got.
pub fn record_http_status(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// `(rpc.service, rpc.method)` of a gRPC path `/pkg.Service/Method`.
fn rpc_names(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// Health checks and reflection run all the time and say nothing about a
/// request; they get no spans.
fn is_plumbing(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

/// The gRPC status code in `headers` (a trailers-only answer) or trailers.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Which side of a call a span is on; decides which codes are errors.
#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

fn record_grpc_status(span: &Span, side: Side, code: i32) {
    span.record("rpc.grpc.status_code", i64::from(code));
    // The semantic conventions: every non-OK code fails a client call; a
    // server fails only on its own faults (UNKNOWN, DEADLINE_EXCEEDED,
    // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS).
    let error = match side {
        Side::Client => code != 0,
        Side::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    };
    if error {
        span.record("otel.status_code", "error");
    }
}

/// `routes` with a gRPC server span `{rpc.service}/{rpc.method}` around
/// every call, child of the caller's `traceparent` metadata. Unchanged
/// when tracing is off.
pub fn grpc_server(routes: tonic::service::Routes) -> tonic::service::Routes {
    if !enabled() {
        return routes;
    }
    tonic::service::Routes::from(routes.into_axum_router().layer(axum::middleware::from_fn(grpc_server_span)))
}

async fn grpc_server_span(request: Request, next: Next) -> Response {
    let (service, method) = rpc_names(request.uri().path());
    if is_plumbing(service) {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        "rpc.system" = "grpc",
        "rpc.service" = service,
        "rpc.method" = method,
        "rpc.grpc.status_code" = Empty,
    );
    let caller = extract(request.headers());
    if caller.span().span_context().is_valid() {
        let _ = span.set_parent(caller);
    }
    let response = next.run(request).instrument(span.clone()).await;
    if let Some(code) = grpc_status(response.headers()) {
        record_grpc_status(&span, Side::Server, code);
        return response;
    }
    response.map(|body| axum::body::Body::new(StatusFromTrailers { inner: body, span, side: Side::Server }))
}

/// `channel` with a gRPC client span `{rpc.service}/{rpc.method}` around
/// every call, whose context goes along as `traceparent` metadata.
/// Unchanged when tracing is off.
pub fn grpc_client(
    channel: crate::channel::GrpcChannel,
    server: Option<http::uri::Authority>,
) -> crate::channel::GrpcChannel {
    use tower::ServiceExt;
    if !enabled() {
        return channel;
    }
    let traced = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
        let channel = channel.clone();
        let server = server.clone();
        async move {
            let (service, method) = rpc_names(request.uri().path());
            if is_plumbing(service) {
                return channel.oneshot(request).await;
            }
            let span = tracing::info_span!(
                "grpc.client",
                otel.name = %format_args!("{service}/{method}"),
                otel.kind = "client",
                otel.status_code = Empty,
                "rpc.system" = "grpc",
                "rpc.service" = service,
                "rpc.method" = method,
                "server.address" = server.as_ref().map(http::uri::Authority::host),
                "server.port" = server.as_ref().and_then(http::uri::Authority::port_u16).map(i64::from),
                "rpc.grpc.status_code" = Empty,
            );
            inject(&span, request.headers_mut());
            let response = match channel.oneshot(request).instrument(span.clone()).await {
                Ok(response) => response,
                Err(err) => {
                    // No answer at all: UNAVAILABLE, as tonic reports it.
                    record_grpc_status(&span, Side::Client, 14);
                    return Err(err);
                }
            };
            if let Some(code) = grpc_status(response.headers()) {
                record_grpc_status(&span, Side::Client, code);
                return Ok(response);
            }
            Ok(response
                .map(|body| tonic::body::Body::new(StatusFromTrailers { inner: body, span, side: Side::Client })))
        }
    });
    tower::util::BoxCloneSyncService::new(traced)
}

/// A gRPC response body that records the status in its trailers on its
/// span, and ends the span when the body is done (streams included).
struct StatusFromTrailers<B> {
    inner: B,
    span: Span,
    side: Side,
}

impl<B> http_body::Body for StatusFromTrailers<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame.trailers_ref().and_then(grpc_status)
        {
            record_grpc_status(&self.span, self.side, code);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_split_a_grpc_path() {
        assert_eq!(
            rpc_names("/erp.v1.SalesOrderService/CreateSalesOrder"),
            ("erp.v1.SalesOrderService", "CreateSalesOrder")
        );
        assert_eq!(rpc_names("/odd"), ("odd", ""));
    }

    #[test]
    fn a_traceparent_names_its_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn a_traceparent_header_is_extracted() {
        let mut headers = HeaderMap::new();
        headers
            .insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let cx = extract(&headers);
        let span = cx.span();
        assert_eq!(span.span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
    }

    /// An environment of `vars` only.
    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var: &str| vars.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned())
    }

    fn export(config: &Config, vars: &'static [(&'static str, &'static str)]) -> Option<(Protocol, String)> {
        config.export_in(env(vars)).expect("a valid setup").map(|e| (e.protocol, e.url))
    }

    fn file(endpoint: &str, protocol: Option<Protocol>) -> Config {
        Config { otlp_endpoint: Some(endpoint.into()), otlp_protocol: protocol, service_name: None }
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        use Protocol::Grpc;
        let config = file("http://file:4317", None);
        assert_eq!(export(&config, &[]), Some((Grpc, "http://file:4317".into())));
        let general = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")];
        assert_eq!(export(&config, general), Some((Grpc, "http://env:4317".into())));
        let both = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(export(&config, both), Some((Grpc, "http://traces:4317".into())));
        assert_eq!(export(&config, &[("OTEL_SDK_DISABLED", "true")]), None);
        assert_eq!(export(&config, &[("OTEL_TRACES_EXPORTER", "none")]), None);
        assert_eq!(export(&Config::default(), &[]), None, "off by default");
        assert_eq!(export(&Config::default(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]), None, "no endpoint");
        let bad = file("collector:4317", None);
        assert!(matches!(bad.export_in(env(&[])), Err(Error::Endpoint(_))));
        let tls = file("https://collector:4317", None);
        assert!(matches!(tls.export_in(env(&[])), Err(Error::Endpoint(_))));
    }

    #[test]
    fn a_named_protocol_wins_else_the_port_decides_and_grpc_stays_the_default() {
        use Protocol::{Grpc, HttpProtobuf};
        // Nothing named: OTLP/HTTP's port means HTTP; any other port gRPC,
        // as before http/protobuf was spoken.
        assert_eq!(export(&file("http://c:4318", None), &[]), Some((HttpProtobuf, "http://c:4318/v1/traces".into())));
        assert_eq!(export(&file("http://c:14317", None), &[]), Some((Grpc, "http://c:14317".into())));
        // The signal's own variable over the general one over the file.
        let http = &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        assert_eq!(export(&file("http://c:4317", None), http), Some((HttpProtobuf, "http://c:4317/v1/traces".into())));
        let grpc_for_traces =
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")];
        assert_eq!(export(&file("http://c:4318", None), grpc_for_traces), Some((Grpc, "http://c:4318".into())));
        assert_eq!(
            export(&file("http://c:9000", Some(HttpProtobuf)), &[]),
            Some((HttpProtobuf, "http://c:9000/v1/traces".into()))
        );
        let grpc = &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert_eq!(export(&file("http://c:4318", Some(HttpProtobuf)), grpc), Some((Grpc, "http://c:4318".into())));
        // Unknown or unsupported protocols are refused, naming the variable.
        let json = &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")];
        assert!(matches!(
            file("http://c:4318", None).export_in(env(json)),
            Err(Error::Protocol { var: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", .. })
        ));
    }

    #[test]
    fn http_appends_the_traces_path_to_a_base_url_only() {
        use Protocol::HttpProtobuf;
        let http = |vars: &'static [(&'static str, &'static str)]| export(&file("http://file:4318/", None), vars);
        assert_eq!(http(&[]), Some((HttpProtobuf, "http://file:4318/v1/traces".into())), "one slash");
        let base = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4318/otlp")];
        assert_eq!(http(base), Some((HttpProtobuf, "http://gw:4318/otlp/v1/traces".into())), "under the base path");
        // The signal's endpoint is the whole URL, whatever its path.
        let signal = &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://gw:4318/custom/traces")];
        assert_eq!(http(signal), Some((HttpProtobuf, "http://gw:4318/custom/traces".into())));
    }

    #[test]
    fn the_file_names_a_protocol_by_its_otlp_name() {
        let config: Config = serde_json::from_value(serde_json::json!({"otlp_protocol": "http/protobuf"})).expect("ok");
        assert_eq!(config.otlp_protocol, Some(Protocol::HttpProtobuf));
        let config: Config = serde_json::from_value(serde_json::json!({"otlp_protocol": "grpc"})).expect("ok");
        assert_eq!(config.otlp_protocol, Some(Protocol::Grpc));
        assert!(serde_json::from_value::<Config>(serde_json::json!({"otlp_protocol": "http/json"})).is_err());
    }

    #[test]
    fn health_and_both_reflection_versions_are_plumbing() {
        for service in
            ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
        {
            assert!(is_plumbing(service), "{service}");
        }
        assert!(!is_plumbing("order_to_cash.v1.OrderToCashService"));
    }
}
