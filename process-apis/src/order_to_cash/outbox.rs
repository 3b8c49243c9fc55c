//! Order events: how they are written (into the outbox, in the saga step's
//! own transaction) and how they leave (the publisher, to the in-process
//! bus or to NATS JetStream).
//!
//! Delivery is at least once. The publisher sends events in outbox order
//! and stops at the first failure, so events of one order never overtake
//! each other; unpublished events simply wait while the bus is down.
//! Every event carries a unique id, sent as `Nats-Msg-Id` so JetStream
//! drops the duplicates a crash between publish and mark can cause, and,
//! when traces are exported, the W3C `traceparent` of the saga step that
//! wrote it (a NATS header; a field of [`OutboxEvent`] on the in-process
//! bus), so a consumer can link its own work to that trace.

use std::{sync::Arc, time::Duration};

use erp_connect_proto::events;
use platform::backoff::Backoff;
use serde::Deserialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::{
    clock,
    order::Order,
    store::{OutboxEvent, ReplicaLock, Store},
};

/// Version of the event JSON; bumped on an incompatible change.
pub const SCHEMA_VERSION: u32 = events::SCHEMA_VERSION;

/// `[process.events]`: where events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `in_process` (default; subscribers in this process) or `nats`.
    pub bus: BusKind,
    /// NATS server for `bus = "nats"`. Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// JetStream stream holding `<subject_prefix>.>`; created if missing.
    /// Default `ERP_EVENTS`.
    pub stream: String,
    /// Events go to `<subject_prefix>.<aggregate>.<event>`. Default
    /// `erp.events`; another prefix keeps several installations (or test
    /// runs) on one NATS server apart.
    pub subject_prefix: String,
    /// How often the publisher looks for events written by other replicas.
    /// Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bus: BusKind::InProcess,
            nats_url: "nats://127.0.0.1:4222".into(),
            stream: "ERP_EVENTS".into(),
            subject_prefix: "erp.events".into(),
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// The event bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// A broadcast channel in this process.
    InProcess,
    /// NATS JetStream.
    Nats,
}

/// Why an event could not be published; always worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS could not be reached or did not acknowledge.
    #[error("NATS: {0}")]
    Nats(String),
    /// The outbox could not be read or marked.
    #[error(transparent)]
    Store(#[from] super::store::Error),
}

/// A new event about `order`, to be written with the step that caused it.
/// `kind` is `aggregate.event`, e.g. `order.confirmed`; its `sequence` is
/// the order's event count ([`super::saga::Effects::emit`] counts).
pub fn event(order: &Order, kind: &str, now: i64) -> OutboxEvent {
    let data = events::OrderData {
        order_id: order.id.clone(),
        sequence: order.progress.events,
        status: order.status.as_str().to_owned(),
        customer_id: order.customer_id.clone(),
        currency: order.currency.clone(),
        total: order.total.clone(),
        sales_order: Some(order.progress.sales_order_number.clone()).filter(|n| !n.is_empty()),
        invoice: Some(order.progress.invoice_number.clone()).filter(|n| !n.is_empty()),
        reason: order.progress.unwind.as_ref().map(|u| u.reason.clone()),
    };
    let mut event = envelope(
        format!("evt_{}", ulid::Ulid::new()),
        kind,
        Some(&order.id),
        Some(&order.tenant),
        format!("order:{}", order.id),
        now,
        serde_json::to_value(data).unwrap_or_default(),
    );
    // The step's own span when it runs in one; else the request's.
    event.traceparent = platform::telemetry::current_traceparent().or_else(|| order.progress.traceparent.clone());
    event
}

/// An outbox event with `id`: about `order_id` of `tenant` (none for
/// catalogue events), ordered with the other events of `aggregate`
/// (`order:<id>`, `product:<sku>`), which happened at `occurred_at` (unix
/// ms) at its source.
pub fn envelope(
    id: String,
    kind: &str,
    order_id: Option<&str>,
    tenant: Option<&str>,
    aggregate: String,
    occurred_at: i64,
    data: serde_json::Value,
) -> OutboxEvent {
    let envelope = events::Envelope {
        id: id.clone(),
        event_type: kind.to_owned(),
        schema_version: SCHEMA_VERSION,
        order_id: order_id.map(str::to_owned),
        tenant: tenant.map(str::to_owned),
        occurred_at: clock::rfc3339(occurred_at),
        data,
    };
    OutboxEvent {
        id,
        order_id: order_id.unwrap_or_default().to_owned(),
        event_type: kind.to_owned(),
        payload: serde_json::to_string(&envelope).unwrap_or_default(),
        created_at: occurred_at,
        traceparent: None,
        tenant: tenant.map(str::to_owned),
        aggregate,
    }
}

/// Where published events go.
#[derive(Clone)]
pub enum Bus {
    /// Subscribers in this process ([`Bus::subscribe`]).
    InProcess(broadcast::Sender<OutboxEvent>),
    /// NATS JetStream.
    Nats(Arc<NatsBus>),
}

/// A JetStream context and the stream it publishes into.
pub struct NatsBus {
    jetstream: async_nats::jetstream::Context,
    stream: String,
    subject_prefix: String,
    stream_ready: tokio::sync::OnceCell<()>,
}

impl Bus {
    /// The bus `config` asks for. NATS is connected lazily: the process
    /// tier starts, and events wait in the outbox, while NATS is down.
    pub async fn open(config: &Config) -> Result<Self, Error> {
        match config.bus {
            BusKind::InProcess => Ok(Bus::InProcess(broadcast::channel(1024).0)),
            BusKind::Nats => {
                let client = async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(config.nats_url.as_str())
                    .await
                    .map_err(|e| Error::Nats(e.to_string()))?;
                Ok(Bus::Nats(Arc::new(NatsBus {
                    jetstream: async_nats::jetstream::new(client),
                    stream: config.stream.clone(),
                    subject_prefix: config.subject_prefix.clone(),
                    stream_ready: tokio::sync::OnceCell::new(),
                })))
            }
        }
    }

    /// Events published from now on (in-process bus only; NATS consumers
    /// subscribe to the stream).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<OutboxEvent>> {
        match self {
            Bus::InProcess(tx) => Some(tx.subscribe()),
            Bus::Nats(_) => None,
        }
    }

    async fn publish(&self, event: &OutboxEvent) -> Result<(), Error> {
        match self {
            Bus::InProcess(tx) => {
                // No subscriber is not a failure: nobody is listening.
                let _ = tx.send(event.clone());
                Ok(())
            }
            Bus::Nats(nats) => nats.publish(event).await,
        }
    }
}

impl NatsBus {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), Error> {
        let nats = |e: &dyn std::fmt::Display| Error::Nats(e.to_string());
        self.stream_ready
            .get_or_try_init(|| async {
                self.jetstream
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: self.stream.clone(),
                        subjects: vec![format!("{}.>", self.subject_prefix)],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| nats(&e))
            })
            .await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        if let Some(traceparent) = &event.traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        let ack = self
            .jetstream
            .publish_with_headers(
                format!("{}.{}", self.subject_prefix, event.event_type),
                headers,
                event.payload.clone().into(),
            )
            .await
            .map_err(|e| nats(&e))?;
        ack.await.map_err(|e| nats(&e))?;
        Ok(())
    }
}

/// Publishes the outbox until `shutdown`: woken by `wake` after each
/// commit with events, and every `poll_interval` for other replicas'. Only
/// the replica holding the publisher lock publishes, so events leave in the
/// order they were written; another takes over when it dies.
pub async fn run_publisher(
    store: Store,
    bus: Bus,
    wake: Arc<Notify>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut lock: Option<ReplicaLock> = None;
    loop {
        let held = match &mut lock {
            Some(held) => held.is_held().await,
            None => false,
        };
        if !held {
            lock = store.try_publisher_lock().await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot take the outbox publisher lock");
                None
            });
        }
        let outcome = match &lock {
            Some(_) => publish_batch(&store, &bus).await,
            None => Ok(0), // another replica publishes
        };
        match outcome {
            // A batch that was not full took everything committed before
            // it was read; what committed since has notified `wake`, so
            // reading again at once would mostly find nothing (half of
            // the publisher's reads under load were such empty ones).
            Ok(published) if published < BATCH => {
                failures = 0;
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            Ok(_) => failures = 0, // full: more may wait
            Err(err) => {
                let wait = PAUSE.delay(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, retry_in = ?wait, "outbox publishing paused");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Pauses after failed publishing: 100 ms doubling to 5 s, jittered.
const PAUSE: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Most events read, published and marked at a time.
const BATCH: usize = 256;

/// Publishes up to one batch in order; stops at the first failure after
/// marking what went out. Returns how many were published.
async fn publish_batch(store: &Store, bus: &Bus) -> Result<usize, Error> {
    let events = store.unpublished(BATCH as i64).await?;
    let mut sent = Vec::with_capacity(events.len());
    let mut failure = None;
    for event in &events {
        match bus.publish(event).await {
            Ok(()) => sent.push(event.id.clone()),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    if !sent.is_empty() {
        store.mark_published(&sent, clock::now_ms()).await?;
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(sent.len()),
    }
}
