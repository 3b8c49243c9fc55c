-- Custom fields ([[erp.custom_fields]]): the embedded ERP keeps each
-- entity's values as a JSON object by field name (erp.v1 CustomValue as
-- serde writes it), NULL when it has none.
ALTER TABLE customers ADD COLUMN custom_fields TEXT;
ALTER TABLE products ADD COLUMN custom_fields TEXT;
ALTER TABLE sales_orders ADD COLUMN custom_fields TEXT;
ALTER TABLE sales_order_lines ADD COLUMN custom_fields TEXT;

-- A product's custom fields are part of what the catalogue shows: a change
-- to them is a product change in the feed too.
DROP TRIGGER products_changed;
CREATE TRIGGER products_changed AFTER UPDATE OF name, list_price, currency, active, custom_fields ON products
WHEN OLD.name IS NOT NEW.name OR OLD.list_price IS NOT NEW.list_price
  OR OLD.currency IS NOT NEW.currency OR OLD.active IS NOT NEW.active
  OR OLD.custom_fields IS NOT NEW.custom_fields
BEGIN
    INSERT INTO change_log (aggregate, entity_id, state, changed_at)
    VALUES ('product', NEW.sku, CASE WHEN NEW.active THEN 'active' ELSE 'inactive' END,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
