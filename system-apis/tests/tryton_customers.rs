//! Updating and erasing a customer, as Tryton itself then holds it: the
//! connector's calls over gRPC, and Tryton's own records read back over
//! its JSON-RPC API (`test_server::rpc_client`), against a real Tryton
//! set up by `deploy/tryton/setup.sh` for this run. The contract suite
//! checks what callers of `erp.v1` read; this checks what stays in the ERP:
//! the party's name, contact mechanisms and addresses, and that its sale
//! and invoice are kept and still point at it.

use erp_connect_proto::erp::v1::{
    Address, CreateCustomerRequest, CreateSalesOrderRequest, EraseCustomerRequest, SalesOrderLine, SalesOrderRequest,
    UpdateCustomerRequest, customer_service_client::CustomerServiceClient,
    sales_order_service_client::SalesOrderServiceClient,
};
use serde_json::{Value, json};
use system_apis::erp::{
    BackendKind, Config,
    backend::tryton::{rpc::Client, test_server},
};

/// The Tryton id of an `erp.v1` id such as `party-7`.
fn tryton_id(id: &str) -> i64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a Tryton id: {id}"))
}

/// `fields` of `model` record `id`, inactive or not (`read` does not hide them).
async fn read(rpc: &Client, model: &str, id: i64, fields: &[&str]) -> Value {
    let records = rpc.call(&format!("model.{model}.read"), vec![json!([id]), json!(fields)]).await.expect("read");
    records[0].clone()
}

/// The ids of `model` records matching `domain`, inactive ones too.
async fn search_all(rpc: &Client, model: &str, domain: Value) -> Vec<i64> {
    let mut context = serde_json::Map::new();
    context.insert("active_test".into(), json!(false));
    let found = rpc
        .call_with_context(
            &format!("model.{model}.search"),
            vec![domain, json!(0), Value::Null, Value::Null],
            Some(&context),
        )
        .await
        .expect("search");
    serde_json::from_value(found).expect("ids")
}

#[tokio::test]
async fn an_updated_then_erased_customer_is_anonymised_in_tryton_and_its_sale_and_invoice_kept() {
    let server = tokio::task::spawn_blocking(|| test_server::config("erp_customers")).await.expect("tryton set up");
    let config = Config { backend: BackendKind::Tryton, tryton: Some(server.clone()), ..Config::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = system_apis::SystemTier::start(&config, &Default::default(), &Default::default(), dir.path())
        .await
        .expect("start");
    let channel = platform::channel::in_process(tier.routes());
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut orders = SalesOrderServiceClient::new(channel);
    let rpc = test_server::rpc_client(&server);
    let unique = ulid::Ulid::new().to_string().to_lowercase();

    let customer = customers
        .create_customer(CreateCustomerRequest {
            idempotency_key: format!("cust-{unique}"),
            external_id: format!("ERASE-{unique}"),
            name: "Erika Mustermann".into(),
            email: format!("erika-{unique}@example.com"),
            addresses: vec![Address {
                street: "Heidestrasse 17".into(),
                city: "Koeln".into(),
                postal_code: "51147".into(),
                country: "DE".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("create customer")
        .into_inner();
    let party = tryton_id(&customer.id);

    let email = format!("erika.m-{unique}@example.org");
    customers
        .update_customer(UpdateCustomerRequest {
            id: customer.id.clone(),
            update_mask: Some(prost_types::FieldMask { paths: vec!["name".into(), "email".into()] }),
            name: "Erika Musterfrau".into(),
            email: email.clone(),
        })
        .await
        .expect("update");
    let record = read(&rpc, "party.party", party, &["name", "contact_mechanisms"]).await;
    assert_eq!(record["name"], "Erika Musterfrau", "{record}");
    let mechanisms: Vec<i64> = serde_json::from_value(record["contact_mechanisms"].clone()).expect("ids");
    let emails = rpc
        .call("model.party.contact_mechanism.read", vec![json!(mechanisms), json!(["type", "value"])])
        .await
        .expect("contact mechanisms");
    let emails: Vec<&Value> = emails.as_array().expect("list").iter().filter(|m| m["type"] == "email").collect();
    assert_eq!(emails.len(), 1, "the e-mail is changed, not added: {emails:?}");
    assert_eq!(emails[0]["value"], email.as_str());

    // A confirmed sale, so that an invoice exists: the erasure must keep both.
    let order = orders
        .create_sales_order(CreateSalesOrderRequest {
            idempotency_key: format!("so-{unique}"),
            customer_id: customer.id.clone(),
            reference: format!("ERASE-{unique}"),
            lines: vec![SalesOrderLine { sku: "WIDGET-1".into(), quantity: 1, ..Default::default() }],
            ..Default::default()
        })
        .await
        .expect("create order")
        .into_inner();
    orders.quote_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
    let order = orders.confirm_sales_order(SalesOrderRequest { id: order.id }).await.expect("confirm").into_inner();
    let invoice = tryton_id(order.invoice_ids.first().expect("a confirmed sale is invoiced"));
    let sale = tryton_id(&order.id);
    let addresses = search_all(&rpc, "party.address", json!([["party", "=", party]])).await;
    assert_eq!(addresses.len(), 1);

    let erased =
        customers.erase_customer(EraseCustomerRequest { id: customer.id.clone() }).await.expect("erase").into_inner();
    let action = |subject: &str| {
        erased
            .actions
            .iter()
            .find(|a| a.subject == subject)
            .unwrap_or_else(|| panic!("{subject}: {:?}", erased.actions))
    };
    assert_eq!((action("invoices").outcome.as_str(), action("invoices").count), ("kept", 1));
    assert_eq!((action("sales_orders").outcome.as_str(), action("sales_orders").count), ("kept", 1));
    assert_eq!((action("addresses").outcome.as_str(), action("addresses").count), ("anonymised", 1));
    assert_eq!(action("contact_mechanisms").count, 1);

    let record = read(&rpc, "party.party", party, &["name", "active", "code", "contact_mechanisms"]).await;
    assert_eq!(record["name"], "Erased customer", "{record}");
    assert!(matches!(record["active"], Value::Bool(false)) || record["active"] == 0, "{record}");
    assert_eq!(record["code"], format!("erased-{party}"), "Tryton requires a code: {record}");
    assert_eq!(search_all(&rpc, "party.contact_mechanism", json!([["party", "=", party]])).await, Vec::<i64>::new());
    for address in search_all(&rpc, "party.address", json!([["party", "=", party]])).await {
        let a = read(&rpc, "party.address", address, &["street", "city", "postal_code", "active"]).await;
        for field in ["street", "city", "postal_code"] {
            assert!(a[field].as_str().is_none_or(str::is_empty), "{field} emptied: {a}");
        }
        assert!(matches!(a["active"], Value::Bool(false)) || a["active"] == 0, "{a}");
    }
    let kept_sale = read(&rpc, "sale.sale", sale, &["party", "invoice_address"]).await;
    assert_eq!(kept_sale["party"], party, "{kept_sale}");
    let kept_invoice = read(&rpc, "account.invoice", invoice, &["party"]).await;
    assert_eq!(kept_invoice["party"], party, "{kept_invoice}");

    // Tryton hides the inactive party from searches, not from the connector.
    let read_back = customers
        .get_customer(erp_connect_proto::erp::v1::GetCustomerRequest { id: customer.id.clone() })
        .await
        .expect("an erased customer is still read")
        .into_inner();
    assert_eq!((read_back.name.as_str(), read_back.email.as_str()), ("Erased customer", ""));
    let again = customers.erase_customer(EraseCustomerRequest { id: customer.id.clone() }).await;
    assert_eq!(again.expect("erasing again").into_inner().customer.expect("customer").name, "Erased customer");
}
