//! Order files end to end (`up` mode): a partner's CSV with its own SKUs, a
//! unit conversion and decimal commas, an unknown SKU, a quantity that is
//! no number and a broken rule. A dry run creates nothing and reports what
//! the import then does: good rows become one order, bad rows are in the
//! results with their row numbers and reasons and in the quarantine; an
//! operator's corrected replay creates the missing order, a discard is
//! kept with its reason; the same file again creates nothing new.

mod harness;

use std::{collections::BTreeMap, time::Duration};

use harness::{Running, assert_problem, get, post_json, send, spawn_up_with, token_for};
use http_body_util::Full;
use process_apis::partners::mapping::PartnerConfig;
use serde_json::{Value, json};

const FILE: &str = "external_ref;sku;quantity;unit;ship_to_street;ship_to_city;ship_to_postal_code;ship_to_country
PO-100;ACME-0042;2,0;;Kai 7;Bremen;28195;DE
PO-100;ACME-0077;1;BOX10;Kai 7;Bremen;28195;DE
PO-101;NOPE-1;1;;Kai 7;Bremen;28195;DE
PO-102;ACME-0042;zwei;;Kai 7;Bremen;28195;DE
PO-103;ACME-0042;60;;Kai 7;Bremen;28195;DE
";

async fn upload(app: &Running, bearer: &str, body: &str, query: &str, content_type: &str) -> harness::Reply {
    let request = http::Request::post(app.url(&format!("/partner/v1/order-batches{query}")))
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", content_type)
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .expect("request");
    send(request).await
}

/// The batch once its import is done.
async fn done(app: &Running, bearer: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&app.url(&format!("/partner/v1/order-batches/{id}")), Some(bearer)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body["status"] == "done" {
            return reply.body;
        }
        assert!(std::time::Instant::now() < deadline, "not done in time: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn results(app: &Running, bearer: &str, id: &str) -> Vec<Value> {
    let reply = get(&app.url(&format!("/partner/v1/order-batches/{id}/results")), Some(bearer)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    reply.text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// (row, status, the first error's field and rule) of each result.
fn summary(rows: &[Value]) -> Vec<(i64, String, String, String)> {
    rows.iter()
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                r["row"].as_i64().unwrap_or(0),
                text(&r["status"]),
                text(&r["errors"][0]["field"]),
                text(&r["errors"][0]["rule"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_partners_order_file_is_imported_row_by_row_with_what_fails_quarantined_for_an_operator() {
    let app = spawn_up_with(|config| {
        let acme: PartnerConfig = serde_json::from_value(json!({
            "sku_xref": {"ACME-0042": "WIDGET-1", "ACME-0077": "GADGET-2"},
            "units": {"BOX10": 10},
            "decimal_separator": ",",
            "rules": {"max_quantity_per_line": 50},
        }))
        .expect("acme's mapping");
        config.partners = BTreeMap::from([("acme".to_owned(), acme)]);
    })
    .await;
    let dir = app.data_dir.path();
    let acme = token_for(dir, "acme-erp", Some("acme"), None, "orders:read orders:write");
    let globex = token_for(dir, "globex-shop", Some("globex"), None, "orders:read orders:write");
    let ops = token_for(dir, "operator", None, None, "ops");
    assert_problem(&upload(&app, &acme, FILE, "", "application/pdf").await, 415);
    assert_problem(&upload(&app, &acme, FILE, "?dry_run=maybe", "text/csv").await, 400);

    // A dry run: nothing is created, everything is reported.
    let dry = upload(&app, &acme, FILE, "?dry_run=true", "text/csv").await;
    assert_eq!(dry.status, 202, "{}", dry.text);
    let dry_id = dry.body["id"].as_str().expect("id").to_owned();
    let dry_batch = done(&app, &acme, &dry_id).await;
    assert_eq!((dry_batch["rows"].as_i64(), dry_batch["dry_run"].as_bool()), (Some(5), Some(true)));
    let dry_rows = results(&app, &acme, &dry_id).await;
    let expected = |ok: &str, bad: &str| {
        vec![
            (1, ok.to_owned(), String::new(), String::new()),
            (2, ok.to_owned(), String::new(), String::new()),
            (3, bad.to_owned(), "sku".to_owned(), String::new()),
            (4, bad.to_owned(), "quantity".to_owned(), String::new()),
            (5, bad.to_owned(), "quantity".to_owned(), "max_quantity_per_line".to_owned()),
        ]
    };
    assert_eq!(summary(&dry_rows), expected("valid", "rejected"));
    let listed = get(&app.url("/partner/v1/orders"), Some(&acme)).await;
    assert_eq!(listed.body["orders"], json!([]), "a dry run creates no order");
    let quarantine = get(&app.url("/ops/v1/quarantine?partner=acme"), Some(&ops)).await;
    assert_eq!(quarantine.body["entries"], json!([]), "nor quarantines anything");

    // The import: one order of two lines, three rows quarantined.
    let real = upload(&app, &acme, FILE, "", "text/csv").await;
    assert_eq!(real.status, 202, "{}", real.text);
    let id = real.body["id"].as_str().expect("id").to_owned();
    assert_ne!(id, dry_id, "a dry run does not stand in for the import");
    let batch = done(&app, &acme, &id).await;
    assert_eq!(
        (batch["rows"].as_i64(), batch["orders_accepted"].as_i64(), batch["rows_quarantined"].as_i64()),
        (Some(5), Some(1), Some(3)),
        "{batch}"
    );
    let rows = results(&app, &acme, &id).await;
    assert_eq!(summary(&rows), expected("accepted", "quarantined"));
    assert_eq!(
        rows.iter().map(|r| r["errors"].clone()).collect::<Vec<_>>(),
        dry_rows.iter().map(|r| r["errors"].clone()).collect::<Vec<_>>(),
        "the dry run reported the same errors"
    );
    let order_id = rows[0]["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(rows[1]["order_id"], order_id.as_str(), "rows sharing a reference form one order");
    let order = get(&app.url(&format!("/partner/v1/orders/{order_id}")), Some(&acme)).await;
    let lines: Vec<(String, i64)> = order.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| (l["sku"].as_str().unwrap_or("").to_owned(), l["quantity"].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(lines, [("WIDGET-1".to_owned(), 2), ("GADGET-2".to_owned(), 10)], "{}", order.text);
    assert_eq!(order.body["external_ref"], "PO-100");
    let csv = send(
        http::Request::get(app.url(&format!("/partner/v1/order-batches/{id}/results")))
            .header("authorization", format!("Bearer {acme}"))
            .header("accept", "text/csv")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(csv.text.lines().next(), Some("row,external_ref,status,order_id,errors"));
    assert_eq!(csv.text.lines().count(), 6, "{}", csv.text);
    assert_problem(&get(&app.url(&format!("/partner/v1/order-batches/{id}")), Some(&globex)).await, 404);

    // The quarantine: every failed order with its records and reasons.
    let quarantine = get(&app.url("/ops/v1/quarantine?partner=acme"), Some(&ops)).await;
    assert_eq!(quarantine.status, 200, "{}", quarantine.text);
    let entries = quarantine.body["entries"].as_array().expect("entries").clone();
    assert_eq!(entries.len(), 3, "{}", quarantine.text);
    let by_ref = |r: &str| entries.iter().find(|e| e["external_ref"] == r).cloned().expect("an entry");
    let unreadable = by_ref("PO-102");
    assert_eq!(
        (unreadable["stage"].as_str(), unreadable["source"].as_str()),
        (Some("mapping"), Some(format!("batch:{id}").as_str()))
    );
    assert_eq!(unreadable["records"][0]["quantity"], "zwei", "the original record is kept");
    let rule = get(&app.url("/ops/v1/quarantine?reason=max_quantity_per_line"), Some(&ops)).await;
    assert_eq!(rule.body["entries"].as_array().map(Vec::len), Some(1), "{}", rule.text);

    // An operator fixes the quantity and replays; another entry is discarded.
    let replay = format!("/ops/v1/quarantine/{}/replay", unreadable["id"].as_str().expect("id"));
    let still_bad = json!({"record": {"external_ref": "PO-102", "sku": "ACME-0042", "quantity": "drei"}});
    assert_problem(&post_json(&app.url(&replay), &ops, &still_bad, None).await, 422);
    let corrected = json!({"record": {"external_ref": "PO-102", "sku": "ACME-0042", "quantity": "2",
        "ship_to_street": "Kai 7", "ship_to_city": "Bremen", "ship_to_postal_code": "28195", "ship_to_country": "DE"}});
    let replayed = post_json(&app.url(&replay), &ops, &corrected, None).await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    assert_eq!(
        (replayed.body["status"].as_str(), replayed.body["resolved_by"].as_str()),
        (Some("replayed"), Some("operator"))
    );
    let new_order = replayed.body["order_id"].as_str().expect("the new order").to_owned();
    let placed = get(&app.url(&format!("/partner/v1/orders/{new_order}")), Some(&acme)).await;
    assert_eq!((placed.status, placed.body["external_ref"].as_str()), (200, Some("PO-102")), "{}", placed.text);
    assert_problem(&post_json(&app.url(&replay), &ops, &corrected, None).await, 409);
    let unknown = by_ref("PO-101");
    let discard = format!("/ops/v1/quarantine/{}/discard", unknown["id"].as_str().expect("id"));
    assert_problem(&post_json(&app.url(&discard), &ops, &json!({"reason": ""}), None).await, 422);
    let discarded = post_json(&app.url(&discard), &ops, &json!({"reason": "the partner withdrew PO-101"}), None).await;
    assert_eq!((discarded.status, discarded.body["status"].as_str()), (200, Some("discarded")), "{}", discarded.text);
    let open = get(&app.url("/ops/v1/quarantine"), Some(&ops)).await;
    assert_eq!(open.body["entries"].as_array().map(Vec::len), Some(1), "one left open: {}", open.text);
    // Both decisions are on the process tier's audit trail, with the operator.
    let store = format!("sqlite://{}", app.data_dir.path().join("process.db").display());
    let db = sqlx::SqlitePool::connect(&store).await.expect("process.db");
    let decisions: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, object FROM audit_log WHERE action LIKE 'quarantine.%' ORDER BY seq")
            .fetch_all(&db)
            .await
            .expect("audit rows");
    db.close().await;
    let id_of = |entry: &Value| entry["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        decisions,
        [
            ("operator".to_owned(), "quarantine.fix".to_owned(), id_of(&unreadable)),
            ("operator".to_owned(), "quarantine.discard".to_owned(), id_of(&unknown)),
        ]
    );
    // Data quality in /metrics (the recorder is shared by this binary's
    // tests; only this one fixes and discards acme's records).
    let metrics = get(&app.url("/metrics"), None).await.text;
    let value = |family: &str, labels: &[&str]| {
        metrics
            .lines()
            .find(|l| l.starts_with(family) && labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let acme_records = |outcome: &str| {
        value(
            "erp_connect_records_total{",
            &["partner=\"acme\"", "source=\"batch\"", &format!("outcome=\"{outcome}\"")],
        )
    };
    assert_eq!((acme_records("fixed"), acme_records("discarded")), (Some(1.0), Some(1.0)), "{metrics}");
    let ratio = value("erp_connect_records_error_ratio{", &["partner=\"acme\""]).expect("the error ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    let overview = get(&app.url("/ops/v1/overview"), Some(&ops)).await;
    assert!(overview.body["data_quality"]["fixed"].as_u64() >= Some(1), "{}", overview.text);

    // The same file again: the same batch, nothing new.
    let again = upload(&app, &acme, FILE, "", "text/csv").await;
    assert_eq!((again.status, again.body["id"].as_str()), (202, Some(id.as_str())), "{}", again.text);
    let listed = get(&app.url("/partner/v1/orders"), Some(&acme)).await;
    assert_eq!(listed.body["orders"].as_array().map(Vec::len), Some(2), "PO-100 and the replayed PO-102 only");
    app.stop_all().await;
}

/// Results as JSON values, order ids (which differ between imports) blanked.
fn comparable(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("a JSON line");
            if v.get("order_id").is_some() {
                v["order_id"] = json!("ord_");
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn the_command_line_and_the_inbox_folder_give_the_same_row_results_as_each_other() {
    let inbox = tempfile::tempdir().expect("inbox");
    let inbox_dir = inbox.path().to_owned();
    let app = spawn_up_with(move |config| {
        let mapping = json!({
            "sku_xref": {"ACME-0042": "WIDGET-1", "ACME-0077": "GADGET-2"},
            "units": {"BOX10": 10},
            "decimal_separator": ",",
            "rules": {"max_quantity_per_line": 50},
        });
        let partner = |m: &Value| serde_json::from_value::<PartnerConfig>(m.clone()).expect("mapping");
        // Two partners with one mapping: the same file makes orders for each.
        config.partners =
            BTreeMap::from([("acme".to_owned(), partner(&mapping)), ("acme-sftp".to_owned(), partner(&mapping))]);
        config.files.inbox_dir = Some(inbox_dir);
        config.files.inbox_poll_interval = Duration::from_millis(50);
    })
    .await;
    let file = app.data_dir.path().join("orders.csv");
    std::fs::write(&file, FILE).expect("file");

    // The command line, against the running process tier.
    let grpc =
        app.grpc.iter().find(|(t, _)| *t == erp_connect::serve::Target::Process).map(|(_, a)| *a).expect("process");
    let (file_arg, data_dir) = (file.display().to_string(), app.data_dir.path().display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::BIN)
            .args([
                "import",
                "orders",
                &file_arg,
                "--partner",
                "acme",
                "--process-url",
                &format!("http://{grpc}"),
                "--data-dir",
                &data_dir,
            ])
            .env_remove("ERP_CONNECT_CONFIG")
            .env("RUST_LOG", "off")
            .output()
            .expect("run erp-connect")
    })
    .await
    .expect("joined");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "three rows are not accepted: {stderr}");
    assert!(stderr.contains("uploaded") && stderr.contains("done"), "progress on stderr: {stderr}");
    let from_cli = comparable(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(from_cli.len(), 5, "{:?}", from_cli);

    // The inbox: the same file dropped for the other partner, settled (an
    // upload in progress is left alone).
    let partner_dir = inbox.path().join("acme-sftp");
    std::fs::create_dir_all(&partner_dir).expect("partner folder");
    let dropped = partner_dir.join("orders.csv");
    std::fs::write(&dropped, FILE).expect("dropped");
    std::fs::File::options()
        .write(true)
        .open(&dropped)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(10)))
        .expect("settled");
    let results = partner_dir.join("failed").join("orders.csv.results.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !results.exists() {
        assert!(std::time::Instant::now() < deadline, "the inbox did not import the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(partner_dir.join("failed").join("orders.csv").exists(), "the file moved beside its results");
    assert!(!dropped.exists());
    let from_inbox = comparable(&std::fs::read_to_string(&results).expect("results"));
    assert_eq!(from_inbox, from_cli, "the same rows, statuses and reasons");
    app.stop_all().await;
}

#[tokio::test]
async fn a_partners_transform_reshapes_each_record_before_its_mapping_and_what_it_refuses_is_quarantined() {
    let app = spawn_up_with(|config| {
        let globex: PartnerConfig = serde_json::from_value(json!({
            "sku_xref": {"G-1": "WIDGET-1", "G-2": "GADGET-2"},
            "transform": r#"{external_ref: .Bestellung, sku: .Artikel, quantity: .Menge, ship_to_street: .Strasse,
                ship_to_city: .Ort, ship_to_postal_code: .PLZ, ship_to_country: ({Deutschland: "DE", Frankreich: "FR"}[.Land] // error("no country " + .Land))}"#,
        }))
        .expect("globex's mapping");
        config.partners = BTreeMap::from([("globex".to_owned(), globex)]);
    })
    .await;
    let dir = app.data_dir.path();
    let globex = token_for(dir, "globex-erp", Some("globex"), None, "orders:read orders:write");
    let ops = token_for(dir, "operator", None, None, "ops");
    let file = r#"{"Bestellung": "B-1", "Artikel": "G-1", "Menge": 2, "Strasse": "Kai 7", "Ort": "Bremen", "PLZ": "28195", "Land": "Deutschland"}
{"Bestellung": "B-1", "Artikel": "G-2", "Menge": 1, "Strasse": "Kai 7", "Ort": "Bremen", "PLZ": "28195", "Land": "Deutschland"}
{"Bestellung": "B-2", "Artikel": "G-1", "Menge": 1, "Strasse": "Rue 1", "Ort": "Paris", "PLZ": "75001", "Land": "Narnia"}
"#;
    let reply = upload(&app, &globex, file, "", "application/x-ndjson").await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["id"].as_str().expect("id").to_owned();
    let batch = done(&app, &globex, &id).await;
    assert_eq!((batch["orders_accepted"].as_i64(), batch["rows_quarantined"].as_i64()), (Some(1), Some(1)), "{batch}");
    let rows = results(&app, &globex, &id).await;
    assert_eq!(
        summary(&rows),
        vec![
            (1, "accepted".into(), String::new(), String::new()),
            (2, "accepted".into(), String::new(), String::new()),
            (3, "quarantined".into(), "record".into(), "transform".into()),
        ]
    );
    assert_eq!(rows[0]["order_id"], rows[1]["order_id"], "grouped by the reference the transform made");
    assert_eq!(rows[2]["errors"][0]["message"], "failed: no country Narnia");
    let order =
        get(&app.url(&format!("/partner/v1/orders/{}", rows[0]["order_id"].as_str().unwrap_or(""))), Some(&globex))
            .await;
    assert_eq!(order.body["external_ref"], "B-1", "{}", order.text);
    // The quarantine keeps the record as the partner sent it; replayed
    // with the country fixed, the transform runs again and the order is made.
    let entries = get(&app.url("/ops/v1/quarantine?partner=globex"), Some(&ops)).await;
    let entry = &entries.body["entries"][0];
    assert_eq!(entry["records"][0]["Land"], "Narnia", "{}", entries.text);
    let replay = post_json(
        &app.url(&format!("/ops/v1/quarantine/{}/replay", entry["id"].as_str().unwrap_or(""))),
        &ops,
        &json!({"record": {"Bestellung": "B-2", "Artikel": "G-1", "Menge": "1", "Strasse": "Rue 1", "Ort": "Paris",
            "PLZ": "75001", "Land": "Frankreich"}}),
        None,
    )
    .await;
    assert_eq!((replay.status, replay.body["status"].as_str()), (200, Some("replayed")), "{}", replay.text);
    let listed = get(&app.url("/partner/v1/orders"), Some(&globex)).await;
    let mut refs: Vec<&str> =
        listed.body["orders"].as_array().expect("orders").iter().filter_map(|o| o["external_ref"].as_str()).collect();
    refs.sort_unstable();
    assert_eq!(refs, ["B-1", "B-2"], "{}", listed.text);
    app.stop_all().await;
}
