-- Erasure (a data-subject request): the customer row stays, its personal
-- fields emptied, so that other systems' references to its id resolve.
-- Its change is a `changes` row of kind 'erased'.
ALTER TABLE customers ADD COLUMN erased_at TEXT;
