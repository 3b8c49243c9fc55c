//! Follows the ERP's change feed (`erp.v1.ChangeFeedService`) so that what
//! happens in the ERP itself reaches the orders: a shipment done in the
//! warehouse makes the order `shipped`, an invoice paid in the ERP makes it
//! `paid`. The cursor is kept in the saga store; applying a change twice
//! does nothing the second time, so replicas may follow the feed side by
//! side and a crash between apply and cursor write is harmless.

use std::{sync::Arc, time::Duration};

use erp_connect_proto::erp::v1 as erp;
use tokio_util::sync::CancellationToken;

use super::saga::{Engine, mark_paid, mark_shipped};

/// The cursor's name in the store.
const CURSOR: &str = "erp.changes";

/// Polls the feed until `shutdown`; quickly while there is a backlog.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut backoff = engine.settings.feed_poll_interval;
    loop {
        let wait = match poll_once(&engine).await {
            Ok(0) => engine.settings.feed_poll_interval,
            Ok(_) => Duration::ZERO,
            Err(err) => {
                backoff = (backoff * 2).min(Duration::from_secs(10));
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot follow the ERP change feed");
                backoff
            }
        };
        if wait.is_zero() {
            backoff = engine.settings.feed_poll_interval;
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

/// Reads one page of changes and applies those about our orders.
async fn poll_once(engine: &Engine) -> Result<usize, Error> {
    let since = engine.store.cursor(CURSOR).await?;
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
    Ok(page.changes.len())
}

async fn apply(engine: &Engine, change: &erp::Change) -> Result<(), Error> {
    let aggregate = erp::Aggregate::try_from(change.aggregate).unwrap_or(erp::Aggregate::Unspecified);
    let shipped = aggregate == erp::Aggregate::Shipment && change.state == "done";
    let paid = aggregate == erp::Aggregate::Invoice && change.state == "paid";
    if !shipped && !paid {
        return Ok(());
    }
    let Some(order_id) = engine.store.order_of(&change.id).await? else { return Ok(()) };
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
