-- Custom fields ([[erp.custom_fields]]): the embedded ERP keeps each
-- entity's values as a JSON object by field name (erp.v1 CustomValue as
-- serde writes it), NULL when it has none.
ALTER TABLE customers ADD COLUMN custom_fields TEXT;
ALTER TABLE products ADD COLUMN custom_fields TEXT;
ALTER TABLE sales_orders ADD COLUMN custom_fields TEXT;
ALTER TABLE sales_order_lines ADD COLUMN custom_fields TEXT;

-- A product's custom fields are part of what the catalogue shows: a change
-- to them is a product change in the feed too.
CREATE OR REPLACE FUNCTION log_product_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.name IS DISTINCT FROM NEW.name OR OLD.list_price IS DISTINCT FROM NEW.list_price
       OR OLD.currency IS DISTINCT FROM NEW.currency OR OLD.active IS DISTINCT FROM NEW.active
       OR OLD.custom_fields IS DISTINCT FROM NEW.custom_fields THEN
        INSERT INTO change_log (aggregate, entity_id, state, changed_at)
        VALUES ('product', NEW.sku, CASE WHEN NEW.active <> 0 THEN 'active' ELSE 'inactive' END,
                to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
