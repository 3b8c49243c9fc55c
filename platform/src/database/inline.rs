//! Write transactions run in line: a store hands [`super::Database::transact`]
//! a closure that reads, checks and writes through [`Sql`], and the closure
//! runs where the connection is, start to end, instead of the store's task
//! handing every statement across to a connection elsewhere.
//!
//! On SQLite the closure runs on the store's writer thread ([`super::batch`])
//! against its `rusqlite` connection, in a savepoint of the group it commits
//! with: a transaction of ten statements is one hand-off instead of ten
//! round trips to sqlx's worker thread, each taken while the store's one
//! writer waits. On PostgreSQL it runs on the store's PostgreSQL writer
//! thread ([`PostgresWriter`]), which drives one connection of its own
//! statement by statement (the network round trips stay, the SQL and the
//! code are the same). Either way the closure holds the
//! store's write lock, as [`super::Database::begin_write`] does, so it may
//! read, check and then write.
//!
//! Rows come back as [`Row`]s of [`Value`]s (no floats: the stores keep
//! money as decimal text). [`Columns`] reads a column by name the same from
//! a [`Row`] and from a sqlx row, so that a store maps a record from either
//! with one function.

use std::{
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use sqlx::{Column, Row as _, any::AnyTypeInfoKind};

use super::batch::{Batch, Outcome, Value, bind};

/// The statements of a write transaction run in line (see the module doc).
/// SQL as everywhere in the stores: `$N` placeholders, one text for both
/// dialects.
pub trait Sql {
    /// Runs a statement that returns no rows; how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, sqlx::Error>;

    /// Runs a statement and returns its rows (a `SELECT`, or a write with
    /// `RETURNING`).
    fn fetch_all(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, sqlx::Error>;

    /// The first row, if any.
    fn fetch_optional(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch_all(sql, args)?.into_iter().next())
    }
}

/// A row read through [`Sql`]: NULL is a [`Value`] holding `None`.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// The first column as text (a batch's `RETURNING id`).
    pub(super) fn first_text(&self) -> Result<String, sqlx::Error> {
        match self.values.first() {
            Some(Value::Text(Some(text))) => Ok(text.clone()),
            _ => Err(mismatch(self.columns.first().map_or("0", |c| c.as_str()), "text")),
        }
    }

    fn value(&self, column: &str) -> Result<&Value, sqlx::Error> {
        self.columns
            .iter()
            .position(|c| c == column)
            .map(|i| &self.values[i])
            .ok_or_else(|| sqlx::Error::ColumnNotFound(column.to_owned()))
    }
}

/// Reads a column by name, from a [`Row`] or a sqlx row alike.
pub trait Columns {
    /// A text column that may be NULL.
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;

    /// An integer column that may be NULL.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;

    /// A bytes column that may be NULL.
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;

    /// A text column, NULL being an error.
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.opt_text(column)?.ok_or_else(|| unexpected_null(column))
    }

    /// An integer column, NULL being an error.
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.opt_int(column)?.ok_or_else(|| unexpected_null(column))
    }
}

fn unexpected_null(column: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: "unexpected NULL".into() }
}

fn mismatch(column: &str, wanted: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: column.to_owned(), source: format!("the column is not {wanted}").into() }
}

impl Columns for Row {
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        match self.value(column)? {
            Value::Text(text) => Ok(text.clone()),
            null if null.is_null() => Ok(None),
            _ => Err(mismatch(column, "text")),
        }
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        match self.value(column)? {
            Value::Int(n) => Ok(*n),
            null if null.is_null() => Ok(None),
            _ => Err(mismatch(column, "an integer")),
        }
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        match self.value(column)? {
            Value::Bytes(bytes) => Ok(bytes.clone()),
            null if null.is_null() => Ok(None),
            _ => Err(mismatch(column, "bytes")),
        }
    }
}

impl Columns for sqlx::any::AnyRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.try_get(column)
    }
}

/// [`Sql`] on the SQLite writer thread's connection.
pub(super) struct OnSqlite<'c>(pub(super) &'c rusqlite::Connection);

impl OnSqlite<'_> {
    fn prepare(&self, sql: &str, args: &[Value]) -> Result<rusqlite::CachedStatement<'_>, rusqlite::Error> {
        let mut statement = self.0.prepare_cached(sql)?;
        super::batch::bind_sqlite(&mut statement, args)?;
        Ok(statement)
    }
}

impl Sql for OnSqlite<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, sqlx::Error> {
        let mut statement = self.prepare(sql, args).map_err(super::batch::to_sqlx)?;
        Ok(statement.raw_execute().map_err(super::batch::to_sqlx)? as u64)
    }

    fn fetch_all(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, sqlx::Error> {
        let read = || -> Result<Vec<Row>, rusqlite::Error> {
            let mut statement = self.prepare(sql, args)?;
            let columns: Arc<[String]> = statement.column_names().into_iter().map(str::to_owned).collect();
            let mut rows = statement.raw_query();
            let mut read = Vec::new();
            while let Some(row) = rows.next()? {
                let mut values = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    values.push(match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Text(None),
                        rusqlite::types::ValueRef::Integer(n) => Value::Int(Some(n)),
                        rusqlite::types::ValueRef::Text(text) => {
                            Value::Text(Some(String::from_utf8_lossy(text).into_owned()))
                        }
                        rusqlite::types::ValueRef::Blob(bytes) => Value::Bytes(Some(bytes.to_vec())),
                        rusqlite::types::ValueRef::Real(_) => {
                            return Err(rusqlite::Error::InvalidColumnType(
                                i,
                                columns[i].clone(),
                                rusqlite::types::Type::Real,
                            ));
                        }
                    });
                }
                read.push(Row { columns: columns.clone(), values });
            }
            Ok(read)
        };
        read().map_err(super::batch::to_sqlx)
    }
}

/// [`Sql`] on the PostgreSQL writer thread's connection, in a transaction.
struct OnPostgres<'t> {
    conn: &'t mut sqlx::AnyConnection,
    runtime: &'t tokio::runtime::Runtime,
}

impl Sql for OnPostgres<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, sqlx::Error> {
        let query = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), args.iter().cloned());
        Ok(self.runtime.block_on(query.execute(&mut *self.conn))?.rows_affected())
    }

    fn fetch_all(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, sqlx::Error> {
        let query = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), args.iter().cloned());
        let rows = self.runtime.block_on(query.fetch_all(&mut *self.conn))?;
        let Some(first) = rows.first() else { return Ok(Vec::new()) };
        let columns: Arc<[String]> = first.columns().iter().map(|c| c.name().to_owned()).collect();
        let kinds: Vec<AnyTypeInfoKind> = first.columns().iter().map(|c| c.type_info().kind()).collect();
        rows.iter()
            .map(|row| {
                let values = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| match kind {
                        AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
                            row.try_get(i).map(Value::Int)
                        }
                        AnyTypeInfoKind::Bool => {
                            row.try_get::<Option<bool>, _>(i).map(|b| Value::Int(b.map(i64::from)))
                        }
                        AnyTypeInfoKind::Text | AnyTypeInfoKind::Null => row.try_get(i).map(Value::Text),
                        AnyTypeInfoKind::Blob => row.try_get(i).map(Value::Bytes),
                        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                            Err(mismatch(&columns[i], "text, an integer or bytes (a float)"))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Row { columns: columns.clone(), values })
            })
            .collect()
    }
}

/// A closure for the writer thread, and where its result goes.
pub(super) struct CallJob<F, T, E> {
    work: Option<F>,
    done: tokio::sync::oneshot::Sender<Result<T, E>>,
    result: Option<Result<T, E>>,
}

impl<F, T, E> CallJob<F, T, E> {
    pub(super) fn new(work: F, done: tokio::sync::oneshot::Sender<Result<T, E>>) -> Self {
        Self { work: Some(work), done, result: None }
    }
}

impl<F, T, E> CallJob<F, T, E>
where
    F: FnOnce(&mut dyn Sql) -> Result<T, E>,
    E: From<sqlx::Error>,
{
    fn run_on(&mut self, sql: &mut dyn Sql) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = work(sql);
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn finish(self, failed: Option<sqlx::Error>) {
        let answer = match (self.result, failed) {
            // Undone either way: the closure's own error says why.
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(err)) => Err(E::from(err)),
            // It panicked (and was undone).
            (None, None) => Err(E::from(sqlx::Error::WorkerCrashed)),
        };
        // The caller may have gone (a cancelled request); its work stands.
        let _ = self.done.send(answer);
    }

    fn refused(self, err: sqlx::Error) {
        let _ = self.done.send(Err(E::from(err)));
    }
}

impl<F, T, E> super::batch::Job for CallJob<F, T, E>
where
    F: FnOnce(&mut dyn Sql) -> Result<T, E> + Send,
    T: Send,
    E: From<sqlx::Error> + Send,
{
    fn run(&mut self, conn: &rusqlite::Connection) -> bool {
        self.run_on(&mut OnSqlite(conn))
    }

    fn answer(self: Box<Self>, failed: Option<&rusqlite::Error>) {
        self.finish(failed.map(super::batch::to_sqlx_ref))
    }

    fn refuse(self: Box<Self>, err: sqlx::Error) {
        self.refused(err)
    }
}

/// A closure for the PostgreSQL writer thread, and where its result goes.
pub(super) trait Call: Send {
    /// Whether the work needs the store's write lock (a read-check-write
    /// transaction) or guards its own writes (a [`Batch`]).
    fn locks(&self) -> bool;

    /// Runs the work in the open transaction; whether to commit it.
    fn run(&mut self, sql: &mut dyn Sql) -> bool;

    /// Answers the caller: what the work gave, or `failed` when its
    /// transaction did not commit.
    fn answer(self: Box<Self>, failed: Option<sqlx::Error>);

    /// Answers `err` without running the work.
    fn refuse(self: Box<Self>, err: sqlx::Error);
}

impl<F, T, E> Call for CallJob<F, T, E>
where
    F: FnOnce(&mut dyn Sql) -> Result<T, E> + Send,
    T: Send,
    E: From<sqlx::Error> + Send,
{
    fn locks(&self) -> bool {
        true
    }

    fn run(&mut self, sql: &mut dyn Sql) -> bool {
        self.run_on(sql)
    }

    fn answer(self: Box<Self>, failed: Option<sqlx::Error>) {
        self.finish(failed)
    }

    fn refuse(self: Box<Self>, err: sqlx::Error) {
        self.refused(err)
    }
}

/// A [`Batch`] for the PostgreSQL writer thread, and where its outcome goes.
pub(super) struct BatchCall {
    batch: Batch,
    done: tokio::sync::oneshot::Sender<Result<Outcome, sqlx::Error>>,
    ran: Option<Result<Outcome, sqlx::Error>>,
}

impl BatchCall {
    pub(super) fn new(batch: Batch, done: tokio::sync::oneshot::Sender<Result<Outcome, sqlx::Error>>) -> Self {
        Self { batch, done, ran: None }
    }
}

impl Call for BatchCall {
    fn locks(&self) -> bool {
        false
    }

    fn run(&mut self, sql: &mut dyn Sql) -> bool {
        let ran = self.batch.run_on(sql);
        let keep = matches!(ran, Ok(Outcome { committed: true, .. }));
        self.ran = Some(ran);
        keep
    }

    fn answer(self: Box<Self>, failed: Option<sqlx::Error>) {
        let answer = match (self.ran, failed) {
            (Some(Err(err)), _) => Err(err),
            (_, Some(err)) => Err(err),
            (Some(Ok(outcome)), None) => Ok(outcome),
            // It panicked (and was undone).
            (None, None) => Err(sqlx::Error::WorkerCrashed),
        };
        let _ = self.done.send(answer);
    }

    fn refuse(self: Box<Self>, err: sqlx::Error) {
        let _ = self.done.send(Err(err));
    }
}

/// A store's PostgreSQL write transactions, run one after another on a
/// thread of their own, with a runtime of its own, on one connection of
/// their own.
///
/// The store's advisory lock lets one write transaction run at a time
/// anyway (replicas of a tier share it), so in one process a queue in
/// front of one connection serialises them as well, without every other
/// writer's connection waiting on the lock in the server. And the
/// connection's socket belongs to this thread's runtime: a statement's
/// answer wakes this thread directly, where a blocking thread driving a
/// pooled connection waits for a busy runtime worker to poll the socket
/// and wake it, twice the context switches per round trip, all of them
/// while the store-wide lock is held.
#[derive(Debug)]
pub(super) struct PostgresWriter {
    jobs: mpsc::Sender<Message>,
}

/// What the writer thread is sent.
enum Message {
    /// A job, and when it was queued.
    Call(Box<dyn Call>, Instant),
    /// Close the connection and end (the store is closing).
    Close,
}

impl PostgresWriter {
    /// Starts the thread; it connects with `options` at its first job (and
    /// again after its connection failed). A job whose turn comes more than
    /// `patience` after it was queued is refused with `PoolTimedOut`, unrun,
    /// as a pooled connection waited for that long is.
    pub(super) fn start(
        options: sqlx::any::AnyConnectOptions,
        lock: i64,
        patience: Duration,
    ) -> Result<Self, sqlx::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(sqlx::Error::Io)?;
        let (jobs, queue) = mpsc::channel();
        let writer = PostgresLoop { options, lock, patience, runtime, conn: None };
        std::thread::Builder::new()
            .name(format!("pg-writer-{lock:x}"))
            .spawn(move || writer.serve(&queue))
            .map_err(sqlx::Error::Io)?;
        Ok(Self { jobs })
    }

    /// Queues `job`.
    pub(super) fn send(&self, job: Box<dyn Call>) -> Result<(), sqlx::Error> {
        self.jobs.send(Message::Call(job, Instant::now())).map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Ends the thread after the jobs queued before, closing its connection.
    pub(super) fn close(&self) {
        let _ = self.jobs.send(Message::Close);
    }
}

/// Whether `err` says the connection is gone: an I/O error, or the server's
/// last word before it hung up (SQLSTATE class 08, connection exception, or
/// 57P, a shutdown or restart).
fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// The most jobs committed together: enough to take a burst in one commit,
/// few enough that a group's first job does not wait long for its last.
const GROUP_MAX: usize = 32;

/// The writer's connection's `application_name`.
const WRITER_NAME: &str = "erp-connect writer";

/// The writer thread's state.
struct PostgresLoop {
    options: sqlx::any::AnyConnectOptions,
    lock: i64,
    patience: Duration,
    runtime: tokio::runtime::Runtime,
    /// The connection; `None` after a failure.
    conn: Option<sqlx::AnyConnection>,
}

impl PostgresLoop {
    /// Runs jobs until told to close or every sender is gone (the store
    /// was dropped): each time, the jobs queued meanwhile, up to
    /// [`GROUP_MAX`], in one transaction.
    fn serve(mut self, queue: &mpsc::Receiver<Message>) {
        let mut closing = false;
        while !closing {
            let Ok(Message::Call(first, at)) = queue.recv() else { break };
            let mut queued = vec![(first, at)];
            while queued.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(Message::Call(job, at)) => queued.push((job, at)),
                    Ok(Message::Close) => {
                        closing = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut group = Vec::with_capacity(queued.len());
            for (job, at) in queued {
                if at.elapsed() >= self.patience {
                    job.refuse(sqlx::Error::PoolTimedOut);
                } else {
                    group.push(job);
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = self.runtime.block_on(sqlx::Connection::close(conn));
        }
    }

    /// Runs `group` in one transaction, each job in a savepoint of its own
    /// when there are several: a job that fails or panics is undone alone,
    /// and the rest commit together, one commit (one WAL flush) for all.
    fn commit_group(&mut self, group: Vec<Box<dyn Call>>) {
        let several = group.len() > 1;
        let lock = group.iter().any(|job| job.locks()).then_some(self.lock);
        let conn = match self.runtime.block_on(begin(&mut self.conn, &self.options, lock, several)) {
            Ok(conn) => conn,
            Err(err) => {
                self.conn = None;
                return group.into_iter().for_each(|job| job.refuse(copy(&err)));
            }
        };
        let mut ran = Vec::with_capacity(group.len());
        let mut jobs = group.into_iter();
        let mut failed = None;
        while let Some(mut job) = jobs.next() {
            // A panicking job is undone like a failed one, and the thread
            // goes on serving the store.
            let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run(&mut OnPostgres { conn: &mut *conn, runtime: &self.runtime })
            }))
            .unwrap_or(false);
            ran.push(job);
            let last = jobs.len() == 0;
            let end = match (several, keep, last) {
                (false, true, _) => "COMMIT",
                (false, false, _) => "ROLLBACK",
                (true, true, false) => "RELEASE SAVEPOINT job; SAVEPOINT job",
                (true, false, false) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; SAVEPOINT job",
                (true, true, true) => "COMMIT",
                (true, false, true) => "ROLLBACK TO SAVEPOINT job; COMMIT",
            };
            if let Err(err) = self.runtime.block_on(sqlx::raw_sql(end).execute(&mut *conn)) {
                failed = Some(err);
                break;
            }
        }
        let Some(err) = failed else {
            return ran.into_iter().for_each(|job| job.answer(None));
        };
        // The transaction did not commit, and the connection's state is
        // unknown: a new one serves the next group.
        self.conn = None;
        ran.into_iter().for_each(|job| job.answer(Some(copy(&err))));
        jobs.for_each(|job| job.refuse(copy(&err)));
    }
}

/// One more of `err` for each job of a group it failed (sqlx errors are
/// not `Clone`): the pool's own errors as they are, any other as the lost
/// connection it means here.
fn copy(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, other.to_string())),
    }
}

/// Opens a transaction on the writer's connection, holding `lock` if given
/// and in the first job's savepoint when `several`, in one round trip;
/// connects first if there is no connection. A connection that cannot begin (the server restarted, or a NAT cut it while idle) is
/// replaced and the transaction begun on the new one: nothing of the job has
/// run yet, so a restarted server costs no write.
async fn begin<'c>(
    conn: &'c mut Option<sqlx::AnyConnection>,
    options: &sqlx::any::AnyConnectOptions,
    lock: Option<i64>,
    several: bool,
) -> Result<&'c mut sqlx::AnyConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    // The key is our own integer, not input.
    let lock = lock.map(|key| format!("; SELECT pg_advisory_xact_lock({key})")).unwrap_or_default();
    let savepoint = if several { "; SAVEPOINT job" } else { "" };
    let begin = format!("BEGIN{lock}{savepoint}");
    if let Some(open) = conn {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(begin.as_str())).execute(&mut *open).await {
            Ok(_) => return conn.as_mut().ok_or(sqlx::Error::PoolClosed),
            Err(err) if !connection_lost(&err) => return Err(err),
            Err(_) => *conn = None,
        }
    }
    let open = conn.insert(options.connect().await?);
    // Named, so that an operator tells it from the pool's connections in
    // pg_stat_activity.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET application_name = '{WRITER_NAME}'; {begin}")))
        .execute(&mut *open)
        .await?;
    Ok(open)
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::database::{Database, Migrations, ScratchPostgres};

    static SQLITE: Migrator = sqlx::migrate!("./migrations/probe/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./migrations/probe/postgres");
    static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

    #[derive(Debug, thiserror::Error)]
    enum Failed {
        #[error("refused: {0}")]
        Refused(String),
        #[error(transparent)]
        Sql(#[from] sqlx::Error),
    }

    fn counter(sql: &mut dyn Sql) -> Result<i64, Failed> {
        let row = sql.fetch_optional("SELECT n FROM items WHERE id = $1", &["counter".into()])?;
        Ok(row.ok_or_else(|| Failed::Refused("no counter".into()))?.int("n")?)
    }

    /// What a store relies on, the same on both dialects.
    async fn transactions_behave_alike(db: &Database) {
        sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)")
            .execute(db.pool())
            .await
            .expect("table");

        // Reads see the transaction's own writes; NULL, integers and text
        // come back as written, by column name.
        let row = db
            .transact(|sql| {
                sql.execute("INSERT INTO items (id, n, note) VALUES ($1, $2, NULL)", &["counter".into(), 0.into()])?;
                sql.fetch_optional("SELECT id, n, note FROM items WHERE id = $1", &["counter".into()])
            })
            .await
            .expect("insert and read")
            .expect("the row");
        assert_eq!(
            (row.text("id").ok(), row.int("n").ok(), row.opt_text("note").ok()),
            (Some("counter".into()), Some(0), Some(None))
        );
        assert!(row.int("id").is_err(), "text is not read as an integer");
        assert!(row.text("note").is_err(), "NULL is not read as text");
        assert!(matches!(row.text("nope"), Err(sqlx::Error::ColumnNotFound(_))));

        // Read, check, write: 40 at once lose no update. Three that fail
        // are sent among them, so that they share a group commit with
        // some: each is undone alone, and the rest commit.
        let bumps = (0..40).map(|_| {
            db.transact(|sql| {
                let n = counter(sql)?;
                sql.execute("UPDATE items SET n = $1 WHERE id = $2", &[(n + 1).into(), "counter".into()])?;
                Ok::<_, Failed>(())
            })
        });
        // An error undoes everything the closure wrote, and is returned as
        // the closure gave it.
        let refused = db.transact(|sql| {
            sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
            sql.execute("INSERT INTO items (id, n) VALUES ('never', 0)", &[])?;
            Err::<(), _>(Failed::Refused("checked and refused".into()))
        });
        // A failing statement is the closure's error, and undoes it too.
        let duplicate = db.transact(|sql| {
            sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
            sql.execute("INSERT INTO items (id, n) VALUES ('counter', 0)", &[])?;
            Ok::<_, Failed>(())
        });
        // A panicking closure is undone, and the store goes on.
        let panicked = db.transact(|sql| {
            sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
            panic!("a bug in a store");
            #[allow(unreachable_code)]
            Ok::<_, Failed>(())
        });
        let (bumped, refused, duplicate, panicked) =
            tokio::join!(futures_util::future::join_all(bumps), refused, duplicate, panicked);
        for bumped in bumped {
            bumped.expect("bump");
        }
        assert!(matches!(refused, Err(Failed::Refused(_))), "{refused:?}");
        assert!(
            matches!(&duplicate, Err(Failed::Sql(sqlx::Error::Database(e))) if e.is_unique_violation()),
            "{duplicate:?}"
        );
        assert!(matches!(panicked, Err(Failed::Sql(sqlx::Error::WorkerCrashed))), "{panicked:?}");

        let n = db.transact(counter).await.expect("read");
        assert_eq!(n, 40, "every bump counted once, nothing of the undone ones");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items").fetch_one(db.pool()).await.expect("count");
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn sqlite_transactions_run_on_the_writer_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "inline.db", "t", &MIGRATIONS).await.expect("open");
        transactions_behave_alike(&db).await;
        db.close().await;
        let closed = db.transact(|_| Ok::<_, sqlx::Error>(())).await;
        assert!(matches!(closed, Err(sqlx::Error::PoolClosed)), "{closed:?}");
    }

    #[tokio::test]
    async fn postgres_transactions_hold_the_store_lock() {
        let scratch = ScratchPostgres::create("inline_test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        transactions_behave_alike(&db).await;
        db.close().await;
    }

    /// What a server restart does to the writer's connection, done to it
    /// alone: the next write goes through on a new connection.
    #[tokio::test]
    async fn postgres_writes_go_on_after_the_writers_connection_was_cut() {
        let scratch = ScratchPostgres::create("inline_cut").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)")
            .execute(db.pool())
            .await
            .expect("table");
        let insert = |id: &'static str| {
            db.transact(move |sql| -> Result<u64, Failed> {
                Ok(sql.execute("INSERT INTO items (id, n) VALUES ($1, 1)", &[id.into()])?)
            })
        };
        insert("before").await.expect("first write");
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(WRITER_NAME)
        .fetch_all(db.pool())
        .await
        .expect("terminate");
        assert_eq!(cut, [true], "the writer's connection, and only it");
        assert_eq!(insert("after").await.expect("a write after the cut"), 1);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(db.pool()).await.expect("count");
        assert_eq!(n, 2);
        db.close().await;
    }
}
