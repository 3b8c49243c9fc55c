-- A table for the database module's own tests.
CREATE TABLE probe (id BIGINT PRIMARY KEY);
