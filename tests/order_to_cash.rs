//! Order-to-cash over gRPC, as internal teams call it, in `serve` mode so
//! that each test can also look at the ERP and the payments API directly:
//! card orders, declines, credit limits, cash application, cancellation
//! with compensations, idempotent replays and retried provider outages, on
//! the embedded ERP.

mod harness;

use std::{net::SocketAddr, time::Duration};

use erp_connect::serve::Target;
use erp_connect_proto::{
    erp::v1::{
        self as erp, inventory_service_client::InventoryServiceClient, invoice_service_client::InvoiceServiceClient,
        sales_order_service_client::SalesOrderServiceClient,
    },
    order_to_cash::v1::{
        self as o2c, Order, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient,
        place_order_request::Payment,
    },
    payments::v1::{self as pay, payment_service_client::PaymentServiceClient},
};
use harness::{ProcessChannel, Running, quick_sagas, spawn_serve_with, with_token};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};

struct Flow {
    app: Running,
    orders: OrderToCashServiceClient<ProcessChannel>,
    system: Channel,
}

fn addr(app: &Running, target: Target) -> SocketAddr {
    app.grpc.iter().find(|(t, _)| *t == target).map(|(_, a)| *a).expect("tier address")
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

async fn start() -> Flow {
    let app = spawn_serve_with(quick_sagas).await;
    let orders =
        OrderToCashServiceClient::new(with_token(channel(addr(&app, Target::Process)).await, &app.service_token()));
    let system = channel(addr(&app, Target::System)).await;
    Flow { app, orders, system }
}

fn place(key: &str, tenant: &str, lines: &[(&str, i64)], payment: Payment) -> o2c::PlaceOrderRequest {
    o2c::PlaceOrderRequest {
        idempotency_key: key.into(),
        tenant: tenant.into(),
        customer: Some(o2c::CustomerRef {
            external_id: format!("{tenant}:buyer"),
            email: format!("buyer@{tenant}.example"),
            name: format!("Buyer of {tenant}"),
        }),
        external_ref: "PO-4711".into(),
        lines: lines
            .iter()
            .map(|(sku, q)| o2c::OrderLine { sku: (*sku).into(), quantity: *q, ..Default::default() })
            .collect(),
        payment: Some(payment),
        ..Default::default()
    }
}

fn card(token: &str) -> Payment {
    Payment::CardToken(token.into())
}

impl Flow {
    async fn place(&self, request: o2c::PlaceOrderRequest) -> Order {
        self.orders.clone().place_order(request).await.expect("order accepted").into_inner()
    }

    /// Watches the order until it reaches `status` (or ends otherwise).
    async fn until(&self, order: &Order, status: OrderStatus) -> Order {
        let request = o2c::WatchOrderRequest { tenant: order.tenant.clone(), order_id: order.id.clone() };
        let mut stream = self.orders.clone().watch_order(request).await.expect("watch").into_inner();
        let mut last = None;
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(o)) => {
                        let done = o.status == status as i32
                            || matches!(o.status(), OrderStatus::Completed | OrderStatus::Rejected | OrderStatus::Cancelled);
                        last = Some(o);
                        if done { break; }
                    }
                    Some(Err(status)) => panic!("watch failed: {status}"),
                    None => break,
                },
                _ = &mut deadline => panic!("order {} never reached {status:?}; last {last:?}", order.id),
            }
        }
        let last = last.expect("watch sends the current order first");
        assert_eq!(
            last.status(),
            status,
            "order {} ended {:?}: {} {:?}",
            last.id,
            last.status(),
            last.reason,
            last.timeline
        );
        last
    }

    async fn sales_order(&self, order: &Order) -> erp::SalesOrder {
        let id = order.erp.as_ref().expect("erp refs").sales_order_id.clone();
        SalesOrderServiceClient::new(self.system.clone())
            .get_sales_order(erp::SalesOrderRequest { id })
            .await
            .expect("sales order")
            .into_inner()
    }

    async fn payment(&self, order: &Order) -> pay::Payment {
        PaymentServiceClient::new(self.system.clone())
            .get_payment(pay::GetPaymentRequest { payment_id: order.payment_id.clone() })
            .await
            .expect("payment")
            .into_inner()
    }

    async fn invoice(&self, order: &Order) -> erp::Invoice {
        let id = order.erp.as_ref().expect("erp refs").invoice_id.clone();
        InvoiceServiceClient::new(self.system.clone())
            .get_invoice(erp::InvoiceRequest { id })
            .await
            .expect("invoice")
            .into_inner()
    }

    async fn available(&self, sku: &str) -> i64 {
        let levels = InventoryServiceClient::new(self.system.clone())
            .get_stock_levels(erp::GetStockLevelsRequest { skus: vec![sku.into()] })
            .await
            .expect("stock")
            .into_inner();
        levels.levels.iter().flat_map(|l| &l.warehouses).map(|w| w.available).sum()
    }

    async fn ship(&self, order: &Order) {
        for shipment_id in &order.erp.as_ref().expect("erp refs").shipment_ids {
            let reply = self
                .orders
                .clone()
                .complete_shipment(o2c::CompleteShipmentRequest { shipment_id: shipment_id.clone() })
                .await
                .expect("shipment completes")
                .into_inner();
            assert_eq!(reply.state, "done");
            assert_eq!(reply.order_id, order.id);
        }
    }
}

fn steps(order: &Order) -> Vec<&str> {
    order.timeline.iter().map(|t| t.step.as_str()).collect()
}

#[tokio::test]
async fn a_card_order_is_paid_at_once_and_completes_when_the_erp_ships_it() {
    let flow = start().await;
    let accepted = flow.place(place("card-1", "web", &[("WIDGET-1", 3)], card("tok_visa"))).await;
    assert_eq!(accepted.status(), OrderStatus::Accepted);
    assert_eq!(accepted.total, "37.50");
    assert_eq!(accepted.lines[0].unit_price, "12.50");
    let paid = flow.until(&accepted, OrderStatus::Paid).await;
    assert_eq!(flow.payment(&paid).await.status(), pay::PaymentStatus::Captured);
    assert_eq!(flow.invoice(&paid).await.state(), erp::InvoiceState::Paid);
    let erp_refs = paid.erp.clone().expect("erp refs");
    assert!(erp_refs.sales_order.starts_with("SO-") && erp_refs.invoice.starts_with("INV-"), "{erp_refs:?}");
    flow.ship(&paid).await;
    let completed = flow.until(&accepted, OrderStatus::Completed).await;
    assert_eq!(
        steps(&completed),
        [
            "accepted",
            "customer_created",
            "sales_order_created",
            "confirmed",
            "payment_authorized",
            "payment_captured",
            "invoiced",
            "paid",
            "shipped",
            "completed"
        ]
    );
    assert_eq!(flow.sales_order(&completed).await.state(), erp::SalesOrderState::Done);
    flow.app.stop_all().await;
}

#[tokio::test]
async fn a_declined_card_rejects_the_order_cancels_the_erp_order_and_captures_nothing() {
    let flow = start().await;
    let before = flow.available("GADGET-2").await;
    let order = flow.place(place("declined-1", "web", &[("GADGET-2", 2)], card("tok_chargeDeclined"))).await;
    let rejected = flow.until(&order, OrderStatus::Rejected).await;
    assert!(rejected.reason.contains("declined"), "{}", rejected.reason);
    assert_eq!(flow.sales_order(&rejected).await.state(), erp::SalesOrderState::Cancelled);
    let payment = flow.payment(&rejected).await;
    assert_eq!(payment.status(), pay::PaymentStatus::Declined);
    assert_eq!(payment.captured_amount, "0.00");
    assert_eq!(flow.available("GADGET-2").await, before, "stock released");
    flow.app.stop_all().await;
}

#[tokio::test]
async fn short_stock_rejects_the_order_through_the_saga_and_cancels_its_erp_order() {
    let flow = start().await;
    let before = flow.available("WIDGET-1").await;
    // Accepted at once (no ERP on the request path); the ERP refuses to
    // confirm more than it has, and the saga winds back.
    let order = flow.place(place("short-1", "web", &[("WIDGET-1", before + 1)], card("tok_visa"))).await;
    assert_eq!(order.status(), OrderStatus::Accepted);
    let rejected = flow.until(&order, OrderStatus::Rejected).await;
    assert!(rejected.reason.contains("the ERP refused"), "{}", rejected.reason);
    assert_eq!(flow.sales_order(&rejected).await.state(), erp::SalesOrderState::Cancelled);
    assert!(rejected.payment_id.is_empty(), "no card is charged for an order that cannot be confirmed");
    assert!(steps(&rejected).contains(&"compensation:cancel_sales_order"), "{:?}", steps(&rejected));
    assert_eq!(flow.available("WIDGET-1").await, before, "nothing stays reserved");
    flow.app.stop_all().await;
}

#[tokio::test]
async fn an_on_account_order_over_the_credit_limit_is_rejected_before_the_erp_sees_it() {
    let flow = start().await;
    // New partner accounts get a 5000.00 limit; 500 × 12.50 = 6250.00.
    let order = flow.place(place("credit-1", "acme", &[("WIDGET-1", 500)], Payment::OnAccount(true))).await;
    let rejected = flow.until(&order, OrderStatus::Rejected).await;
    assert!(rejected.reason.contains("credit limit"), "{}", rejected.reason);
    assert!(rejected.erp.expect("refs").sales_order_id.is_empty(), "no ERP order was created");
    flow.app.stop_all().await;
}

#[tokio::test]
async fn an_on_account_order_is_paid_by_cash_application_and_completes_once_shipped() {
    let flow = start().await;
    let order = flow.place(place("account-1", "acme", &[("WIDGET-1", 2)], Payment::OnAccount(true))).await;
    let invoiced = flow.until(&order, OrderStatus::Invoiced).await;
    let mut orders = flow.orders.clone();
    // Before the invoice is paid, a payment in another currency is refused.
    let wrong = o2c::RecordPaymentRequest {
        idempotency_key: "cash-1".into(),
        tenant: "acme".into(),
        order_id: order.id.clone(),
        currency: "USD".into(),
        amount: invoiced.total.clone(),
    };
    assert_eq!(orders.record_payment(wrong.clone()).await.expect_err("wrong currency").code(), Code::InvalidArgument);
    let pay = o2c::RecordPaymentRequest { currency: "EUR".into(), ..wrong };
    let paid = orders.record_payment(pay.clone()).await.expect("cash applied").into_inner();
    assert_eq!(paid.status(), OrderStatus::Paid);
    // A replay of the same cash application records nothing more.
    assert_eq!(orders.record_payment(pay).await.expect("replay").into_inner().status(), OrderStatus::Paid);
    assert_eq!(flow.invoice(&paid).await.amount_due, "0.00");
    flow.ship(&paid).await;
    let completed = flow.until(&order, OrderStatus::Completed).await;
    assert!(steps(&completed).ends_with(&["paid", "shipped", "completed"]), "{:?}", steps(&completed));
    // Another tenant cannot see it, nor its invoice.
    let other = o2c::GetOrderRequest { tenant: "globex".into(), order_id: order.id.clone() };
    assert_eq!(orders.get_order(other).await.expect_err("hidden").code(), Code::NotFound);
    let invoice_id = completed.erp.expect("refs").invoice_id;
    let foreign = o2c::GetInvoiceRequest { tenant: "globex".into(), invoice_id: invoice_id.clone() };
    assert_eq!(orders.get_invoice(foreign).await.expect_err("hidden").code(), Code::NotFound);
    let own = orders.get_invoice(o2c::GetInvoiceRequest { tenant: "acme".into(), invoice_id }).await.expect("own");
    assert_eq!(own.into_inner().state, "paid");
    flow.app.stop_all().await;
}

#[tokio::test]
async fn cancelling_before_shipment_runs_every_compensation() {
    let flow = start().await;
    let sku = "GADGET-2";
    let before = flow.available(sku).await;
    let mut orders = flow.orders.clone();

    // On account, invoiced: the invoice is credited, the ERP order cancelled.
    let on_account = flow.place(place("cancel-1", "acme", &[(sku, 1)], Payment::OnAccount(true))).await;
    flow.until(&on_account, OrderStatus::Invoiced).await;
    assert_eq!(flow.available(sku).await, before - 1, "stock reserved");
    let request = o2c::CancelOrderRequest {
        tenant: "acme".into(),
        order_id: on_account.id.clone(),
        reason: "changed my mind".into(),
    };
    let cancelled = orders.cancel_order(request).await.expect("cancel").into_inner();
    let cancelled = flow.until(&cancelled, OrderStatus::Cancelled).await;
    assert_eq!(cancelled.reason, "changed my mind");
    assert!(steps(&cancelled).contains(&"compensation:credit_invoice"), "{:?}", steps(&cancelled));
    assert_eq!(flow.invoice(&cancelled).await.state(), erp::InvoiceState::Cancelled);
    assert_eq!(flow.sales_order(&cancelled).await.state(), erp::SalesOrderState::Cancelled);

    // Card, paid: refunded as well.
    let card_order = flow.place(place("cancel-2", "acme", &[(sku, 1)], card("tok_visa"))).await;
    flow.until(&card_order, OrderStatus::Paid).await;
    let request =
        o2c::CancelOrderRequest { tenant: "acme".into(), order_id: card_order.id.clone(), reason: String::new() };
    orders.cancel_order(request).await.expect("cancel");
    let cancelled = flow.until(&card_order, OrderStatus::Cancelled).await;
    assert_eq!(flow.payment(&cancelled).await.status(), pay::PaymentStatus::Refunded);
    assert_eq!(flow.sales_order(&cancelled).await.state(), erp::SalesOrderState::Cancelled);
    assert_eq!(flow.available(sku).await, before, "all stock released");

    // Shipped orders can no longer be cancelled.
    let shipped = flow.place(place("cancel-3", "acme", &[(sku, 1)], card("tok_visa"))).await;
    let paid = flow.until(&shipped, OrderStatus::Paid).await;
    flow.ship(&paid).await;
    flow.until(&shipped, OrderStatus::Completed).await;
    let request =
        o2c::CancelOrderRequest { tenant: "acme".into(), order_id: shipped.id.clone(), reason: String::new() };
    assert_eq!(orders.cancel_order(request).await.expect_err("too late").code(), Code::FailedPrecondition);
    flow.app.stop_all().await;
}

#[tokio::test]
async fn a_replayed_place_order_creates_nothing_new_and_a_reused_key_is_refused() {
    let flow = start().await;
    let mut orders = flow.orders.clone();
    let request = place("replay-1", "acme", &[("WIDGET-1", 1)], card("tok_visa"));
    let first = flow.place(request.clone()).await;
    let again = flow.place(request.clone()).await;
    assert_eq!(first.id, again.id);
    let mut changed = request.clone();
    changed.lines[0].quantity = 2;
    let err = orders.place_order(changed).await.expect_err("key reused");
    assert_eq!(err.code(), Code::AlreadyExists);
    let list = o2c::ListOrdersRequest { tenant: "acme".into(), ..Default::default() };
    assert_eq!(orders.list_orders(list).await.expect("list").into_inner().orders.len(), 1);
    // Bad input names the field and stores nothing.
    let unknown = place("replay-2", "acme", &[("NO-SUCH-SKU", 1)], card("tok_visa"));
    let err = orders.place_order(unknown).await.expect_err("unknown sku");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("lines[0].sku"), "{}", err.message());
    let zero = place("replay-3", "acme", &[("WIDGET-1", 0)], card("tok_visa"));
    assert_eq!(orders.place_order(zero).await.expect_err("quantity 0").code(), Code::InvalidArgument);
    flow.until(&first, OrderStatus::Paid).await;
    flow.app.stop_all().await;
}

#[tokio::test]
async fn a_provider_outage_is_waited_out_and_the_order_completes() {
    let flow = start().await;
    let order = flow.place(place("outage-1", "web", &[("WIDGET-1", 1)], card("tok_processingError"))).await;
    let paid = flow.until(&order, OrderStatus::Paid).await;
    // An outage is waited out (no retry budget spent), once on the timeline.
    assert_eq!(steps(&paid).iter().filter(|s| **s == "waiting:payments").count(), 1, "{:?}", steps(&paid));
    assert_eq!(flow.payment(&paid).await.status(), pay::PaymentStatus::Captured);
    flow.ship(&paid).await;
    flow.until(&order, OrderStatus::Completed).await;
    flow.app.stop_all().await;
}
