-- The payments ledger on PostgreSQL (the same tables as ../sqlite/, BYTEA
-- for BLOB): our own record of every payment a provider holds,
-- and of every idempotency key a payments.v1 call has used. Kept apart from
-- the ERP's database (payments.db) because it belongs to the payments system
-- API, whichever ERP is configured.

-- One row per authorization attempt, declined ones included (they are a
-- result the caller may replay). Amounts are decimal text with two places.
CREATE TABLE payments (
    id                 TEXT PRIMARY KEY,          -- pay_<ULID>
    status             TEXT NOT NULL
                       CHECK (status IN ('authorized', 'captured', 'voided', 'refunded', 'declined')),
    currency           TEXT NOT NULL,
    amount             TEXT NOT NULL,             -- authorized (or declined)
    captured_amount    TEXT NOT NULL DEFAULT '0.00',
    refunded_amount    TEXT NOT NULL DEFAULT '0.00',
    decline_reason     TEXT NOT NULL DEFAULT '',
    reference          TEXT NOT NULL DEFAULT '',  -- the caller's, e.g. an order id
    provider           TEXT NOT NULL,             -- 'sandbox', ...
    provider_reference TEXT NOT NULL DEFAULT '',  -- the provider's own id
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX payments_by_reference ON payments (reference);

-- One row per successful mutating call. The primary key is what makes a
-- concurrent duplicate lose: its insert conflicts and it answers from the
-- winner's row instead. `response` is the encoded payments.v1.Payment the
-- first call answered, so a replay answers the same even after the payment
-- moved on (captured, refunded...).
CREATE TABLE idempotency_keys (
    key                TEXT PRIMARY KEY,
    operation          TEXT NOT NULL,             -- authorize, capture, void, refund
    fingerprint        TEXT NOT NULL,             -- the request without its key
    payment_id         TEXT NOT NULL REFERENCES payments(id),
    response           BYTEA NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX idempotency_keys_by_payment ON idempotency_keys (payment_id);
