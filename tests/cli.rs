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
