//! Endpoints, deliveries and attempts in the process tier's store (the
//! saga store's database: SQLite by default, PostgreSQL shared by every
//! replica).
//!
//! Deliveries are claimed with a lease, on PostgreSQL with `FOR UPDATE
//! SKIP LOCKED`, so replicas share the work and never send one delivery
//! twice at once; a killed replica's leases run out and another takes its
//! deliveries. A pending delivery is only claimed when no earlier pending
//! delivery of its aggregate waits at the same endpoint: each order's
//! events arrive in order.

use platform::{
    audit,
    database::{Batch, Database, Dialect, Value},
};
use sqlx::{Row, any::AnyRow};

use erp_connect_proto::events::{self, Envelope, WebhookBody};

/// A stored endpoint, its secrets still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    /// `whe_` + ULID.
    pub id: String,
    /// The partner tenant.
    pub tenant: String,
    /// Where deliveries go.
    pub url: String,
    /// Subscribed types and patterns.
    pub events: Vec<String>,
    /// The owner's note.
    pub description: String,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why not, when disabled.
    pub disabled_reason: String,
    /// The sealed current secret.
    pub secret: String,
    /// The sealed previous secret, during its grace period.
    pub previous_secret: Option<String>,
    /// Until when (unix ms) the previous secret signs.
    pub previous_secret_until: i64,
    /// Since when every attempt has failed (unix ms).
    pub failing_since: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl EndpointRow {
    fn wants(&self, event_type: &str, tenant: Option<&str>, created_at: i64) -> bool {
        tenant.is_none_or(|t| t == self.tenant)
            && self.events.iter().any(|p| events::matches(p, event_type))
            && self.created_at <= created_at
    }
}

/// A delivery a worker claimed, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Due {
    /// `dlv_` + ULID.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The `webhook-id`.
    pub event_id: String,
    /// The event type, for metrics.
    pub event_type: String,
    /// The body to send.
    pub body: String,
    /// When the event happened at its source (unix ms).
    pub occurred_at: i64,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// A delivery in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// `dlv_` + ULID.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The endpoint's tenant.
    pub tenant: String,
    /// The `webhook-id`.
    pub event_id: String,
    /// e.g. `order.confirmed`.
    pub event_type: String,
    /// `pending`, `delivered`, `failed`.
    pub status: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when pending.
    pub next_attempt_at: i64,
    /// Oldest first.
    pub attempts: Vec<AttemptRow>,
}

/// One attempt in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// Unix ms.
    pub at: i64,
    /// 0 when the endpoint did not answer.
    pub http_status: i64,
    /// Empty on success.
    pub error: String,
    /// How long it took.
    pub duration_ms: i64,
}

/// What a finished attempt does to its delivery and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Delivered: the endpoint is healthy again.
    Delivered,
    /// Try again at this time (unix ms).
    Retry(i64),
    /// Attempts exhausted: a dead letter.
    Failed,
    /// The endpoint answered 410 or has failed too long: it is disabled
    /// with this reason, and the delivery is failed.
    Disable(String),
}

/// The webhook tables.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

/// Errors of the store; all worth a retry.
pub type Error = sqlx::Error;

const ENDPOINT_COLUMNS: &str = "id, tenant, url, events, description, enabled, disabled_reason, secret, \
     previous_secret, previous_secret_until, failing_since, created_at, updated_at";

impl Store {
    /// The webhook tables of `db` (migrated with the saga store).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database (for the audit trail's readers).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Appends `entry` to the audit trail inside `tx`, at `at` (unix ms).
    async fn audit(
        &self,
        tx: &mut platform::database::WriteTx,
        entry: &audit::Entry<'_>,
        at: i64,
    ) -> Result<(), Error> {
        audit::append(tx, self.db.dialect(), entry, at).await.map(drop).map_err(|audit::Error::Query(e)| e)
    }

    /// Stores a new endpoint, and `entry` on the audit trail with it.
    pub async fn create_endpoint(&self, e: &EndpointRow, entry: &audit::Entry<'_>) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant, url, events, description, enabled, disabled_reason, secret, \
             previous_secret, previous_secret_until, failing_since, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&e.id)
        .bind(&e.tenant)
        .bind(&e.url)
        .bind(serde_json::to_string(&e.events).unwrap_or_default())
        .bind(&e.description)
        .bind(i64::from(e.enabled))
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(e.previous_secret.as_deref())
        .bind(e.previous_secret_until)
        .bind(e.failing_since)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await?;
        self.audit(&mut tx, entry, e.updated_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The endpoints of `tenant` (empty: every tenant's), oldest first.
    pub async fn endpoints(&self, tenant: &str) -> Result<Vec<EndpointRow>, Error> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ($1 = '' OR tenant = $1) ORDER BY id LIMIT 1000"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_all(self.db.pool()).await?;
        rows.iter().map(endpoint).collect()
    }

    /// One endpoint of `tenant` (empty: of any tenant).
    pub async fn endpoint(&self, tenant: &str, id: &str) -> Result<Option<EndpointRow>, Error> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND ($2 = '' OR tenant = $2)");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(tenant).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(endpoint).transpose()
    }

    /// Writes back what an update changed: url, events, description,
    /// enabled (re-enabling forgets the failures), secrets; and `entry` on
    /// the audit trail with it.
    pub async fn update_endpoint(&self, e: &EndpointRow, entry: &audit::Entry<'_>) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, \
             disabled_reason = $6, secret = $7, previous_secret = $8, previous_secret_until = $9, \
             failing_since = $10, updated_at = $11 WHERE id = $1",
        )
        .bind(&e.id)
        .bind(&e.url)
        .bind(serde_json::to_string(&e.events).unwrap_or_default())
        .bind(&e.description)
        .bind(i64::from(e.enabled))
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(e.previous_secret.as_deref())
        .bind(e.previous_secret_until)
        .bind(e.failing_since)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await?;
        self.audit(&mut tx, entry, e.updated_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes an endpoint with its deliveries and their attempts, and
    /// puts `entry` on the audit trail at `at` (unix ms).
    pub async fn delete_endpoint(&self, id: &str, entry: &audit::Entry<'_>, at: i64) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
        self.audit(&mut tx, entry, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Turns up to `limit` outbox events not yet fanned out into deliveries
    /// for every enabled endpoint that wants them, in one transaction.
    /// Replicas may run it side by side: a delivery is written once
    /// (unique per endpoint, event and generation). Returns how many events
    /// were taken.
    pub async fn fan_out(&self, limit: i64, now: i64) -> Result<usize, Error> {
        let events = sqlx::query(
            "SELECT seq, id, event_type, payload, created_at, tenant, aggregate FROM outbox \
             WHERE fanned_out_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let endpoints: Vec<EndpointRow> = self.endpoints("").await?.into_iter().filter(|e| e.enabled).collect();
        // One write batch (on SQLite one call on the store's writer thread,
        // beside the sagas' own writes).
        let mut batch = Batch::new();
        let mut mark = Vec::with_capacity(events.len() + 1);
        mark.push(Value::from(now));
        for row in &events {
            let event = OutboxRow::read(row)?;
            for endpoint in
                endpoints.iter().filter(|e| e.wants(&event.event_type, event.tenant.as_deref(), event.created_at))
            {
                batch.execute(INSERT_DELIVERY, delivery_values(&new_delivery_id(), endpoint, &event, 0, now));
            }
            mark.push(event.seq.into());
        }
        // One statement for the batch: most events (all, without
        // endpoints) make no delivery, and a write per event would double
        // what each saga step costs the store.
        let placeholders = (2..mark.len() + 1).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        batch.execute(format!("UPDATE outbox SET fanned_out_at = $1 WHERE seq IN ({placeholders})"), mark);
        self.db.run(batch).await?;
        Ok(events.len())
    }

    /// Queues `event_id` again for `endpoint`, if it is an event the
    /// endpoint may receive: one it was sent before (a `webhook.test`
    /// included, which is in no outbox), or one of the outbox. `Ok(false)`
    /// when there is no such event.
    pub async fn replay_event(&self, endpoint: &EndpointRow, event_id: &str, now: i64) -> Result<bool, Error> {
        let sent = sqlx::query(
            "SELECT event_seq, event_id, event_type, body, occurred_at, aggregate FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND event_id = $2 ORDER BY generation DESC LIMIT 1",
        )
        .bind(&endpoint.id)
        .bind(event_id)
        .fetch_optional(self.db.pool())
        .await?;
        let event = match sent {
            Some(r) => OutboxRow {
                seq: r.try_get(0)?,
                id: r.try_get(1)?,
                event_type: r.try_get(2)?,
                body: r.try_get(3)?,
                created_at: r.try_get(4)?,
                tenant: Some(endpoint.tenant.clone()),
                aggregate: r.try_get(5)?,
            },
            None => {
                let row = sqlx::query(
                    "SELECT seq, id, event_type, payload, created_at, tenant, aggregate FROM outbox WHERE id = $1",
                )
                .bind(event_id)
                .fetch_optional(self.db.pool())
                .await?;
                let Some(row) = row else { return Ok(false) };
                let event = OutboxRow::read(&row)?;
                if event.tenant.as_deref().is_some_and(|t| t != endpoint.tenant) {
                    return Ok(false);
                }
                event
            }
        };
        let mut tx = self.db.begin_concurrent().await?;
        let generation = next_generation(&mut tx, &endpoint.id, &event.id).await?;
        insert_delivery(&mut tx, endpoint, &event, generation, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues again every event since `since` (unix ms) that the endpoint
    /// subscribes to and may receive, at most `limit`; returns how many.
    pub async fn replay_since(&self, endpoint: &EndpointRow, since: i64, limit: i64, now: i64) -> Result<usize, Error> {
        let rows = sqlx::query(
            "SELECT seq, id, event_type, payload, created_at, tenant, aggregate FROM outbox \
             WHERE created_at >= $1 AND (tenant IS NULL OR tenant = $2) AND aggregate IS NOT NULL \
             ORDER BY seq LIMIT $3",
        )
        .bind(since)
        .bind(&endpoint.tenant)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut tx = self.db.begin_concurrent().await?;
        let mut replayed = 0;
        for row in &rows {
            let event = OutboxRow::read(row)?;
            // Replay resends what the endpoint subscribes to now, whenever
            // it was subscribed: catching up is the point.
            if !endpoint.events.iter().any(|p| events::matches(p, &event.event_type)) {
                continue;
            }
            let generation = next_generation(&mut tx, &endpoint.id, &event.id).await?;
            insert_delivery(&mut tx, endpoint, &event, generation, now).await?;
            replayed += 1;
        }
        tx.commit().await?;
        Ok(replayed)
    }

    /// Queues a `webhook.test` event for `endpoint`; returns the delivery id.
    pub async fn queue_test(&self, endpoint: &EndpointRow, now: i64) -> Result<String, Error> {
        let event_id = format!("evt_{}", ulid::Ulid::new());
        let body = WebhookBody {
            event_type: "webhook.test".into(),
            timestamp: super::super::order_to_cash::clock::rfc3339(now),
            data: serde_json::to_value(events::TestData { endpoint_id: endpoint.id.clone() }).unwrap_or_default(),
        };
        let event = OutboxRow {
            seq: 0,
            id: event_id.clone(),
            event_type: body.event_type.clone(),
            body: serde_json::to_string(&body).unwrap_or_default(),
            created_at: now,
            tenant: Some(endpoint.tenant.clone()),
            aggregate: format!("test:{event_id}"),
        };
        let mut tx = self.db.begin_concurrent().await?;
        let id = insert_delivery(&mut tx, endpoint, &event, 0, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Leases up to `limit` due deliveries of enabled endpoints to `owner`
    /// until `lease_until`; each is the earliest pending one of its
    /// aggregate at its endpoint.
    pub async fn claim_due(&self, owner: &str, now: i64, lease_until: i64, limit: i64) -> Result<Vec<Due>, Error> {
        // Read first: mostly nothing is due, and a claim is a write.
        let due = sqlx::query(
            "SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 AND lease_until < $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(self.db.pool())
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 WHERE id IN (",
                    "SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id ",
                    "WHERE d.status = 'pending' AND d.next_attempt_at <= $3 AND d.lease_until < $3 AND e.enabled = 1 ",
                    "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id ",
                    "AND p.aggregate = d.aggregate AND p.status = 'pending' ",
                    "AND (p.event_seq < d.event_seq OR (p.event_seq = d.event_seq AND p.generation < d.generation))) ",
                    "ORDER BY d.next_attempt_at LIMIT $4",
                    $lock,
                    ") RETURNING id, endpoint_id, event_id, event_type, body, occurred_at, attempts"
                )
            };
        }
        let sql = match self.db.dialect() {
            Dialect::Sqlite => claim!(""),
            Dialect::Postgres => claim!(" FOR UPDATE OF d SKIP LOCKED"),
        };
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *self.db.writer().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get(0)?,
                    endpoint_id: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                    event_type: r.try_get(3)?,
                    body: r.try_get(4)?,
                    occurred_at: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Records an attempt and what it means, if `owner` still holds the
    /// delivery's lease.
    pub async fn settle(&self, due: &Due, owner: &str, attempt: &AttemptRow, settle: &Settle) -> Result<(), Error> {
        let mut tx = self.db.begin_concurrent().await?;
        let (status, next) = match settle {
            Settle::Delivered => ("delivered", 0),
            Settle::Retry(at) => ("pending", *at),
            Settle::Failed | Settle::Disable(_) => ("failed", 0),
        };
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, attempts = attempts + 1, \
             lease_owner = NULL, lease_until = 0, updated_at = $3 WHERE id = $4 AND lease_owner = $5",
        )
        .bind(status)
        .bind(next)
        .bind(attempt.at)
        .bind(&due.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // The lease ran out and another replica took the delivery.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&due.id)
        .bind(due.attempts + 1)
        .bind(attempt.at)
        .bind(attempt.http_status)
        .bind(&attempt.error)
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        let endpoint = match settle {
            Settle::Delivered => sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(&due.endpoint_id),
            Settle::Disable(reason) => sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(&due.endpoint_id)
            .bind(reason)
            .bind(attempt.at),
            Settle::Retry(_) | Settle::Failed => {
                sqlx::query("UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL")
                    .bind(&due.endpoint_id)
                    .bind(attempt.at)
            }
        };
        endpoint.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Since when the endpoint has been failing, if it has.
    pub async fn failing_since(&self, endpoint_id: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT failing_since FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()?.flatten())
    }

    /// The delivery log of `tenant` (empty: all), newest first, before the
    /// delivery id `before` when given.
    pub async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        status: &str,
        before: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, endpoint_id, tenant, event_id, event_type, status, created_at, next_attempt_at \
             FROM webhook_deliveries WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR endpoint_id = $2) \
             AND ($3 = '' OR status = $3) AND ($4 = '' OR id < $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(tenant)
        .bind(endpoint_id)
        .bind(status)
        .bind(before)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get(0)?;
            let attempts = sqlx::query(
                "SELECT at, http_status, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptRow {
                    at: a.try_get(0)?,
                    http_status: a.try_get(1)?,
                    error: a.try_get(2)?,
                    duration_ms: a.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
            deliveries.push(DeliveryRow {
                id,
                endpoint_id: r.try_get(1)?,
                tenant: r.try_get(2)?,
                event_id: r.try_get(3)?,
                event_type: r.try_get(4)?,
                status: r.try_get(5)?,
                created_at: r.try_get(6)?,
                next_attempt_at: r.try_get(7)?,
                attempts,
            });
        }
        Ok(deliveries)
    }

    /// Pending deliveries of enabled endpoints: how many, and when the
    /// oldest was queued (unix ms).
    pub async fn backlog(&self) -> Result<(i64, Option<i64>), Error> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(d.created_at) FROM webhook_deliveries d JOIN webhook_endpoints e \
             ON e.id = d.endpoint_id WHERE d.status = 'pending' AND e.enabled = 1",
        )
        .fetch_one(self.db.pool())
        .await?;
        Ok((row.try_get(0)?, row.try_get::<Option<i64>, _>(1)?))
    }
}

/// An outbox event as fan-out and replay read it, its payload already
/// turned into the webhook body.
struct OutboxRow {
    seq: i64,
    id: String,
    event_type: String,
    body: String,
    created_at: i64,
    tenant: Option<String>,
    aggregate: String,
}

impl OutboxRow {
    fn read(r: &AnyRow) -> Result<Self, Error> {
        let payload: String = r.try_get(3)?;
        let body = serde_json::from_str::<Envelope>(&payload)
            .map(|envelope| serde_json::to_string(&WebhookBody::of(&envelope)).unwrap_or_default())
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let id: String = r.try_get(1)?;
        Ok(Self {
            seq: r.try_get(0)?,
            event_type: r.try_get(2)?,
            body,
            created_at: r.try_get(4)?,
            tenant: r.try_get(5)?,
            aggregate: r.try_get::<Option<String>, _>(6)?.unwrap_or_else(|| id.clone()),
            id,
        })
    }
}

async fn next_generation(
    tx: &mut platform::database::WriteTx,
    endpoint_id: &str,
    event_id: &str,
) -> Result<i64, Error> {
    let row = sqlx::query("SELECT MAX(generation) FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2")
        .bind(endpoint_id)
        .bind(event_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.map_or(0, |g| g + 1))
}

async fn insert_delivery(
    tx: &mut platform::database::WriteTx,
    endpoint: &EndpointRow,
    event: &OutboxRow,
    generation: i64,
    now: i64,
) -> Result<String, Error> {
    let id = new_delivery_id();
    platform::database::batch::bind(
        sqlx::query(INSERT_DELIVERY),
        delivery_values(&id, endpoint, event, generation, now),
    )
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// A delivery, written once per endpoint, event and generation.
const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (id, endpoint_id, tenant, event_id, event_seq, \
     event_type, aggregate, body, occurred_at, generation, status, attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11, $11, $11) \
     ON CONFLICT (endpoint_id, event_id, generation) DO NOTHING";

fn new_delivery_id() -> String {
    format!("dlv_{}", ulid::Ulid::new())
}

/// [`INSERT_DELIVERY`]'s values.
fn delivery_values(id: &str, endpoint: &EndpointRow, event: &OutboxRow, generation: i64, now: i64) -> Vec<Value> {
    vec![
        id.into(),
        (&endpoint.id).into(),
        (&endpoint.tenant).into(),
        (&event.id).into(),
        event.seq.into(),
        (&event.event_type).into(),
        (&event.aggregate).into(),
        (&event.body).into(),
        event.created_at.into(),
        generation.into(),
        now.into(),
    ]
}

fn endpoint(r: &AnyRow) -> Result<EndpointRow, Error> {
    let events: String = r.try_get(3)?;
    Ok(EndpointRow {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        url: r.try_get(2)?,
        events: serde_json::from_str(&events).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        description: r.try_get(4)?,
        enabled: r.try_get::<i64, _>(5)? != 0,
        disabled_reason: r.try_get(6)?,
        secret: r.try_get(7)?,
        previous_secret: r.try_get(8)?,
        previous_secret_until: r.try_get(9)?,
        failing_since: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use platform::database::ScratchPostgres;

    use super::*;
    use crate::order_to_cash::{outbox, store::Store as SagaStore};

    fn endpoint(id: &str, tenant: &str, events: &[&str]) -> EndpointRow {
        EndpointRow {
            id: id.into(),
            tenant: tenant.into(),
            url: "http://127.0.0.1:9/".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            description: String::new(),
            enabled: true,
            disabled_reason: String::new(),
            secret: "sealed".into(),
            previous_secret: None,
            previous_secret_until: 0,
            failing_since: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn event(id: &str, kind: &str, tenant: Option<&str>, aggregate: &str) -> crate::order_to_cash::store::OutboxEvent {
        outbox::envelope(id.into(), kind, None, tenant, aggregate.into(), 1_000, serde_json::json!({}))
    }

    async fn replicas_share_deliveries_and_each_aggregate_keeps_its_order(saga: SagaStore) {
        let store = Store::new(saga.database());
        let entry =
            audit::Entry { actor: "test", action: "webhooks.create", object: "", detail: serde_json::json!({}) };
        store
            .create_endpoint(&endpoint("whe_a", "acme", &["order.*", "product.updated"]), &entry)
            .await
            .expect("endpoint");
        store.create_endpoint(&endpoint("whe_g", "globex", &["order.*"]), &entry).await.expect("endpoint");
        saga.write_events(&[
            event("evt_1", "order.accepted", Some("acme"), "order:1"),
            event("evt_2", "order.confirmed", Some("acme"), "order:1"),
            event("evt_3", "order.accepted", Some("acme"), "order:2"),
            event("evt_4", "product.updated", None, "product:DRILL-10"),
            event("evt_5", "invoice.paid", Some("acme"), "order:1"),
        ])
        .await
        .expect("events");
        // Written twice (two replicas following the feed): kept once.
        saga.write_events(&[event("evt_4", "product.updated", None, "product:DRILL-10")]).await.expect("again");
        assert_eq!(store.fan_out(100, 2_000).await.expect("fan out"), 5);
        assert_eq!(store.fan_out(100, 2_000).await.expect("nothing left"), 0);
        let ids = |due: &[Due]| due.iter().map(|d| (d.endpoint_id.clone(), d.event_id.clone())).collect::<Vec<_>>();
        let (now, lease) = (3_000, 60_000);
        let mut first = ids(&store.claim_due("r1", now, now + lease, 100).await.expect("claim"));
        first.sort();
        // acme: order 1's first event (its second waits behind it), order
        // 2's, and the catalogue event; globex wants none of acme's.
        let want = [("whe_a", "evt_1"), ("whe_a", "evt_3"), ("whe_a", "evt_4")];
        assert_eq!(first, want.map(|(e, v)| (e.to_owned(), v.to_owned())));
        assert!(store.claim_due("r2", now, now + lease, 100).await.expect("claim").is_empty(), "all leased or waiting");
        // r1 dies; after its lease another replica takes its deliveries.
        let taken = store.claim_due("r2", now + lease + 1, now + 2 * lease, 100).await.expect("claim");
        assert_eq!(taken.len(), 3);
        let evt_1 = taken.iter().find(|d| d.event_id == "evt_1").expect("evt_1").clone();
        let ok = AttemptRow { at: now, http_status: 204, error: String::new(), duration_ms: 3 };
        store.settle(&evt_1, "r1", &ok, &Settle::Delivered).await.expect("a stale owner's settle");
        let log = store.deliveries("acme", "whe_a", "delivered", "", 10).await.expect("log");
        assert!(log.is_empty(), "a replica that lost the lease records nothing");
        store.settle(&evt_1, "r2", &ok, &Settle::Delivered).await.expect("settle");
        let next = store.claim_due("r2", now + lease + 2, now + 2 * lease, 100).await.expect("claim");
        assert_eq!(ids(&next), [("whe_a".to_owned(), "evt_2".to_owned())], "the next of order 1, now");
        let log = store.deliveries("", "", "delivered", "", 10).await.expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].attempts.len(), log[0].attempts[0].http_status), (1, 204));
    }

    #[tokio::test]
    async fn replicas_share_deliveries_on_postgres() {
        let scratch = ScratchPostgres::create("webhooks_claims").await;
        replicas_share_deliveries_and_each_aggregate_keeps_its_order(
            SagaStore::open(&scratch.url()).await.expect("open"),
        )
        .await;
    }

    #[tokio::test]
    async fn replicas_share_deliveries_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saga = SagaStore::open(&format!("sqlite://{}", dir.path().join("p.db").display())).await.expect("open");
        replicas_share_deliveries_and_each_aggregate_keeps_its_order(saga).await;
    }
}
