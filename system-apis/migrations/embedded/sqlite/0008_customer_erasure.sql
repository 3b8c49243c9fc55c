-- When a customer's personal data was erased (EraseCustomer), as RFC 3339
-- text; NULL while it is not. An erased customer is kept, anonymised,
-- because its sales orders and invoices must be (a retention duty), and
-- this column is what refuses later updates and makes erasing it again a
-- no-op instead of a second change.
ALTER TABLE customers ADD COLUMN erased_at TEXT;
