//! The `erp.v1` contract: every rpc, bad input, not-found, idempotent
//! replay and the change feed, as a caller sees them over gRPC. Each test is
//! written once and run against every ERP backend (see the `backend_*`
//! modules at the bottom).
//!
//! Tests may share one ERP (Tryton keeps one database per run), so each
//! creates its own customers and orders, uses its own SKUs, and asserts
//! changes relative to what it read first.

// The workspace's fault proxy: a Tryton that refuses, then comes back.
#[path = "../../tests/harness/faults.rs"]
#[allow(dead_code)] // only part of it is used here
mod faults;

use erp_connect_proto::erp::v1::{
    self as erp, Address, CreateCustomerRequest, CreateSalesOrderRequest, FindCustomerRequest, GetOpenAmountRequest,
    GetProductRequest, GetStockLevelsRequest, InvoiceRequest, ListChangesRequest, ListInvoicesRequest,
    ListProductsRequest, ListSalesOrdersRequest, ListShipmentsRequest, RecordInvoicePaymentRequest, SalesOrderLine,
    SalesOrderRequest, ShipmentRequest, UpdateCreditLimitRequest, UpdateCustomerRequest,
    change_feed_service_client::ChangeFeedServiceClient, customer_service_client::CustomerServiceClient,
    find_customer_request::Key, inventory_service_client::InventoryServiceClient,
    invoice_service_client::InvoiceServiceClient, product_service_client::ProductServiceClient,
    receivables_service_client::ReceivablesServiceClient, sales_order_service_client::SalesOrderServiceClient,
    shipment_service_client::ShipmentServiceClient,
};
use erp_connect_proto::{
    custom_fields::{Definition, Entity, FieldType},
    erp::v1::{CustomValue, custom_value},
};
use platform::channel::GrpcChannel;
use tonic::Code;
use tonic_types::StatusExt;

/// Clients of every `erp.v1` service over one channel.
struct Erp {
    products: ProductServiceClient<GrpcChannel>,
    inventory: InventoryServiceClient<GrpcChannel>,
    customers: CustomerServiceClient<GrpcChannel>,
    orders: SalesOrderServiceClient<GrpcChannel>,
    invoices: InvoiceServiceClient<GrpcChannel>,
    shipments: ShipmentServiceClient<GrpcChannel>,
    receivables: ReceivablesServiceClient<GrpcChannel>,
    changes: ChangeFeedServiceClient<GrpcChannel>,
    capabilities: erp::capabilities_service_client::CapabilitiesServiceClient<GrpcChannel>,
    /// Keeps the backend's files alive for the test.
    _guard: Box<dyn std::any::Any + Send>,
}

impl Erp {
    fn new(channel: GrpcChannel, guard: Box<dyn std::any::Any + Send>) -> Self {
        Self {
            products: ProductServiceClient::new(channel.clone()),
            inventory: InventoryServiceClient::new(channel.clone()),
            customers: CustomerServiceClient::new(channel.clone()),
            orders: SalesOrderServiceClient::new(channel.clone()),
            invoices: InvoiceServiceClient::new(channel.clone()),
            shipments: ShipmentServiceClient::new(channel.clone()),
            receivables: ReceivablesServiceClient::new(channel.clone()),
            changes: ChangeFeedServiceClient::new(channel.clone()),
            capabilities: erp::capabilities_service_client::CapabilitiesServiceClient::new(channel),
            _guard: guard,
        }
    }

    async fn available(&mut self, sku: &str) -> i64 {
        let levels = self
            .inventory
            .get_stock_levels(GetStockLevelsRequest { skus: vec![sku.into()] })
            .await
            .expect("stock levels")
            .into_inner()
            .levels;
        levels[0].available
    }

    async fn on_hand(&mut self, sku: &str) -> i64 {
        let levels = self
            .inventory
            .get_stock_levels(GetStockLevelsRequest { skus: vec![sku.into()] })
            .await
            .expect("stock levels")
            .into_inner()
            .levels;
        levels[0].on_hand
    }

    /// Whether the ERP keeps credit limits (`GetCapabilities`).
    async fn keeps_credit_limits(&mut self) -> bool {
        let caps = self.capabilities.get_capabilities(erp::GetCapabilitiesRequest {}).await.expect("capabilities");
        caps.into_inner().credit_limits
    }

    /// A fresh customer for this test, with an address and a credit limit.
    async fn new_customer(&mut self, tag: &str) -> erp::Customer {
        let unique = ulid::Ulid::new().to_string().to_lowercase();
        self.customers
            .create_customer(CreateCustomerRequest {
                idempotency_key: format!("cust-{unique}"),
                external_id: format!("T-{tag}-{unique}"),
                name: format!("Test customer {tag}"),
                email: format!("{tag}-{unique}@example.com"),
                currency: "EUR".into(),
                credit_limit: "1000.00".into(),
                addresses: vec![Address {
                    street: "Teststrasse 1".into(),
                    city: "Hamburg".into(),
                    postal_code: "20095".into(),
                    country: "DE".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("create customer")
            .into_inner()
    }

    async fn new_order(&mut self, customer: &erp::Customer, lines: &[(&str, i64)]) -> erp::SalesOrder {
        self.orders
            .create_sales_order(order_request(&format!("so-{}", ulid::Ulid::new()), &customer.id, lines))
            .await
            .expect("create order")
            .into_inner()
    }

    async fn confirmed_order(&mut self, customer: &erp::Customer, lines: &[(&str, i64)]) -> erp::SalesOrder {
        let order = self.new_order(customer, lines).await;
        self.orders.quote_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
        self.orders.confirm_sales_order(SalesOrderRequest { id: order.id }).await.expect("confirm").into_inner()
    }

    /// The order's invoice, posted.
    async fn posted_invoice(&mut self, order: &erp::SalesOrder) -> erp::Invoice {
        let id = order.invoice_ids.first().expect("a confirmed order has an invoice").clone();
        self.invoices.post_invoice(InvoiceRequest { id }).await.expect("post").into_inner()
    }

    /// Pays what the invoice still owes.
    async fn pay_in_full(&mut self, invoice: &erp::Invoice) -> erp::Invoice {
        self.invoices
            .record_invoice_payment(RecordInvoicePaymentRequest {
                idempotency_key: format!("pay-{}", ulid::Ulid::new()),
                invoice_id: invoice.id.clone(),
                currency: invoice.currency.clone(),
                amount: invoice.amount_due.clone(),
            })
            .await
            .expect("pay")
            .into_inner()
    }

    async fn credit(&mut self, invoice_id: &str) -> Result<erp::Invoice, tonic::Status> {
        self.invoices.credit_invoice(InvoiceRequest { id: invoice_id.into() }).await.map(tonic::Response::into_inner)
    }

    /// The change feed's cursor at its end, now.
    async fn feed_end(&mut self) -> String {
        let mut cursor = String::new();
        loop {
            let page = self
                .changes
                .list_changes(ListChangesRequest { since_cursor: cursor.clone(), limit: 1000 })
                .await
                .expect("changes")
                .into_inner();
            let done = page.changes.is_empty();
            cursor = page.next_cursor;
            if done {
                return cursor;
            }
        }
    }

    /// The states the change feed reports for `id` after `cursor`.
    async fn states_since(&mut self, cursor: &str, id: &str) -> Vec<String> {
        let page = self
            .changes
            .list_changes(ListChangesRequest { since_cursor: cursor.into(), limit: 1000 })
            .await
            .expect("changes")
            .into_inner();
        page.changes.into_iter().filter(|c| c.id == id).map(|c| c.state).collect()
    }

    async fn open_amount(&mut self, customer_id: &str) -> String {
        self.receivables
            .get_open_amount(GetOpenAmountRequest { customer_id: customer_id.into() })
            .await
            .expect("open amount")
            .into_inner()
            .open_amount
    }

    async fn cancel(&mut self, order_id: &str) -> Result<erp::SalesOrder, tonic::Status> {
        self.orders.cancel_sales_order(SalesOrderRequest { id: order_id.into() }).await.map(tonic::Response::into_inner)
    }

    /// The order is cancelled, its shipments too, and `sku` is available as before.
    async fn assert_unwound(&mut self, order_id: &str, sku: &str, available_before: i64) {
        let order =
            self.orders.get_sales_order(SalesOrderRequest { id: order_id.into() }).await.expect("get").into_inner();
        assert_eq!(order.state, erp::SalesOrderState::Cancelled as i32, "{order:?}");
        assert_eq!(self.available(sku).await, available_before, "stock released");
        let shipments = self
            .shipments
            .list_shipments(ListShipmentsRequest { sales_order_id: order_id.into() })
            .await
            .expect("shipments")
            .into_inner()
            .shipments;
        assert!(shipments.iter().all(|s| s.state == erp::ShipmentState::Cancelled as i32), "{shipments:?}");
    }
}

fn order_request(key: &str, customer_id: &str, lines: &[(&str, i64)]) -> CreateSalesOrderRequest {
    CreateSalesOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer_id.into(),
        reference: format!("ord_{key}"),
        currency: "EUR".into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| SalesOrderLine { sku: (*sku).into(), quantity: *quantity, ..Default::default() })
            .collect(),
        ..Default::default()
    }
}

/// The custom fields every backend of this suite is configured with: Tryton
/// fields outside `erp.v1` (`sale.sale.comment`, `sale.sale.shipping_date`,
/// `sale.line.note`, the read-only `party.party.full_name`); the embedded
/// ERP keeps them by name.
fn custom_fields() -> Vec<Definition> {
    let def = |entity, name: &str, erp_field: &str, field_type, writable| Definition {
        entity,
        name: name.into(),
        erp_field: erp_field.into(),
        field_type,
        writable,
        audiences: vec!["partner".into()],
    };
    vec![
        def(Entity::SalesOrder, "delivery_note", "comment", FieldType::String, true),
        def(Entity::SalesOrder, "ship_by", "shipping_date", FieldType::Date, true),
        def(Entity::OrderLine, "line_note", "note", FieldType::String, true),
        def(Entity::Customer, "display_name", "full_name", FieldType::String, false),
    ]
}

fn string(s: &str) -> CustomValue {
    CustomValue { value: Some(custom_value::Value::StringValue(s.into())) }
}

fn assert_field_violation(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("bad request details").field_violations;
    assert_eq!(violations[0].field, field, "{status:?}");
}

async fn products_are_listed_in_pages_and_found_by_sku(mut erp: Erp) {
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = erp
            .products
            .list_products(ListProductsRequest { page_size: 10, page_token: token })
            .await
            .expect("list")
            .into_inner();
        assert!(page.products.len() <= 10);
        seen.extend(page.products.iter().map(|p| p.sku.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(seen.len() >= 24, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered without repeats: {seen:?}");
    let widget =
        erp.products.get_product(GetProductRequest { sku: "WIDGET-1".into() }).await.expect("get").into_inner();
    let price = widget.list_price.expect("price");
    assert_eq!((price.currency.as_str(), price.amount.as_str()), ("EUR", "12.50"));
    let missing = erp.products.get_product(GetProductRequest { sku: "NO-SUCH-SKU".into() }).await.expect_err("404");
    assert_eq!(missing.code(), Code::NotFound);
    let bad = erp.products.list_products(ListProductsRequest { page_size: 5, page_token: "garbage".into() }).await;
    assert_field_violation(&bad.expect_err("bad token"), "page_token");
}

async fn stock_is_reported_per_warehouse(mut erp: Erp) {
    let levels = erp
        .inventory
        .get_stock_levels(GetStockLevelsRequest { skus: vec!["BOLT-M8".into(), "NO-SUCH-SKU".into()] })
        .await
        .expect("stock")
        .into_inner()
        .levels;
    assert_eq!(levels.len(), 2);
    let mut warehouses: Vec<_> = levels[0].warehouses.iter().map(|w| w.warehouse.as_str()).collect();
    warehouses.sort_unstable();
    assert_eq!(warehouses, ["WH-NORTH", "WH-SOUTH"]);
    assert_eq!(levels[0].on_hand, levels[0].warehouses.iter().map(|w| w.on_hand).sum::<i64>());
    assert!(levels[0].available <= levels[0].on_hand);
    assert_eq!((levels[1].on_hand, levels[1].available), (0, 0));
}

async fn customers_are_created_once_found_and_updated(mut erp: Erp) {
    let seeded = erp
        .customers
        .find_customer(FindCustomerRequest { key: Some(Key::ExternalId("ACME-001".into())) })
        .await
        .expect("seeded customer")
        .into_inner();
    assert_eq!(seeded.name, "ACME Retail GmbH");
    let by_email = erp
        .customers
        .find_customer(FindCustomerRequest { key: Some(Key::Email("PURCHASING@acme.example".into())) })
        .await
        .expect("by e-mail")
        .into_inner();
    assert_eq!(by_email.id, seeded.id);

    let request = CreateCustomerRequest {
        idempotency_key: format!("cust-{}", ulid::Ulid::new()),
        external_id: format!("EXT-{}", ulid::Ulid::new()),
        name: "Replay GmbH".into(),
        email: format!("{}@replay.example", ulid::Ulid::new()),
        addresses: vec![Address { street: "Weg 1".into(), city: "Kiel".into(), ..Default::default() }],
        ..Default::default()
    };
    let first = erp.customers.create_customer(request.clone()).await.expect("create").into_inner();
    let replay = erp.customers.create_customer(request.clone()).await.expect("replay").into_inner();
    assert_eq!(first.id, replay.id, "a replay returns the same customer");
    assert_eq!(first.currency, "EUR");
    assert_eq!(first.addresses.len(), 1);
    let conflict = erp
        .customers
        .create_customer(CreateCustomerRequest { name: "Someone else".into(), ..request })
        .await
        .expect_err("same key, other request");
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let updated = erp
        .customers
        .update_credit_limit(UpdateCreditLimitRequest { id: first.id.clone(), credit_limit: "2500.00".into() })
        .await;
    if erp.keeps_credit_limits().await {
        assert_eq!(updated.expect("credit limit").into_inner().credit_limit, "2500.00");
    } else {
        // Degraded as documented: no limit to set, and none read back.
        assert_eq!(updated.expect_err("no credit limits").code(), Code::FailedPrecondition);
        assert_eq!(first.credit_limit, "");
    }
    let with_address = erp
        .customers
        .add_address(erp::AddAddressRequest {
            customer_id: first.id.clone(),
            address: Some(Address { street: "Zweite 2".into(), city: "Bonn".into(), ..Default::default() }),
        })
        .await
        .expect("address")
        .into_inner();
    assert_eq!(with_address.addresses.len(), 2);

    let bad_email = erp
        .customers
        .create_customer(CreateCustomerRequest {
            idempotency_key: "k".into(),
            name: "X".into(),
            email: "not-an-email".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad e-mail");
    assert_field_violation(&bad_email, "email");
    let missing = erp.customers.get_customer(erp::GetCustomerRequest { id: "cus_nope".into() }).await;
    assert_eq!(missing.expect_err("404").code(), Code::NotFound);
}

/// An `UpdateCustomer` of the fields in `paths`.
fn customer_update(id: &str, paths: &[&str], name: &str, email: &str) -> UpdateCustomerRequest {
    UpdateCustomerRequest {
        id: id.into(),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        name: name.into(),
        email: email.into(),
    }
}

/// The end of the change feed as it is now.
async fn feed_end(erp: &mut Erp) -> String {
    let mut cursor = String::new();
    loop {
        let page = erp
            .changes
            .list_changes(ListChangesRequest { since_cursor: cursor.clone(), limit: 1000 })
            .await
            .expect("changes")
            .into_inner();
        cursor = page.next_cursor;
        if page.changes.is_empty() {
            return cursor;
        }
    }
}

/// Whether the feed after `cursor` reports a change of customer `id`.
async fn feed_shows_customer(erp: &mut Erp, cursor: &str, id: &str) -> bool {
    let page = erp
        .changes
        .list_changes(ListChangesRequest { since_cursor: cursor.to_owned(), limit: 1000 })
        .await
        .expect("changes")
        .into_inner();
    page.changes.iter().any(|c| c.aggregate == erp::Aggregate::Customer as i32 && c.id == id)
}

async fn customers_name_and_email_are_updated(mut erp: Erp) {
    let customer = erp.new_customer("update").await;
    let email = format!("renamed-{}@example.com", ulid::Ulid::new().to_string().to_lowercase());
    let cursor = feed_end(&mut erp).await;
    let updated = erp
        .customers
        .update_customer(customer_update(&customer.id, &["name", "email"], "Renamed GmbH", &email))
        .await
        .expect("update")
        .into_inner();
    assert_eq!((updated.name.as_str(), updated.email.as_str()), ("Renamed GmbH", email.as_str()));
    let read = erp.customers.get_customer(erp::GetCustomerRequest { id: customer.id.clone() }).await.expect("get");
    let read = read.into_inner();
    assert_eq!((read.name.as_str(), read.email.as_str()), ("Renamed GmbH", email.as_str()));
    assert_eq!(read.external_id, customer.external_id, "fields outside the mask stay");
    assert_eq!(read.addresses.len(), customer.addresses.len());
    assert!(feed_shows_customer(&mut erp, &cursor, &customer.id).await, "the update is a change in the feed");
    let found = erp
        .customers
        .find_customer(FindCustomerRequest { key: Some(Key::Email(email.to_uppercase())) })
        .await
        .expect("found by the new e-mail")
        .into_inner();
    assert_eq!(found.id, customer.id);

    // Only the masked field is read: an empty name beside it is ignored.
    let cursor = feed_end(&mut erp).await;
    let without_email =
        erp.customers.update_customer(customer_update(&customer.id, &["email"], "", "")).await.expect("remove e-mail");
    let without_email = without_email.into_inner();
    assert_eq!((without_email.name.as_str(), without_email.email.as_str()), ("Renamed GmbH", ""));
    assert!(feed_shows_customer(&mut erp, &cursor, &customer.id).await, "an e-mail change is a change too");

    for (paths, name, email, field) in [
        (&["phone"][..], "X", "", "update_mask"),
        (&[][..], "X", "", "update_mask"),
        (&["name"][..], " ", "", "name"),
        (&["email"][..], "", "not-an-email", "email"),
    ] {
        let bad = erp.customers.update_customer(customer_update(&customer.id, paths, name, email)).await;
        assert_field_violation(&bad.expect_err("invalid"), field);
    }
    let missing = erp.customers.update_customer(customer_update("cus_nope", &["name"], "X", "")).await;
    assert_eq!(missing.expect_err("unknown id").code(), Code::NotFound);
}

async fn an_erased_customer_is_anonymised_and_its_orders_and_invoices_kept(mut erp: Erp) {
    let customer = erp.new_customer("erase").await;
    let order = erp.confirmed_order(&customer, &[("BOX-S", 1)]).await;
    let invoice_id = order.invoice_ids.first().expect("an invoice").clone();
    let cursor = feed_end(&mut erp).await;
    let erased = erp
        .customers
        .erase_customer(erp::EraseCustomerRequest { id: customer.id.clone() })
        .await
        .expect("erase")
        .into_inner();
    let anonymised = |c: &erp::Customer| {
        assert_eq!(c.id, customer.id);
        assert_eq!(c.name, "Erased customer");
        assert_eq!((c.email.as_str(), c.external_id.as_str()), ("", ""), "{c:?}");
        assert!(c.addresses.is_empty(), "{c:?}");
    };
    anonymised(erased.customer.as_ref().expect("customer"));
    let kept = |subject: &str| {
        erased.actions.iter().find(|a| a.subject == subject && a.outcome == "kept").map(|a| (a.count, a.reason.clone()))
    };
    let (invoices, reason) = kept("invoices").unwrap_or_else(|| panic!("invoices kept: {:?}", erased.actions));
    assert!(invoices >= 1, "{:?}", erased.actions);
    assert_eq!(reason, "retained for bookkeeping (tax law)");
    assert!(kept("sales_orders").is_some_and(|(n, _)| n >= 1), "{:?}", erased.actions);
    assert!(feed_shows_customer(&mut erp, &cursor, &customer.id).await, "the erasure is a change in the feed");

    let read = erp.customers.get_customer(erp::GetCustomerRequest { id: customer.id.clone() }).await.expect("get");
    anonymised(&read.into_inner());
    let kept_order = erp.orders.get_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("order");
    assert_eq!(kept_order.into_inner().customer_id, customer.id);
    let kept_invoice = erp.invoices.get_invoice(InvoiceRequest { id: invoice_id }).await.expect("invoice");
    assert_eq!(kept_invoice.into_inner().customer_id, customer.id);

    let again = erp
        .customers
        .erase_customer(erp::EraseCustomerRequest { id: customer.id.clone() })
        .await
        .expect("erasing again is no error")
        .into_inner();
    anonymised(again.customer.as_ref().expect("customer"));
    let refused = erp
        .customers
        .update_customer(customer_update(&customer.id, &["name"], "Back again", ""))
        .await
        .expect_err("an erased customer is not updated");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let details = refused.get_error_details();
    assert_eq!(details.precondition_failure().expect("precondition details").violations[0].r#type, "ERASED");
    let by_email = erp.customers.find_customer(FindCustomerRequest { key: Some(Key::Email(customer.email.clone())) });
    assert_eq!(by_email.await.expect_err("not found by e-mail").code(), Code::NotFound);
    let by_external =
        erp.customers.find_customer(FindCustomerRequest { key: Some(Key::ExternalId(customer.external_id.clone())) });
    assert_eq!(by_external.await.expect_err("not found by external id").code(), Code::NotFound);
    let missing = erp.customers.erase_customer(erp::EraseCustomerRequest { id: "cus_nope".into() }).await;
    assert_eq!(missing.expect_err("unknown id").code(), Code::NotFound);
}

async fn sales_orders_validate_their_input(mut erp: Erp) {
    let customer = erp.new_customer("validate").await;
    let cases: Vec<(CreateSalesOrderRequest, &str)> = vec![
        (order_request("v1", &customer.id, &[("NO-SUCH-SKU", 1)]), "lines.sku"),
        (order_request("v2", &customer.id, &[("WIDGET-1", 0)]), "lines.quantity"),
        (order_request("v3", &customer.id, &[("WIDGET-1", -3)]), "lines.quantity"),
        (order_request("v4", "cus_unknown", &[("WIDGET-1", 1)]), "customer_id"),
        (order_request("v5", &customer.id, &[]), "lines"),
        (
            CreateSalesOrderRequest {
                lines: vec![SalesOrderLine {
                    sku: "WIDGET-1".into(),
                    quantity: 1,
                    unit_price: "12.123456".into(),
                    ..Default::default()
                }],
                ..order_request("v6", &customer.id, &[])
            },
            "lines.unit_price",
        ),
        (
            CreateSalesOrderRequest {
                idempotency_key: String::new(),
                ..order_request("v7", &customer.id, &[("WIDGET-1", 1)])
            },
            "idempotency_key",
        ),
    ];
    for (request, field) in cases {
        let status = erp.orders.create_sales_order(request).await.expect_err(field);
        assert_field_violation(&status, field);
    }
}

async fn sales_orders_are_idempotent_priced_and_confirmed(mut erp: Erp) {
    let customer = erp.new_customer("order").await;
    let key = format!("so-{}", ulid::Ulid::new());
    let request = order_request(&key, &customer.id, &[("WIDGET-2", 2), ("GADGET-1", 1)]);
    let order = erp.orders.create_sales_order(request.clone()).await.expect("create").into_inner();
    assert_eq!(order.state, erp::SalesOrderState::Draft as i32);
    assert_eq!(order.lines[0].unit_price.parse::<f64>().expect("decimal"), 18.90);
    assert_eq!(order.lines[0].amount, "37.80");
    assert_eq!(order.total, "61.80");
    let lines = |order: &erp::SalesOrder| order.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect::<Vec<_>>();
    let ordered = vec![("WIDGET-2".to_owned(), 2), ("GADGET-1".to_owned(), 1)];
    assert_eq!(lines(&order), ordered, "lines in the order they were given");
    // The first reply was "lost": the same call returns the same order.
    let replay = erp.orders.create_sales_order(request.clone()).await.expect("replay").into_inner();
    assert_eq!(replay.id, order.id);
    let conflict = erp
        .orders
        .create_sales_order(order_request(&key, &customer.id, &[("WIDGET-2", 3)]))
        .await
        .expect_err("same key, other order");
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let not_quoted = erp.orders.confirm_sales_order(SalesOrderRequest { id: order.id.clone() }).await;
    assert_eq!(not_quoted.expect_err("confirm a draft").code(), Code::FailedPrecondition);

    let before = erp.available("WIDGET-2").await;
    let quoted = erp.orders.quote_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
    assert!(!quoted.into_inner().number.is_empty());
    let confirmed =
        erp.orders.confirm_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("confirm").into_inner();
    assert_eq!(confirmed.state, erp::SalesOrderState::Processing as i32);
    assert_eq!(confirmed.invoice_ids.len(), 1);
    assert_eq!(confirmed.shipment_ids.len(), 1);
    assert_eq!(lines(&confirmed), ordered);
    assert_eq!(erp.available("WIDGET-2").await, before - 2, "confirming reserves stock");
    let again =
        erp.orders.confirm_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("confirm twice");
    assert_eq!(again.into_inner().invoice_ids, confirmed.invoice_ids, "a second confirm changes nothing");

    let listed = erp
        .orders
        .list_sales_orders(ListSalesOrdersRequest { customer_id: customer.id.clone(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sales_orders.iter().map(|o| &o.id).collect::<Vec<_>>(), [&order.id]);
    let missing = erp.orders.get_sales_order(SalesOrderRequest { id: "so_missing".into() }).await;
    assert_eq!(missing.expect_err("404").code(), Code::NotFound);
}

async fn cancelling_a_confirmed_order_releases_its_stock(mut erp: Erp) {
    let customer = erp.new_customer("cancel").await;
    let before = erp.available("NUT-M6").await;
    let order = erp.confirmed_order(&customer, &[("NUT-M6", 4)]).await;
    assert_eq!(erp.available("NUT-M6").await, before - 4);
    let cursor = erp.feed_end().await;
    let cancelled =
        erp.orders.cancel_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("cancel").into_inner();
    assert_eq!(cancelled.state, erp::SalesOrderState::Cancelled as i32);
    assert_eq!(erp.available("NUT-M6").await, before, "stock released");
    let shipments = erp
        .shipments
        .list_shipments(ListShipmentsRequest { sales_order_id: order.id.clone() })
        .await
        .expect("shipments")
        .into_inner()
        .shipments;
    assert!(shipments.iter().all(|s| s.state == erp::ShipmentState::Cancelled as i32));
    let states = erp.states_since(&cursor, &order.id).await;
    assert_eq!(states.last().map(String::as_str), Some("cancelled"), "the feed tells: {states:?}");
}

async fn confirming_more_than_the_stock_fails_and_reserves_nothing(mut erp: Erp) {
    let customer = erp.new_customer("short").await;
    let available = erp.available("LADDER-3").await;
    let order = erp.new_order(&customer, &[("LADDER-3", available + 1)]).await;
    erp.orders.quote_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
    let short = erp.orders.confirm_sales_order(SalesOrderRequest { id: order.id.clone() }).await;
    let status = short.expect_err("not enough stock");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    let failure = details.precondition_failure().expect("precondition details");
    assert_eq!(failure.violations[0].r#type, "INSUFFICIENT_STOCK");
    assert_eq!(erp.available("LADDER-3").await, available);
}

async fn invoices_are_posted_and_paid_and_shipments_completed(mut erp: Erp) {
    let customer = erp.new_customer("cash").await;
    let on_hand = erp.on_hand("TAPE-5M").await;
    let order = erp.confirmed_order(&customer, &[("TAPE-5M", 3)]).await;
    let invoices = erp
        .invoices
        .list_invoices(ListInvoicesRequest { sales_order_id: order.id.clone() })
        .await
        .expect("invoices")
        .into_inner()
        .invoices;
    let invoice = &invoices[0];
    assert_eq!(invoice.state, erp::InvoiceState::Draft as i32);
    assert_eq!(invoice.total, order.total);

    let unposted = erp
        .invoices
        .record_invoice_payment(RecordInvoicePaymentRequest {
            idempotency_key: format!("pay-{}", ulid::Ulid::new()),
            invoice_id: invoice.id.clone(),
            currency: "EUR".into(),
            amount: "1.00".into(),
        })
        .await;
    assert_eq!(unposted.expect_err("draft invoice").code(), Code::FailedPrecondition);

    let posted = erp.invoices.post_invoice(InvoiceRequest { id: invoice.id.clone() }).await.expect("post").into_inner();
    assert_eq!(posted.state, erp::InvoiceState::Posted as i32);
    assert!(!posted.number.is_empty());
    let open = erp
        .receivables
        .get_open_amount(GetOpenAmountRequest { customer_id: customer.id.clone() })
        .await
        .expect("open amount")
        .into_inner();
    assert_eq!(open.open_amount, order.total);

    let overpay = erp
        .invoices
        .record_invoice_payment(RecordInvoicePaymentRequest {
            idempotency_key: format!("pay-{}", ulid::Ulid::new()),
            invoice_id: invoice.id.clone(),
            currency: "EUR".into(),
            amount: "100000.00".into(),
        })
        .await;
    assert_eq!(overpay.expect_err("over-payment").code(), Code::FailedPrecondition);

    let payment = RecordInvoicePaymentRequest {
        idempotency_key: format!("pay-{}", ulid::Ulid::new()),
        invoice_id: invoice.id.clone(),
        currency: "EUR".into(),
        amount: order.total.clone(),
    };
    let paid = erp.invoices.record_invoice_payment(payment.clone()).await.expect("pay").into_inner();
    assert_eq!(paid.state, erp::InvoiceState::Paid as i32);
    assert_eq!(paid.amount_due, "0.00");
    let replay = erp.invoices.record_invoice_payment(payment).await.expect("replayed payment").into_inner();
    assert_eq!(replay.state, erp::InvoiceState::Paid as i32, "a replay records nothing more");
    let open = erp
        .receivables
        .get_open_amount(GetOpenAmountRequest { customer_id: customer.id.clone() })
        .await
        .expect("open amount")
        .into_inner();
    assert_eq!(open.open_amount, "0.00");

    let shipment_id = order.shipment_ids[0].clone();
    let shipped =
        erp.shipments.complete_shipment(ShipmentRequest { id: shipment_id.clone() }).await.expect("ship").into_inner();
    assert_eq!(shipped.state, erp::ShipmentState::Done as i32);
    assert_eq!(erp.on_hand("TAPE-5M").await, on_hand - 3, "stock left the warehouse");
    erp.shipments.complete_shipment(ShipmentRequest { id: shipment_id }).await.expect("ship twice");
    assert_eq!(erp.on_hand("TAPE-5M").await, on_hand - 3, "shipping twice moves nothing");
    let done = erp.orders.get_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("get").into_inner();
    assert_eq!(done.state, erp::SalesOrderState::Done as i32);
    let late_cancel = erp.orders.cancel_sales_order(SalesOrderRequest { id: order.id }).await;
    assert_eq!(late_cancel.expect_err("shipped").code(), Code::FailedPrecondition);
}

async fn the_change_feed_reports_changes_after_a_cursor(mut erp: Erp) {
    // Start from the end of the feed as it is now.
    let mut cursor = String::new();
    loop {
        let page = erp
            .changes
            .list_changes(ListChangesRequest { since_cursor: cursor.clone(), limit: 1000 })
            .await
            .expect("changes")
            .into_inner();
        let done = page.changes.is_empty();
        cursor = page.next_cursor;
        if done {
            break;
        }
    }
    let customer = erp.new_customer("feed").await;
    let order = erp.confirmed_order(&customer, &[("BOX-S", 1)]).await;
    if erp.keeps_credit_limits().await {
        erp.customers
            .update_credit_limit(UpdateCreditLimitRequest { id: customer.id.clone(), credit_limit: "10.00".into() })
            .await
            .expect("credit limit");
    }
    let page = erp
        .changes
        .list_changes(ListChangesRequest { since_cursor: cursor.clone(), limit: 1000 })
        .await
        .expect("changes")
        .into_inner();
    let seen = |aggregate: erp::Aggregate, id: &str| {
        page.changes.iter().any(|c| c.aggregate == aggregate as i32 && c.id == id)
    };
    assert!(seen(erp::Aggregate::Customer, &customer.id), "{:?}", page.changes);
    assert!(seen(erp::Aggregate::SalesOrder, &order.id), "{:?}", page.changes);
    assert!(seen(erp::Aggregate::Invoice, &order.invoice_ids[0]), "{:?}", page.changes);
    assert!(seen(erp::Aggregate::Shipment, &order.shipment_ids[0]), "{:?}", page.changes);
    assert_ne!(page.next_cursor, cursor);
    let after = erp
        .changes
        .list_changes(ListChangesRequest { since_cursor: page.next_cursor.clone(), limit: 1000 })
        .await
        .expect("changes")
        .into_inner();
    assert!(after.changes.iter().all(|c| c.id != order.id || c.state != "processing"), "resumes after the cursor");
    let bad = erp.changes.list_changes(ListChangesRequest { since_cursor: "garbage!".into(), limit: 10 }).await;
    assert_field_violation(&bad.expect_err("bad cursor"), "since_cursor");
}

async fn crediting_a_posted_invoice_lets_its_order_be_cancelled(mut erp: Erp) {
    let customer = erp.new_customer("credit").await;
    let available = erp.available("GLOVE-L").await;
    let open_before = erp.open_amount(&customer.id).await;
    let order = erp.confirmed_order(&customer, &[("GLOVE-L", 2)]).await;
    let invoice = erp.posted_invoice(&order).await;
    assert_eq!(erp.open_amount(&customer.id).await, order.total);
    let refused = erp.cancel(&order.id).await.expect_err("a posted invoice stands in the way");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let credited = erp.credit(&invoice.id).await.expect("credit");
    assert_eq!(credited.state, erp::InvoiceState::Cancelled as i32);
    assert_eq!(credited.amount_due, "0.00");
    assert_eq!((credited.id.as_str(), credited.total.as_str()), (invoice.id.as_str(), invoice.total.as_str()));
    assert_eq!(erp.credit(&invoice.id).await.expect("credit twice"), credited, "a second credit changes nothing");
    let read = erp.invoices.get_invoice(InvoiceRequest { id: invoice.id.clone() }).await.expect("get").into_inner();
    assert_eq!(read, credited);
    assert_eq!(erp.open_amount(&customer.id).await, open_before, "the credited invoice is not open");

    let cursor = erp.feed_end().await;
    let cancelled = erp.cancel(&order.id).await.expect("cancel once credited");
    assert_eq!(cancelled.state, erp::SalesOrderState::Cancelled as i32);
    erp.assert_unwound(&order.id, "GLOVE-L", available).await;
    let states = erp.states_since(&cursor, &order.id).await;
    assert_eq!(states.last().map(String::as_str), Some("cancelled"), "the feed tells: {states:?}");
    assert_eq!(erp.cancel(&order.id).await.expect("cancel twice").state, erp::SalesOrderState::Cancelled as i32);
}

async fn crediting_a_paid_invoice_lets_its_order_be_cancelled(mut erp: Erp) {
    let customer = erp.new_customer("credit-paid").await;
    let available = erp.available("HELMET-1").await;
    let open_before = erp.open_amount(&customer.id).await;
    let order = erp.confirmed_order(&customer, &[("HELMET-1", 3)]).await;
    let invoice = erp.posted_invoice(&order).await;
    let paid = erp.pay_in_full(&invoice).await;
    assert_eq!(paid.state, erp::InvoiceState::Paid as i32);
    let refused = erp.cancel(&order.id).await.expect_err("a paid invoice stands in the way");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let cursor = erp.feed_end().await;
    let credited = erp.credit(&invoice.id).await.expect("credit");
    assert_eq!(credited.state, erp::InvoiceState::Cancelled as i32);
    assert_eq!(credited.amount_due, "0.00");
    assert_eq!(erp.credit(&invoice.id).await.expect("credit twice"), credited, "a second credit changes nothing");
    assert_eq!(erp.open_amount(&customer.id).await, open_before, "nothing stays open, either way");
    let states = erp.states_since(&cursor, &invoice.id).await;
    assert_eq!(states.last().map(String::as_str), Some("cancelled"), "the feed tells: {states:?}");

    let cancelled = erp.cancel(&order.id).await.expect("cancel once credited");
    assert_eq!(cancelled.state, erp::SalesOrderState::Cancelled as i32);
    erp.assert_unwound(&order.id, "HELMET-1", available).await;
    let invoices = erp
        .invoices
        .list_invoices(ListInvoicesRequest { sales_order_id: order.id.clone() })
        .await
        .expect("invoices")
        .into_inner()
        .invoices;
    assert_eq!(invoices, [credited]);
}

async fn crediting_a_partly_paid_invoice_leaves_nothing_open(mut erp: Erp) {
    let customer = erp.new_customer("credit-partly").await;
    let available = erp.available("GLOVE-M").await;
    let open_before = erp.open_amount(&customer.id).await;
    let order = erp.confirmed_order(&customer, &[("GLOVE-M", 2)]).await;
    let invoice = erp.posted_invoice(&order).await;
    let partly = erp
        .invoices
        .record_invoice_payment(RecordInvoicePaymentRequest {
            idempotency_key: format!("pay-{}", ulid::Ulid::new()),
            invoice_id: invoice.id.clone(),
            currency: invoice.currency.clone(),
            amount: "5.00".into(),
        })
        .await
        .expect("a partial payment")
        .into_inner();
    assert_eq!(partly.state, erp::InvoiceState::Posted as i32);

    let cursor = erp.feed_end().await;
    let credited = erp.credit(&invoice.id).await.expect("credit");
    assert_eq!((credited.state, credited.amount_due.as_str()), (erp::InvoiceState::Cancelled as i32, "0.00"));
    assert_eq!(erp.credit(&invoice.id).await.expect("credit twice"), credited);
    assert_eq!(erp.open_amount(&customer.id).await, open_before, "neither the rest nor the part paid stays open");
    // Feed consumers (the order-to-cash saga) must not read "paid" here.
    let states = erp.states_since(&cursor, &invoice.id).await;
    assert_eq!(states.last().map(String::as_str), Some("cancelled"), "{states:?}");
    assert!(!states.iter().any(|s| s == "paid"), "{states:?}");
    erp.cancel(&order.id).await.expect("cancel once credited");
    erp.assert_unwound(&order.id, "GLOVE-M", available).await;
}

async fn crediting_a_draft_or_unknown_invoice_is_refused(mut erp: Erp) {
    let customer = erp.new_customer("credit-draft").await;
    let order = erp.confirmed_order(&customer, &[("GOGGLE-1", 1)]).await;
    let status = erp.credit(&order.invoice_ids[0]).await.expect_err("a draft");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.precondition_failure().expect("precondition details").violations[0].r#type, "NOT_POSTED");
    let draft =
        erp.invoices.get_invoice(InvoiceRequest { id: order.invoice_ids[0].clone() }).await.expect("get").into_inner();
    assert_eq!(draft.state, erp::InvoiceState::Draft as i32, "a refused credit changes nothing");
    assert_eq!(erp.credit("inv_no_such").await.expect_err("unknown").code(), Code::NotFound);
    assert_field_violation(&erp.credit("").await.expect_err("no id"), "id");
    // A draft's order is cancelled directly, and the draft with it.
    erp.cancel(&order.id).await.expect("cancel");
}

async fn a_shipped_orders_invoice_is_credited_but_the_order_stays(mut erp: Erp) {
    let customer = erp.new_customer("credit-shipped").await;
    let order = erp.confirmed_order(&customer, &[("LEVEL-60", 1)]).await;
    let invoice = erp.posted_invoice(&order).await;
    erp.shipments.complete_shipment(ShipmentRequest { id: order.shipment_ids[0].clone() }).await.expect("ship");
    let credited = erp.credit(&invoice.id).await.expect("credit after shipping");
    assert_eq!((credited.state, credited.amount_due.as_str()), (erp::InvoiceState::Cancelled as i32, "0.00"));
    let refused = erp.cancel(&order.id).await.expect_err("shipped");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let details = refused.get_error_details();
    assert_eq!(details.precondition_failure().expect("details").violations[0].r#type, "ALREADY_SHIPPED");
}

/// The process tier checks credit before it creates an order, so the ERP
/// confirms an order over the customer's credit limit (Tryton's
/// sale_credit_limit warns; the connector answers the warning).
async fn an_order_over_the_credit_limit_is_still_confirmed(mut erp: Erp) {
    let customer = erp.new_customer("credit-limit").await;
    if erp.keeps_credit_limits().await {
        let small = erp
            .customers
            .update_credit_limit(UpdateCreditLimitRequest { id: customer.id.clone(), credit_limit: "10.00".into() })
            .await
            .expect("credit limit")
            .into_inner();
        assert_eq!(small.credit_limit, "10.00");
    }
    let order = erp.confirmed_order(&customer, &[("CABLE-25", 1)]).await;
    assert!(order.total.parse::<f64>().expect("decimal") > 10.0, "{}", order.total);
    assert_eq!(order.state, erp::SalesOrderState::Processing as i32);
    assert_eq!((order.invoice_ids.len(), order.shipment_ids.len()), (1, 1));
}

/// The embedded ERP's write transactions see no concurrent write (SQLite's
/// `BEGIN IMMEDIATE`, PostgreSQL's advisory lock): orders racing for the
/// last units never oversell, and an order confirmed by racing duplicates
/// reserves once. (Tryton checks stock before confirming, but not atomically
/// with it, so this is not part of the contract every backend passes.)
async fn racing_confirmations_never_oversell(mut erp: Erp) {
    let customer = erp.new_customer("race").await;
    let available = erp.available("WIDGET-1").await;
    assert!(available >= 2, "the seed has WIDGET-1 in stock");
    let mut orders = Vec::new();
    for _ in 0..(available / 2 + 2) {
        let order = erp.new_order(&customer, &[("WIDGET-1", 2)]).await;
        erp.orders.quote_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
        orders.push(order.id);
    }
    let mut racing = tokio::task::JoinSet::new();
    for id in orders.iter().chain(&orders) {
        let (mut client, id) = (erp.orders.clone(), id.clone());
        racing.spawn(async move { client.confirm_sales_order(SalesOrderRequest { id }).await });
    }
    let mut refused = 0;
    while let Some(result) = racing.join_next().await {
        match result.expect("task") {
            Ok(_) => {}
            Err(status) if status.code() == Code::FailedPrecondition => refused += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    let mut confirmed = 0;
    for id in &orders {
        let order = erp.orders.get_sales_order(SalesOrderRequest { id: id.clone() }).await.expect("get").into_inner();
        if order.state == erp::SalesOrderState::Processing as i32 {
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, available / 2, "as many orders as the stock serves");
    assert_eq!(refused, 2 * (orders.len() - confirmed as usize), "each other confirmation was refused");
    assert_eq!(erp.available("WIDGET-1").await, available - 2 * confirmed, "reserved once per confirmed order");
}

/// The ERP says what it is, and keeps what it says: with credit limits a
/// new customer's limit is read back; without, it is empty and cannot be
/// set, as the contract documents.
async fn the_erp_says_what_it_is_and_keeps_it(mut erp: Erp) {
    let caps =
        erp.capabilities.get_capabilities(erp::GetCapabilitiesRequest {}).await.expect("capabilities").into_inner();
    assert!(matches!(caps.backend.as_str(), "embedded" | "tryton"), "{caps:?}");
    assert!(!caps.release.is_empty(), "{caps:?}");
    if caps.backend == "tryton" {
        assert!(caps.modules.iter().any(|m| m == "sale"), "{caps:?}");
        let credit_module = caps.modules.iter().any(|m| m == "sale_credit_limit" || m == "account_credit_limit");
        assert_eq!(caps.credit_limits, credit_module, "{caps:?}");
    }
    let customer = erp.new_customer("caps").await;
    let update = UpdateCreditLimitRequest { id: customer.id.clone(), credit_limit: "750.00".into() };
    let updated = erp.customers.update_credit_limit(update).await;
    if caps.credit_limits {
        assert_eq!(updated.expect("credit limit set").into_inner().credit_limit, "750.00");
    } else {
        assert_eq!(updated.expect_err("no credit limits").code(), Code::FailedPrecondition);
        assert_eq!(customer.credit_limit, "", "{customer:?}");
    }
}

async fn custom_fields_are_written_and_read_back(mut erp: Erp) {
    let customer = erp.new_customer("custom").await;
    let date = CustomValue { value: Some(custom_value::Value::DateValue("2030-01-31".into())) };
    let mut request = order_request(&format!("cf-{}", ulid::Ulid::new()), &customer.id, &[("WIDGET-1", 1)]);
    request.custom_fields =
        [("delivery_note".to_owned(), string("Gate 4, ask for Ana")), ("ship_by".to_owned(), date.clone())].into();
    request.lines[0].custom_fields = [("line_note".to_owned(), string("gift wrap"))].into();
    let order = erp.orders.create_sales_order(request.clone()).await.expect("create").into_inner();
    assert_eq!(order.custom_fields.get("delivery_note"), Some(&string("Gate 4, ask for Ana")), "{order:?}");
    assert_eq!(order.custom_fields.get("ship_by"), Some(&date));
    assert_eq!(order.lines[0].custom_fields.get("line_note"), Some(&string("gift wrap")));
    let read = erp.orders.get_sales_order(SalesOrderRequest { id: order.id.clone() }).await.expect("get").into_inner();
    assert_eq!(read.custom_fields, order.custom_fields);
    // A replay matches whatever order the map's entries are encoded in.
    let replay = erp.orders.create_sales_order(request.clone()).await.expect("replay").into_inner();
    assert_eq!(replay.id, order.id);
    let mut other = request.clone();
    other.custom_fields.insert("delivery_note".into(), string("another note"));
    let conflict = erp.orders.create_sales_order(other).await.expect_err("same key, other custom fields");
    assert_eq!(conflict.code(), Code::AlreadyExists);

    let refused = |custom: &[(&str, CustomValue)]| {
        let mut r = order_request(&format!("cf-{}", ulid::Ulid::new()), &customer.id, &[("WIDGET-1", 1)]);
        r.custom_fields = custom.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
        r
    };
    let wrong_type = CustomValue { value: Some(custom_value::Value::IntegerValue(20300131)) };
    for (request, what) in [
        (refused(&[("no_such_field", string("x"))]), "no_such_field"),
        (refused(&[("ship_by", wrong_type)]), "ship_by"),
        (
            refused(&[("ship_by", CustomValue { value: Some(custom_value::Value::DateValue("2030-02-30".into())) })]),
            "ship_by",
        ),
    ] {
        let status = erp.orders.create_sales_order(request).await.expect_err(what);
        assert_field_violation(&status, "custom_fields");
        assert!(status.message().contains(what), "{status:?}");
    }
    let read_only = CreateCustomerRequest {
        idempotency_key: format!("cust-{}", ulid::Ulid::new()),
        name: "Read only".into(),
        custom_fields: [("display_name".to_owned(), string("x"))].into(),
        ..Default::default()
    };
    let status = erp.customers.create_customer(read_only).await.expect_err("read-only field");
    assert_field_violation(&status, "custom_fields");
    assert!(status.message().contains("read-only"), "{status:?}");

    let caps = erp.capabilities.get_capabilities(erp::GetCapabilitiesRequest {}).await.expect("caps").into_inner();
    let listed: Vec<_> = caps.custom_fields.iter().map(|d| (d.entity.as_str(), d.name.as_str(), d.writable)).collect();
    assert!(listed.contains(&("sales_order", "delivery_note", true)), "{listed:?}");
    assert!(listed.contains(&("customer", "display_name", false)), "{listed:?}");
}

/// The system tier's ERP config of every backend: the defaults with [`custom_fields`].
fn config() -> system_apis::erp::Config {
    system_apis::erp::Config { custom_fields: custom_fields(), ..Default::default() }
}

/// Defines one `#[tokio::test]` per contract test for a backend.
macro_rules! contract_suite {
    ($setup:path) => {
        contract_suite!(@tests $setup;
            products_are_listed_in_pages_and_found_by_sku,
            stock_is_reported_per_warehouse,
            customers_are_created_once_found_and_updated,
            customers_name_and_email_are_updated,
            an_erased_customer_is_anonymised_and_its_orders_and_invoices_kept,
            sales_orders_validate_their_input,
            sales_orders_are_idempotent_priced_and_confirmed,
            cancelling_a_confirmed_order_releases_its_stock,
            confirming_more_than_the_stock_fails_and_reserves_nothing,
            invoices_are_posted_and_paid_and_shipments_completed,
            the_change_feed_reports_changes_after_a_cursor,
            crediting_a_posted_invoice_lets_its_order_be_cancelled,
            crediting_a_paid_invoice_lets_its_order_be_cancelled,
            crediting_a_partly_paid_invoice_leaves_nothing_open,
            crediting_a_draft_or_unknown_invoice_is_refused,
            a_shipped_orders_invoice_is_credited_but_the_order_stays,
            an_order_over_the_credit_limit_is_still_confirmed,
            the_erp_says_what_it_is_and_keeps_it,
            custom_fields_are_written_and_read_back,
        );
    };
    (@tests $setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name($setup().await).await;
            }
        )*
    };
}

/// The embedded reference ERP on SQLite, a fresh database per test.
mod backend_embedded {
    use super::Erp;

    async fn setup() -> Erp {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier =
            system_apis::SystemTier::start(&super::config(), &Default::default(), &Default::default(), dir.path())
                .await
                .expect("start");
        Erp::new(platform::channel::in_process(tier.routes()), Box::new(dir))
    }

    contract_suite!(setup);

    #[tokio::test]
    async fn racing_confirmations_never_oversell() {
        super::racing_confirmations_never_oversell(setup().await).await;
    }
}

/// The embedded reference ERP on PostgreSQL (127.0.0.1:5432, user postgres,
/// trust): a fresh database per test, dropped when the test ends, so tests
/// run in parallel and leave nothing behind.
mod backend_embedded_postgres {
    use sqlx::{Connection, Executor, PgConnection};

    use super::Erp;

    const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

    /// Drops its database when dropped, even when the test panicked.
    struct Scratch(String);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let name = self.0.clone();
            // Drop cannot await, and the test's runtime cannot be blocked on:
            // a thread with a runtime of its own does it. FORCE ends the
            // tier's pooled connections that may still be open.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async {
                    let mut conn = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
                    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(_))) {
                eprintln!("could not drop test database {}: {dropped:?}", self.0);
            }
        }
    }

    async fn setup() -> Erp {
        let name = format!("erp_contract_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut admin =
            PgConnection::connect(&format!("{SERVER}/postgres")).await.expect("PostgreSQL at 127.0.0.1:5432");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
        let scratch = Scratch(name.clone());
        let config = system_apis::erp::Config { database_url: Some(format!("{SERVER}/{name}")), ..super::config() };
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = system_apis::SystemTier::start(&config, &Default::default(), &Default::default(), dir.path())
            .await
            .expect("start");
        Erp::new(platform::channel::in_process(tier.routes()), Box::new((dir, scratch)))
    }

    contract_suite!(setup);

    #[tokio::test]
    async fn racing_confirmations_never_oversell() {
        super::racing_confirmations_never_oversell(setup().await).await;
    }
}

/// The clients of a system tier over the Tryton that `server` sets up (a
/// blocking call to `deploy/tryton/setup.sh`, once per process and server).
async fn tryton_erp(server: fn() -> system_apis::erp::backend::tryton::Config) -> Erp {
    use system_apis::erp::{BackendKind, Config};
    // Connector errors are logged, not sent to callers: show them on failure.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let server = tokio::task::spawn_blocking(server).await.expect("setup");
    let config = Config { backend: BackendKind::Tryton, tryton: Some(server), ..config() };
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = system_apis::SystemTier::start(&config, &Default::default(), &Default::default(), dir.path())
        .await
        .expect("start");
    Erp::new(platform::channel::in_process(tier.routes()), Box::new(dir))
}

/// The same contract against a Tryton with only the `sale` module (and its
/// dependencies), as many installations run it: no credit limits, which
/// the capability-dependent tests assert degrade as documented.
mod backend_tryton_sale_only {
    use system_apis::erp::backend::tryton::test_server;

    use super::Erp;

    async fn setup() -> Erp {
        super::tryton_erp(|| test_server::sale_only_config("erp_contract_sale")).await
    }

    contract_suite!(setup);
}

/// The same contract against the latest Tryton 8.x release on PyPI, with
/// the demo modules.
mod backend_tryton_latest {
    use system_apis::erp::backend::tryton::test_server;

    use super::Erp;

    async fn setup() -> Erp {
        super::tryton_erp(|| test_server::latest_config("erp_contract_latest")).await
    }

    contract_suite!(setup);
}

/// A real Tryton server, set up once per test run by the project's
/// `deploy/tryton/setup.sh` (see `tryton::test_server`), shared by the
/// tests and stopped and dropped when the run ends.
mod backend_tryton {
    use system_apis::erp::{BackendKind, Config, backend::tryton};

    use super::{Erp, ListChangesRequest, erp};

    fn config(url: Option<&str>) -> Config {
        let mut server = tryton::test_server::config("erp_contract");
        if let Some(url) = url {
            server.url = url.to_owned();
        }
        Config { backend: BackendKind::Tryton, tryton: Some(server), ..Config::default() }
    }

    async fn setup() -> Erp {
        super::tryton_erp(|| tryton::test_server::config("erp_contract")).await
    }

    contract_suite!(setup);

    /// A customer a Tryton user creates in Tryton itself, over Tryton's own
    /// JSON-RPC API, shows up in the change feed.
    #[tokio::test]
    async fn a_change_made_in_tryton_itself_reaches_the_change_feed() {
        let config = tokio::task::spawn_blocking(|| config(None)).await.expect("setup");
        let t = config.tryton.clone().expect("tryton");
        let mut erp = setup().await;
        let mut cursor = String::new();
        loop {
            let page = erp
                .changes
                .list_changes(ListChangesRequest { since_cursor: cursor.clone(), limit: 1000 })
                .await
                .expect("changes")
                .into_inner();
            cursor = page.next_cursor;
            if page.changes.is_empty() {
                break;
            }
        }
        let user = tryton::rpc::Client::new(tryton::rpc::Settings {
            url: t.url,
            database: t.database,
            username: t.username,
            password: std::fs::read_to_string(&t.password_file).expect("password").trim().to_owned(),
            timeout: std::time::Duration::from_secs(30),
        })
        .expect("client");
        let created = user
            .call("model.party.party.create", vec![serde_json::json!([{"name": "Made in Tryton"}])])
            .await
            .expect("party.create");
        let id = format!("party-{}", created[0].as_i64().expect("id"));
        let page = erp
            .changes
            .list_changes(ListChangesRequest { since_cursor: cursor, limit: 1000 })
            .await
            .expect("changes")
            .into_inner();
        assert!(
            page.changes.iter().any(|c| c.aggregate == erp::Aggregate::Customer as i32 && c.id == id),
            "{id} not in {:?}",
            page.changes
        );
    }

    /// A create whose answer was lost and whose request landed after the
    /// retry had made the sale again (held up by a partition, say) leaves a
    /// twin: a draft with the same marker. Quoting the order's sale deletes
    /// it, and the key still answers the order's sale.
    #[tokio::test]
    async fn a_create_that_lands_late_leaves_the_order_one_sale() {
        let config = tokio::task::spawn_blocking(|| config(None)).await.expect("setup");
        let t = config.tryton.clone().expect("tryton");
        let mut erp = setup().await;
        let customer = erp.new_customer("twin").await;
        let key = format!("so-{}", ulid::Ulid::new());
        let request = super::order_request(&key, &customer.id, &[("GADGET-1", 1)]);
        let order = erp.orders.create_sales_order(request.clone()).await.expect("create").into_inner();
        let sale: i64 = order.id.strip_prefix("sale-").and_then(|id| id.parse().ok()).expect("sale id");
        let user = tryton::rpc::Client::new(tryton::rpc::Settings {
            url: t.url,
            database: t.database,
            username: t.username,
            password: std::fs::read_to_string(&t.password_file).expect("password").trim().to_owned(),
            timeout: std::time::Duration::from_secs(30),
        })
        .expect("client");
        // The late request: the same sale, marker and all, made again.
        let read = user
            .call("model.sale.sale.read", vec![serde_json::json!([sale]), serde_json::json!(["description"])])
            .await
            .expect("read");
        let marker = read[0]["description"].as_str().expect("marker").to_owned();
        user.call("model.sale.sale.copy", vec![serde_json::json!([sale]), serde_json::json!({"description": marker})])
            .await
            .expect("copy");
        let marked = || async {
            let found = user
                .call("model.sale.sale.search", vec![serde_json::json!([["description", "=", marker.clone()]])])
                .await
                .expect("search");
            found.as_array().map_or(0, Vec::len)
        };
        assert_eq!(marked().await, 2, "the twin is there");
        erp.orders.quote_sales_order(super::SalesOrderRequest { id: order.id.clone() }).await.expect("quote");
        assert_eq!(marked().await, 1, "the order has one sale in Tryton");
        let replay = erp.orders.create_sales_order(request).await.expect("replay").into_inner();
        assert_eq!(replay.id, order.id);
    }

    #[tokio::test]
    async fn a_down_erp_is_unavailable_then_the_breaker_opens_and_recovers() {
        use system_apis::erp::{
            Connector,
            resilience::{BreakerState, Policy, Resilient},
        };
        let real = tokio::task::spawn_blocking(|| config(None)).await.expect("setup");
        let real_addr = real.tryton.as_ref().expect("tryton").url.trim_start_matches("http://").to_owned();
        // Tryton down: the fault proxy in front of it resets every connection.
        let proxy = crate::faults::FaultProxy::start(real_addr.parse().expect("host:port"));
        proxy.set(crate::faults::Fault::Reset);
        let down = config(Some(&format!("http://{}", proxy.addr())));

        // Through the gRPC service, a caller sees UNAVAILABLE.
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = system_apis::SystemTier::start(&down, &Default::default(), &Default::default(), dir.path())
            .await
            .expect("start");
        let status = erp_connect_proto::erp::v1::product_service_client::ProductServiceClient::new(
            platform::channel::in_process(tier.routes()),
        )
        .get_product(erp_connect_proto::erp::v1::GetProductRequest { sku: "WIDGET-1".into() })
        .await
        .expect_err("down");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("127.0.0.1"), "no backend address leaks: {status:?}");

        let open_for = std::time::Duration::from_millis(200);
        let erp = Resilient::new(
            tryton::TrytonErp::open(down.tryton.as_ref().expect("tryton"), Default::default()).expect("open"),
            Policy { open_for, ..Policy::default() },
        );
        for _ in 0..10 {
            if erp.breaker_state() == BreakerState::Open {
                break;
            }
            assert!(erp.get_product("WIDGET-1").await.expect_err("down").is_retryable());
        }
        assert_eq!(erp.breaker_state(), BreakerState::Open);
        assert!(erp.get_product("WIDGET-1").await.expect_err("open breaker").is_retryable());

        // Tryton comes back on that address.
        proxy.set(crate::faults::Fault::Pass);
        // The breaker's own cool-down (open_for, jittered up to twice
        // that), not a wait for a server.
        tokio::time::sleep(open_for * 2).await;
        assert_eq!(erp.breaker_state(), BreakerState::HalfOpen);
        let product = erp.get_product("WIDGET-1").await.expect("recovered");
        assert_eq!(product.sku, "WIDGET-1");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);
    }
}
