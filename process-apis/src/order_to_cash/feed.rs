//! Follows the ERP's change feed (`erp.v1.ChangeFeedService`) so that what
//! happens in the ERP itself reaches the orders: a shipment done in the
//! warehouse makes the order `shipped`, an invoice paid in the ERP makes it
//! `paid`, a product edited in the ERP refreshes the price list, and a
//! sales order or shipment changed makes the catalogue's cached stock
//! levels stale (`catalog::stock`). Every
//! replica follows the whole feed with a cursor of its own (its price list
//! is its own), starting where the saga store's shared cursor stands and
//! writing it back; applying a change twice does nothing the second time,
//! so replicas may follow side by side and a crash between apply and
//! cursor write is harmless.
//!
//! Changes become business events in the outbox, for webhooks and the bus:
//! `product.updated`, for our orders `invoice.paid` and `shipment.shipped`,
//! and for our orders' customers `customer.updated` (to their tenant). Their ids are derived from the change, so the
//! replicas that all apply it write each event once.
//!
//! The feed is also how a replica learns that the ERP answers again after
//! an outage: the first page read after failures makes the orders waiting
//! for the ERP due at once ([`Engine::resume_waiting`]).

use std::{sync::Arc, time::Duration};

use erp_connect_proto::erp::v1 as erp;
use tokio_util::sync::CancellationToken;

use platform::backoff::Backoff;

use erp_connect_proto::{events, money};

use super::{
    clock, outbox,
    saga::{Engine, mark_paid, mark_shipped},
    store::OutboxEvent,
};

/// The cursor's name in the store.
const CURSOR: &str = "erp.changes";

/// Polls the feed until `shutdown`; quickly while there is a backlog.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let interval = engine.settings.feed_poll_interval;
    let backoff = Backoff::new(interval, FEED_BACKOFF_CAP.max(interval));
    let mut failures: u32 = 0;
    let mut cursor: Option<String> = None;
    loop {
        let wait = match poll_once(&engine, &mut cursor).await {
            Ok(read) => {
                if failures > 0 {
                    failures = 0;
                    engine.resume_waiting("erp").await;
                }
                if read == 0 { interval } else { Duration::ZERO }
            }
            Err(err) => {
                let wait = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, retry_in = ?wait, "cannot follow the ERP change feed");
                wait
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Why one poll failed; the next poll retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system tier did not answer.
    #[error("ListChanges: {0}")]
    Feed(#[from] tonic::Status),
    /// The saga store failed.
    #[error(transparent)]
    Store(#[from] super::store::Error),
}

/// Longest wait between polls while the feed fails: how late, at most,
/// waiting orders hear that the ERP is back.
const FEED_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Reads one page of changes after `cursor` (at first the store's) and
/// applies those about our orders and products.
async fn poll_once(engine: &Engine, cursor: &mut Option<String>) -> Result<usize, Error> {
    let since = match cursor {
        Some(at) => at.clone(),
        None => engine.store.cursor(CURSOR).await?,
    };
    let s = &engine.systems;
    let page = s
        .call(s.changes().list_changes(s.request(erp::ListChangesRequest { since_cursor: since.clone(), limit: 500 })))
        .await?;
    for change in &page.changes {
        apply(engine, change).await?;
    }
    if page.next_cursor != since {
        engine.store.set_cursor(CURSOR, &page.next_cursor).await?;
    }
    *cursor = Some(page.next_cursor);
    Ok(page.changes.len())
}

async fn apply(engine: &Engine, change: &erp::Change) -> Result<(), Error> {
    let aggregate = erp::Aggregate::try_from(change.aggregate).unwrap_or(erp::Aggregate::Unspecified);
    let changed_at = change
        .changed_at
        .as_ref()
        .map_or_else(clock::now_ms, |at| at.seconds.saturating_mul(1000) + i64::from(at.nanos / 1_000_000));
    if aggregate == erp::Aggregate::Product {
        // A price that cannot be refreshed now is refreshed by the next
        // change or a miss; the feed moves on rather than stall on it.
        match engine.prices.refresh(&change.id).await {
            Ok(product) => {
                let data = events::ProductData {
                    sku: change.id.clone(),
                    name: product.as_ref().map(|p| p.name.clone()),
                    price: product.as_ref().map(|p| money::format(p.unit_price)),
                    currency: product.as_ref().map(|p| p.currency.clone()),
                    active: product.as_ref().is_some_and(|p| p.active),
                    sequence: changed_at.max(0) as u64,
                };
                let event = cdc_event(change, "product.updated", None, None, changed_at, data);
                engine.store.write_events(&[event]).await?;
                engine.wake_webhooks.notify_one();
                engine.wake_publisher.notify_one();
            }
            Err(err) => tracing::warn!(sku = %change.id, error = %err, "price list not refreshed"),
        }
        return Ok(());
    }
    if aggregate == erp::Aggregate::Customer {
        // Only customers of our orders, and only to their tenant.
        if let Some(tenant) = engine.store.tenant_of_customer(&change.id).await? {
            let data = events::CustomerData { customer_id: change.id.clone(), sequence: changed_at.max(0) as u64 };
            let event = cdc_event(change, "customer.updated", None, Some(&tenant), changed_at, data);
            engine.store.write_events(&[event]).await?;
            engine.wake_webhooks.notify_one();
            engine.wake_publisher.notify_one();
        }
        return Ok(());
    }
    if matches!(aggregate, erp::Aggregate::SalesOrder | erp::Aggregate::Shipment) {
        // They reserve or move stock; the feed does not say which SKUs.
        engine.prices.stock().invalidate();
    }
    let shipped = aggregate == erp::Aggregate::Shipment && change.state == "done";
    let paid = aggregate == erp::Aggregate::Invoice && change.state == "paid";
    if !shipped && !paid {
        return Ok(());
    }
    let Some(order_id) = engine.store.order_of(&change.id).await? else { return Ok(()) };
    if let Some(order) = engine.store.read(&order_id).await? {
        let event = if shipped {
            let data = events::ShipmentShippedData {
                shipment_id: change.id.clone(),
                order_id: order_id.clone(),
                sequence: changed_at.max(0) as u64,
            };
            cdc_event(change, "shipment.shipped", Some(&order_id), Some(&order.tenant), changed_at, data)
        } else {
            let data = events::InvoicePaidData {
                invoice_id: change.id.clone(),
                order_id: order_id.clone(),
                sequence: changed_at.max(0) as u64,
            };
            cdc_event(change, "invoice.paid", Some(&order_id), Some(&order.tenant), changed_at, data)
        };
        engine.store.write_events(&[event]).await?;
        engine.wake_webhooks.notify_one();
        engine.wake_publisher.notify_one();
    }
    let updated = engine
        .update(&order_id, |order, effects, now| {
            if shipped {
                mark_shipped(order, effects, now);
            } else {
                mark_paid(order, effects, now);
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .await;
    match updated {
        Ok(_) => {
            if let Some(at) = &change.changed_at {
                super::metrics::change_applied(at.seconds, at.nanos);
            }
            Ok(())
        }
        Err(super::saga::UpdateError::Store(err)) => Err(err.into()),
        Err(super::saga::UpdateError::Refused(never)) => match never {},
    }
}

/// The event of an ERP change: its id is derived from the change, so every
/// replica following the feed writes the same event (and the outbox keeps
/// the first). Events about an order are ordered with the order's own.
fn cdc_event(
    change: &erp::Change,
    kind: &str,
    order_id: Option<&str>,
    tenant: Option<&str>,
    changed_at: i64,
    data: impl serde::Serialize,
) -> OutboxEvent {
    use sha2::Digest;
    let digest =
        sha2::Sha256::digest(format!("{}|{}|{}|{}|{changed_at}", change.aggregate, change.id, change.state, kind));
    let id = format!("evt_{}", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>());
    let aggregate = match order_id {
        Some(order) => format!("order:{order}"),
        None => format!("{}:{}", kind.split('.').next().unwrap_or(kind), change.id),
    };
    outbox::envelope(id, kind, order_id, tenant, aggregate, changed_at, serde_json::to_value(data).unwrap_or_default())
}
