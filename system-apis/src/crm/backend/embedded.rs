//! The embedded reference CRM: customers, contacts and addresses in SQL
//! through sqlx, on SQLite (the default, `<data dir>/crm.db`) or PostgreSQL
//! (`crm.database_url = "postgres://..."`), migrated on open
//! (`migrations/crm/{sqlite,postgres}/`, the same tables in each dialect's
//! DDL).
//!
//! Every write runs in one write transaction of [`platform::database`],
//! which on PostgreSQL holds the store's advisory lock: two system-tier
//! replicas on one database take turns, so an idempotency key's check and
//! its record, a version check and its update, and a change and its feed
//! row each commit together with no write in between. Since writes commit
//! one at a time, feed sequence numbers also become visible in order, and
//! a reader resuming after a cursor never skips a row that committed late.
//! The idempotency table's primary key backs this up: a key is recorded
//! once, whatever the process remembers.

use std::{collections::BTreeSet, path::Path};

use erp_connect_proto::crm::v1::{Address, ChangeKind, Contact, Customer, CustomerChange};
use sqlx::{AnyConnection, Row};

use platform::database::{Database, Migrations, idempotency};

use crate::crm::{Connector, CustomerKey, CustomerUpdate, Error, Field, NewCustomer, Values};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/crm/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/crm/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

type Tx = platform::database::WriteTx;

/// The embedded CRM over one SQL database.
#[derive(Debug)]
pub struct EmbeddedCrm {
    db: Database,
}

fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    humantime::parse_rfc3339(text).ok().map(prost_types::Timestamp::from)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

impl EmbeddedCrm {
    /// Opens (creating if needed) `database_url`, or `<data_dir>/crm.db`,
    /// and brings its schema up to date.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, Error> {
        Ok(Self { db: Database::open(database_url, data_dir, "crm.db", "crm", &MIGRATIONS).await? })
    }

    fn db_system(&self) -> &'static str {
        match self.db.dialect() {
            platform::database::Dialect::Sqlite => "sqlite",
            platform::database::Dialect::Postgres => "postgresql",
        }
    }
}

async fn read_customer(conn: &mut AnyConnection, id: &str) -> Result<Customer, Error> {
    let row = sqlx::query(
        "SELECT id, name, email, phone, vat_id, credit_limit, version, created_at, updated_at, erased_at \
         FROM customers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound { id: id.to_owned() })?;
    let contacts =
        sqlx::query("SELECT id, name, email, phone, role FROM contacts WHERE customer_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|c| {
                Ok(Contact {
                    id: c.try_get("id")?,
                    name: c.try_get("name")?,
                    email: c.try_get("email")?,
                    phone: c.try_get("phone")?,
                    role: c.try_get("role")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let addresses = sqlx::query(
        "SELECT id, street, city, postal_code, country FROM addresses WHERE customer_id = $1 ORDER BY position",
    )
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
    let text = |column: &str| row.try_get::<Option<String>, _>(column).map(Option::unwrap_or_default);
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: text("email")?,
        phone: text("phone")?,
        vat_id: text("vat_id")?,
        contacts,
        addresses,
        credit_limit: text("credit_limit")?,
        version: row.try_get("version")?,
        created_at: timestamp(&row.try_get::<String, _>("created_at")?),
        updated_at: timestamp(&row.try_get::<String, _>("updated_at")?),
        erased_at: row.try_get::<Option<String>, _>("erased_at")?.as_deref().and_then(timestamp),
    })
}

/// The stored result of an earlier call with this key, if any; a
/// different request under the same key is a conflict.
async fn replayed(tx: &mut Tx, scope: &str, key: &str, fingerprint: &str) -> Result<Option<String>, Error> {
    match idempotency::recorded(tx, scope, key, fingerprint).await? {
        idempotency::Recorded::Nothing => Ok(None),
        idempotency::Recorded::Same(result_id) => Ok(Some(result_id)),
        idempotency::Recorded::Different => Err(Error::IdempotencyConflict { key: key.to_owned() }),
    }
}

async fn remember(tx: &mut Tx, scope: &str, key: &str, fingerprint: &str, result_id: &str) -> Result<(), Error> {
    Ok(idempotency::record(tx, scope, key, fingerprint, result_id, &now()).await?)
}

async fn log_change(
    tx: &mut Tx,
    customer_id: &str,
    kind: &str,
    fields: &BTreeSet<Field>,
    version: i64,
    origin: &str,
    at: &str,
) -> Result<(), Error> {
    let fields = fields.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",");
    sqlx::query(
        "INSERT INTO changes (customer_id, kind, changed_fields, version, origin, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(customer_id)
    .bind(kind)
    .bind(fields)
    .bind(version)
    .bind(origin)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces the customer's contacts. A contact keeps the id it came with
/// when that id is one of this customer's; any other gets a new one.
async fn write_contacts(tx: &mut Tx, customer_id: &str, contacts: &[Contact], keep: &[String]) -> Result<(), Error> {
    sqlx::query("DELETE FROM contacts WHERE customer_id = $1").bind(customer_id).execute(&mut **tx).await?;
    let mut used = BTreeSet::new();
    for (position, c) in contacts.iter().enumerate() {
        let id = if keep.contains(&c.id) && used.insert(c.id.clone()) { c.id.clone() } else { new_id("con") };
        sqlx::query(
            "INSERT INTO contacts (id, customer_id, position, name, email, phone, role) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(customer_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&c.name)
        .bind(&c.email)
        .bind(&c.phone)
        .bind(&c.role)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Replaces the customer's addresses, keeping ids as [`write_contacts`].
async fn write_addresses(tx: &mut Tx, customer_id: &str, addresses: &[Address], keep: &[String]) -> Result<(), Error> {
    sqlx::query("DELETE FROM addresses WHERE customer_id = $1").bind(customer_id).execute(&mut **tx).await?;
    let mut used = BTreeSet::new();
    for (position, a) in addresses.iter().enumerate() {
        let id = if keep.contains(&a.id) && used.insert(a.id.clone()) { a.id.clone() } else { new_id("adr") };
        sqlx::query(
            "INSERT INTO addresses (id, customer_id, position, street, city, postal_code, country) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(customer_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&a.street)
        .bind(&a.city)
        .bind(&a.postal_code)
        .bind(&a.country)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The contacts' values, without their ids: what "changed" compares.
fn contact_values(contacts: &[Contact]) -> Vec<(&str, &str, &str, &str)> {
    contacts.iter().map(|c| (c.name.as_str(), c.email.as_str(), c.phone.as_str(), c.role.as_str())).collect()
}

fn address_values(addresses: &[Address]) -> Vec<(&str, &str, &str, &str)> {
    addresses.iter().map(|a| (a.street.as_str(), a.city.as_str(), a.postal_code.as_str(), a.country.as_str())).collect()
}

/// The fields of `update` whose values differ from `current`'s.
fn changed_fields(current: &Customer, fields: &BTreeSet<Field>, new: &Values) -> BTreeSet<Field> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    fields
        .iter()
        .copied()
        .filter(|field| match field {
            Field::Name => current.name != new.name,
            Field::Email => current.email != text(&new.email),
            Field::Phone => current.phone != text(&new.phone),
            Field::VatId => current.vat_id != text(&new.vat_id),
            Field::Contacts => contact_values(&current.contacts) != contact_values(&new.contacts),
            Field::Addresses => address_values(&current.addresses) != address_values(&new.addresses),
            Field::CreditLimit => current.credit_limit != text(&new.credit_limit),
        })
        .collect()
}

/// The fields a new customer sets.
fn set_fields(values: &Values) -> BTreeSet<Field> {
    Field::ALL
        .into_iter()
        .filter(|field| match field {
            Field::Name => true,
            Field::Email => values.email.is_some(),
            Field::Phone => values.phone.is_some(),
            Field::VatId => values.vat_id.is_some(),
            Field::Contacts => !values.contacts.is_empty(),
            Field::Addresses => !values.addresses.is_empty(),
            Field::CreditLimit => values.credit_limit.is_some(),
        })
        .collect()
}

impl EmbeddedCrm {
    async fn create(&self, new: &NewCustomer) -> Result<Customer, Error> {
        let mut tx = self.db.begin_write().await?;
        if let Some(id) = replayed(&mut tx, "create_customer", &new.idempotency_key, &new.fingerprint).await? {
            return read_customer(&mut tx, &id).await;
        }
        let id = new_id("crm");
        let at = now();
        let v = &new.values;
        sqlx::query(
            "INSERT INTO customers (id, name, email, email_key, phone, vat_id, credit_limit, version, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
        )
        .bind(&id)
        .bind(&v.name)
        .bind(&v.email)
        .bind(v.email.as_ref().map(|e| e.to_lowercase()))
        .bind(&v.phone)
        .bind(&v.vat_id)
        .bind(&v.credit_limit)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        write_contacts(&mut tx, &id, &v.contacts, &[]).await?;
        write_addresses(&mut tx, &id, &v.addresses, &[]).await?;
        remember(&mut tx, "create_customer", &new.idempotency_key, &new.fingerprint, &id).await?;
        log_change(&mut tx, &id, "created", &set_fields(v), 1, &new.origin, &at).await?;
        let customer = read_customer(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    async fn find(&self, key: &CustomerKey) -> Result<Vec<Customer>, Error> {
        let (sql, value) = match key {
            CustomerKey::Email(email) => {
                ("SELECT id FROM customers WHERE email_key = $1 ORDER BY created_at, id", email)
            }
            CustomerKey::VatId(vat) => ("SELECT id FROM customers WHERE vat_id = $1 ORDER BY created_at, id", vat),
        };
        // One connection, so the customers are read as of one moment.
        let mut conn = self.db.pool().begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(value).fetch_all(&mut *conn).await?;
        let mut customers = Vec::with_capacity(ids.len());
        for id in ids {
            customers.push(read_customer(&mut conn, &id).await?);
        }
        conn.commit().await?;
        Ok(customers)
    }

    async fn update(&self, update: &CustomerUpdate) -> Result<Customer, Error> {
        let mut tx = self.db.begin_write().await?;
        if let Some(id) = replayed(&mut tx, "update_customer", &update.idempotency_key, &update.fingerprint).await? {
            return read_customer(&mut tx, &id).await;
        }
        let current = read_customer(&mut tx, &update.id).await?;
        if current.erased_at.is_some() {
            return Err(Error::Erased { id: update.id.clone() });
        }
        if let Some(expected) = update.expected_version
            && expected != current.version
        {
            return Err(Error::VersionMismatch { id: update.id.clone(), expected, actual: current.version });
        }
        let changed = changed_fields(&current, &update.fields, &update.values);
        remember(&mut tx, "update_customer", &update.idempotency_key, &update.fingerprint, &update.id).await?;
        if changed.is_empty() {
            tx.commit().await?;
            return Ok(current);
        }
        let version = current.version + 1;
        let at = now();
        let v = &update.values;
        let has = |f| changed.contains(&f);
        // The columns as they will be: the write lock is held, so nothing
        // changed `current` since it was read.
        let pick = |field, new: &Option<String>, old: &str| {
            if has(field) { new.clone() } else { Some(old.to_owned()).filter(|o| !o.is_empty()) }
        };
        let name = if has(Field::Name) { v.name.clone() } else { current.name.clone() };
        let email = pick(Field::Email, &v.email, &current.email);
        sqlx::query(
            "UPDATE customers SET name = $1, email = $2, email_key = $3, phone = $4, vat_id = $5, \
             credit_limit = $6, version = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(name)
        .bind(&email)
        .bind(email.as_ref().map(|e| e.to_lowercase()))
        .bind(pick(Field::Phone, &v.phone, &current.phone))
        .bind(pick(Field::VatId, &v.vat_id, &current.vat_id))
        .bind(pick(Field::CreditLimit, &v.credit_limit, &current.credit_limit))
        .bind(version)
        .bind(&at)
        .bind(&update.id)
        .execute(&mut *tx)
        .await?;
        if has(Field::Contacts) {
            let keep: Vec<String> = current.contacts.iter().map(|c| c.id.clone()).collect();
            write_contacts(&mut tx, &update.id, &v.contacts, &keep).await?;
        }
        if has(Field::Addresses) {
            let keep: Vec<String> = current.addresses.iter().map(|a| a.id.clone()).collect();
            write_addresses(&mut tx, &update.id, &v.addresses, &keep).await?;
        }
        log_change(&mut tx, &update.id, "updated", &changed, version, &update.origin, &at).await?;
        let customer = read_customer(&mut tx, &update.id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    async fn erase(&self, id: &str, origin: &str) -> Result<Customer, Error> {
        let mut tx = self.db.begin_write().await?;
        let current = read_customer(&mut tx, id).await?;
        if current.erased_at.is_some() {
            return Ok(current);
        }
        // The fields that held something: what the feed says was erased.
        let held: BTreeSet<Field> = Field::ALL
            .into_iter()
            .filter(|field| match field {
                Field::Name => !current.name.is_empty(),
                Field::Email => !current.email.is_empty(),
                Field::Phone => !current.phone.is_empty(),
                Field::VatId => !current.vat_id.is_empty(),
                Field::Contacts => !current.contacts.is_empty(),
                Field::Addresses => !current.addresses.is_empty(),
                Field::CreditLimit => !current.credit_limit.is_empty(),
            })
            .collect();
        let version = current.version + 1;
        let at = now();
        sqlx::query(
            "UPDATE customers SET name = '', email = NULL, email_key = NULL, phone = NULL, vat_id = NULL, \
             credit_limit = NULL, version = $1, updated_at = $2, erased_at = $2 WHERE id = $3",
        )
        .bind(version)
        .bind(&at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM contacts WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM addresses WHERE customer_id = $1").bind(id).execute(&mut *tx).await?;
        // A request's digest could confirm a guess at what it held. Without
        // it, a replay of the customer's creation is a conflicting reuse of
        // its key, never the erased person made again.
        sqlx::query("UPDATE idempotency SET fingerprint = 'erased' WHERE result_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        log_change(&mut tx, id, "erased", &held, version, origin, &at).await?;
        let customer = read_customer(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    async fn changes(&self, after: Option<&str>, limit: usize) -> Result<(Vec<CustomerChange>, String), Error> {
        let after_seq: i64 = match after {
            None => 0,
            Some(cursor) => cursor
                .parse()
                .ok()
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(|| Error::invalid("after_cursor", "not a cursor from a previous call"))?,
        };
        let rows = sqlx::query(
            "SELECT seq, customer_id, kind, changed_fields, version, origin, changed_at FROM changes \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        let mut next = after_seq;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            next = row.try_get("seq")?;
            let kind = match row.try_get::<String, _>("kind")?.as_str() {
                "created" => ChangeKind::Created,
                "updated" => ChangeKind::Updated,
                "erased" => ChangeKind::Erased,
                _ => ChangeKind::Unspecified,
            };
            let fields: String = row.try_get("changed_fields")?;
            changes.push(CustomerChange {
                cursor: next.to_string(),
                customer_id: row.try_get("customer_id")?,
                kind: kind as i32,
                changed_fields: fields.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                version: row.try_get("version")?,
                changed_at: timestamp(&row.try_get::<String, _>("changed_at")?),
                origin: row.try_get("origin")?,
            });
        }
        Ok((changes, next.to_string()))
    }
}

impl Connector for EmbeddedCrm {
    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "create_customer"))]
    async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        self.create(new).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "get_customer"))]
    async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        read_customer(&mut *self.db.pool().acquire().await?, id).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "find_customers"))]
    async fn find_customers(&self, key: &CustomerKey) -> Result<Vec<Customer>, Error> {
        self.find(key).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "update_customer"))]
    async fn update_customer(&self, update: &CustomerUpdate) -> Result<Customer, Error> {
        self.update(update).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "erase_customer"))]
    async fn erase_customer(&self, id: &str, origin: &str) -> Result<Customer, Error> {
        self.erase(id, origin).await
    }

    #[tracing::instrument(skip_all, fields(otel.kind = "client", db.system.name = self.db_system(), db.operation.name = "list_changes"))]
    async fn list_changes(&self, after: Option<&str>, limit: usize) -> Result<(Vec<CustomerChange>, String), Error> {
        self.changes(after, limit).await
    }

    async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.db.pool()).await.is_ok()
    }
}
