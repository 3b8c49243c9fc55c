//! The saga engine: runs each order's steps against the system APIs,
//! records every step before and after it runs, retries technical failures
//! with backoff inside a budget, and winds back with compensations on
//! business failures and cancellations.
//!
//! A saga runs on the replica holding its lease ([`Engine::run_worker`]
//! claims due sagas). Every system-API call carries an idempotency key made
//! of the order id and the step, so a step repeated after a crash or a lost
//! reply acts once.

use std::{sync::Arc, time::Duration};

use erp_connect_proto::{erp::v1 as erp, payments::v1 as pay};
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    Settings, clock,
    order::{Action, Order, Status as OrderStatus, Waiting},
    outbox,
    store::{Lease, OutboxEvent, Store, Versioned},
};
use platform::{backoff::Backoff, channel::GrpcChannel};

use super::steps;
use crate::catalog::prices::PriceList;

/// How a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A system API is down, slow or overloaded: the order waits for it,
    /// retried with backoff for as long as it takes, spending no budget.
    #[error("{0}")]
    Outage(String),
    /// Worth a few retries: a fault that may be transient (an internal
    /// error, an aborted transaction, a malformed answer).
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help: the saga must wind back.
    #[error("{0}")]
    Business(String),
    /// The saga store failed; the step's effect is replayed by its key.
    #[error(transparent)]
    Store(#[from] super::store::Error),
}

impl StepError {
    /// Sorts a system API's status into outage, retry or business failure.
    pub fn from_status(step: &str, status: &Status) -> Self {
        let text = format!("{step}: {}", status.message());
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
                StepError::Outage(text)
            }
            Code::Aborted | Code::Internal | Code::Unknown | Code::DataLoss => StepError::Retry(text),
            _ => StepError::Business(text),
        }
    }
}

/// Clients of the system APIs over one channel.
#[derive(Clone)]
pub struct Systems {
    channel: GrpcChannel,
    timeout: Duration,
}

macro_rules! client {
    ($name:ident, $client:ty) => {
        /// A client of the system tier's service.
        pub fn $name(&self) -> $client {
            <$client>::new(self.channel.clone())
        }
    };
}

impl Systems {
    /// System APIs reached through `channel`, each call bounded by `timeout`.
    pub fn new(channel: GrpcChannel, timeout: Duration) -> Self {
        Self { channel, timeout }
    }

    client!(customers, erp::customer_service_client::CustomerServiceClient<GrpcChannel>);
    client!(products, erp::product_service_client::ProductServiceClient<GrpcChannel>);
    client!(sales_orders, erp::sales_order_service_client::SalesOrderServiceClient<GrpcChannel>);
    client!(invoices, erp::invoice_service_client::InvoiceServiceClient<GrpcChannel>);
    client!(shipments, erp::shipment_service_client::ShipmentServiceClient<GrpcChannel>);
    client!(receivables, erp::receivables_service_client::ReceivablesServiceClient<GrpcChannel>);
    client!(changes, erp::change_feed_service_client::ChangeFeedServiceClient<GrpcChannel>);
    client!(payments, pay::payment_service_client::PaymentServiceClient<GrpcChannel>);
    client!(crm, erp_connect_proto::crm::v1::crm_service_client::CrmServiceClient<GrpcChannel>);

    /// `request` with the call deadline set: the system timeout, cut to
    /// what is left of the deadline of the caller it is made for.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(platform::deadline::bounded(self.timeout));
        request
    }

    /// Awaits `call`, turning its own overrun into `DEADLINE_EXCEEDED` (an
    /// in-process channel has no transport deadline of its own).
    pub async fn call<T>(&self, call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Status> {
        match tokio::time::timeout(platform::deadline::bounded(self.timeout), call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("system API call timed out")),
        }
    }
}

/// The share of the saga lease one step attempt may take. The rest is
/// margin for the write that records it, so that the lease never runs out
/// under a step and a second replica never runs the saga beside this one.
const STEP_SHARE_OF_LEASE: f64 = 0.8;

/// The saga engine of one replica.
pub struct Engine {
    /// The saga store.
    pub store: Store,
    /// The system APIs.
    pub systems: Systems,
    /// The price list orders are priced from.
    pub prices: Arc<PriceList>,
    /// Tunables.
    pub settings: Settings,
    /// This replica's lease owner id.
    pub owner: String,
    /// Wakes the worker when a saga becomes due here.
    pub wake_worker: Notify,
    /// Wakes the outbox publisher after a commit with events.
    pub wake_publisher: Arc<Notify>,
    /// Wakes the webhooks' fan-out after a commit with events.
    pub wake_webhooks: Arc<Notify>,
    /// Ids of orders written by this replica, for `WatchOrder`.
    pub changed: broadcast::Sender<String>,
    /// Bounds sagas running at once.
    running: Semaphore,
    /// Customer master data, when the tier has it: orders find their
    /// customer through it.
    pub master: std::sync::OnceLock<crate::master_data::MasterData>,
}

/// What a step did, to be saved in one transaction with the order.
#[derive(Default)]
pub struct Effects {
    /// Events for the outbox.
    pub events: Vec<OutboxEvent>,
    /// ERP ids now belonging to the order.
    pub refs: Vec<String>,
}

impl Effects {
    /// Adds the event `kind` about `order` as it is now, numbered next
    /// in the order's sequence.
    pub fn emit(&mut self, order: &mut Order, kind: &str, now: i64) {
        order.progress.events += 1;
        self.events.push(outbox::event(order, kind, now));
    }
}

impl Engine {
    /// An engine over `store` and `systems`.
    pub fn new(store: Store, systems: Systems, settings: Settings, prices: Arc<PriceList>) -> Self {
        let running = Semaphore::new(settings.concurrency);
        Self {
            store,
            systems,
            prices,
            settings,
            owner: format!("replica_{}", ulid::Ulid::new()),
            wake_worker: Notify::new(),
            wake_publisher: Arc::new(Notify::new()),
            wake_webhooks: Arc::new(Notify::new()),
            changed: broadcast::channel(1024).0,
            running,
            master: std::sync::OnceLock::new(),
        }
    }

    fn lease_until(&self, now: i64) -> i64 {
        now + self.settings.lease.as_millis() as i64
    }

    /// The durable accept: stores the new `order` under (tenant,
    /// `idempotency_key`) with its `order.accepted` event in one
    /// transaction, leased to this replica, and starts its saga here.
    /// `Ok(false)` when a request with the same key got there first.
    pub async fn accept(
        self: &Arc<Self>,
        order: &Order,
        idempotency_key: &str,
        fingerprint: &str,
        shutdown: CancellationToken,
    ) -> Result<bool, super::store::Error> {
        let now = clock::now_ms();
        let mut order = order.clone();
        order.progress.events = 1;
        let order = &order;
        let events = [outbox::event(order, "order.accepted", now)];
        // Started here only while a saga slot is free. Under a burst (an
        // order file, a flash sale) the order is stored unleased instead and
        // the worker claims it when a slot frees up: a task parked per
        // waiting order held ~6 KB each (100,000-row import: 613 MiB peak).
        let starts_now = self.running.available_permits() > 0;
        let lease_until = if starts_now { self.lease_until(now) } else { 0 };
        if !self.store.insert(order, idempotency_key, fingerprint, &events, &self.owner, lease_until).await? {
            return Ok(false);
        }
        super::metrics::committed(&events);
        self.committed(&order.id, true);
        if starts_now {
            self.clone().spawn(order.id.clone(), shutdown);
        } else {
            self.wake_worker.notify_one();
        }
        Ok(true)
    }

    /// After a commit: tell the publisher and the watchers.
    pub fn committed(&self, order_id: &str, had_events: bool) {
        if had_events {
            self.wake_publisher.notify_one();
            self.wake_webhooks.notify_one();
        }
        let _ = self.changed.send(order_id.to_owned());
    }

    /// Claims due sagas and runs them until `shutdown`.
    pub async fn run_worker(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let free = self.running.available_permits() as i64;
            let mut claimed = 0;
            if free > 0 {
                let now = clock::now_ms();
                match self.store.claim_due(&self.owner, now, self.lease_until(now), free).await {
                    Ok(ids) => {
                        claimed = ids.len();
                        for id in ids {
                            self.clone().spawn(id, shutdown.clone());
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot claim sagas"),
                }
            }
            if claimed == 0 || claimed as i64 >= free {
                tokio::select! {
                    _ = self.wake_worker.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Runs the saga of `id`, leased to this replica, in the background.
    pub fn spawn(self: Arc<Self>, id: String, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let Ok(permit) = self.running.acquire().await else { return };
            if let Err(err) = self.run(&id, &shutdown).await {
                tracing::warn!(order_id = %id, error = %err, "saga paused; it resumes when its lease expires");
            }
            // A slot is free: orders accepted while none was are claimed now,
            // not at the worker's next poll.
            drop(permit);
            self.wake_worker.notify_one();
        });
    }

    /// Runs steps until the saga waits, backs off, ends or shuts down.
    #[tracing::instrument(skip_all, fields(order_id = %id))]
    async fn run(&self, id: &str, shutdown: &CancellationToken) -> Result<(), StepError> {
        // What this run last wrote; read again only after a write conflict.
        let mut known: Option<Versioned> = None;
        loop {
            let current = match known.take() {
                Some(current) => current,
                None => match self.store.load(id).await? {
                    Some(current) => current,
                    None => return Ok(()),
                },
            };
            let (mut order, version) = (current.order, current.version);
            let now = clock::now_ms();
            let action = order.next_action();
            if shutdown.is_cancelled() {
                self.store.release(id, &self.owner).await?;
                return Ok(());
            }
            match action {
                Action::Done | Action::Wait => {
                    if self.store.save(&order, version, now, Lease::Release, &[], &[]).await?.is_some() {
                        return Ok(());
                    }
                }
                Action::Finish => {
                    let mut effects = Effects::default();
                    let ends_as = order.progress.unwind.as_ref().map_or(OrderStatus::Rejected, |u| u.ends_as);
                    order.advance(ends_as, now);
                    let kind = if ends_as == OrderStatus::Cancelled { "order.cancelled" } else { "order.rejected" };
                    effects.emit(&mut order, kind, now);
                    known = self.save(order, version, now, Lease::Release, effects).await?;
                }
                step => {
                    // Recorded before it runs: a crash from here on repeats
                    // the call with the same idempotency key. The previous
                    // step's write usually recorded it already.
                    let version = if order.progress.running.as_deref() == Some(step.name()) {
                        version
                    } else {
                        order.progress.running = Some(step.name().to_owned());
                        order.updated_at = now;
                        match self
                            .store
                            .save(&order, version, now, Lease::Keep(self.lease_until(now)), &[], &[])
                            .await?
                        {
                            Some(version) => version,
                            None => continue, // someone else wrote it: read again
                        }
                    };
                    let started = std::time::Instant::now();
                    let mut next = order.clone();
                    let mut effects = Effects::default();
                    // A span per step, in the trace of the request that
                    // placed the order (the runner's own span starts none).
                    let span = tracing::info_span!(
                        "saga.step",
                        otel.name = %format_args!("order_to_cash {}", step.name()),
                        step = step.name()
                    );
                    platform::telemetry::follow(&span, order.progress.traceparent.as_deref());
                    // A step never outlives most of the lease: past it another
                    // replica may take the saga over and run the step too.
                    let within = self.settings.lease.mul_f64(STEP_SHARE_OF_LEASE);
                    let attempt = tokio::time::timeout(within, self.execute(step, &mut next, &mut effects));
                    let result = match tracing::Instrument::instrument(attempt, span).await {
                        Ok(result) => result,
                        Err(_) => Err(StepError::Outage(format!(
                            "{} did not finish within {within:?}, most of the saga's lease",
                            step.name()
                        ))),
                    };
                    super::metrics::step(step.name(), &result, started.elapsed());
                    let now = clock::now_ms();
                    next.progress.running = None;
                    next.updated_at = now;
                    match result {
                        Ok(()) => {
                            next.progress.attempts = 0;
                            next.progress.outage_attempts = 0;
                            next.progress.waiting_on = None;
                            // This write also records the next step as started.
                            next.progress.running = Some(next.next_action())
                                .filter(|a| !matches!(a, Action::Wait | Action::Finish | Action::Done))
                                .map(|a| a.name().to_owned());
                            known = self.keep(next, version, now, effects).await?;
                            if known.is_none() {
                                self.record_on_latest(id, step).await?;
                            }
                        }
                        Err(StepError::Business(reason)) if step.is_compensation() => {
                            // The compensation cannot be done (e.g. the ERP
                            // shipped meanwhile): note it and carry on, so the
                            // saga ends and reconciliation flags the order.
                            tracing::warn!(step = step.name(), %reason, "compensation impossible");
                            let mut order = order.clone();
                            order.progress.running = None;
                            mark_compensated(&mut order, step);
                            order.record(&format!("compensation_failed:{}", step.name()), now, reason);
                            known = self.keep(order, version, now, Effects::default()).await?;
                        }
                        Err(StepError::Business(reason)) => {
                            tracing::warn!(step = step.name(), %reason, "business failure: the order is wound back");
                            let mut order = order.clone();
                            order.progress.running = None;
                            order.unwind(OrderStatus::Rejected, reason, now);
                            known = self.keep(order, version, now, Effects::default()).await?;
                        }
                        Err(StepError::Outage(reason)) => {
                            // Not the order's fault and not a reason to give
                            // it up: it waits in the store, in its place,
                            // and is retried until the system answers.
                            let mut order = order.clone();
                            let p = &mut order.progress;
                            p.running = None;
                            let delay = self.backoff(p.outage_attempts);
                            p.outage_attempts = p.outage_attempts.saturating_add(1);
                            if p.waiting_on.is_none() {
                                let system = steps::policy(step).system.as_str();
                                p.waiting_on = Some(Waiting { system: system.to_owned(), since: now });
                                order.record(&format!("waiting:{system}"), now, reason.clone());
                            }
                            tracing::info!(step = step.name(), retry_in = ?delay, %reason, "system unavailable; the order waits");
                            let due = now + delay.as_millis() as i64;
                            if self.back_off(&order, version, due).await? {
                                return Ok(());
                            }
                        }
                        Err(err) => {
                            let mut order = order.clone();
                            order.progress.running = None;
                            order.progress.attempts += 1;
                            let attempts = order.progress.attempts;
                            let budgeted = steps::policy(step).retries == steps::Retries::Budget;
                            if budgeted && attempts > self.settings.retry_budget {
                                let reason = format!("{} kept failing after {attempts} attempts: {err}", step.name());
                                order.progress.attempts = 0;
                                order.unwind(OrderStatus::Rejected, reason, now);
                                known = self.keep(order, version, now, Effects::default()).await?;
                                if known.is_some() {
                                    super::metrics::retries_exhausted();
                                }
                                continue;
                            }
                            let delay = self.backoff(attempts);
                            tracing::info!(step = step.name(), attempts, retry_in = ?delay, error = %err, "step will be retried");
                            order.record(&format!("retry:{}", step.name()), now, err.to_string());
                            let due = now + delay.as_millis() as i64;
                            if self.back_off(&order, version, due).await? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The step acted, but someone else (a cancel, a payment, the feed)
    /// wrote the order meanwhile, so its result was not saved. Replays the
    /// step on the latest version — the same idempotency key makes the
    /// system API answer what it did, without acting again — so that what
    /// happened is recorded and compensations know about it.
    async fn record_on_latest(&self, id: &str, step: Action) -> Result<(), StepError> {
        loop {
            let Some(latest) = self.store.load(id).await? else { return Ok(()) };
            let mut next = latest.order.clone();
            let mut effects = Effects::default();
            self.execute(step, &mut next, &mut effects).await?;
            let now = clock::now_ms();
            next.progress.running = None;
            next.progress.attempts = 0;
            next.updated_at = now;
            if self.keep(next, latest.version, now, effects).await?.is_some() {
                return Ok(());
            }
        }
    }

    /// Saves `order` due at once and still leased to this replica, which
    /// runs its next step; `None` on a write conflict.
    async fn keep(
        &self,
        order: Order,
        version: i64,
        now: i64,
        effects: Effects,
    ) -> Result<Option<Versioned>, StepError> {
        self.save(order, version, now, Lease::Keep(self.lease_until(now)), effects).await
    }

    /// Saves `order` due again at `due` and gives up its lease, after a
    /// failed attempt; false on a write conflict (read it again).
    async fn back_off(&self, order: &Order, version: i64, due: i64) -> Result<bool, StepError> {
        let saved = self.store.save(order, version, due, Lease::Release, &[], &[]).await?.is_some();
        if saved {
            self.committed(&order.id, false);
        }
        Ok(saved)
    }

    /// Saves and announces `order`; `None` on a write conflict.
    async fn save(
        &self,
        order: Order,
        version: i64,
        due: i64,
        lease: Lease,
        effects: Effects,
    ) -> Result<Option<Versioned>, StepError> {
        let saved = self.store.save(&order, version, due, lease, &effects.events, &effects.refs).await?;
        Ok(saved.map(|version| {
            super::metrics::committed(&effects.events);
            self.committed(&order.id, !effects.events.is_empty());
            Versioned { order, version }
        }))
    }

    /// The delay before retry `attempt` (0 for the first): the product's
    /// one backoff rule with the saga's base and cap.
    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.settings.backoff_base, self.settings.backoff_cap).delay(attempt)
    }

    /// `system` answers again: orders waiting for it are due now, instead
    /// of at the end of their backoff.
    pub async fn resume_waiting(&self, system: &str) {
        match self.store.resume_waiting(system, clock::now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(system, orders = n, "system answers again; waiting orders resume");
                self.wake_worker.notify_one();
            }
            Err(err) => tracing::warn!(error = %err, "cannot resume waiting orders"),
        }
    }

    /// Runs one step against the system APIs and records its result in
    /// `order` and `effects`; nothing is written unless it succeeds.
    async fn execute(&self, step: Action, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
        let mut cx = steps::Context::new(&self.systems, &self.prices, &self.settings, step, order);
        cx.master = self.master.get();
        steps::run(step, &cx, order, effects).await
    }

    /// Applies `change` to the order `id` as an outside writer (an API call
    /// or the ERP feed), retrying on write conflicts; wakes the worker when
    /// the saga has a step to run. `change` returns an error to refuse.
    pub async fn update<E>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Order, &mut Effects, i64) -> Result<(), E>,
    ) -> Result<Option<Order>, UpdateError<E>> {
        loop {
            let Some(current) = self.store.load(id).await? else { return Ok(None) };
            let mut order = current.order.clone();
            let mut effects = Effects::default();
            let now = clock::now_ms();
            change(&mut order, &mut effects, now).map_err(UpdateError::Refused)?;
            if order == current.order {
                return Ok(Some(order));
            }
            let saved =
                self.store.save(&order, current.version, now, Lease::Untouched, &effects.events, &effects.refs).await?;
            if saved.is_some() {
                super::metrics::committed(&effects.events);
                self.committed(id, !effects.events.is_empty());
                if !matches!(order.next_action(), Action::Wait | Action::Done) {
                    self.wake_worker.notify_one();
                }
                return Ok(Some(order));
            }
        }
    }
}

/// An outside change refused by its own check, or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The change's own refusal.
    #[error("refused")]
    Refused(E),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] super::store::Error),
}

/// The invoice is paid: `paid`, and `completed` if it has shipped too.
pub fn mark_paid(order: &mut Order, effects: &mut Effects, now: i64) {
    if order.progress.invoice_paid {
        return;
    }
    order.progress.invoice_paid = true;
    if order.progress.unwind.is_none() && !order.status.is_terminal() {
        order.advance(OrderStatus::Paid, now);
        effects.emit(order, "order.paid", now);
        complete_if_settled(order, effects, now);
    }
}

/// The ERP shipped it: `shipped`, and `completed` if it is paid too.
pub fn mark_shipped(order: &mut Order, effects: &mut Effects, now: i64) {
    if order.progress.shipped {
        return;
    }
    order.progress.shipped = true;
    if order.progress.unwind.is_none() && !order.status.is_terminal() {
        order.advance(OrderStatus::Shipped, now);
        effects.emit(order, "order.shipped", now);
        complete_if_settled(order, effects, now);
    }
}

fn complete_if_settled(order: &mut Order, effects: &mut Effects, now: i64) {
    if order.progress.shipped && order.progress.invoice_paid {
        order.advance(OrderStatus::Completed, now);
        effects.emit(order, "order.completed", now);
    }
}

fn mark_compensated(order: &mut Order, step: Action) {
    let p = &mut order.progress;
    match step {
        Action::Refund => p.refunded = true,
        Action::Void => p.voided = true,
        Action::CreditInvoice => p.invoice_credited = true,
        Action::CancelSalesOrder => p.sales_order_cancelled = true,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use erp_connect_proto::{erp::v1 as erp, payments::v1 as pay};
    use tonic::Status;

    use super::*;
    use crate::order_to_cash::{
        order::Status as OrderStatus,
        steps::fake::{Fake, card_order, engine},
    };

    async fn ended(engine: &Engine, id: &str, wanted: impl Fn(&Order) -> bool) -> Order {
        for _ in 0..1000 {
            let order = engine.store.load(id).await.expect("store").expect("order").order;
            if wanted(&order) {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the saga did not get there: {:?}", engine.store.load(id).await.expect("store").map(|v| v.order));
    }

    fn confirmed_so() -> erp::SalesOrder {
        erp::SalesOrder {
            id: "so_1".into(),
            number: "SO-1".into(),
            invoice_ids: vec!["inv_1".into()],
            shipment_ids: vec!["shp_1".into()],
            ..Default::default()
        }
    }

    fn steps_of(order: &Order) -> Vec<&str> {
        order.timeline.iter().map(|t| t.step.as_str()).collect()
    }

    #[tokio::test]
    async fn a_step_whose_retry_budget_runs_out_rejects_the_order_and_runs_its_compensations() {
        let (fake, dir, stop) = (Fake::new(), tempfile::tempdir().expect("dir"), CancellationToken::new());
        fake.answer("CreateSalesOrder", erp::SalesOrder { id: "so_1".into(), ..Default::default() })
            .answer("QuoteSalesOrder", confirmed_so())
            .answer("ConfirmSalesOrder", confirmed_so())
            .fail("Authorize", Status::internal("bug"))
            .fail("Authorize", Status::internal("bug"))
            .fail("Authorize", Status::internal("bug"))
            .answer("CancelSalesOrder", confirmed_so());
        let engine = engine(&fake, &dir, &stop).await;
        let order = card_order();
        assert!(engine.accept(&order, "key-1", "fp", stop.clone()).await.expect("accepted"));
        let ended = ended(&engine, &order.id, |o| o.status.is_terminal()).await;
        assert_eq!(ended.status, OrderStatus::Rejected);
        let reason = ended.progress.unwind.as_ref().map(|u| u.reason.as_str()).unwrap_or_default();
        assert!(reason.contains("authorize kept failing after 3 attempts"), "{reason}: {:?}", steps_of(&ended));
        assert_eq!(
            steps_of(&ended),
            [
                "sales_order_created",
                "confirmed",
                "retry:authorize",
                "retry:authorize",
                "failed",
                "compensation:cancel_sales_order",
                "rejected"
            ]
        );
        let keys: Vec<String> =
            fake.requests::<pay::AuthorizeRequest>("Authorize").into_iter().map(|r| r.idempotency_key).collect();
        assert_eq!(keys, ["ord_1:authorize"; 3], "one key for every attempt");
        assert_eq!(fake.requests::<erp::SalesOrderRequest>("CancelSalesOrder").len(), 1);
        stop.cancel();
    }

    #[tokio::test]
    async fn an_outage_spends_no_retry_budget_and_the_order_goes_on_when_the_system_answers() {
        let (fake, dir, stop) = (Fake::new(), tempfile::tempdir().expect("dir"), CancellationToken::new());
        fake.answer("CreateSalesOrder", erp::SalesOrder { id: "so_1".into(), ..Default::default() })
            .answer("QuoteSalesOrder", confirmed_so())
            .answer("ConfirmSalesOrder", confirmed_so());
        // Five times the budget of unavailability, then the provider is back.
        for _ in 0..10 {
            fake.fail("Authorize", Status::unavailable("provider down"));
        }
        fake.answer("Authorize", pay::Payment { id: "pay_1".into(), ..Default::default() })
            .answer("Capture", pay::Payment::default())
            .answer("PostInvoice", erp::Invoice { total: "37.50".into(), ..Default::default() })
            .answer("RecordInvoicePayment", erp::Invoice::default());
        let engine = engine(&fake, &dir, &stop).await;
        let order = card_order();
        assert!(engine.accept(&order, "key-2", "fp", stop.clone()).await.expect("accepted"));
        // While it waits, the order says so once, and the store counts it.
        let waiting = ended(&engine, &order.id, |o| o.progress.waiting_on.is_some()).await;
        assert_eq!(waiting.progress.waiting_on.as_ref().map(|w| w.system.as_str()), Some("payments"));
        let paid = ended(&engine, &order.id, |o| o.status == OrderStatus::Paid).await;
        assert_eq!(steps_of(&paid).iter().filter(|s| s.starts_with("waiting:")).count(), 1, "{:?}", steps_of(&paid));
        assert!(!steps_of(&paid).iter().any(|s| s.starts_with("retry:")), "{:?}", steps_of(&paid));
        assert!(paid.progress.waiting_on.is_none() && paid.progress.outage_attempts == 0);
        assert_eq!(fake.requests::<pay::AuthorizeRequest>("Authorize").len(), 11);
        assert!(engine.store.waiting().await.expect("backlog").is_empty(), "the backlog cleared");
        stop.cancel();
    }
}
