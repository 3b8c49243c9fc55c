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
use rust_decimal::Decimal;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    Settings, clock,
    order::{Action, Order, Payment, Status as OrderStatus, Waiting},
    outbox,
    store::{Lease, OutboxEvent, Store, Versioned},
};
use platform::{backoff::Backoff, channel::GrpcChannel};

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

    /// `request` with the call deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Awaits `call`, turning its own overrun into `DEADLINE_EXCEEDED` (an
    /// in-process channel has no transport deadline of its own).
    pub async fn call<T>(&self, call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("system API call timed out")),
        }
    }
}

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
    /// Ids of orders written by this replica, for `WatchOrder`.
    pub changed: broadcast::Sender<String>,
    /// Bounds sagas running at once.
    running: Semaphore,
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
    /// Adds the event `kind` about `order` as it is now.
    pub fn emit(&mut self, order: &Order, kind: &str, now: i64) {
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
            changed: broadcast::channel(1024).0,
            running,
        }
    }

    fn lease_until(&self, now: i64) -> i64 {
        now + self.settings.lease.as_millis() as i64
    }

    /// After a commit: tell the publisher and the watchers.
    pub fn committed(&self, order_id: &str, had_events: bool) {
        if had_events {
            self.wake_publisher.notify_one();
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
            let Ok(_permit) = self.running.acquire().await else { return };
            if let Err(err) = self.run(&id, &shutdown).await {
                tracing::warn!(order_id = %id, error = %err, "saga paused; it resumes when its lease expires");
            }
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
                    effects.emit(&order, kind, now);
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
                    let result =
                        tracing::Instrument::instrument(self.execute(step, &mut next, &mut effects), span).await;
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
                            known = self.save(next, version, now, Lease::Keep(self.lease_until(now)), effects).await?;
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
                            known = self
                                .save(order, version, now, Lease::Keep(self.lease_until(now)), Effects::default())
                                .await?;
                        }
                        Err(StepError::Business(reason)) => {
                            let mut order = order.clone();
                            order.progress.running = None;
                            order.unwind(OrderStatus::Rejected, reason, now);
                            known = self
                                .save(order, version, now, Lease::Keep(self.lease_until(now)), Effects::default())
                                .await?;
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
                                p.waiting_on = Some(Waiting { system: step.system().to_owned(), since: now });
                                order.record(&format!("waiting:{}", step.system()), now, reason.clone());
                            }
                            tracing::info!(step = step.name(), retry_in = ?delay, %reason, "system unavailable; the order waits");
                            let due = now + delay.as_millis() as i64;
                            if self.store.save(&order, version, due, Lease::Release, &[], &[]).await?.is_some() {
                                self.committed(id, false);
                                return Ok(());
                            }
                        }
                        Err(err) => {
                            let mut order = order.clone();
                            order.progress.running = None;
                            order.progress.attempts += 1;
                            let attempts = order.progress.attempts;
                            if !step.is_compensation() && attempts > self.settings.retry_budget {
                                let reason = format!("{} kept failing after {attempts} attempts: {err}", step.name());
                                order.progress.attempts = 0;
                                order.unwind(OrderStatus::Rejected, reason, now);
                                known = self
                                    .save(order, version, now, Lease::Keep(self.lease_until(now)), Effects::default())
                                    .await?;
                                if known.is_some() {
                                    super::metrics::retries_exhausted();
                                }
                                continue;
                            }
                            let delay = self.backoff(attempts);
                            tracing::info!(step = step.name(), attempts, retry_in = ?delay, error = %err, "step will be retried");
                            order.record(&format!("retry:{}", step.name()), now, err.to_string());
                            let due = now + delay.as_millis() as i64;
                            if self.store.save(&order, version, due, Lease::Release, &[], &[]).await?.is_some() {
                                self.committed(id, false);
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
            if self.save(next, latest.version, now, Lease::Keep(self.lease_until(now)), effects).await?.is_some() {
                return Ok(());
            }
        }
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

    /// Notes on the timeline each line whose list price changed in the ERP
    /// since the order was accepted. The accepted price stands: the sales
    /// order is created with it.
    async fn note_price_changes(&self, order: &mut Order) {
        for line in order.lines.clone() {
            let Ok(Some(now_priced)) = self.prices.get(&line.sku).await else { continue };
            let current = erp_connect_proto::money::format(now_priced.unit_price);
            if current == line.unit_price {
                continue;
            }
            let detail =
                format!("{}: accepted at {}, the ERP's list price is now {current}", line.sku, line.unit_price);
            if !order.timeline.iter().any(|t| t.step == "price_changed" && t.detail == detail) {
                order.record("price_changed", clock::now_ms(), detail);
            }
        }
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
        let key = format!("{}:{}", order.id, step.name());
        let s = &self.systems;
        let fail = |status: Status| StepError::from_status(step.name(), &status);
        let now = clock::now_ms;
        match step {
            Action::ResolveCustomer => resolve_customer(s, order, &self.settings).await?,
            Action::AddAddress => {
                let to = order.customer.as_ref().and_then(|c| c.ship_to.clone()).unwrap_or_default();
                let request = erp::AddAddressRequest {
                    customer_id: order.customer_id.clone(),
                    address: Some(erp::Address {
                        id: String::new(),
                        street: to.street,
                        city: to.city,
                        postal_code: to.postal_code,
                        country: to.country,
                    }),
                };
                match s.call(s.customers().add_address(s.request(request))).await {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::InvalidArgument => {
                        let reason = format!("the ERP refused the shipping address: {}", status.message());
                        order.unwind(OrderStatus::Rejected, reason, now());
                        return Ok(());
                    }
                    Err(status) => return Err(fail(status)),
                }
                order.progress.address_pending = false;
                order.record("address_added", now(), "");
            }
            Action::CreditCheck => {
                let open = s
                    .call(s.receivables().get_open_amount(
                        s.request(erp::GetOpenAmountRequest { customer_id: order.customer_id.clone() }),
                    ))
                    .await
                    .map_err(fail)?;
                let (due, limit, total) = (money(&open.open_amount)?, money(&open.credit_limit)?, money(&order.total)?);
                if due + total > limit {
                    order.unwind(
                        OrderStatus::Rejected,
                        format!("over the credit limit: {due} open + {total} ordered > {limit} {}", order.currency),
                        now(),
                    );
                } else {
                    order.progress.credit_checked = true;
                    order.record("credit_checked", now(), "");
                }
            }
            Action::CreateSalesOrder => {
                self.note_price_changes(order).await;
                let request = erp::CreateSalesOrderRequest {
                    idempotency_key: key,
                    customer_id: order.customer_id.clone(),
                    reference: order.id.clone(),
                    currency: order.currency.clone(),
                    lines: order
                        .lines
                        .iter()
                        .map(|l| erp::SalesOrderLine {
                            sku: l.sku.clone(),
                            quantity: l.quantity,
                            unit_price: l.unit_price.clone(),
                            amount: String::new(),
                        })
                        .collect(),
                };
                let so = match s.call(s.sales_orders().create_sales_order(s.request(request))).await {
                    Ok(so) => so,
                    // Another order of the same new customer may be about to
                    // add its address: worth retries within the budget,
                    // then a rejection naming the reason.
                    Err(status) if precondition_is(&status, "NO_ADDRESS") => {
                        return Err(StepError::Retry(format!("{}: the customer has no address yet", step.name())));
                    }
                    Err(status) => return Err(fail(status)),
                };
                order.progress.sales_order_id = Some(so.id);
                order.record("sales_order_created", now(), "");
            }
            Action::ConfirmSalesOrder => {
                let id = order.progress.sales_order_id.clone().unwrap_or_default();
                let req = || s.request(erp::SalesOrderRequest { id: id.clone() });
                s.call(s.sales_orders().quote_sales_order(req())).await.map_err(fail)?;
                let so = match s.call(s.sales_orders().confirm_sales_order(req())).await {
                    Ok(so) => so,
                    Err(status) if status.code() == Code::FailedPrecondition => {
                        order.unwind(OrderStatus::Rejected, format!("the ERP refused: {}", status.message()), now());
                        return Ok(());
                    }
                    Err(status) => return Err(fail(status)),
                };
                let p = &mut order.progress;
                p.confirmed = true;
                p.sales_order_number = so.number;
                p.invoice_id = so.invoice_ids.first().cloned();
                p.shipment_ids = so.shipment_ids.clone();
                effects.refs.extend(so.shipment_ids);
                effects.refs.extend(so.invoice_ids);
                if !so.total.is_empty() {
                    order.total = so.total;
                }
                order.advance(OrderStatus::Confirmed, now());
                effects.emit(order, "order.confirmed", now());
            }
            Action::Authorize => {
                let Payment::Card { token } = &order.payment else { return Ok(()) };
                let request = pay::AuthorizeRequest {
                    idempotency_key: key,
                    payment_token: token.clone(),
                    currency: order.currency.clone(),
                    amount: order.total.clone(),
                    reference: order.id.clone(),
                };
                let payment = s.call(s.payments().authorize(s.request(request))).await.map_err(fail)?;
                order.progress.payment_id = Some(payment.id);
                if payment.status == pay::PaymentStatus::Declined as i32 {
                    order.progress.declined = true;
                    order.unwind(OrderStatus::Rejected, format!("card declined: {}", payment.decline_reason), now());
                } else {
                    order.record("payment_authorized", now(), "");
                }
            }
            Action::Capture => {
                let request = pay::CaptureRequest {
                    idempotency_key: key,
                    payment_id: order.progress.payment_id.clone().unwrap_or_default(),
                    amount: String::new(),
                };
                s.call(s.payments().capture(s.request(request))).await.map_err(fail)?;
                order.progress.captured = true;
                order.record("payment_captured", now(), "");
                effects.emit(order, "payment.captured", now());
            }
            Action::PostInvoice => {
                let invoice_id = match order.progress.invoice_id.clone() {
                    Some(id) => id,
                    None => {
                        let so = order.progress.sales_order_id.clone().unwrap_or_default();
                        let list = s
                            .call(
                                s.invoices().list_invoices(s.request(erp::ListInvoicesRequest { sales_order_id: so })),
                            )
                            .await
                            .map_err(fail)?;
                        let Some(first) = list.invoices.into_iter().next() else {
                            return Err(StepError::Retry("the ERP has not created the invoice yet".into()));
                        };
                        effects.refs.push(first.id.clone());
                        first.id
                    }
                };
                let invoice = s
                    .call(s.invoices().post_invoice(s.request(erp::InvoiceRequest { id: invoice_id.clone() })))
                    .await
                    .map_err(fail)?;
                let p = &mut order.progress;
                p.invoice_id = Some(invoice_id);
                p.invoice_posted = true;
                p.invoice_number = invoice.number;
                p.invoice_total = invoice.total;
                order.advance(OrderStatus::Invoiced, now());
                effects.emit(order, "invoice.issued", now());
                if invoice.state == erp::InvoiceState::Paid as i32 {
                    mark_paid(order, effects, now());
                }
            }
            Action::RecordCardPayment => {
                let request = erp::RecordInvoicePaymentRequest {
                    idempotency_key: key,
                    invoice_id: order.progress.invoice_id.clone().unwrap_or_default(),
                    currency: order.currency.clone(),
                    amount: order.progress.invoice_total.clone(),
                };
                s.call(s.invoices().record_invoice_payment(s.request(request))).await.map_err(fail)?;
                mark_paid(order, effects, now());
            }
            Action::Refund => {
                let request = pay::RefundRequest {
                    idempotency_key: key,
                    payment_id: order.progress.payment_id.clone().unwrap_or_default(),
                    amount: String::new(),
                };
                s.call(s.payments().refund(s.request(request))).await.map_err(fail)?;
                order.progress.refunded = true;
                order.record("compensation:refund", now(), "");
                effects.emit(order, "payment.refunded", now());
            }
            Action::Void => {
                let request = pay::VoidRequest {
                    idempotency_key: key,
                    payment_id: order.progress.payment_id.clone().unwrap_or_default(),
                };
                s.call(s.payments().void(s.request(request))).await.map_err(fail)?;
                order.progress.voided = true;
                order.record("compensation:void", now(), "");
                effects.emit(order, "payment.voided", now());
            }
            Action::CreditInvoice => {
                let id = order.progress.invoice_id.clone().unwrap_or_default();
                s.call(s.invoices().credit_invoice(s.request(erp::InvoiceRequest { id }))).await.map_err(fail)?;
                order.progress.invoice_credited = true;
                order.record("compensation:credit_invoice", now(), "");
                effects.emit(order, "invoice.credited", now());
            }
            Action::CancelSalesOrder => {
                let id = order.progress.sales_order_id.clone().unwrap_or_default();
                s.call(s.sales_orders().cancel_sales_order(s.request(erp::SalesOrderRequest { id })))
                    .await
                    .map_err(fail)?;
                order.progress.sales_order_cancelled = true;
                order.record("compensation:cancel_sales_order", now(), "");
            }
            Action::Wait | Action::Finish | Action::Done => {}
        }
        Ok(())
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

/// A decimal string from a system API; a malformed one is the API's bug,
/// retried in case it was transient.
fn money(text: &str) -> Result<Decimal, StepError> {
    if text.is_empty() {
        return Ok(Decimal::ZERO);
    }
    erp_connect_proto::money::parse(text).map_err(|e| StepError::Retry(format!("a system API sent {e}")))
}

/// Whether `status` is a precondition failure of the type `kind`.
fn precondition_is(status: &Status, kind: &str) -> bool {
    use tonic_types::StatusExt;
    status.code() == Code::FailedPrecondition
        && status
            .get_error_details()
            .precondition_failure()
            .is_some_and(|p| p.violations.iter().any(|v| v.r#type == kind))
}

/// Finds the order's ERP customer, by the id the caller named, else by
/// external id, then by verified e-mail, else creates it with the order's
/// idempotency key for customers (`customer:<external id>`, so two orders
/// of one new customer create it once).
async fn resolve_customer(s: &Systems, order: &mut Order, settings: &Settings) -> Result<(), StepError> {
    let step = Action::ResolveCustomer.name();
    let fail = |status: Status| StepError::from_status(step, &status);
    let now = clock::now_ms;
    let Some(wanted) = order.customer.clone() else { return Ok(()) };
    let find = |key| async move {
        let request = erp::FindCustomerRequest { key: Some(key) };
        match s.call(s.customers().find_customer(s.request(request))).await {
            Ok(customer) => Ok(Some(customer)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    };
    let (customer, created) = if !wanted.id.is_empty() {
        match s.call(s.customers().get_customer(s.request(erp::GetCustomerRequest { id: wanted.id.clone() }))).await {
            Ok(customer) => (customer, false),
            Err(status) if status.code() == Code::NotFound => {
                order.unwind(OrderStatus::Rejected, format!("no such customer {}", wanted.id), now());
                return Ok(());
            }
            Err(status) => return Err(fail(status)),
        }
    } else if let Some(found) =
        find(erp::find_customer_request::Key::ExternalId(wanted.external_id.clone())).await.map_err(fail)?
    {
        (found, false)
    } else if let Some(found) = match wanted.email.is_empty() {
        // A shopper the ERP already knows by (verified) e-mail is that
        // customer, not a new one.
        false => find(erp::find_customer_request::Key::Email(wanted.email.clone())).await.map_err(fail)?,
        true => None,
    } {
        (found, false)
    } else {
        let name = [&wanted.name, &wanted.email, &wanted.external_id]
            .into_iter()
            .find(|n| !n.is_empty())
            .cloned()
            .unwrap_or_default();
        let create = erp::CreateCustomerRequest {
            idempotency_key: format!("customer:{}", wanted.external_id),
            external_id: wanted.external_id.clone(),
            name,
            email: wanted.email.clone(),
            currency: order.currency.clone(),
            credit_limit: if wanted.credit_limit.is_empty() {
                settings.partner_credit_limit.clone()
            } else {
                wanted.credit_limit.clone()
            },
            addresses: vec![],
        };
        match s.call(s.customers().create_customer(s.request(create))).await {
            Ok(customer) => (customer, true),
            Err(status) if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition) => {
                // Another order of the same new customer may have created
                // it a moment ago (an ERP such as Tryton then refuses the
                // duplicate code rather than replaying our key): that
                // customer is this one.
                let external_id = erp::find_customer_request::Key::ExternalId(wanted.external_id.clone());
                match find(external_id).await.map_err(fail)? {
                    Some(found) => (found, false),
                    None => {
                        let reason = format!("the ERP refused the customer: {}", status.message());
                        order.unwind(OrderStatus::Rejected, reason, now());
                        return Ok(());
                    }
                }
            }
            Err(status) => return Err(fail(status)),
        }
    };
    if !customer.currency.is_empty() && customer.currency != order.currency {
        let reason = format!("the customer is invoiced in {}, the order is in {}", customer.currency, order.currency);
        order.unwind(OrderStatus::Rejected, reason, now());
        return Ok(());
    }
    order.customer_id = customer.id;
    if order.customer_external_id.is_empty() {
        order.customer_external_id = customer.external_id;
    }
    let p = &mut order.progress;
    p.customer_resolved = true;
    p.address_pending = wanted.ship_to.is_some() && customer.addresses.is_empty();
    order.record(if created { "customer_created" } else { "customer_found" }, now(), "");
    Ok(())
}
