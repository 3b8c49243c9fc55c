//! Write batches: a write transaction written down as data (statements, their
//! arguments, which ones must change a row) so that it runs in one call.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every
//! statement, `BEGIN` and `COMMIT` across to it and back: a saga save with
//! its outbox rows was five or more round trips between threads, each a
//! futex wake-up, with the store's one writer held across all of them.
//! Most of `order_bench`'s time went there (README, "Benchmarks"). A batch
//! on SQLite goes to one writer thread that owns a `rusqlite` connection
//! and runs the whole transaction there, without a hand-off per statement;
//! batches that queue up meanwhile commit together, each in a savepoint of
//! its own, so one batch that stops or fails leaves the others as they
//! were. On PostgreSQL a batch runs the same way on the store's
//! PostgreSQL writer thread ([`super::inline`]), statement by statement
//! over the network, so a store keeps one API and one SQL text over both
//! dialects.
//!
//! The writer thread takes the store's write turn ([`super::Database`]'s
//! gate) for each commit, like sqlx's writer connection does for each of
//! its transactions, so the two never meet in SQLite's busy handler.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use sqlx::{Any, error::ErrorKind};
use tokio::sync::{Mutex, oneshot};

/// Most batches one commit takes from the queue.
const GROUP_MAX: usize = 64;

/// Prepared statements the writer keeps (a store's writes are a few dozen
/// texts; batches of ids vary the text and are cheap to prepare again).
const STATEMENT_CACHE: usize = 128;

/// A value bound to a statement: `None` is SQL `NULL` of the type given, as
/// PostgreSQL wants to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (`BIGINT`).
    Int(Option<i64>),
    /// Text.
    Text(Option<String>),
    /// Bytes (`BLOB`, `BYTEA`).
    Bytes(Option<Vec<u8>>),
}

impl Value {
    /// Whether this is SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Int(None) | Value::Text(None) | Value::Bytes(None))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Some(v))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

/// What a statement of a batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Run it.
    Execute,
    /// Run it; if it changes no row, stop and undo the batch.
    Guard,
    /// Run it and keep the first column of the rows it returns.
    Query,
}

#[derive(Debug)]
struct Step {
    sql: Cow<'static, str>,
    args: Vec<Value>,
    kind: Kind,
}

/// A write transaction as data, run by [`super::Database::run`]. SQL as
/// everywhere in the stores: `$N` placeholders, the same text on both
/// dialects.
#[derive(Debug, Default)]
pub struct Batch {
    steps: Vec<Step>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Value>, kind: Kind) -> &mut Self {
        self.steps.push(Step { sql: sql.into(), args, kind });
        self
    }

    /// Runs `sql` with `args`.
    pub fn execute(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Value>) -> &mut Self {
        self.push(sql, args, Kind::Execute)
    }

    /// Runs `sql` with `args`; if it changes no row (a version that moved
    /// on, a key that exists) the batch stops there, undoes what it did and
    /// reports [`Outcome::Stopped`].
    pub fn guard(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Value>) -> &mut Self {
        self.push(sql, args, Kind::Guard)
    }

    /// Runs `sql` with `args` and keeps the first column of each row it
    /// returns, as text (`RETURNING id`).
    pub fn query(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Value>) -> &mut Self {
        self.push(sql, args, Kind::Query)
    }

    /// Whether the batch has no statement.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// How a batch ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it was committed; `false` when a guard stopped it.
    pub committed: bool,
    /// Rows changed, per statement run.
    pub changed: Vec<u64>,
    /// The first column of the rows the query statements returned, in order.
    pub rows: Vec<String>,
}

impl Outcome {
    fn stopped() -> Self {
        Self::default()
    }

    /// Rows changed by all statements together.
    pub fn changed_total(&self) -> u64 {
        self.changed.iter().sum()
    }
}

impl Batch {
    /// Runs the steps through `sql`, in the transaction it is in (on the
    /// PostgreSQL writer thread); a stopped batch is for the caller to undo.
    pub(super) fn run_on(&self, sql: &mut dyn super::Sql) -> Result<Outcome, sqlx::Error> {
        let mut outcome = Outcome { committed: true, ..Outcome::default() };
        for step in &self.steps {
            match step.kind {
                Kind::Query => {
                    let rows = sql.fetch_all(&step.sql, &step.args)?;
                    outcome.changed.push(rows.len() as u64);
                    for row in &rows {
                        outcome.rows.push(row.first_text()?);
                    }
                }
                Kind::Execute | Kind::Guard => {
                    let changed = sql.execute(&step.sql, &step.args)?;
                    outcome.changed.push(changed);
                    if step.kind == Kind::Guard && changed == 0 {
                        return Ok(Outcome::stopped());
                    }
                }
            }
        }
        Ok(outcome)
    }
}

/// Binds `values` to a sqlx query in order, for a statement that one store
/// runs both in a batch and inside a transaction of its own.
pub fn bind<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    values: impl IntoIterator<Item = Value>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for value in values {
        query = match value {
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Bytes(v) => query.bind(v),
        };
    }
    query
}

/// Work for the writer thread: it runs inside a savepoint of the group's
/// transaction, and is answered once the group's commit is known.
pub(super) trait Job: Send {
    /// Does the work on the connection; whether to keep it (`false`
    /// rolls its savepoint back).
    fn run(&mut self, conn: &rusqlite::Connection) -> bool;

    /// Answers the caller: what the work gave, or `failed` when the group
    /// did not commit (or the work never ran).
    fn answer(self: Box<Self>, failed: Option<&rusqlite::Error>);

    /// Answers `err` without running the work.
    fn refuse(self: Box<Self>, err: sqlx::Error);
}

/// A batch and where its outcome goes.
struct BatchJob {
    batch: Batch,
    done: oneshot::Sender<Result<Outcome, sqlx::Error>>,
    ran: Option<Result<Outcome, rusqlite::Error>>,
}

impl Job for BatchJob {
    fn run(&mut self, conn: &rusqlite::Connection) -> bool {
        let ran = run_steps(conn, &self.batch);
        let keep = matches!(&ran, Ok(outcome) if outcome.committed);
        self.ran = Some(ran);
        keep
    }

    fn answer(self: Box<Self>, failed: Option<&rusqlite::Error>) {
        let answer = match (failed, self.ran) {
            (Some(err), _) => Err(to_sqlx_ref(err)),
            (None, Some(ran)) => ran.map_err(to_sqlx),
            (None, None) => Err(sqlx::Error::WorkerCrashed),
        };
        // The caller may have gone (a cancelled request); its batch ran.
        let _ = self.done.send(answer);
    }

    fn refuse(self: Box<Self>, err: sqlx::Error) {
        let _ = self.done.send(Err(err));
    }
}

/// The thread that runs a SQLite store's batches and in-line transactions;
/// it ends when the store's last handle is dropped.
#[derive(Debug)]
pub(super) struct SqliteWriter {
    jobs: mpsc::Sender<Queued>,
}

/// A job and when it was queued.
struct Queued {
    job: Box<dyn Job>,
    at: Instant,
}

impl SqliteWriter {
    /// Opens a connection to the store's file (the pragmas as sqlx's
    /// connections have them) and starts the thread. `gate` is the store's
    /// write turn; a job whose turn comes more than `patience` after it was
    /// queued is refused with `PoolTimedOut`, unrun, as a sqlx writer that
    /// waited as long for the turn is: an overloaded store fails writes
    /// rather than queuing them without end.
    pub(super) fn start(
        path: &Path,
        gate: Arc<Mutex<()>>,
        autocheckpoint: u32,
        patience: Duration,
    ) -> Result<Self, sqlx::Error> {
        let conn = rusqlite::Connection::open(path).map_err(to_sqlx)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
             PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {autocheckpoint}"
        ))
        .map_err(to_sqlx)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, queue) = mpsc::channel();
        let name = format!("sqlite-writer-{}", path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || writer_loop(conn, &queue, &gate, patience))
            .map_err(sqlx::Error::Io)?;
        Ok(Self { jobs })
    }

    /// Queues `job`.
    pub(super) fn send(&self, job: Box<dyn Job>) -> Result<(), sqlx::Error> {
        self.jobs.send(Queued { job, at: Instant::now() }).map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Runs `batch` on the writer thread.
    pub(super) async fn run(&self, batch: Batch) -> Result<Outcome, sqlx::Error> {
        let (done, outcome) = oneshot::channel();
        self.send(Box::new(BatchJob { batch, done, ran: None }))?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// The file a SQLite URL's options name.
pub(super) fn sqlite_file(options: &sqlx::sqlite::SqliteConnectOptions) -> PathBuf {
    options.get_filename().to_path_buf()
}

fn writer_loop(mut conn: rusqlite::Connection, queue: &mpsc::Receiver<Queued>, gate: &Mutex<()>, patience: Duration) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    // Blocks until a job comes; ends when every sender is gone.
    while let Ok(first) = queue.recv() {
        let mut queued = vec![first];
        while queued.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => queued.push(job),
                Err(_) => break,
            }
        }
        let turn = gate.blocking_lock();
        for Queued { job, at } in queued {
            if at.elapsed() >= patience {
                job.refuse(sqlx::Error::PoolTimedOut);
            } else {
                group.push(job);
            }
        }
        let failed = commit_group(&mut conn, &mut group);
        drop(turn);
        for job in group.drain(..) {
            job.answer(failed.as_ref());
        }
    }
}

/// Runs the group in one transaction, each job in a savepoint; the error
/// that undid the whole group, if one did.
fn commit_group(conn: &mut rusqlite::Connection, group: &mut [Box<dyn Job>]) -> Option<rusqlite::Error> {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => return Some(err),
    };
    for job in group.iter_mut() {
        if let Err(err) = tx.execute_batch("SAVEPOINT job") {
            return Some(err);
        }
        // A panicking job is undone like a failed one, and the thread
        // goes on serving the store.
        let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&tx))).unwrap_or(false);
        if tx.is_autocommit() {
            // Some errors (a full disk, I/O) make SQLite roll the whole
            // transaction back: nothing of the group stands.
            return Some(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT), None));
        }
        let end = if keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        if let Err(err) = tx.execute_batch(end) {
            return Some(err);
        }
    }
    tx.commit().err()
}

/// Binds `args` to a statement by the number of each `$N`.
pub(super) fn bind_sqlite(stmt: &mut rusqlite::Statement<'_>, args: &[Value]) -> Result<(), rusqlite::Error> {
    // `$N` is a named parameter to SQLite: its index is its place of
    // first appearance, so each one is bound by its name.
    for index in 1..=stmt.parameter_count() {
        let arg = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.wrapping_sub(1)))
            .ok_or(rusqlite::Error::InvalidParameterCount(index, args.len()))?;
        match arg {
            Value::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Value::Text(v) => stmt.raw_bind_parameter(index, v)?,
            Value::Bytes(v) => stmt.raw_bind_parameter(index, v)?,
        }
    }
    Ok(())
}

fn run_steps(conn: &rusqlite::Connection, batch: &Batch) -> Result<Outcome, rusqlite::Error> {
    let mut outcome = Outcome { committed: true, ..Outcome::default() };
    for step in &batch.steps {
        let mut stmt = conn.prepare_cached(&step.sql)?;
        bind_sqlite(&mut stmt, &step.args)?;
        match step.kind {
            Kind::Query => {
                let mut rows = stmt.raw_query();
                let mut n = 0;
                while let Some(row) = rows.next()? {
                    outcome.rows.push(row.get(0)?);
                    n += 1;
                }
                outcome.changed.push(n);
            }
            Kind::Execute | Kind::Guard => {
                let changed = stmt.raw_execute()? as u64;
                outcome.changed.push(changed);
                if step.kind == Kind::Guard && changed == 0 {
                    return Ok(Outcome::stopped());
                }
            }
        }
    }
    Ok(outcome)
}

/// A SQLite error from the writer thread, as the stores' sqlx errors are.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct SqliteError {
    message: String,
    /// SQLite's extended result code, if SQLite gave one.
    code: Option<i32>,
}

pub(super) fn to_sqlx(err: rusqlite::Error) -> sqlx::Error {
    to_sqlx_ref(&err)
}

pub(super) fn to_sqlx_ref(err: &rusqlite::Error) -> sqlx::Error {
    let code = match err {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
        _ => None,
    };
    sqlx::Error::Database(Box::new(SqliteError { message: err.to_string(), code }))
}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.map(|c| Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                ErrorKind::UniqueViolation
            }
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::database::{Database, Migrations, ScratchPostgres};

    static SQLITE: Migrator = sqlx::migrate!("./migrations/probe/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./migrations/probe/postgres");
    static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

    async fn with_table(db: &Database) {
        sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT, at BIGINT)")
            .execute(db.pool())
            .await
            .expect("table");
    }

    fn insert(id: &str, n: i64) -> Batch {
        let mut batch = Batch::new();
        batch.execute(
            "INSERT INTO items (id, n, note, at) VALUES ($1, $2, $3, $4)",
            vec![id.into(), n.into(), Value::Text(None), Value::Int(None)],
        );
        batch
    }

    async fn count(db: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM items").fetch_one(db.pool()).await.expect("count")
    }

    /// What the stores rely on, the same on both dialects: statements run in
    /// order with `$N` bound by number wherever it stands, a guard that
    /// changes nothing undoes the whole batch, a failing statement fails
    /// only its own batch, and `RETURNING` rows come back.
    async fn batches_behave_alike(db: &Database) {
        with_table(db).await;
        let mut first = insert("a", 1);
        // $2 before $1, and $1 twice: bound by number, not by position.
        first.execute(
            "UPDATE items SET note = $2, at = $1 WHERE id = $3 AND n = $1",
            vec![1.into(), "noted".into(), "a".into()],
        );
        let done = db.run(first).await.expect("first batch");
        assert_eq!(done, Outcome { committed: true, changed: vec![1, 1], rows: vec![] });
        let row: (String, i64) =
            sqlx::query_as("SELECT note, at FROM items WHERE id = 'a'").fetch_one(db.pool()).await.expect("row");
        assert_eq!(row, ("noted".to_owned(), 1));

        let mut stopped = insert("b", 2);
        stopped.guard("UPDATE items SET n = n + 1 WHERE id = $1 AND n = $2", vec!["a".into(), 99.into()]);
        stopped.execute("INSERT INTO items (id, n) VALUES ('never', 0)", vec![]);
        assert!(!db.run(stopped).await.expect("stopped batch").committed);
        assert_eq!(count(db).await, 1, "the stopped batch's first insert is undone");

        // A duplicate key fails its own batch, whole, and the error says
        // what kind it is; batches running beside it are not touched.
        let batches = (0..40).map(|i| {
            let mut batch = insert(&format!("row{i}"), i);
            if i % 4 == 0 {
                batch.execute("INSERT INTO items (id, n) VALUES ('a', 0)", vec![]);
            }
            db.run(batch)
        });
        let results = futures_util::future::join_all(batches).await;
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(outcome) => assert!(i % 4 != 0 && outcome.committed, "batch {i}: {outcome:?}"),
                Err(sqlx::Error::Database(e)) => {
                    assert!(i % 4 == 0 && e.is_unique_violation(), "batch {i}: {e}");
                }
                Err(e) => panic!("batch {i}: {e}"),
            }
        }
        assert_eq!(count(db).await, 1 + 30, "30 of the 40 batches stand, none of the failed ones' rows");

        let mut claim = Batch::new();
        claim.query("UPDATE items SET n = n + 100 WHERE n < $1 RETURNING id", vec![3.into()]);
        let mut claimed = db.run(claim).await.expect("claim").rows;
        claimed.sort();
        assert_eq!(claimed, ["a", "row1", "row2"]);
    }

    #[tokio::test]
    async fn sqlite_batches_run_on_the_writer_thread_as_on_postgres() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "batch.db", "t", &MIGRATIONS).await.expect("open");
        assert!(db.batches.is_some(), "SQLite batches go to the writer thread");
        batches_behave_alike(&db).await;
        db.close().await;
        assert!(matches!(db.run(insert("late", 0)).await, Err(sqlx::Error::PoolClosed)));
    }

    #[tokio::test]
    async fn postgres_batches_run_on_the_writer_thread() {
        let scratch = ScratchPostgres::create("batch_test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        assert!(db.batches.is_none());
        batches_behave_alike(&db).await;
        db.close().await;
    }

    /// A job whose turn comes later than the writer's patience allows is
    /// refused, not run (here a patience of zero: every job is late).
    #[tokio::test]
    async fn sqlite_jobs_that_waited_too_long_are_refused_unrun() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "late.db", "t", &MIGRATIONS).await.expect("open");
        with_table(&db).await;
        let impatient =
            SqliteWriter::start(&dir.path().join("late.db"), Arc::new(Mutex::new(())), 1000, Duration::ZERO)
                .expect("writer");
        let refused = impatient.run(insert("late", 1)).await;
        assert!(matches!(refused, Err(sqlx::Error::PoolTimedOut)), "{refused:?}");
        assert_eq!(count(&db).await, 0, "the refused batch did not run");
        db.run(insert("in time", 1)).await.expect("the store's own writer is patient");
        assert_eq!(count(&db).await, 1);
        db.close().await;
    }

    /// sqlx's writer connection and the writer thread share the store's
    /// write turn: interleaved read-modify-write transactions on one side
    /// and batches on the other lose no update and never meet SQLite's
    /// busy error.
    #[tokio::test]
    async fn sqlite_batches_and_sqlx_writers_take_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "turns.db", "t", &MIGRATIONS).await.expect("open");
        with_table(&db).await;
        db.run(insert("counter", 0)).await.expect("counter");
        let by_sqlx = async {
            for _ in 0..50 {
                let mut tx = db.begin_write().await.expect("begin");
                let n: i64 = sqlx::query_scalar("SELECT n FROM items WHERE id = 'counter'")
                    .fetch_one(&mut *tx)
                    .await
                    .expect("read");
                sqlx::query("UPDATE items SET n = $1 WHERE id = 'counter'")
                    .bind(n + 1)
                    .execute(&mut *tx)
                    .await
                    .expect("write");
                tx.commit().await.expect("commit");
            }
        };
        let by_batches = async {
            for _ in 0..50 {
                let mut batch = Batch::new();
                batch.guard("UPDATE items SET n = n + 1 WHERE id = $1", vec!["counter".into()]);
                assert!(db.run(batch).await.expect("batch").committed);
            }
        };
        tokio::join!(by_sqlx, by_batches);
        let n: i64 =
            sqlx::query_scalar("SELECT n FROM items WHERE id = 'counter'").fetch_one(db.pool()).await.expect("n");
        assert_eq!(n, 100);
        db.close().await;
    }
}
