-- The order-to-cash saga store (PostgreSQL). Each order is one row whose `doc`
-- holds the whole saga state as JSON; the other columns exist to be queried.
CREATE TABLE orders (
    id                   TEXT PRIMARY KEY,
    tenant               TEXT NOT NULL,
    customer_id          TEXT NOT NULL,
    customer_external_id TEXT NOT NULL,
    idempotency_key      TEXT NOT NULL,
    -- What the first request asked for, to tell a replay from a key reused
    -- with another body.
    fingerprint          TEXT NOT NULL,
    status               TEXT NOT NULL,
    doc                  TEXT NOT NULL,
    -- Optimistic concurrency: every write bumps it.
    version              BIGINT NOT NULL,
    -- 1 while the saga has a step to run (now or at next_attempt_at).
    runnable             BIGINT NOT NULL,
    next_attempt_at      BIGINT NOT NULL,
    -- The replica running the saga, and until when (unix ms).
    lease_owner          TEXT,
    lease_until          BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX orders_due ON orders (runnable, next_attempt_at);
CREATE INDEX orders_by_customer ON orders (tenant, customer_external_id, id);
CREATE INDEX orders_by_customer_id ON orders (customer_id, id);

-- ERP ids (shipments, invoices) → the order they belong to, for the change
-- feed and for tenant checks.
CREATE TABLE order_refs (
    erp_id   TEXT PRIMARY KEY,
    order_id TEXT NOT NULL
);

-- Transactional outbox: written with the saga step, published after commit.
CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    order_id     TEXT NOT NULL,
    -- e.g. order.confirmed; published as <subject prefix>.<event_type>.
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- Where each follower of an external feed has got to.
CREATE TABLE feed_cursors (
    name   TEXT PRIMARY KEY,
    cursor TEXT NOT NULL
);
