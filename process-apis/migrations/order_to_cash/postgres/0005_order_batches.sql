-- Order files from partners (order_batches/): each file, its rows as they
-- came, and what became of each.
CREATE TABLE order_batches (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    -- The caller's Idempotency-Key, else sha256:<the file's SHA-256>; the
    -- batch's own id while the file is still arriving.
    idempotency_key  TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    format           TEXT NOT NULL,
    dry_run          BIGINT NOT NULL,
    -- receiving, importing, done.
    status           TEXT NOT NULL,
    rows             BIGINT NOT NULL DEFAULT 0,
    orders_accepted  BIGINT NOT NULL DEFAULT 0,
    rows_rejected    BIGINT NOT NULL DEFAULT 0,
    rows_quarantined BIGINT NOT NULL DEFAULT 0,
    -- The replica importing it, and until when (unix ms).
    lease_owner      TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX order_batches_importing ON order_batches (status, lease_until);

CREATE TABLE order_batch_rows (
    batch_id     TEXT NOT NULL,
    row_no       BIGINT NOT NULL,
    -- As the partner wrote it; rows sharing it form one order.
    external_ref TEXT NOT NULL,
    -- The record as a JSON object in the partner's field names, or the
    -- reason the line is no record.
    record       TEXT NOT NULL,
    -- pending, accepted, valid (dry run), rejected, quarantined.
    status       TEXT NOT NULL,
    order_id     TEXT NOT NULL DEFAULT '',
    -- JSON array of {field, rule?, message}.
    errors       TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (batch_id, row_no)
);
CREATE INDEX order_batch_rows_by_order ON order_batch_rows (batch_id, external_ref, row_no);

-- What failed on an asynchronous path, kept whole for an operator to fix
-- and replay, or discard.
CREATE TABLE quarantine (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    -- e.g. batch:bat_...
    source       TEXT NOT NULL,
    -- mapping, validation, order.
    stage        TEXT NOT NULL,
    external_ref TEXT NOT NULL,
    -- JSON array of the original records (objects in the partner's names).
    records      TEXT NOT NULL,
    -- JSON array of {field, rule?, message}.
    reasons      TEXT NOT NULL,
    -- open, replayed, discarded.
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT NOT NULL DEFAULT 0,
    resolved_by  TEXT NOT NULL DEFAULT '',
    resolution   TEXT NOT NULL DEFAULT '',
    order_id     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX quarantine_by_tenant ON quarantine (tenant, id);
CREATE INDEX quarantine_open ON quarantine (status, created_at);
