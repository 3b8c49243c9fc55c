-- Orders waiting for a system that does not answer (the ERP, payments):
-- which system and since when (unix ms), copied from the saga document on
-- every write, so that the backlog can be counted and woken when the
-- system answers again without reading documents.
ALTER TABLE orders ADD COLUMN waiting_on TEXT;
ALTER TABLE orders ADD COLUMN waiting_since BIGINT;
CREATE INDEX orders_waiting ON orders (waiting_on) WHERE waiting_on IS NOT NULL;
