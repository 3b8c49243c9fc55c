-- What order-to-cash needs beyond the catalogue: addresses, sales orders,
-- invoices, shipments, idempotency records and the change log that feeds
-- erp.v1.ChangeFeedService.

CREATE TABLE addresses (
    id            TEXT PRIMARY KEY,           -- adr_...
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    street        TEXT NOT NULL,
    city          TEXT NOT NULL,
    postal_code   TEXT NOT NULL DEFAULT '',
    country       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX addresses_by_customer ON addresses (customer_id);

-- One row per idempotent write: a replay with the same fingerprint returns
-- result_id; another request under the same key is refused.
CREATE TABLE idempotency (
    scope         TEXT NOT NULL,              -- 'customer', 'sales_order', 'invoice_payment'
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    result_id     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE counters (
    name          TEXT PRIMARY KEY,
    value         INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('sales_order', 0), ('invoice', 0), ('shipment', 0);

CREATE TABLE sales_orders (
    id            TEXT PRIMARY KEY,           -- so_...
    number        TEXT UNIQUE,                -- SO-000001, set on quote
    reference     TEXT NOT NULL DEFAULT '',
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    state         TEXT NOT NULL,              -- draft, quotation, processing, done, cancelled
    currency      TEXT NOT NULL,
    total         TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX sales_orders_by_customer ON sales_orders (customer_id, id);

CREATE TABLE sales_order_lines (
    sales_order_id TEXT NOT NULL REFERENCES sales_orders(id),
    line_no       INTEGER NOT NULL,
    sku           TEXT NOT NULL REFERENCES products(sku),
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    unit_price    TEXT NOT NULL,
    amount        TEXT NOT NULL,
    PRIMARY KEY (sales_order_id, line_no)
);

CREATE TABLE invoices (
    id            TEXT PRIMARY KEY,           -- inv_...
    number        TEXT UNIQUE,                -- INV-000001, set on post
    sales_order_id TEXT NOT NULL REFERENCES sales_orders(id),
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    state         TEXT NOT NULL,              -- draft, posted, paid, cancelled
    currency      TEXT NOT NULL,
    total         TEXT NOT NULL,
    amount_due    TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX invoices_by_order ON invoices (sales_order_id);
CREATE INDEX invoices_by_customer ON invoices (customer_id, state);

CREATE TABLE shipments (
    id            TEXT PRIMARY KEY,           -- shp_...
    number        TEXT NOT NULL UNIQUE,       -- SHP-000001
    sales_order_id TEXT NOT NULL REFERENCES sales_orders(id),
    state         TEXT NOT NULL,              -- waiting, done, cancelled
    created_at    TEXT NOT NULL
);
CREATE INDEX shipments_by_order ON shipments (sales_order_id);

-- Reserved stock per shipment line, released on cancel, consumed on ship.
CREATE TABLE shipment_lines (
    shipment_id   TEXT NOT NULL REFERENCES shipments(id),
    sku           TEXT NOT NULL,
    warehouse     TEXT NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0)
);
CREATE INDEX shipment_lines_by_shipment ON shipment_lines (shipment_id);

CREATE TABLE change_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate     TEXT NOT NULL,              -- customer, sales_order, invoice, shipment
    entity_id     TEXT NOT NULL,
    state         TEXT NOT NULL,
    changed_at    TEXT NOT NULL
);

INSERT INTO addresses (id, customer_id, street, city, postal_code, country) VALUES
  ('adr_01JDEMO0000000000000000001', 'cus_01JDEMO0000000000000000001', 'Hafenstrasse 1', 'Hamburg', '20457', 'DE'),
  ('adr_01JDEMO0000000000000000002', 'cus_01JDEMO0000000000000000002', 'Schraubenweg 42', 'Stuttgart', '70173', 'DE'),
  ('adr_01JDEMO0000000000000000003', 'cus_01JDEMO0000000000000000003', 'Baustrasse 7', 'Munich', '80331', 'DE'),
  ('adr_01JDEMO0000000000000000004', 'cus_01JDEMO0000000000000000004', 'Gartenweg 3', 'Berlin', '10115', 'DE');
