//! The database layer under the stores: one way to run SQL on either backend, so that the
//! stores' rules (the write sequence, the chain, paging, ingest's checks) are written once and
//! only SQL text and connections exist per backend.
//!
//! - SQLite (`rusqlite`): the embedded default, for every client and a single gateway.
//! - PostgreSQL (`postgres`, the synchronous client): several gateways on one database.
//!
//! Both stores are synchronous (one writer thread, reads on tokio's blocking pool), so the
//! synchronous PostgreSQL client keeps one shape for both backends: a connection per thread,
//! no executor inside the store. SQL is written once with `?` placeholders; [`Db`] numbers them
//! (`$1`, `$2`) for PostgreSQL. Values cross the boundary as [`ValueRef`], the five storage
//! classes SQLite has, which PostgreSQL's `bigint`, `double precision`, `text` and `bytea`
//! columns map onto one to one: what the chain hashes is the same on both (`audit::chain`).

pub mod copy;
pub mod postgres;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use self::postgres::{PgConn, PgPool, PgUrl};
pub use ::postgres::types::Type as PgType;

/// Which SQL a connection speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Locks the rows a `SELECT` read until the transaction ends (PostgreSQL); SQLite's write
    /// transactions (`BEGIN IMMEDIATE`) hold the whole database already.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// `INDEXED BY name` for SQLite, whose planner needs the hint on some queries; nothing for
    /// PostgreSQL, which has no such clause.
    pub fn indexed_by(self, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!(" INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// Whether `haystack` contains the text bound to the next placeholder.
    pub fn contains(self, haystack: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({haystack}, ?) > 0"),
            Dialect::Postgres => format!("strpos({haystack}, ?) > 0"),
        }
    }

    /// Texts of a group joined with commas.
    pub fn group_concat(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("group_concat({expr})"),
            Dialect::Postgres => format!("string_agg({expr}, ',')"),
        }
    }

    /// A `LIMIT` for "no limit" (SQLite takes -1; PostgreSQL takes NULL, i.e. `LIMIT ALL`).
    pub fn no_limit(self) -> Value {
        match self {
            Dialect::Sqlite => Value::Integer(-1),
            Dialect::Postgres => Value::Null,
        }
    }
}

/// A value as a column holds it (SQLite's storage classes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A borrowed [`Value`]: what a row hands out and a parameter binds, without copying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// Text, borrowed (invalid UTF-8 is an error: only a hand edit can put it there).
    pub fn as_str(&self) -> Result<&'a str, DbError> {
        match self {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map_err(|_| DbError::Invalid("text that is not UTF-8".into())),
            _ => Err(DbError::Invalid(format!(
                "expected text, found {}",
                self.type_name()
            ))),
        }
    }

    /// A blob, borrowed.
    pub fn as_blob(&self) -> Result<&'a [u8], DbError> {
        match self {
            ValueRef::Blob(b) => Ok(b),
            _ => Err(DbError::Invalid(format!(
                "expected a blob, found {}",
                self.type_name()
            ))),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Integer(_) => "integer",
            ValueRef::Real(_) => "real",
            ValueRef::Text(_) => "text",
            ValueRef::Blob(_) => "blob",
        }
    }
}

/// Something bound to a `?`.
pub trait Param {
    fn value(&self) -> ValueRef<'_>;
}

impl Param for Value {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref()
    }
}
impl Param for ValueRef<'_> {
    fn value(&self) -> ValueRef<'_> {
        *self
    }
}
impl Param for i64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(*self)
    }
}
impl Param for i32 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}
impl Param for u16 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}
impl Param for bool {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::from(*self))
    }
}
impl Param for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self.as_bytes())
    }
}
impl Param for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self.as_bytes())
    }
}
impl Param for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<const N: usize> Param for [u8; N] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl Param for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Some(v) => v.value(),
            None => ValueRef::Null,
        }
    }
}

/// `&[&dyn Param]` from a list of expressions.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$(&$v as &dyn $crate::db::Param),*] as &[&dyn $crate::db::Param] };
}

/// What went wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("column {column}: expected {expected}, found {found}")]
    Type {
        column: usize,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    /// A row callback stopped the query (its own error is kept by the caller).
    #[error("stopped by the caller")]
    Stopped,
}

impl DbError {
    /// A unique or primary key constraint refused a write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            DbError::Postgres(e) => {
                e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// Back to `rusqlite`'s error, for SQLite-only code that calls the shared row readers.
impl From<DbError> for rusqlite::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => e,
            other => rusqlite::Error::ToSqlConversionFailure(Box::new(other)),
        }
    }
}

/// A row being read.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r ::postgres::Row),
}

impl Row<'_> {
    pub fn get_ref(&self, i: usize) -> Result<ValueRef<'_>, DbError> {
        match self {
            Row::Sqlite(row) => sqlite::value(row, i),
            Row::Postgres(row) => postgres::value(row, i),
        }
    }

    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        T::from_value(self.get_ref(i)?, i)
    }

    /// Text, replacing invalid UTF-8 (which only a hand edit can put there) instead of failing.
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        Ok(match self.get_ref(i)? {
            ValueRef::Text(b) | ValueRef::Blob(b) => match std::str::from_utf8(b) {
                Ok(t) => t.to_owned(),
                Err(_) => String::from_utf8_lossy(b).into_owned(),
            },
            ValueRef::Null => String::new(),
            ValueRef::Integer(n) => n.to_string(),
            ValueRef::Real(f) => f.to_string(),
        })
    }

    /// [`Row::text`], or None for NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        Ok(match self.get_ref(i)? {
            ValueRef::Null => None,
            _ => Some(self.text(i)?),
        })
    }
}

/// A Rust value read from a column.
pub trait FromValue: Sized {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError>;
}

fn wrong<T>(v: ValueRef<'_>, column: usize, expected: &'static str) -> Result<T, DbError> {
    Err(DbError::Type {
        column,
        expected,
        found: v.type_name(),
    })
}

impl FromValue for i64 {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Integer(i) => Ok(i),
            _ => wrong(v, column, "integer"),
        }
    }
}
impl FromValue for i32 {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Integer(i) => {
                i32::try_from(i).or_else(|_| wrong(v, column, "32-bit integer"))
            }
            _ => wrong(v, column, "integer"),
        }
    }
}
impl FromValue for u16 {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Integer(i) => {
                u16::try_from(i).or_else(|_| wrong(v, column, "16-bit integer"))
            }
            _ => wrong(v, column, "integer"),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Integer(i) => Ok(i != 0),
            _ => wrong(v, column, "integer"),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            _ => wrong(v, column, "real"),
        }
    }
}
impl FromValue for String {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
            _ => wrong(v, column, "text"),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            _ => wrong(v, column, "blob"),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: ValueRef<'_>, _: usize) -> Result<Self, DbError> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>, column: usize) -> Result<Self, DbError> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

/// A connection of either backend, borrowed for the statements of one rule.
pub enum Db<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c mut PgConn),
}

impl Db<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(c) => sqlite::execute(c, sql, params),
            Db::Postgres(c) => c.execute(sql, params),
        }
    }

    /// Runs statements without parameters (DDL, `BEGIN`).
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => c.batch(sql),
        }
    }

    /// Hands each row of a query to `each`, as the database produces them (never all at once).
    pub fn query_each(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&Row) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => sqlite::query_each(c, sql, params, each),
            Db::Postgres(c) => c.query_each(sql, params, each),
        }
    }

    /// The first row of a query, mapped; None when there is none.
    pub fn query_row<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        map: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut map = Some(map);
        let mut out = None;
        let result = self.query_each(sql, params, &mut |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(())
        });
        result.map(|_| out)
    }

    /// Every row of a query, mapped.
    pub fn query_vec<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        mut map: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |row| {
            out.push(map(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `f` in a transaction: a write transaction takes the write lock at once (SQLite's
    /// `BEGIN IMMEDIATE`); a read transaction reads one snapshot (PostgreSQL's repeatable read).
    /// Committed when `f` succeeds, rolled back otherwise.
    pub fn transaction<T, E: From<DbError>>(
        &mut self,
        write: bool,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let begin = match (self.dialect(), write) {
            (Dialect::Sqlite, true) => "BEGIN IMMEDIATE",
            (Dialect::Sqlite, false) => "BEGIN",
            (Dialect::Postgres, true) => "BEGIN",
            (Dialect::Postgres, false) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        self.run_in(begin, f)
    }

    /// A write transaction whose reads all see one snapshot (PostgreSQL's repeatable read; a
    /// concurrent change to a row it then writes fails it rather than being overwritten).
    /// SQLite's write transactions are that already.
    pub fn snapshot_transaction<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let begin = match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        };
        self.run_in(begin, f)
    }

    fn run_in<T, E: From<DbError>>(
        &mut self,
        begin: &str,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch(begin)?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// A `rusqlite` parameter for a [`Value`], for the SQLite-only code that binds the values the
/// shared filter builds.
impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(sqlite::to_rusqlite(
            self.as_ref(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut db = Db::Sqlite(&conn);
        db.batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)")
            .unwrap();
        let none: Option<String> = None;
        db.execute(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            args![7i64, Value::Real(1.5), "x'y", vec![0u8, 1], none],
        )
        .unwrap();
        let row = db
            .query_row("SELECT i, r, s, b, n FROM t", &[], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<f64>(1)?,
                    r.text(2)?,
                    r.get::<Vec<u8>>(3)?,
                    r.get::<Option<String>>(4)?,
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(row, (7, 1.5, "x'y".to_string(), vec![0, 1], None));
        let err = db
            .query_row("SELECT s FROM t", &[], |r| r.get::<i64>(0))
            .unwrap_err();
        assert!(
            err.to_string().contains("expected integer, found text"),
            "{err}"
        );
    }

    #[test]
    fn values_round_trip_through_postgres() {
        let url = PgUrl::parse(&testing::database(), None).unwrap();
        let mut conn = url.connect().unwrap();
        let mut db = Db::Postgres(&mut conn);
        db.batch("CREATE TABLE t (i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA, n TEXT)")
            .unwrap();
        let none: Option<String> = None;
        db.execute(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            args![7i64, Value::Real(1.5), "x'y?", vec![0u8, 1], none],
        )
        .unwrap();
        let row = db
            .query_row(
                "SELECT i, r, s, b, n, COUNT(*) OVER () FROM t WHERE s <> '?'",
                &[],
                |r| {
                    Ok((
                        r.get::<i64>(0)?,
                        r.get::<f64>(1)?,
                        r.text(2)?,
                        r.get::<Vec<u8>>(3)?,
                        r.get::<Option<String>>(4)?,
                        r.get::<i64>(5)?,
                    ))
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(row, (7, 1.5, "x'y?".to_string(), vec![0, 1], None, 1));
        // A failed statement inside a transaction rolls it back, and the connection goes on.
        let err = db
            .transaction(true, |db| -> Result<(), DbError> {
                db.execute("INSERT INTO t (i) VALUES (?)", args![8i64])?;
                db.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
        let n = db
            .query_row("SELECT COUNT(*) FROM t", &[], |r| r.get::<i64>(0))
            .unwrap();
        assert_eq!(n, Some(1));
        let err = db
            .query_row("SELECT SUM(i) FROM t", &[], |r| r.get::<i64>(0))
            .unwrap_err();
        assert!(err.to_string().contains("cast it"), "{err}");
    }

    #[test]
    fn postgres_works_from_every_kind_of_thread() {
        let url = PgUrl::parse(&testing::database(), None).unwrap();
        let pool = PgPool::open(url).unwrap();
        let one = |pool: &PgPool| {
            let mut conn = pool.get().unwrap();
            let mut n = 0;
            Db::Postgres(&mut conn)
                .query_each("SELECT 1::bigint UNION ALL SELECT 2", &[], &mut |r| {
                    n += r.get::<i64>(0)?;
                    Ok(())
                })
                .unwrap();
            n
        };
        assert_eq!(one(&pool), 3);
        // A worker of a multi-threaded runtime (the gateway's request path), and its blocking pool.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let p = pool.clone();
        assert_eq!(rt.block_on(async move { one(&p) }), 3);
        let p = pool.clone();
        let n =
            rt.block_on(async move { tokio::task::spawn_blocking(move || one(&p)).await.unwrap() });
        assert_eq!(n, 3);
        // A current-thread runtime (`#[tokio::test]`).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let p = pool.clone();
        assert_eq!(rt.block_on(async move { one(&p) }), 3);
    }
}
