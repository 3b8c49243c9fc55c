//! Write transactions run in line: a store hands [`super::Database::transact`]
//! a closure that reads, checks and writes through [`Sql`], and the closure
//! runs where the connection is, start to end, instead of the store's task
//! handing every statement across to a connection elsewhere.
//!
//! On SQLite the closure runs on the store's writer thread ([`super::batch`])
//! against its `rusqlite` connection, in a savepoint of the group it commits
//! with: a transaction of ten statements is one hand-off instead of ten
//! round trips to sqlx's worker thread, each taken while the store's one
//! writer waits. On PostgreSQL it runs on a blocking thread that drives a
//! sqlx transaction statement by statement (the network round trips stay,
//! the SQL and the code are the same). Either way the closure holds the
//! store's write lock, as [`super::Database::begin_write`] does, so it may
//! read, check and then write.
//!
//! Rows come back as [`Row`]s of [`Value`]s (no floats: the stores keep
//! money as decimal text). [`Columns`] reads a column by name the same from
//! a [`Row`] and from a sqlx row, so that a store maps a record from either
//! with one function.

use std::sync::Arc;

use sqlx::{Column, Row as _, any::AnyTypeInfoKind};

use super::batch::{Value, bind};

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

/// [`Sql`] on a PostgreSQL transaction, from a blocking thread.
pub(super) struct OnPostgres<'t> {
    pub(super) tx: &'t mut sqlx::AnyConnection,
    pub(super) runtime: &'t tokio::runtime::Handle,
}

impl Sql for OnPostgres<'_> {
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, sqlx::Error> {
        let query = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), args.iter().cloned());
        Ok(self.runtime.block_on(query.execute(&mut *self.tx))?.rows_affected())
    }

    fn fetch_all(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, sqlx::Error> {
        let query = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), args.iter().cloned());
        let rows = self.runtime.block_on(query.fetch_all(&mut *self.tx))?;
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

impl<F, T, E> super::batch::Job for CallJob<F, T, E>
where
    F: FnOnce(&mut dyn Sql) -> Result<T, E> + Send,
    T: Send,
    E: From<sqlx::Error> + Send,
{
    fn run(&mut self, conn: &rusqlite::Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = work(&mut OnSqlite(conn));
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn answer(self: Box<Self>, failed: Option<&rusqlite::Error>) {
        let answer = match (self.result, failed) {
            // Undone either way: the closure's own error says why.
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(err)) => Err(E::from(super::batch::to_sqlx_ref(err))),
            // It panicked (and was undone).
            (None, None) => Err(E::from(sqlx::Error::WorkerCrashed)),
        };
        // The caller may have gone (a cancelled request); its work stands.
        let _ = self.done.send(answer);
    }

    fn refuse(self: Box<Self>, err: sqlx::Error) {
        let _ = self.done.send(Err(E::from(err)));
    }
}

/// Runs `work` in a PostgreSQL transaction holding the advisory lock `lock`,
/// on a blocking thread: committed if it returns `Ok`, rolled back if not.
pub(super) async fn on_postgres<T, E, F>(pool: sqlx::AnyPool, lock: i64, work: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Sql) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<sqlx::Error> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let run = move || {
        let mut tx = runtime.block_on(async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock).execute(&mut *tx).await?;
            Ok::<_, sqlx::Error>(tx)
        })?;
        match work(&mut OnPostgres { tx: &mut tx, runtime: &runtime }) {
            Ok(value) => {
                runtime.block_on(tx.commit())?;
                Ok(value)
            }
            Err(err) => {
                // The closure's error is the one to report; a failed
                // rollback ends with the connection anyway.
                let _ = runtime.block_on(tx.rollback());
                Err(err)
            }
        }
    };
    tokio::task::spawn_blocking(run).await.unwrap_or_else(|_| Err(E::from(sqlx::Error::WorkerCrashed)))
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

        // Read, check, write: 40 at once lose no update.
        let bumps = (0..40).map(|_| {
            db.transact(|sql| {
                let n = counter(sql)?;
                sql.execute("UPDATE items SET n = $1 WHERE id = $2", &[(n + 1).into(), "counter".into()])?;
                Ok::<_, Failed>(())
            })
        });
        for bumped in futures_util::future::join_all(bumps).await {
            bumped.expect("bump");
        }

        // An error undoes everything the closure wrote, and is returned as
        // the closure gave it.
        let refused = db
            .transact(|sql| {
                sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
                sql.execute("INSERT INTO items (id, n) VALUES ('never', 0)", &[])?;
                Err::<(), _>(Failed::Refused("checked and refused".into()))
            })
            .await;
        assert!(matches!(refused, Err(Failed::Refused(_))), "{refused:?}");
        // A failing statement is the closure's error, and undoes it too.
        let duplicate = db
            .transact(|sql| {
                sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
                sql.execute("INSERT INTO items (id, n) VALUES ('counter', 0)", &[])?;
                Ok::<_, Failed>(())
            })
            .await;
        assert!(
            matches!(&duplicate, Err(Failed::Sql(sqlx::Error::Database(e))) if e.is_unique_violation()),
            "{duplicate:?}"
        );
        // A panicking closure is undone, and the store goes on.
        let panicked = db
            .transact(|sql| {
                sql.execute("UPDATE items SET n = n + 1000 WHERE id = $1", &["counter".into()])?;
                panic!("a bug in a store");
                #[allow(unreachable_code)]
                Ok::<_, Failed>(())
            })
            .await;
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

    /// On a one-thread runtime too, as `#[tokio::test]`s run the stores:
    /// the blocking thread's statements are driven by the test's thread.
    #[tokio::test]
    async fn postgres_transactions_hold_the_store_lock() {
        let scratch = ScratchPostgres::create("inline_test").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(Some(&scratch.url()), dir.path(), "x.db", "t", &MIGRATIONS).await.expect("open");
        transactions_behave_alike(&db).await;
        db.close().await;
    }
}
