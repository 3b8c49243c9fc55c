//! `CustomerService` over the embedded ERP: the `customers` table (external
//! id and e-mail unique, credit limit as decimal text, custom fields as a
//! JSON object) and its `addresses`. Creating a customer is idempotent
//! through the `idempotency` table, as every create of this backend is.

use erp_connect_proto::erp::v1::{Address, Customer};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};

use super::{EmbeddedErp, Tx, custom_to_store, log_change, money, new_id, now, remember, replayed, stored_custom};
use crate::erp::{CustomerKey, Error, NewCustomer};

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
        read_customer(&mut tx, id).await?;
        insert_address(&mut tx, id, address).await?;
        log_change(&mut tx, "customer", id, "active").await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }
}
