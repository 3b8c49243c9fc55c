-- One database per store: each store has its own migration history, and
-- sqlx keeps one per database. Run once, when the volume is first made.
CREATE DATABASE erp_connect_gateway OWNER erp_connect;
CREATE DATABASE erp_connect_process OWNER erp_connect;
CREATE DATABASE erp_connect_erp OWNER erp_connect;
CREATE DATABASE erp_connect_payments OWNER erp_connect;
CREATE DATABASE erp_connect_crm OWNER erp_connect;
