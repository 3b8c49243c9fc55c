//! The `erp-connect` binary as a user runs it: configuration errors exit
//! with status 64 and one line of reason; `token` prints a JWT and nothing
//! else, and refuses production configurations.

mod harness;

use std::process::{Command, Output};

use harness::BIN;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("ERP_CONNECT_CONFIG").env("RUST_LOG", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run erp-connect")
}

fn assert_usage_error(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line of reason, got: {stderr}");
    assert!(stderr.to_lowercase().contains(&mentions.to_lowercase()), "{mentions:?} not in {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("erp-connect.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn an_unknown_key_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, "[gateway]\nlisten = \"127.0.0.1:0\"\nlisten_port = 8080\n");
    assert_usage_error(&run(&["up", "--config", &file], &[]), "listen_port");
    let file = config_file(&dir, "[gatewy]\n");
    assert_usage_error(&run(&["serve", "--target", "system", "--config", &file], &[]), "gatewy");
}

#[test]
fn a_bad_address_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, "[gateway]\nlisten = \"localhost:eighty\"\n");
    assert_usage_error(&run(&["up", "--config", &file], &[]), "listen");
    let file = config_file(&dir, "[process]\nsystem_url = \"ftp://10.0.0.1:21\"\n");
    assert_usage_error(&run(&["serve", "--target", "process", "--config", &file], &[]), "process.system_url");
}

#[test]
fn a_bad_plan_or_redis_url_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config_file(&dir, "[gateway.plans.burst_only]\nburst = 5\n");
    assert_usage_error(&run(&["up", "--config", &file], &[]), "gateway.plans");
    let file = config_file(&dir, "[gateway.plans.typo]\nrequests_per_secnd = 5\n");
    assert_usage_error(&run(&["up", "--config", &file], &[]), "requests_per_secnd");
    let file = config_file(&dir, "[gateway]\nredis_url = \"http://127.0.0.1:6379\"\n");
    assert_usage_error(&run(&["serve", "--target", "gateway", "--config", &file], &[]), "gateway.redis_url");
}

#[test]
fn environment_overrides_are_validated_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let out = run(&["up", "--data-dir", &data], &[("ERP_CONNECT__GATEWAY__LISTEN", "nonsense")]);
    assert_usage_error(&out, "listen");
    let out = run(&["up", "--data-dir", &data], &[("ERP_CONNECT__GATEWAY__NO_SUCH_KEY", "1")]);
    assert_usage_error(&out, "no_such_key");
    assert!(!dir.path().join("erp.db").exists(), "nothing was started before the config was validated");
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    assert_usage_error(&run(&["up", "--config", "/nonexistent/erp-connect.toml"], &[]), "does not exist");
}

#[test]
fn token_prints_a_jwt_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let out = run(
        &["token", "--sub", "alice", "--scope", "catalog:read orders:read", "--tenant", "acme", "--data-dir", &data],
        &[("RUST_LOG", "debug")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(!token.contains('\n'));
    assert_eq!(token.split('.').count(), 3, "{token}");
    // The token is trusted by the gateway of the same data directory.
    let jwks = gateway::dev_idp::DevIdp::load_or_create(dir.path()).expect("idp").jwks();
    let auth = gateway::auth::Authenticator::new(
        &[(gateway::dev_idp::ISSUER.into(), vec!["erp-connect".into()], serde_json::from_value(jwks).expect("jwks"))],
        0,
    )
    .expect("auth");
    let principal = auth.verify(token).expect("verifies");
    assert_eq!(principal.subject, "alice");
    assert_eq!(principal.tenant.as_deref(), Some("acme"));
    assert!(principal.has_scope("orders:read"));
}

#[test]
fn token_refuses_a_production_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks_path = dir.path().join("jwks.json");
    let idp = gateway::dev_idp::DevIdp::load_or_create(&dir.path().join("idp")).expect("idp");
    std::fs::write(&jwks_path, idp.jwks().to_string()).expect("write jwks");
    let file = config_file(
        &dir,
        &format!(
            "mode = \"production\"\n[[gateway.issuers]]\nissuer = \"https://idp.example\"\njwks_file = \"{}\"\n",
            jwks_path.display()
        ),
    );
    let out = run(&["token", "--sub", "alice", "--scope", "ops", "--config", &file], &[]);
    assert_usage_error(&out, "production");
}

#[test]
fn help_names_every_command() {
    let out = run(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["up", "serve", "token"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn mapping_test_shows_what_a_partners_mapping_makes_of_each_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("acme-skus.csv"), "partner_sku,sku\nACME-0042,WIDGET-1\n").expect("xref");
    let config = config_file(
        &dir,
        "[partners.acme]\nsku_xref_file = \"acme-skus.csv\"\nunits = { BOX10 = 10 }\ndecimal_separator = \",\"\n\
         [partners.acme.rules]\nmax_quantity_per_line = 500\nallowed_countries = [\"DE\", \"FR\", \"AT\"]\n",
    );
    let sample = dir.path().join("sample.csv");
    std::fs::write(
        &sample,
        "external_ref;sku;quantity;unit;ship_to_country\nPO-1;ACME-0042;2,0;BOX10;DE\nPO-2;GADGET-2;zwei;;DE\n\
         PO-3;GADGET-2;600;;CH\n",
    )
    .expect("sample");
    let sample = sample.display().to_string();
    let out = run(&["mapping", "test", "--partner", "acme", "--config", &config, &sample], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["status"], "mapped");
    assert_eq!((&rows[0]["record"]["sku"], &rows[0]["record"]["quantity"]), (&"WIDGET-1".into(), &20.into()));
    assert_eq!(rows[1]["errors"][0]["field"], "quantity");
    let broken: Vec<(&str, &str)> = rows[2]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["field"].as_str().unwrap_or(""), e["rule"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(broken, [("quantity", "max_quantity_per_line"), ("ship_to_country", "allowed_countries")]);
    // A transform reshapes a partner's own record first: German names, a
    // date it does not need, a country written out.
    let config = config_file(
        &dir,
        "[partners.globex]\nsku_xref = { \"G-1\" = \"WIDGET-1\" }\n\
         transform = '{external_ref: .Bestellung, sku: .Artikel, quantity: .Menge, \
         ship_to_country: ({Deutschland: \"DE\"}[.Land] // error(\"no country \" + .Land))}'\n",
    );
    let sample = dir.path().join("globex.jsonl");
    std::fs::write(
        &sample,
        "{\"Bestellung\": \"B-1\", \"Artikel\": \"G-1\", \"Menge\": \"3\", \"Land\": \"Deutschland\", \"Datum\": \"06.12.2026\"}\n\
         {\"Bestellung\": \"B-2\", \"Artikel\": \"G-1\", \"Menge\": \"1\", \"Land\": \"Narnia\"}\n",
    )
    .expect("sample");
    let globex = sample.display().to_string();
    let out = run(&["mapping", "test", "--partner", "globex", "--config", &config, &globex], &[]);
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(rows[0]["status"], "mapped", "{rows:?}");
    assert_eq!(
        (&rows[0]["record"]["external_ref"], &rows[0]["record"]["sku"], &rows[0]["record"]["ship_to_country"]),
        (&"B-1".into(), &"WIDGET-1".into(), &"DE".into())
    );
    assert_eq!(
        (&rows[1]["errors"][0]["field"], &rows[1]["errors"][0]["rule"], &rows[1]["errors"][0]["message"]),
        (&"record".into(), &"transform".into(), &"failed: no country Narnia".into())
    );
    assert_usage_error(
        &run(&["mapping", "test", "--partner", "nope", "--config", &config, &globex], &[]),
        "partners.nope",
    );
}

/// `up` started with `config`, its whole output (stdout and stderr) kept,
/// and the gateway's address once its banner names it.
struct Up {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    drains: [std::thread::JoinHandle<()>; 2],
}

impl Up {
    fn start(config: &str, data_dir: &std::path::Path) -> (Self, Option<std::net::SocketAddr>) {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(["up", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--config", config, "--data-dir"])
            .arg(data_dir)
            .env_remove("ERP_CONNECT_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("erp-connect starts");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let drain = |pipe: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<Option<std::net::SocketAddr>>| {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("HTTP API")
                        && let Some(addr) =
                            line.split_whitespace().find_map(|w| w.strip_prefix("http://")?.parse().ok())
                    {
                        let _ = tx.send(Some(addr));
                    }
                    let mut all = output.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    all.push_str(&line);
                    all.push('\n');
                }
                // The pipe closed: the process ended.
                let _ = tx.send(None);
            })
        };
        let drains = [
            drain(Box::new(child.stdout.take().expect("stdout")), tx.clone()),
            drain(Box::new(child.stderr.take().expect("stderr")), tx),
        ];
        let addr = rx.recv_timeout(std::time::Duration::from_secs(60)).ok().flatten();
        (Self { child, output, drains }, addr)
    }

    /// Stops it and returns all it wrote.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipes close with the process: the drains then hold everything.
        for drain in self.drains {
            drain.join().expect("drain thread");
        }
        self.output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Passwords in the configuration never reach a log line, an error or an
/// answer: `up` runs with a marked password in the database URL (real
/// PostgreSQL; trust authentication ignores it), in the Redis URL (a
/// Redis that is down), in the Tryton password file (a Tryton that is
/// down) and as the internal principal secret, serves requests that use
/// each, and its whole output at `info` is searched for the marks. A
/// start that fails on such a URL is searched too.
#[tokio::test]
async fn configured_passwords_never_reach_a_log_line_an_error_or_an_answer() {
    let marks = ["pg-Pa55-7c1e", "redis-Pa55-41d2", "tryton-Pa55-0b7e", "principal-secret-9f3a-0123456789abcdef"];
    let [pg, redis, tryton, principal] = marks;
    let dir = tempfile::tempdir().expect("tempdir");
    // A database each: the gateway's and the process tier's migrations are kept apart.
    let databases = [
        platform::database::ScratchPostgres::create("secrets_gateway").await,
        platform::database::ScratchPostgres::create("secrets_process").await,
    ];
    let [gateway_url, process_url] =
        databases.each_ref().map(|db| db.url().replacen("postgres@", &format!("postgres:{pg}@"), 1));
    let password_file = dir.path().join("tryton.password");
    std::fs::write(&password_file, format!("{tryton}\n")).expect("password file");
    let config = config_file(
        &dir,
        &format!(
            "[internal]\nprincipal_secret = \"{principal}\"\n\
             [gateway]\ndatabase_url = \"{gateway_url}\"\nredis_url = \"redis://:{redis}@127.0.0.1:1\"\n\
             [process]\ndatabase_url = \"{process_url}\"\n\
             [erp]\nbackend = \"tryton\"\n\
             [erp.tryton]\nurl = \"http://127.0.0.1:1\"\ndatabase = \"erp\"\npassword_file = {password_file:?}\n"
        ),
    );
    let data_dir = dir.path().join("data");
    let (up, addr) = Up::start(&config, &data_dir);
    let Some(addr) = addr else { panic!("up did not start: {}", up.stop()) };
    let url = |path: &str| format!("http://{addr}{path}");
    let mut answers = String::new();
    let ops = harness::token(&data_dir, "ops");
    let web = harness::token(&data_dir, "catalog:read orders:read orders:write");
    for reply in [
        harness::get(&url("/readyz"), None).await,
        harness::get(&url("/web/v1/products"), Some(&web)).await,
        harness::post_json(
            &url("/web/v1/orders"),
            &web,
            &serde_json::json!({"lines": [{"sku": "GADGET-1", "quantity": 1}], "payment": {"method": "on_account"}}),
            Some("secrets-1"),
        )
        .await,
        harness::get(&url("/ops/v1/keys"), Some(&ops)).await,
    ] {
        answers.push_str(&reply.text);
    }
    // A key from the PostgreSQL key store, used where the limits need Redis.
    let created = harness::post_json(
        &url("/ops/v1/keys"),
        &ops,
        &serde_json::json!({"partner": "acme", "scopes": ["orders:read"], "plan": "bronze"}),
        None,
    )
    .await;
    assert_eq!(created.status, 201, "the key store on PostgreSQL works: {}", created.text);
    let key = created.body["key"].as_str().expect("key").to_owned();
    let mut usage = http::Request::get(url("/partner/v1/usage")).header("x-api-key", &key);
    usage = usage.header("accept", "application/json");
    answers.push_str(&harness::send(usage.body(Default::default()).expect("request")).await.text);
    let output = up.stop();
    assert!(output.contains("erp-connect is up") && output.contains("\"level\":\"WARN\""), "{output}");
    for mark in marks {
        assert!(!output.contains(mark), "{mark} in the output: {output}");
        assert!(!answers.contains(mark), "{mark} in an answer: {answers}");
    }
    assert_eq!(harness::leaks::secret_in(&output), None, "{output}");
    eprintln!(
        "{} output lines and {} answer bytes searched for {} passwords",
        output.lines().count(),
        answers.len(),
        marks.len()
    );

    // A start that fails on the database URL names it without its password.
    let config =
        config_file(&dir, &format!("[process]\ndatabase_url = \"postgres://postgres:{pg}@127.0.0.1:1/nowhere\"\n"));
    let (up, addr) = Up::start(&config, &dir.path().join("failed"));
    let output = up.stop();
    assert_eq!(addr, None, "no database, no start: {output}");
    assert!(!output.contains(pg), "{output}");
}
