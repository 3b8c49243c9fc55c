//! Deadlines, bounded retries for reads, and a circuit breaker around any
//! [`Connector`].
//!
//! Each connector call:
//! - for reads only, is retried after a retryable failure, at most
//!   [`Policy::read_retries`] times, with the product's one backoff rule
//!   (`platform::backoff`, on `backon`), while the breaker is closed.
//!   Writes are never retried here: their idempotency is the caller's key,
//!   not ours to spend.
//! - passes the [`Breaker`]: after [`Policy::failures_to_open`] consecutive
//!   retryable failures it opens, and calls fail at once with `UNAVAILABLE`
//!   for an ejection that starts at [`Policy::open_for`] and doubles (with
//!   jitter) with every failed probe up to [`Policy::max_open_for`], the
//!   way linkerd2-proxy's consecutive-failures breaker backs off; then one
//!   probe call is let through, and its success closes the breaker. A down
//!   ERP so costs callers no time and the ERP no load while it recovers,
//!   and a long outage is probed less and less often. Business errors count
//!   as success: the ERP is up and answering.
//! - waits for capacity: at most [`Policy::max_concurrent_calls`] calls
//!   are in flight toward the ERP at once (a FIFO queue, tokio's
//!   semaphore), and at most [`Policy::max_calls_per_second`] start per
//!   second (GCRA, `governor`, with a burst of one second's calls). A
//!   poorly behaved integration, or an order backlog draining after an
//!   outage, so queues here, where the deadline applies, rather than inside
//!   the ERP, where it slows every user. Time spent waiting counts against
//!   the attempt's deadline; a call still waiting at its deadline fails
//!   [`Error::Unavailable`] without reaching the ERP (and without counting
//!   against the breaker: the ERP did nothing wrong).
//! - is bounded by [`Policy::deadline`], cut to what is left of the
//!   deadline of the caller it is made for (`platform::deadline`): past it
//!   the attempt is [`Error::Unavailable`].
//!
//! Metrics (`platform::metrics`), labelled `system="erp"` and `backend`
//! (`embedded`, `tryton`): `erp_connect_backend_calls_total{operation,
//! outcome}` and `erp_connect_backend_call_duration_seconds{operation}` per
//! connector call, retries included (`operation` is the connector method,
//! e.g. `create_sales_order`; `outcome` is `ok`, `error` for an answer the
//! ERP gave, or `unavailable`), and `erp_connect_circuit_breaker_state`: 0
//! closed, 1 open, 2 half-open (set when the probe call is let through);
//! `erp_connect_backend_calls_in_flight`, the attempts holding a slot now;
//! `erp_connect_backend_throttled_total{outcome}`, attempts that had to
//! wait for capacity (`outcome` `waited`: then went through; `refused`:
//! their deadline passed first);
//! and, once the ERP has said what it is, `erp_connect_erp_info{backend,
//! release, credit_limits}` = 1.

use std::{future::Future, num::NonZeroU32, sync::Mutex, time::Duration};

use backon::Retryable;
use erp_connect_proto::erp::v1::{
    Address, Capabilities, Change, Customer, ErasureAction, Invoice, OpenAmount, Product, SalesOrder, Shipment,
    StockLevel,
};
use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::{sync::Semaphore, time::Instant};

use platform::{
    backoff::Backoff,
    metrics::facade::{Gauge, counter, gauge, histogram},
};

use super::{Connector, CustomerChange, CustomerKey, Error, InvoicePayment, NewCustomer, NewSalesOrder, Page};

/// Tunables of [`Resilient`]: `[erp.resilience]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Deadline of one attempt. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Extra attempts of a read after a retryable failure. Default 2.
    pub read_retries: u32,
    /// Backoff before the first read retry; doubled (jittered) for each
    /// further one. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Consecutive retryable failures that open the breaker. Default 5.
    pub failures_to_open: u32,
    /// How long the breaker first stays open before letting a probe
    /// through. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest it stays open, however many probes failed. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Most calls in flight toward the ERP at once, per system tier
    /// replica. Default: [`TRYTON_MAX_CONCURRENT_CALLS`] for Tryton, no cap
    /// for the embedded ERP.
    pub max_concurrent_calls: Option<u32>,
    /// Most calls started per second, per system tier replica (with a burst
    /// of as many). Default: [`TRYTON_MAX_CALLS_PER_SECOND`] for Tryton, no
    /// cap for the embedded ERP.
    pub max_calls_per_second: Option<u32>,
}

/// Tryton's default cap on concurrent calls. One `trytond` process runs
/// Python under one interpreter lock and takes row locks in its database:
/// past a few calls at once, more concurrency adds no throughput, only
/// queueing inside Tryton, where every interactive user's call waits behind
/// ours. Eight keeps Tryton busy across its database waits and leaves it
/// room for its own users: measured (README, "Load budget toward the
/// ERP"), a clerk's call waits a half to a third less at the 99th
/// percentile while erp-connect works off an order backlog, and the orders
/// finish no slower. A Tryton run with several workers can be given more.
pub const TRYTON_MAX_CONCURRENT_CALLS: u32 = 8;
/// Tryton's default cap on calls per second: far above what the order
/// flows get from one Tryton (an order takes six to a dozen calls of tens
/// to hundreds of milliseconds each, so a Tryton serves a few orders per
/// second at most), so it only bites on a storm of cheap reads, which it
/// spreads out.
pub const TRYTON_MAX_CALLS_PER_SECOND: u32 = 100;

impl Default for Policy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(15),
            read_retries: 2,
            backoff: Duration::from_millis(50),
            failures_to_open: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            max_concurrent_calls: None,
            max_calls_per_second: None,
        }
    }
}

impl Policy {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline.is_zero() || self.open_for.is_zero() || self.failures_to_open == 0 {
            return Err("erp.resilience: deadline, open_for and failures_to_open must be above zero".into());
        }
        if self.max_open_for < self.open_for {
            return Err("erp.resilience.max_open_for must be at least open_for".into());
        }
        if self.max_concurrent_calls == Some(0) || self.max_calls_per_second == Some(0) {
            return Err("erp.resilience: max_concurrent_calls and max_calls_per_second must be above zero".into());
        }
        Ok(())
    }

    /// This policy with the caps not configured set to `concurrent` and
    /// `per_second`: a backend's defaults.
    pub fn with_default_caps(mut self, concurrent: u32, per_second: u32) -> Self {
        self.max_concurrent_calls.get_or_insert(concurrent);
        self.max_calls_per_second.get_or_insert(per_second);
        self
    }
}

/// Tokio's clock for the rate limiter, so that it follows paused time in
/// tests like the deadlines do.
#[derive(Debug, Clone)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// The load budget toward the ERP: a slot among the concurrent calls and a
/// start within the rate.
struct Capacity {
    slots: Option<Semaphore>,
    rate: Option<RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>>,
    clock: TokioClock,
    in_flight: Gauge,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("free_slots", &self.slots.as_ref().map(Semaphore::available_permits))
            .field("rate", &self.rate.is_some())
            .finish()
    }
}

/// A slot held by an attempt; the gauge follows it.
struct Slot<'c> {
    _permit: Option<tokio::sync::SemaphorePermit<'c>>,
    in_flight: &'c Gauge,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
}

impl Capacity {
    fn new(policy: &Policy, backend: &'static str) -> Self {
        let clock = TokioClock(Instant::now());
        let rate = policy
            .max_calls_per_second
            .and_then(NonZeroU32::new)
            .map(|per_second| RateLimiter::new(Quota::per_second(per_second), InMemoryState::default(), clock.clone()));
        let slots = policy.max_concurrent_calls.map(|n| Semaphore::new(n as usize));
        let in_flight = gauge!("erp_connect_backend_calls_in_flight", "system" => SYSTEM, "backend" => backend);
        Self { slots, rate, clock, in_flight }
    }

    /// Waits for a slot, then for the rate to allow one more start; whether
    /// it had to wait is told by the second value.
    async fn acquire(&self) -> (Slot<'_>, bool) {
        let mut waited = false;
        let permit = match &self.slots {
            None => None,
            Some(slots) => Some(match slots.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    waited = true;
                    slots.acquire().await.expect("the semaphore is never closed")
                }
            }),
        };
        if let Some(rate) = &self.rate {
            // Under a concurrency cap only slot holders get here, so few
            // contend for the rate and the queue stays first come, first served.
            while let Err(not_until) = rate.check() {
                waited = true;
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
        self.in_flight.increment(1.0);
        (Slot { _permit: permit, in_flight: &self.in_flight }, waited)
    }
}

/// The `system` label of the ERP's metrics.
const SYSTEM: &str = "erp";
const GAUGE_CLOSED: f64 = 0.0;
const GAUGE_OPEN: f64 = 1.0;
const GAUGE_HALF_OPEN: f64 = 2.0;

fn describe() {
    use platform::metrics::facade::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "erp_connect_backend_calls_total",
        "Calls to a backend system, by operation and outcome (ok, error, unavailable)."
    );
    describe_histogram!(
        "erp_connect_backend_call_duration_seconds",
        Unit::Seconds,
        "Time of one call to a backend system, retries included."
    );
    describe_gauge!(
        "erp_connect_circuit_breaker_state",
        "Circuit breaker of a backend: 0 closed, 1 open, 2 half-open."
    );
    describe_gauge!("erp_connect_backend_calls_in_flight", "Calls in flight toward a backend system now.");
    describe_counter!(
        "erp_connect_backend_throttled_total",
        "Calls that waited for capacity toward a backend: waited (then went through) or refused (deadline passed)."
    );
    describe_gauge!(
        "erp_connect_erp_info",
        "The connected ERP: its backend, release and whether it keeps credit limits (always 1)."
    );
}

/// Whether the breaker lets calls through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe call is on its way.
    HalfOpen,
}

/// A circuit breaker's counts, shared by every call through one [`Resilient`].
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    ejection: Backoff,
    state: Mutex<Counts>,
    /// `erp_connect_circuit_breaker_state` of this breaker.
    gauge: Gauge,
}

#[derive(Debug)]
struct Counts {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Times it opened (again) since it last closed: the ejection grows with it.
    ejections: u32,
    probing: bool,
}

/// The breaker refused the call.
#[derive(Debug, thiserror::Error)]
#[error("the ERP circuit breaker is open")]
struct BreakerOpen;

/// An admitted call: tells the breaker how it went, or, dropped before it
/// ended (its caller went away), that it tells nothing about the ERP, so
/// that a probe never stays "on its way" for ever and wedges the breaker.
struct Admitted<'b> {
    breaker: &'b Breaker,
    recorded: bool,
}

impl Admitted<'_> {
    fn record(mut self, healthy: bool) {
        self.recorded = true;
        self.breaker.record(healthy);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.counts().probing = false;
        }
    }
}

impl Breaker {
    fn new(policy: &Policy, backend: &'static str) -> Self {
        // Before the first handle: one made without a recorder stays a no-op.
        platform::metrics::install();
        describe();
        let gauge = gauge!("erp_connect_circuit_breaker_state", "system" => SYSTEM, "backend" => backend);
        gauge.set(GAUGE_CLOSED);
        // Twice open_for as the backoff's base: its first delay lies in
        // [open_for, 2 × open_for).
        let ejection = Backoff::new(policy.open_for * 2, policy.max_open_for.max(policy.open_for));
        Self {
            failures_to_open: policy.failures_to_open,
            ejection,
            state: Mutex::new(Counts { consecutive_failures: 0, open_until: None, ejections: 0, probing: false }),
            gauge,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        match self.counts().open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn admit(&self) -> Result<Admitted<'_>, Error> {
        let mut b = self.counts();
        match b.open_until {
            None => {}
            Some(until) if Instant::now() < until => return Err(Error::Unavailable(Box::new(BreakerOpen))),
            Some(_) if b.probing => return Err(Error::Unavailable(Box::new(BreakerOpen))),
            Some(_) => {
                b.probing = true;
                self.gauge.set(GAUGE_HALF_OPEN);
            }
        }
        Ok(Admitted { breaker: self, recorded: false })
    }

    fn record(&self, healthy: bool) {
        let mut b = self.counts();
        b.probing = false;
        if healthy {
            if b.open_until.is_some() {
                tracing::info!("ERP circuit breaker closed");
                self.gauge.set(GAUGE_CLOSED);
            }
            b.consecutive_failures = 0;
            b.ejections = 0;
            b.open_until = None;
        } else {
            b.consecutive_failures = b.consecutive_failures.saturating_add(1);
            if b.consecutive_failures >= self.failures_to_open || b.open_until.is_some() {
                let ejection = self.ejection.delay(b.ejections);
                if b.open_until.is_none() {
                    tracing::warn!(failures = b.consecutive_failures, open_for = ?ejection, "ERP circuit breaker opened");
                }
                b.ejections = b.ejections.saturating_add(1);
                b.open_until = Some(Instant::now() + ejection);
                self.gauge.set(GAUGE_OPEN);
            }
        }
    }
}

/// `inner` with deadlines, read retries and a circuit breaker.
#[derive(Debug)]
pub struct Resilient<C> {
    inner: C,
    policy: Policy,
    breaker: Breaker,
    capacity: Capacity,
    /// The `backend` label of its metrics.
    backend: &'static str,
}

impl<C: Connector> Resilient<C> {
    /// Wraps `inner`; its metrics say `backend="unnamed"`.
    pub fn new(inner: C, policy: Policy) -> Self {
        Self::named(inner, policy, "unnamed")
    }

    /// Wraps `inner`, the backend `backend` (`embedded`, `tryton`) in metrics.
    pub fn named(inner: C, policy: Policy, backend: &'static str) -> Self {
        let breaker = Breaker::new(&policy, backend);
        Self { capacity: Capacity::new(&policy, backend), breaker, inner, policy, backend }
    }

    /// Counts and times one call, retries included.
    fn observe<T>(&self, operation: &'static str, result: &Result<T, Error>, started: std::time::Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) if err.is_retryable() => "unavailable",
            Err(_) => "error",
        };
        let backend = self.backend;
        counter!("erp_connect_backend_calls_total",
            "system" => SYSTEM, "backend" => backend, "operation" => operation, "outcome" => outcome)
        .increment(1);
        histogram!("erp_connect_backend_call_duration_seconds",
            "system" => SYSTEM, "backend" => backend, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// One attempt: through the breaker, then the load budget, within the
    /// deadline.
    async fn attempt<'a, T, Fut>(&'a self, call: impl FnOnce(&'a C) -> Fut) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        // An open breaker refuses at once, without queueing.
        let admitted = self.breaker.admit()?;
        // Never longer than the caller waits for the answer.
        let deadline = Instant::now() + platform::deadline::bounded(self.policy.deadline);
        let throttled = |outcome: &'static str| {
            counter!("erp_connect_backend_throttled_total",
                "system" => SYSTEM, "backend" => self.backend, "outcome" => outcome)
            .increment(1);
        };
        let (_slot, waited) = match tokio::time::timeout_at(deadline, self.capacity.acquire()).await {
            Ok(acquired) => acquired,
            Err(_) => {
                throttled("refused");
                // Dropping `admitted` unrecorded: this says nothing about the ERP.
                return Err(Error::Unavailable("no capacity toward the ERP within the deadline".into()));
            }
        };
        if waited {
            throttled("waited");
        }
        let outcome = match tokio::time::timeout_at(deadline, call(&self.inner)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Unavailable("the ERP did not answer within the deadline".into())),
        };
        // Business errors mean the ERP is up and answering.
        admitted.record(!matches!(&outcome, Err(e) if e.is_retryable()));
        outcome
    }

    async fn read<'a, T, F, Fut>(&'a self, operation: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let started = std::time::Instant::now();
        let retries = Backoff::new(self.policy.backoff, self.policy.deadline)
            .builder()
            .with_max_times(self.policy.read_retries as usize);
        let result = (|| self.attempt(&call))
            .retry(retries)
            // A retry cannot get through an open breaker, and a probe is not retried.
            .when(|err: &Error| err.is_retryable() && self.breaker.state() == BreakerState::Closed)
            .await;
        self.observe(operation, &result, started);
        result
    }

    async fn write<'a, T, F, Fut>(&'a self, operation: &'static str, call: F) -> Result<T, Error>
    where
        F: Fn(&'a C) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let started = std::time::Instant::now();
        let result = self.attempt(call).await;
        self.observe(operation, &result, started);
        result
    }
}

impl<C: Connector> Connector for Resilient<C> {
    async fn list_products(&self, after: Option<&str>, limit: usize) -> Result<Page<Product>, Error> {
        self.read("list_products", |c| c.list_products(after, limit)).await
    }
    async fn get_product(&self, sku: &str) -> Result<Product, Error> {
        self.read("get_product", |c| c.get_product(sku)).await
    }
    async fn stock_levels(&self, skus: &[String]) -> Result<Vec<StockLevel>, Error> {
        self.read("stock_levels", |c| c.stock_levels(skus)).await
    }
    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.read("get_customer", |c| c.get_customer(id)).await
    }
    async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        self.read("find_customer", |c| c.find_customer(key)).await
    }
    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        self.write("create_customer", |c| c.create_customer(new)).await
    }
    async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        self.write("update_credit_limit", |c| c.update_credit_limit(id, limit)).await
    }
    async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        self.write("add_address", |c| c.add_address(id, address)).await
    }
    async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        self.write("update_customer", |c| c.update_customer(id, change)).await
    }
    async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        self.write("erase_customer", |c| c.erase_customer(id)).await
    }
    async fn create_sales_order(&self, new: &NewSalesOrder) -> Result<SalesOrder, Error> {
        self.write("create_sales_order", |c| c.create_sales_order(new)).await
    }
    async fn quote_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.write("quote_sales_order", |c| c.quote_sales_order(id)).await
    }
    async fn confirm_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.write("confirm_sales_order", |c| c.confirm_sales_order(id)).await
    }
    async fn cancel_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.write("cancel_sales_order", |c| c.cancel_sales_order(id)).await
    }
    async fn get_sales_order(&self, id: &str) -> Result<SalesOrder, Error> {
        self.read("get_sales_order", |c| c.get_sales_order(id)).await
    }
    async fn list_sales_orders(
        &self,
        customer_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SalesOrder>, Error> {
        self.read("list_sales_orders", |c| c.list_sales_orders(customer_id, after, limit)).await
    }
    async fn list_invoices(&self, sales_order_id: &str) -> Result<Vec<Invoice>, Error> {
        self.read("list_invoices", |c| c.list_invoices(sales_order_id)).await
    }
    async fn get_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.read("get_invoice", |c| c.get_invoice(id)).await
    }
    async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.write("post_invoice", |c| c.post_invoice(id)).await
    }
    async fn record_invoice_payment(&self, payment: &InvoicePayment) -> Result<Invoice, Error> {
        self.write("record_invoice_payment", |c| c.record_invoice_payment(payment)).await
    }
    async fn credit_invoice(&self, id: &str) -> Result<Invoice, Error> {
        self.write("credit_invoice", |c| c.credit_invoice(id)).await
    }
    async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        self.read("list_shipments", |c| c.list_shipments(sales_order_id)).await
    }
    async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        self.write("complete_shipment", |c| c.complete_shipment(id)).await
    }
    async fn open_amount(&self, customer_id: &str) -> Result<OpenAmount, Error> {
        self.read("open_amount", |c| c.open_amount(customer_id)).await
    }
    async fn capabilities(&self) -> Result<Capabilities, Error> {
        let found = self.read("capabilities", |c| c.capabilities()).await?;
        gauge!("erp_connect_erp_info",
            "backend" => self.backend, "release" => found.release.clone(),
            "credit_limits" => if found.credit_limits { "true" } else { "false" })
        .set(1.0);
        Ok(found)
    }
    async fn list_changes(&self, since: Option<&str>, limit: usize) -> Result<(Vec<Change>, String), Error> {
        self.read("list_changes", |c| c.list_changes(since, limit)).await
    }
    async fn is_ready(&self) -> bool {
        // Readiness reflects the ERP itself, not the breaker.
        self.inner.is_ready().await
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// What one call of the fake answers.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Ok,
        /// A retryable failure (the ERP is down).
        Down,
        /// A business error: the ERP is up and says no.
        Refused,
        /// No answer at all.
        Hang,
        /// `Ok` once the test opens the gate for it.
        Gated,
    }

    /// A connector whose `get_product` (a read) and `post_invoice` (a write)
    /// answer scripted outcomes, then `Ok`, and count their calls.
    struct Fake {
        script: Mutex<VecDeque<Outcome>>,
        calls: AtomicU32,
        /// A permit per `Gated` call let through.
        gate: tokio::sync::Semaphore,
    }

    impl Fake {
        fn scripted(outcomes: &[Outcome]) -> Self {
            Self {
                script: Mutex::new(outcomes.iter().copied().collect()),
                calls: AtomicU32::new(0),
                gate: tokio::sync::Semaphore::new(0),
            }
        }

        async fn answer<T>(&self, ok: T) -> Result<T, Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.script.lock().expect("script").pop_front().unwrap_or(Outcome::Ok);
            match next {
                Outcome::Ok => Ok(ok),
                Outcome::Down => Err(Error::Unavailable("down".into())),
                Outcome::Refused => Err(Error::precondition("NO", "x", "refused")),
                Outcome::Hang => std::future::pending().await,
                Outcome::Gated => {
                    self.gate.acquire().await.expect("gate").forget();
                    Ok(ok)
                }
            }
        }
    }

    impl Default for Fake {
        fn default() -> Self {
            Self::scripted(&[])
        }
    }

    fn unused<T>() -> Result<T, Error> {
        Err(Error::Backend("not used by these tests".into()))
    }

    impl Connector for Fake {
        async fn list_products(&self, _: Option<&str>, _: usize) -> Result<Page<Product>, Error> {
            unused()
        }
        async fn get_product(&self, sku: &str) -> Result<Product, Error> {
            self.answer(Product { sku: sku.into(), ..Default::default() }).await
        }
        async fn stock_levels(&self, _: &[String]) -> Result<Vec<StockLevel>, Error> {
            unused()
        }
        async fn get_customer(&self, _: &str) -> Result<Customer, Error> {
            unused()
        }
        async fn find_customer(&self, _: &CustomerKey) -> Result<Customer, Error> {
            unused()
        }
        async fn create_customer(&self, _: &NewCustomer) -> Result<Customer, Error> {
            unused()
        }
        async fn update_credit_limit(&self, _: &str, _: Decimal) -> Result<Customer, Error> {
            unused()
        }
        async fn add_address(&self, _: &str, _: &Address) -> Result<Customer, Error> {
            unused()
        }
        async fn update_customer(&self, _: &str, _: &CustomerChange) -> Result<Customer, Error> {
            unused()
        }
        async fn erase_customer(&self, _: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
            unused()
        }
        async fn create_sales_order(&self, _: &NewSalesOrder) -> Result<SalesOrder, Error> {
            unused()
        }
        async fn quote_sales_order(&self, _: &str) -> Result<SalesOrder, Error> {
            unused()
        }
        async fn confirm_sales_order(&self, _: &str) -> Result<SalesOrder, Error> {
            unused()
        }
        async fn cancel_sales_order(&self, _: &str) -> Result<SalesOrder, Error> {
            unused()
        }
        async fn get_sales_order(&self, _: &str) -> Result<SalesOrder, Error> {
            unused()
        }
        async fn list_sales_orders(&self, _: &str, _: Option<&str>, _: usize) -> Result<Page<SalesOrder>, Error> {
            unused()
        }
        async fn list_invoices(&self, _: &str) -> Result<Vec<Invoice>, Error> {
            unused()
        }
        async fn get_invoice(&self, _: &str) -> Result<Invoice, Error> {
            unused()
        }
        async fn post_invoice(&self, id: &str) -> Result<Invoice, Error> {
            self.answer(Invoice { id: id.into(), ..Default::default() }).await
        }
        async fn record_invoice_payment(&self, _: &InvoicePayment) -> Result<Invoice, Error> {
            unused()
        }
        async fn credit_invoice(&self, _: &str) -> Result<Invoice, Error> {
            unused()
        }
        async fn list_shipments(&self, _: &str) -> Result<Vec<Shipment>, Error> {
            unused()
        }
        async fn complete_shipment(&self, _: &str) -> Result<Shipment, Error> {
            unused()
        }
        async fn open_amount(&self, _: &str) -> Result<OpenAmount, Error> {
            unused()
        }
        async fn list_changes(&self, _: Option<&str>, _: usize) -> Result<(Vec<Change>, String), Error> {
            unused()
        }
        async fn capabilities(&self) -> Result<Capabilities, Error> {
            unused()
        }
        async fn is_ready(&self) -> bool {
            true
        }
    }

    fn policy() -> Policy {
        Policy {
            deadline: Duration::from_secs(1),
            read_retries: 2,
            backoff: Duration::from_millis(50),
            failures_to_open: 3,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(40),
            max_concurrent_calls: None,
            max_calls_per_second: None,
        }
    }

    fn resilient(outcomes: &[Outcome]) -> Resilient<Fake> {
        Resilient::new(Fake::scripted(outcomes), policy())
    }

    fn calls(erp: &Resilient<Fake>) -> u32 {
        erp.inner.calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_reads_are_retried_past_a_blip_with_backoff() {
        let erp = resilient(&[Outcome::Down, Outcome::Down]);
        let started = Instant::now();
        assert_eq!(erp.get_product("A").await.expect("third attempt").sku, "A");
        assert_eq!(calls(&erp), 3);
        // Two jittered backoffs: 25-50 ms, then 50-100 ms.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(75) && waited <= Duration::from_millis(150), "{waited:?}");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_reads_give_up_after_their_retries() {
        let erp = resilient(&[Outcome::Down, Outcome::Down, Outcome::Down, Outcome::Ok]);
        assert!(erp.get_product("A").await.expect_err("still down").is_retryable());
        assert_eq!(calls(&erp), 3, "one attempt and two retries");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_writes_and_business_errors_are_not_retried() {
        let erp = resilient(&[Outcome::Down]);
        assert!(erp.post_invoice("I").await.expect_err("down").is_retryable());
        assert_eq!(calls(&erp), 1, "a write is the caller's to retry");
        let erp = resilient(&[Outcome::Refused]);
        assert!(matches!(erp.get_product("A").await, Err(Error::FailedPrecondition { .. })));
        assert_eq!(calls(&erp), 1, "a refusal is an answer");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_a_call_past_its_deadline_is_unavailable() {
        let erp = resilient(&[Outcome::Hang, Outcome::Hang, Outcome::Hang]);
        let started = Instant::now();
        assert!(erp.post_invoice("I").await.expect_err("no answer").is_retryable());
        assert_eq!(started.elapsed(), Duration::from_secs(1), "the write waited one deadline");
        let erp = resilient(&[Outcome::Hang, Outcome::Ok]);
        assert_eq!(erp.get_product("A").await.expect("the retry answers").sku, "A");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_an_attempt_never_outlives_its_callers_deadline() {
        let erp = resilient(&[Outcome::Hang, Outcome::Hang, Outcome::Hang]);
        let started = Instant::now();
        let cut = platform::deadline::scope(Duration::from_millis(300), erp.post_invoice("I")).await;
        assert!(cut.expect_err("no answer").is_retryable());
        assert_eq!(started.elapsed(), Duration::from_millis(300), "the caller's 300 ms, not the policy's 1 s");
        let started = Instant::now();
        assert!(erp.post_invoice("I").await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1), "without a caller's deadline, the policy's");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_the_breaker_opens_fails_fast_and_closes_after_a_probe() {
        let erp = resilient(&[Outcome::Down; 3]);
        for _ in 0..3 {
            assert!(erp.post_invoice("I").await.is_err());
        }
        assert_eq!(erp.breaker_state(), BreakerState::Open);
        let refused = erp.get_product("A").await.expect_err("open");
        assert!(refused.is_retryable());
        assert_eq!(calls(&erp), 3, "an open breaker calls nobody, and a read does not retry against it");

        // The first ejection lasts 5 to 10 s (open_for, jittered).
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(erp.breaker_state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(5_100)).await;
        assert_eq!(erp.breaker_state(), BreakerState::HalfOpen);
        assert_eq!(erp.get_product("A").await.expect("the probe").sku, "A");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);
        assert_eq!(calls(&erp), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_a_failed_probe_opens_the_breaker_again_and_refusals_keep_it_closed() {
        let erp = resilient(&[Outcome::Down, Outcome::Down, Outcome::Down, Outcome::Down]);
        for _ in 0..3 {
            assert!(erp.post_invoice("I").await.is_err());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(erp.post_invoice("I").await.is_err(), "the probe fails");
        assert_eq!(erp.breaker_state(), BreakerState::Open);
        // Each failed probe doubles the ejection: 10 to 20 s now, up to
        // max_open_for (40 s) however long the outage.
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert_eq!(erp.breaker_state(), BreakerState::Open, "the second ejection is longer");
        tokio::time::advance(Duration::from_millis(10_100)).await;
        assert_eq!(erp.breaker_state(), BreakerState::HalfOpen);
        let erp = resilient(&[Outcome::Down; 11]);
        for _ in 0..3 {
            assert!(erp.post_invoice("I").await.is_err());
        }
        for _ in 0..8 {
            tokio::time::advance(Duration::from_secs(40)).await;
            assert_eq!(erp.breaker_state(), BreakerState::HalfOpen, "never open past max_open_for");
            assert!(erp.post_invoice("I").await.is_err(), "a failed probe");
        }
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(erp.get_product("A").await.expect("the probe answers").sku, "A");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);

        let erp = resilient(&[Outcome::Down, Outcome::Down, Outcome::Refused, Outcome::Down, Outcome::Down]);
        for _ in 0..5 {
            let _ = erp.post_invoice("I").await;
        }
        assert_eq!(erp.breaker_state(), BreakerState::Closed, "a refusal resets the count");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_a_probe_whose_caller_went_away_does_not_wedge_the_breaker() {
        let erp = resilient(&[Outcome::Down, Outcome::Down, Outcome::Down, Outcome::Hang]);
        for _ in 0..3 {
            assert!(erp.post_invoice("I").await.is_err());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        // The probe's caller gives up before the probe ends.
        let probe = erp.post_invoice("I");
        assert!(tokio::time::timeout(Duration::from_millis(10), probe).await.is_err());
        assert_eq!(erp.get_product("A").await.expect("the next call probes").sku, "A");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);
    }

    /// Lets spawned calls run until `erp`'s fake has been called `n` times.
    async fn until_called(erp: &Resilient<Fake>, n: u32) {
        while calls(erp) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_a_call_over_the_concurrency_cap_waits_for_a_slot() {
        let policy = Policy { max_concurrent_calls: Some(2), ..policy() };
        let erp = std::sync::Arc::new(Resilient::new(Fake::scripted(&[Outcome::Gated; 3]), policy));
        let spawn = |erp: &std::sync::Arc<Resilient<Fake>>| {
            let erp = erp.clone();
            tokio::spawn(async move { erp.post_invoice("I").await })
        };
        let (first, second) = (spawn(&erp), spawn(&erp));
        until_called(&erp, 2).await;
        let third = spawn(&erp);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(calls(&erp), 2, "the third call waits while two are in flight");
        assert!(!third.is_finished());
        erp.inner.gate.add_permits(1);
        until_called(&erp, 3).await;
        let done = usize::from(first.is_finished()) + usize::from(second.is_finished());
        assert_eq!(done, 1, "the third call got the slot the finished one freed");
        erp.inner.gate.add_permits(2);
        for call in [first, second, third] {
            assert_eq!(call.await.expect("task").expect("answered").id, "I");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_a_call_that_gets_no_capacity_before_its_deadline_is_unavailable() {
        let policy = Policy { max_concurrent_calls: Some(1), ..policy() };
        let erp = std::sync::Arc::new(Resilient::new(Fake::scripted(&[Outcome::Gated]), policy));
        let holder = {
            let erp = erp.clone();
            tokio::spawn(async move { erp.post_invoice("I").await })
        };
        until_called(&erp, 1).await;
        // More refusals than open the breaker (within the holder's 1 s
        // deadline): waiting is not the ERP failing.
        for _ in 0..4 {
            let started = Instant::now();
            let refused = platform::deadline::scope(Duration::from_millis(200), erp.post_invoice("J")).await;
            assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
            assert_eq!(started.elapsed(), Duration::from_millis(200), "the wait counts against the deadline");
        }
        assert_eq!(calls(&erp), 1, "no refused call reached the ERP");
        assert_eq!(erp.breaker_state(), BreakerState::Closed);
        erp.inner.gate.add_permits(1);
        assert_eq!(holder.await.expect("task").expect("answered").id, "I");
        assert_eq!(erp.post_invoice("K").await.expect("a free slot").id, "K");
    }

    #[tokio::test(start_paused = true)]
    async fn resilience_calls_over_the_rate_cap_are_spread_out() {
        let erp = Resilient::new(Fake::default(), Policy { max_calls_per_second: Some(10), ..policy() });
        let started = Instant::now();
        for _ in 0..10 {
            erp.get_product("A").await.expect("within the burst");
        }
        assert_eq!(started.elapsed(), Duration::ZERO, "a second's worth goes at once");
        erp.get_product("A").await.expect("after a wait");
        assert_eq!(started.elapsed(), Duration::from_millis(100), "then one every tenth of a second");
        erp.get_product("A").await.expect("after a wait");
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(calls(&erp), 12);
    }

    #[test]
    fn resilience_caps_must_be_above_zero_and_default_per_backend() {
        assert!(Policy { max_concurrent_calls: Some(0), ..Policy::default() }.validate().is_err());
        assert!(Policy { max_calls_per_second: Some(0), ..Policy::default() }.validate().is_err());
        let tryton = Policy { max_calls_per_second: Some(5), ..Policy::default() }.with_default_caps(8, 100);
        assert_eq!((tryton.max_concurrent_calls, tryton.max_calls_per_second), (Some(8), Some(5)), "configured wins");
        assert!(tryton.validate().is_ok());
    }

    /// Not a check: how much the wrapper adds to a call that answers at
    /// once (`cargo test -p system-apis --release resilience_overhead -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    async fn resilience_overhead() {
        const N: u32 = 200_000;
        let fake = Fake::default();
        let started = std::time::Instant::now();
        for _ in 0..N {
            let _ = fake.get_product("A").await;
        }
        let bare = started.elapsed() / N;
        let erp = Resilient::new(Fake::default(), Policy::default());
        for (name, write) in [("read", false), ("write", true)] {
            let started = std::time::Instant::now();
            for _ in 0..N {
                if write {
                    let _ = erp.post_invoice("I").await;
                } else {
                    let _ = erp.get_product("A").await;
                }
            }
            println!("{name}: {:?} per call through Resilient, {bare:?} bare", started.elapsed() / N);
        }
    }
}
