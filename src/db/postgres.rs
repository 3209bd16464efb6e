//! [`Db`](super::Db) on PostgreSQL: the database URL (its password never shown), connections
//! verified by TLS, a pool of idle connections, statements prepared once per connection with
//! the `?` placeholders numbered, and values bound and read as the five storage classes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, Config, Statement};
use bytes::BytesMut;

use super::{DbError, Param, Row, ValueRef};

/// How a [`postgres::Error`](::postgres::Error) reads in ztk's messages: the server's own
/// message and its code, or the client's reason (the URL's password is never part of it).
pub(super) fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "PostgreSQL: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => match std::error::Error::source(e) {
            Some(source) => format!("PostgreSQL: {e}: {source}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

/// Whether the connection to the server verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable`: plain TCP (a loopback or private network).
    Disable,
    /// `sslmode=verify-full` (the default): TLS, the certificate checked against the system's
    /// roots or `sslrootcert`, and the host name against the certificate.
    VerifyFull { root_cert: Option<PathBuf> },
}

/// A `postgresql://` URL: where the database is and how to sign in. Its `Display` and `Debug`
/// never show the password.
#[derive(Clone)]
pub struct PgUrl {
    config: Config,
    tls: Tls,
    shown: String,
    own_password: bool,
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

/// Runs `f`, which blocks on the synchronous client (it drives a runtime of its own), where
/// that is allowed: as is off any tokio runtime (the writer's thread, a blocking task); on a
/// worker of the gateway's multi-threaded runtime through `block_in_place` (the worker hands
/// its other tasks on meanwhile); in a current-thread runtime on a thread of its own.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// Whether `url` names a PostgreSQL database (rather than a SQLite file).
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgresql://") || url.starts_with("postgres://")
}

impl PgUrl {
    /// Parses `url`. Without a password in it, `password_file` (its first line) or the
    /// `PGPASSFILE` file supplies one. `sslmode` is `verify-full` (the default) or `disable`:
    /// the modes that encrypt without checking whom they talk to are refused.
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<PgUrl, DbError> {
        if !is_url(url) {
            return Err(DbError::Invalid(
                "a database URL begins with postgresql:// (postgresql://USER@HOST:5432/DB?sslmode=verify-full)".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut mode = "verify-full".to_string();
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => mode = v.to_string(),
                "sslrootcert" => root_cert = Some(PathBuf::from(decode(v))),
                _ => kept.push(pair),
            }
        }
        let tls = match mode.as_str() {
            "verify-full" => Tls::VerifyFull { root_cert },
            "disable" => Tls::Disable,
            other => {
                return Err(DbError::Invalid(format!(
                    "sslmode={other} is not supported: ztk checks whom it talks to; use sslmode=verify-full \
                     (with sslrootcert=FILE for a private CA) or sslmode=disable on a loopback or private network"
                )))
            }
        };
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // tokio-postgres's own parser takes the URL without the TLS settings it does not know;
        // its errors never quote the URL.
        let mut config = Config::from_str(&rest)
            .map_err(|e| DbError::Invalid(format!("invalid database URL: {e}")))?;
        if config.get_user().is_none() {
            return Err(DbError::Invalid(
                "the database URL names no user: postgresql://USER@HOST:5432/DB".into(),
            ));
        }
        let mut shown = format!(
            "postgresql://{}@{}",
            config.get_user().unwrap_or_default(),
            hosts(&config)
        );
        if let Some(db) = config.get_dbname() {
            shown.push('/');
            shown.push_str(db);
        }
        let own_password = config.get_password().is_some();
        if !own_password {
            let password = match password_file {
                Some(file) => Some(read_password_file(file)?),
                None => pgpass(&config)?,
            };
            if let Some(password) = password {
                config.password(password);
            }
        }
        Ok(PgUrl {
            config,
            tls,
            shown,
            own_password,
        })
    }

    /// Whether the URL itself held a password (not one from a file).
    pub fn has_own_password(&self) -> bool {
        self.own_password
    }

    /// A connection to the database.
    pub fn connect(&self) -> Result<PgConn, DbError> {
        off_runtime(|| self.connect_here())
    }

    fn connect_here(&self) -> Result<PgConn, DbError> {
        let client = match &self.tls {
            Tls::Disable => self.config.connect(::postgres::NoTls)?,
            Tls::VerifyFull { root_cert } => {
                let roots = match root_cert {
                    Some(file) => crate::tls::Roots::Pem(std::fs::read(file).map_err(|e| {
                        DbError::Invalid(format!(
                            "could not read sslrootcert {}: {e}",
                            file.display()
                        ))
                    })?),
                    None => crate::tls::Roots::System,
                };
                let config = crate::tls::client_config(&roots, None)
                    .map_err(|e| DbError::Invalid(format!("database TLS: {e}")))?;
                self.config
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(config))?
            }
        };
        Ok(PgConn {
            client: std::mem::ManuallyDrop::new(client),
            statements: HashMap::new(),
        })
    }
}

fn hosts(config: &Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                ::postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                ::postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

fn read_password_file(file: &Path) -> Result<String, DbError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        DbError::Invalid(format!(
            "could not read the database password file {}: {e}",
            file.display()
        ))
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The password for `config` from the file `PGPASSFILE` names (`host:port:db:user:password`
/// lines, `*` matching anything), as libpq reads it.
fn pgpass(config: &Config) -> Result<Option<String>, DbError> {
    let Some(file) = std::env::var_os("PGPASSFILE") else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DbError::Invalid(format!(
                "could not read PGPASSFILE {}: {e}",
                Path::new(&file).display()
            )))
        }
    };
    let host = match config.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config
        .get_dbname()
        .unwrap_or(config.get_user().unwrap_or_default());
    let user = config.get_user().unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], &host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

/// A `.pgpass` line's fields: `:` separates them, `\:` and `\\` escape.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// `?` placeholders as PostgreSQL's `$1`, `$2` (and `?N` as `$N`), outside quoted text.
pub fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&format!("${next}"));
                } else {
                    next = next.max(digits.parse().unwrap_or(0));
                    out.push('$');
                    out.push_str(&digits);
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// A value bound to a PostgreSQL parameter, converted to the type the statement gives it.
#[derive(Debug)]
struct Arg<'a>(ValueRef<'a>);

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                _ => i.to_string().as_str().to_sql(ty, out),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            ValueRef::Text(t) => std::str::from_utf8(t)?.to_sql(ty, out),
            ValueRef::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A row callback carried to the thread that runs the query: only in a current-thread runtime
/// is that another thread, which the caller waits for, so the callback is never used by two
/// threads at once.
struct SendPtr<'a>(&'a mut dyn FnMut(&Row) -> Result<(), DbError>);
// Safety: see above; the caller is blocked in `off_runtime` while the other thread uses it.
unsafe impl Send for SendPtr<'_> {}

/// A PostgreSQL connection and the statements prepared on it.
pub struct PgConn {
    /// Dropped by hand (see `Drop`): closing it blocks on the client's own runtime.
    pub(crate) client: std::mem::ManuallyDrop<Client>,
    statements: HashMap<String, Statement>,
}

impl Drop for PgConn {
    /// Closing the synchronous client blocks on its runtime, which panics when the last
    /// reference goes on a task of the gateway's runtime (a pool dropped as `start` fails):
    /// closed where blocking is allowed.
    fn drop(&mut self) {
        self.statements.clear();
        // Safety: the field is never used again; this is its only take.
        let client = unsafe { std::mem::ManuallyDrop::take(&mut self.client) };
        off_runtime(move || drop(client));
    }
}

/// Prepared statements kept per connection; past this many (filters make new SQL) they are
/// all dropped and prepared again as used.
const STATEMENTS: usize = 256;

impl PgConn {
    fn prepared(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        if self.statements.len() >= STATEMENTS {
            self.statements.clear();
        }
        let statement = self.client.prepare(&number_placeholders(sql))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64, DbError> {
        let args: Vec<Arg> = params.iter().map(|p| Arg(p.value())).collect();
        off_runtime(|| {
            let statement = self.prepared(sql)?;
            let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
            Ok(self.client.execute(&statement, &refs)?)
        })
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        off_runtime(|| Ok(self.client.batch_execute(sql)?))
    }

    pub(super) fn query_each(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&Row) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        use ::postgres::fallible_iterator::FallibleIterator;
        let args: Vec<Arg> = params.iter().map(|p| Arg(p.value())).collect();
        let mut each = SendPtr(each);
        off_runtime(move || {
            let each = &mut each;
            let statement = self.prepared(sql)?;
            let mut rows = self.client.query_raw(&statement, args.iter())?;
            while let Some(row) = rows.next()? {
                (each.0)(&Row::Postgres(&row))?;
            }
            Ok(())
        })
    }

    /// Binary `COPY` of rows into `target` (`table (columns)`): `values` holds the rows one
    /// after the other, `types` the columns' types. The fastest way in for many rows: no
    /// statement to parse and no parameters to bind per row.
    pub fn copy_in(
        &mut self,
        target: &str,
        types: &[Type],
        values: &[&dyn Param],
    ) -> Result<u64, DbError> {
        let width = types.len().max(1);
        let rows: Vec<Vec<Arg>> = values
            .chunks(width)
            .map(|row| row.iter().map(|p| Arg(p.value())).collect())
            .collect();
        off_runtime(|| {
            let writer = self
                .client
                .copy_in(&format!("COPY {target} FROM STDIN (FORMAT binary)"))?;
            let mut writer = ::postgres::binary_copy::BinaryCopyInWriter::new(writer, types);
            for row in &rows {
                writer.write_raw(row.iter())?;
            }
            Ok(writer.finish()?)
        })
    }

    /// The underlying client, for what only PostgreSQL has (`LISTEN`, `COPY`).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

pub(super) fn value(row: &::postgres::Row, i: usize) -> Result<ValueRef<'_>, DbError> {
    let column = row
        .columns()
        .get(i)
        .ok_or_else(|| DbError::Invalid(format!("no column {i}")))?;
    let ty = column.type_();
    let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
    Ok(match *ty {
        Type::INT8 => int(row.try_get::<_, Option<i64>>(i)?),
        Type::INT4 => int(row.try_get::<_, Option<i32>>(i)?.map(i64::from)),
        Type::INT2 => int(row.try_get::<_, Option<i16>>(i)?.map(i64::from)),
        Type::BOOL => int(row.try_get::<_, Option<bool>>(i)?.map(i64::from)),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(ValueRef::Null, ValueRef::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map_or(ValueRef::Null, |f| ValueRef::Real(f64::from(f))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
            .try_get::<_, Option<&str>>(i)?
            .map_or(ValueRef::Null, |t| ValueRef::Text(t.as_bytes())),
        Type::BYTEA => row
            .try_get::<_, Option<&[u8]>>(i)?
            .map_or(ValueRef::Null, ValueRef::Blob),
        _ => {
            return Err(DbError::Invalid(format!(
                "column {i} ({}) has type {ty}, which ztk does not read: cast it to bigint, text or bytea",
                column.name()
            )))
        }
    })
}

/// Connections to one database: idle ones are kept for the next user (opening one costs a
/// TLS handshake and a sign-in).
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    url: PgUrl,
    idle: Mutex<Vec<PgConn>>,
}

/// Idle connections kept at most.
const IDLE: usize = 8;

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgPool({})", self.inner.url)
    }
}

impl PgPool {
    /// A pool for `url`; connects once to check that the database answers.
    pub fn open(url: PgUrl) -> Result<PgPool, DbError> {
        let first = url.connect()?;
        Ok(PgPool {
            inner: Arc::new(PoolInner {
                url,
                idle: Mutex::new(vec![first]),
            }),
        })
    }

    pub fn url(&self) -> &PgUrl {
        &self.inner.url
    }

    /// An idle connection, or a new one.
    pub fn get(&self) -> Result<PooledPg, DbError> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match idle {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.inner.url.connect()?,
        };
        Ok(PooledPg {
            conn: Some(conn),
            pool: self.inner.clone(),
        })
    }
}

/// A connection from [`PgPool::get`]; back to the pool when dropped (if still open).
pub struct PooledPg {
    conn: Option<PgConn>,
    pool: Arc<PoolInner>,
}

impl PooledPg {
    /// Keeps the connection for good (a writer thread).
    pub fn detach(mut self) -> PgConn {
        self.conn.take().expect("a pooled connection is taken once")
    }
}

impl std::ops::Deref for PooledPg {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn
            .as_ref()
            .expect("a pooled connection is taken once")
    }
}

impl std::ops::DerefMut for PooledPg {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("a pooled connection is taken once")
    }
}

impl Drop for PooledPg {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }
}

/// Applies the numbered migrations of `component` not yet applied, each in its own transaction.
/// Several gateways may start at once: each step takes an advisory lock first and re-reads the
/// version, so a step is applied exactly once. A database migrated by a newer ztk is refused.
pub fn migrate(
    conn: &mut PgConn,
    component: &str,
    migrations: &[&str],
) -> Result<(), MigrateError> {
    off_runtime(|| migrate_here(conn, component, migrations))
}

fn migrate_here(
    conn: &mut PgConn,
    component: &str,
    migrations: &[&str],
) -> Result<(), MigrateError> {
    conn.client.batch_execute(
        "CREATE TABLE IF NOT EXISTS ztk_schema (component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    )
    .or_else(|e| {
        // Two gateways creating it at the same moment: the loser sees a unique violation.
        if e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION) {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    let known = migrations.len() as i64;
    for (i, sql) in migrations.iter().enumerate() {
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&component])?;
        let version: i64 = tx
            .query_opt(
                "SELECT version FROM ztk_schema WHERE component = $1",
                &[&component],
            )?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if version > known {
            return Err(MigrateError::TooNew {
                found: version,
                known,
            });
        }
        if version > i as i64 {
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO ztk_schema (component, version) VALUES ($1, $2) \
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            &[&component, &((i + 1) as i64)],
        )?;
        tx.commit()?;
    }
    // Nothing to apply: still refuse a newer schema.
    let version: i64 = conn
        .client
        .query_opt(
            "SELECT version FROM ztk_schema WHERE component = $1",
            &[&component],
        )?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if version > known {
        return Err(MigrateError::TooNew {
            found: version,
            known,
        });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the database was migrated by a newer ztk (schema {found}, this ztk knows {known}); upgrade ztk")]
    TooNew { found: i64, known: i64 },
}

impl From<::postgres::Error> for MigrateError {
    fn from(e: ::postgres::Error) -> Self {
        MigrateError::Db(DbError::Postgres(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            number_placeholders("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a >= ?1 LIMIT ?2"),
            "SELECT * FROM t WHERE a >= $1 LIMIT $2"
        );
    }

    #[test]
    fn urls_never_show_their_password() {
        let url = PgUrl::parse(
            "postgresql://ztk:s3cret@db.example:5433/audit?sslmode=disable",
            None,
        )
        .unwrap();
        assert_eq!(url.to_string(), "postgresql://ztk@db.example:5433/audit");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.tls, Tls::Disable);
        let url = PgUrl::parse("postgresql://ztk@db/audit", None).unwrap();
        assert!(matches!(url.tls, Tls::VerifyFull { root_cert: None }));
        for bad in [
            "postgresql://ztk:pw@db/audit?sslmode=require",
            "postgresql://ztk:pw@db/audit?sslmode=prefer",
        ] {
            let err = PgUrl::parse(bad, None).unwrap_err().to_string();
            assert!(err.contains("verify-full") && !err.contains("pw"), "{err}");
        }
        let err = PgUrl::parse("mysql://x", None).unwrap_err().to_string();
        assert!(err.contains("postgresql://"), "{err}");
    }

    #[test]
    fn passwords_come_from_a_file_when_the_url_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let url = PgUrl::parse("postgresql://ztk@db/audit", Some(&file)).unwrap();
        assert_eq!(url.config.get_password(), Some(&b"from-file"[..]));
        assert_eq!(
            split_pgpass(r"db:5432:audit:ztk:a\:b\\c"),
            ["db", "5432", "audit", "ztk", r"a:b\c"]
        );
    }

    /// A gateway whose start fails after opening its stores drops their pools on a task of its
    /// runtime: closing the connections there must not panic (seen in CI: the panic hid the
    /// error the gateway was about to print).
    #[test]
    fn connections_dropped_on_a_runtime_close_without_panicking() {
        let url = PgUrl::parse(&crate::db::testing::database(), None).unwrap();
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for runtime in [&multi, &current] {
            let (pool, conn) = (PgPool::open(url.clone()).unwrap(), url.connect().unwrap());
            let pooled = pool.get().unwrap();
            runtime.block_on(async move {
                drop(pooled);
                drop(conn);
                drop(pool);
            });
        }
        // The server saw them go: only this test's own check is left on its database.
        let mut check = url.connect().unwrap();
        let name = url.config.get_dbname().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n: i64 = check
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&name],
                )
                .unwrap()
                .get(0);
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} connections left open"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn verify_full_checks_the_servers_certificate_and_name() {
        let plain = crate::db::testing::database();
        let ca = crate::db::testing::ca_file();
        let base = plain.trim_end_matches("?sslmode=disable");
        let url = PgUrl::parse(
            &format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None,
        )
        .unwrap();
        let mut conn = url.connect().expect("a verified TLS connection");
        let ssl: bool = conn
            .client()
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(ssl, "the connection is encrypted");
        // Another CA: refused.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.pem");
        std::fs::write(
            &other,
            crate::tls::Ca::generate("other").unwrap().cert_pem(),
        )
        .unwrap();
        let url = PgUrl::parse(
            &format!("{base}?sslmode=verify-full&sslrootcert={}", other.display()),
            None,
        )
        .unwrap();
        let err = url
            .connect()
            .err()
            .expect("an unknown CA is refused")
            .to_string();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        // The right CA but another name (the certificate is for 127.0.0.1 and localhost).
        // (`hostaddr`: the same server, reached by address, checked against another name.)
        let renamed = base.replacen("127.0.0.1", "db.example", 1);
        let url = PgUrl::parse(
            &format!(
                "{renamed}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
            None,
        )
        .unwrap();
        let err = url
            .connect()
            .err()
            .expect("another name is refused")
            .to_string();
        assert!(
            err.to_lowercase().contains("certificate") || err.contains("name"),
            "{err}"
        );
    }
}
