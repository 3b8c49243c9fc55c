-- The embedded reference ERP on PostgreSQL: the tables of ../sqlite/ in
-- PostgreSQL's DDL. Keys compare byte-wise (COLLATE "C"), as in SQLite, so
-- keyset pages come in the same order on both. Integers are BIGINT and
-- flags integers, which sqlx's Any driver reads alike on both dialects.
-- Money is stored as decimal text, never as floating point.

CREATE TABLE customers (
    id            TEXT COLLATE "C" PRIMARY KEY,   -- cus_...
    external_id   TEXT UNIQUE,                    -- the tenant's own reference
    name          TEXT NOT NULL,
    email         TEXT UNIQUE,
    currency      TEXT NOT NULL DEFAULT 'EUR',
    credit_limit  TEXT NOT NULL DEFAULT '0.00',
    created_at    TEXT NOT NULL
);

CREATE TABLE products (
    sku           TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    uom           TEXT NOT NULL DEFAULT 'unit',
    list_price    TEXT NOT NULL,
    currency      TEXT NOT NULL,
    active        BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE warehouses (
    code          TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL
);

CREATE TABLE stock (
    warehouse     TEXT COLLATE "C" NOT NULL REFERENCES warehouses(code),
    sku           TEXT COLLATE "C" NOT NULL REFERENCES products(sku),
    on_hand       BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved      BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (warehouse, sku)
);

CREATE INDEX stock_by_sku ON stock (sku);
