//! `erp-connect reconcile` tells an operator when the ERP and the orders
//! disagree: it exits 0 while every invariant holds and 1, naming the order
//! and the broken invariant, once someone cancels a paid order's sales
//! order in the ERP behind the saga's back.

mod harness;

use std::{process::Command, time::Duration};

use erp_connect::serve::Target;
use erp_connect_proto::{
    erp::v1::{
        self as erp, invoice_service_client::InvoiceServiceClient, sales_order_service_client::SalesOrderServiceClient,
    },
    order_to_cash::v1::{
        self as o2c, OrderStatus, order_to_cash_service_client::OrderToCashServiceClient, place_order_request::Payment,
    },
};
use harness::{BIN, Running, quick_sagas, spawn_serve_with};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn channel(app: &Running, target: Target) -> Channel {
    let addr = app.grpc.iter().find(|(t, _)| *t == target).map(|(_, a)| *a).expect("tier");
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy()
}

/// Runs the command off the runtime's thread: the tiers it talks to are
/// served by this test's runtime.
async fn reconcile(app: &Running) -> (bool, String) {
    let system = app.grpc.iter().find(|(t, _)| *t == Target::System).map(|(_, a)| *a).expect("system");
    let mut command = Command::new(BIN);
    command
        .args(["reconcile", "--data-dir"])
        .arg(app.data_dir.path())
        .args(["--system-url", &format!("http://{system}")]);
    let out = tokio::task::spawn_blocking(move || command.output()).await.expect("joined").expect("reconcile runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

#[tokio::test]
async fn reconcile_holds_for_sound_orders_and_names_a_paid_order_whose_erp_order_was_cancelled() {
    let app = spawn_serve_with(quick_sagas).await;
    let mut orders = OrderToCashServiceClient::new(app.grpc_channel(Target::Process));
    let request = o2c::PlaceOrderRequest {
        idempotency_key: "reconcile-1".into(),
        tenant: "web".into(),
        customer: Some(o2c::CustomerRef { external_id: "web:reconcile".into(), ..Default::default() }),
        lines: vec![o2c::OrderLine { sku: "WIDGET-1".into(), quantity: 1, ..Default::default() }],
        payment: Some(Payment::CardToken("tok_visa".into())),
        ..Default::default()
    };
    let order = orders.place_order(request).await.expect("accepted").into_inner();
    let watch = o2c::WatchOrderRequest { tenant: "web".into(), order_id: order.id.clone() };
    let mut stream = orders.watch_order(watch).await.expect("watch").into_inner();
    let paid = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(o) = stream.next().await {
            let o = o.expect("order");
            if o.status() == OrderStatus::Paid {
                return o;
            }
        }
        panic!("the watch ended before the order was paid");
    })
    .await
    .expect("paid in time");

    let (holds, report) = reconcile(&app).await;
    assert!(holds, "{report}");
    assert!(report.contains("orders checked: 1 (paid 1)"), "{report}");

    // Behind the saga's back: the invoice credited, the sales order cancelled.
    let refs = paid.erp.expect("refs");
    InvoiceServiceClient::new(channel(&app, Target::System))
        .credit_invoice(erp::InvoiceRequest { id: refs.invoice_id })
        .await
        .expect("credited");
    SalesOrderServiceClient::new(channel(&app, Target::System))
        .cancel_sales_order(erp::SalesOrderRequest { id: refs.sales_order_id })
        .await
        .expect("cancelled");
    let (holds, report) = reconcile(&app).await;
    assert!(!holds, "{report}");
    assert!(report.contains(&format!("VIOLATION {}: payment", order.id)), "{report}");
    assert!(report.contains("without a live ERP sales order"), "{report}");
    app.stop_all().await;
}
