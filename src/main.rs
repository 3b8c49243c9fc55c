//! The `erp-connect` command line; see the crate docs of `erp_connect`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use erp_connect::{
    StartError,
    config::Config,
    serve::{self, Target},
    up,
};
use tokio::net::TcpListener;

/// EX_USAGE: a bad command line or configuration.
const EXIT_USAGE: u8 = 64;

/// API-led connectivity for ERP systems.
#[derive(Parser)]
#[command(name = "erp-connect", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every tier in one process with the embedded defaults.
    Up {
        /// HTTP listen address (the gateway). Default 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// gRPC listen address of the process APIs. Default 127.0.0.1:8081.
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Where embedded state lives. Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run one tier; the next tier's address comes from the configuration.
    Serve {
        /// Which tier.
        #[arg(long, value_enum)]
        target: Target,
        /// Listen address, overriding the tier's `listen` setting.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where embedded state lives. Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create or migrate every store the configuration names (API keys,
    /// sagas and outbox, the embedded ERP, the payments ledger), then exit:
    /// run once before an upgrade's tiers start (a Kubernetes Job).
    Migrate {
        /// Where embedded state lives. Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check the order-to-cash invariants; exit 0 when all hold, 1 otherwise.
    Reconcile {
        /// Where embedded state lives. Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
        /// A running system tier to check against (serve mode), e.g.
        /// http://127.0.0.1:8082. Default: open the configured backends here.
        #[arg(long)]
        system_url: Option<String>,
    },
    /// Partner API keys: create (the key alone on stdout), list, revoke, rotate.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// The data directory whose key store to use. Default ./data.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML); `gateway.database_url` names the store.
        #[arg(long, global = true, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The audit trails of state-changing actions.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        /// The data directory whose stores to use. Default ./data.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML); `gateway.database_url` and
        /// `process.database_url` name the stores.
        #[arg(long, global = true, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Customer master data across the CRM and the ERP.
    MasterData {
        #[command(subcommand)]
        action: MasterDataAction,
        /// The data directory (dev mode mints the service token with its identity provider).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, global = true, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Import files through a running process tier.
    Import {
        #[command(subcommand)]
        what: ImportWhat,
        /// The data directory (dev mode mints the service token with its identity provider).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, global = true, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Invoices or orders as CSV or JSON lines, from the saga store's
    /// events, as the scheduled exports to `files.outbox_dir` write them.
    Export {
        /// `invoices` (issued, credited, paid) or `orders` (every status change).
        what: ExportWhat,
        /// From this date (2026-12-01, midnight UTC) or time (RFC 3339).
        #[arg(long)]
        since: String,
        /// Up to this date or time. Default: now.
        #[arg(long)]
        until: Option<String>,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: ExportFormat,
        /// Write this file (complete or absent) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The data directory (its SQLite saga store). Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML); `process.database_url` names the store.
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Partner mappings: `test` shows what one makes of a sample file.
    Mapping {
        #[command(subcommand)]
        action: MappingAction,
        /// Configuration file (TOML) with the `[partners.<tenant>]` sections.
        #[arg(long, global = true, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a dev JWT, and nothing else, on stdout (dev mode only).
    Token {
        /// Subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes, e.g. "catalog:read orders:write".
        #[arg(long, default_value = "")]
        scope: String,
        /// Audience; `process-apis` for internal callers of the process tier.
        #[arg(long, default_value = gateway::dev_idp::DEFAULT_AUDIENCE)]
        aud: String,
        /// Tenant claim.
        #[arg(long)]
        tenant: Option<String>,
        /// E-mail claim.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime, e.g. 15m, 1h, 7days.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The data directory whose dev identity provider signs. Default ./data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file (TOML).
        #[arg(long, env = "ERP_CONNECT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportWhat {
    Invoices,
    Orders,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Subcommand)]
enum ImportWhat {
    /// An order file (CSV, or JSON lines when named `.jsonl`/`.ndjson`), as
    /// `POST /partner/v1/order-batches` imports it: one JSON line per row
    /// on stdout, progress on stderr; exit 1 when a row is not accepted.
    Orders {
        /// The file.
        file: PathBuf,
        /// The partner tenant whose orders they are.
        #[arg(long)]
        partner: String,
        /// Map and check only; create nothing.
        #[arg(long)]
        dry_run: bool,
        /// The process tier's gRPC address. Default `experience.process_url`.
        #[arg(long)]
        process_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum MappingAction {
    /// Map a sample CSV or JSON-lines file record by record; one JSON line
    /// per record on stdout; exit 1 when a record is rejected.
    Test {
        /// The partner tenant whose mapping and rules apply.
        #[arg(long)]
        partner: String,
        /// The sample: CSV, or JSON lines when named `.jsonl` or `.ndjson`.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check every trail's hash chain: exit 0 when all hold, 1 with the
    /// first broken row otherwise.
    Verify,
}

#[derive(Subcommand)]
enum MasterDataAction {
    /// Rebuild the cross-reference of customer ids from both systems
    /// through a running process tier: every customer read again from the
    /// CRM's and the ERP's change feeds and matched, owned fields aligned
    /// and compared. Prints the golden records and links after it.
    Resync {
        /// The process tier. Default `experience.process_url`.
        #[arg(long)]
        process_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Issue a key; prints it once, alone on stdout (details on stderr).
    Create {
        /// The partner tenant the key acts for.
        #[arg(long)]
        partner: String,
        /// Comma-separated scopes, e.g. orders:read,orders:write.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// bronze, silver, gold or unmetered.
        #[arg(long, default_value = "bronze")]
        plan: String,
        /// Lifetime, e.g. 90days; default: no expiry.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List keys (never their text), one JSON object a line.
    List,
    /// Revoke a key by id; every replica refuses it within 5 s.
    Revoke {
        /// The key id (`key_...`).
        id: String,
    },
    /// Issue a replacement key (printed alone on stdout); the old one works
    /// until the grace period ends.
    Rotate {
        /// The key id (`key_...`).
        id: String,
        /// How long the old key keeps working, e.g. 1h. Default 0s.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => return fail(&StartError::Io(err)),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// One scheduler thread per usable core. On a single core (a pod limited
/// to one CPU, a process pinned with `taskset`) the single-threaded
/// scheduler: work stealing there has no one to steal from and only costs
/// (measured on the gateway's proxy hop: 33k against 40k req/s).
fn runtime() -> tokio::runtime::Builder {
    match std::thread::available_parallelism() {
        Ok(cores) if cores.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

fn fail(err: &StartError) -> ExitCode {
    eprintln!("erp-connect: {err}");
    match err {
        StartError::Config(_)
        | StartError::Tls(_)
        | StartError::Keys(gateway::key_store::Error::Invalid(_))
        | StartError::System(system_apis::StartError::Erp(system_apis::erp::Error::Misconfigured(_))) => {
            ExitCode::from(EXIT_USAGE)
        }
        _ => ExitCode::FAILURE,
    }
}

fn load(file: Option<&PathBuf>, data_dir: Option<PathBuf>) -> Result<Config, StartError> {
    let mut config = Config::load(file.map(PathBuf::as_path))?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Io(std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))))
}

async fn run(command: Command) -> Result<(), StartError> {
    match command {
        Command::Up { listen, grpc_listen, data_dir, config } => {
            let mut config = load(config.as_ref(), data_dir)?;
            let telemetry = telemetry(&config, platform::telemetry::DEFAULT_SERVICE_NAME)?;
            if let Some(addr) = listen {
                config.gateway.listen = addr;
            }
            if let Some(addr) = grpc_listen {
                config.process.listen = addr;
            }
            let app = up::App::build(config.clone()).await?;
            let http = bind(config.gateway.listen).await?;
            let grpc = bind(config.process.listen).await?;
            print!("{}", up::banner(&config, http.local_addr()?, grpc.local_addr()?));
            let served = app.serve(http, grpc, platform::shutdown::on_signals()).await;
            telemetry.shutdown().await;
            served
        }
        Command::Serve { target, listen, data_dir, config } => {
            let config = load(config.as_ref(), data_dir)?;
            let tier_name = match target {
                Target::Gateway => "gateway",
                Target::Experience => "experience",
                Target::Process => "process",
                Target::System => "system",
            };
            let telemetry = telemetry(&config, &format!("erp-connect-{tier_name}"))?;
            let tier = serve::Tier::build(target, &config).await?;
            let listener = bind(listen.unwrap_or_else(|| serve::listen_addr(target, &config))).await?;
            tracing::info!(tier = ?target, addr = %listener.local_addr()?, "serving");
            let served = tier.serve(listener, platform::shutdown::on_signals()).await;
            telemetry.shutdown().await;
            served
        }
        Command::Migrate { data_dir, config } => {
            platform::telemetry::init_logs();
            migrate(&load(config.as_ref(), data_dir)?).await
        }
        Command::Reconcile { data_dir, config, system_url } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            if erp_connect::reconcile::run(&config, system_url.as_deref()).await? {
                Ok(())
            } else {
                Err(StartError::InvariantsBroken)
            }
        }
        Command::Keys { action, data_dir, config } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            keys(action, &config).await
        }
        Command::Audit { action: AuditAction::Verify, data_dir, config } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            if erp_connect::audit::verify(&config).await? { Ok(()) } else { Err(StartError::AuditBroken) }
        }
        Command::MasterData { action: MasterDataAction::Resync { process_url }, data_dir, config } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            erp_connect::master_data::resync(&config, process_url.as_deref()).await
        }
        Command::Import { what: ImportWhat::Orders { file, partner, dry_run, process_url }, data_dir, config } => {
            let config = load(config.as_ref(), data_dir)?;
            match erp_connect::import::orders(&config, &partner, &file, dry_run, process_url.as_deref()).await? {
                0 => Ok(()),
                _ => Err(StartError::RecordsRejected),
            }
        }
        Command::Export { what, since, until, format, output, data_dir, config } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            let time = |text: &str, key: &'static str| {
                erp_connect::export::parse_time(text)
                    .map_err(|reason| StartError::Config(erp_connect::config::Error::Invalid { key, reason }))
            };
            let from = time(&since, "--since")?;
            let to = match until {
                Some(until) => time(&until, "--until")?,
                None => i64::MAX,
            };
            let kind = match what {
                ExportWhat::Invoices => process_apis::exports::Kind::Invoices,
                ExportWhat::Orders => process_apis::exports::Kind::Orders,
            };
            let format = match format {
                ExportFormat::Csv => process_apis::exports::Format::Csv,
                ExportFormat::Jsonl => process_apis::exports::Format::JsonLines,
            };
            let span = process_apis::exports::Span { after: 0, from, to };
            let rows = erp_connect::export::run(&config, kind, format, span, output.as_deref()).await?;
            eprintln!("{rows} rows");
            Ok(())
        }
        Command::Mapping { action: MappingAction::Test { partner, file }, config } => {
            let config = load(config.as_ref(), None)?;
            match erp_connect::mapping::test(&config, &partner, &file)? {
                0 => Ok(()),
                _ => Err(StartError::RecordsRejected),
            }
        }
        Command::Token { sub, scope, aud, tenant, email, ttl, data_dir, config } => {
            platform::telemetry::init_logs();
            let config = load(config.as_ref(), data_dir)?;
            let request = gateway::dev_idp::TokenRequest { subject: sub, scope, audience: aud, tenant, email, ttl };
            println!("{}", erp_connect::token::mint(&config, &request)?);
            Ok(())
        }
    }
}

/// Opens each store once, which migrates it; on PostgreSQL the migrations
/// hold an advisory lock, so a Job racing a starting replica is safe too.
async fn migrate(config: &Config) -> Result<(), StartError> {
    gateway::key_store::KeyStore::open(config.gateway.database_url.as_deref(), &config.data_dir).await?;
    tracing::info!(store = "gateway", "migrated");
    process_apis::order_to_cash::store::Store::open(&config.process.database_url(&config.data_dir))
        .await
        .map_err(|e| StartError::Process(process_apis::order_to_cash::StartError::Store(e).into()))?;
    tracing::info!(store = "process", "migrated");
    // The system tier's stores (the embedded ERP's, the payments ledger,
    // the embedded CRM's); a Tryton backend keeps its own and is not called
    // here.
    system_apis::SystemTier::start(&config.erp, &config.payments, &config.crm, &config.data_dir).await?;
    tracing::info!(store = "system", "migrated");
    Ok(())
}

async fn keys(action: KeysAction, config: &Config) -> Result<(), StartError> {
    use gateway::key_store::{self, KeyStore, NewKey, audit};
    let store = KeyStore::open(config.gateway.database_url.as_deref(), &config.data_dir)
        .await?
        .with_plans(config.gateway.plans().into_keys());
    let now_ms = key_store::now_ms();
    let now = now_ms.div_euclid(1000);
    fn outcome<T>(result: &Result<T, key_store::Error>) -> &'static str {
        if result.is_ok() { "ok" } else { "refused" }
    }
    match action {
        KeysAction::Create { partner, scopes, plan, expires } => {
            let expires_at = expires.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
            let result = store.create(NewKey { partner, scopes, plan, expires_at }, now, "cli").await;
            let id = result.as_ref().map(|(r, _)| r.id.as_str()).unwrap_or("");
            audit("cli", "keys.create", id, outcome(&result));
            let (record, key) = result?;
            eprintln!("{}", serde_json::to_string(&record).unwrap_or_default());
            println!("{}", key.expose());
        }
        KeysAction::List => {
            for record in store.list().await? {
                println!("{}", serde_json::to_string(&record).unwrap_or_default());
            }
        }
        KeysAction::Revoke { id } => {
            let result = store.revoke(&id, now, "cli").await;
            audit("cli", "keys.revoke", &id, outcome(&result));
            eprintln!("{}", serde_json::to_string(&result?).unwrap_or_default());
        }
        KeysAction::Rotate { id, grace } => {
            let result = store.rotate(&id, grace, now, "cli").await;
            audit("cli", "keys.rotate", &id, outcome(&result));
            let (record, key) = result?;
            eprintln!("{}", serde_json::to_string(&record).unwrap_or_default());
            println!("{}", key.expose());
        }
    }
    Ok(())
}

/// Logs (JSON lines by default; human-readable when stderr is a terminal;
/// levels from `RUST_LOG`, default `info`; on stderr, so that stdout
/// carries only what a command prints), and trace export when configured.
/// Set up once the configuration is loaded, since `[telemetry]` is in it; a
/// configuration error is printed by `main` without a logger.
fn telemetry(config: &Config, service_name: &str) -> Result<platform::telemetry::Telemetry, StartError> {
    platform::telemetry::init(&config.telemetry, service_name).map_err(|e| {
        StartError::Config(erp_connect::config::Error::Invalid { key: "telemetry", reason: e.to_string() })
    })
}
