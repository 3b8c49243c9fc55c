//! The ops console: operators list and search orders of every tenant over
//! `/ops/v1/orders`, and the page at `/ops`, driven in headless Chromium
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs),
//! signs in, draws its charts from real traffic and opens an order's
//! timeline. Screenshots land in the target directory for review.

mod harness;

use std::{
    io::{BufRead, Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use harness::{Running, assert_problem, get, post_json, quick_sagas, spawn_serve, spawn_up_with, wait_for_order};
use http_body_util::Full;
use serde_json::{Value, json};

/// Places a card order for the web shop's customer alice; returns its id.
async fn web_order(app: &Running, token: &str, external_ref: &str) -> String {
    let body = json!({"external_ref": external_ref, "lines": [{"sku": "WIDGET-1", "quantity": 1}],
                      "payment": {"method": "card", "token": "tok_visa"}});
    let reply = post_json(&app.url("/web/v1/orders"), token, &body, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["id"].as_str().expect("order id").to_owned()
}

/// A token of the partner tenant `acme`.
fn partner_token(app: &Running) -> String {
    gateway::dev_idp::DevIdp::load_or_create(app.data_dir.path())
        .expect("dev idp")
        .mint(&gateway::dev_idp::TokenRequest {
            subject: "acme-buyer".into(),
            scope: "orders:read orders:write".into(),
            audience: "erp-connect".into(),
            tenant: Some("acme".into()),
            email: None,
            ttl: Duration::from_secs(300),
        })
        .expect("mint")
}

fn ids(page: &Value) -> Vec<&str> {
    page["orders"].as_array().expect("orders").iter().map(|o| o["id"].as_str().expect("id")).collect()
}

#[tokio::test]
async fn operators_find_orders_of_every_tenant_by_id_reference_and_status() {
    let app = spawn_up_with(quick_sagas).await;
    let shopper = app.token("orders:read orders:write");
    let ops = app.token("ops");
    let web = web_order(&app, &shopper, "PO-OPS-1").await;
    let body = json!({"external_ref": "PO-OPS-2", "lines": [{"sku": "WIDGET-1", "quantity": 1}],
                      "payment": {"method": "on_account"}});
    let reply = post_json(&app.url("/partner/v1/orders"), &partner_token(&app), &body, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let partner = reply.body["id"].as_str().expect("id").to_owned();
    wait_for_order(&app, &shopper, &format!("/web/v1/orders/{web}"), "paid").await;

    let all = get(&app.url("/ops/v1/orders"), Some(&ops)).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(ids(&all.body), [partner.as_str(), web.as_str()], "every tenant's, newest first");
    let by_ref = get(&app.url("/ops/v1/orders?q=PO-OPS-"), Some(&ops)).await;
    assert_eq!(ids(&by_ref.body), [partner.as_str(), web.as_str()]);
    let by_id = get(&app.url(&format!("/ops/v1/orders?q={web}")), Some(&ops)).await;
    assert_eq!(ids(&by_id.body), [web.as_str()]);
    assert_eq!(by_id.body["orders"][0]["tenant"], "web");
    let paid = get(&app.url("/ops/v1/orders?status=paid&page_size=1"), Some(&ops)).await;
    assert_eq!(ids(&paid.body), [web.as_str()]);
    assert!(paid.body.get("next_page_token").is_none(), "{}", paid.text);
    let first = get(&app.url("/ops/v1/orders?page_size=1"), Some(&ops)).await;
    let token = first.body["next_page_token"].as_str().expect("a second page");
    let second = get(&app.url(&format!("/ops/v1/orders?page_size=1&page_token={token}")), Some(&ops)).await;
    assert_eq!(ids(&second.body), [web.as_str()]);

    let one = get(&app.url(&format!("/ops/v1/orders/{partner}")), Some(&ops)).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!((one.body["tenant"].as_str(), one.body["external_ref"].as_str()), (Some("acme"), Some("PO-OPS-2")));
    let saga: Vec<&str> =
        one.body["saga"].as_array().expect("saga").iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(saga.first(), Some(&"accepted"), "{}", one.text);
    assert!(one.body["timeline"].as_array().is_some_and(|t| !t.is_empty()));

    for (path, status) in [
        ("/ops/v1/orders?status=lost", 400),
        ("/ops/v1/orders?tenant=acme", 400),
        ("/ops/v1/orders?page_size=101", 400),
        ("/ops/v1/orders/ord_00000000000000000000000000", 404),
    ] {
        assert_problem(&get(&app.url(path), Some(&ops)).await, status);
    }
    // Only operators: a shopper's or a partner's token is not enough.
    assert_problem(&get(&app.url("/ops/v1/orders"), Some(&shopper)).await, 403);
    assert_problem(&get(&app.url(&format!("/ops/v1/orders/{web}")), Some(&partner_token(&app))).await, 403);
    assert_problem(&get(&app.url("/ops/v1/orders"), None).await, 401);
    app.stop_all().await;
}

#[tokio::test]
async fn the_console_page_is_public_and_runs_only_its_own_script() {
    for app in [spawn_up_with(|_| {}).await, spawn_serve().await] {
        console_page_is_public(app).await;
    }
}

async fn console_page_is_public(app: Running) {
    let first = get(&app.url("/ops"), None).await;
    assert_eq!(first.status, 200);
    assert!(first.headers["content-type"].to_str().is_ok_and(|t| t.starts_with("text/html")));
    let policy = first.headers["content-security-policy"].to_str().expect("a policy").to_owned();
    assert!(policy.starts_with("default-src 'none'; script-src 'nonce-") && !policy.contains("unsafe"), "{policy}");
    assert!(policy.contains("connect-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(first.headers["x-frame-options"], "DENY");
    assert_eq!(first.headers["cache-control"], "no-store");
    let nonce = policy.split("'nonce-").nth(1).and_then(|n| n.split('\'').next()).expect("nonce");
    assert!(first.text.contains(&format!("<script nonce=\"{nonce}\">")), "{}", first.text);
    let second = get(&app.url("/ops"), None).await;
    assert_ne!(
        second.headers["content-security-policy"], first.headers["content-security-policy"],
        "a nonce per answer"
    );
    app.stop_all().await;
}

#[tokio::test]
async fn an_operator_signs_in_sees_the_charts_and_opens_an_orders_timeline_in_chromium() {
    let app = spawn_up_with(|config| {
        quick_sagas(config);
        config.experience.trace_url_template = Some("https://tempo.example/trace/{trace_id}?from=ops&x=\"".into());
        // A failed webhook attempt is a dead letter at once.
        config.webhooks.retry_schedule = Vec::new();
        config.webhooks.poll_interval = Duration::from_millis(20);
    })
    .await;
    let shopper = app.token("orders:read orders:write");
    let ops = app.token("ops");
    let mut orders = Vec::new();
    for n in 1..=3 {
        orders.push(web_order(&app, &shopper, &format!("PO-CONSOLE-{n}")).await);
    }
    let order = orders[1].clone();
    wait_for_order(&app, &shopper, &format!("/web/v1/orders/{order}"), "paid").await;
    let key = post_json(
        &app.url("/ops/v1/keys"),
        &ops,
        &json!({"partner": "acme", "scopes": ["orders:read"], "plan": "silver"}),
        None,
    )
    .await;
    assert_eq!(key.status, 201, "{}", key.text);
    // A partner endpoint nobody listens at: its test event fails for good.
    let dead = harness::listener().await;
    let dead_url = format!("http://{}/hooks", dead.local_addr().expect("addr"));
    drop(dead);
    let partner = harness::token_for(app.data_dir.path(), "acme-erp", Some("acme"), None, "webhooks:manage");
    let endpoint =
        post_json(&app.url("/partner/v1/webhooks"), &partner, &json!({"url": dead_url, "events": ["order.*"]}), None)
            .await;
    assert_eq!(endpoint.status, 201, "{}", endpoint.text);
    let endpoint = endpoint.body["id"].as_str().expect("id").to_owned();
    let test = post_json(&app.url(&format!("/partner/v1/webhooks/{endpoint}/test")), &partner, &json!({}), None).await;
    assert_eq!(test.status, 202, "{}", test.text);

    // A partner's order file with a row that cannot be an order: quarantined.
    let importer = harness::token_for(app.data_dir.path(), "acme-files", Some("acme"), None, "orders:write");
    let file = "external_ref,sku,quantity,ship_to_street,ship_to_city,ship_to_postal_code,ship_to_country\n\
                PO-QUARANTINE-1,DRILL-10,zwei,Kai 7,Bremen,28195,DE\n";
    let upload = http::Request::post(app.url("/partner/v1/order-batches"))
        .header("authorization", format!("Bearer {importer}"))
        .header("content-type", "text/csv")
        .body(http_body_util::Full::new(bytes::Bytes::from(file)))
        .expect("request");
    let uploaded = harness::send(upload).await;
    assert_eq!(uploaded.status, 202, "{}", uploaded.text);

    let browser = Browser::start().await;
    browser.open(&app.url("/ops")).await;
    browser.wait_for("the sign-in form", "!document.getElementById('signin').hidden").await;
    // The trace link's template arrives whole, as data, not markup.
    let template = browser.eval("return document.body.dataset.traceUrl;").await;
    assert_eq!(template, json!("https://tempo.example/trace/{trace_id}?from=ops&x=\""));
    browser.type_into("#token", &ops).await;
    browser.click("#sign-in").await;

    // The charts: two per tier, drawn from the gateway's overview, with the
    // orders' traffic in them.
    browser
        .wait_for(
            "charts with data",
            "const charts = document.querySelectorAll('#tiers svg.chart');
             const traffic = [...document.querySelectorAll('#tiers [data-tier=gateway] path.series.requests')];
             return charts.length === 8 && traffic.some(p => Number(p.dataset.total) > 0 && p.getAttribute('d').includes('L'))
                 && document.querySelectorAll('#orders-by-status rect.bar').length > 0
                 && document.querySelectorAll('#tiles .tile').length === 7
                 && /waiting for a system\\s+none/i.test(document.querySelector('#tiles').innerText)
                 && /webhooks\\s+\\d+ pending/i.test(document.querySelector('#tiles').innerText);",
        )
        .await;
    let tiers: Vec<String> = serde_json::from_value(
        browser.eval("return [...document.querySelectorAll('#tiers .tier')].map(t => t.dataset.tier);").await,
    )
    .expect("tier names");
    assert_eq!(tiers, ["gateway", "experience", "process", "system"]);
    browser.screenshot("ops-console.png").await;

    // Find the order by its id and open its timeline.
    browser.click("#nav-orders").await;
    browser.wait_for("the orders view", "!document.getElementById('view-orders').hidden").await;
    browser.type_into("#order-q", &order).await;
    browser.click("#order-search-button").await;
    let row = format!("#orders-rows tr[data-order-id='{order}']");
    browser
        .wait_for("the one order found", &format!("return document.querySelectorAll('#orders-rows tr').length === 1 && !!document.querySelector(\"{row}\");"))
        .await;
    browser.click(&row).await;
    browser
        .wait_for(
            "the order's timeline",
            "const steps = [...document.querySelectorAll('#timeline li')].map(li => li.dataset.step);
             return ['accepted', 'confirmed', 'invoiced', 'paid'].every(s => steps.includes(s));",
        )
        .await;
    let detail = browser.eval("return document.getElementById('order-detail').innerText;").await;
    let detail = detail.as_str().expect("text");
    assert!(detail.contains(&order) && detail.contains("PO-CONSOLE-2") && detail.contains("web"), "{detail}");
    assert!(detail.contains("payment captured"), "the saga's own steps are shown too: {detail}");
    browser.screenshot("ops-console-order.png").await;

    // Keys and the partners they belong to.
    browser.click("#nav-keys").await;
    browser
        .wait_for(
            "the partner of the key",
            "return !!document.querySelector(\"#partners-rows tr[data-partner='acme']\");",
        )
        .await;

    // Webhooks: the endpoint, its dead letter, a replay and disabling it.
    browser.click("#nav-webhooks").await;
    let failed_rows = "return document.querySelectorAll('#failed-rows tr[data-delivery-id]').length";
    browser.wait_for("the failed test event", &format!("{failed_rows} === 1;")).await;
    browser.click("#failed-rows tr[data-delivery-id] button").await;
    browser.wait_for("the replay, failed again", &format!("{failed_rows} === 2;")).await;
    let row = format!("#endpoints-rows tr[data-endpoint-id='{endpoint}']");
    browser.click(&format!("{row} button")).await;
    browser
        .wait_for(
            "the endpoint disabled",
            &format!("return /disabled by its owner/.test(document.querySelector(\"{row}\").innerText);"),
        )
        .await;

    // The quarantine: the row with its reason, corrected and replayed.
    browser.click("#nav-quarantine").await;
    let entry = "#quarantine-rows tr[data-entry-id]";
    browser
        .wait_for(
            "the quarantined row",
            &format!("const row = document.querySelector(\"{entry}\"); return !!row && /PO-QUARANTINE-1/.test(row.innerText) && /quantity/.test(row.innerText);"),
        )
        .await;
    browser.click(entry).await;
    browser
        .wait_for("the entry's records", "return /zwei/.test(document.getElementById('quarantine-records').value);")
        .await;
    browser.type_into("#discard-reason", "").await;
    browser.click("#quarantine-discard").await;
    browser
        .wait_for("a reason asked for", "return /why/i.test(document.getElementById('quarantine-outcome').innerText);")
        .await;
    let corrected = r#"[{"external_ref": "PO-QUARANTINE-1", "sku": "DRILL-10", "quantity": "2", "ship_to_street": "Kai 7",
        "ship_to_city": "Bremen", "ship_to_postal_code": "28195", "ship_to_country": "DE"}]"#;
    browser.type_into("#quarantine-records", corrected).await;
    browser.click("#quarantine-replay").await;
    browser
        .wait_for(
            "the entry replayed into an order",
            "const d = document.getElementById('quarantine-detail'); return /replayed/.test(d.innerText) && /ord_/.test(d.innerText);",
        )
        .await;
    browser.screenshot("ops-console-quarantine.png").await;

    // Signing out forgets the token.
    browser.click("#sign-out").await;
    browser.wait_for("the sign-in form again", "return !document.getElementById('signin').hidden;").await;
    assert_eq!(browser.eval("return sessionStorage.length;").await, json!(0));
    browser.quit().await;
    app.stop_all().await;
}

/// Where screenshots go: the target directory of this build.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/debug/deps/ops_console-<hash>
    let exe = std::env::current_exe().expect("test binary");
    exe.ancestors().nth(3).expect("in a target directory").to_owned()
}

/// Headless Chromium behind chromedriver, spoken to over WebDriver (plain
/// HTTP and JSON, so no client crate is needed).
struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    _profile: tempfile::TempDir,
}

/// How long the page gets to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(60);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Self {
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let mut driver = Command::new(&driver_bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_bin} (Debian: apt-get install chromium chromium-driver): {e}"));
        // chromedriver picks a free port and says which.
        let stdout = driver.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(port.trim_end_matches('.').trim().to_owned());
                }
            }
        });
        let port = rx.recv_timeout(PATIENCE).expect("chromedriver reports its port");
        let profile = tempfile::tempdir().expect("profile dir");
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1440,1100", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self { driver, session: String::new(), _profile: profile };
        let created = browser.call("POST", &format!("{base}/session"), Some(capabilities)).await;
        let id = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .expect("request");
        let reply = harness::send(request).await;
        assert_eq!(reply.status, 200, "{method} {url}: {}", reply.text);
        reply.body["value"].clone()
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("{}{path}", self.session), body).await
    }

    async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Polls `script` (a function body, or an expression) until it is
    /// true, failing after [`PATIENCE`].
    async fn wait_for(&self, what: &str, script: &str) {
        let script = if script.contains("return") { script.to_owned() } else { format!("return {script};") };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.eval(&script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText;").await;
                self.screenshot("ops-console-failure.png").await;
                panic!("no {what} within {PATIENCE:?}; the page shows: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.command("POST", &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    /// Saves what the window shows as `<target>/<name>`.
    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64")).expect("PNG");
        let path = target_dir().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }

    async fn quit(mut self) {
        self.command("DELETE", "", None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    /// A failed test still closes its Chromium: the session is ended with a
    /// plain blocking request (no runtime to await in a drop), then the driver.
    fn drop(&mut self) {
        if let Some(rest) = self.session.strip_prefix("http://")
            && let Some((host, path)) = rest.split_once('/')
            && let Ok(mut stream) = std::net::TcpStream::connect(host)
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
