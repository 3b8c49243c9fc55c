-- The embedded reference ERP: the tables an ERP keeps for order-to-cash.
-- Money is stored as decimal text, never as floating point.

CREATE TABLE customers (
    id            TEXT PRIMARY KEY,           -- cus_...
    external_id   TEXT UNIQUE,                -- the tenant's own reference
    name          TEXT NOT NULL,
    email         TEXT UNIQUE,
    currency      TEXT NOT NULL DEFAULT 'EUR',
    credit_limit  TEXT NOT NULL DEFAULT '0.00',
    created_at    TEXT NOT NULL
);

CREATE TABLE products (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    uom           TEXT NOT NULL DEFAULT 'unit',
    list_price    TEXT NOT NULL,
    currency      TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE warehouses (
    code          TEXT PRIMARY KEY,
    name          TEXT NOT NULL
);

CREATE TABLE stock (
    warehouse     TEXT NOT NULL REFERENCES warehouses(code),
    sku           TEXT NOT NULL REFERENCES products(sku),
    on_hand       INTEGER NOT NULL CHECK (on_hand >= 0),
    reserved      INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (warehouse, sku)
);

CREATE INDEX stock_by_sku ON stock (sku);
