//! The tiers' own SQL databases (the embedded ERP, the payments ledger, the
//! saga store): opening one from a `sqlite:` or `postgres:` URL (SQLite in
//! the data directory by default), migrating it with the migrations of its
//! dialect, and starting write transactions.
//!
//! Both dialects go through sqlx's `Any` driver, so a store's queries are
//! written once: with `$1` placeholders (SQLite reads `$N` as the N-th
//! parameter too), integers read as `i64`, booleans stored as integers and
//! money as decimal text. Where the DDL differs, each dialect has its own
//! migration folder ([`Migrations`]).
//!
//! Writes are serialised per store, the same on both dialects, so that a
//! write transaction may read, check and then write (stock levels, states,
//! idempotency keys, counters) without a lost update: on SQLite a writer
//! first takes the store's write turn (an async mutex that sqlx's writer
//! connection and the batch writer thread share, so writers queue in order
//! rather than in SQLite's busy handler) and then SQLite's write lock at
//! `BEGIN IMMEDIATE`; PostgreSQL takes a transaction-level advisory lock
//! named after the store, released at commit or rollback. Reads never
//! wait for it. One writer at a time is far more than a reference ERP or a
//! payments ledger needs, and it keeps the two dialects' behaviour identical.
//!
//! A store whose write transactions are fixed lists of statements (the saga
//! store) writes them as [`Batch`]es: on SQLite each runs in one call on a
//! writer thread of its own instead of one hand-off to sqlx's worker per
//! statement ([`batch`]). A store whose writes read, check and then write
//! (the embedded ERP, the payments ledger) hands [`Database::transact`] a
//! closure instead, which runs on that same thread, statements and all
//! ([`inline`]). On PostgreSQL both run on a writer thread of the store's
//! own with a connection of its own, those that queued together in one
//! transaction (`PostgresWriter` in [`inline`]; batches take no advisory lock,
//! as their guards keep them safe).
//!
//! A SQLite store's write-ahead log is copied back into the database file
//! by a background task ([`CHECKPOINT_EVERY`]) on a reader's connection,
//! not by the commit that happens to fill it: that checkpoint (copying
//! pages and two `fsync`s) held the only writer, and every write waiting
//! behind it, for a quarter of `order_bench`'s time.

pub mod batch;
pub mod idempotency;
pub mod inline;

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

pub use batch::{Batch, Outcome, Value};
pub use inline::{Columns, Row, Sql};
use sqlx::{
    Any, AnyConnection, AnyPool, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{MigrateError, Migrator},
    pool::PoolConnection,
    sqlite::SqliteConnectOptions,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// A pooled PostgreSQL connection idle this long is pinged before use.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// The longest a query waits for a pooled connection, or a SQLite writer
/// for its turn.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a SQLite store's write-ahead log is checkpointed in the
/// background.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The safety net should background checkpoints fall behind: past this
/// many pages in the log (40 MB), a commit checkpoints by itself, as SQLite
/// does at 1,000 by default.
const AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Which SQL database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `sqlite:` (the default, a file in the data directory).
    Sqlite,
    /// `postgres:` or `postgresql:`.
    Postgres,
}

impl Dialect {
    /// The dialect of `url`, or `None` for any other scheme.
    pub fn of(url: &str) -> Option<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase())?;
        match scheme.as_str() {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }
}

/// A store's migrations, one folder per dialect.
#[derive(Debug)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: &'static Migrator,
    /// For PostgreSQL.
    pub postgres: &'static Migrator,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no supported database.
    #[error("database URL must start with sqlite: or postgres:")]
    Scheme,
    /// An in-memory SQLite database was asked for: orders, payments and
    /// keys must outlive the process.
    #[error("an in-memory SQLite database keeps nothing across a restart: use sqlite://FILE")]
    InMemory,
    /// The data directory cannot be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database did not accept a connection.
    #[error("connecting to the database failed")]
    Connect(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migrating the database failed")]
    Migrate(#[from] MigrateError),
}

impl Error {
    /// Whether opening may succeed later (the server is down or busy).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut))
    }
}

/// An open, migrated database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    /// Where write transactions run. On SQLite a pool of one connection,
    /// so writers queue here in order rather than in SQLite's busy handler,
    /// which sleeps up to 100 ms between attempts and throttles a busy
    /// store; on PostgreSQL the same pool as reads.
    writer: AnyPool,
    dialect: Dialect,
    /// The advisory lock that serialises this store's writes on PostgreSQL.
    write_lock: i64,
    /// On SQLite, the one write turn that sqlx's writer connection and the
    /// batch writer thread take in turn, so that they queue here, in order,
    /// and never in SQLite's busy handler.
    gate: Arc<Mutex<()>>,
    /// On SQLite, the file, and the thread that runs [`Batch`]es, started
    /// by the first one (most stores never write one).
    batches: Option<Arc<(PathBuf, tokio::sync::OnceCell<batch::SqliteWriter>)>>,
    /// On PostgreSQL, the thread that runs [`Database::transact`]'s work.
    postgres_writer: Option<Arc<inline::PostgresWriter>>,
    /// SQLite's background checkpoints, stopped with the last clone.
    _checkpointer: Option<Arc<Checkpointer>>,
}

/// The task that checkpoints a SQLite store; aborted when dropped.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    /// Checkpoints `pool`'s database every [`CHECKPOINT_EVERY`] until the
    /// pool closes. PASSIVE copies what it can without waiting for readers
    /// or the writer, which go on meanwhile.
    fn start(pool: AnyPool) -> Self {
        Self(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                every.tick().await;
                if pool.is_closed() {
                    return;
                }
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    Ok(_) => failing = false,
                    Err(_) if pool.is_closed() => return, // closed meanwhile: shutting down
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(error = %err, "WAL checkpoint failed; commits checkpoint by themselves past {AUTOCHECKPOINT_PAGES} pages");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

impl Database {
    /// Opens `url`, or the SQLite file `<data_dir>/<file_name>` (created if
    /// missing), and runs the migrations of its dialect. `store` names the
    /// store (`erp`, `payments`): two stores may share one PostgreSQL
    /// database without waiting for each other's writes.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        file_name: &str,
        store: &str,
        migrations: &Migrations,
    ) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let (options, dialect, sqlite_file) = match url {
            Some(url) => {
                let dialect = Dialect::of(url).ok_or(Error::Scheme)?;
                match dialect {
                    // Parsed by the SQLite driver first, so that a file URL
                    // without `?mode=rwc` still creates the file.
                    Dialect::Sqlite => {
                        let sqlite = SqliteConnectOptions::from_str(url).map_err(Error::Connect)?;
                        if sqlite_in_memory(url) {
                            return Err(Error::InMemory);
                        }
                        let file = batch::sqlite_file(&sqlite);
                        (sqlite_url(sqlite), dialect, Some(file))
                    }
                    Dialect::Postgres => (AnyConnectOptions::from_str(url).map_err(Error::Connect)?, dialect, None),
                }
            }
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|source| Error::DataDir { path: data_dir.display().to_string(), source })?;
                let file = data_dir.join(file_name);
                (sqlite_url(SqliteConnectOptions::new().filename(&file)), Dialect::Sqlite, Some(file))
            }
        };
        let options_for = |connections| {
            // sqlx pings every connection it hands out by default: one more
            // round trip per query (to SQLite's worker thread, or over the
            // network): 13% of the context switches of `order_bench` on
            // SQLite. A SQLite file cannot hang up; a PostgreSQL connection
            // is checked only after sitting idle long enough for a server
            // restart or a NAT to have cut it.
            let options = AnyPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false);
            let options = match dialect {
                Dialect::Sqlite => options,
                Dialect::Postgres => options.before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= IDLE_PING_AFTER {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                }),
            };
            options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // What the URL cannot carry: WAL (readers never wait
                        // for the writer) and a busy timeout (writers queue
                        // on BEGIN IMMEDIATE instead of failing at once).
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                             PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}"
                        );
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    }
                    Ok(())
                })
            })
        };
        let pool = options_for(8).connect_with(options.clone()).await.map_err(Error::Connect)?;
        let options_pg = options.clone();
        let writer = match dialect {
            Dialect::Sqlite => options_for(1).connect_with(options).await.map_err(Error::Connect)?,
            Dialect::Postgres => pool.clone(),
        };
        let migrator = match dialect {
            Dialect::Sqlite => migrations.sqlite,
            Dialect::Postgres => migrations.postgres,
        };
        migrator.run(&writer).await?;
        let checkpointer = (dialect == Dialect::Sqlite).then(|| Arc::new(Checkpointer::start(pool.clone())));
        let gate = Arc::new(Mutex::new(()));
        let batches = sqlite_file.map(|file| Arc::new((file, tokio::sync::OnceCell::new())));
        let write_lock = lock_key(store);
        let postgres_writer = match dialect {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(Arc::new(
                inline::PostgresWriter::start(options_pg, write_lock, ACQUIRE_TIMEOUT).map_err(Error::Connect)?,
            )),
        };
        Ok(Self { pool, writer, dialect, write_lock, gate, batches, postgres_writer, _checkpointer: checkpointer })
    }

    /// The pool, for reads and for transactions of one's own.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect, for the rare statement that differs.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A transaction that holds this store's write lock until it ends (see
    /// the module doc), so it sees no concurrent write between its reads
    /// and its writes.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.begin_sqlite().await,
            Dialect::Postgres => {
                let mut tx = self.writer.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(self.write_lock).execute(&mut *tx).await?;
                Ok(WriteTx { tx, _turn: None })
            }
        }
    }

    /// Waits for the SQLite write turn as long as for a pooled connection:
    /// under a load the store cannot take, writers fail instead of queuing
    /// without end.
    async fn turn(&self) -> Result<OwnedMutexGuard<()>, sqlx::Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.gate.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)
    }

    async fn begin_sqlite(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.turn().await?;
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: Some(turn) })
    }

    /// A write transaction without the store-wide lock on PostgreSQL, for a
    /// store that guards its rows itself (version checks, `FOR UPDATE SKIP
    /// LOCKED`) so that replicas write side by side. On SQLite the same as
    /// [`Database::begin_write`]: one writer at a time.
    pub async fn begin_concurrent(&self) -> Result<WriteTx, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.begin_sqlite().await,
            Dialect::Postgres => Ok(WriteTx { tx: self.writer.begin().await?, _turn: None }),
        }
    }

    /// A connection for writes outside a transaction (on SQLite: in line
    /// with the other writers, holding the write turn while it is kept).
    pub async fn writer(&self) -> Result<WriteConn, sqlx::Error> {
        let turn = match self.dialect {
            Dialect::Sqlite => Some(self.turn().await?),
            Dialect::Postgres => None,
        };
        Ok(WriteConn { conn: self.writer.acquire().await?, _turn: turn })
    }

    /// Runs `batch` as one transaction, without the store-wide lock on
    /// PostgreSQL (as [`Database::begin_concurrent`]); on SQLite in one call
    /// on the store's writer thread (see [`batch`]).
    pub async fn run(&self, batch: Batch) -> Result<Outcome, sqlx::Error> {
        if self.pool.is_closed() {
            return Err(sqlx::Error::PoolClosed);
        }
        match &self.batches {
            Some(_) => self.sqlite_writer().await?.run(batch).await,
            None => {
                let writer = self.postgres_writer.as_ref().ok_or(sqlx::Error::PoolClosed)?;
                let (done, outcome) = tokio::sync::oneshot::channel();
                writer.send(Box::new(inline::BatchCall::new(batch, done)))?;
                outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
            }
        }
    }

    /// Runs `work` as one write transaction that holds this store's write
    /// lock, as [`Database::begin_write`] does, so it may read, check and
    /// then write: committed if it returns `Ok`, undone if it returns an
    /// error or panics. On SQLite it runs in one call on the store's writer
    /// thread, on PostgreSQL on a writer thread with a connection of its own
    /// (see [`inline`]); either way it must not wait for anything but the
    /// database.
    pub async fn transact<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Sql) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        if self.pool.is_closed() {
            return Err(sqlx::Error::PoolClosed.into());
        }
        match &self.batches {
            Some(_) => {
                let (done, answer) = tokio::sync::oneshot::channel();
                self.sqlite_writer().await?.send(Box::new(inline::CallJob::new(work, done)))?;
                answer.await.map_err(|_| sqlx::Error::PoolClosed)?
            }
            None => {
                let writer = self.postgres_writer.as_ref().ok_or(sqlx::Error::PoolClosed)?;
                let (done, answer) = tokio::sync::oneshot::channel();
                writer.send(Box::new(inline::CallJob::new(work, done)))?;
                answer.await.map_err(|_| sqlx::Error::PoolClosed)?
            }
        }
    }

    /// The SQLite store's writer thread, started by its first job.
    async fn sqlite_writer(&self) -> Result<&batch::SqliteWriter, sqlx::Error> {
        let (file, writer) = &**self.batches.as_ref().ok_or(sqlx::Error::PoolClosed)?;
        let start =
            || async { batch::SqliteWriter::start(file, self.gate.clone(), AUTOCHECKPOINT_PAGES, ACQUIRE_TIMEOUT) };
        writer.get_or_try_init(start).await
    }

    /// The right to do the job `key` names, if no other replica holds it:
    /// on PostgreSQL a session advisory lock on a connection of its own
    /// (freed when the holder dies and its connection drops), so that one
    /// replica does the job; on SQLite always granted (one process owns
    /// the file).
    pub async fn try_replica_lock(&self, key: i64) -> Result<Option<ReplicaLock>, sqlx::Error> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(ReplicaLock { conn: None }));
        }
        let mut conn = self.pool.acquire().await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        // Out of the pool: the lock lives exactly as long as this connection.
        Ok(held.then(|| ReplicaLock { conn: Some(conn.detach()) }))
    }

    /// Closes every connection (for a clean shutdown).
    pub async fn close(&self) {
        if let Some(writer) = &self.postgres_writer {
            writer.close();
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A write transaction (see [`Database::begin_write`]); what it has not
/// committed when dropped is rolled back.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    /// The SQLite write turn, given back after the transaction ends.
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// A connection for writes outside a transaction (see [`Database::writer`]).
pub struct WriteConn {
    conn: PoolConnection<Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Deref for WriteConn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// Held by the one replica that does a job (publishing the outbox,
/// exporting, following the master data feeds); dropping it gives the
/// right up.
pub struct ReplicaLock {
    conn: Option<sqlx::AnyConnection>,
}

impl ReplicaLock {
    /// Whether the lock is still held (its connection still answers).
    pub async fn is_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`,
/// `?mode=memory`).
fn sqlite_in_memory(url: &str) -> bool {
    let rest = url.split_once(':').map_or(url, |(_, rest)| rest).trim_start_matches("//");
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || query.split('&').any(|pair| pair.eq_ignore_ascii_case("mode=memory"))
}

/// The `Any` driver takes its options from a URL; SQLite's own parser has
/// resolved the file name and the create-if-missing mode into it.
fn sqlite_url(options: SqliteConnectOptions) -> AnyConnectOptions {
    use sqlx::ConnectOptions;
    let url = options.create_if_missing(true).to_url_lossy();
    AnyConnectOptions::from_url(&url).expect("the SQLite driver writes URLs the Any driver reads")
}

/// A stable 64-bit advisory lock key for a store name (FNV-1a), so every
/// replica of the system tier picks the same lock.
pub(crate) fn lock_key(store: &str) -> i64 {
    let hash = format!("erp-connect.{store}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A scratch PostgreSQL database for tests (127.0.0.1:5432, user postgres,
/// trust), created with a unique name and dropped when this is dropped,
/// even after a panic, so tests run in parallel and leave nothing behind.
/// For tests only (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub struct ScratchPostgres {
    name: String,
}

#[cfg(any(test, feature = "test-support"))]
impl ScratchPostgres {
    const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

    /// Creates `<prefix>_<ulid>`.
    pub async fn create(prefix: &str) -> Self {
        use sqlx::Connection;
        let name = format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", Self::SERVER))
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
        Self { name }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{}/{}", Self::SERVER, self.name)
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        use sqlx::Connection;
        let name = self.name.clone();
        // Drop cannot await and the test's runtime cannot be blocked on: a
        // thread with a runtime of its own. FORCE ends pooled connections.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", Self::SERVER)).await?;
                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_are_told_by_scheme() {
        assert_eq!(Dialect::of("sqlite://x.db"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of("postgres://u@h/db"), Some(Dialect::Postgres));
        assert_eq!(Dialect::of("PostgreSQL://u@h/db"), Some(Dialect::Postgres));
        assert_eq!(Dialect::of("mysql://u@h/db"), None);
        assert_eq!(Dialect::of("no scheme"), None);
    }

    static SQLITE: Migrator = sqlx::migrate!("./migrations/probe/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./migrations/probe/postgres");
    static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

    #[tokio::test]
    async fn a_sqlite_url_names_the_file_and_other_schemes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("named by url.db");
        let url = format!("sqlite://{}", file.display());
        let db = Database::open(Some(&url), &dir.path().join("unused"), "unused.db", "t", &MIGRATIONS)
            .await
            .expect("open by URL");
        assert_eq!(db.dialect(), Dialect::Sqlite);
        assert!(file.is_file(), "created, even without ?mode=rwc");
        assert!(!dir.path().join("unused").exists(), "the data directory is not used");
        db.begin_write().await.expect("write transaction").commit().await.expect("commit");
        db.close().await;
        let refused = Database::open(Some("mysql://u:secret@h/db"), dir.path(), "x.db", "t", &MIGRATIONS).await;
        assert!(matches!(refused, Err(Error::Scheme)), "{refused:?}");
        // sqlx cannot describe an in-memory database as a URL (it panics);
        // and a store that forgets every order at restart is no store.
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory", "sqlite:x.db?cache=shared&mode=memory"] {
            let refused = Database::open(Some(url), dir.path(), "x.db", "t", &MIGRATIONS).await;
            assert!(matches!(refused, Err(Error::InMemory)), "{url}: {refused:?}");
        }
    }

    #[tokio::test]
    async fn a_sqlite_stores_log_is_checkpointed_in_the_background_not_by_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(None, dir.path(), "wal.db", "t", &MIGRATIONS).await.expect("open");
        let file = dir.path().join("wal.db");
        let before = std::fs::metadata(&file).expect("database file").len();
        let mut tx = db.begin_write().await.expect("write transaction");
        sqlx::query("CREATE TABLE blobs (b BLOB NOT NULL)").execute(&mut *tx).await.expect("table");
        for _ in 0..100 {
            sqlx::query("INSERT INTO blobs (b) VALUES (zeroblob(4096))").execute(&mut *tx).await.expect("insert");
        }
        tx.commit().await.expect("commit");
        // 400 KB is far below the commits' own checkpoint threshold, so only
        // the background task brings them into the file (no sooner than
        // CHECKPOINT_EVERY; the deadline is generous for a busy machine).
        let deadline = std::time::Instant::now() + CHECKPOINT_EVERY * 30;
        loop {
            let len = std::fs::metadata(&file).expect("database file").len();
            if len >= before + 400 * 1024 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still {len} bytes (was {before}) after 30 s");
            tokio::time::sleep(CHECKPOINT_EVERY / 10).await;
        }
        db.close().await;
    }

    #[tokio::test]
    async fn postgres_writes_take_the_stores_lock() {
        let scratch = ScratchPostgres::create("database_test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        assert_eq!(db.dialect(), Dialect::Postgres);
        let mut first = db.begin_write().await.expect("first writer");
        // While the first writer holds it, the store's lock cannot be taken.
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(db.write_lock)
            .fetch_one(db.pool())
            .await
            .expect("try the lock");
        assert!(!taken);
        sqlx::query("SELECT 1").execute(&mut *first).await.expect("the writer goes on");
        first.commit().await.expect("commit");
        db.close().await;
    }

    #[test]
    fn stores_get_distinct_stable_lock_keys() {
        assert_eq!(lock_key("erp"), lock_key("erp"));
        assert_ne!(lock_key("erp"), lock_key("payments"));
    }
}
