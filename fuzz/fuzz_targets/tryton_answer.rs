//! Fuzzes how the Tryton backend (`system_apis::erp::backend::tryton`)
//! turns Tryton's JSON-RPC answers into `erp.v1` records: the reply
//! handling of `rpc.rs` (`result`, and `error` through `classify`), the
//! typed records of `records.rs` (tagged Decimals and datetimes, `1`/`0`
//! booleans, float quantities, references) and the per-model mappers
//! (catalogue, inventory, customers, sales orders, invoices, shipments,
//! receivables, the change feed, custom fields of every type including a
//! `Dict` key).
//!
//! They are reached the way the connector reaches them, through the public
//! `Connector` methods of a real `TrytonErp`, talking JSON-RPC over
//! loopback to a stand-in Tryton in this process. The stand-in answers the
//! login and the discovery (modules, company, warehouses, custom fields'
//! `fields_get`) once, at start, with what a real Tryton 8.0 says; after
//! that it answers each call with the next answer the fuzzer wrote:
//! - byte 0 picks the `Connector` method (reads, creates and workflow
//!   steps; see `run`);
//! - the rest is a JSON array (other inputs are skipped), one element per
//!   call in order: a JSON object is the whole JSON-RPC reply (so
//!   `{"result": ...}` or `{"error": ["UserError", [...]]}`), anything
//!   else is the `result` itself. Calls past the end get an error reply.
//!
//! Beyond "never panics": every call ends (the client's deadline is 5 s and
//! libFuzzer's `-timeout` catches a hang), a page of products or changes
//! holds at most the limit asked for, and the change feed's cursor is one
//! the feed takes back.
#![no_main]

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use erp_connect_proto::{
    custom_fields::{Definition, Definitions, Entity, FieldType},
    erp::v1::{Address, CustomValue, custom_value},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use system_apis::erp::{
    Connector, CustomerKey, InvoicePayment, NewCustomer, NewLine, NewSalesOrder,
    backend::tryton::{Config, TrytonErp, rpc},
};

/// The reply to every call past the fuzzer's last answer.
const EXHAUSTED: &[u8] = br#"{"error": ["fuzz: no more answers", ""]}"#;

/// A stand-in Tryton: discovery answers until `scripted`, then the queue.
#[derive(Default)]
struct Fake {
    scripted: AtomicBool,
    answers: Mutex<VecDeque<Vec<u8>>>,
}

/// What a Tryton 8.0 with `sale` and the fields of [`definitions`] answers
/// while the connector logs in and discovers it.
fn discovery(method: &str) -> Value {
    let result = match method {
        "common.db.login" => json!([1, "fuzz-session"]),
        "model.res.user.get_preferences" => json!({"company": 1, "language": "en", "user": 1}),
        "common.server.version" => json!("8.0.12"),
        "model.ir.module.search_read" => json!([{"id": 1, "name": "sale"}, {"id": 2, "name": "sale_credit_limit"}]),
        "model.party.party.fields_get" => json!({
            "credit_limit_amount": {"type": "numeric"},
            "loyalty": {"type": "integer"},
            "vip": {"type": "boolean"},
        }),
        "model.sale.sale.fields_get" => json!({"shipping_date": {"type": "date"}, "comment": {"type": "text"}}),
        "model.sale.line.fields_get" => json!({"weight": {"type": "numeric"}}),
        "model.product.product.fields_get" => json!({
            "hs_code": {"type": "char"},
            "attributes": {"type": "dict", "schema_model": "product.attribute"},
        }),
        "model.product.attribute.search_read" => json!([{"id": 1, "type_": "char"}]),
        "model.company.company.search_read" => {
            json!([{"id": 1, "currency": 1, "currency.": {"id": 1, "code": "EUR"}}])
        }
        "model.stock.location.search_read" => json!([{"id": 3, "code": "WH"}, {"id": 4, "code": "STORE"}]),
        "model.account.invoice.payment_term.search_read" => json!([{"id": 1}]),
        other => return json!({"error": [format!("fuzz: no discovery answer for {other}"), ""]}),
    };
    json!({"result": result})
}

async fn answer(fake: Arc<Fake>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let reply = if fake.scripted.load(Ordering::Acquire) {
        fake.answers.lock().expect("answers").pop_front().unwrap_or_else(|| EXHAUSTED.to_vec())
    } else {
        let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        discovery(call["method"].as_str().unwrap_or_default()).to_string().into_bytes()
    };
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

/// One custom field of each type, on every entity, one of them a Dict key.
fn definitions() -> Definitions {
    let def = |entity, name: &str, erp_field: &str, field_type| Definition {
        entity,
        name: name.into(),
        erp_field: erp_field.into(),
        field_type,
        writable: true,
        audiences: vec!["partner".into()],
    };
    Definitions::new(vec![
        def(Entity::Customer, "loyalty", "loyalty", FieldType::Integer),
        def(Entity::Customer, "vip", "vip", FieldType::Boolean),
        def(Entity::SalesOrder, "ship_by", "shipping_date", FieldType::Date),
        def(Entity::SalesOrder, "note", "comment", FieldType::String),
        def(Entity::OrderLine, "weight", "weight", FieldType::Decimal),
        def(Entity::Product, "hs_code", "hs_code", FieldType::String),
        def(Entity::Product, "colour", "attributes.colour", FieldType::String),
    ])
    .expect("valid definitions")
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    fake: Arc<Fake>,
    erp: TrytonErp,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    // One thread: the stand-in and the client take turns on it, so a run
    // is one sequence of calls and the other core stays free.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let fake = Arc::new(Fake::default());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("loopback port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let served = fake.clone();
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let fake = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(fake.clone(), request));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    // The connector reads its password from a file, once, in `open`.
    let password_file = std::env::temp_dir().join(format!("erp-connect-fuzz-tryton-{}", std::process::id()));
    std::fs::write(&password_file, "fuzz\n").expect("password file");
    let config = Config {
        url,
        database: "fuzz".into(),
        username: "admin".into(),
        password_file: password_file.clone(),
        timeout: Duration::from_secs(5),
    };
    let erp = TrytonErp::open(&config, Arc::new(definitions())).expect("connector");
    let _ = std::fs::remove_file(&password_file);
    // Log in and discover now, with the discovery answers; the setup is
    // kept for as long as the session is, which no fuzzed answer ends
    // (only an HTTP 401 would).
    runtime.block_on(erp.capabilities()).expect("discovery against the stand-in");
    fake.scripted.store(true, Ordering::Release);
    Setup { runtime, fake, erp }
});

fn custom(name: &str, value: custom_value::Value) -> HashMap<String, CustomValue> {
    HashMap::from([(name.to_owned(), CustomValue { value: Some(value) })])
}

fn address() -> Address {
    Address {
        street: "Kai 7".into(),
        city: "Bremen".into(),
        postal_code: "28195".into(),
        country: "DE".into(),
        ..Address::default()
    }
}

/// Runs the `Connector` method `op` picks; what it answers is only checked
/// for what must hold whatever Tryton said.
async fn run(erp: &TrytonErp, op: u8) {
    const LIMIT: usize = 3;
    let decimal = |s: &str| s.parse::<rust_decimal::Decimal>().expect("decimal");
    match op % 27 {
        0 | 1 => {
            if let Ok(page) = erp.list_products((op % 27 == 1).then_some("WIDGET-1"), LIMIT).await {
                assert!(page.items.len() <= LIMIT, "{} products on a page of {LIMIT}", page.items.len());
            }
        }
        2 => drop(erp.get_product("WIDGET-1").await),
        3 => drop(erp.stock_levels(&["WIDGET-1".into(), "GADGET-2".into()]).await),
        4 => drop(erp.get_customer("party-1").await),
        5 => drop(erp.find_customer(&CustomerKey::ExternalId("web:alice".into())).await),
        6 => drop(erp.find_customer(&CustomerKey::Email("Alice@Example.com".into())).await),
        7 => {
            let new = NewCustomer {
                idempotency_key: "k1".into(),
                fingerprint: "f1".into(),
                external_id: Some("web:alice".into()),
                name: "Alice".into(),
                email: Some("alice@example.com".into()),
                currency: "EUR".into(),
                credit_limit: decimal("1000.00"),
                addresses: vec![address()],
                custom_fields: custom("loyalty", custom_value::Value::IntegerValue(3)),
            };
            drop(erp.create_customer(&new).await)
        }
        8 => drop(erp.update_credit_limit("party-1", decimal("2500.50")).await),
        9 => drop(erp.add_address("party-1", &address()).await),
        10 => {
            let new = NewSalesOrder {
                idempotency_key: "k1".into(),
                fingerprint: "f1".into(),
                customer_id: "party-1".into(),
                reference: "PO-4711".into(),
                currency: None,
                lines: vec![
                    NewLine {
                        sku: "WIDGET-1".into(),
                        quantity: 2,
                        unit_price: None,
                        custom_fields: custom("weight", custom_value::Value::DecimalValue("1.25".into())),
                    },
                    NewLine {
                        sku: "GADGET-2".into(),
                        quantity: 1,
                        unit_price: Some(decimal("9.99")),
                        custom_fields: HashMap::new(),
                    },
                ],
                custom_fields: custom("ship_by", custom_value::Value::DateValue("2026-12-24".into())),
            };
            drop(erp.create_sales_order(&new).await)
        }
        11 => drop(erp.quote_sales_order("sale-1").await),
        12 => drop(erp.confirm_sales_order("sale-1").await),
        13 => drop(erp.cancel_sales_order("sale-1").await),
        14 => drop(erp.get_sales_order("sale-1").await),
        15 => drop(erp.list_sales_orders("party-1", None, LIMIT).await),
        16 => drop(erp.list_invoices("sale-1").await),
        17 => drop(erp.get_invoice("invoice-1").await),
        18 => drop(erp.post_invoice("invoice-1").await),
        19 => {
            let payment = InvoicePayment {
                idempotency_key: "k1".into(),
                invoice_id: "invoice-1".into(),
                currency: "EUR".into(),
                amount: decimal("10.00"),
            };
            drop(erp.record_invoice_payment(&payment).await)
        }
        20 => drop(erp.credit_invoice("invoice-1").await),
        21 => drop(erp.list_shipments("sale-1").await),
        22 => drop(erp.complete_shipment("shipment-1").await),
        23 => drop(erp.open_amount("party-1").await),
        24 => drop(erp.capabilities().await),
        n => {
            let since = (n == 26).then_some("2026-11-28T09:05:07.000042Z");
            if let Ok((changes, next)) = erp.list_changes(since, LIMIT).await {
                assert!(changes.len() <= LIMIT, "{} changes on a page of {LIMIT}", changes.len());
                assert!(rpc::datetime(&next).is_some(), "the feed's cursor {next:?} is not one it takes back");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    let Ok(Value::Array(replies)) = serde_json::from_slice::<Value>(rest) else { return };
    let setup = &*SETUP;
    let answers = replies
        .into_iter()
        .map(|reply| match reply {
            Value::Object(_) => reply.to_string().into_bytes(),
            result => json!({"result": result}).to_string().into_bytes(),
        })
        .collect();
    *setup.fake.answers.lock().expect("answers") = answers;
    setup.runtime.block_on(run(&setup.erp, op));
});
