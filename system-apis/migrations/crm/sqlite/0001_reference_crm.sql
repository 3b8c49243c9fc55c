-- The embedded reference CRM on SQLite: customers with their contacts and
-- addresses, the idempotency records of writes, and the change feed. Times
-- are RFC 3339 text (UTC, microseconds), as in the embedded ERP.

CREATE TABLE customers (
    id          TEXT PRIMARY KEY,             -- crm_...
    name        TEXT NOT NULL,
    email       TEXT,                         -- as given, trimmed
    email_key   TEXT,                         -- lower-cased, what FindCustomers compares
    phone       TEXT,
    vat_id      TEXT,                         -- normalised: upper case, no separators
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Not unique: a CRM may hold duplicates, and finding them is the point.
CREATE INDEX customers_by_email ON customers (email_key);
CREATE INDEX customers_by_vat_id ON customers (vat_id);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL DEFAULT '',
    phone       TEXT NOT NULL DEFAULT '',
    role        TEXT NOT NULL DEFAULT ''
);

CREATE INDEX contacts_by_customer ON contacts (customer_id, position);

CREATE TABLE addresses (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    position    INTEGER NOT NULL,
    street      TEXT NOT NULL,
    city        TEXT NOT NULL,
    postal_code TEXT NOT NULL DEFAULT '',
    country     TEXT NOT NULL DEFAULT ''
);

CREATE INDEX addresses_by_customer ON addresses (customer_id, position);

-- One row per idempotency key and operation; the primary key, not a
-- process's memory, makes a key count once across replicas.
CREATE TABLE idempotency (
    scope       TEXT NOT NULL,                -- 'create_customer', 'update_customer'
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,                -- digest of the request without its key
    result_id   TEXT NOT NULL,                -- the customer
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

-- The change feed: one row per committed change, written in the change's
-- own transaction. seq is the cursor.
CREATE TABLE changes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,             -- 'created', 'updated'
    changed_fields TEXT NOT NULL,             -- comma-separated, in crm.v1.Customer's order
    version        INTEGER NOT NULL,
    origin         TEXT NOT NULL DEFAULT '',
    changed_at     TEXT NOT NULL
);
