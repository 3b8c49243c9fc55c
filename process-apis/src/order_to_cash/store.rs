//! The saga store: orders with their saga state, the transactional outbox,
//! ERP-id lookups and feed cursors, in SQLite (default) or PostgreSQL
//! through sqlx's `Any` driver.
//!
//! Every state change of an order is one transaction that also writes the
//! events it produced ([`Store::save`]), guarded by the order's version so
//! that two writers never overwrite each other. Writes are [`Batch`]es: on
//! SQLite each runs in one call on the store's writer thread. Which replica runs a saga
//! is decided by a lease ([`Store::claim_due`]); on PostgreSQL the claim
//! uses `FOR UPDATE SKIP LOCKED` so replicas never wait on each other.
//!
//! Reads of one order for a caller ([`Store::read`]) come from a cache
//! kept by this process's own writes: a change made here is visible at
//! once; a change made by another replica (PostgreSQL) within
//! [`READ_TTL`]. The saga's own reads ([`Store::load`]) always go to the
//! database, since they need the latest version to write.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

pub use platform::database::ReplicaLock;
use platform::database::{Batch, Database, Dialect, Migrations, Value};
use sqlx::{Row, any::AnyRow, migrate::Migrator};

use super::order::{Action, Order};

/// Which orders to list; empty fields match everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// Only this tenant's.
    pub tenant: &'a str,
    /// Only this customer's, by external id.
    pub customer_external_id: &'a str,
    /// Only this customer's, by ERP id.
    pub customer_id: &'a str,
    /// Only orders in this status (`"confirmed"`, ...).
    pub status: &'a str,
    /// Only the order with this id, or orders whose external reference
    /// starts with it.
    pub query: &'a str,
}

/// What can go wrong in the store. Every variant is worth a retry except
/// [`Error::Corrupt`] and [`Error::Open`] for a bad URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("saga store: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be opened or migrated.
    #[error("saga store: {0}")]
    Open(#[from] platform::database::Error),
    /// A stored order does not parse (a bug or a manual edit).
    #[error("saga store: order document does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
}

static SQLITE: Migrator = sqlx::migrate!("migrations/order_to_cash/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/order_to_cash/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// An event waiting in (or published from) the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique event id (`evt_` + ULID); consumers de-duplicate on it.
    pub id: String,
    /// The order it is about; empty for catalogue events.
    pub order_id: String,
    /// `aggregate.event`, e.g. `order.confirmed`.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// W3C `traceparent` of the saga step that wrote it, published as the
    /// `traceparent` header; none when traces are not exported.
    pub traceparent: Option<String>,
    /// Whose order it is about: only that tenant's webhooks get it. None
    /// for catalogue events, which every subscriber gets.
    pub tenant: Option<String>,
    /// What its order is kept within: `order:<id>`, `product:<sku>`, ...
    pub aggregate: String,
}

/// What a write does to the lease on the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The writer runs the saga and keeps it until then (unix ms).
    Keep(i64),
    /// The writer runs the saga and gives it up.
    Release,
    /// The writer is not the saga's runner (an API call, the feed).
    Untouched,
}

/// An order read from the store, with the version a write must match.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The order.
    pub order: Order,
    /// Bumped by every write.
    pub version: i64,
}

/// The saga store.
#[derive(Clone)]
pub struct Store {
    db: Database,
    reads: Arc<ReadCache>,
}

/// How long a read of an order may show it without asking the database:
/// the bound on seeing another replica's change. Changes made through this
/// process are seen at once, whatever it is.
pub const READ_TTL: Duration = Duration::from_secs(1);

/// Most orders the read cache holds; a full cache starts over.
const READ_CACHE_MAX: usize = 10_000;

/// Order id → (the order, its version, when it was read for a caller or
/// written here). The saga's own loads leave it alone: their next write
/// puts the order in anyway.
#[derive(Default)]
struct ReadCache(Mutex<HashMap<String, (Order, i64, Instant)>>);

impl ReadCache {
    fn get(&self, id: &str, now: Instant) -> Option<Order> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id).filter(|(_, _, at)| now.duration_since(*at) < READ_TTL).map(|(order, _, _)| order.clone())
    }

    /// Keeps `order` at `version` unless a newer version is there already
    /// (two writers of this process may finish in either order).
    fn put(&self, order: &Order, version: i64, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&order.id).is_some_and(|(_, cached, _)| *cached > version) {
            return;
        }
        if map.len() >= READ_CACHE_MAX {
            map.clear();
        }
        map.insert(order.id.clone(), (order.clone(), version, now));
    }

    /// Makes every entry `by` older, as if that time had passed.
    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, _, at) in map.values_mut() {
            *at = at.checked_sub(by).unwrap_or(*at);
        }
    }
}

impl Store {
    /// Opens `url` (`sqlite://FILE`, created with its directory, or
    /// `postgres://...`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, Error> {
        if let Some(path) = url.strip_prefix("sqlite://")
            && let Some(dir) = Path::new(path.split('?').next().unwrap_or(path)).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let db = Database::open(Some(url), Path::new("."), "process.db", "order_to_cash", &MIGRATIONS).await?;
        Ok(Self { db, reads: Arc::default() })
    }

    /// The database, shared with the webhooks' tables.
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    /// Whether the database answers.
    pub async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.db.pool()).await.is_ok()
    }

    /// Runs `batch`. Rows are guarded by their version and claims by `SKIP
    /// LOCKED`, so replicas need no store-wide write lock.
    async fn run(&self, batch: Batch) -> Result<platform::database::Outcome, Error> {
        Ok(self.db.run(batch).await?)
    }

    /// Stores a new order with its first events, leased to `owner` until
    /// `lease_until`. `Ok(false)` when (tenant, idempotency key) exists.
    pub async fn insert(
        &self,
        order: &Order,
        idempotency_key: &str,
        fingerprint: &str,
        events: &[OutboxEvent],
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, Error> {
        let mut batch = Batch::new();
        batch.guard(
            "INSERT INTO orders (id, tenant, customer_id, customer_external_id, idempotency_key, fingerprint, \
             status, doc, version, runnable, next_attempt_at, lease_owner, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $11, $3, $4, $5, $6, $7, 1, 1, $8, $9, $10, $8, $8) \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING",
            vec![
                (&order.id).into(),
                (&order.tenant).into(),
                (&order.customer_external_id).into(),
                idempotency_key.into(),
                fingerprint.into(),
                order.status.as_str().into(),
                serde_json::to_string(order)?.into(),
                order.created_at.into(),
                owner.into(),
                lease_until.into(),
                (&order.customer_id).into(),
            ],
        );
        insert_events(&mut batch, events);
        if !self.run(batch).await?.committed {
            return Ok(false);
        }
        self.reads.put(order, 1, Instant::now());
        Ok(true)
    }

    /// The order stored under (tenant, idempotency key), with the
    /// fingerprint of the request that created it.
    pub async fn find_by_key(&self, tenant: &str, key: &str) -> Result<Option<(Order, String)>, Error> {
        let row = sqlx::query("SELECT doc, fingerprint FROM orders WHERE tenant = $1 AND idempotency_key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok((parse(&r.try_get::<String, _>(0)?)?, r.try_get(1)?))).transpose()
    }

    /// One order and its version, from the database.
    pub async fn load(&self, id: &str) -> Result<Option<Versioned>, Error> {
        let row = sqlx::query("SELECT doc, version FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(Versioned { order: parse(&r.try_get::<String, _>(0)?)?, version: r.try_get(1)? })).transpose()
    }

    /// One order as a caller reads it: no older than [`READ_TTL`] for
    /// another replica's changes, current for this process's own.
    pub async fn read(&self, id: &str) -> Result<Option<Order>, Error> {
        if let Some(order) = self.reads.get(id, Instant::now()) {
            return Ok(Some(order));
        }
        let loaded = self.load(id).await?;
        if let Some(v) = &loaded {
            self.reads.put(&v.order, v.version, Instant::now());
        }
        Ok(loaded.map(|v| v.order))
    }

    /// The ids of the orders of the ERP customer `customer_id`, oldest first.
    pub async fn orders_of_customer(&self, customer_id: &str) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT id FROM orders WHERE customer_id = $1 ORDER BY id")
            .bind(customer_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Removes the person from order `id` (a data-subject erasure): the
    /// customer's name, e-mail and shipping address go, and the caller's
    /// customer id becomes `pseudonym`; amounts, lines and the timeline
    /// stay for the books. A saga writing the order meanwhile wins the
    /// race and the erasure is tried again on its version. Returns whether
    /// the order exists.
    pub async fn erase_customer_data(&self, id: &str, pseudonym: &str) -> Result<bool, Error> {
        loop {
            let Some(Versioned { mut order, version }) = self.load(id).await? else { return Ok(false) };
            if let Some(customer) = order.customer.as_mut() {
                customer.name.clear();
                customer.email.clear();
                customer.ship_to = None;
                customer.external_id = pseudonym.to_owned();
            }
            order.customer_external_id = pseudonym.to_owned();
            let mut batch = Batch::new();
            batch.guard(
                "UPDATE orders SET doc = $1, customer_external_id = $2, version = version + 1 \
                 WHERE id = $3 AND version = $4",
                vec![serde_json::to_string(&order)?.into(), pseudonym.into(), id.into(), version.into()],
            );
            if self.run(batch).await?.committed {
                self.reads.put(&order, version + 1, Instant::now());
                return Ok(true);
            }
        }
    }

    /// Newest first, after the order id `before` when given. Empty filters
    /// match everything.
    pub async fn list(&self, filter: &Filter<'_>, before: Option<&str>, limit: i64) -> Result<Vec<Order>, Error> {
        // The external reference lives in the document only, so a search
        // by it reads documents, newest first, until the page is full: fine
        // for an operator's occasional search; no index to keep for it.
        macro_rules! list {
            ($external_ref:literal) => {
                concat!(
                    "SELECT doc FROM orders WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR customer_external_id = $2) ",
                    "AND ($5 = '' OR customer_id = $5) AND ($3 = '' OR id < $3) AND ($6 = '' OR status = $6) ",
                    "AND ($7 = '' OR id = $7 OR substr(",
                    $external_ref,
                    ", 1, length($7)) = $7) ORDER BY id DESC LIMIT $4"
                )
            };
        }
        let sql = match self.db.dialect() {
            Dialect::Sqlite => list!("json_extract(doc, '$.external_ref')"),
            Dialect::Postgres => list!("(doc::jsonb ->> 'external_ref')"),
        };
        let rows = sqlx::query(sql)
            .bind(filter.tenant)
            .bind(filter.customer_external_id)
            .bind(before.unwrap_or(""))
            .bind(limit)
            .bind(filter.customer_id)
            .bind(filter.status)
            .bind(filter.query)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| parse(&r.try_get::<String, _>(0)?)).collect()
    }

    /// Writes `order` if nobody wrote it since `version` was read, together
    /// with `events` and the ERP ids in `refs`; `Ok(None)` on a conflict
    /// (reload and decide again). The saga is due again at
    /// `next_attempt_at` (unix ms) if it has a step to run; under a kept
    /// lease, at the latest then (see below). Returns the new version.
    pub async fn save(
        &self,
        order: &Order,
        version: i64,
        next_attempt_at: i64,
        lease: Lease,
        events: &[OutboxEvent],
        refs: &[String],
    ) -> Result<Option<i64>, Error> {
        let runnable = !matches!(order.next_action(), Action::Wait | Action::Done);
        let (untouched, lease_until) = match lease {
            Lease::Keep(until) => (0_i64, until),
            Lease::Release => (0, 0),
            Lease::Untouched => (1, 0),
        };
        let mut batch = Batch::new();
        // A kept lease leaves the due time as it is unless `next_attempt_at`
        // is earlier: while the lease holds nobody claims the saga, and once
        // it lapses any time up to now means "due at once". An unchanged
        // `next_attempt_at` (and no other indexed column changed) lets
        // PostgreSQL update the row in place (HOT) instead of adding an entry
        // to each of its six indexes, most of a save's cost.
        batch.guard(
            "UPDATE orders SET doc = $1, status = $2, version = version + 1, runnable = $3, \
             next_attempt_at = CASE WHEN $5 <> 0 AND next_attempt_at <= $4 THEN next_attempt_at ELSE $4 END, \
             lease_owner = CASE WHEN $9 = 1 OR $5 <> 0 THEN lease_owner ELSE NULL END, \
             lease_until = CASE WHEN $9 = 1 THEN lease_until ELSE $5 END, updated_at = $6, \
             customer_id = $10, customer_external_id = $11, waiting_on = $12, waiting_since = $13 \
             WHERE id = $7 AND version = $8",
            vec![
                serde_json::to_string(order)?.into(),
                order.status.as_str().into(),
                i64::from(runnable).into(),
                next_attempt_at.into(),
                lease_until.into(),
                order.updated_at.into(),
                (&order.id).into(),
                version.into(),
                untouched.into(),
                (&order.customer_id).into(),
                (&order.customer_external_id).into(),
                order.progress.waiting_on.as_ref().map(|w| w.system.clone()).into(),
                order.progress.waiting_on.as_ref().map(|w| w.since).into(),
            ],
        );
        insert_events(&mut batch, events);
        for erp_id in refs {
            batch.execute(
                "INSERT INTO order_refs (erp_id, order_id) VALUES ($1, $2) ON CONFLICT (erp_id) DO NOTHING",
                vec![erp_id.into(), (&order.id).into()],
            );
        }
        if !self.run(batch).await?.committed {
            return Ok(None);
        }
        self.reads.put(order, version + 1, Instant::now());
        Ok(Some(version + 1))
    }

    /// Leases up to `limit` sagas that are due and not leased by a live
    /// replica to `owner` until `lease_until`; returns their ids.
    pub async fn claim_due(&self, owner: &str, now: i64, lease_until: i64, limit: i64) -> Result<Vec<String>, Error> {
        // Replicas on PostgreSQL skip rows another replica is claiming
        // instead of waiting for it; SQLite has one writer anyway.
        let sql = match self.db.dialect() {
            Dialect::Sqlite => concat!(
                "UPDATE orders SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM orders ",
                "WHERE runnable = 1 AND next_attempt_at <= $3 AND lease_until < $3 ORDER BY next_attempt_at LIMIT $4) ",
                "RETURNING id"
            ),
            Dialect::Postgres => concat!(
                "UPDATE orders SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM orders ",
                "WHERE runnable = 1 AND next_attempt_at <= $3 AND lease_until < $3 ORDER BY next_attempt_at LIMIT $4 ",
                "FOR UPDATE SKIP LOCKED) RETURNING id"
            ),
        };
        let mut batch = Batch::new();
        batch.query(sql, vec![owner.into(), lease_until.into(), now.into(), limit.into()]);
        Ok(self.run(batch).await?.rows)
    }

    /// Gives up the lease on `id` if `owner` still holds it, leaving the
    /// saga due at once for whichever replica claims it next.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.execute(
            "UPDATE orders SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2",
            vec![id.into(), owner.into()],
        );
        self.run(batch).await?;
        Ok(())
    }

    /// Writes events that change no order (the ERP change feed's); an
    /// event whose id is there already is left as it is.
    pub async fn write_events(&self, events: &[OutboxEvent]) -> Result<(), Error> {
        let mut batch = Batch::new();
        insert_events(&mut batch, events);
        if !batch.is_empty() {
            self.run(batch).await?;
        }
        Ok(())
    }

    /// The tenant whose orders the ERP customer `customer_id` placed, if any.
    pub async fn tenant_of_customer(&self, customer_id: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT tenant FROM orders WHERE customer_id = $1 LIMIT 1")
            .bind(customer_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// The order an ERP id (shipment, invoice) belongs to.
    pub async fn order_of(&self, erp_id: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT order_id FROM order_refs WHERE erp_id = $1")
            .bind(erp_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// The oldest unpublished events, in the order they were written.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxEvent>, Error> {
        let rows = sqlx::query(
            "SELECT id, order_id, event_type, payload, created_at, traceparent, tenant, aggregate FROM outbox WHERE published_at IS NULL \
             ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(event).collect()
    }

    /// Marks events published at `now`.
    pub async fn mark_published(&self, ids: &[String], now: i64) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        // One statement for the batch (at most a few hundred ids, far
        // below either dialect's limit on parameters).
        let placeholders = (2..ids.len() + 2).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let sql = format!("UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND id IN ({placeholders})");
        let mut args = Vec::with_capacity(ids.len() + 1);
        args.push(now.into());
        args.extend(ids.iter().map(Value::from));
        let mut batch = Batch::new();
        batch.execute(sql, args);
        self.run(batch).await?;
        Ok(())
    }

    /// Every event of an order, published or not, in order.
    pub async fn events_of(&self, order_id: &str) -> Result<Vec<OutboxEvent>, Error> {
        let rows = sqlx::query(
            "SELECT id, order_id, event_type, payload, created_at, traceparent, tenant, aggregate FROM outbox WHERE order_id = $1 ORDER BY seq",
        )
        .bind(order_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(event).collect()
    }

    /// Creation time (unix ms) of the oldest unpublished event.
    pub async fn oldest_unpublished(&self) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Unpublished events: how many, and when the oldest was written (unix
    /// ms), for the outbox gauges.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<i64>), Error> {
        let row = sqlx::query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.db.pool())
            .await?;
        Ok((row.try_get::<i64, _>(0)?, row.try_get::<Option<i64>, _>(1)?))
    }

    /// Orders waiting for a system that does not answer: per system, how
    /// many and since when the oldest waits (unix ms).
    pub async fn waiting(&self) -> Result<Vec<(String, i64, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT waiting_on, COUNT(*), MIN(waiting_since) FROM orders WHERE waiting_on IS NOT NULL \
             GROUP BY waiting_on",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<i64>, _>(2)?.unwrap_or(0)))).collect()
    }

    /// Makes the orders waiting for `system` due at `now` instead of at the
    /// end of their backoff; returns how many.
    pub async fn resume_waiting(&self, system: &str, now: i64) -> Result<u64, Error> {
        let mut batch = Batch::new();
        batch.execute(
            "UPDATE orders SET next_attempt_at = $1 WHERE waiting_on = $2 AND runnable = 1 AND next_attempt_at > $1",
            vec![now.into(), system.into()],
        );
        Ok(self.run(batch).await?.changed_total())
    }

    /// How many orders are in each status (statuses without orders left out).
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM orders GROUP BY status").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// The right to publish the outbox, if no other replica holds it: on
    /// PostgreSQL a session advisory lock on a connection of its own (freed
    /// when the holder dies and its connection drops), so one replica
    /// publishes and events keep their order; on SQLite always granted
    /// (one process owns the file).
    pub async fn try_publisher_lock(&self) -> Result<Option<ReplicaLock>, Error> {
        self.try_lock(PUBLISHER_LOCK).await
    }

    /// The right to write export files, held by one replica at a time in
    /// the same way, so two replicas never export overlapping ranges.
    pub async fn try_exporter_lock(&self) -> Result<Option<ReplicaLock>, Error> {
        self.try_lock(EXPORTER_LOCK).await
    }

    async fn try_lock(&self, key: i64) -> Result<Option<ReplicaLock>, Error> {
        Ok(self.db.try_replica_lock(key).await?)
    }

    /// Up to `limit` events of `types` after the outbox position `after`,
    /// written in `[from, to]` (unix ms), in the order they were written,
    /// each with its position.
    pub async fn events_after(
        &self,
        types: &[&str],
        after: i64,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(i64, OutboxEvent)>, Error> {
        // The types are ours (a fixed list), bound as parameters all the same.
        let placeholders = (5..types.len() + 5).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT id, order_id, event_type, payload, created_at, traceparent, tenant, aggregate, seq FROM outbox \
             WHERE seq > $1 AND created_at >= $2 AND created_at <= $3 AND event_type IN ({placeholders}) \
             ORDER BY seq LIMIT $4"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(from).bind(to).bind(limit);
        for t in types {
            query = query.bind(*t);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>(8)?, event(r)?))).collect()
    }

    /// Where the feed `name` has got to.
    pub async fn cursor(&self, name: &str) -> Result<String, Error> {
        let row = sqlx::query("SELECT cursor FROM feed_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or_default())
    }

    /// Records where the feed `name` has got to.
    pub async fn set_cursor(&self, name: &str, cursor: &str) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.execute(
            "INSERT INTO feed_cursors (name, cursor) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor",
            vec![name.into(), cursor.into()],
        );
        self.run(batch).await?;
        Ok(())
    }
}

/// The advisory lock key of the outbox publisher ("o2c-pub" in ASCII).
const PUBLISHER_LOCK: i64 = 0x006f_3263_2d70_7562;
/// The advisory lock key of the exporter ("o2c-exp" in ASCII).
const EXPORTER_LOCK: i64 = 0x006f_3263_2d65_7870;

fn insert_events(batch: &mut Batch, events: &[OutboxEvent]) {
    for e in events {
        // Events of the ERP's change feed have ids derived from the
        // change, and every replica follows the feed: the first write wins.
        batch.execute(
            "INSERT INTO outbox (id, order_id, event_type, payload, created_at, traceparent, tenant, aggregate) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            vec![
                (&e.id).into(),
                (&e.order_id).into(),
                (&e.event_type).into(),
                (&e.payload).into(),
                e.created_at.into(),
                e.traceparent.as_deref().into(),
                e.tenant.as_deref().into(),
                (&e.aggregate).into(),
            ],
        );
    }
}

fn parse(doc: &str) -> Result<Order, Error> {
    Ok(serde_json::from_str(doc)?)
}

fn event(r: &AnyRow) -> Result<OutboxEvent, Error> {
    Ok(OutboxEvent {
        id: r.try_get(0)?,
        order_id: r.try_get(1)?,
        event_type: r.try_get(2)?,
        payload: r.try_get(3)?,
        created_at: r.try_get(4)?,
        traceparent: r.try_get(5)?,
        tenant: r.try_get(6)?,
        aggregate: r.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use platform::database::ScratchPostgres;

    use super::*;

    #[tokio::test]
    async fn exports_read_events_of_their_types_after_a_position_within_a_time_range_one_exporter_at_a_time() {
        let scratch = ScratchPostgres::create("o2c_exports").await;
        let store = Store::open(&scratch.url()).await.expect("open");
        let event = |id: &str, event_type: &str, created_at: i64| OutboxEvent {
            id: id.into(),
            order_id: "ord_1".into(),
            event_type: event_type.into(),
            payload: "{}".into(),
            created_at,
            traceparent: None,
            tenant: Some("acme".into()),
            aggregate: "order:ord_1".into(),
        };
        store
            .write_events(&[
                event("evt_1", "order.accepted", 1_000),
                event("evt_2", "invoice.issued", 2_000),
                event("evt_3", "order.paid", 3_000),
                event("evt_4", "invoice.issued", 9_000),
            ])
            .await
            .expect("written");
        let ids = |found: Vec<(i64, OutboxEvent)>| found.into_iter().map(|(_, e)| e.id).collect::<Vec<_>>();
        let invoices = ["invoice.issued", "order.paid"];
        let all = store.events_after(&invoices, 0, 0, i64::MAX, 10).await.expect("read");
        let positions: Vec<i64> = all.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(ids(all), ["evt_2", "evt_3", "evt_4"]);
        assert_eq!(
            ids(store.events_after(&invoices, positions[0], 0, i64::MAX, 10).await.expect("read")),
            ["evt_3", "evt_4"]
        );
        assert_eq!(ids(store.events_after(&invoices, 0, 2_500, 8_000, 10).await.expect("read")), ["evt_3"]);
        assert_eq!(ids(store.events_after(&invoices, 0, 0, i64::MAX, 1).await.expect("read")), ["evt_2"]);
        let other = Store::open(&scratch.url()).await.expect("open");
        let held = store.try_exporter_lock().await.expect("try").expect("the first exporter");
        assert!(other.try_exporter_lock().await.expect("try").is_none(), "one exporter at a time");
        assert!(other.try_publisher_lock().await.expect("try").is_some(), "a lock of its own");
        drop(held);
    }

    #[tokio::test]
    async fn one_replica_at_a_time_holds_the_publisher_lock_and_a_dead_ones_passes_on() {
        let scratch = ScratchPostgres::create("o2c_publisher").await;
        let (first, second) =
            (Store::open(&scratch.url()).await.expect("open"), Store::open(&scratch.url()).await.expect("open"));
        let mut held = first.try_publisher_lock().await.expect("try").expect("the first replica takes it");
        assert!(held.is_held().await);
        assert!(second.try_publisher_lock().await.expect("try").is_none(), "one holder at a time");
        // The holder dies: its connection goes, and with it the lock.
        drop(held);
        let mut taken = None;
        for _ in 0..50 {
            taken = second.try_publisher_lock().await.expect("try");
            if taken.is_some() {
                break;
            }
            // The server notices the closed connection asynchronously.
            tokio::task::yield_now().await;
            sqlx::query("SELECT pg_sleep(0.02)").execute(second.db.pool()).await.expect("wait");
        }
        assert!(taken.is_some(), "another replica takes over");
    }

    /// An order as the saga writes it, built from its document so that
    /// fields added later (with their defaults) need no change here.
    fn order(id: &str, tenant: &str, external_ref: &str, status: &str) -> Order {
        serde_json::from_value(serde_json::json!({
            "id": id, "tenant": tenant, "customer_id": "cus_1", "customer_external_id": "web:alice",
            "external_ref": external_ref, "currency": "EUR", "lines": [], "total": "1.00",
            "payment": {"method": "on_account"}, "status": status, "timeline": [],
            "created_at": 0, "updated_at": 0, "progress": {}
        }))
        .expect("an order document")
    }

    async fn operators_search_orders_of_every_tenant_by_id_reference_and_status(store: Store) {
        for (id, tenant, external_ref, status) in [
            ("ord_01", "acme", "PO-4711", "confirmed"),
            ("ord_02", "web", "PO-4712", "paid"),
            ("ord_03", "globex", "po-4713", "confirmed"),
            ("ord_04", "acme", "", "rejected"),
        ] {
            let order = order(id, tenant, external_ref, status);
            assert!(store.insert(&order, id, "fp", &[], "test", 0).await.expect("insert"));
        }
        let ids = |filter: Filter<'static>, before: Option<&'static str>, limit: i64| {
            let store = store.clone();
            async move {
                let found = store.list(&filter, before, limit).await.expect("list");
                found.into_iter().map(|o| o.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(Filter::default(), None, 10).await, ["ord_04", "ord_03", "ord_02", "ord_01"]);
        assert_eq!(ids(Filter { query: "ord_02", ..Filter::default() }, None, 10).await, ["ord_02"]);
        // A reference by its start, case-sensitive; an id only whole.
        assert_eq!(ids(Filter { query: "PO-471", ..Filter::default() }, None, 10).await, ["ord_02", "ord_01"]);
        assert_eq!(ids(Filter { query: "ord_0", ..Filter::default() }, None, 10).await, Vec::<String>::new());
        assert_eq!(ids(Filter { status: "confirmed", ..Filter::default() }, None, 10).await, ["ord_03", "ord_01"]);
        assert_eq!(ids(Filter { status: "confirmed", ..Filter::default() }, Some("ord_03"), 10).await, ["ord_01"]);
        assert_eq!(ids(Filter { status: "confirmed", ..Filter::default() }, None, 1).await, ["ord_03"]);
        let acme_confirmed = Filter { tenant: "acme", status: "confirmed", query: "PO", ..Filter::default() };
        assert_eq!(ids(acme_confirmed, None, 10).await, ["ord_01"]);
        // Quotes and wildcards are text like any other.
        assert_eq!(ids(Filter { query: "%", ..Filter::default() }, None, 10).await, Vec::<String>::new());
        assert_eq!(ids(Filter { query: "' OR 1=1 --", ..Filter::default() }, None, 10).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn operators_search_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.expect("open");
        operators_search_orders_of_every_tenant_by_id_reference_and_status(store).await;
    }

    #[tokio::test]
    async fn operators_search_on_postgres() {
        let scratch = ScratchPostgres::create("o2c_search").await;
        let store = Store::open(&scratch.url()).await.expect("open");
        operators_search_orders_of_every_tenant_by_id_reference_and_status(store).await;
    }

    /// What a replica's crash leaves behind: a saga it kept running is
    /// claimed once the lease lapses, however often it was saved (saves
    /// under a kept lease leave the due time alone); one it backed off is
    /// claimed when due, not before.
    async fn a_lapsed_lease_is_claimed_at_once_and_a_backed_off_saga_when_due(store: Store) {
        let order = order("ord_l", "acme", "", "accepted");
        assert!(store.insert(&order, "k", "fp", &[], "r1", 1_000).await.expect("insert"));
        let mut version = 1;
        for now in [400, 700, 900] {
            let kept = store.save(&order, version, now, Lease::Keep(now + 1_000), &[], &[]).await.expect("save");
            version = kept.expect("no conflict");
        }
        assert!(store.claim_due("r2", 1_800, 9_000, 10).await.expect("claim").is_empty(), "still leased");
        assert_eq!(store.claim_due("r2", 1_901, 9_000, 10).await.expect("claim"), ["ord_l"]);
        let backed_off = store.save(&order, version, 5_000, Lease::Release, &[], &[]).await.expect("save");
        assert!(backed_off.is_some());
        assert!(store.claim_due("r3", 4_999, 9_000, 10).await.expect("claim").is_empty(), "not due yet");
        assert_eq!(store.claim_due("r3", 5_000, 9_000, 10).await.expect("claim"), ["ord_l"]);
    }

    #[tokio::test]
    async fn lapsed_leases_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.expect("open");
        a_lapsed_lease_is_claimed_at_once_and_a_backed_off_saga_when_due(store).await;
    }

    #[tokio::test]
    async fn lapsed_leases_on_postgres() {
        let scratch = ScratchPostgres::create("o2c_leases").await;
        let store = Store::open(&scratch.url()).await.expect("open");
        a_lapsed_lease_is_claimed_at_once_and_a_backed_off_saga_when_due(store).await;
    }

    #[test]
    fn a_cached_read_lasts_read_ttl_and_a_newer_version_is_never_replaced_by_an_older() {
        let cache = ReadCache::default();
        let t0 = Instant::now();
        cache.put(&order("ord_c", "acme", "", "paid"), 3, t0);
        cache.put(&order("ord_c", "acme", "", "confirmed"), 2, t0);
        let status = |at| cache.get("ord_c", at).map(|o| o.status.as_str().to_owned());
        assert_eq!(status(t0 + READ_TTL - Duration::from_millis(1)).as_deref(), Some("paid"));
        assert_eq!(status(t0 + READ_TTL), None, "older than READ_TTL: asked again");
    }

    #[tokio::test]
    async fn reads_show_this_replicas_writes_at_once_and_another_replicas_within_read_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let (here, there) = (Store::open(&url).await.expect("open"), Store::open(&url).await.expect("open"));
        let status = |store: &Store| {
            let store = store.clone();
            async move { store.read("ord_r").await.expect("read").expect("found").status.as_str().to_owned() }
        };
        assert!(
            here.insert(&order("ord_r", "acme", "", "confirmed"), "k", "fp", &[], "test", 0).await.expect("insert")
        );
        assert_eq!((status(&here).await, status(&there).await), ("confirmed".into(), "confirmed".into()));
        let version = here.load("ord_r").await.expect("load").expect("found").version;
        let saved = here.save(&order("ord_r", "acme", "", "paid"), version, 0, Lease::Untouched, &[], &[]).await;
        assert_eq!(saved.expect("save"), Some(version + 1));
        assert_eq!(status(&here).await, "paid", "this replica's own change, at once");
        assert_eq!(status(&there).await, "confirmed", "the other replica's read is cached, for READ_TTL at most");
        there.reads.age(READ_TTL);
        assert_eq!(status(&there).await, "paid", "after READ_TTL, the other replica sees it");
        assert!(here.read("ord_missing").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn on_sqlite_the_one_process_always_publishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.expect("open");
        assert!(store.try_publisher_lock().await.expect("try").is_some());
        assert!(store.try_publisher_lock().await.expect("try").is_some());
    }
}
