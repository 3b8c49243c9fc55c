//! Traces end to end: `erp-connect up` (the real binary) exports over
//! OTLP/gRPC to a test receiver on loopback. One order placed over HTTP is
//! one trace, holding the spans of all four tiers and the ERP calls of its
//! saga, each linked to a parent in the same trace; an error answer and the
//! edge's log line name the trace they belong to. The same spans reach a
//! collector over OTLP/HTTP (`http/protobuf`, POST `/v1/traces`) when that
//! protocol is asked for.

mod harness;

use std::{
    collections::HashMap,
    io::BufRead,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use harness::{BIN, Reply, get, post_json};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    resource::v1::Resource,
    trace::v1::Span,
};
use serde_json::{Value, json};

/// Every span the receiver got, by trace id (hex), and the `service.name`
/// of every resource they came from.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<HashMap<String, Vec<Span>>>>,
    services: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("not poisoned");
        for resource in request.resource_spans {
            if let Some(name) = service_name(resource.resource.as_ref()) {
                self.services.lock().expect("not poisoned").push(name);
            }
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.entry(hex(&span.trace_id)).or_default().push(span);
                }
            }
        }
    }

    /// Polls until some span satisfies `found`, under a deadline; returns it.
    async fn wait_for_span(&self, what: &str, found: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let names: Vec<String> = {
                let spans = self.spans.lock().expect("not poisoned");
                if let Some(span) = spans.values().flatten().find(|s| found(s)) {
                    return span.clone();
                }
                spans.values().flatten().map(|s| s.name.clone()).collect()
            };
            assert!(Instant::now() < deadline, "no {what} in time; the receiver has {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `service.name`s spans came from so far.
    fn services(&self) -> Vec<String> {
        self.services.lock().expect("not poisoned").clone()
    }

    /// Starts the receiver on a port of its own; returns its address.
    async fn start(&self) -> SocketAddr {
        let listener = harness::listener().await;
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Polls until the trace `trace_id` satisfies `done`, under a deadline.
    async fn wait_for(&self, trace_id: &str, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.spans.lock().expect("not poisoned").get(trace_id).cloned().unwrap_or_default();
            if done(&spans) {
                return spans;
            }
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            assert!(Instant::now() < deadline, "no {what} in trace {trace_id} in time; it has {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A collector's OTLP/HTTP endpoint: takes protobuf `ExportTraceServiceRequest`
/// bodies POSTed to any path, keeps their spans in a [`Receiver`], and
/// notes the paths and content types it was sent.
#[derive(Clone, Default)]
struct HttpReceiver {
    received: Receiver,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl HttpReceiver {
    /// Starts the endpoint on a port of its own; returns its address.
    async fn start(&self) -> SocketAddr {
        use axum::{
            body::Bytes,
            extract::State,
            http::{HeaderMap, StatusCode, Uri, header},
            response::IntoResponse,
        };
        use prost::Message;
        async fn export(
            State(this): State<HttpReceiver>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> impl IntoResponse {
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            this.requests.lock().expect("not poisoned").push((uri.path().to_owned(), content_type.to_owned()));
            match ExportTraceServiceRequest::decode(body) {
                Ok(request) => {
                    this.received.keep(request);
                    let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], answer)
                }
                Err(_) => (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain")], b"not OTLP".to_vec()),
            }
        }
        let listener = harness::listener().await;
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/{*path}", axum::routing::post(export)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// The (path, content type) of every request so far.
    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

fn service_name(resource: Option<&Resource>) -> Option<String> {
    let value = resource?.attributes.iter().find(|kv| kv.key == "service.name")?.value.as_ref()?.value.as_ref()?;
    match value {
        AnyValue::StringValue(name) => Some(name.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        AnyValue::IntValue(i) => Some(*i),
        _ => None,
    }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn is_tier(span: &Span, tier: &str) -> bool {
    span.kind == SERVER && attr_str(span, "erp_connect.tier") == Some(tier)
}

fn is_rpc_server(span: &Span, service_prefix: &str) -> bool {
    span.kind == SERVER
        && attr_str(span, "rpc.system") == Some("grpc")
        && attr_str(span, "rpc.service").is_some_and(|s| s.starts_with(service_prefix))
}

fn is_erp_call(span: &Span) -> bool {
    span.kind == CLIENT && attr_str(span, "db.system.name") == Some("sqlite")
}

/// Whether every span's parent has arrived too (spans come in batches, and
/// a parent ends, so is sent, after its children).
fn parents_arrived(spans: &[Span]) -> bool {
    spans.iter().all(|s| s.parent_span_id.is_empty() || spans.iter().any(|p| p.span_id == s.parent_span_id))
}

/// The span's ancestors, nearest first, as far as they are in `spans`.
fn ancestors<'a>(span: &'a Span, spans: &'a [Span]) -> Vec<&'a Span> {
    let mut chain = Vec::new();
    let mut current = span;
    while !current.parent_span_id.is_empty() {
        match spans.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) if chain.len() < 64 => {
                chain.push(parent);
                current = parent;
            }
            _ => break,
        }
    }
    chain
}

/// The real binary as a child process, exporting to an OTLP receiver, its
/// log lines kept.
struct Child {
    process: std::process::Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Child {
    /// Runs `erp-connect ARGS --data-dir DIR` exporting to `otlp` and
    /// waits for its address: the banner's HTTP API line (`up`) or the
    /// "serving" log line (`serve`), both naming the port it bound.
    fn start(args: &[&str], data_dir: &Path, otlp: SocketAddr, env: &[(&str, String)]) -> (Self, SocketAddr) {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_SDK_DISABLED",
            "OTEL_TRACES_EXPORTER",
            "OTEL_SERVICE_NAME",
            "ERP_CONNECT_CONFIG",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut process = command.spawn().expect("erp-connect starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = process.stderr.take().expect("stderr");
        std::thread::spawn({
            let (logs, tx) = (logs.clone(), tx.clone());
            move || {
                // Keeps draining, so the child never blocks on a full pipe.
                for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                    harness::leaks::scan(&line);
                    if let Ok(entry) = serde_json::from_str::<Value>(&line)
                        && entry["message"] == "serving"
                        && let Some(addr) = entry["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                    }
                    logs.lock().expect("not poisoned").push(line);
                }
            }
        });
        let stdout = process.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                harness::leaks::scan(&line);
                if line.contains("HTTP API")
                    && let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("http://")?.parse().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let mut child = Self { process, logs };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => (child, addr),
            Err(_) => {
                let _ = child.process.kill();
                panic!("{args:?} named no address; its logs: {:?}", child.logs.lock().expect("not poisoned"));
            }
        }
    }

    /// The JSON log lines so far.
    fn log_lines(&self) -> Vec<Value> {
        self.logs.lock().expect("not poisoned").iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `erp-connect up` exporting to `otlp`.
struct Up {
    child: Child,
    http: SocketAddr,
    data_dir: tempfile::TempDir,
}

impl Up {
    fn start(otlp: SocketAddr) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let args = ["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
        let (child, http) = Child::start(&args, data_dir.path(), otlp, &[]);
        Self { child, http, data_dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

async fn wait_until_confirmed(base: &str, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&format!("{base}/web/v1/orders/{id}"), Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let status = reply.body["status"].as_str().unwrap_or_default().to_owned();
        if ["confirmed", "invoiced", "paid", "shipped", "completed"].contains(&status.as_str()) {
            return reply.body;
        }
        assert!(!["rejected", "cancelled"].contains(&status.as_str()), "{}", reply.text);
        assert!(Instant::now() < deadline, "not confirmed in time: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_order_is_one_trace_through_every_tier_down_to_the_erp() {
    let receiver = Receiver::default();
    let up = Up::start(receiver.start().await);
    let token = harness::token(up.data_dir.path(), "orders:read orders:write catalog:read");

    let body =
        json!({"lines": [{"sku": "GADGET-1", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}});
    let placed: Reply = post_json(&up.url("/web/v1/orders"), &token, &body, Some("traced-1")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("an order id").to_owned();
    let trace_id = placed.body["trace_id"].as_str().expect("the order names its trace").to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    let order = wait_until_confirmed(&up.url(""), &token, &id).await;
    assert_eq!(order["trace_id"], trace_id.as_str(), "the order keeps its trace: {order}");

    let spans = receiver
        .wait_for(&trace_id, "spans of every tier and the ERP", |spans| {
            parents_arrived(spans)
                && spans.iter().any(|s| is_tier(s, "gateway"))
                && spans.iter().any(|s| is_tier(s, "experience"))
                && spans.iter().any(|s| is_rpc_server(s, "order_to_cash.v1."))
                && spans
                    .iter()
                    .any(|s| is_rpc_server(s, "erp.v1.") && attr_str(s, "rpc.method") == Some("CreateSalesOrder"))
                && spans
                    .iter()
                    .any(|s| is_erp_call(s) && attr_str(s, "db.operation.name") == Some("create_sales_order"))
        })
        .await;

    // One root: the gateway's server span, named after the route template.
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", roots.iter().map(|s| &s.name).collect::<Vec<_>>());
    let root = roots[0];
    assert!(is_tier(root, "gateway"), "the gateway starts the trace: {}", root.name);
    assert_eq!(root.name, "POST /web/v1/orders");
    assert_eq!(attr_str(root, "http.request.method"), Some("POST"));
    assert_eq!(attr_str(root, "http.route"), Some("/web/v1/orders"));
    assert_eq!(attr_int(root, "http.response.status_code"), Some(201), "{:?}", root.attributes);
    // Every other span's parent is in the same trace.
    for span in &spans {
        if !span.parent_span_id.is_empty() {
            assert!(
                spans.iter().any(|p| p.span_id == span.parent_span_id),
                "{} has a parent outside the trace",
                span.name
            );
        }
    }

    // The hops nest tier by tier: experience under gateway, the process
    // tier's PlaceOrder under experience.
    let experience = spans.iter().find(|s| is_tier(s, "experience")).expect("experience span");
    assert_eq!(experience.name, "POST /web/v1/orders");
    assert!(ancestors(experience, &spans).iter().any(|a| a.span_id == root.span_id));
    let place = spans
        .iter()
        .find(|s| is_rpc_server(s, "order_to_cash.v1.") && attr_str(s, "rpc.method") == Some("PlaceOrder"))
        .expect("PlaceOrder server span");
    assert_eq!(place.name, "order_to_cash.v1.OrderToCashService/PlaceOrder");
    assert_eq!(attr_int(place, "rpc.grpc.status_code"), Some(0));
    assert!(ancestors(place, &spans).iter().any(|a| a.span_id == experience.span_id));

    // The saga, run in the background, joins the trace: its ERP call sits
    // under the system tier's server span, under the process tier's client
    // call, under a saga step, under PlaceOrder.
    let erp = spans
        .iter()
        .find(|s| is_erp_call(s) && attr_str(s, "db.operation.name") == Some("create_sales_order"))
        .expect("the ERP call");
    let chain = ancestors(erp, &spans);
    let system = chain.iter().find(|s| s.kind == SERVER).expect("a server span above the ERP call");
    assert!(is_rpc_server(system, "erp.v1."), "the ERP call runs in the system tier: {}", system.name);
    assert_eq!(system.name, "erp.v1.SalesOrderService/CreateSalesOrder");
    let client = chain.iter().find(|s| s.kind == CLIENT).expect("a client span above it");
    assert_eq!(client.name, "erp.v1.SalesOrderService/CreateSalesOrder", "the process tier's call");
    assert_eq!(system.parent_span_id, client.span_id, "the server span is the client call's child");
    let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"order_to_cash create-sales-order"), "a saga step: {names:?}");
    assert!(chain.iter().any(|s| s.span_id == place.span_id), "under PlaceOrder");
    assert_eq!(chain.last().map(|s| &s.span_id), Some(&root.span_id), "back to the gateway");

    // Nothing personal or secret in any attribute.
    for span in &spans {
        for kv in &span.attributes {
            let value = format!("{:?}", kv.value);
            assert!(!value.contains("tok_visa") && !value.contains("alice"), "{}: {} = {value}", span.name, kv.key);
        }
    }

    // The edge logged the request once, with its trace id, in JSON.
    let lines = up.child.log_lines();
    let edge: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["route"] == "/web/v1/orders" && l["method"] == "POST")
        .collect();
    assert_eq!(edge.len(), 1, "one line per request: {edge:?}");
    assert_eq!(edge[0]["trace_id"], trace_id.as_str(), "{}", edge[0]);
    assert_eq!(edge[0]["status"], 201);
    assert_eq!(edge[0]["request_id"], placed.headers["x-request-id"].to_str().expect("ascii"));

    // An error answer names its trace, which was exported too.
    let missing = get(&up.url("/web/v1/orders/ord_01JDXNOSUCHORDER0000000000"), Some(&token)).await;
    harness::assert_problem(&missing, 404);
    let problem_trace = missing.body["trace_id"].as_str().expect("the problem names its trace").to_owned();
    assert_ne!(problem_trace, trace_id, "another request, another trace");
    let spans = receiver
        .wait_for(&problem_trace, "the 404's spans", |spans| {
            spans.iter().any(|s| is_tier(s, "gateway") && attr_int(s, "http.response.status_code") == Some(404))
        })
        .await;
    let root = spans.iter().find(|s| is_tier(s, "gateway")).expect("gateway span");
    assert_eq!(root.name, "GET /web/v1/orders/{id}");
    assert_eq!(attr_str(root, "url.path"), Some("/web/v1/orders/ord_01JDXNOSUCHORDER0000000000"));
}

#[tokio::test]
async fn in_serve_mode_the_trace_crosses_four_processes() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let dir = data_dir.path();
    let token = harness::token(dir, "orders:read orders:write catalog:read");
    // Each tier on a port of its own, the next tier's address from the
    // one started before it.
    let serve = |tier| ["serve", "--target", tier, "--listen", "127.0.0.1:0"];
    let (_system, system_addr) = Child::start(&serve("system"), dir, otlp, &[]);
    let env = [("ERP_CONNECT__PROCESS__SYSTEM_URL", format!("http://{system_addr}"))];
    let (_process, process_addr) = Child::start(&serve("process"), dir, otlp, &env);
    let env = [("ERP_CONNECT__EXPERIENCE__PROCESS_URL", format!("http://{process_addr}"))];
    let (_experience, experience_addr) = Child::start(&serve("experience"), dir, otlp, &env);
    let env = [("ERP_CONNECT__GATEWAY__EXPERIENCE_URL", format!("http://{experience_addr}"))];
    let (_gateway, gateway_addr) = Child::start(&serve("gateway"), dir, otlp, &env);
    let base = format!("http://{gateway_addr}");

    let body =
        json!({"lines": [{"sku": "WIDGET-1", "quantity": 2}], "payment": {"method": "card", "token": "tok_visa"}});
    let placed = post_json(&format!("{base}/web/v1/orders"), &token, &body, Some("traced-serve")).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("an order id").to_owned();
    let trace_id = placed.body["trace_id"].as_str().expect("the order names its trace").to_owned();
    wait_until_confirmed(&base, &token, &id).await;

    let spans = receiver
        .wait_for(&trace_id, "the spans of four processes", |spans| {
            parents_arrived(spans)
                && spans.iter().any(|s| is_tier(s, "gateway"))
                && spans.iter().any(|s| is_tier(s, "experience"))
                && spans.iter().any(|s| is_rpc_server(s, "order_to_cash.v1."))
                && spans
                    .iter()
                    .any(|s| is_erp_call(s) && attr_str(s, "db.operation.name") == Some("create_sales_order"))
        })
        .await;
    let roots: Vec<&str> = spans.iter().filter(|s| s.parent_span_id.is_empty()).map(|s| s.name.as_str()).collect();
    assert_eq!(roots, ["POST /web/v1/orders"], "one root, the gateway's");
    for span in &spans {
        if !span.parent_span_id.is_empty() {
            assert!(spans.iter().any(|p| p.span_id == span.parent_span_id), "{} has no parent in the trace", span.name);
        }
    }
    // The HTTP hop between gateway and experience tier: a client span with
    // the experience tier's server span as its child.
    let experience = spans.iter().find(|s| is_tier(s, "experience")).expect("experience span");
    let hop = spans.iter().find(|s| s.span_id == experience.parent_span_id).expect("its parent");
    assert_eq!((hop.kind, hop.name.as_str()), (CLIENT, "POST"), "the gateway's client span");
    assert_eq!(attr_int(hop, "server.port"), Some(i64::from(experience_addr.port())));
    // Over the network the client spans name their server.
    let erp = spans.iter().find(|s| is_erp_call(s)).expect("an ERP call");
    let client = ancestors(erp, &spans).into_iter().find(|s| s.kind == CLIENT).expect("the process tier's call");
    assert_eq!(attr_int(client, "server.port"), Some(i64::from(system_addr.port())));
}

/// `erp-connect up` exporting with `env` set (over the one `Child::start`
/// sets, `OTEL_EXPORTER_OTLP_ENDPOINT=http://{otlp}`); one catalogue
/// request through the gateway; the span the gateway made of it.
async fn export_one_request(otlp: SocketAddr, env: &[(&str, String)], receiver: &Receiver) -> (Child, Span) {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let args = ["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
    let (child, http) = Child::start(&args, data_dir.path(), otlp, env);
    let token = harness::token(data_dir.path(), "catalog:read");
    let reply = get(&format!("http://{http}/web/v1/products?page_size=1"), Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let span = receiver
        .wait_for_span("gateway span of GET /web/v1/products", |s| {
            is_tier(s, "gateway") && s.name == "GET /web/v1/products"
        })
        .await;
    (child, span)
}

#[tokio::test]
async fn spans_reach_an_otlp_http_collector_at_v1_traces_with_http_protobuf() {
    let receiver = HttpReceiver::default();
    let otlp = receiver.start().await;
    let env = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned())];
    let (_up, span) = export_one_request(otlp, &env, &receiver.received).await;
    assert_eq!(attr_int(&span, "http.response.status_code"), Some(200), "{:?}", span.attributes);
    assert!(receiver.received.services().iter().all(|s| s == "erp-connect"), "{:?}", receiver.received.services());
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for (path, content_type) in requests {
        // The base endpoint gets the signal's path appended.
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
    }
}

#[tokio::test]
async fn an_otlp_traces_endpoint_is_used_as_it_is_over_http_protobuf() {
    let receiver = HttpReceiver::default();
    let otlp = receiver.start().await;
    let env = [
        // The general variables name gRPC and another collector: the
        // traces' own win.
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("http://{otlp}/collector/traces")),
        ("OTEL_SERVICE_NAME", "shop-edge".to_owned()),
    ];
    let unused = "127.0.0.1:9".parse().expect("addr");
    let (_up, _span) = export_one_request(unused, &env, &receiver.received).await;
    assert!(receiver.received.services().iter().all(|s| s == "shop-edge"), "{:?}", receiver.received.services());
    let paths: Vec<String> = receiver.requests().into_iter().map(|(path, _)| path).collect();
    assert!(!paths.is_empty() && paths.iter().all(|p| p == "/collector/traces"), "{paths:?}");
}

#[tokio::test]
async fn spans_reach_an_otlp_grpc_collector_when_grpc_is_named() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let env =
        [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc".to_owned()), ("OTEL_SERVICE_NAME", "shop-grpc".to_owned())];
    let (_up, span) = export_one_request(otlp, &env, &receiver).await;
    assert_eq!(attr_str(&span, "http.route"), Some("/web/v1/products"));
    assert!(receiver.services().iter().all(|s| s == "shop-grpc"), "{:?}", receiver.services());
    assert!(!receiver.services().is_empty());
}

#[tokio::test]
async fn spans_still_buffered_reach_the_http_collector_when_the_process_stops() {
    let receiver = HttpReceiver::default();
    let otlp = receiver.start().await;
    // A batch delay no test waits out: the spans can only leave with the
    // flush at shutdown, which runs while the runtime the HTTP client needs
    // is still up.
    let env =
        [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()), ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned())];
    let data_dir = tempfile::tempdir().expect("tempdir");
    let args = ["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
    let (mut up, http) = Child::start(&args, data_dir.path(), otlp, &env);
    let token = harness::token(data_dir.path(), "catalog:read");
    let reply = get(&format!("http://{http}/web/v1/products?page_size=1"), Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let terminated = Command::new("kill").args(["-TERM", &up.process.id().to_string()]).status().expect("kill runs");
    assert!(terminated.success());
    let (up, status) = tokio::task::spawn_blocking(move || {
        let status = up.process.wait();
        (up, status)
    })
    .await
    .expect("waited");
    assert!(status.expect("exit status").success(), "a clean stop; logs: {:?}", up.log_lines());
    let spans: Vec<Span> = receiver.received.spans.lock().expect("not poisoned").values().flatten().cloned().collect();
    assert!(
        spans.iter().any(|s| is_tier(s, "gateway") && s.name == "GET /web/v1/products"),
        "the request's spans were flushed: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}
