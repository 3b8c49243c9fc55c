//! Test harness: starts the product in `up` or `serve` mode on port 0 with
//! the bound listeners handed over (no sleeps, no port races), each in its
//! own temporary data directory, and a small HTTP client for the tests.

#![allow(dead_code)] // each test binary uses a different part of it

pub mod faults;
pub mod leaks;

use std::{net::SocketAddr, path::Path, time::Duration};

use erp_connect::{
    config::Config,
    serve::{Target, Tier},
    up::App,
};
use gateway::dev_idp::{DevIdp, TokenRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use platform::shutdown::Shutdown;
use tokio::{net::TcpListener, task::JoinHandle};

/// The path of the `erp-connect` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_erp-connect");

pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind port 0")
}

/// A configuration for tests: everything under `data_dir`, short grace.
pub fn test_config(data_dir: &Path) -> Config {
    Config { data_dir: data_dir.to_owned(), shutdown_grace: Duration::from_secs(5), ..Config::default() }
}

/// A dev token signed by the dev identity provider of `data_dir`.
pub fn token(data_dir: &Path, scope: &str) -> String {
    DevIdp::load_or_create(data_dir)
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "alice".into(),
            scope: scope.into(),
            audience: "erp-connect".into(),
            tenant: None,
            email: Some("alice@example.com".into()),
            ttl: Duration::from_secs(300),
        })
        .expect("mint")
}

/// A dev token for `subject` with `scope`, an optional partner `tenant`
/// and e-mail, signed by the dev identity provider of `data_dir`.
pub fn token_for(data_dir: &Path, subject: &str, tenant: Option<&str>, email: Option<&str>, scope: &str) -> String {
    DevIdp::load_or_create(data_dir)
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: subject.into(),
            scope: scope.into(),
            audience: "erp-connect".into(),
            tenant: tenant.map(str::to_owned),
            email: email.map(str::to_owned),
            ttl: Duration::from_secs(900),
        })
        .expect("mint")
}

/// A service token for the process APIs (`aud` `process-apis`), signed by
/// the dev identity provider of `data_dir`, as an internal caller presents
/// it to a process tier in `serve` mode.
pub fn service_token(data_dir: &Path) -> String {
    DevIdp::load_or_create(data_dir)
        .expect("dev idp")
        .mint(&TokenRequest {
            subject: "internal-team".into(),
            scope: String::new(),
            audience: erp_connect::service_auth::AUDIENCE.into(),
            tenant: None,
            email: None,
            ttl: Duration::from_secs(3600),
        })
        .expect("mint")
}

/// Sends `authorization: Bearer <token>` with every gRPC call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel to a process tier in `serve` mode, with a service token.
pub type ProcessChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel`, presenting `token` on every call.
pub fn with_token(channel: tonic::transport::Channel, token: &str) -> ProcessChannel {
    let value = format!("Bearer {token}").parse().expect("a token fits a header");
    tonic::service::interceptor::InterceptedService::new(channel, Bearer(value))
}

/// A running product: where its gateway listens and how to stop it.
pub struct Running {
    pub http: SocketAddr,
    /// Where each gRPC tier listens (`up`: the process APIs only).
    pub grpc: Vec<(Target, SocketAddr)>,
    pub data_dir: tempfile::TempDir,
    pub shutdown: Shutdown,
    tasks: Vec<(Target, Shutdown, JoinHandle<()>)>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn token(&self, scope: &str) -> String {
        token(self.data_dir.path(), scope)
    }

    /// A service token the process tier accepts in `serve` mode.
    pub fn service_token(&self) -> String {
        service_token(self.data_dir.path())
    }

    /// A lazily connecting channel to `target`'s gRPC address; calls to the
    /// process tier carry a service token (`up` mode ignores it).
    pub fn grpc_channel(&self, target: Target) -> ProcessChannel {
        let addr = self.grpc.iter().find(|(t, _)| *t == target).map(|(_, a)| *a).expect("tier running");
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy();
        with_token(channel, &self.service_token())
    }

    /// Stops one tier (serve mode) and waits until it has drained.
    pub async fn stop(&mut self, target: Target) {
        let index = self.tasks.iter().position(|(t, ..)| *t == target).expect("tier running");
        let (_, shutdown, task) = self.tasks.remove(index);
        shutdown.cancel();
        task.await.expect("tier task");
    }

    /// Stops everything and waits for it.
    pub async fn stop_all(mut self) {
        self.shutdown.cancel();
        for (_, shutdown, task) in self.tasks.drain(..) {
            shutdown.cancel();
            task.await.expect("tier task");
        }
    }
}

/// A partner API key made by `erp-connect keys create` in the app's data
/// directory, with `scopes` (comma-separated) and `plan`.
pub fn create_key(app: &Running, partner: &str, scopes: &str, plan: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["keys", "create", "--partner", partner, "--scopes", scopes, "--plan", plan])
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .env_remove("ERP_CONNECT_CONFIG")
        .output()
        .expect("keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// `erp-connect up` in this process.
pub async fn spawn_up() -> Running {
    spawn_up_with(|_| {}).await
}

/// Saga timings for tests: quick retries and feed polls, so a test waits
/// milliseconds rather than seconds for what production spaces out.
pub fn quick_sagas(config: &mut Config) {
    config.process.saga.backoff_base = Duration::from_millis(10);
    config.process.saga.backoff_cap = Duration::from_millis(200);
    config.process.saga.feed_poll_interval = Duration::from_millis(50);
    config.process.saga.poll_interval = Duration::from_millis(50);
}

/// `erp-connect up` in this process, with `adjust` applied to the config.
pub async fn spawn_up_with(adjust: impl FnOnce(&mut Config)) -> Running {
    leaks::watch_logs();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data_dir.path());
    adjust(&mut config);
    leaks::forbid_passwords_of(&config);
    let app = App::build(config).await.expect("up builds");
    let (http, grpc) = (listener().await, listener().await);
    let addr = http.local_addr().expect("addr");
    let grpc_addr = grpc.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { app.serve(http, grpc, shutdown).await.expect("up serves") }
    });
    Running {
        http: addr,
        grpc: vec![(Target::Process, grpc_addr)],
        data_dir,
        shutdown: shutdown.clone(),
        tasks: vec![(Target::Gateway, shutdown, task)],
    }
}

/// The four tiers as four servers talking gRPC/HTTP over loopback, as
/// `erp-connect serve` runs them.
pub async fn spawn_serve() -> Running {
    spawn_serve_with(|_| {}).await
}

/// [`spawn_serve`] with `adjust` applied to the config.
pub async fn spawn_serve_with(adjust: impl FnOnce(&mut Config)) -> Running {
    spawn_serve_routed(adjust, |_, addr| addr).await
}

/// [`spawn_serve_with`], each tier reached by its caller at the address
/// `route` gives for the tier's own (a fault proxy in front of it, say).
pub async fn spawn_serve_routed(
    adjust: impl FnOnce(&mut Config),
    mut route: impl FnMut(Target, SocketAddr) -> SocketAddr,
) -> Running {
    leaks::watch_logs();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(data_dir.path());
    adjust(&mut config);
    leaks::forbid_passwords_of(&config);
    let listeners = [listener().await, listener().await, listener().await, listener().await];
    let [gw, exp, proc_, sys] = listeners.each_ref().map(|l| l.local_addr().expect("addr"));
    // The tiers' certificates name 127.0.0.1 when `[internal.tls]` is set.
    let scheme = if config.internal.tls.is_some() { "https" } else { "http" };
    config.gateway.experience_url = format!("{scheme}://{}", route(Target::Experience, exp));
    config.experience.process_url = format!("{scheme}://{}", route(Target::Process, proc_));
    config.process.system_url = format!("{scheme}://{}", route(Target::System, sys));
    let all = Shutdown::new();
    let mut tasks = Vec::new();
    for (target, listener) in [Target::System, Target::Process, Target::Experience, Target::Gateway].into_iter().zip({
        let [g, e, p, s] = listeners;
        [s, p, e, g]
    }) {
        let tier = Tier::build(target, &config).await.expect("tier builds");
        let shutdown = all.child_token();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { tier.serve(listener, shutdown).await.expect("tier serves") }
        });
        tasks.push((target, shutdown, task));
    }
    Running { http: gw, grpc: vec![(Target::Process, proc_), (Target::System, sys)], data_dir, shutdown: all, tasks }
}

/// `[internal.tls]` for [`spawn_serve_with`], with files written to `dir`
/// at test time: `ca.pem`, and `tier.pem`/`tier.key` for 127.0.0.1, fit
/// to serve and to present as a client (mTLS between tiers).
pub fn internal_tls(dir: &Path, require_client_certificate: bool) -> erp_connect::config::InternalTls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    std::fs::create_dir_all(dir).expect("tls dir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "erp-connect test internal CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let mut tier = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    tier.distinguished_name.push(DnType::CommonName, "erp-connect tier");
    tier.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = tier.signed_by(&key, &ca).expect("signed");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca");
    std::fs::write(dir.join("tier.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.join("tier.key"), key.serialize_pem()).expect("key");
    erp_connect::config::InternalTls {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("tier.pem"),
        key_file: dir.join("tier.key"),
        require_client_certificate,
        reload_interval: Duration::from_secs(10),
    }
}

/// Polls `done` until it holds, failing after `within` with `what`.
pub async fn until<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "not in {within:?}: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Drives every order in `ids` to a terminal status through the process
/// tier, as the other systems would: cash recorded for an invoiced
/// on-account order, shipments completed for a paid one. Returns the
/// orders as they ended; fails after `within`.
pub async fn settle_orders(
    orders: &mut erp_connect_proto::order_to_cash::v1::order_to_cash_service_client::OrderToCashServiceClient<
        ProcessChannel,
    >,
    ids: &std::collections::HashSet<String>,
    within: Duration,
) -> std::collections::HashMap<String, erp_connect_proto::order_to_cash::v1::Order> {
    use erp_connect_proto::order_to_cash::v1::{self as o2c, OrderStatus, PaymentMethod};
    let mut finished = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + within;
    while finished.len() < ids.len() {
        assert!(tokio::time::Instant::now() < deadline, "orders still running: {}", ids.len() - finished.len());
        let running: Vec<&String> = ids.iter().filter(|id| !finished.contains_key(*id)).collect();
        for id in running {
            let order = orders
                .get_order(o2c::GetOrderRequest { tenant: String::new(), order_id: id.clone() })
                .await
                .expect("order")
                .into_inner();
            match order.status() {
                OrderStatus::Completed | OrderStatus::Rejected | OrderStatus::Cancelled => {
                    finished.insert(id.clone(), order);
                }
                OrderStatus::Invoiced if order.payment_method() == PaymentMethod::OnAccount => {
                    let payment = o2c::RecordPaymentRequest {
                        idempotency_key: "cash".into(),
                        tenant: String::new(),
                        order_id: id.clone(),
                        currency: order.currency.clone(),
                        amount: order.total.clone(),
                    };
                    // UNAVAILABLE: a system did not answer; the next sweep retries.
                    if let Err(status) = orders.record_payment(payment).await {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "cash applied: {status:?}");
                    }
                }
                OrderStatus::Paid => {
                    for shipment_id in &order.erp.as_ref().expect("refs").shipment_ids {
                        let request = o2c::CompleteShipmentRequest { shipment_id: shipment_id.clone() };
                        if let Err(status) = orders.complete_shipment(request).await {
                            assert_eq!(status.code(), tonic::Code::Unavailable, "shipped: {status:?}");
                        }
                    }
                }
                _ => {}
            }
        }
        // Give the sagas and the feed a moment between sweeps.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finished
}

/// The payments ledger of a system tier's data directory, by the caller's
/// reference (our order id): each payment's status and captured amount.
/// Read from its SQLite file, so that every authorization and capture is
/// counted, not only the one an order points at.
pub async fn payments_ledger(data_dir: &Path) -> std::collections::HashMap<String, Vec<(String, String)>> {
    use sqlx::Row;
    let url = format!("sqlite://{}", data_dir.join("payments.db").display());
    let ledger = sqlx::SqlitePool::connect(&url).await.expect("payments ledger");
    let rows = sqlx::query("SELECT reference, status, captured_amount FROM payments")
        .fetch_all(&ledger)
        .await
        .expect("payments");
    let mut by_order: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    for row in rows {
        by_order.entry(row.get("reference")).or_default().push((row.get("status"), row.get("captured_amount")));
    }
    ledger.close().await;
    by_order
}

/// Checks the ledger against the orders as they ended: at most one live
/// (authorized or captured) payment per order, and captured in all exactly
/// the completed card orders' totals, nothing for any other order.
pub fn assert_charged_once(
    ledger: &std::collections::HashMap<String, Vec<(String, String)>>,
    orders: &std::collections::HashMap<String, erp_connect_proto::order_to_cash::v1::Order>,
) {
    use erp_connect_proto::order_to_cash::v1::{OrderStatus, PaymentMethod};
    use rust_decimal::Decimal;
    let amount = |text: &str| text.parse::<Decimal>().expect("an amount");
    for (reference, payments) in ledger {
        let order = orders.get(reference).unwrap_or_else(|| panic!("a payment for no order of ours: {reference}"));
        let live = payments.iter().filter(|(status, _)| status == "authorized" || status == "captured").count();
        assert!(live <= 1, "order {reference}: {live} live payments: {payments:?}");
        let captured: Decimal = payments.iter().map(|(_, c)| amount(c)).sum();
        let owed = if order.status() == OrderStatus::Completed && order.payment_method() == PaymentMethod::Card {
            amount(&order.total)
        } else {
            Decimal::ZERO
        };
        assert_eq!(captured, owed, "order {reference} ({:?}): {payments:?}", order.status());
    }
    for order in orders.values() {
        if order.status() == OrderStatus::Completed && order.payment_method() == PaymentMethod::Card {
            assert!(ledger.contains_key(&order.id), "completed card order {} has no payment", order.id);
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

/// `GET url` with an optional bearer token.
pub async fn get(url: &str, bearer: Option<&str>) -> Reply {
    let mut request = http::Request::get(url);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(Full::default()).expect("request")).await
}

pub async fn send(request: http::Request<Full<bytes::Bytes>>) -> Reply {
    let client: Client<HttpConnector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (method, path) = (request.method().to_string(), request.uri().path().to_owned());
    let response = client.request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !leaks::issues_secret(&method, &path)
        && let Some(kind) = leaks::secret_in(&text)
    {
        panic!("{method} {path} answered with {kind}: {text}");
    }
    leaks::assert_none_logged();
    Reply { status, headers, body, text }
}

/// Asserts `reply` is a problem+json body with `status`.
pub fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/problem+json", "{}", reply.text);
    assert_eq!(reply.body["status"], status);
    assert!(reply.body["type"].as_str().is_some_and(|t| t.starts_with("https://")), "{}", reply.text);
    assert!(reply.body["title"].is_string() && reply.body["detail"].is_string(), "{}", reply.text);
    assert!(reply.headers.contains_key("x-request-id"));
}

/// `POST url` with a JSON `body`, a bearer token and an optional
/// `Idempotency-Key`.
pub async fn post_json(url: &str, bearer: &str, body: &serde_json::Value, key: Option<&str>) -> Reply {
    let mut request = http::Request::post(url)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    send(request.body(Full::new(bytes::Bytes::from(body.to_string()))).expect("request")).await
}

/// Polls `GET path` until the order's status is `status`, under one
/// overall deadline; fails early when it ends otherwise.
pub async fn wait_for_order(app: &Running, bearer: &str, path: &str, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut pause = Duration::from_millis(20);
    loop {
        let reply = get(&app.url(path), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let now = reply.body["status"].as_str().unwrap_or_default().to_owned();
        if now == status {
            return reply.body;
        }
        assert!(!matches!(now.as_str(), "rejected" | "cancelled" | "completed"), "wanted {status}: {}", reply.text);
        assert!(std::time::Instant::now() < deadline, "no {status} in time: {}", reply.text);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A tier as a child process of the real binary (`erp-connect serve`), for
/// tests that kill it with SIGKILL.
pub struct ChildTier {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl ChildTier {
    /// The process tier, as [`ChildTier::start`] starts it.
    pub fn process(config: &Path) -> Self {
        Self::start(Target::Process, config)
    }

    /// Starts `erp-connect serve --target <target>` on a free port and
    /// waits for its "serving" log line, which names the bound address.
    pub fn start(target: Target, config: &Path) -> Self {
        let name = format!("{target:?}").to_lowercase();
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--target", &name, "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("ERP_CONNECT_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the tier starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the address is known, so the child never
            // blocks on a full pipe.
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                leaks::scan(&line);
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if entry["message"] == "serving"
                    && let Some(addr) = entry["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr =
            rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("the {name} tier reports its address"));
        Self { child, addr }
    }

    pub fn kill(mut self) {
        // SIGKILL: no drain, no cleanup.
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
        leaks::assert_none_logged();
    }
}

impl Drop for ChildTier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A system tier served in this process, and a configuration file for
/// process tiers run as child processes ([`ChildTier`]) against it, with
/// quick saga timings and a 1 s lease.
pub struct ChildrensSystem {
    pub addr: SocketAddr,
    /// A service token the process tiers started with `config_file` accept.
    pub service_token: String,
    pub config_file: std::path::PathBuf,
    pub data_dir: tempfile::TempDir,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), erp_connect::StartError>>,
}

impl ChildrensSystem {
    /// `process` holds extra `[process]` keys, `sections` whole extra
    /// sections (e.g. `[process.events]`), both as TOML lines.
    pub async fn start(process: &str, sections: &str) -> Self {
        Self::start_with(|_| {}, process, "1s", sections).await
    }

    /// [`ChildrensSystem::start`] with `adjust` applied to the system
    /// tier's configuration (another ERP, say) and a saga lease of `lease`
    /// (a step never runs longer than most of it: give a slow ERP more).
    pub async fn start_with(adjust: impl FnOnce(&mut Config), process: &str, lease: &str, sections: &str) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        leaks::forbid_passwords_of(&config);
        let listener = listener().await;
        let addr = listener.local_addr().expect("addr");
        let tier = Tier::build(Target::System, &config).await.expect("system tier");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(tier.serve(listener, shutdown.clone()));
        let config_file = data_dir.path().join("process.toml");
        let toml = format!(
            "data_dir = {dir:?}\n\
             [process]\nsystem_url = \"http://{addr}\"\n{process}\n\
             [process.saga]\nlease = \"{lease}\"\nbackoff_base = \"20ms\"\nbackoff_cap = \"500ms\"\n\
             poll_interval = \"50ms\"\nfeed_poll_interval = \"100ms\"\n{sections}\n",
            dir = data_dir.path().display().to_string(),
        );
        std::fs::write(&config_file, toml).expect("config written");
        let service_token = service_token(data_dir.path());
        Self { addr, service_token, config_file, data_dir, shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("system task").expect("system tier");
    }
}

/// The `Nats-Msg-Id` (the outbox event's id) of every message on JetStream
/// `stream` at `nats_url`, in stream order.
pub async fn stream_message_ids(nats_url: &str, stream: &str) -> Vec<String> {
    use futures_util::StreamExt;
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let mut stream = jetstream.get_stream(stream).await.expect("stream");
    let count = usize::try_from(stream.info().await.expect("stream info").state.messages).expect("count");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream's messages arrive")
            .expect("stream open")
            .expect("message");
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_owned());
        ids.push(id.expect("every event carries its id"));
    }
    ids
}
