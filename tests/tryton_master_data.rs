//! Customer master data between the embedded CRM and a real Tryton, in
//! `serve` mode, read back over Tryton's own JSON-RPC: a name changed in
//! the CRM reaches the Tryton party; a credit limit changed in Tryton
//! reaches the CRM; a name changed in Tryton is written back (the CRM owns
//! names), or under the quarantine policy held until an operator reverts
//! it; a web shopper the CRM knows by e-mail orders as the existing
//! Tryton party; and the person's export and erasure, after which Tryton
//! keeps the invoice of an anonymised, deactivated party.
//!
//! Tryton is the run's own database (`erp_master_data`), set up by
//! `deploy/tryton/setup.sh` as for the other Tryton tests.

mod harness;

use std::time::{Duration, Instant};

use erp_connect::serve::Target;
use erp_connect_proto::{
    acting,
    crm::v1::{self as crm, crm_service_client::CrmServiceClient},
    master_data::v1::{self as md, master_data_service_client::MasterDataServiceClient},
    order_to_cash::v1::{self as o2c, order_to_cash_service_client::OrderToCashServiceClient},
};
use harness::{ProcessChannel, Running, post_json, quick_sagas, spawn_serve_with};
use process_apis::master_data::OnConflict;
use serde_json::{Value, json};
use system_apis::erp::{BackendKind, backend::tryton};

struct Setup {
    app: Running,
    tryton: tryton::rpc::Client,
    crm: CrmServiceClient<ProcessChannel>,
    master: MasterDataServiceClient<ProcessChannel>,
}

async fn start(on_conflict: OnConflict) -> Setup {
    harness::leaks::watch_logs();
    let server =
        tokio::task::spawn_blocking(|| tryton::test_server::config("erp_master_data")).await.expect("tryton set up");
    let for_app = server.clone();
    let app = spawn_serve_with(move |config| {
        quick_sagas(config);
        config.erp.backend = BackendKind::Tryton;
        config.erp.tryton = Some(for_app);
        config.process.system_timeout = Duration::from_secs(30);
        let mut master =
            process_apis::master_data::Config { poll_interval: Duration::from_millis(200), ..Default::default() };
        master.customer.on_conflict = on_conflict;
        config.master_data = Some(master);
    })
    .await;
    Setup {
        tryton: tryton::test_server::rpc_client(&server),
        crm: CrmServiceClient::new(app.grpc_channel(Target::System)),
        master: MasterDataServiceClient::new(app.grpc_channel(Target::Process)),
        app,
    }
}

fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// Polls `check` until it gives a value, for at most 60 s (Tryton answers
/// in tens of milliseconds per call, and a pass reads several).
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = $check {
                break value;
            }
            assert!(Instant::now() < deadline, "not in 60 s: {}", $what);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// A party made in Tryton itself, with an e-mail contact mechanism.
async fn tryton_party(s: &Setup, name: &str, email: &str) -> i64 {
    // A code of its own: two tests creating parties at once would draw
    // the same one from Tryton's sequence.
    let record = json!({"name": name, "code": format!("md-{}", unique()),
        "contact_mechanisms": [["create", [{"type": "email", "value": email}]]]});
    let ids = s.tryton.call("model.party.party.create", vec![json!([record])]).await.expect("party created");
    ids[0].as_i64().expect("party id")
}

/// Party `id` as Tryton has it (inactive ones too).
async fn party(s: &Setup, id: i64) -> Value {
    let fields = json!(["name", "active", "contact_mechanisms", "addresses", "credit_limit_amount"]);
    let read = s.tryton.call("model.party.party.read", vec![json!([id]), fields]).await.expect("party read");
    read[0].clone()
}

async fn crm_customer(s: &mut Setup, name: &str, email: &str) -> crm::Customer {
    let request = crm::CreateCustomerRequest {
        idempotency_key: format!("create-{}", unique()),
        name: name.into(),
        email: email.into(),
        ..Default::default()
    };
    s.crm.create_customer(request).await.expect("CRM customer").into_inner().customer.expect("customer")
}

async fn crm_read(s: &mut Setup, id: &str) -> crm::Customer {
    let answer = s.crm.get_customer(crm::GetCustomerRequest { id: id.into() }).await.expect("CRM customer");
    answer.into_inner().customer.expect("customer")
}

/// Waits until the CRM customer and the Tryton party are linked; returns the golden id.
async fn linked(s: &mut Setup, crm_id: &str, party: i64) -> String {
    let erp_id = format!("party-{party}");
    eventually!("the CRM customer and the Tryton party linked", {
        let found = s.master.get_customer(md::GetCustomerRequest { id: format!("crm:{crm_id}") }).await;
        found
            .ok()
            .and_then(|g| g.into_inner().customer)
            .filter(|g| g.refs.iter().any(|r| r.system == "erp" && r.id == erp_id))
            .map(|g| g.id)
    })
}

#[tokio::test]
async fn crm_names_reach_the_tryton_party_tryton_limits_reach_the_crm_and_tryton_renames_are_written_back() {
    let mut s = start(OnConflict::OwnerWins).await;
    let email = format!("ada-{}@tryton-md.example", unique());
    let party_id = tryton_party(&s, "ADA (typed in Tryton)", &email).await;
    let customer = crm_customer(&mut s, "Ada Lovelace", &email).await;
    linked(&mut s, &customer.id, party_id).await;
    eventually!("the CRM's name on the party", Some(party(&s, party_id).await).filter(|p| p["name"] == "Ada Lovelace"));

    // The CRM renames: Tryton follows.
    let rename = crm::UpdateCustomerRequest {
        id: customer.id.clone(),
        idempotency_key: format!("rename-{}", unique()),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
        name: "Ada King, Countess of Lovelace".into(),
        origin: "crm-user".into(),
        ..Default::default()
    };
    s.crm.update_customer(rename).await.expect("rename in the CRM");
    eventually!(
        "the new name on the Tryton party",
        Some(party(&s, party_id).await).filter(|p| p["name"] == "Ada King, Countess of Lovelace")
    );

    // Tryton raises the credit limit: the CRM shows it.
    let raise = json!({"credit_limit_amount": {"__class__": "Decimal", "decimal": "1500"}});
    s.tryton.call("model.party.party.write", vec![json!([party_id]), raise]).await.expect("limit written in Tryton");
    eventually!(
        "Tryton's limit in the CRM",
        Some(crm_read(&mut s, &customer.id).await).filter(|c| c.credit_limit == "1500.00")
    );

    // Someone renames the party in Tryton, which does not own names: written back.
    s.tryton
        .call("model.party.party.write", vec![json!([party_id]), json!({"name": "Typo Ltd"})])
        .await
        .expect("renamed in Tryton");
    eventually!(
        "the CRM's name written back to Tryton",
        Some(party(&s, party_id).await).filter(|p| p["name"] == "Ada King, Countess of Lovelace")
    );
    assert_eq!(crm_read(&mut s, &customer.id).await.name, "Ada King, Countess of Lovelace");
    s.app.stop_all().await;
}

#[tokio::test]
async fn a_shopper_the_crm_knows_orders_as_the_existing_tryton_party_and_is_exported_then_erased_with_invoices_kept() {
    let mut s = start(OnConflict::OwnerWins).await;
    let run = unique();
    let email = format!("grace-{run}@tryton-md.example");
    let party_id = tryton_party(&s, "G. Hopper", &email).await;
    let customer = crm_customer(&mut s, "Grace Hopper", &email).await;
    let golden = linked(&mut s, &customer.id, party_id).await;

    let shopper = harness::token_for(
        s.app.data_dir.path(),
        &format!("grace-{run}"),
        None,
        Some(&email),
        "orders:read orders:write",
    );
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"},
        "ship_to": {"street": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}});
    let placed = post_json(&s.app.url("/web/v1/orders"), &shopper, &body, Some(&format!("md-{run}"))).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id = placed.body["id"].as_str().expect("id").to_owned();
    harness::wait_for_order(&s.app, &shopper, &format!("/web/v1/orders/{order_id}"), "paid").await;
    let mut orders = OrderToCashServiceClient::new(s.app.grpc_channel(Target::Process));
    let order = orders
        .get_order(o2c::GetOrderRequest { tenant: String::new(), order_id: order_id.clone() })
        .await
        .expect("order")
        .into_inner();
    assert_eq!(order.customer_id, format!("party-{party_id}"), "the saga used the existing Tryton party");

    let sales = s
        .tryton
        .call("model.sale.sale.search", vec![json!([["party", "=", party_id]]), json!(0), json!(10), Value::Null])
        .await
        .expect("sales");
    assert_eq!(sales.as_array().map(Vec::len), Some(1), "one Tryton sale for the party: {sales}");
    let invoices_before = s
        .tryton
        .call("model.account.invoice.search", vec![json!([["party", "=", party_id]]), json!(0), json!(10), Value::Null])
        .await
        .expect("invoices");
    assert!(invoices_before.as_array().is_some_and(|i| !i.is_empty()), "an invoice: {invoices_before}");

    // The export holds every record, in every system.
    let export = s.master.export_customer(md::ExportCustomerRequest { id: golden.clone() }).await.expect("export");
    let document: Value = serde_json::from_str(&export.into_inner().document_json).expect("JSON");
    assert_eq!(document["crm"]["customers"][0]["email"], email.as_str());
    assert_eq!(document["erp"]["customers"][0]["id"], format!("party-{party_id}"));
    assert_eq!(document["erp"]["sales_orders"].as_array().map(Vec::len), Some(1), "{document}");
    assert!(document["erp"]["invoices"].as_array().is_some_and(|i| !i.is_empty()), "{document}");
    assert_eq!(document["erp_connect"]["orders"][0]["id"], order_id.as_str());

    // Erasure: anonymised in Tryton, read back over its own JSON-RPC.
    let erase = md::EraseCustomerRequest { id: golden.clone(), reason: "data-subject request 17".into() };
    let report = s
        .master
        .erase_customer(acting::request(erase, "ops-dpo"))
        .await
        .expect("erase")
        .into_inner()
        .report
        .expect("report");
    let erp = report.systems.iter().find(|r| r.system == "erp").expect("erp report");
    assert_eq!(erp.outcome, "anonymised", "{report:?}");
    assert!(erp.kept.iter().any(|k| k.contains("invoices")), "{erp:?}");
    let after = party(&s, party_id).await;
    assert!(!after["name"].as_str().unwrap_or_default().contains("Grace"), "{after}");
    // Tryton answers booleans as false or 0, by release.
    assert!(after["active"] == json!(false) || after["active"] == json!(0), "deactivated: {after}");
    assert_eq!(after["contact_mechanisms"], json!([]), "{after}");
    let mechanisms = s
        .tryton
        .call(
            "model.party.contact_mechanism.search",
            vec![json!([["value", "ilike", email], ["active", "in", [true, false]]]), json!(0), json!(10), Value::Null],
        )
        .await
        .expect("mechanisms");
    assert_eq!(mechanisms, json!([]), "the e-mail is nowhere in Tryton");
    let invoices_after = s
        .tryton
        .call("model.account.invoice.search", vec![json!([["party", "=", party_id]]), json!(0), json!(10), Value::Null])
        .await
        .expect("invoices");
    assert_eq!(invoices_after, invoices_before, "Tryton keeps the invoices");
    assert!(crm_read(&mut s, &customer.id).await.erased_at.is_some());
    let export = s.master.export_customer(md::ExportCustomerRequest { id: golden }).await.expect("export");
    let text = export.into_inner().document_json;
    assert!(!text.contains(&email) && !text.contains("Grace"), "nothing of the person left: {text}");
    s.app.stop_all().await;
}

#[tokio::test]
async fn under_the_quarantine_policy_a_rename_in_tryton_waits_for_an_operator_who_reverts_it() {
    let mut s = start(OnConflict::Quarantine).await;
    let email = format!("lin-{}@tryton-md.example", unique());
    let party_id = tryton_party(&s, "LIN", &email).await;
    let customer = crm_customer(&mut s, "Lin Chen", &email).await;
    let golden = linked(&mut s, &customer.id, party_id).await;
    eventually!("the CRM's name on the party", Some(party(&s, party_id).await).filter(|p| p["name"] == "Lin Chen"));

    s.tryton
        .call("model.party.party.write", vec![json!([party_id]), json!({"name": "Lin Chen-Weber"})])
        .await
        .expect("renamed in Tryton");
    let held = eventually!("the rename held for review", {
        let list = s.master.list_quarantine(md::ListQuarantineRequest { status: "open".into(), limit: 200 }).await;
        list.expect("list").into_inner().entries.into_iter().find(|e| e.golden_id == golden)
    });
    assert_eq!((held.kind.as_str(), held.field.as_str()), ("conflict", "name"));
    assert_eq!(held.value_json, "\"Lin Chen-Weber\"");
    assert_eq!(party(&s, party_id).await["name"], "Lin Chen-Weber", "held, not written back");

    let revert = md::ResolveQuarantinedRequest { id: held.id, decision: "revert".into(), ..Default::default() };
    s.master.resolve_quarantined(acting::request(revert, "ops-alice")).await.expect("reverted");
    assert_eq!(party(&s, party_id).await["name"], "Lin Chen", "the owner's name is back in Tryton");
    assert_eq!(crm_read(&mut s, &customer.id).await.name, "Lin Chen");
    s.app.stop_all().await;
}
