//! The payments ledger: every payment and every idempotency key, in SQL
//! through sqlx (SQLite `<data_dir>/payments.db` by default, or PostgreSQL;
//! `migrations/payments/{sqlite,postgres}/`), in front of a [`Provider`].
//!
//! A mutating call runs in three steps:
//! 1. answer from the ledger if its key was used before (a replay), and
//!    check the payment's state and amounts;
//! 2. ask the provider, outside any transaction, so a slow provider never
//!    holds the database's write lock;
//! 3. in one write transaction holding the store's write lock
//!    (`Database::transact`: on SQLite one call on the store's writer
//!    thread, on PostgreSQL an advisory lock), look for the key again (a
//!    duplicate may have won the race meanwhile: its answer stands), check
//!    the payment's state again for a capture, void or refund (another key
//!    may have moved it), then write the payment and claim the key.
//!
//! A duplicate racing through step 2 asks the provider a second time with
//! the same key, which providers must treat as one call (see [`Provider`]);
//! step 3 lets only one of them record anything, and the others answer the
//! winner's result. Failed calls claim no key, so a retry after
//! `UNAVAILABLE` goes to the provider again.

use std::str::FromStr;

use erp_connect_proto::payments::v1::{Payment, PaymentStatus};
use prost::Message;
use rust_decimal::Decimal;
use sqlx::AnyConnection;

use super::{Authorization, Decision, Error, Operation, Provider};
use platform::database::{Columns, Database, Migrations, Sql};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/payments/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/payments/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// A validated `Authorize` call.
#[derive(Debug, Clone)]
pub struct NewPayment {
    /// What the provider is asked.
    pub authorization: Authorization,
    /// A digest of the request without its key, to tell a replay from a
    /// conflicting reuse of the key.
    pub fingerprint: String,
}

/// The calls that act on an existing payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take the held money.
    Capture,
    /// Release the hold.
    Void,
    /// Give captured money back.
    Refund,
}

/// A validated `Capture`, `Void` or `Refund` call.
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// Replays with the same key act once.
    pub idempotency_key: String,
    /// A digest of the request without its key.
    pub fingerprint: String,
    /// The payment.
    pub payment_id: String,
    /// `None`: everything there is to capture or refund (ignored by void).
    pub amount: Option<Decimal>,
}

/// Which rpc claimed an idempotency key; keys are global across rpcs.
fn operation(action: Option<Action>) -> &'static str {
    match action {
        None => "authorize",
        Some(Action::Capture) => "capture",
        Some(Action::Void) => "void",
        Some(Action::Refund) => "refund",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Authorized,
    Captured,
    Voided,
    Refunded,
    Declined,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Authorized => "authorized",
            Status::Captured => "captured",
            Status::Voided => "voided",
            Status::Refunded => "refunded",
            Status::Declined => "declined",
        }
    }

    fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "authorized" => Status::Authorized,
            "captured" => Status::Captured,
            "voided" => Status::Voided,
            "refunded" => Status::Refunded,
            "declined" => Status::Declined,
            other => return Err(Error::Corrupt(format!("unknown payment status {other:?}"))),
        })
    }

    fn proto(self) -> PaymentStatus {
        match self {
            Status::Authorized => PaymentStatus::Authorized,
            Status::Captured => PaymentStatus::Captured,
            Status::Voided => PaymentStatus::Voided,
            Status::Refunded => PaymentStatus::Refunded,
            Status::Declined => PaymentStatus::Declined,
        }
    }
}

/// A payment as the ledger keeps it.
#[derive(Debug, Clone)]
struct Record {
    id: String,
    status: Status,
    currency: String,
    amount: Decimal,
    captured: Decimal,
    refunded: Decimal,
    decline_reason: String,
    reference: String,
    provider: String,
    provider_reference: String,
}

use erp_connect_proto::money::format as money;

fn stored_decimal(text: &str) -> Result<Decimal, Error> {
    Decimal::from_str(text).map_err(|e| Error::Corrupt(format!("stored amount {text:?}: {e}")))
}

fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

impl Record {
    fn from_row(row: &impl Columns) -> Result<Self, Error> {
        Ok(Record {
            id: row.text("id")?,
            status: Status::parse(&row.text("status")?)?,
            currency: row.text("currency")?,
            amount: stored_decimal(&row.text("amount")?)?,
            captured: stored_decimal(&row.text("captured_amount")?)?,
            refunded: stored_decimal(&row.text("refunded_amount")?)?,
            decline_reason: row.text("decline_reason")?,
            reference: row.text("reference")?,
            provider: row.text("provider")?,
            provider_reference: row.text("provider_reference")?,
        })
    }

    fn to_proto(&self) -> Payment {
        Payment {
            id: self.id.clone(),
            status: self.status.proto().into(),
            currency: self.currency.clone(),
            amount: money(self.amount),
            captured_amount: money(self.captured),
            refunded_amount: money(self.refunded),
            decline_reason: self.decline_reason.clone(),
            reference: self.reference.clone(),
            provider: self.provider.clone(),
            provider_reference: self.provider_reference.clone(),
        }
    }

    /// The amount `action` would act on, if the payment's state allows it.
    fn plan(&self, action: Action, requested: Option<Decimal>) -> Result<Decimal, Error> {
        let state = self.status.as_str();
        match action {
            Action::Capture | Action::Void if self.status != Status::Authorized => {
                let hint =
                    if self.status == Status::Captured && action == Action::Void { "; refund it instead" } else { "" };
                Err(Error::precondition(
                    "PAYMENT_NOT_AUTHORIZED",
                    &self.id,
                    format!("the payment is {state}, not authorized{hint}"),
                ))
            }
            Action::Capture => {
                let amount = requested.unwrap_or(self.amount);
                if amount > self.amount {
                    return Err(Error::precondition(
                        "AMOUNT_EXCEEDS_AUTHORIZED",
                        &self.id,
                        format!("cannot capture {} of {} authorized", money(amount), money(self.amount)),
                    ));
                }
                Ok(amount)
            }
            Action::Void => Ok(self.amount),
            Action::Refund if self.status != Status::Captured => Err(Error::precondition(
                "PAYMENT_NOT_REFUNDABLE",
                &self.id,
                format!("the payment is {state}; only a captured payment can be refunded"),
            )),
            Action::Refund => {
                let refundable = self.captured - self.refunded;
                let amount = requested.unwrap_or(refundable);
                if amount > refundable {
                    return Err(Error::precondition(
                        "AMOUNT_EXCEEDS_REFUNDABLE",
                        &self.id,
                        format!("cannot refund {} of {} still refundable", money(amount), money(refundable)),
                    ));
                }
                Ok(amount)
            }
        }
    }

    fn apply(&mut self, action: Action, amount: Decimal) {
        match action {
            Action::Capture => {
                self.status = Status::Captured;
                self.captured = amount;
            }
            Action::Void => self.status = Status::Voided,
            Action::Refund => {
                self.refunded += amount;
                if self.refunded >= self.captured {
                    self.status = Status::Refunded;
                }
            }
        }
    }
}

/// The ledger over one SQL database, in front of `P`.
#[derive(Debug)]
pub struct Ledger<P> {
    db: Database,
    provider: P,
}

impl<P: Provider> Ledger<P> {
    /// Opens (creating if needed) `database_url`, or `<data_dir>/payments.db`,
    /// and brings its schema up to date.
    pub async fn open(database_url: Option<&str>, data_dir: &std::path::Path, provider: P) -> Result<Self, Error> {
        let db = Database::open(database_url, data_dir, "payments.db", "payments", &MIGRATIONS).await?;
        Ok(Self { db, provider })
    }

    /// Authorizes once per idempotency key; a decline is recorded too.
    #[tracing::instrument(skip_all)]
    pub async fn authorize(&self, new: &NewPayment) -> Result<Payment, Error> {
        let key = new.authorization.idempotency_key.as_str();
        let op = operation(None);
        if let Some(payment) = replay(&mut *self.db.pool().acquire().await?, key, op, &new.fingerprint).await? {
            return Ok(payment);
        }
        let decision = self.provider.authorize(&new.authorization).await?;
        let (status, decline_reason, provider_reference) = match decision {
            Decision::Approved { provider_reference } => (Status::Authorized, String::new(), provider_reference),
            Decision::Declined { reason } => (Status::Declined, reason, String::new()),
        };
        let record = Record {
            id: format!("pay_{}", ulid::Ulid::new()),
            status,
            currency: new.authorization.currency.clone(),
            amount: new.authorization.amount,
            captured: Decimal::ZERO,
            refunded: Decimal::ZERO,
            decline_reason,
            reference: new.authorization.reference.clone(),
            provider: self.provider.name().to_owned(),
            provider_reference,
        };

        let (key, fingerprint) = (key.to_owned(), new.fingerprint.clone());
        let (payment, written) = self
            .db
            .transact(move |sql| {
                // A call with the same key may have committed meanwhile:
                // its answer stands.
                if let Some(payment) = replay_in(sql, &key, op, &fingerprint)? {
                    return Ok((payment, None));
                }
                let at = now();
                sql.execute(
                    "INSERT INTO payments (id, status, currency, amount, captured_amount, refunded_amount, \
                     decline_reason, reference, provider, provider_reference, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
                    &[
                        (&record.id).into(),
                        record.status.as_str().into(),
                        (&record.currency).into(),
                        money(record.amount).into(),
                        money(record.captured).into(),
                        money(record.refunded).into(),
                        (&record.decline_reason).into(),
                        (&record.reference).into(),
                        (&record.provider).into(),
                        (&record.provider_reference).into(),
                        at.into(),
                    ],
                )?;
                claim(sql, &key, op, &fingerprint, &record)
            })
            .await?;
        if let Some(status) = written {
            tracing::info!(payment_id = %payment.id, status, "payment authorized");
        }
        Ok(payment)
    }

    /// Captures, voids or refunds once per idempotency key.
    #[tracing::instrument(skip_all, fields(payment_id = %call.payment_id, action = operation(Some(action))))]
    pub async fn follow_up(&self, action: Action, call: &FollowUp) -> Result<Payment, Error> {
        let key = call.idempotency_key.as_str();
        let op = operation(Some(action));
        let before = {
            let mut conn = self.db.pool().acquire().await?;
            if let Some(payment) = replay(&mut conn, key, op, &call.fingerprint).await? {
                return Ok(payment);
            }
            read(&mut conn, &call.payment_id).await?
        };
        let amount = before.plan(action, call.amount)?;
        let provider_call = Operation {
            idempotency_key: key,
            provider_reference: &before.provider_reference,
            currency: &before.currency,
            amount,
        };
        match action {
            Action::Capture => self.provider.capture(&provider_call).await?,
            Action::Void => self.provider.void(&provider_call).await?,
            Action::Refund => self.provider.refund(&provider_call).await?,
        }

        let (key, fingerprint, id) = (key.to_owned(), call.fingerprint.clone(), call.payment_id.clone());
        let (payment, written) = self
            .db
            .transact(move |sql| {
                if let Some(payment) = replay_in(sql, &key, op, &fingerprint)? {
                    return Ok((payment, None));
                }
                // Another key may have moved the payment while the provider
                // answered (two refunds racing); a real provider refuses the
                // excess itself, and the ledger must not record it either.
                let row = sql.fetch_optional(READ, &[(&id).into()])?;
                let mut record = Record::from_row(&row.ok_or(Error::NotFound { id })?)?;
                record.plan(action, Some(amount))?;
                record.apply(action, amount);
                sql.execute(
                    "UPDATE payments SET status = $1, captured_amount = $2, refunded_amount = $3, updated_at = $4 \
                     WHERE id = $5",
                    &[
                        record.status.as_str().into(),
                        money(record.captured).into(),
                        money(record.refunded).into(),
                        now().into(),
                        (&record.id).into(),
                    ],
                )?;
                claim(sql, &key, op, &fingerprint, &record)
            })
            .await?;
        if let Some(status) = written {
            tracing::info!(status, amount = %money(amount), "payment updated");
        }
        Ok(payment)
    }

    /// The payment as it is now.
    pub async fn get(&self, id: &str) -> Result<Payment, Error> {
        Ok(read(&mut *self.db.pool().acquire().await?, id).await?.to_proto())
    }

    /// Whether the database and the provider answer right now.
    pub async fn is_ready(&self) -> bool {
        let db = sqlx::query("SELECT 1").execute(self.db.pool()).await.is_ok();
        db && self.provider.is_ready().await
    }

    /// Closes the database connections.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

const READ: &str = "SELECT * FROM payments WHERE id = $1";

async fn read(conn: &mut AnyConnection, id: &str) -> Result<Record, Error> {
    let row = sqlx::query(READ).bind(id).fetch_optional(conn).await?;
    Record::from_row(&row.ok_or_else(|| Error::NotFound { id: id.to_owned() })?)
}

const REPLAY: &str = "SELECT operation, fingerprint, response FROM idempotency_keys WHERE key = $1";

/// What the first call with `key` answered, if there was one; another
/// request (or another rpc) under the same key is a conflict.
async fn replay(conn: &mut AnyConnection, key: &str, op: &str, fingerprint: &str) -> Result<Option<Payment>, Error> {
    let row = sqlx::query(REPLAY).bind(key).fetch_optional(conn).await?;
    replayed(row.as_ref(), key, op, fingerprint)
}

/// [`replay`] in a write transaction.
fn replay_in(sql: &mut dyn Sql, key: &str, op: &str, fingerprint: &str) -> Result<Option<Payment>, Error> {
    let row = sql.fetch_optional(REPLAY, &[key.into()])?;
    replayed(row.as_ref(), key, op, fingerprint)
}

fn replayed(row: Option<&impl Columns>, key: &str, op: &str, fingerprint: &str) -> Result<Option<Payment>, Error> {
    let Some(row) = row else { return Ok(None) };
    if row.text("operation")? != op || row.text("fingerprint")? != fingerprint {
        return Err(Error::IdempotencyConflict { key: key.to_owned() });
    }
    let response = row.opt_bytes("response")?.unwrap_or_default();
    let payment = Payment::decode(response.as_slice())
        .map_err(|e| Error::Corrupt(format!("stored response of key {key:?}: {e}")))?;
    Ok(Some(payment))
}

/// Claims `key` for `record` as just written; the answer, and the status
/// written. The caller looked for the key in the same transaction, under
/// the store's write lock, so no other call can hold it; the primary key
/// refuses a second claim all the same.
fn claim(
    sql: &mut dyn Sql,
    key: &str,
    op: &str,
    fingerprint: &str,
    record: &Record,
) -> Result<(Payment, Option<&'static str>), Error> {
    let payment = record.to_proto();
    sql.execute(
        "INSERT INTO idempotency_keys (key, operation, fingerprint, payment_id, response, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            key.into(),
            op.into(),
            fingerprint.into(),
            (&payment.id).into(),
            payment.encode_to_vec().into(),
            now().into(),
        ],
    )?;
    Ok((payment, Some(record.status.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status, amount: i64, captured: i64, refunded: i64) -> Record {
        Record {
            id: "pay_1".into(),
            status,
            currency: "EUR".into(),
            amount: Decimal::new(amount, 2),
            captured: Decimal::new(captured, 2),
            refunded: Decimal::new(refunded, 2),
            decline_reason: String::new(),
            reference: String::new(),
            provider: "sandbox".into(),
            provider_reference: String::new(),
        }
    }

    fn reason(result: Result<Decimal, Error>) -> &'static str {
        match result {
            Err(Error::FailedPrecondition { reason, .. }) => reason,
            other => panic!("expected a precondition failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn payments_key_claimed_twice_is_refused_by_the_unique_key() {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let ledger =
            Ledger::open(None, dir.path(), crate::payments::backend::sandbox::Sandbox::new()).await.expect("open");
        let payment = record(Status::Authorized, 100, 0, 0);
        let first = payment.clone();
        ledger
            .db
            .transact(move |sql| {
                sql.execute(
                    "INSERT INTO payments (id, status, currency, amount, provider, created_at, updated_at) \
                     VALUES ('pay_1', 'authorized', 'EUR', '1.00', 'sandbox', '', '')",
                    &[],
                )?;
                claim(sql, "k", "authorize", "f", &first)
            })
            .await
            .expect("first claim");
        let payment = payment.to_proto();
        // What a duplicate past the look-up in its transaction would do.
        let second = record(Status::Authorized, 100, 0, 0);
        let again = ledger.db.transact(move |sql| claim(sql, "k", "authorize", "f", &second)).await;
        assert!(matches!(&again, Err(Error::Store(sqlx::Error::Database(e))) if e.is_unique_violation()), "{again:?}");
        let mut conn = ledger.db.pool().acquire().await.expect("connection");
        assert_eq!(replay(&mut conn, "k", "authorize", "f").await.expect("replay"), Some(payment.clone()));
        assert!(matches!(replay(&mut conn, "k", "capture", "f").await, Err(Error::IdempotencyConflict { .. })));
        drop(conn);
        let in_line = ledger.db.transact(|sql| replay_in(sql, "k", "authorize", "f")).await.expect("in line");
        assert_eq!(in_line, Some(payment), "the same answer read on the writer thread");
        ledger.close().await;
    }

    #[test]
    fn payments_state_machine_plans_and_refuses() {
        let authorized = record(Status::Authorized, 1000, 0, 0);
        assert_eq!(authorized.plan(Action::Capture, None).expect("all"), Decimal::new(1000, 2));
        assert_eq!(reason(authorized.plan(Action::Capture, Some(Decimal::new(1001, 2)))), "AMOUNT_EXCEEDS_AUTHORIZED");
        assert_eq!(reason(authorized.plan(Action::Refund, None)), "PAYMENT_NOT_REFUNDABLE");

        let mut captured = record(Status::Captured, 1000, 800, 300);
        assert_eq!(reason(captured.plan(Action::Void, None)), "PAYMENT_NOT_AUTHORIZED");
        assert_eq!(reason(captured.plan(Action::Capture, None)), "PAYMENT_NOT_AUTHORIZED");
        assert_eq!(reason(captured.plan(Action::Refund, Some(Decimal::new(501, 2)))), "AMOUNT_EXCEEDS_REFUNDABLE");
        let rest = captured.plan(Action::Refund, None).expect("the rest");
        assert_eq!(rest, Decimal::new(500, 2));
        captured.apply(Action::Refund, rest);
        assert_eq!(captured.status, Status::Refunded);
        assert_eq!(reason(captured.plan(Action::Refund, None)), "PAYMENT_NOT_REFUNDABLE");
    }
}
