//! The multi-replica proof: every tier runs as two replicas of the real
//! binary (`erp-connect serve`), each tier behind an HAProxy of its own
//! (Debian's), as a Kubernetes Service or a load balancer puts it, and all
//! share PostgreSQL (a database per store: API keys, sagas and outbox, the
//! embedded ERP, the payments ledger, the embedded CRM), NATS JetStream and
//! Redis. The system tier runs its two replicas on PostgreSQL too.
//!
//! Partner clients place orders with `Idempotency-Key`s, retrying a failed
//! request with the same key, while one replica of each tier after the
//! other is killed with SIGKILL and started again, twice round. Then:
//! every accepted order reaches a terminal state, `erp-connect reconcile`
//! exits 0, no saga ran a side effect twice (the payments ledger and the
//! ERP's sales orders counted), one key's rate limit and order quota hold
//! across the two gateway replicas, every outbox event is on the stream
//! exactly once, and fewer than 1 % of the clients' requests failed.
//!
//! The figures are printed at the end, and written to the file
//! `ERP_CONNECT_SCALE_OUT_REPORT` names (`.ci/run` prints it; they are
//! copied into deploy/README.md).

mod harness;

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use erp_connect::serve::Target;
use erp_connect_proto::order_to_cash::v1::{self as o2c, OrderStatus, PaymentMethod};
use harness::{BIN, ChildTier, with_token};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use platform::database::ScratchPostgres;
use serde_json::json;

/// Partner clients placing orders at once, one request at a time each.
const CLIENTS: usize = 4;
/// Orders placed at most, a bound the paced load stays below: it ends with
/// the kill schedule. Spread over SKUs whose demo stock covers them, so
/// every order can complete.
const MAX_ORDERS: usize = 900;
/// Each client's pace: one order at most this often.
const PACE: Duration = Duration::from_millis(150);
const SKUS: [&str; 10] = [
    "GADGET-2",
    "GADGET-1",
    "WIDGET-2",
    "BOLT-M8",
    "NUT-M6",
    "DRILL-10",
    "GOGGLE-1",
    "HELMET-1",
    "LEVEL-60",
    "BLADE-165",
];
/// Times round the tiers, killing one replica of each.
const ROUNDS: usize = 2;
/// Load between one replica's restart and the next kill.
const BETWEEN_KILLS: Duration = Duration::from_millis(1500);
/// The replicas of each tier.
const REPLICAS: usize = 2;
/// The plans of the rate-limit and quota checks.
const BURST: usize = 10;
const ORDERS_PER_DAY: usize = 10;

/// One HAProxy in front of a tier's replicas: its own process, given its
/// listening socket as standard input (`bind fd@0`), so the address is
/// known (port 0) before it starts; replicas that come back on another
/// port are set through its admin socket.
struct Balancer {
    child: Child,
    admin: PathBuf,
}

impl Balancer {
    fn start(dir: &Path, tier: &str, listener: std::net::TcpListener, grpc: bool, servers: &[SocketAddr]) -> Self {
        let admin = dir.join(format!("{tier}.sock"));
        // h2 (gRPC) toward the gRPC tiers; health checks: HTTP /healthz on
        // the HTTP tiers, a TCP connect on the gRPC ones, lenient (three
        // misses, 2 s each), so that a busy survivor is not taken out with
        // the dead one: a dead replica refuses connections, which the
        // retries below see at once. A request whose
        // replica died before answering is sent to another (empty-response,
        // conn-failure): safe here, as every write carries an idempotency key.
        let proto = if grpc { " proto h2" } else { "" };
        let check = if grpc { "" } else { "    option httpchk GET /healthz\n" };
        let servers: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("    server r{i} {s} check inter 200ms fall 3 rise 1{proto}\n"))
            .collect();
        let config = format!(
            "global\n    stats socket {admin} level admin\n    nbthread 1\n    maxconn 4000\n\
             defaults\n    mode http\n    timeout connect 500ms\n    timeout client 60s\n    timeout server 30s\n\
             \x20   timeout check 2s\n    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n\
             frontend {tier}\n    bind fd@0{proto}\n    default_backend {tier}-replicas\n\
             backend {tier}-replicas\n    balance roundrobin\n{check}{servers}",
            admin = admin.display()
        );
        let file = dir.join(format!("{tier}.cfg"));
        std::fs::write(&file, config).expect("haproxy config");
        let log = std::fs::File::create(dir.join(format!("{tier}.log"))).expect("log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy starts (Debian's package haproxy; .ci/run installs it)");
        Self { child, admin }
    }

    /// Points server `index` at `addr` (a restarted replica's new port).
    fn set_server(&self, tier: &str, index: usize, addr: SocketAddr) {
        let answer =
            self.admin(&format!("set server {tier}-replicas/r{index} addr {} port {}", addr.ip(), addr.port()));
        assert!(
            answer.contains("IP changed") || answer.contains("port changed") || answer.contains("no need"),
            "{answer}"
        );
    }

    /// Requests this balancer sent again after a replica failed them:
    /// retried (`wretr`) plus redispatched to the other replica (`wredis`).
    fn retried(&self, tier: &str) -> u64 {
        let stats = self.admin("show stat");
        let header: Vec<&str> = stats.lines().next().unwrap_or_default().trim_start_matches("# ").split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name).expect("a stats column");
        let (retries, redispatches) = (column("wretr"), column("wredis"));
        let backend = format!("{tier}-replicas");
        stats
            .lines()
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|row| row.first() == Some(&backend.as_str()) && row.get(1) == Some(&"BACKEND"))
            .map(|row| [retries, redispatches].iter().map(|c| row[*c].parse::<u64>().unwrap_or(0)).sum::<u64>())
            .sum()
    }

    /// One command on the admin socket; its whole answer.
    fn admin(&self, command: &str) -> String {
        // The admin socket may not be up in the first moments after start.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.admin) {
                Ok(stream) => break stream,
                Err(err) => {
                    assert!(Instant::now() < deadline, "haproxy admin socket: {err}");
                    std::thread::yield_now();
                }
            }
        };
        stream.write_all(format!("{command}\n").as_bytes()).expect("admin command");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("admin answer");
        answer
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When the load started: failures and kills are told in seconds since.
static LOAD_STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn since_load() -> f64 {
    LOAD_STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// What the clients saw while the replicas died.
#[derive(Default)]
struct Seen {
    attempts: usize,
    failed: usize,
    by_status: HashMap<String, usize>,
    /// What the failed answers said (problem `detail`), by status.
    failures: Vec<String>,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

/// Places one order through `url`, retrying a failed attempt with the same
/// key and body; returns the order's id.
async fn place(client: &HttpClient, url: &str, api_key: &str, key: &str, body: &str, seen: &Mutex<Seen>) -> String {
    for _ in 0..200 {
        let request = http::Request::post(url)
            .header("x-api-key", api_key)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::from(body.to_owned()))
            .expect("request");
        let outcome = match client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                (status.to_string(), serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            }
            Err(err) => (format!("connection error ({})", err.is_connect()), None),
        };
        let id = match (outcome.0.as_str(), &outcome.1) {
            ("200" | "201", Some(order)) => order["id"].as_str().map(str::to_owned),
            _ => None,
        };
        {
            let mut seen_now = seen.lock().expect("not poisoned");
            seen_now.attempts += 1;
            *seen_now.by_status.entry(outcome.0.clone()).or_default() += 1;
            seen_now.failed += usize::from(id.is_none());
            if id.is_none() {
                let detail = outcome.1.as_ref().map(|p| p["detail"].to_string()).unwrap_or_default();
                seen_now.failures.push(format!("{} {detail} at {:.2} s", outcome.0, since_load()));
            }
        }
        if let Some(id) = id {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {key} was never accepted");
}

/// `erp-connect <args>` with the proof's configuration; its stdout.
fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("ERP_CONNECT_CONFIG")
        .output()
        .expect("erp-connect runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_every_tier_lose_nothing_while_one_of_each_is_killed_twice() {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let (stream, prefix) = (format!("SCALE_OUT_{run}"), format!("scale_{run}.erp.events"));
    let [gateway_db, process_db, erp_db, payments_db, crm_db] = [
        ScratchPostgres::create("scale_gateway").await,
        ScratchPostgres::create("scale_process").await,
        ScratchPostgres::create("scale_erp").await,
        ScratchPostgres::create("scale_payments").await,
        ScratchPostgres::create("scale_crm").await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners: Vec<std::net::TcpListener> =
        (0..4).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
    let lb: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let (lb_gateway, lb_experience, lb_process, lb_system) = (lb[0], lb[1], lb[2], lb[3]);
    let config = dir.path().join("erp-connect.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nshutdown_grace = \"5s\"\n\
             [gateway]\nexperience_url = \"http://{lb_experience}\"\ndatabase_url = \"{gateway}\"\n\
             redis_url = \"redis://127.0.0.1:6379\"\n\
             [gateway.plans.trickle]\nrequests_per_second = 1\nburst = {BURST}\n\
             [gateway.plans.quota]\nrequests_per_second = 1000\norders_per_day = {ORDERS_PER_DAY}\n\
             [experience]\nprocess_url = \"http://{lb_process}\"\n\
             [process]\nsystem_url = \"http://{lb_system}\"\nsystem_timeout = \"1s\"\ndatabase_url = \"{process}\"\n\
             [process.saga]\nlease = \"2s\"\nbackoff_base = \"20ms\"\nbackoff_cap = \"500ms\"\npoll_interval = \"50ms\"\n\
             feed_poll_interval = \"100ms\"\npartner_credit_limit = \"1000000.00\"\n\
             [process.events]\nbus = \"nats\"\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\npoll_interval = \"50ms\"\n\
             [erp]\ndatabase_url = \"{erp}\"\n[payments]\ndatabase_url = \"{payments}\"\n\
             [crm]\ndatabase_url = \"{crm}\"\n",
            data = dir.path().join("data").display().to_string(),
            gateway = gateway_db.url(),
            process = process_db.url(),
            erp = erp_db.url(),
            payments = payments_db.url(),
            crm = crm_db.url(),
        ),
    )
    .expect("config written");

    // Migrations first, as the Kubernetes Job runs them; then the tiers
    // from the bottom up, one replica at a time (dev mode's shared secrets
    // are created by the first).
    let (migrated, _, stderr) = cli(&config, &["migrate"]);
    assert!(migrated, "erp-connect migrate: {stderr}");
    let token = harness::service_token(&dir.path().join("data"));
    let tiers = [Target::Gateway, Target::Experience, Target::Process, Target::System];
    // Replicas and balancers by the tier's place in `tiers`.
    let mut replicas: Vec<Vec<Option<ChildTier>>> = (0..tiers.len()).map(|_| Vec::new()).collect();
    for (tier, target) in tiers.iter().enumerate().rev() {
        replicas[tier] = (0..REPLICAS).map(|_| Some(ChildTier::start(*target, &config))).collect();
    }
    let balancers: Vec<Balancer> = tiers
        .iter()
        .zip(listeners)
        .enumerate()
        .map(|(tier, (target, listener))| {
            let servers: Vec<SocketAddr> = replicas[tier].iter().map(|r| r.as_ref().expect("running").addr).collect();
            let grpc = matches!(target, Target::Process | Target::System);
            Balancer::start(dir.path(), &name(*target), listener, grpc, &servers)
        })
        .collect();
    let (created, load_key, stderr) = cli(
        &config,
        &["keys", "create", "--partner", "acme", "--scopes", "orders:read,orders:write", "--plan", "unmetered"],
    );
    assert!(created, "keys create: {stderr}");

    let load_started = *LOAD_STARTED.get_or_init(Instant::now);
    // The load: partner orders, half by card, half on account.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let loading = Arc::new(AtomicBool::new(true));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, seen, loading, next, key) =
                (client.clone(), seen.clone(), loading.clone(), next.clone(), load_key.clone());
            let url = format!("http://{lb_gateway}/partner/v1/orders");
            let run = run.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while loading.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= MAX_ORDERS {
                        break;
                    }
                    let payment = if n % 2 == 0 { json!({"method": "card", "token": "tok_visa"}) } else { json!({"method": "on_account"}) };
                    let reference = format!("PO-{run}-{n}");
                    let body = json!({"external_ref": reference, "lines": [{"sku": SKUS[n % SKUS.len()], "quantity": 1}], "payment": payment});
                    let next_at = tokio::time::Instant::now() + PACE;
                    ids.push(place(&client, &url, &key, &reference, &body.to_string(), &seen).await);
                    tokio::time::sleep_until(next_at).await;
                }
                ids
            })
        })
        .collect();

    // The kills: one replica of each tier after the other, bottom up,
    // alternating which replica, twice round.
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        for (tier, target) in tiers.iter().enumerate().rev() {
            tokio::time::sleep(BETWEEN_KILLS).await;
            let index = round % REPLICAS;
            let victim = replicas[tier][index].take().expect("running");
            let (killed_at, killed_since) = (Instant::now(), since_load());
            tokio::task::spawn_blocking(move || victim.kill()).await.expect("killed");
            let config = config.clone();
            let target_now = *target;
            let back =
                tokio::task::spawn_blocking(move || ChildTier::start(target_now, &config)).await.expect("restarted");
            balancers[tier].set_server(&name(*target), index, back.addr);
            kills.push(format!(
                "{} #{index} at {killed_since:.2} s, back in {} ms",
                name(*target),
                killed_at.elapsed().as_millis()
            ));
            replicas[tier][index] = Some(back);
        }
    }
    tokio::time::sleep(BETWEEN_KILLS).await;
    loading.store(false, Ordering::Relaxed);
    let mut ids = HashSet::new();
    for placing in clients {
        ids.extend(placing.await.expect("client"));
    }
    let load_for = load_started.elapsed();
    let retried: Vec<String> =
        tiers.iter().zip(&balancers).map(|(t, b)| format!("{} {}", name(*t), b.retried(&name(*t)))).collect();
    let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));

    // One key's limits across both gateway replicas: requests alternate
    // between them (straight to each, not through the balancer).
    let gateways: Vec<SocketAddr> = replicas[0].iter().map(|r| r.as_ref().expect("running").addr).collect();
    // A check during which a replica's Redis call outlasted its 100 ms (the
    // machine busy) was decided locally by design, which the replicas'
    // fallback counter shows: then it runs again with a new key.
    let (mut rate_admitted, mut rate_allowed, mut rate_runs) = (0, 0, 0);
    for run in 0..3 {
        let fallbacks_before = redis_fallbacks(&client, &gateways).await;
        let (_, trickle_key, _) = cli(
            &config,
            &["keys", "create", "--partner", &format!("trickle-{run}"), "--scopes", "orders:read", "--plan", "trickle"],
        );
        let rate_started = Instant::now();
        rate_admitted = 0;
        for i in 0..3 * BURST {
            let request = http::Request::get(format!("http://{}/partner/v1/usage", gateways[i % REPLICAS]))
                .header("x-api-key", &trickle_key)
                .body(Full::default())
                .expect("request");
            let status = client.request(request).await.expect("answer").status().as_u16();
            assert!(status == 200 || status == 429, "{status}");
            rate_admitted += usize::from(status == 200);
        }
        // GCRA: the burst, plus one request per second that passed.
        rate_allowed = BURST + usize::try_from(rate_started.elapsed().as_secs()).expect("small") + 1;
        rate_runs += 1;
        if redis_fallbacks(&client, &gateways).await == fallbacks_before {
            break;
        }
    }
    let (_, quota_key, _) = cli(
        &config,
        &["keys", "create", "--partner", "quota", "--scopes", "orders:read,orders:write", "--plan", "quota"],
    );
    let (mut quota, mut quota_ids) = (HashMap::<u16, usize>::new(), HashSet::new());
    for i in 0..2 * ORDERS_PER_DAY {
        let body = json!({"external_ref": format!("Q-{i}"), "lines": [{"sku": "NUT-M8", "quantity": 1}], "payment": {"method": "on_account"}});
        let request = http::Request::post(format!("http://{}/partner/v1/orders", gateways[i % REPLICAS]))
            .header("x-api-key", &quota_key)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("quota-{i}"))
            .body(Full::from(body.to_string()))
            .expect("request");
        let response = client.request(request).await.expect("answer");
        *quota.entry(response.status().as_u16()).or_default() += 1;
        let body = response.into_body().collect().await.expect("body").to_bytes();
        if let Some(id) =
            serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|o| o["id"].as_str().map(str::to_owned))
        {
            quota_ids.insert(id);
        }
    }

    // Every accepted order ends terminal, driven on as the other systems
    // would (cash for invoices on account, shipments done).
    let mut orders = o2c::order_to_cash_service_client::OrderToCashServiceClient::new(with_token(
        tonic::transport::Channel::from_shared(format!("http://{lb_process}")).expect("uri").connect_lazy(),
        &token,
    ));
    let finished = harness::settle_orders(&mut orders, &ids, Duration::from_secs(180)).await;
    // The quota check's orders too, so that no saga writes events while
    // the stream is compared with the outbox.
    harness::settle_orders(&mut orders, &quota_ids, Duration::from_secs(60)).await;
    let by_status = finished.values().fold(HashMap::<&str, usize>::new(), |mut m, o| {
        *m.entry(o.status().as_str_name()).or_default() += 1;
        m
    });

    // No side effect twice: one live payment per card order capturing its
    // total, one ERP sales order per order.
    let ledger = payments_ledger(&payments_db.url()).await;
    harness::assert_charged_once(&ledger, &finished);
    let sales: HashMap<String, i64> = {
        let pool = sqlx::PgPool::connect(&erp_db.url()).await.expect("erp database");
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT reference, COUNT(*) FROM sales_orders GROUP BY reference")
                .fetch_all(&pool)
                .await
                .expect("sales orders");
        pool.close().await;
        rows.into_iter().collect()
    };
    let twice: Vec<_> = sales.iter().filter(|(_, n)| **n > 1).collect();
    let without_sale: Vec<_> =
        finished.values().filter(|o| o.status() == OrderStatus::Completed && sales.get(&o.id) != Some(&1)).collect();

    // The outbox drains, each event onto the stream once.
    let outbox = sqlx::PgPool::connect(&process_db.url()).await.expect("process database");
    harness::until(Duration::from_secs(60), "the outbox drains", || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&outbox)
            .await
            .expect("count")
            == 0
    })
    .await;
    let committed: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM outbox").fetch_all(&outbox).await.expect("outbox ids").into_iter().collect();
    outbox.close().await;
    let on_stream = harness::stream_message_ids("nats://127.0.0.1:4222", &stream).await;
    let duplicates = on_stream.len() - on_stream.iter().collect::<HashSet<_>>().len();
    let missing = committed.iter().filter(|id| !on_stream.contains(id)).count();
    let foreign = on_stream.iter().filter(|id| !committed.contains(*id)).count();

    // reconcile, as an operator would run it.
    let (reconciled, _, reconcile_log) = cli(&config, &["reconcile", "--system-url", &format!("http://{lb_system}")]);

    let error_rate = 100.0 * seen.failed as f64 / seen.attempts.max(1) as f64;
    let mut statuses: Vec<_> = seen.by_status.iter().collect();
    statuses.sort();
    let report = format!(
        "multi-replica proof: 2 replicas each of gateway, experience, process and system (on PostgreSQL), one HAProxy per tier\n\
         kills (SIGKILL, then a new process): {}\n\
         load: {CLIENTS} partner clients, {} orders accepted in {:.1} s; {} requests, {} failed ({error_rate:.2} %); answers: {statuses:?}; the failed ones said {:?}\n\
         sent again to the other replica by the balancers: {}\n\
         terminal: {}/{} orders {by_status:?}\n\
         side effects: {} payments for {} card orders, each at most one live and capturing its order's total; \
         ERP sales orders: {} for {} orders (the load's and the quota check's), {} with more than one\n\
         rate limit across the gateway replicas: {rate_admitted} of {} requests admitted (burst {BURST}, 1/s; at most {rate_allowed}; checks run: {rate_runs}); \
         daily quota {ORDERS_PER_DAY}: answers {quota:?}\n\
         outbox: {} events committed, {} on the stream, {duplicates} duplicates, {missing} missing\n\
         reconcile: {}\n",
        kills.join(", "),
        ids.len(),
        load_for.as_secs_f64(),
        seen.attempts,
        seen.failed,
        seen.failures,
        retried.join(", "),
        finished.len(),
        ids.len(),
        ledger.values().map(Vec::len).sum::<usize>(),
        finished.values().filter(|o| o.payment_method() == PaymentMethod::Card).count(),
        sales.values().sum::<i64>(),
        sales.len(),
        twice.len(),
        3 * BURST,
        committed.len(),
        on_stream.len(),
        if reconciled { "exit 0, all invariants hold" } else { "FAILED" },
    );
    println!("{report}");
    if let Ok(path) = std::env::var("ERP_CONNECT_SCALE_OUT_REPORT") {
        std::fs::write(path, &report).expect("report written");
    }

    assert!(ids.len() < MAX_ORDERS, "the load ran out of orders before the kills were over");
    assert!(finished.values().all(|o| o.status() == OrderStatus::Completed), "{by_status:?}");
    assert!(twice.is_empty() && without_sale.is_empty(), "sales orders: twice {twice:?}, missing for {without_sale:?}");
    assert!(rate_admitted >= BURST && rate_admitted <= rate_allowed, "{report}");
    assert_eq!(quota.get(&201), Some(&ORDERS_PER_DAY), "{report}");
    assert_eq!(quota.get(&429), Some(&ORDERS_PER_DAY), "{report}");
    assert!(duplicates == 0 && missing == 0 && foreign == 0, "{report}");
    assert!(reconciled, "reconcile: {reconcile_log}");
    assert!(error_rate < 1.0, "{report}");

    let nats = async_nats::connect("nats://127.0.0.1:4222").await.expect("nats");
    let _ = async_nats::jetstream::new(nats).delete_stream(stream.as_str()).await;
    drop(balancers);
    drop(replicas);
}

/// `erp_connect_rate_limit_redis_fallbacks_total` summed over `gateways`.
async fn redis_fallbacks(client: &HttpClient, gateways: &[SocketAddr]) -> u64 {
    let mut total = 0;
    for gateway in gateways {
        let request = http::Request::get(format!("http://{gateway}/metrics")).body(Full::default()).expect("request");
        let body =
            client.request(request).await.expect("metrics").into_body().collect().await.expect("body").to_bytes();
        total += String::from_utf8_lossy(&body)
            .lines()
            .filter_map(|line| line.strip_prefix("erp_connect_rate_limit_redis_fallbacks_total "))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
            .sum::<u64>();
    }
    total
}

fn name(target: Target) -> String {
    format!("{target:?}").to_lowercase()
}

/// The payments ledger on PostgreSQL, by order: each payment's status and
/// captured amount (every authorization and capture, not only the one an
/// order points at).
async fn payments_ledger(url: &str) -> HashMap<String, Vec<(String, String)>> {
    let pool = sqlx::PgPool::connect(url).await.expect("payments database");
    let rows: Vec<(String, String, String)> = sqlx::query_as("SELECT reference, status, captured_amount FROM payments")
        .fetch_all(&pool)
        .await
        .expect("payments");
    pool.close().await;
    let mut by_order: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (reference, status, captured) in rows {
        by_order.entry(reference).or_default().push((status, captured));
    }
    by_order
}
