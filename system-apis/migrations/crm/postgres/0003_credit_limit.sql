-- The credit limit the ERP grants, shown in the CRM: decimal text with two
-- places (erp_connect_proto::money), NULL when unknown. The ERP owns it;
-- master data writes it here, and an erasure clears it.
ALTER TABLE customers ADD COLUMN credit_limit TEXT;
