//! SQLite, the embedded backend of every audit store (the client's and, today, the gateway's):
//! opening a connection with the settings every ztk connection uses (WAL, busy timeout, 0600
//! files), the numbered migrations, and the pool of spare connections. The rules of the store
//! (the write sequence, the chain, the batch writer, paging) are in `store`, `chain` and
//! `ingest`; issue 25 adds PostgreSQL beside this module.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

#[derive(Debug, Default)]
pub(super) struct Spares {
    pub(super) read: Option<Connection>,
    pub(super) write: Option<Connection>,
}

/// A connection from `AuditStore::connect`. Dropped outside a transaction, it goes back to the
/// store's spares (when that slot is free) instead of closing.
pub struct Pooled {
    pub(super) conn: Option<Connection>,
    pub(super) spare: Arc<Mutex<Spares>>,
}

impl Pooled {
    /// Keeps the connection for good (a writer thread, a long-lived ingest connection).
    pub fn detach(mut self) -> Connection {
        self.conn.take().expect("a pooled connection is taken once")
    }
}

impl std::ops::Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled connection is taken once")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a pooled connection is taken once")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit() {
            return;
        }
        let read_only = conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let slot = if read_only {
            &mut spare.read
        } else {
            &mut spare.write
        };
        if slot.is_none() {
            *slot = Some(conn);
        }
    }
}

/// Opens a connection with the settings every ztk connection uses.
pub fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    if !read_only && !path.exists() {
        // Created 0600 before SQLite creates it (0644 less the umask): SQLite then gives the
        // `-wal` and `-shm` files it makes beside it the same mode.
        let _ = crate::fsutil::private_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path);
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The last connection to close would checkpoint the WAL into the database and fsync it: a
    // `ztk kubectl` run opens and closes several, and each checkpoint cost milliseconds before
    // kubectl could start. SQLite's automatic checkpoint (every 1,000 WAL pages, run by the
    // committing writer) keeps the WAL bounded instead; nothing committed is less durable.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    if !read_only {
        set_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        #[cfg(unix)]
        {
            // A store made by an older ztk: 0600 for it and its WAL and shared memory too.
            use std::os::unix::fs::PermissionsExt;
            let shared = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
            if shared {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
    }
    Ok(conn)
}

/// How long a connection waits for another one's lock before it reports the store busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts the database in WAL mode (a no-op once it is). Switching a new database takes an
/// exclusive lock, and SQLite answers "database is locked" at once, without waiting, when
/// another process holds any lock on it: as when kubectl's first `ztk credential` records its
/// command while starting `ztk proxy`, which opens the same new store. That proxy then served
/// without a local audit record. Retried here for as long as any other lock is waited for.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// Applies the migrations not yet applied, each in its own transaction. Several processes may
/// open a new store at once (the exec plugin and the proxy it starts): each step takes the write
/// lock first and re-reads the version, so a step is applied exactly once.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    migrate_then(conn, migrations, |_, _| Ok(()))
}

/// `migrate`, running `after(tx, i)` in the transaction of step `i`, after its SQL.
pub fn migrate_then(
    conn: &mut Connection,
    migrations: &[&str],
    after: impl Fn(&Connection, usize) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= migrations.len() as i64 {
        return Ok(());
    }
    for (i, sql) in migrations.iter().enumerate() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        after(&tx, i)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
