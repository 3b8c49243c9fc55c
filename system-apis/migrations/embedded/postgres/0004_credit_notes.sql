-- Crediting an invoice (erp.v1 CreditInvoice) cancels it; the credit note
-- number and time record that it was credited, which tells a credited
-- invoice from a draft cancelled with its order.

ALTER TABLE invoices ADD COLUMN credit_note TEXT;   -- CN-000001, set when credited
ALTER TABLE invoices ADD COLUMN credited_at TEXT;
INSERT INTO counters (name, value) VALUES ('credit_note', 0);
