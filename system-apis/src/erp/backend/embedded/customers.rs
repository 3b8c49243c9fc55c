//! `CustomerService` over the embedded ERP: the `customers` table (external
//! id and e-mail unique, credit limit as decimal text, custom fields as a
//! JSON object) and its `addresses`. Creating a customer is idempotent
//! through the `idempotency` table, as every create of this backend is.
//! An erased customer keeps its row, anonymised and stamped `erased_at`,
//! since its sales orders and invoices point at it and must be kept.

use erp_connect_proto::erp::v1::{Address, Customer, ErasureAction};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

use platform::database::{Columns, Sql};

use super::{EmbeddedErp, custom_to_store, log_change, money, new_id, now, remember, replayed, stored_custom};
use crate::erp::{
    CustomerChange, CustomerKey, ERASED_NAME, Error, NewCustomer, RETENTION_REASON, erased, erasure_action,
};

pub(super) async fn read_customer(conn: &mut AnyConnection, id: &str) -> Result<Customer, Error> {
    let row = sqlx::query(
        "SELECT id, external_id, name, email, currency, credit_limit, custom_fields FROM customers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("customer", id))?;
    let addresses =
        sqlx::query("SELECT id, street, city, postal_code, country FROM addresses WHERE customer_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|a| {
                Ok(Address {
                    id: a.try_get("id")?,
                    street: a.try_get("street")?,
                    city: a.try_get("city")?,
                    postal_code: a.try_get("postal_code")?,
                    country: a.try_get("country")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Customer {
        id: row.try_get("id")?,
        external_id: row.try_get::<Option<String>, _>("external_id")?.unwrap_or_default(),
        name: row.try_get("name")?,
        email: row.try_get::<Option<String>, _>("email")?.unwrap_or_default(),
        currency: row.try_get("currency")?,
        credit_limit: row.try_get("credit_limit")?,
        addresses,
        custom_fields: stored_custom(&row, "custom_fields")?,
    })
}

fn insert_address(sql: &mut dyn Sql, customer_id: &str, address: &Address) -> Result<(), Error> {
    sql.execute(
        "INSERT INTO addresses (id, customer_id, street, city, postal_code, country) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            new_id("adr").into(),
            customer_id.into(),
            (&address.street).into(),
            (&address.city).into(),
            (&address.postal_code).into(),
            (&address.country).into(),
        ],
    )?;
    Ok(())
}

/// Whether customer `id` was erased; not found if there is no such customer.
fn is_erased(sql: &mut dyn Sql, id: &str) -> Result<bool, Error> {
    let row = sql
        .fetch_optional("SELECT erased_at FROM customers WHERE id = $1", &[id.into()])?
        .ok_or_else(|| Error::not_found("customer", id))?;
    Ok(row.opt_text("erased_at")?.is_some())
}

fn count(sql: &mut dyn Sql, query: &'static str, id: &str) -> Result<usize, Error> {
    let n = sql.fetch_optional(query, &[id.into()])?.map(|row| row.int("n")).transpose()?.unwrap_or_default();
    Ok(usize::try_from(n).unwrap_or_default())
}

/// The customer with this external id or e-mail, other than `except`.
fn taken(
    sql: &mut dyn Sql,
    external_id: Option<&str>,
    email: Option<&str>,
    except: &str,
) -> Result<Option<String>, Error> {
    let row = sql.fetch_optional(
        "SELECT id FROM customers WHERE id <> $3 AND ((external_id IS NOT NULL AND external_id = $1) \
         OR (email IS NOT NULL AND lower(email) = lower($2)))",
        &[external_id.into(), email.into(), except.into()],
    )?;
    Ok(row.map(|row| row.text("id")).transpose()?)
}

fn create(sql: &mut dyn Sql, new: &NewCustomer) -> Result<String, Error> {
    if let Some(id) = replayed(sql, "customer", &new.idempotency_key, &new.fingerprint)? {
        return Ok(id);
    }
    if let Some(existing) = taken(sql, new.external_id.as_deref(), new.email.as_deref(), "")? {
        return Err(Error::precondition(
            "CUSTOMER_EXISTS",
            existing,
            "a customer with this external id or e-mail already exists",
        ));
    }
    let id = new_id("cus");
    sql.execute(
        "INSERT INTO customers (id, external_id, name, email, currency, credit_limit, created_at, custom_fields, open_amount) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '0.00')",
        &[
            (&id).into(),
            new.external_id.clone().into(),
            (&new.name).into(),
            new.email.clone().into(),
            (&new.currency).into(),
            money(new.credit_limit).into(),
            now().into(),
            custom_to_store(&new.custom_fields).into(),
        ],
    )?;
    for address in &new.addresses {
        insert_address(sql, &id, address)?;
    }
    remember(sql, "customer", &new.idempotency_key, &new.fingerprint, &id)?;
    log_change(sql, "customer", &id, "active")?;
    Ok(id)
}

fn update(sql: &mut dyn Sql, id: &str, change: &CustomerChange) -> Result<(), Error> {
    if is_erased(sql, id)? {
        return Err(erased(id));
    }
    if let Some(Some(email)) = &change.email {
        // Checked, not left to the unique index: a caller learns which
        // customer has the address, as when creating one.
        if let Some(existing) = taken(sql, None, Some(email), id)? {
            return Err(Error::precondition("CUSTOMER_EXISTS", existing, "another customer has this e-mail address"));
        }
    }
    if let Some(name) = &change.name {
        sql.execute("UPDATE customers SET name = $1 WHERE id = $2", &[name.into(), id.into()])?;
    }
    if let Some(email) = &change.email {
        sql.execute("UPDATE customers SET email = $1 WHERE id = $2", &[email.clone().into(), id.into()])?;
    }
    log_change(sql, "customer", id, "active")
}

/// Erases the customer's personal data; the addresses, orders and invoices
/// it had.
fn erase(sql: &mut dyn Sql, id: &str) -> Result<(usize, usize, usize), Error> {
    let again = is_erased(sql, id)?;
    // Deleted rather than emptied: no order or invoice of this ERP
    // points at an address.
    let addresses = sql.execute("DELETE FROM addresses WHERE customer_id = $1", &[id.into()])?;
    let orders = count(sql, "SELECT count(*) AS n FROM sales_orders WHERE customer_id = $1", id)?;
    let invoices = count(sql, "SELECT count(*) AS n FROM invoices WHERE customer_id = $1", id)?;
    if !again {
        // A repeat changes nothing, so it is no change in the feed either.
        sql.execute(
            "UPDATE customers SET name = $1, email = NULL, external_id = NULL, erased_at = $2 WHERE id = $3",
            &[ERASED_NAME.into(), now().into(), id.into()],
        )?;
        log_change(sql, "customer", id, "erased")?;
    }
    Ok((usize::try_from(addresses).unwrap_or_default(), orders, invoices))
}

impl EmbeddedErp {
    pub(super) async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        read_customer(&mut *self.pool().acquire().await?, id).await
    }

    pub(super) async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        let (sql, value) = match key {
            CustomerKey::ExternalId(id) => ("SELECT id FROM customers WHERE external_id = $1", id),
            CustomerKey::Email(email) => ("SELECT id FROM customers WHERE lower(email) = lower($1)", email),
        };
        let mut conn = self.pool().acquire().await?;
        let id: Option<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(value).fetch_optional(&mut *conn).await?;
        let id = id.ok_or_else(|| Error::not_found("customer", value.clone()))?;
        read_customer(&mut conn, &id).await
    }

    pub(super) async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        let new = new.clone();
        let id = self.db.transact(move |sql| create(sql, &new)).await?;
        self.get_customer(&id).await
    }

    pub(super) async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        let owned = id.to_owned();
        self.db
            .transact(move |sql| {
                let updated = sql.execute(
                    "UPDATE customers SET credit_limit = $1 WHERE id = $2",
                    &[money(limit).into(), (&owned).into()],
                )?;
                if updated == 0 {
                    return Err(Error::not_found("customer", owned));
                }
                log_change(sql, "customer", &owned, "active")
            })
            .await?;
        self.get_customer(id).await
    }

    pub(super) async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        let (owned, address) = (id.to_owned(), address.clone());
        self.db
            .transact(move |sql| {
                // An erased customer gets no personal data back.
                if is_erased(sql, &owned)? {
                    return Err(erased(&owned));
                }
                insert_address(sql, &owned, &address)?;
                log_change(sql, "customer", &owned, "active")
            })
            .await?;
        self.get_customer(id).await
    }

    pub(super) async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        let (owned, change) = (id.to_owned(), change.clone());
        self.db.transact(move |sql| update(sql, &owned, &change)).await?;
        self.get_customer(id).await
    }

    pub(super) async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        let owned = id.to_owned();
        let (addresses, orders, invoices) = self.db.transact(move |sql| erase(sql, &owned)).await?;
        let customer = self.get_customer(id).await?;
        let actions = vec![
            erasure_action("name", "anonymised", "", 0),
            erasure_action("email", "removed", "", 0),
            erasure_action("external_id", "removed", "", 0),
            erasure_action("addresses", "removed", "", addresses),
            erasure_action("customer", "deactivated", "", 0),
            erasure_action("sales_orders", "kept", RETENTION_REASON, orders),
            erasure_action("invoices", "kept", RETENTION_REASON, invoices),
        ];
        Ok((customer, actions))
    }
}
