-- A product's name, price or active flag changed: the change feed says so
-- (aggregate `product`, entity id = SKU), so that callers caching the
-- catalogue (the process tier's price list) hear of it. A trigger, not the
-- connector, because prices are edited in the ERP itself, behind every API.
CREATE TRIGGER products_changed AFTER UPDATE OF name, list_price, currency, active ON products
WHEN OLD.name IS NOT NEW.name OR OLD.list_price IS NOT NEW.list_price
  OR OLD.currency IS NOT NEW.currency OR OLD.active IS NOT NEW.active
BEGIN
    INSERT INTO change_log (aggregate, entity_id, state, changed_at)
    VALUES ('product', NEW.sku, CASE WHEN NEW.active THEN 'active' ELSE 'inactive' END,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER products_added AFTER INSERT ON products
BEGIN
    INSERT INTO change_log (aggregate, entity_id, state, changed_at)
    VALUES ('product', NEW.sku, CASE WHEN NEW.active THEN 'active' ELSE 'inactive' END,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
