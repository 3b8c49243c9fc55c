-- A saga saves its order about nine times in its first second. Room left
-- on each page lets PostgreSQL write the new version beside the old one
-- (a HOT update) instead of adding an entry to each of the table's
-- indexes; a finished order's page is then half empty, the price of it.
ALTER TABLE orders SET (fillfactor = 50);
