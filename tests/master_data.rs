//! Customer master data across the embedded CRM and the embedded ERP, in
//! `serve` mode (every tier its own server, gRPC between them): ownership
//! (the CRM owns identity, the ERP the credit limit), both conflict
//! policies, duplicates and an operator's merge, orders resolved through
//! the CRM, and the data-subject export and erasure. The same against a
//! real Tryton is in `tryton_master_data.rs`.

mod harness;

use std::time::{Duration, Instant};

use erp_connect::serve::Target;
use erp_connect_proto::{
    acting,
    crm::v1::{self as crm, crm_service_client::CrmServiceClient},
    erp::v1::{self as erp, customer_service_client::CustomerServiceClient},
    master_data::v1::{self as md, master_data_service_client::MasterDataServiceClient},
    order_to_cash::v1::{self as o2c, order_to_cash_service_client::OrderToCashServiceClient},
};
use harness::{ProcessChannel, Running, post_json, quick_sagas, spawn_serve_with};
use process_apis::master_data::{Config as MasterDataConfig, OnConflict};
use serde_json::json;

struct Clients {
    crm: CrmServiceClient<ProcessChannel>,
    erp: CustomerServiceClient<ProcessChannel>,
    master: MasterDataServiceClient<ProcessChannel>,
}

async fn start(on_conflict: OnConflict) -> (Running, Clients) {
    start_on(on_conflict, None).await
}

/// [`start`] with the process tier's store (and so the cross-reference)
/// at `process_database`.
async fn start_on(on_conflict: OnConflict, process_database: Option<String>) -> (Running, Clients) {
    let app = spawn_serve_with(|config| {
        quick_sagas(config);
        config.process.database_url = process_database;
        let mut master = MasterDataConfig { poll_interval: Duration::from_millis(50), ..Default::default() };
        master.customer.on_conflict = on_conflict;
        config.master_data = Some(master);
    })
    .await;
    let system = app.grpc_channel(Target::System);
    let clients = Clients {
        crm: CrmServiceClient::new(system.clone()),
        erp: CustomerServiceClient::new(system),
        master: MasterDataServiceClient::new(app.grpc_channel(Target::Process)),
    };
    (app, clients)
}

fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

/// Polls `check` until it gives a value, for at most 30 s.
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = $check {
                break value;
            }
            assert!(Instant::now() < deadline, "not in 30 s: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

async fn crm_customer(c: &mut Clients, name: &str, email: &str) -> crm::Customer {
    let request = crm::CreateCustomerRequest {
        idempotency_key: format!("create-{}", unique()),
        name: name.into(),
        email: email.into(),
        phone: "+49 30 1234".into(),
        addresses: vec![crm::Address {
            street: "Unter den Linden 1".into(),
            city: "Berlin".into(),
            postal_code: "10117".into(),
            country: "DE".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.crm.create_customer(request).await.expect("CRM customer").into_inner().customer.expect("customer")
}

async fn erp_customer(c: &mut Clients, name: &str, email: &str, limit: &str) -> erp::Customer {
    let request = erp::CreateCustomerRequest {
        idempotency_key: format!("create-{}", unique()),
        external_id: format!("ext-{}", unique()),
        name: name.into(),
        email: email.into(),
        currency: "EUR".into(),
        credit_limit: limit.into(),
        ..Default::default()
    };
    c.erp.create_customer(request).await.expect("ERP customer").into_inner()
}

async fn erp_read(c: &mut Clients, id: &str) -> erp::Customer {
    c.erp.get_customer(erp::GetCustomerRequest { id: id.into() }).await.expect("ERP customer").into_inner()
}

async fn crm_read(c: &mut Clients, id: &str) -> crm::Customer {
    let answer = c.crm.get_customer(crm::GetCustomerRequest { id: id.into() }).await.expect("CRM customer");
    answer.into_inner().customer.expect("customer")
}

async fn golden(c: &mut Clients, id: &str) -> Option<md::GoldenCustomer> {
    c.master.get_customer(md::GetCustomerRequest { id: id.into() }).await.ok().and_then(|r| r.into_inner().customer)
}

fn has_ref(g: &md::GoldenCustomer, system: &str, id: &str) -> bool {
    g.refs.iter().any(|r| r.system == system && r.id == id)
}

fn field<'a>(g: &'a md::GoldenCustomer, name: &str) -> &'a md::GoldenField {
    g.fields.iter().find(|f| f.field == name).expect("field")
}

async fn rename_in_crm(c: &mut Clients, id: &str, name: &str) {
    let request = crm::UpdateCustomerRequest {
        id: id.into(),
        idempotency_key: format!("rename-{}", unique()),
        update_mask: mask(&["name"]),
        name: name.into(),
        origin: "crm-user".into(),
        ..Default::default()
    };
    c.crm.update_customer(request).await.expect("CRM rename");
}

async fn rename_in_erp(c: &mut Clients, id: &str, name: &str) {
    let request = erp::UpdateCustomerRequest {
        id: id.into(),
        update_mask: mask(&["name"]),
        name: name.into(),
        ..Default::default()
    };
    c.erp.update_customer(request).await.expect("ERP rename");
}

/// A CRM customer and an ERP customer with the same e-mail, linked by the
/// feed and aligned to the owners' values.
async fn linked_pair(c: &mut Clients) -> (crm::Customer, erp::Customer, String) {
    let email = format!("ada-{}@example.com", unique());
    let in_crm = crm_customer(c, "Ada Lovelace", &email).await;
    let in_erp = erp_customer(c, "ADA L.", &email, "100.00").await;
    let golden_id = eventually!("the CRM and the ERP customer linked", {
        golden(c, &format!("crm:{}", in_crm.id))
            .await
            .filter(|g| has_ref(g, "erp", &in_erp.id) && has_ref(g, "crm", &in_crm.id))
            .map(|g| g.id)
    });
    (in_crm, in_erp, golden_id)
}

#[tokio::test]
async fn owners_changes_reach_the_other_system_and_a_non_owners_change_is_written_back() {
    let (app, mut c) = start(OnConflict::OwnerWins).await;
    let (in_crm, in_erp, golden_id) = linked_pair(&mut c).await;

    // Linked: the ERP takes the CRM's name, the CRM the ERP's credit limit.
    eventually!(
        "the CRM's name in the ERP",
        Some(erp_read(&mut c, &in_erp.id).await).filter(|e| e.name == "Ada Lovelace")
    );
    eventually!(
        "the ERP's limit in the CRM",
        Some(crm_read(&mut c, &in_crm.id).await).filter(|x| x.credit_limit == "100.00")
    );

    // A name change in the CRM, the owner, reaches the ERP.
    rename_in_crm(&mut c, &in_crm.id, "Ada King").await;
    eventually!("the new name in the ERP", Some(erp_read(&mut c, &in_erp.id).await).filter(|e| e.name == "Ada King"));

    // A credit-limit change in the ERP, the owner, reaches the CRM.
    let raise = erp::UpdateCreditLimitRequest { id: in_erp.id.clone(), credit_limit: "250".into() };
    c.erp.update_credit_limit(raise).await.expect("raise");
    eventually!(
        "the new limit in the CRM",
        Some(crm_read(&mut c, &in_crm.id).await).filter(|x| x.credit_limit == "250.00")
    );

    // A name change in the ERP, which does not own names, is written back.
    rename_in_erp(&mut c, &in_erp.id, "Somebody Else").await;
    eventually!(
        "the ERP's name written back",
        Some(erp_read(&mut c, &in_erp.id).await).filter(|e| e.name == "Ada King")
    );
    assert_eq!(crm_read(&mut c, &in_crm.id).await.name, "Ada King", "the CRM never saw the non-owner's name");

    // The golden record: each field's value, owner and last change, and the ids.
    let g = golden(&mut c, &golden_id).await.expect("golden record");
    assert_eq!((field(&g, "name").value_json.as_str(), field(&g, "name").owner.as_str()), ("\"Ada King\"", "crm"));
    assert_eq!(field(&g, "credit_limit").owner, "erp");
    assert_eq!(field(&g, "credit_limit").value_json, "\"250.00\"");
    assert!(field(&g, "name").changed_at_ms > 0);
    assert_eq!(golden(&mut c, &format!("erp:{}", in_erp.id)).await.map(|g| g.id), Some(golden_id.clone()));
    let open = c.master.list_quarantine(md::ListQuarantineRequest { status: "open".into(), limit: 0 }).await;
    assert!(
        open.expect("list").into_inner().entries.iter().all(|e| e.golden_id != golden_id),
        "owner_wins holds nothing"
    );

    // The comparison finds the systems agreeing.
    let accuracy = eventually!("a comparison", {
        let resync = c.master.resync(acting::request(md::ResyncRequest {}, "ops-alice")).await.expect("resync");
        assert!(resync.into_inner().links >= 2);
        let a = c.master.get_accuracy(md::GetAccuracyRequest {}).await.expect("accuracy").into_inner();
        (a.compared_at_ms > 0).then_some(a)
    });
    assert!(accuracy.customers_compared >= 1);
    app.stop_all().await;
}

#[tokio::test]
async fn under_the_quarantine_policy_a_non_owners_change_waits_for_an_operator() {
    let (app, mut c) = start(OnConflict::Quarantine).await;
    let (in_crm, in_erp, golden_id) = linked_pair(&mut c).await;
    eventually!("aligned", Some(erp_read(&mut c, &in_erp.id).await).filter(|e| e.name == "Ada Lovelace"));

    rename_in_erp(&mut c, &in_erp.id, "Ada Byron").await;
    let held = eventually!("the conflict held", {
        let list = c.master.list_quarantine(md::ListQuarantineRequest { status: "open".into(), limit: 200 }).await;
        list.expect("list").into_inner().entries.into_iter().find(|e| e.golden_id == golden_id && e.kind == "conflict")
    });
    assert_eq!((held.field.as_str(), held.value_json.as_str()), ("name", "\"Ada Byron\""));
    assert_eq!(held.owner_value_json, "\"Ada Lovelace\"");
    assert_eq!(erp_read(&mut c, &in_erp.id).await.name, "Ada Byron", "held, not reverted");

    // A decision that does not fit a conflict is refused; "accept" makes
    // the value the owner's.
    let wrong = md::ResolveQuarantinedRequest { id: held.id.clone(), decision: "merge".into(), ..Default::default() };
    assert_eq!(c.master.resolve_quarantined(wrong).await.expect_err("refused").code(), tonic::Code::InvalidArgument);
    let accept = md::ResolveQuarantinedRequest {
        id: held.id.clone(),
        decision: "accept".into(),
        reason: "married name".into(),
        ..Default::default()
    };
    let decided = c
        .master
        .resolve_quarantined(acting::request(accept, "ops-alice"))
        .await
        .expect("accept")
        .into_inner()
        .entry
        .expect("entry");
    assert_eq!((decided.status.as_str(), decided.resolved_by.as_str()), ("accepted", "ops-alice"));
    assert_eq!(crm_read(&mut c, &in_crm.id).await.name, "Ada Byron", "accepted into the owner");
    let again = md::ResolveQuarantinedRequest { id: held.id.clone(), decision: "revert".into(), ..Default::default() };
    assert_eq!(c.master.resolve_quarantined(again).await.expect_err("decided").code(), tonic::Code::FailedPrecondition);

    // Another change, reverted by the operator.
    rename_in_erp(&mut c, &in_erp.id, "A. B.").await;
    let held = eventually!("the second conflict held", {
        let list = c.master.list_quarantine(md::ListQuarantineRequest { status: "open".into(), limit: 200 }).await;
        list.expect("list").into_inner().entries.into_iter().find(|e| e.golden_id == golden_id)
    });
    let revert = md::ResolveQuarantinedRequest { id: held.id, decision: "revert".into(), ..Default::default() };
    c.master.resolve_quarantined(revert).await.expect("revert");
    assert_eq!(erp_read(&mut c, &in_erp.id).await.name, "Ada Byron");
    app.stop_all().await;
}

#[tokio::test]
async fn an_ambiguous_duplicate_waits_in_quarantine_and_an_operators_merge_links_it() {
    let (app, mut c) = start(OnConflict::OwnerWins).await;
    let email = format!("twins-{}@example.com", unique());
    let first = crm_customer(&mut c, "Twin One GmbH", &email).await;
    let second = crm_customer(&mut c, "Twin Two GmbH", &email).await;
    // Each has its golden record (reading one makes it) before the ERP
    // customer arrives: it then matches two.
    let target = golden(&mut c, &format!("crm:{}", first.id)).await.expect("first's golden record").id;
    let other = golden(&mut c, &format!("crm:{}", second.id)).await.expect("second's golden record").id;
    assert_ne!(target, other);
    let party = erp_customer(&mut c, "TWIN", &email, "0").await;
    let held = eventually!("the duplicate held", {
        let list = c.master.list_quarantine(md::ListQuarantineRequest { status: "open".into(), limit: 200 }).await;
        list.expect("list")
            .into_inner()
            .entries
            .into_iter()
            .find(|e| e.subject.as_ref().is_some_and(|s| s.id == party.id))
    });
    assert_eq!(held.kind, "duplicate");
    assert_eq!(held.candidates.len(), 2, "{held:?}");
    assert!(held.candidates.contains(&target) && held.candidates.contains(&other), "{held:?}");
    assert_eq!(erp_read(&mut c, &party.id).await.name, "TWIN", "nothing is written while it waits");

    let not_a_candidate = md::ResolveQuarantinedRequest {
        id: held.id.clone(),
        decision: "merge".into(),
        golden_id: "mdc_nope".into(),
        ..Default::default()
    };
    assert_eq!(
        c.master.resolve_quarantined(not_a_candidate).await.expect_err("refused").code(),
        tonic::Code::InvalidArgument
    );
    let merge = md::ResolveQuarantinedRequest {
        id: held.id.clone(),
        decision: "merge".into(),
        golden_id: target.clone(),
        reason: "same company, checked by phone".into(),
    };
    let merged = c
        .master
        .resolve_quarantined(acting::request(merge, "ops-bob"))
        .await
        .expect("merge")
        .into_inner()
        .entry
        .expect("entry");
    assert_eq!((merged.status.as_str(), merged.golden_id.as_str()), ("merged", target.as_str()));
    let g = golden(&mut c, &target).await.expect("golden");
    assert!(has_ref(&g, "erp", &party.id) && has_ref(&g, "crm", &first.id) && !has_ref(&g, "crm", &second.id));
    assert_eq!(erp_read(&mut c, &party.id).await.name, "Twin One GmbH", "aligned to the merged record's owner");
    app.stop_all().await;
}

#[tokio::test]
async fn a_shopper_the_crm_knows_orders_as_one_erp_customer_named_by_the_crm_and_can_be_exported_and_erased() {
    let (app, mut c) = start(OnConflict::OwnerWins).await;
    let run = unique();
    let email = format!("shopper-{run}@example.com");
    let in_crm = crm_customer(&mut c, "Grace Hopper", &email).await;
    let shopper = harness::token_for(
        app.data_dir.path(),
        &format!("shopper-{run}"),
        None,
        Some(&email),
        "orders:read orders:write",
    );
    let body = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"},
        "ship_to": {"street": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}});
    let mut orders = OrderToCashServiceClient::new(app.grpc_channel(Target::Process));
    let mut customers = Vec::new();
    for n in 0..2 {
        let placed = post_json(&app.url("/web/v1/orders"), &shopper, &body, Some(&format!("md-{run}-{n}"))).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        let path = format!("/web/v1/orders/{}", placed.body["id"].as_str().expect("id"));
        harness::wait_for_order(&app, &shopper, &path, "paid").await;
        let request =
            o2c::GetOrderRequest { tenant: String::new(), order_id: placed.body["id"].as_str().expect("id").into() };
        let order = orders.get_order(request).await.expect("order").into_inner();
        customers.push(order.customer_id);
    }
    assert_eq!(customers[0], customers[1], "one ERP customer for both orders");
    let party = erp_read(&mut c, &customers[0]).await;
    assert_eq!(party.name, "Grace Hopper", "created under the CRM's name, not the token's");
    let g = golden(&mut c, &format!("crm:{}", in_crm.id)).await.expect("golden");
    assert!(has_ref(&g, "erp", &party.id), "linked by the order at once: {g:?}");

    // The golden record, as an operator reads it over HTTP.
    let ops = app.token("ops");
    let record = harness::get(&app.url(&format!("/ops/v1/customers/crm:{}", in_crm.id)), Some(&ops)).await;
    assert_eq!(record.status, 200, "{}", record.text);
    assert_eq!(record.body["id"], g.id.as_str());
    assert_eq!(record.body["fields"]["name"]["value"], "Grace Hopper");
    assert_eq!(record.body["fields"]["name"]["owner"], "crm");
    assert_eq!(record.body["ids"]["erp"], party.id.as_str(), "{}", record.text);

    // Export over HTTP: every record, in every system.
    let export = harness::get(&app.url(&format!("/ops/v1/customers/{}/export", g.id)), Some(&ops)).await;
    assert_eq!(export.status, 200, "{}", export.text);
    let document = export.body.clone();
    assert_eq!(document["crm"]["customers"][0]["email"], email);
    assert_eq!(document["erp"]["customers"][0]["id"], party.id);
    assert_eq!(document["erp"]["sales_orders"].as_array().map(Vec::len), Some(2));
    assert!(document["erp"]["invoices"].as_array().is_some_and(|i| !i.is_empty()));
    assert_eq!(document["erp_connect"]["orders"].as_array().map(Vec::len), Some(2));
    assert!(document.to_string().contains(&email));

    // Erase: gone from the CRM, anonymised in the ERP, removed from our orders.
    let erase = post_json(
        &app.url(&format!("/ops/v1/customers/{}/erase", g.id)),
        &ops,
        &json!({"reason": "ticket 4711"}),
        None,
    )
    .await;
    assert_eq!(erase.status, 200, "{}", erase.text);
    let system = |name: &str| {
        let all = erase.body["systems"].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|s| s["system"] == name).unwrap_or_default()
    };
    assert_eq!(system("crm")["outcome"], "erased");
    assert_eq!(system("erp")["outcome"], "anonymised");
    assert_eq!(system("erp-connect")["outcome"], "erased");
    assert!(system("erp")["kept"].to_string().contains("invoices"), "{}", erase.text);
    let after = crm_read(&mut c, &in_crm.id).await;
    assert!(after.erased_at.is_some() && after.name.is_empty() && after.email.is_empty());
    let party = erp_read(&mut c, &party.id).await;
    assert!(!party.name.contains("Grace") && party.email.is_empty(), "{party:?}");
    let export = c.master.export_customer(md::ExportCustomerRequest { id: g.id.clone() }).await.expect("export");
    let document = export.into_inner().document_json;
    assert!(!document.contains(&email) && !document.contains("Grace"), "nothing left: {document}");
    assert!(document.contains("\"sales_orders\":[{"), "the ERP's orders are kept: {document}");
    // Repeating it is safe.
    let erase = md::EraseCustomerRequest { id: g.id.clone(), reason: String::new() };
    c.master.erase_customer(erase).await.expect("erase again");
    app.stop_all().await;
}

#[tokio::test]
async fn the_cross_reference_is_kept_on_disk_and_master_data_resync_rebuilds_it_from_both_systems() {
    let (app, mut c) = start(OnConflict::OwnerWins).await;
    let (in_crm, in_erp, golden_id) = linked_pair(&mut c).await;

    // The links are rows in the process tier's database, which a restart reopens.
    let url = format!("sqlite://{}", app.data_dir.path().join("process.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.expect("process.db");
    let links: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM md_links WHERE customer_id = $1")
        .bind(&golden_id)
        .fetch_one(&db)
        .await
        .expect("links");
    assert_eq!(links, 2, "both ids are in the cross-reference on disk");

    // The cross-reference lost (a restore without it, say): `erp-connect
    // master-data resync` reads both systems again and links the pair.
    sqlx::query("DELETE FROM md_links").execute(&db).await.expect("links deleted");
    sqlx::query("DELETE FROM md_customers").execute(&db).await.expect("golden records deleted");
    db.close().await;
    let process = app.grpc.iter().find(|(t, _)| *t == Target::Process).map(|(_, a)| *a).expect("process tier");
    let out = tokio::process::Command::new(harness::BIN)
        .args(["master-data", "resync", "--process-url", &format!("http://{process}")])
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .env_remove("ERP_CONNECT_CONFIG")
        .output()
        .await
        .expect("master-data resync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("master data resynced: "), "{stdout}");
    let rebuilt = golden(&mut c, &format!("crm:{}", in_crm.id)).await.expect("golden record again");
    assert!(has_ref(&rebuilt, "erp", &in_erp.id), "linked again by e-mail: {rebuilt:?}");
    app.stop_all().await;
}

#[tokio::test]
async fn on_postgresql_one_process_replica_follows_the_feeds_and_owners_changes_still_propagate() {
    let scratch = platform::database::ScratchPostgres::create("master_data_e2e").await;
    let (app, mut c) = start_on(OnConflict::OwnerWins, Some(scratch.url())).await;
    let (in_crm, in_erp, golden_id) = linked_pair(&mut c).await;
    rename_in_crm(&mut c, &in_crm.id, "Ada on PostgreSQL").await;
    eventually!(
        "the new name in the ERP",
        Some(erp_read(&mut c, &in_erp.id).await).filter(|e| e.name == "Ada on PostgreSQL")
    );
    let db = sqlx::PgPool::connect(&scratch.url()).await.expect("postgres");
    let links: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM md_links WHERE customer_id = $1")
        .bind(&golden_id)
        .fetch_one(&db)
        .await
        .expect("links");
    assert_eq!(links, 2);
    db.close().await;
    app.stop_all().await;
}
