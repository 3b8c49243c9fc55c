//! The background work of webhooks, on every process replica:
//! - fan-out: outbox events become deliveries for the endpoints that want
//!   them ([`super::store::Store::fan_out`]);
//! - delivery: due deliveries are claimed, sent, and settled: delivered,
//!   retried on the schedule (or later, as `Retry-After` asks), failed when
//!   the schedule is exhausted, and the endpoint disabled on 410 or after
//!   failing for `disable_after`.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    Shared,
    delivery::{Message, Outcome},
    metrics,
    store::{AttemptRow, Due, Settle},
};
use crate::order_to_cash::clock;

/// Most events fanned out, or deliveries claimed, at a time.
const BATCH: i64 = 256;

/// Runs fan-out and delivery until `shutdown`.
pub async fn run(shared: Arc<Shared>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let running = Arc::new(Semaphore::new(shared.settings.concurrency.max(1)));
    let owner = format!("webhooks_{}", ulid::Ulid::new());
    let mut failures: u32 = 0;
    loop {
        let now = clock::now_ms();
        let outcome = async {
            let fanned = shared.store.fan_out(BATCH, now).await?;
            let available = running.available_permits() as i64;
            let due = if available == 0 {
                Vec::new()
            } else {
                let lease_until = now + (shared.settings.timeout + LEASE_MARGIN).as_millis() as i64;
                shared.store.claim_due(&owner, now, lease_until, available.min(BATCH)).await?
            };
            Ok::<_, super::store::Error>((fanned, due))
        }
        .await;
        let wait = match outcome {
            Ok((fanned, due)) => {
                failures = 0;
                let busy = fanned as i64 == BATCH || !due.is_empty();
                for due in due {
                    let Ok(permit) = running.clone().acquire_owned().await else { return };
                    let (shared, owner, wake) = (shared.clone(), owner.clone(), wake.clone());
                    tokio::spawn(async move {
                        attempt(&shared, &owner, due).await;
                        drop(permit);
                        // What waited behind it (its aggregate's next event) is due now.
                        wake.notify_one();
                    });
                }
                if busy { Duration::ZERO } else { shared.settings.poll_interval }
            }
            Err(err) => {
                let wait = PAUSE.delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, retry_in = ?wait, "webhook deliveries paused");
                wait
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How much longer than the timeout a claimed delivery stays leased.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// Pauses after the store failed: 100 ms doubling to 5 s.
const PAUSE: platform::backoff::Backoff =
    platform::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// One attempt of `due`, settled in the store.
async fn attempt(shared: &Shared, owner: &str, due: Due) {
    let endpoint = match shared.store.endpoint("", &due.endpoint_id).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => return, // deleted meanwhile, with its deliveries
        Err(err) => {
            tracing::warn!(error = %err, delivery = %due.id, "webhook endpoint not read");
            return; // the lease runs out and the delivery is claimed again
        }
    };
    let now = clock::now_ms();
    let mut secrets = Vec::with_capacity(2);
    match shared.vault.open(&endpoint.id, &endpoint.secret) {
        Ok(secret) => secrets.push(secret),
        Err(err) => {
            tracing::error!(error = %err, endpoint = %endpoint.id, "webhook endpoint secret does not open");
            return;
        }
    }
    if let Some(previous) = endpoint.previous_secret.as_deref().filter(|_| endpoint.previous_secret_until > now)
        && let Ok(secret) = shared.vault.open(&endpoint.id, previous)
    {
        secrets.push(secret);
    }
    let secrets: Vec<_> = secrets.iter().collect();
    let message = Message { id: &due.event_id, timestamp: now / 1000, body: due.body.as_bytes() };
    let sent = shared.sender.send(&endpoint.url, &secrets, &message).await;
    let at = clock::now_ms();
    let (http_status, error) = match &sent.outcome {
        Outcome::Delivered { status } => (i64::from(*status), String::new()),
        Outcome::Gone => (410, "410 Gone".to_owned()),
        Outcome::Failed { status, error, .. } => (status.map_or(0, i64::from), error.clone()),
    };
    let row = AttemptRow { at, http_status, error, duration_ms: sent.duration.as_millis() as i64 };
    let settle = decide(&shared.settings, &sent.outcome, due.attempts + 1, endpoint.failing_since, at);
    metrics::attempt(&due.event_type, &settle, sent.duration, due.occurred_at, at);
    if let Err(err) = shared.store.settle(&due, owner, &row, &settle).await {
        tracing::warn!(error = %err, delivery = %due.id, "webhook attempt not recorded; it will be sent again");
    }
}

/// What an attempt's outcome means, after `attempts` attempts, for an
/// endpoint failing since `failing_since`.
pub fn decide(
    settings: &super::Settings,
    outcome: &Outcome,
    attempts: i64,
    failing_since: Option<i64>,
    now: i64,
) -> Settle {
    match outcome {
        Outcome::Delivered { .. } => Settle::Delivered,
        Outcome::Gone => Settle::Disable("the endpoint answered 410 Gone".into()),
        Outcome::Failed { retry_after, .. } => {
            let since = failing_since.unwrap_or(now);
            if now - since >= settings.disable_after.as_millis() as i64 {
                return Settle::Disable(format!("every attempt failed since {}", clock::rfc3339(since)));
            }
            match settings.retry_schedule.get(attempts as usize - 1) {
                None => Settle::Failed,
                Some(delay) => {
                    let delay = retry_after.map_or(*delay, |asked| asked.max(*delay));
                    Settle::Retry(now + delay.as_millis() as i64)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::Settings;

    fn failed(retry_after: Option<u64>) -> Outcome {
        Outcome::Failed { status: Some(500), error: "boom".into(), retry_after: retry_after.map(Duration::from_secs) }
    }

    #[test]
    fn failures_follow_the_schedule_then_dead_letter_and_long_failing_endpoints_are_disabled() {
        let settings = Settings::default();
        let now = 1_000_000_000_000;
        let delays: Vec<i64> = (1..=7)
            .map(|n| match decide(&settings, &failed(None), n, Some(now), now) {
                Settle::Retry(at) => (at - now) / 1000,
                other => panic!("attempt {n}: {other:?}"),
            })
            .collect();
        assert_eq!(delays, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(decide(&settings, &failed(None), 8, Some(now), now), Settle::Failed);
        // Retry-After later than the schedule wins; earlier does not.
        assert_eq!(decide(&settings, &failed(Some(60)), 1, None, now), Settle::Retry(now + 60_000));
        assert_eq!(decide(&settings, &failed(Some(1)), 2, None, now), Settle::Retry(now + 300_000));
        let five_days = 5 * 24 * 3600 * 1000;
        assert!(matches!(decide(&settings, &failed(None), 3, Some(now - five_days), now), Settle::Disable(_)));
        assert!(matches!(decide(&settings, &Outcome::Gone, 1, None, now), Settle::Disable(_)));
        assert_eq!(
            decide(&settings, &Outcome::Delivered { status: 204 }, 4, Some(now - five_days), now),
            Settle::Delivered
        );
    }
}
