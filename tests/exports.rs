//! Files out (`up` mode): the scheduled exports write each invoice event
//! and order status change once, in files that are whole when they appear,
//! each holding only what is new since the one before; `erp-connect export`
//! gives the same rows for a time range.

mod harness;

use std::{collections::BTreeSet, path::Path, time::Duration};

use harness::{Running, get, post_json, quick_sagas, spawn_up_with, token_for};
use serde_json::{Value, json};

/// The export files in `dir` (sorted by name, which is outbox order), once
/// `done` holds for their rows.
async fn files_until(dir: &Path, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<(String, Vec<Value>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        names.sort();
        let files: Vec<(String, Vec<Value>)> = names
            .iter()
            .filter(|n| n.starts_with(what) && n.ends_with(".csv"))
            .map(|n| {
                let mut reader = csv::Reader::from_path(dir.join(n)).expect("a CSV file");
                let headers = reader.headers().expect("header").clone();
                let rows = reader
                    .records()
                    .map(|r| {
                        let r = r.expect("a row");
                        Value::Object(headers.iter().zip(r.iter()).map(|(h, v)| (h.to_owned(), json!(v))).collect())
                    })
                    .collect();
                (n.clone(), rows)
            })
            .collect();
        let rows: Vec<Value> = files.iter().flat_map(|(_, rows)| rows.clone()).collect();
        if done(&rows) {
            return files;
        }
        assert!(std::time::Instant::now() < deadline, "no {what} export in time: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(app: &Running, bearer: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&app.url(path), Some(bearer)).await;
        if done(&reply.body) {
            return reply.body;
        }
        assert!(std::time::Instant::now() < deadline, "not in time: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["event"].as_str().unwrap_or("")).collect()
}

#[tokio::test]
async fn invoices_and_orders_are_exported_once_each_in_whole_files_and_on_demand() {
    let outbox = tempfile::tempdir().expect("outbox");
    let dir = outbox.path().to_owned();
    let app = spawn_up_with(move |c| {
        quick_sagas(c);
        c.files.outbox_dir = Some(dir);
        c.files.export_interval = Duration::from_millis(50);
        c.files.export_settle = Duration::ZERO;
    })
    .await;
    let data = app.data_dir.path();
    let acme = token_for(data, "acme-erp", Some("acme"), None, "orders:read orders:write");
    let ops = token_for(data, "operator", None, None, "ops");
    let order = json!({"external_ref": "PO-EXP-1", "lines": [{"sku": "DRILL-10", "quantity": 1}],
        "payment": {"method": "on_account"}});
    let placed = post_json(&app.url("/partner/v1/orders"), &acme, &order, None).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.body["id"].as_str().expect("order id").to_owned();
    let path = format!("/partner/v1/orders/{id}");
    let invoiced = wait_for(&app, &acme, &path, |o| o["status"] == "invoiced").await;

    // The invoice, once issued, is in an invoices file.
    let issued = files_until(outbox.path(), "invoices-", |rows| events(rows).contains(&"invoice.issued")).await;
    let row = &issued.iter().flat_map(|(_, rows)| rows).next().expect("a row").clone();
    assert_eq!((row["order_id"].as_str(), row["tenant"].as_str()), (Some(id.as_str()), Some("acme")));
    assert_eq!(row["total"], invoiced["total"]);
    let number = invoiced["erp"]["invoice"].as_str().expect("the ERP's invoice number");
    assert_eq!(row["invoice"].as_str(), Some(number), "{row}");

    // Paid: the next file holds the payment only.
    let payment = json!({"order_id": id, "amount": invoiced["total"], "currency": "EUR"});
    let paid = post_json(&app.url("/ops/v1/payments"), &ops, &payment, Some("statement-exp")).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let invoices = files_until(outbox.path(), "invoices-", |rows| events(rows).contains(&"order.paid")).await;
    let all: Vec<Value> = invoices.iter().flat_map(|(_, rows)| rows.clone()).collect();
    assert_eq!(events(&all), ["invoice.issued", "order.paid"], "each event once: {invoices:?}");
    assert!(invoices.len() >= 2, "what is new goes into a new file: {invoices:?}");
    let orders = files_until(outbox.path(), "orders-", |rows| events(rows).contains(&"order.paid")).await;
    let order_events: Vec<Value> = orders.iter().flat_map(|(_, rows)| rows.clone()).collect();
    assert_eq!(events(&order_events), ["order.accepted", "order.confirmed", "order.paid"]);
    let leftovers: Vec<String> = std::fs::read_dir(outbox.path())
        .expect("outbox")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "no temporary file is left");

    // On demand, the same rows as JSON lines, from the data directory.
    let (data_dir, out) = (data.display().to_string(), outbox.path().join("on-demand.jsonl"));
    let out_arg = out.display().to_string();
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::BIN)
            .args(["export", "invoices", "--since", "2000-01-01", "--format", "jsonl", "--output", &out_arg])
            .args(["--data-dir", &data_dir])
            .env_remove("ERP_CONNECT_CONFIG")
            .env("RUST_LOG", "off")
            .output()
            .expect("run erp-connect")
    })
    .await
    .expect("joined");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let exported: Vec<Value> = std::fs::read_to_string(&out)
        .expect("the file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let ids =
        |rows: &[Value]| rows.iter().map(|r| r["event_id"].as_str().unwrap_or("").to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&exported), ids(&all), "the same events");
    let refused = std::process::Command::new(harness::BIN)
        .args(["export", "invoices", "--since", "last week", "--data-dir", data.to_str().unwrap_or(".")])
        .env_remove("ERP_CONNECT_CONFIG")
        .output()
        .expect("run erp-connect");
    assert_eq!(refused.status.code(), Some(64), "{}", String::from_utf8_lossy(&refused.stderr));
    app.stop_all().await;
}
