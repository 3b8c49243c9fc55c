//! `CustomerService` over the embedded ERP: the `customers` table (external
//! id and e-mail unique, credit limit as decimal text, custom fields as a
//! JSON object) and its `addresses`. Creating a customer is idempotent
//! through the `idempotency` table, as every create of this backend is.
//! An erased customer keeps its row, anonymised and stamped `erased_at`,
//! since its sales orders and invoices point at it and must be kept.

use erp_connect_proto::erp::v1::{Address, Customer, ErasureAction};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

use super::{EmbeddedErp, Tx, custom_to_store, log_change, money, new_id, now, remember, replayed, stored_custom};
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

async fn insert_address(tx: &mut Tx, customer_id: &str, address: &Address) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO addresses (id, customer_id, street, city, postal_code, country) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("adr"))
    .bind(customer_id)
    .bind(&address.street)
    .bind(&address.city)
    .bind(&address.postal_code)
    .bind(&address.country)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether customer `id` was erased; not found if there is no such customer.
async fn is_erased(tx: &mut Tx, id: &str) -> Result<bool, Error> {
    let row = sqlx::query("SELECT erased_at FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("customer", id))?;
    Ok(row.try_get::<Option<String>, _>("erased_at")?.is_some())
}

async fn count(tx: &mut Tx, sql: &'static str, id: &str) -> Result<usize, Error> {
    let n: i64 = sqlx::query_scalar(sql).bind(id).fetch_one(&mut **tx).await?;
    Ok(usize::try_from(n).unwrap_or_default())
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
        let mut tx = self.write_tx().await?;
        if let Some(id) = replayed(&mut tx, "customer", &new.idempotency_key, &new.fingerprint).await? {
            return read_customer(&mut tx, &id).await;
        }
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE (external_id IS NOT NULL AND external_id = $1) \
             OR (email IS NOT NULL AND lower(email) = lower($2))",
        )
        .bind(&new.external_id)
        .bind(&new.email)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = taken {
            return Err(Error::precondition(
                "CUSTOMER_EXISTS",
                existing,
                "a customer with this external id or e-mail already exists",
            ));
        }
        let id = new_id("cus");
        sqlx::query(
            "INSERT INTO customers (id, external_id, name, email, currency, credit_limit, created_at, custom_fields, open_amount) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '0.00')",
        )
        .bind(&id)
        .bind(&new.external_id)
        .bind(&new.name)
        .bind(&new.email)
        .bind(&new.currency)
        .bind(money(new.credit_limit))
        .bind(now())
        .bind(custom_to_store(&new.custom_fields))
        .execute(&mut *tx)
        .await?;
        for address in &new.addresses {
            insert_address(&mut tx, &id, address).await?;
        }
        remember(&mut tx, "customer", &new.idempotency_key, &new.fingerprint, &id).await?;
        log_change(&mut tx, "customer", &id, "active").await?;
        let customer = read_customer(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub(super) async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query("UPDATE customers SET credit_limit = $1 WHERE id = $2")
            .bind(money(limit))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::not_found("customer", id));
        }
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub(super) async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        // An erased customer gets no personal data back.
        if is_erased(&mut tx, id).await? {
            return Err(erased(id));
        }
        insert_address(&mut tx, id, address).await?;
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub(super) async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        let mut tx = self.write_tx().await?;
        if is_erased(&mut tx, id).await? {
            return Err(erased(id));
        }
        if let Some(Some(email)) = &change.email {
            // Checked, not left to the unique index: a caller learns which
            // customer has the address, as when creating one.
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM customers WHERE lower(email) = lower($1) AND id <> $2")
                    .bind(email)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(existing) = taken {
                return Err(Error::precondition(
                    "CUSTOMER_EXISTS",
                    existing,
                    "another customer has this e-mail address",
                ));
            }
        }
        if let Some(name) = &change.name {
            sqlx::query("UPDATE customers SET name = $1 WHERE id = $2").bind(name).bind(id).execute(&mut *tx).await?;
        }
        if let Some(email) = &change.email {
            sqlx::query("UPDATE customers SET email = $1 WHERE id = $2").bind(email).bind(id).execute(&mut *tx).await?;
        }
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub(super) async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        let mut tx = self.write_tx().await?;
        let again = is_erased(&mut tx, id).await?;
        // Deleted rather than emptied: no order or invoice of this ERP
        // points at an address.
        let addresses = sqlx::query("DELETE FROM addresses WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
        let addresses = usize::try_from(addresses.rows_affected()).unwrap_or_default();
        let orders = count(&mut tx, "SELECT count(*) FROM sales_orders WHERE customer_id = $1", id).await?;
        let invoices = count(&mut tx, "SELECT count(*) FROM invoices WHERE customer_id = $1", id).await?;
        if !again {
            // A repeat changes nothing, so it is no change in the feed either.
            sqlx::query(
                "UPDATE customers SET name = $1, email = NULL, external_id = NULL, erased_at = $2 WHERE id = $3",
            )
            .bind(ERASED_NAME)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            log_change(&mut tx, "customer", id, "erased").await?;
        }
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
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
