-- Business events for partners' webhooks (webhooks/): whose event it is and
-- which aggregate orders it, and whether it has been fanned out to the
-- endpoints yet. Events written before are not sent to anyone.
ALTER TABLE outbox ADD COLUMN tenant TEXT;
ALTER TABLE outbox ADD COLUMN aggregate TEXT;
ALTER TABLE outbox ADD COLUMN fanned_out_at INTEGER;
UPDATE outbox SET fanned_out_at = created_at;
CREATE INDEX outbox_not_fanned_out ON outbox (seq) WHERE fanned_out_at IS NULL;
CREATE INDEX outbox_by_time ON outbox (created_at);

-- A partner's (tenant's) subscription.
CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    tenant                TEXT NOT NULL,
    url                   TEXT NOT NULL,
    -- JSON array of event types and patterns (order.*).
    events                TEXT NOT NULL,
    description           TEXT NOT NULL,
    enabled               INTEGER NOT NULL,
    disabled_reason       TEXT NOT NULL DEFAULT '',
    -- The signing secret, sealed with the configured key (webhooks/vault.rs).
    secret                TEXT NOT NULL,
    -- The secret before the last rotation, signing beside the new one
    -- until previous_secret_until (unix ms).
    previous_secret       TEXT,
    previous_secret_until INTEGER NOT NULL DEFAULT 0,
    -- Since when (unix ms) every attempt has failed; NULL after a success.
    failing_since         INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant, id);

-- One event for one endpoint; a replay is another generation of it.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    -- The outbox's seq: a pending delivery waits for the earlier pending
    -- ones of its aggregate at the same endpoint.
    event_seq       INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    aggregate       TEXT NOT NULL,
    -- The webhook's JSON body, as sent on every attempt.
    body            TEXT NOT NULL,
    -- When the event happened at its source (unix ms), for the latency.
    occurred_at     INTEGER NOT NULL,
    generation      INTEGER NOT NULL,
    -- pending, delivered or failed (attempts exhausted).
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (endpoint_id, event_id, generation)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (endpoint_id, aggregate, event_seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (status, id);

-- Each attempt of a delivery, for the delivery log.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    -- 0 when the endpoint did not answer.
    http_status INTEGER NOT NULL,
    error       TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
