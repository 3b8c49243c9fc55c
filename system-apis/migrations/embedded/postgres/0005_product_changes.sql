-- A product's name, price or active flag changed: the change feed says so
-- (aggregate `product`, entity id = SKU), so that callers caching the
-- catalogue (the process tier's price list) hear of it. A trigger, not the
-- connector, because prices are edited in the ERP itself, behind every API.
CREATE FUNCTION log_product_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.name IS DISTINCT FROM NEW.name OR OLD.list_price IS DISTINCT FROM NEW.list_price
       OR OLD.currency IS DISTINCT FROM NEW.currency OR OLD.active IS DISTINCT FROM NEW.active THEN
        INSERT INTO change_log (aggregate, entity_id, state, changed_at)
        VALUES ('product', NEW.sku, CASE WHEN NEW.active <> 0 THEN 'active' ELSE 'inactive' END,
                to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER products_changed AFTER INSERT OR UPDATE ON products
FOR EACH ROW EXECUTE FUNCTION log_product_change();
