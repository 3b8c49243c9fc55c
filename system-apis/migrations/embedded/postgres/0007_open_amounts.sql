-- A customer's open amount (what its posted invoices still have due), kept
-- beside the customer and moved in the same transaction as each invoice
-- that is posted, paid or credited, so that a credit check reads one row
-- instead of summing every open invoice of a customer (a partner on
-- account has thousands). NULL until first read: the sum of the invoices
-- written before this column, taken once (receivables.rs).
ALTER TABLE customers ADD COLUMN open_amount TEXT;
