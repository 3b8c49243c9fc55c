//! Tryton servers for tests, each set up once per test process by the
//! project's `deploy/tryton/setup.sh`: a database of the process's own,
//! restored from a shared golden snapshot (`erp_contract` with the demo
//! modules, `erp_sale_only` with only `sale`, `erp_latest` on the latest
//! series, `erp_no_sale` without `sale`; built on first use), on a
//! free loopback port; setup.sh's watcher stops the server and
//! drops the database when the process ends, so parallel runs never stop
//! each other's server. A developer's own Tryton is used instead when
//! `TRYTON_URL`, `TRYTON_DB`, `TRYTON_USER` and `TRYTON_PASSWORD_FILE` are
//! set. Feature `test-support` only.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::Config;

/// What setup.sh printed for each test server of this process, by snapshot.
type Servers = HashMap<&'static str, Arc<HashMap<String, String>>>;

static SERVERS: Mutex<Option<Servers>> = Mutex::new(None);

/// The process id of the test server `config` points at, as setup.sh
/// started it; None for a developer's own Tryton (`TRYTON_URL`), which
/// tests must not stop.
pub fn pid(config: &Config) -> Option<i32> {
    let servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let env = servers.as_ref()?.values().find(|env| env.get("TRYTON_URL") == Some(&config.url))?.clone();
    env.get("TRYTON_PID")?.parse().ok()
}

/// A JSON-RPC client logged in to the Tryton of `config`, for tests that
/// look at Tryton's own records (how many parties, sales, ...).
pub fn rpc_client(config: &Config) -> super::rpc::Client {
    let password = std::fs::read_to_string(&config.password_file).expect("the Tryton password file");
    super::rpc::Client::new(super::rpc::Settings {
        url: config.url.clone(),
        database: config.database.clone(),
        username: config.username.clone(),
        password: password.trim().to_owned(),
        timeout: Duration::from_secs(30),
    })
    .expect("a Tryton JSON-RPC client")
}

/// Ends every session of the test server `config` points at, as Tryton
/// does when they expire: the next call of each client is refused and it
/// logs in again. setup.sh keeps SQLite databases in `<work>/db/`, beside
/// the password file's folder.
pub fn end_sessions(config: &Config) {
    let work = config.password_file.parent().expect("setup.sh's work folder");
    let database = work.join("db").join(format!("{}.sqlite", config.database));
    let python = work.join("venv/bin/python");
    let ended = std::process::Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('DELETE FROM ir_session'); db.commit()",
        ])
        .arg(&database)
        .status()
        .expect("run the venv's python");
    assert!(ended.success(), "could not end the sessions in {}", database.display());
}

/// The connector config of this process's test server; `db_prefix` names
/// its database (`<prefix>_<pid>`). Blocks while setup.sh runs.
pub fn config(db_prefix: &str) -> Config {
    server(db_prefix, "erp_contract", None, LTS)
}

/// The test servers' admin password: distinctive, so that the secrets scan
/// of the test suites (`tests/harness/leaks.rs`) can look for it in every
/// log line and answer.
pub const PASSWORD: &str = "erp-connect-test-Pa55w0rd";

/// The Tryton series the project is built against first: 8.0, the LTS.
pub const LTS: &str = "8.0";

/// The latest Tryton 8.x series on PyPI.
pub const LATEST: &str = "8.2";

/// Like [`config`], on the latest Tryton series ([`LATEST`]) with the demo
/// modules: a virtualenv and a server of its own.
pub fn latest_config(db_prefix: &str) -> Config {
    server(db_prefix, "erp_latest", None, LATEST)
}

/// Like [`config`], for a Tryton with only the `sale` module (and its
/// dependencies): no credit limits, as many installations run it. A
/// server of its own (snapshot `erp_sale_only`), beside [`config`]'s.
pub fn sale_only_config(db_prefix: &str) -> Config {
    server(db_prefix, "erp_sale_only", Some("sale"), LTS)
}

/// A Tryton erp-connect cannot sell through: only `party`, no `sale`, no
/// company, no data (snapshot `erp_no_sale`), for the start-up refusal.
pub fn without_sale_config(db_prefix: &str) -> Config {
    server(db_prefix, "erp_no_sale", Some("party"), LTS)
}

fn server(db_prefix: &str, snapshot: &'static str, modules: Option<&str>, series: &str) -> Config {
    // One setup at a time: setup.sh serializes runs anyway, and a snapshot
    // asked for twice is set up once.
    let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let env = servers
        .get_or_insert_with(HashMap::new)
        .entry(snapshot)
        .or_insert_with(|| Arc::new(set_up(db_prefix, snapshot, modules, series)))
        .clone();
    Config {
        url: env["TRYTON_URL"].clone(),
        database: env["TRYTON_DB"].clone(),
        username: env["TRYTON_USER"].clone(),
        password_file: PathBuf::from(&env["TRYTON_PASSWORD_FILE"]),
        timeout: Duration::from_secs(30),
    }
}

fn set_up(db_prefix: &str, snapshot: &str, modules: Option<&str>, series: &str) -> HashMap<String, String> {
    let keys = ["TRYTON_URL", "TRYTON_DB", "TRYTON_USER", "TRYTON_PASSWORD_FILE"];
    // A developer's own Tryton stands in for the LTS demo database only.
    if modules.is_none()
        && series == LTS
        && let Ok(own) = keys.iter().map(|k| std::env::var(k).map(|v| ((*k).to_owned(), v))).collect()
    {
        return own;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tryton/setup.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        // Any free port, bound by trytond itself and printed back by setup.sh.
        .env("PORT", "0")
        .env("DB", format!("{db_prefix}_{}", std::process::id()))
        .env("SNAPSHOT", snapshot)
        .env("MODULES", modules.unwrap_or_default())
        .env("SERIES", series)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("OWNER_PID", std::process::id().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run deploy/tryton/setup.sh");
    assert!(out.status.success(), "deploy/tryton/setup.sh failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
