//! The SQLite audit store, used by the client (its local log) and by the gateway (the
//! authoritative log).
//!
//! Writes never run on the request path: relays hand records to a bounded channel, and one
//! writer thread commits them in batches, one transaction per batch. Reads open their own
//! connections (WAL lets them run beside the writer).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use uuid::Uuid;

use super::chain::{self, Kind};
use super::filter::Filter;
use crate::args;
use crate::db::{Db, DbError, Dialect, Param, PgConn, PgPool, PgUrl, Row, Value};

use super::model::{AccessMethod, ApiCall, CallRow, Command, CommandRow, Cursor, Page};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("audit store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit store {location}: {source}")]
    Db { location: String, source: DbError },
    #[error("audit store {location}: {source}")]
    Migrate {
        location: String,
        source: crate::db::postgres::MigrateError,
    },
    #[error("audit store {path} was written by a newer ztk (schema {found}, this ztk knows {known}); upgrade ztk")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Output(String),
    #[error("could not create the directory for {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start the {what} thread of the audit store {path}: {source}; the system may be out of threads or memory")]
    Thread {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many ran.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE api_calls (
    id TEXT PRIMARY KEY,
    time_us INTEGER NOT NULL,
    user TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    resource TEXT NOT NULL,
    subresource TEXT NOT NULL,
    name TEXT NOT NULL,
    api_group TEXT NOT NULL,
    api_version TEXT NOT NULL,
    verb TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    user_agent TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    kubectl_command TEXT NOT NULL,
    kubectl_session TEXT NOT NULL,
    command_id TEXT,
    request_id TEXT,
    access_method TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX api_calls_time ON api_calls(time_us);
CREATE INDEX api_calls_command ON api_calls(command_id);
CREATE INDEX api_calls_request ON api_calls(request_id);
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    started_us INTEGER NOT NULL,
    ended_us INTEGER,
    user TEXT NOT NULL,
    cluster TEXT NOT NULL,
    argv TEXT NOT NULL,
    command_line TEXT NOT NULL,
    exit_code INTEGER,
    api_calls INTEGER NOT NULL,
    access_method TEXT NOT NULL,
    cwd TEXT NOT NULL,
    host TEXT NOT NULL,
    shipped_us INTEGER
);
CREATE INDEX commands_started ON commands(started_us);
"#,
    r#"
-- The client's own measurement of calls the gateway also saw, shipped with their command.
CREATE TABLE client_timings (
    request_id TEXT PRIMARY KEY,
    command_id TEXT,
    duration_us INTEGER NOT NULL,
    status INTEGER NOT NULL
);
-- What administrators filter on, newest first.
CREATE INDEX api_calls_user_time ON api_calls(user, time_us);
CREATE INDEX api_calls_namespace_time ON api_calls(namespace, time_us);
CREATE INDEX api_calls_resource_time ON api_calls(resource, time_us);
CREATE INDEX api_calls_verb_time ON api_calls(verb, time_us);
CREATE INDEX api_calls_cluster_time ON api_calls(cluster, time_us);
CREATE INDEX commands_user_started ON commands(user, started_us);
-- The commands view checks each command's calls by these columns and sums their statuses:
-- covering them means those checks never read the table itself.
DROP INDEX api_calls_command;
CREATE INDEX api_calls_command ON api_calls(command_id, verb, status, namespace, resource, subresource);
"#,
    r#"
-- Write order: every insert or update of a record takes the next number of one store-wide
-- sequence, in the transaction that writes it. "Everything written after N" is then one index
-- range: what SIEM sinks, `audit tail` and the TUI's live refresh follow.
CREATE TABLE sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
ALTER TABLE api_calls ADD COLUMN seq INTEGER;
ALTER TABLE commands ADD COLUMN seq INTEGER;
CREATE TEMP TABLE numbered AS
    SELECT kind, id, ROW_NUMBER() OVER (ORDER BY t, id) AS n FROM (
        SELECT 'call' AS kind, id, time_us AS t FROM api_calls
        UNION ALL SELECT 'command', id, started_us FROM commands);
UPDATE api_calls SET seq = (SELECT n FROM temp.numbered WHERE kind = 'call' AND numbered.id = api_calls.id);
UPDATE commands SET seq = (SELECT n FROM temp.numbered WHERE kind = 'command' AND numbered.id = commands.id);
INSERT INTO sequence (id, last) SELECT 1, COUNT(*) FROM temp.numbered;
DROP TABLE temp.numbered;
CREATE UNIQUE INDEX api_calls_seq ON api_calls(seq);
CREATE UNIQUE INDEX commands_seq ON commands(seq);
"#,
    r#"
-- SIEM sinks (src/sinks): how far each configured sink has delivered (the last write sequence
-- number the receiver acknowledged) and how its last attempts went, for `ztk gateway sinks status`.
CREATE TABLE sink_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    last_success_us INTEGER,
    last_error TEXT,
    last_error_us INTEGER,
    updated_us INTEGER NOT NULL
);
"#,
    super::chain::MIGRATION,
    r#"
-- The client's outbox, per user: every record of USER written after shipped_seq (the write
-- sequence) is still to be shipped; the gateway's acknowledgement of a batch moves it forward.
-- A re-written record (a command's end, a stream's final record) takes a new seq, so it ships
-- again as an update. The shipping outcomes are kept for `ztk audit status`.
CREATE TABLE outbox (
    user TEXT PRIMARY KEY,
    shipped_seq INTEGER NOT NULL DEFAULT 0,
    last_attempt_us INTEGER,
    last_success_us INTEGER,
    last_error TEXT,
    last_error_us INTEGER
);
-- The gateway's copy of the clients' own records of their calls (client_timings held only
-- their durations): joined to the gateway's record by its request id. Not part of the write
-- sequence or the chain: the gateway's own records are the authoritative, chained ones.
CREATE TABLE client_calls (
    id TEXT PRIMARY KEY,
    time_us INTEGER NOT NULL DEFAULT 0,
    user TEXT NOT NULL DEFAULT '',
    cluster TEXT NOT NULL DEFAULT '',
    namespace TEXT NOT NULL DEFAULT '',
    resource TEXT NOT NULL DEFAULT '',
    subresource TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    api_group TEXT NOT NULL DEFAULT '',
    api_version TEXT NOT NULL DEFAULT '',
    verb TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    duration_us INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    user_agent TEXT NOT NULL DEFAULT '',
    source_ip TEXT NOT NULL DEFAULT '',
    kubectl_command TEXT NOT NULL DEFAULT '',
    kubectl_session TEXT NOT NULL DEFAULT '',
    command_id TEXT,
    request_id TEXT,
    access_method TEXT NOT NULL DEFAULT 'cli',
    decision TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
INSERT INTO client_calls (id, command_id, request_id, duration_us, status)
    SELECT request_id, command_id, request_id, duration_us, status FROM client_timings;
DROP TABLE client_timings;
"#,
    super::stats::MIGRATION,
    r#"
-- Why a command did not run or was stopped (a refused command line, a limit that killed it);
-- empty when it ran normally. Hashed by the chain only when set, so the commands written
-- before it keep their content hash (src/audit/chain.rs, COMMAND_FIELDS).
ALTER TABLE commands ADD COLUMN reason TEXT NOT NULL DEFAULT '';
"#,
    super::reconcile::MIGRATION,
    r#"
-- Which gateway delivers each sink, and until when (src/sinks: a lease, so that with several
-- gateways on one database each sink is delivered by one of them at a time).
ALTER TABLE sink_cursors ADD COLUMN lease_owner TEXT;
ALTER TABLE sink_cursors ADD COLUMN lease_until_us INTEGER;
"#,
    super::stats::BY_MIGRATION,
];

pub(super) const CALL_COLUMNS: &str = "c.id, c.time_us, c.user, c.cluster, c.namespace, c.resource, c.subresource, c.name, \
    c.api_group, c.api_version, c.verb, c.method, c.path, c.query, c.status, c.duration_us, c.bytes_in, \
    c.bytes_out, c.user_agent, c.source_ip, c.kubectl_command, c.kubectl_session, c.command_id, \
    c.request_id, c.access_method, c.decision, c.reason";

pub(super) const COMMAND_COLUMNS: &str =
    "id, started_us, ended_us, \"user\", cluster, argv, command_line, exit_code, \
    api_calls, access_method, cwd, host, reason";
/// How many columns `COMMAND_COLUMNS` names: a query's own columns after them start here.
pub(super) const COMMAND_COLUMN_COUNT: usize = 13;

/// Records handed to the writer thread.
enum WriteOp {
    Call(Box<ApiCall>),
    Command(Box<Command>),
    /// Answered once everything queued before it is committed.
    Flush(SyncSender<()>),
    /// Answered once the records queued before it are committed (true) or could not be (false,
    /// they are held and retried), for async callers that must wait for the disk.
    Commit(tokio::sync::oneshot::Sender<bool>),
}

use super::sqlite::Spares;
pub use super::sqlite::{migrate, migrate_then, open_connection, Pooled};

/// A handle on an audit store: a SQLite file, or a PostgreSQL database shared by gateways.
#[derive(Clone, Debug)]
pub struct AuditStore {
    /// The SQLite file; for PostgreSQL, where records the store cannot take are spilled (its
    /// `unwritten-*.ndjson` files go beside it).
    path: PathBuf,
    /// Connections back from use, one read-only and one read-write, for the next `connect`:
    /// opening a connection parses the whole schema (about 0.3 ms), and a `ztk kubectl` run
    /// would open five in a row, its shipper two per batch.
    spare: Arc<Mutex<Spares>>,
    /// The database, when it is PostgreSQL.
    pg: Option<PgPool>,
}

/// The batch writer's connection.
pub(crate) enum WriterConn {
    Sqlite(Connection),
    Postgres(Box<PgConn>),
}

impl WriterConn {
    pub(crate) fn db(&mut self) -> Db<'_> {
        match self {
            WriterConn::Sqlite(c) => Db::Sqlite(c),
            WriterConn::Postgres(c) => Db::Postgres(c),
        }
    }
}

/// WAL pages (4 KB) after which a commit wakes the background checkpointer.
const CHECKPOINT_PAGES: std::ffi::c_int = 2048;
/// WAL pages after which the writer checkpoints itself (SQLite's own default limit for the WAL
/// of a busy writer was 8192 here too).
const CHECKPOINT_INLINE_PAGES: std::ffi::c_int = 8192;
/// The checkpointer's pause after each run, so that a writer committing every few
/// milliseconds does not make it run (and sync the files) as often.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);

/// The background checkpointer of `checkpoint_in_background`: runs until the writer's
/// connection (and with it the hook holding the sender) is gone.
fn checkpoint_loop(store: &AuditStore, woken: std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    while woken.recv().is_ok() {
        if conn.is_none() {
            match store.connect(false) {
                Ok(c) => conn = Some(c.detach()),
                Err(err) => tracing::warn!(
                    "could not open the store to checkpoint it: {err}; the ingest connection checkpoints itself meanwhile"
                ),
            }
        }
        if let Some(c) = &conn {
            // PASSIVE: copies what no reader still needs, without waiting for anyone.
            if let Err(err) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(
                    "could not checkpoint {}: {err}; retrying with a new connection after the next batch",
                    store.path.display()
                );
                conn = None;
            }
        }
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}

impl AuditStore {
    /// Opens (creating and migrating when needed) the store at `path`.
    pub fn open(path: &Path) -> Result<AuditStore, StoreError> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir).map_err(|source| StoreError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let store = AuditStore {
            path: path.to_path_buf(),
            spare: Arc::default(),
            pg: None,
        };
        let mut conn = store.connect(false)?;
        // The chain's migration journals the records already there, in its own transaction.
        migrate_then(&mut conn, MIGRATIONS, |tx, step| {
            if MIGRATIONS[step] == chain::MIGRATION {
                chain::adopt_existing(tx).map_err(rusqlite::Error::from)?;
            }
            // The clients' calls stored before rollups existed (the gateway's own calls are
            // rolled up from the write sequence, from 0).
            if MIGRATIONS[step] == super::stats::MIGRATION {
                super::stats::adopt_client_calls(tx)?;
            }
            Ok(())
        })
        .map_err(|e| store.err(e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| store.err(e))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: store.path.clone(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        // A full request-id index costs each written record a b-tree insert; the only lookup by
        // request id (a gateway's reconciling, for calls without a command) has a partial index
        // of its own (`reconcile::UNCOMMANDED_INDEX`). Not a numbered migration: older
        // binaries (a rollback, an old `ztk credential` named in a kubeconfig) keep opening the
        // store, and they never used the index either.
        conn.execute_batch("DROP INDEX IF EXISTS api_calls_request")
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// Opens (creating and migrating when needed) the audit store in the PostgreSQL database
    /// at `url`. Records it cannot take when its writer must stop are spilled beside
    /// `spill_base` (a path in the gateway's data dir).
    pub fn open_postgres(url: PgUrl, spill_base: &Path) -> Result<AuditStore, StoreError> {
        let location = url.to_string();
        let db_err = |source| StoreError::Db {
            location: location.clone(),
            source,
        };
        let pool = PgPool::open(url).map_err(db_err)?;
        let mut conn = pool.get().map_err(db_err)?;
        crate::db::postgres::migrate(
            &mut conn,
            super::postgres::COMPONENT,
            super::postgres::MIGRATIONS,
        )
        .map_err(|source| StoreError::Migrate {
            location: location.clone(),
            source,
        })?;
        Ok(AuditStore {
            path: spill_base.to_path_buf(),
            spare: Arc::default(),
            pg: Some(pool),
        })
    }

    /// The SQLite file (for PostgreSQL, the base of spill files: see [`AuditStore::location`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the store is, for messages: the file, or the database URL without its password.
    pub fn location(&self) -> String {
        match &self.pg {
            Some(pool) => pool.url().to_string(),
            None => self.path.display().to_string(),
        }
    }

    /// Which SQL the store speaks.
    pub fn dialect(&self) -> Dialect {
        match self.pg {
            Some(_) => Dialect::Postgres,
            None => Dialect::Sqlite,
        }
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn db_err(&self, source: DbError) -> StoreError {
        match source {
            DbError::Sqlite(source) => self.err(source),
            source => StoreError::Db {
                location: self.location(),
                source,
            },
        }
    }

    /// Runs `f` on a connection of either backend (a spare one when there is).
    pub(crate) fn with_db<T>(
        &self,
        read_only: bool,
        f: impl FnOnce(&mut Db) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        match &self.pg {
            Some(pool) => {
                let mut conn = pool.get().map_err(|e| self.db_err(e))?;
                f(&mut Db::Postgres(&mut conn)).map_err(|e| self.db_err(e))
            }
            None => {
                let conn = self.connect(read_only)?;
                f(&mut Db::Sqlite(&conn)).map_err(|e| self.db_err(e))
            }
        }
    }

    /// A connection, read-only or not: a spare one when there is, else a new one.
    pub(super) fn connect(&self, read_only: bool) -> Result<Pooled, StoreError> {
        if self.pg.is_some() {
            return Err(StoreError::Output(format!(
                "{} is a PostgreSQL database; this part of ztk works on a SQLite store only",
                self.location()
            )));
        }
        let spare = {
            let mut spares = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if read_only {
                spares.read.take()
            } else {
                spares.write.take()
            }
        };
        let conn = match spare {
            Some(conn) => conn,
            None => open_connection(&self.path, read_only).map_err(|e| self.err(e))?,
        };
        Ok(Pooled {
            conn: Some(conn),
            spare: self.spare.clone(),
        })
    }

    /// Opens a write connection for later if there is no spare one: a `ztk kubectl` run does so
    /// while kubectl starts, so that shipping at its end does not wait for an open.
    pub fn keep_spare(&self) -> Result<(), StoreError> {
        // Back to the spares when dropped.
        self.connect(false).map(drop)
    }

    /// Moves the WAL checkpoints of `conn`, a connection that writes large transactions back to
    /// back, to a thread of their own. A checkpoint copies the WAL's pages into the database
    /// file; run by the committing connection (SQLite's autocheckpoint), it held that writer for
    /// as long. Past `CHECKPOINT_PAGES` a commit wakes the checkpointer instead. The WAL starts
    /// over from its beginning only when a checkpoint has reached its end before the next write
    /// begins, which a checkpointer running beside a busy writer may never see: past
    /// `CHECKPOINT_INLINE_PAGES` the writer checkpoints itself, which then copies only what the
    /// checkpointer has not, and the WAL file stays bounded as before.
    pub(crate) fn checkpoint_in_background(&self, conn: &mut Connection) -> Result<(), StoreError> {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let store = self.clone();
        std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || checkpoint_loop(&store, woken))
            .map_err(|e| StoreError::Thread {
                what: "checkpoint",
                path: self.path.clone(),
                source: e,
            })?;
        // Replaces SQLite's autocheckpoint, itself a WAL hook. The commit has happened whatever
        // the hook returns, so a failed (or busy) inline checkpoint is left for the next commit.
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages >= CHECKPOINT_INLINE_PAGES {
                let _ = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE);
            } else if pages >= CHECKPOINT_PAGES {
                // Full: the checkpointer is already woken.
                let _ = wake.try_send(());
            }
            Ok(())
        }))
        .map_err(|e| self.err(e))
    }

    /// Starts the batch writer. Records sent to the returned sink are committed by one thread;
    /// `AuditWriter::close` flushes everything still queued.
    pub fn start_writer(&self, capacity: usize) -> Result<(AuditSink, AuditWriter), StoreError> {
        self.start_writer_with(capacity, WriterConfig::default())
    }

    /// `start_writer` with a choice of what happens to records while the store fails.
    pub fn start_writer_with(
        &self,
        capacity: usize,
        config: WriterConfig,
    ) -> Result<(AuditSink, AuditWriter), StoreError> {
        let conn = self.writer_connection()?;
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let store = self.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(conn, rx, &thread_stats, &store, config))
            .map_err(|e| StoreError::Thread {
                what: "writer",
                path: self.path.clone(),
                source: e,
            })?;
        Ok(sink_and_writer(tx, stats, thread))
    }

    /// The batch writer's own connection.
    /// The ingest's long-lived connection: for SQLite, with a bigger page cache and its WAL
    /// copied into the database by another thread while the next batch goes in (batches are
    /// large and sequential).
    pub(crate) fn ingest_connection(&self) -> Result<WriterConn, StoreError> {
        if let Some(pool) = &self.pg {
            let conn = pool.get().map_err(|e| self.db_err(e))?;
            return Ok(WriterConn::Postgres(Box::new(conn.detach())));
        }
        let mut conn = self.connect(false)?.detach();
        conn.execute_batch("PRAGMA cache_size = -65536;")
            .map_err(|e| self.err(e))?;
        self.checkpoint_in_background(&mut conn)?;
        Ok(WriterConn::Sqlite(conn))
    }

    fn writer_connection(&self) -> Result<WriterConn, StoreError> {
        if let Some(pool) = &self.pg {
            let conn = pool.get().map_err(|e| self.db_err(e))?;
            return Ok(WriterConn::Postgres(Box::new(conn.detach())));
        }
        let conn = self.connect(false)?.detach();
        // A statement inside a multi-record transaction keeps a statement journal (the pages it
        // changes, in case it must be undone alone): in a temp file by default, which cost ~40 KB
        // of writes per record. The writer's statements are small; in memory it is a copy. (Not
        // for every connection: a migration's temporary tables can be as large as the store.)
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| self.err(e))?;
        Ok(WriterConn::Sqlite(conn))
    }

    /// Inserts or updates commands in one transaction (a repeated id updates the row, so a
    /// re-sent record is stored once).
    pub fn upsert_commands(&self, commands: &[Command]) -> Result<(), StoreError> {
        self.with_db(false, |db| {
            db.transaction(true, |tx| {
                let mut journal = chain::Appender::default();
                for cmd in commands {
                    let seq = next_seq(tx)?;
                    upsert_command(tx, &mut journal, seq, cmd)?;
                }
                Ok(())
            })
        })
    }

    /// How many calls match `filter` (ignoring its limit), for progress bars.
    pub fn count_calls(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (clause, values) = filter.call_clause_for(self.dialect());
        let join = if filter.commands.is_empty() {
            ""
        } else {
            "LEFT JOIN commands cmd ON cmd.id = c.command_id AND cmd.user = c.user"
        };
        let sql = format!("SELECT COUNT(*) FROM api_calls c {join} WHERE {clause}");
        self.count(&sql, &values)
    }

    pub fn count_commands(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (clause, values) = filter.command_clause_for(self.dialect());
        let sql = format!("SELECT COUNT(*) FROM commands cmd WHERE {clause}");
        self.count(&sql, &values)
    }

    fn count(&self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        self.with_db(true, |db| {
            db.query_row(sql, &params, |r| r.get::<i64>(0))
                .map(|n| n.unwrap_or(0) as u64)
        })
    }

    /// The owners of the command ids used since `since_us` (commands started then, and the
    /// ids the gateway's own call records carry), with when each was used, at most `limit` of
    /// each, newest first: the gateway's table of command owners after a restart.
    pub fn command_owners_since(
        &self,
        since_us: i64,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, i64)>, StoreError> {
        let mut owners = Vec::new();
        for sql in [
            "SELECT id, \"user\", started_us FROM commands WHERE started_us >= ?1 \
             ORDER BY started_us DESC LIMIT ?2",
            "SELECT command_id, \"user\", time_us FROM api_calls \
             WHERE time_us >= ?1 AND command_id IS NOT NULL ORDER BY time_us DESC LIMIT ?2",
        ] {
            self.with_db(true, |db| {
                db.query_each(sql, args![since_us, limit as i64], &mut |r| {
                    if let Ok(id) = Uuid::parse_str(&r.text(0)?) {
                        owners.push((id, r.text(1)?, r.get(2)?));
                    }
                    Ok(())
                })
            })?;
        }
        Ok(owners)
    }

    pub fn command(&self, id: Uuid) -> Result<Option<Command>, StoreError> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?");
        self.with_db(true, |db| {
            db.query_row(&sql, args![id.to_string()], command_from_row)
        })
    }

    /// API calls matching `filter`, newest first, with the command line that caused each
    /// (up to `filter.limit`).
    pub fn list_calls(&self, filter: &Filter) -> Result<Vec<CallRow>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_call(filter, None, filter.limit, |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    /// One page of calls after `after` (keyset pagination: stable while new records arrive).
    pub fn query_calls(
        &self,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<CallRow>, StoreError> {
        let mut items = Vec::with_capacity(limit.min(10_000));
        self.for_each_call(filter, after, Some(limit), |row| {
            items.push(row);
            Ok(())
        })?;
        let next = (items.len() == limit)
            .then(|| {
                items.last().map(|r: &CallRow| Cursor {
                    time_us: r.call.time_us,
                    id: r.call.id.to_string(),
                })
            })
            .flatten();
        Ok(Page { items, next })
    }

    /// Streams the calls matching `filter`, newest first, to `f` without holding them all.
    pub fn for_each_call(
        &self,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: Option<usize>,
        f: impl FnMut(CallRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (clause, values) = filter.call_clause_for(self.dialect());
        let select = call_select();
        let keys = ("c.time_us", "c.id");
        self.stream(
            &select,
            clause,
            values,
            keys,
            after,
            limit,
            f,
            call_row_from,
        )
    }

    /// Runs `select WHERE clause` newest first by `keys` (time, id), after `after`, handing
    /// each row, as `map` reads it, to `f`.
    #[allow(clippy::too_many_arguments)]
    fn stream<T>(
        &self,
        select: &str,
        mut clause: String,
        mut values: Vec<Value>,
        (time, id): (&str, &str),
        after: Option<&Cursor>,
        limit: Option<usize>,
        mut f: impl FnMut(T) -> Result<(), StoreError>,
        map: impl Fn(&Row) -> Result<T, DbError>,
    ) -> Result<(), StoreError> {
        if let Some(cursor) = after {
            // `time < T OR (time = T AND id < I)`, written with a plain range first: given the
            // bare OR, SQLite (3.54) plans a MULTI-INDEX OR and sorts every older row — seconds
            // per page at a million rows — instead of walking the time index from T down.
            clause.push_str(&format!(" AND {time} <= ? AND ({time} < ? OR {id} < ?)"));
            values.push(Value::Integer(cursor.time_us));
            values.push(Value::Integer(cursor.time_us));
            values.push(Value::Text(cursor.id.clone()));
        }
        values.push(match limit {
            Some(l) => Value::Integer(l as i64),
            None => self.dialect().no_limit(),
        });
        let sql = format!("{select} WHERE {clause} ORDER BY {time} DESC, {id} DESC LIMIT ?");
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        // The caller's own error (a closed output, say) stops the query and is returned as is.
        let mut stopped = None;
        let result = self.with_db(true, |db| {
            db.query_each(&sql, &params, &mut |row| {
                f(map(row)?).map_err(|e| {
                    stopped = Some(e);
                    DbError::Stopped
                })
            })
        });
        match stopped {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// Commands matching `filter`, newest first, each with a summary of its calls.
    pub fn list_commands(&self, filter: &Filter) -> Result<Vec<CommandRow>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_command(filter, None, filter.limit, |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    pub fn query_commands(
        &self,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<CommandRow>, StoreError> {
        let mut items = Vec::with_capacity(limit.min(10_000));
        self.for_each_command(filter, after, Some(limit), |row| {
            items.push(row);
            Ok(())
        })?;
        let next = (items.len() == limit)
            .then(|| {
                items.last().map(|r: &CommandRow| Cursor {
                    time_us: r.command.started_us,
                    id: r.command.id.to_string(),
                })
            })
            .flatten();
        Ok(Page { items, next })
    }

    pub fn for_each_command(
        &self,
        filter: &Filter,
        after: Option<&Cursor>,
        limit: Option<usize>,
        f: impl FnMut(CommandRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let dialect = self.dialect();
        let (clause, values) = filter.command_clause_for(dialect);
        let select = format!(
            "SELECT {}, {} FROM commands cmd",
            qualified_command_columns(),
            status_summary(dialect)
        );
        let keys = ("cmd.started_us", "cmd.id");
        self.stream(
            &select,
            clause,
            values,
            keys,
            after,
            limit,
            f,
            command_row_from,
        )
    }

    /// The distinct users, clusters, namespaces, resources and verbs of the last `recent` calls
    /// written (a bounded read of the `seq` index, never a scan of the store): the values the
    /// console suggests in its filters.
    /// Values seen in the last `recent` calls (of `user` only, when given: what a user who may
    /// read only their own records is shown).
    pub fn recent_values(
        &self,
        recent: usize,
        user: Option<&str>,
    ) -> Result<RecentValues, StoreError> {
        if user == Some("") {
            // No user is no one's values (never everyone's).
            return Ok(RecentValues::default());
        }
        let from = match user {
            None => format!(
                "FROM api_calls{} ORDER BY seq DESC LIMIT ?1",
                self.dialect().indexed_by("api_calls_seq")
            ),
            Some(_) => format!(
                "FROM api_calls{} WHERE \"user\" = ?2 ORDER BY time_us DESC LIMIT ?1",
                self.dialect().indexed_by("api_calls_user_time")
            ),
        };
        let sql = format!(
            "WITH recent AS (SELECT \"user\", cluster, namespace, resource, verb {from}) \
             SELECT 0, \"user\" FROM recent GROUP BY \"user\" \
             UNION ALL SELECT 1, cluster FROM recent GROUP BY cluster \
             UNION ALL SELECT 2, namespace FROM recent GROUP BY namespace \
             UNION ALL SELECT 3, resource FROM recent GROUP BY resource \
             UNION ALL SELECT 4, verb FROM recent GROUP BY verb"
        );
        let mut values = RecentValues::default();
        self.with_db(true, |db| {
            let limit = recent as i64;
            let user = user.unwrap_or_default();
            let params = if user.is_empty() {
                args![limit]
            } else {
                args![limit, user]
            };
            db.query_each(&sql, params, &mut |r| {
                let value = r.text(1)?;
                if value.is_empty() {
                    return Ok(());
                }
                match r.get::<i64>(0)? {
                    0 => values.users.push(value),
                    1 => values.clusters.push(value),
                    2 => values.namespaces.push(value),
                    3 => values.resources.push(value),
                    _ => values.verbs.push(value),
                }
                Ok(())
            })
        })?;
        for list in values.lists_mut() {
            list.sort();
        }
        Ok(values)
    }

    /// Latency and activity statistics (`audit::stats`).
    pub fn stats(
        &self,
        query: &super::stats::StatsQuery,
    ) -> Result<super::stats::Stats, StoreError> {
        self.with_db(true, |db| {
            super::stats::stats(db, query, super::model::now_us())
        })
    }

    /// Rolls up the calls written since the last roll-up (`audit::stats::roll_up_all`).
    pub fn roll_up(&self) -> Result<usize, StoreError> {
        self.with_db(false, super::stats::roll_up_all)
    }

    /// The last number of the write sequence: every record written later has a greater `seq`.
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        self.with_db(true, |db| {
            db.query_row("SELECT last FROM sequence WHERE id = 1", &[], |r| r.get(0))
                .map(|last| last.unwrap_or(0))
        })
    }

    /// Records (calls and commands) written after sequence number `after` that match `filter`,
    /// in write order, at most `limit`, read from one snapshot. `through` says how far the
    /// scan is complete: every matching record up to it is in `records`, so a follower may
    /// continue from `through` even when the filter matched nothing.
    pub fn records_after(
        &self,
        after: i64,
        filter: &Filter,
        limit: usize,
    ) -> Result<SeqBatch, StoreError> {
        let dialect = self.dialect();
        let limit_value = Value::Integer(limit as i64);
        let calls_sql;
        let mut call_values;
        {
            let (clause, values) = filter.call_clause_for(dialect);
            call_values = values;
            call_values.insert(0, Value::Integer(after));
            call_values.push(limit_value.clone());
            calls_sql = format!(
                "SELECT {CALL_COLUMNS}, cmd.command_line, \
                 COALESCE(t.duration_us, CASE WHEN c.request_id = c.id THEN c.duration_us END), \
                 CASE WHEN c.request_id = c.id THEN NULL ELSE c.duration_us END, c.seq \
                 FROM api_calls c{} \
                 LEFT JOIN commands cmd ON cmd.id = c.command_id AND cmd.user = c.user \
                 LEFT JOIN client_calls t ON t.id = c.request_id \
                 WHERE c.seq > ? AND {clause} ORDER BY c.seq LIMIT ?",
                dialect.indexed_by("api_calls_seq")
            );
        }
        let commands_sql;
        let mut command_values;
        {
            let (clause, values) = filter.command_clause_for(dialect);
            command_values = values;
            command_values.insert(0, Value::Integer(after));
            command_values.push(limit_value);
            commands_sql = format!(
                "SELECT {}, {}, cmd.seq FROM commands cmd{} \
                 WHERE cmd.seq > ? AND {clause} ORDER BY cmd.seq LIMIT ?",
                qualified_command_columns(),
                status_summary(dialect),
                dialect.indexed_by("commands_seq")
            );
        }
        let call_params: Vec<&dyn Param> = call_values.iter().map(|v| v as &dyn Param).collect();
        let command_params: Vec<&dyn Param> =
            command_values.iter().map(|v| v as &dyn Param).collect();
        // One snapshot: the sequence's last number and both kinds of records as of one moment.
        let (last, mut records) = self.with_db(true, |db| {
            db.transaction(false, |tx| {
                let last: i64 = tx
                    .query_row("SELECT last FROM sequence WHERE id = 1", &[], |r| r.get(0))?
                    .unwrap_or(0);
                let mut records = tx.query_vec(&calls_sql, &call_params, |row| {
                    Ok(Sequenced {
                        seq: row.get(30)?,
                        record: Record::Call(call_row_from(row)?),
                    })
                })?;
                tx.query_each(&commands_sql, &command_params, &mut |row| {
                    records.push(Sequenced {
                        seq: row.get(COMMAND_COLUMN_COUNT + 1)?,
                        record: Record::Command(command_row_from(row)?),
                    });
                    Ok(())
                })?;
                Ok::<_, DbError>((last, records))
            })
        })?;
        records.sort_by_key(|r| r.seq);
        // Each kind was cut at `limit`: past the limit-th record of the merge, one kind may
        // be missing rows, so the scan is complete only up to there.
        let through = if records.len() >= limit {
            records.truncate(limit);
            records.last().map_or(after, |r| r.seq)
        } else {
            last.max(after)
        };
        Ok(SeqBatch { records, through })
    }

    /// Walks the store's chain (see `audit::chain`): every record that was changed, inserted or
    /// deleted outside ztk, and the signed checkpoints (against the `pinned` keys, when given).
    pub fn verify(&self, pinned: &[&[u8]]) -> Result<chain::Report, StoreError> {
        self.with_db(true, |db| chain::verify(db, pinned))
    }

    /// Signs the chain's head with `key` if it moved since the last checkpoint.
    pub fn checkpoint(
        &self,
        key: &chain::SigningKey,
    ) -> Result<Option<chain::Checkpoint>, StoreError> {
        self.with_db(false, |db| {
            chain::checkpoint(db, key, super::model::now_us())
        })
    }

    /// Deletes records written before `upto` (a `seq`) the way retention must: `delete` runs the
    /// DELETE statements (only rows with `seq < upto`; which ones is the caller's policy, e.g.
    /// shipped and old), and in the same transaction the chain records the prune, so `verify`
    /// accepts the shorter store. Returns what `delete` returned and the prune.
    pub fn prune_before<T>(
        &self,
        upto: i64,
        delete: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<(T, chain::Prune), StoreError> {
        let mut conn = self.connect(false)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let result = delete(&tx).map_err(|e| self.err(e))?;
        let mut db = Db::Sqlite(&tx);
        let seq = next_seq(&mut db).map_err(|e| self.db_err(e))?;
        let prune = chain::record_prune(&mut db, seq, upto.min(seq)).map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((result, prune))
    }

    /// Finds commands whose id contains `part` (at most two: the caller wants exactly one).
    /// UUIDv7 ids begin with their timestamp, so listings show their random tail instead.
    pub fn find_command(&self, part: &str) -> Result<Vec<Command>, StoreError> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE {} ORDER BY id LIMIT 2",
            self.dialect().contains("id")
        );
        self.with_db(true, |db| {
            db.query_vec(&sql, args![part.to_ascii_lowercase()], command_from_row)
        })
    }
}

/// Values seen in recent calls (`AuditStore::recent_values`), sorted.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecentValues {
    pub users: Vec<String>,
    pub clusters: Vec<String>,
    pub namespaces: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

impl RecentValues {
    /// Every list, to change them alike.
    pub fn lists_mut(&mut self) -> [&mut Vec<String>; 5] {
        [
            &mut self.users,
            &mut self.clusters,
            &mut self.namespaces,
            &mut self.resources,
            &mut self.verbs,
        ]
    }
}

/// The listing of calls: each with its command line and both durations (`call_row_from` reads
/// a row of it). On the client a call's request id is its own id: its duration is the client's.
pub(super) fn call_select() -> String {
    format!(
        "SELECT {CALL_COLUMNS}, cmd.command_line, \
         COALESCE(t.duration_us, CASE WHEN c.request_id = c.id THEN c.duration_us END), \
         CASE WHEN c.request_id = c.id THEN NULL ELSE c.duration_us END \
         FROM api_calls c \
         LEFT JOIN commands cmd ON cmd.id = c.command_id AND cmd.user = c.user \
         LEFT JOIN client_calls t ON t.id = c.request_id"
    )
}

pub(super) fn call_row_from(row: &Row) -> Result<CallRow, DbError> {
    Ok(CallRow {
        call: call_from_row(row)?,
        command_line: row.opt_text(27)?,
        client_duration_us: row.get(28)?,
        gateway_duration_us: row.get(29)?,
    })
}

/// `COMMAND_COLUMNS` of the commands table aliased `cmd`.
fn qualified_command_columns() -> String {
    COMMAND_COLUMNS
        .split(", ")
        .map(|c| format!("cmd.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A command's calls counted by status class (`2xx=3,4xx=1`), read by `command_row_from`
/// after the command's columns.
fn status_summary(dialect: Dialect) -> String {
    format!(
        "(SELECT {} FROM \
            (SELECT CASE WHEN a.status BETWEEN 100 AND 599 THEN (a.status / 100) || 'xx' ELSE 'err' END AS cls, \
                    COUNT(*) AS n FROM api_calls a{} WHERE a.command_id = cmd.id AND a.user = cmd.user GROUP BY cls) AS classes)",
        dialect.group_concat("cls || '=' || n"),
        dialect.indexed_by("api_calls_command")
    )
}

/// A command and the summary of its calls (`status_summary`, in the column after its own).
fn command_row_from(row: &Row) -> Result<CommandRow, DbError> {
    let command = command_from_row(row)?;
    let statuses: std::collections::BTreeMap<String, i64> = row
        .opt_text(COMMAND_COLUMN_COUNT)?
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| part.split_once('='))
        .map(|(cls, n)| (cls.to_string(), n.parse().unwrap_or(0)))
        .collect();
    Ok(CommandRow {
        calls: statuses.values().sum(),
        duration_us: command.ended_us.map(|end| end - command.started_us),
        statuses,
        command,
    })
}

/// One record of either kind, as `records_after` reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Most records are calls: boxing them would add an allocation each and save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Call(CallRow),
    Command(CommandRow),
}

/// A record with the write sequence number of its latest write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sequenced {
    pub seq: i64,
    #[serde(flatten)]
    pub record: Record,
}

/// What `records_after` found, and how far the scan is complete.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeqBatch {
    pub records: Vec<Sequenced>,
    pub through: i64,
}

/// Counters of the writer, readable at any time (atomics: the gateway reads `healthy` on every
/// request). A record is either written, held for a retry (`pending`), spilled to a file when
/// the writer had to stop with the store still failing, or counted in `failed` — never dropped
/// without being counted.
#[derive(Default, Debug)]
pub struct WriterStats {
    pub written: AtomicU64,
    /// Records lost: not written, not held, not spilled (the writer had stopped, or a
    /// best-effort writer's retry buffer was full).
    pub failed: AtomicU64,
    /// Records held in memory after a failed write, retried until the store takes them.
    pub pending: AtomicU64,
    /// Records whose first write failed (whether or not a retry wrote them later).
    pub delayed: AtomicU64,
    /// Write transactions that failed.
    pub write_errors: AtomicU64,
    /// Records written to a spill file because the store still failed when the writer closed.
    pub spilled: AtomicU64,
    /// Set while the last write failed; cleared by the next successful one.
    unhealthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl WriterStats {
    /// False while the store is not taking writes (the last attempt failed).
    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy of the counters, for status answers and summaries.
    pub fn status(&self) -> WriterStatus {
        WriterStatus {
            healthy: self.healthy(),
            written: self.written.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            last_error: self.last_error(),
        }
    }

    fn set_error(&self, error: Option<String>) {
        self.unhealthy.store(error.is_some(), Ordering::Relaxed);
        if let Some(e) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    }
}

/// A sink for when the store cannot even be opened (a best-effort client runs on): every record
/// counts as failed, the sink reports itself unhealthy, flushes are answered at once.
pub fn failing_sink(reason: &str) -> (AuditSink, AuditWriter) {
    let (tx, rx) = sync_channel::<WriteOp>(64);
    let stats = Arc::new(WriterStats::default());
    stats.set_error(Some(reason.to_string()));
    let thread_stats = stats.clone();
    let thread = std::thread::spawn(move || fail_loop(rx, &thread_stats));
    sink_and_writer(tx, stats, thread)
}

/// A writer without a store: every record counts as failed, and nothing waits.
fn fail_loop(rx: Receiver<WriteOp>, stats: &WriterStats) {
    while let Ok(op) = rx.recv() {
        match op {
            WriteOp::Flush(done) => {
                let _ = done.send(());
            }
            WriteOp::Commit(done) => {
                let _ = done.send(false);
            }
            WriteOp::Call(_) | WriteOp::Command(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The store at `path`, opened on the batch writer's own thread, which first commits `first`
/// (the probe that the store takes writes at all) and then writes what the sink receives. The
/// sink takes records at once; the receiver yields the store, or why it could not be opened or
/// written, in which case every record sent to the sink counts as failed. `ztk kubectl` starts
/// kubectl meanwhile: opening a store and committing take milliseconds, kubectl's first call
/// comes tens of milliseconds after its start.
pub fn open_recording(
    path: &Path,
    first: Command,
    capacity: usize,
) -> (
    AuditSink,
    AuditWriter,
    Receiver<Result<AuditStore, StoreError>>,
) {
    let (tx, rx) = sync_channel(capacity);
    let (opened_tx, opened) = sync_channel(1);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let db = path.to_path_buf();
    let start = move || {
        let store = AuditStore::open(&db)?;
        store.upsert_commands(std::slice::from_ref(&first))?;
        let conn = store.writer_connection()?;
        Ok::<_, StoreError>((store, conn))
    };
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || match start() {
            Ok((store, conn)) => {
                let _ = opened_tx.send(Ok(store.clone()));
                write_loop(conn, rx, &thread_stats, &store, WriterConfig::default());
            }
            Err(err) => {
                thread_stats.set_error(Some(err.to_string()));
                let _ = opened_tx.send(Err(err));
                fail_loop(rx, &thread_stats);
            }
        });
    match thread {
        Ok(thread) => {
            let (sink, writer) = sink_and_writer(tx, stats, thread);
            (sink, writer, opened)
        }
        Err(source) => {
            let err = StoreError::Thread {
                what: "writer",
                path: path.to_path_buf(),
                source,
            };
            let (sink, writer) = failing_sink(&err.to_string());
            let (opened_tx, opened) = sync_channel(1);
            let _ = opened_tx.send(Err(err));
            (sink, writer, opened)
        }
    }
}

/// The two ends of a writer thread: the sink feeding `tx`, and the owner of `thread`.
fn sink_and_writer(
    tx: SyncSender<WriteOp>,
    stats: Arc<WriterStats>,
    thread: JoinHandle<()>,
) -> (AuditSink, AuditWriter) {
    let sink = AuditSink {
        tx,
        stats: stats.clone(),
        writer: thread.thread().clone(),
    };
    let writer = AuditWriter {
        thread: Some(thread),
        stats,
    };
    (sink, writer)
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterStatus {
    pub healthy: bool,
    pub written: u64,
    pub pending: u64,
    pub delayed: u64,
    pub failed: u64,
    pub spilled: u64,
    pub write_errors: u64,
    /// The last write error (kept after recovery, for the report).
    pub last_error: Option<String>,
}

impl std::fmt::Display for WriterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; {} records written, {} held for retry, {} delayed by write failures, {} spilled to a file, {} lost",
            if self.healthy { "writing" } else { "NOT WRITING" },
            self.written,
            self.pending,
            self.delayed,
            self.spilled,
            self.failed
        )?;
        if let Some(e) = &self.last_error {
            write!(f, " (last error: {e})")?;
        }
        Ok(())
    }
}

/// What the writer does with records while the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Records held in memory for a retry, at most.
    pub hold_max: usize,
    /// With the hold full: true stops taking records (senders wait: nothing is lost, for
    /// fail-closed), false takes them and counts them as lost (best-effort).
    pub wait_when_full: bool,
    /// After the last sink is gone, how long to keep retrying before spilling to a file.
    pub close_grace: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            hold_max: 100_000,
            wait_when_full: false,
            close_grace: Duration::from_secs(5),
        }
    }
}

/// Where relays hand their records. Cheap to clone; never blocks the caller.
#[derive(Clone)]
pub struct AuditSink {
    tx: SyncSender<WriteOp>,
    stats: Arc<WriterStats>,
    /// Woken when someone waits for a commit, so that the writer's linger never delays them.
    writer: std::thread::Thread,
}

impl AuditSink {
    pub fn record_call(&self, call: ApiCall) {
        self.send(WriteOp::Call(Box::new(call)));
    }

    pub fn record_command(&self, command: Command) {
        self.send(WriteOp::Command(Box::new(command)));
    }

    fn send(&self, op: WriteOp) {
        self.send_all([op]);
    }

    /// Queues `ops` in this order (a commit waiter after its record).
    fn send_all<const N: usize>(&self, ops: [WriteOp; N]) {
        let mut ops = ops.into_iter();
        while let Some(op) = ops.next() {
            match self.tx.try_send(op) {
                Ok(()) => {}
                Err(TrySendError::Full(op)) => {
                    // The writer is behind: wait for room off the request path rather than drop,
                    // the rest in order from one task.
                    let rest: Vec<WriteOp> = std::iter::once(op).chain(ops).collect();
                    let (tx, stats) = (self.tx.clone(), self.stats.clone());
                    let writer = self.writer.clone();
                    let wait = move || {
                        for op in rest {
                            if tx.send(op).is_err() {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        writer.unpark();
                    };
                    match tokio::runtime::Handle::try_current() {
                        Ok(handle) => {
                            handle.spawn_blocking(wait);
                        }
                        Err(_) => wait(),
                    }
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("audit writer has stopped; a record could not be written");
                }
            }
        }
    }

    /// Waits (up to `timeout`) until every record queued so far is committed.
    /// Returns false on timeout or when the writer has stopped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(WriteOp::Flush(tx)).is_err() {
            return false;
        }
        self.writer.unpark();
        rx.recv_timeout(timeout).is_ok()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Whether the store is taking writes (one atomic load: cheap enough for every request).
    pub fn healthy(&self) -> bool {
        self.stats.healthy()
    }

    /// Records `call` and waits (without blocking a thread) until the writer has committed it:
    /// false when it could not be written (yet). For fail-closed callers that must not forward
    /// a request before its record is on disk.
    pub async fn record_call_committed(&self, call: ApiCall) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_all([WriteOp::Call(Box::new(call)), WriteOp::Commit(tx)]);
        self.writer.unpark();
        rx.await.unwrap_or(false)
    }
}

/// Owns the writer thread.
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
}

impl AuditWriter {
    /// Waits until every record queued before all sinks were dropped is committed (or, with the
    /// store still failing after the close grace, spilled to a file).
    /// Call after dropping every `AuditSink` (the thread ends when the channel closes).
    pub fn close(mut self) -> Arc<WriterStats> {
        if let Some(thread) = self.thread.take() {
            // A writer lingering for more records would otherwise sleep out its wait.
            thread.thread().unpark();
            let _ = thread.join();
        }
        self.stats.clone()
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

const BATCH_MAX: usize = 2048;
/// How long the writer waits for more records when it has fewer than `LINGER_UNTIL` queued:
/// the longest a record waits in memory before its commit starts, unless someone waits for it.
/// Short while calls are few, so that a call shows in `ztk audit list` right after kubectl
/// exits; longer once `BUSY_BATCH` records came within the short wait (1,600 calls a second
/// and more), when larger batches save CPU: each commit rewrites the last page of the table
/// and of every index. At ~3,500 calls a second through the local proxy, its writer spent a
/// median 29 µs per record in 5 ms batches (~15 records) and 22 µs in 50 ms ones.
const LINGER: Duration = Duration::from_millis(5);
const LINGER_BUSY: Duration = Duration::from_millis(50);
const BUSY_BATCH: usize = 8;
const LINGER_UNTIL: usize = 1024;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The writer thread: commits what is queued in batches. A failed batch is kept (up to
/// `hold_max` records, growing with what arrives meanwhile) and retried with backoff until the
/// store takes it; `stats` says all the while that the store is failing.
fn write_loop(
    mut conn: WriterConn,
    rx: Receiver<WriteOp>,
    stats: &WriterStats,
    store: &AuditStore,
    config: WriterConfig,
) {
    let location = store.location();
    let path = store.path();
    let mut batch: Vec<WriteOp> = Vec::with_capacity(BATCH_MAX);
    let mut flushes: Vec<Waiter> = Vec::new();
    // Records at the front of `batch` that already failed once (counted in `delayed`).
    let mut held = 0usize;
    let mut backoff = RETRY_MIN;
    let mut closed_at: Option<std::time::Instant> = None;
    // Whether the last batch was a large one: the relay is busy.
    let mut busy = false;
    let take = |op: WriteOp, batch: &mut Vec<WriteOp>, flushes: &mut Vec<Waiter>| match op {
        WriteOp::Flush(done) => flushes.push(Waiter::Flush(done)),
        WriteOp::Commit(done) => flushes.push(Waiter::Commit(done)),
        op => batch.push(op),
    };
    loop {
        if held == 0 {
            // Healthy: wait for work, then take what is queued (up to a batch).
            match rx.recv() {
                Ok(op) => take(op, &mut batch, &mut flushes),
                Err(_) => break,
            }
            // Takes what is queued; false once every sender is gone (nothing more will come).
            let drain = |batch: &mut Vec<WriteOp>, flushes: &mut Vec<Waiter>| {
                while batch.len() < BATCH_MAX {
                    match rx.try_recv() {
                        Ok(op) => take(op, batch, flushes),
                        Err(TryRecvError::Empty) => return true,
                        Err(TryRecvError::Disconnected) => return false,
                    }
                }
                true
            };
            let mut open = drain(&mut batch, &mut flushes);
            // Records that arrive one at a time (a quiet relay) would each cost a transaction,
            // and a transaction writes a page of every index to the WAL: ~half the gateway's CPU
            // at one call at a time. Waiting a moment lets them share one; under load, batches
            // of hundreds cost a fifth less per record than batches of 64. Parked, not blocked
            // on the channel, so that senders meanwhile need not wake this thread; whoever
            // waits for a commit unparks it.
            let linger = if busy { LINGER_BUSY } else { LINGER };
            let deadline = std::time::Instant::now() + linger;
            while open && flushes.is_empty() && batch.len() < LINGER_UNTIL {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::park_timeout(left);
                open = drain(&mut batch, &mut flushes);
            }
        } else {
            // Failing: wait out the backoff, holding what arrives meanwhile.
            let until = std::time::Instant::now() + backoff;
            while closed_at.is_none() {
                let full = batch.len() >= config.hold_max;
                if full && config.wait_when_full {
                    std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
                    break;
                }
                let left = until.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(WriteOp::Flush(done)) => flushes.push(Waiter::Flush(done)),
                    Ok(WriteOp::Commit(done)) => flushes.push(Waiter::Commit(done)),
                    Ok(_) if full => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("audit record lost: the store is failing and {} records are already held", batch.len());
                    }
                    Ok(op) => batch.push(op),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        closed_at = Some(std::time::Instant::now());
                    }
                }
            }
            if closed_at.is_some() {
                std::thread::sleep(backoff);
            }
        }
        let n = batch.len();
        busy = n >= BUSY_BATCH;
        if n == 0 {
            answer(&mut flushes);
            continue;
        }
        match write_batch(&mut conn, &batch) {
            Ok(()) => {
                stats.written.fetch_add(n as u64, Ordering::Relaxed);
                if held > 0 {
                    tracing::warn!(
                        "audit store {} takes writes again: wrote {n} held records",
                        location
                    );
                    eprintln!(
                        "ztk: audit store {} takes writes again: wrote {n} held records",
                        location
                    );
                }
                stats.pending.store(0, Ordering::Relaxed);
                stats.set_error(None);
                batch.clear();
                held = 0;
                backoff = RETRY_MIN;
                answer(&mut flushes);
            }
            Err(err) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .delayed
                    .fetch_add((n - held) as u64, Ordering::Relaxed);
                stats.pending.store(n as u64, Ordering::Relaxed);
                if held == 0 {
                    tracing::error!(
                        "could not write {n} audit records to {}: {err}; holding them and retrying",
                        location
                    );
                    eprintln!("ztk: could not write {n} audit records to {}: {err}; holding them and retrying", location);
                }
                stats.set_error(Some(err.to_string()));
                // Whoever waits for a commit hears now that it did not happen.
                flushes.retain_mut(|w| match w {
                    Waiter::Commit(_) => {
                        if let Waiter::Commit(done) = std::mem::replace(w, Waiter::Gone) {
                            let _ = done.send(false);
                        }
                        false
                    }
                    Waiter::Flush(_) => true,
                    Waiter::Gone => false,
                });
                held = n;
                backoff = (backoff * 2).min(RETRY_MAX);
                if closed_at.is_some_and(|t| t.elapsed() >= config.close_grace) {
                    spill(&batch, stats, path, &location);
                    batch.clear();
                    answer_with(&mut flushes, false);
                    break;
                }
            }
        }
    }
}

/// Who waits on the writer: a flush (answered when the writer is done with what came before),
/// or a commit (answered whether what came before is on disk).
enum Waiter {
    Flush(SyncSender<()>),
    Commit(tokio::sync::oneshot::Sender<bool>),
    Gone,
}

fn answer(flushes: &mut Vec<Waiter>) {
    answer_with(flushes, true)
}

fn answer_with(flushes: &mut Vec<Waiter>, committed: bool) {
    for waiter in flushes.drain(..) {
        match waiter {
            Waiter::Flush(done) => {
                let _ = done.send(());
            }
            Waiter::Commit(done) => {
                let _ = done.send(committed);
            }
            Waiter::Gone => {}
        }
    }
}

/// The writer must stop while the store still fails: the held records go to a 0600 NDJSON file
/// beside the store (`{"call": …}` / `{"command": …}` per line) instead of vanishing.
fn spill(batch: &[WriteOp], stats: &WriterStats, path: &Path, location: &str) {
    let file = path.with_extension(format!("unwritten-{}.ndjson", super::model::now_us()));
    let mut text = String::new();
    for op in batch {
        let line = match op {
            WriteOp::Call(c) => serde_json::json!({ "call": c }),
            WriteOp::Command(c) => serde_json::json!({ "command": c }),
            WriteOp::Flush(_) | WriteOp::Commit(_) => continue,
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let n = batch.len() as u64;
    stats.pending.store(0, Ordering::Relaxed);
    match crate::fsutil::write_private(&file, text.as_bytes()) {
        Ok(()) => {
            stats.spilled.fetch_add(n, Ordering::Relaxed);
            tracing::error!(
                "audit store {} still fails; {n} records written to {} instead",
                location,
                file.display()
            );
            eprintln!(
                "ztk: audit store {} still fails; {n} records written to {} instead",
                location,
                file.display()
            );
        }
        Err(err) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::error!(
                "{n} audit records lost: the store {} fails and {} cannot be written: {err}",
                location,
                file.display()
            );
            eprintln!(
                "ztk: {n} audit records lost: the store {} fails and {} cannot be written: {err}",
                location,
                file.display()
            );
        }
    }
}

fn write_batch(conn: &mut WriterConn, batch: &[WriteOp]) -> Result<(), DbError> {
    conn.db().transaction(true, |tx| write_records(tx, batch))
}

/// The rule of every write: inside the writing transaction, which holds the sequence (SQLite's
/// write lock; PostgreSQL's row lock on `sequence`, held to the commit, so that numbers are
/// taken in commit order across gateways), each record takes the next number, is written and
/// is journalled by the chain.
fn write_records(tx: &mut Db, batch: &[WriteOp]) -> Result<(), DbError> {
    // The sequence is read once and written back once: an UPDATE per record cost each record a
    // statement journal in SQLite.
    let first = lock_sequence(tx)?;
    let mut seq = first;
    let mut journal = chain::Appender::default();
    // PostgreSQL: consecutive calls in multi-row statements (a round trip each, not one per
    // record); SQLite takes them one by one from its prepared statement as fast.
    let together = tx.dialect() == Dialect::Postgres;
    let mut calls: Vec<(i64, &ApiCall)> = Vec::new();
    for op in batch {
        match op {
            WriteOp::Call(call) => {
                seq += 1;
                if !together {
                    insert_call(tx, &mut journal, seq, call)?;
                    continue;
                }
                // One statement may not write a row twice: a repeated id starts the next.
                if calls.len() == CALLS_PER_STATEMENT || calls.iter().any(|(_, c)| c.id == call.id)
                {
                    insert_calls(tx, &mut journal, &calls)?;
                    calls.clear();
                }
                calls.push((seq, call));
            }
            WriteOp::Command(cmd) => {
                insert_calls(tx, &mut journal, &calls)?;
                calls.clear();
                seq += 1;
                upsert_command(tx, &mut journal, seq, cmd)?;
            }
            WriteOp::Flush(_) | WriteOp::Commit(_) => {}
        }
    }
    insert_calls(tx, &mut journal, &calls)?;
    journal.flush(tx)?;
    if seq != first {
        tx.execute("UPDATE sequence SET last = ? WHERE id = 1", args![seq])?;
    }
    Ok(())
}

/// The sequence's last number, read in a write transaction that holds it from here to its
/// commit (SQLite: the write lock; PostgreSQL: the row's lock): numbers taken after it are in
/// commit order.
pub(super) fn lock_sequence(tx: &mut Db) -> Result<i64, DbError> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => "SELECT last FROM sequence WHERE id = 1",
        Dialect::Postgres => "SELECT last FROM sequence WHERE id = 1 FOR UPDATE",
    };
    tx.query_row(sql, &[], |r| r.get(0))?
        .ok_or_else(|| DbError::Invalid("the store has no write sequence".into()))
}

/// Takes the next number of the store's write sequence. Call inside the writing transaction:
/// the number is then both unique and in commit order.
pub(super) fn next_seq(db: &mut Db) -> Result<i64, DbError> {
    db.query_row(
        "UPDATE sequence SET last = last + 1 WHERE id = 1 RETURNING last",
        &[],
        |r| r.get(0),
    )?
    .ok_or_else(|| DbError::Invalid("the store has no write sequence".into()))
}

const CALL_INSERT_COLUMNS: &str = "id, time_us, \"user\", cluster, namespace, resource, \
    subresource, name, api_group, api_version, verb, method, path, query, status, duration_us, bytes_in, \
    bytes_out, user_agent, source_ip, kubectl_command, kubectl_session, command_id, request_id, \
    access_method, decision, reason, seq";

/// SQLite: a plain INSERT, not INSERT OR REPLACE (REPLACE makes SQLite keep a statement
/// journal, a copy of every page the statement touches, for each record of the batch); a call
/// already stored is deleted first, on the rare conflict.
static INSERT_CALL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO api_calls ({CALL_INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
});

/// PostgreSQL: a failed statement ends the transaction there, so the replacement is an upsert.
static UPSERT_CALL: LazyLock<String> = LazyLock::new(|| {
    let set = CALL_INSERT_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{} ON CONFLICT (id) DO UPDATE SET {set}", *INSERT_CALL)
});

/// Inserts or updates a command; returns the row as it now is (an update keeps the first
/// write's other columns, and a reason once set: a later write, the command's end, may set one
/// but not clear it).
static UPSERT_COMMAND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO commands (id, started_us, ended_us, \"user\", cluster, argv, command_line, exit_code, \
         api_calls, access_method, cwd, host, reason, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT(id) DO UPDATE SET ended_us = excluded.ended_us, exit_code = excluded.exit_code, \
         api_calls = excluded.api_calls, {}, seq = excluded.seq RETURNING {}",
        UPDATE_COMMAND_REASON,
        chain::COMMAND_FIELDS
    )
});

/// The upserts' rule for a command's reason: a later write sets it, an empty one keeps it.
pub(super) const UPDATE_COMMAND_REASON: &str =
    "reason = CASE WHEN excluded.reason = '' THEN commands.reason ELSE excluded.reason END";

/// What a call's row holds that the call's fields do not hold as they are: ids as text, byte
/// counts as i64, the access method's name.
pub(super) struct CallText {
    id: String,
    command_id: Option<String>,
    request_id: Option<String>,
    bytes_in: i64,
    bytes_out: i64,
    access_method: &'static str,
}

impl CallText {
    pub(super) fn of(c: &ApiCall) -> CallText {
        CallText {
            id: c.id.to_string(),
            command_id: c.command_id.map(|id| id.to_string()),
            request_id: c.request_id.map(|id| id.to_string()),
            bytes_in: c.bytes_in as i64,
            bytes_out: c.bytes_out as i64,
            access_method: c.access_method.as_str(),
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

/// A call's 27 content fields, bound in the order of `chain::CALL_FIELDS` (and of the columns
/// of `api_calls` and `client_calls`): the content hash is taken over exactly the values bound,
/// which are what the row holds (each column gets a value of its own type, so no affinity
/// conversion applies) and what `verify` reads back.
pub(super) fn call_params<'a>(c: &'a ApiCall, t: &'a CallText) -> [&'a dyn Param; 27] {
    [
        &t.id,
        &c.time_us,
        &c.user,
        &c.cluster,
        &c.namespace,
        &c.resource,
        &c.subresource,
        &c.name,
        &c.api_group,
        &c.api_version,
        &c.verb,
        &c.method,
        &c.path,
        &c.query,
        &c.status,
        &c.duration_us,
        &t.bytes_in,
        &t.bytes_out,
        &c.user_agent,
        &c.source_ip,
        &c.kubectl_command,
        &c.kubectl_session,
        &t.command_id,
        &t.request_id,
        &t.access_method,
        &c.decision,
        &c.reason,
    ]
}

/// Writes a call under `seq` and journals it. A call already stored (an upgraded stream's
/// opening record, then its final one) is replaced.
fn insert_call(
    db: &mut Db,
    journal: &mut chain::Appender,
    seq: i64,
    c: &ApiCall,
) -> Result<(), DbError> {
    let text = CallText::of(c);
    let fields = call_params(c, &text);
    let content = chain::values_hash(Kind::Call, &fields)?;
    let mut values: [&dyn Param; 28] = [&seq; 28];
    values[..27].copy_from_slice(&fields);
    match db.dialect() {
        Dialect::Postgres => {
            db.execute(&UPSERT_CALL, &values)?;
        }
        Dialect::Sqlite => match db.execute(&INSERT_CALL, &values) {
            Ok(_) => {}
            Err(e) if e.is_unique_violation() => {
                db.execute("DELETE FROM api_calls WHERE id = ?", args![text.id])?;
                db.execute(&INSERT_CALL, &values)?;
            }
            Err(e) => return Err(e),
        },
    }
    journal.append(db, seq, Kind::Call, &text.id, &content)?;
    Ok(())
}

/// Calls per multi-row statement (PostgreSQL takes at most 65,535 parameters in one).
const CALLS_PER_STATEMENT: usize = 256;

/// Writes `calls` (ids distinct, each under its `seq`) in one statement, replacing calls
/// already stored, and journals them (`Appender::defer`).
fn insert_calls(
    db: &mut Db,
    journal: &mut chain::Appender,
    calls: &[(i64, &ApiCall)],
) -> Result<(), DbError> {
    if calls.is_empty() {
        return Ok(());
    }
    let texts: Vec<CallText> = calls.iter().map(|(_, c)| CallText::of(c)).collect();
    let mut values: Vec<&dyn Param> = Vec::with_capacity(calls.len() * 28);
    for ((seq, c), text) in calls.iter().zip(&texts) {
        let fields = call_params(c, text);
        let content = chain::values_hash(Kind::Call, &fields)?;
        journal.defer(db, *seq, Kind::Call, &text.id, &content)?;
        values.extend(fields);
        values.push(seq);
    }
    let one = format!("({})", vec!["?"; 28].join(","));
    let set = CALL_INSERT_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO api_calls ({CALL_INSERT_COLUMNS}) VALUES {} ON CONFLICT (id) DO UPDATE SET {set}",
        vec![one.as_str(); calls.len()].join(",")
    );
    db.execute(&sql, &values)?;
    Ok(())
}

fn upsert_command(
    db: &mut Db,
    journal: &mut chain::Appender,
    seq: i64,
    c: &Command,
) -> Result<(), DbError> {
    let id = c.id.to_string();
    let content = upsert_command_row(db, &UPSERT_COMMAND, &id, c, seq)?
        .ok_or_else(|| DbError::Invalid(format!("command {id} was not written")))?;
    journal.append(db, seq, Kind::Command, &id, &content)?;
    Ok(())
}

/// Runs a command upsert (`sql`: this store's, or the ingest's that writes only changes) for
/// `c` under `seq`; returns the content hash of the row it returned, as the row now is (an
/// update keeps the first write's other columns), or None when it returned none.
pub(super) fn upsert_command_row(
    db: &mut Db,
    sql: &str,
    id: &str,
    c: &Command,
    seq: i64,
) -> Result<Option<chain::Hash>, DbError> {
    let argv = serde_json::to_string(&c.argv).unwrap_or_else(|_| "[]".into());
    db.query_row(
        sql,
        args![
            id,
            c.started_us,
            c.ended_us,
            c.user,
            c.cluster,
            argv,
            c.command_line,
            c.exit_code,
            c.api_calls,
            c.access_method.as_str(),
            c.cwd,
            c.host,
            c.reason,
            seq,
        ],
        |row| chain::content_hash(Kind::Command, row, 0),
    )
}

pub(super) fn parse_uuid(s: Option<String>) -> Option<Uuid> {
    s.and_then(|s| Uuid::parse_str(&s).ok())
}

pub(super) fn call_from_row(row: &Row) -> Result<ApiCall, DbError> {
    Ok(ApiCall {
        id: parse_uuid(row.opt_text(0)?).unwrap_or_default(),
        time_us: row.get(1)?,
        user: row.text(2)?,
        cluster: row.text(3)?,
        namespace: row.text(4)?,
        resource: row.text(5)?,
        subresource: row.text(6)?,
        name: row.text(7)?,
        api_group: row.text(8)?,
        api_version: row.text(9)?,
        verb: row.text(10)?,
        method: row.text(11)?,
        path: row.text(12)?,
        query: row.text(13)?,
        status: row.get(14)?,
        duration_us: row.get(15)?,
        bytes_in: row.get::<i64>(16)? as u64,
        bytes_out: row.get::<i64>(17)? as u64,
        user_agent: row.text(18)?,
        source_ip: row.text(19)?,
        kubectl_command: row.text(20)?,
        kubectl_session: row.text(21)?,
        command_id: parse_uuid(row.opt_text(22)?),
        request_id: parse_uuid(row.opt_text(23)?),
        access_method: AccessMethod::parse(&row.text(24)?).unwrap_or_default(),
        decision: row.text(25)?,
        reason: row.text(26)?,
    })
}

pub(super) fn command_from_row(row: &Row) -> Result<Command, DbError> {
    let argv = row.text(5)?;
    Ok(Command {
        id: parse_uuid(row.opt_text(0)?).unwrap_or_default(),
        started_us: row.get(1)?,
        ended_us: row.get(2)?,
        user: row.text(3)?,
        cluster: row.text(4)?,
        argv: serde_json::from_str(&argv).unwrap_or_default(),
        command_line: row.text(6)?,
        exit_code: row.get(7)?,
        api_calls: row.get(8)?,
        access_method: AccessMethod::parse(&row.text(9)?).unwrap_or_default(),
        cwd: row.text(10)?,
        host: row.text(11)?,
        reason: row.text(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::now_us;

    /// A writer whose checkpoints run in the background: its commit returns with the pages in
    /// the WAL, and the checkpointer copies them into the database file soon after.
    #[test]
    fn a_background_checkpoint_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = AuditStore::open(&path).unwrap();
        let mut conn = store.connect(false).unwrap().detach();
        store.checkpoint_in_background(&mut conn).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let pages = CHECKPOINT_PAGES as i64 + 100;
        let tx = conn.transaction().unwrap();
        tx.execute_batch("CREATE TABLE filler (b BLOB)").unwrap();
        for _ in 0..pages {
            tx.execute("INSERT INTO filler VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
        let grown = 4000 * pages as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + grown {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpointer did not copy the WAL within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            conn.query_row("SELECT COUNT(*) FROM filler", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            pages
        );
    }

    /// The store opened on the writer's thread: the first command is committed before the
    /// store is handed back, and records sent meanwhile follow it; a store that cannot be opened
    /// is reported, and the records sent to it count as failed.
    #[test]
    fn a_store_opened_by_its_writer_commits_the_first_command_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv: vec!["kubectl".into()],
            ..Default::default()
        };
        let path = dir.path().join("audit.db");
        let (sink, writer, opened) = open_recording(&path, first.clone(), 16);
        sink.record_call(call("alice", 200, Some(first.id)));
        let store = opened.recv().unwrap().unwrap();
        assert_eq!(store.list_commands(&Filter::default()).unwrap().len(), 1);
        assert!(sink.flush(Duration::from_secs(5)));
        drop(sink);
        assert_eq!(writer.close().failed.load(Ordering::Relaxed), 0);
        assert_eq!(store.list_calls(&Filter::default()).unwrap().len(), 1);
        let conn = store.connect(true).unwrap();
        let (command_seq, call_seq): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT seq FROM commands), (SELECT seq FROM api_calls)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(command_seq < call_seq);

        // A directory where the file should be.
        let (sink, writer, opened) = open_recording(dir.path(), first, 16);
        assert!(opened.recv().unwrap().is_err());
        sink.record_call(call("alice", 200, None));
        assert!(sink.flush(Duration::from_secs(5)));
        drop(sink);
        assert_eq!(writer.close().failed.load(Ordering::Relaxed), 1);
    }

    /// A connection dropped outside a transaction serves the next `connect` of its kind (a
    /// per-connection setting survives to show it); one dropped inside a transaction is closed,
    /// so its transaction ends and never reaches another user of the store.
    #[test]
    fn connections_are_reused_unless_dropped_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        let cache_size =
            |c: &Connection| -> i64 { c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap() };
        let conn = store.connect(false).unwrap();
        conn.execute_batch("PRAGMA cache_size = -1234").unwrap();
        drop(conn);
        let read = store.connect(true).unwrap();
        assert!(read.is_readonly(rusqlite::MAIN_DB).unwrap());
        assert_ne!(
            cache_size(&read),
            -1234,
            "a read-only connection has its own slot"
        );
        read.execute_batch("PRAGMA cache_size = -4321").unwrap();
        drop(read);
        assert_eq!(cache_size(&store.connect(true).unwrap()), -4321);
        let conn = store.connect(false).unwrap();
        assert_eq!(cache_size(&conn), -1234);
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE sequence SET last = last + 1000 WHERE id = 1")
            .unwrap();
        drop(conn);
        let fresh = store.connect(false).unwrap();
        assert!(fresh.is_autocommit());
        assert_ne!(
            cache_size(&fresh),
            -1234,
            "not the connection left in a transaction"
        );
        let last: i64 = fresh
            .query_row("SELECT last FROM sequence WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert!(last < 1000, "the abandoned transaction was rolled back");
        // And the write lock it held is gone.
        fresh
            .execute_batch("BEGIN IMMEDIATE; COMMIT")
            .expect("the store takes writes");
    }

    /// kubectl's first `ztk credential` and the `ztk proxy` it starts open the same new store
    /// at once: every opener must get it (SQLite refuses the switch to WAL at once while
    /// another connection holds a lock, and the proxy then served without a local record).
    #[test]
    fn a_new_store_opened_by_many_at_once_opens_for_all() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let start = Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        AuditStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().expect("every opener gets the store");
            }
        }
    }

    fn call(user: &str, status: u16, command_id: Option<Uuid>) -> ApiCall {
        ApiCall {
            id: Uuid::now_v7(),
            time_us: now_us(),
            user: user.into(),
            cluster: "dev".into(),
            resource: "pods".into(),
            verb: "list".into(),
            status,
            command_id,
            decision: "allow".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_write_takes_the_next_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        assert_eq!(store.last_seq().unwrap(), 0);
        let (sink, writer) = store.start_writer(4).unwrap();
        let mut open = call("alice", 101, None);
        sink.record_call(open.clone());
        sink.record_call(call("bob", 200, None));
        assert!(sink.flush(Duration::from_secs(5)));
        // The final record of a stream replaces its open record: it is a new write.
        open.status = 200;
        sink.record_call(open.clone());
        drop(sink);
        writer.close();
        assert_eq!(store.last_seq().unwrap(), 3);
        let conn = open_connection(&path, true).unwrap();
        let seqs: Vec<(String, i64)> = conn
            .prepare("SELECT user, seq FROM api_calls ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seqs, [("bob".to_string(), 2), ("alice".to_string(), 3)]);
        // The replaced record's journal entry is superseded, not broken.
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problem_count, 0, "{:?}", report.problems);
        assert_eq!(report.entries, 3);
    }

    /// A fail-closed caller's commit waiter that finds the channel full is queued behind its own
    /// record, never ahead of it: when the commit is answered, the record is on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_queued_behind_a_full_channel_answers_after_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        let (sink, writer) = store.start_writer(1).unwrap();
        // Another connection holds the write lock: the writer's first batch waits for it.
        let lock = open_connection(&path, false).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        sink.record_call(call("a", 200, None));
        tokio::time::sleep(Duration::from_millis(100)).await;
        sink.record_call(call("b", 200, None));
        let c = call("c", 200, None);
        let id = c.id.to_string();
        let committed = tokio::spawn({
            let sink = sink.clone();
            async move { sink.record_call_committed(c).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.execute_batch("COMMIT").unwrap();
        assert!(committed.await.unwrap());
        let conn = open_connection(&path, true).unwrap();
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM api_calls WHERE id = ?", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, 1);
        drop(sink);
        tokio::task::spawn_blocking(move || writer.close())
            .await
            .unwrap();
        assert_eq!(store.verify(&[]).unwrap().problem_count, 0);
    }

    /// The writer hashes the values it binds instead of reading each row back: the hash must be
    /// the one `verify` takes of the stored row, whatever the fields hold.
    #[test]
    fn the_hash_of_bound_values_is_the_hash_of_the_stored_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        let full = ApiCall {
            namespace: "prod".into(),
            subresource: "log".into(),
            name: "web-0".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            method: "GET".into(),
            path: "/api/v1/namespaces/prod/pods/web-0/log".into(),
            query: "follow=true&container=é".into(),
            duration_us: i64::MAX,
            bytes_in: u64::MAX / 2,
            bytes_out: 0,
            user_agent: "kubectl/v1.33".into(),
            source_ip: "10.0.0.1".into(),
            kubectl_command: "kubectl logs -f web-0".into(),
            kubectl_session: "s".into(),
            request_id: Some(Uuid::now_v7()),
            reason: "ok".into(),
            ..call("alice", 200, Some(Uuid::now_v7()))
        };
        let sparse = call("", 0, None);
        let (sink, writer) = store.start_writer(4).unwrap();
        sink.record_call(full.clone());
        sink.record_call(sparse.clone());
        drop(sink);
        writer.close();
        let conn = open_connection(&path, true).unwrap();
        for c in [&full, &sparse] {
            let (journaled, stored): (Vec<u8>, chain::Hash) = conn
                .query_row(
                    &format!(
                        "SELECT j.content_hash, {} FROM api_calls JOIN chain j USING (seq) WHERE id = ?",
                        chain::CALL_FIELDS
                    ),
                    [c.id.to_string()],
                    |r| {
                        Ok((
                            r.get(0)?,
                            chain::content_hash(Kind::Call, &Row::Sqlite(r), 1)?,
                        ))
                    },
                )
                .unwrap();
            assert_eq!(journaled, stored.to_vec(), "{c:?}");
        }
        // Each value is stored with its column's declared type (no affinity conversion), which
        // is what makes hashing the bound values equal to hashing the row.
        let declared: Vec<(String, String)> = conn
            .prepare("SELECT name, type FROM pragma_table_info('api_calls')")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for field in chain::CALL_FIELDS.split(',').map(str::trim) {
            let name = field.trim_matches('"');
            let (_, ty) = declared.iter().find(|(n, _)| n == name).unwrap();
            let stored: String = conn
                .query_row(
                    &format!("SELECT typeof({field}) FROM api_calls WHERE id = ?"),
                    [full.id.to_string()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stored, ty.to_lowercase(), "column {field}");
        }
        assert_eq!(store.verify(&[]).unwrap().problem_count, 0);
    }

    #[test]
    fn records_after_follows_write_order_across_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let (sink, writer) = store.start_writer(16).unwrap();
        let mut cmd = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            cluster: "dev".into(),
            argv: vec!["kubectl".into()],
            command_line: "kubectl get po".into(),
            ..Default::default()
        };
        sink.record_command(cmd.clone()); // 1
        sink.record_call(call("alice", 200, Some(cmd.id))); // 2
        sink.record_call(call("bob", 404, None)); // 3
        cmd.ended_us = Some(now_us());
        cmd.exit_code = Some(0);
        sink.record_command(cmd.clone()); // 4: the same command again, updated
        drop(sink);
        writer.close();
        let all = store.records_after(0, &Filter::default(), 100).unwrap();
        let seqs: Vec<i64> = all.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3, 4], "the command's first write was replaced");
        assert_eq!(all.through, 4);
        assert!(
            matches!(&all.records[2].record, Record::Command(c) if c.command.exit_code == Some(0) && c.calls == 1)
        );
        let bob = store
            .records_after(0, &Filter::parse_query("user:bob").unwrap(), 100)
            .unwrap();
        assert_eq!(bob.records.len(), 1);
        assert_eq!(bob.through, 4, "the scan covered everything");
        let first = store.records_after(0, &Filter::default(), 2).unwrap();
        assert_eq!(first.records.len(), 2);
        assert_eq!(first.through, 3);
        let rest = store
            .records_after(first.through, &Filter::default(), 2)
            .unwrap();
        assert_eq!(rest.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
        assert!(store
            .records_after(4, &Filter::default(), 10)
            .unwrap()
            .records
            .is_empty());
    }

    #[test]
    fn migration_numbers_existing_records_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = open_connection(&path, false).unwrap();
        migrate(&mut conn, &MIGRATIONS[..2]).unwrap();
        conn.execute_batch(
            "INSERT INTO commands (id, started_us, user, cluster, argv, command_line, api_calls, access_method, cwd, host) \
             VALUES ('m1', 20, 'a', 'c', '[]', 'kubectl get po', 1, 'cli', '/', 'h');",
        )
        .unwrap();
        for (id, t) in [("c2", 30), ("c1", 10)] {
            let mut c = call("a", 200, None);
            c.time_us = t;
            insert_call_v2(&conn, id, &c);
        }
        drop(conn);
        let store = AuditStore::open(&path).unwrap();
        assert_eq!(store.last_seq().unwrap(), 3);
        let conn = open_connection(&path, true).unwrap();
        let seq = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(seq("SELECT seq FROM api_calls WHERE id = 'c1'"), 1);
        assert_eq!(seq("SELECT seq FROM commands WHERE id = 'm1'"), 2);
        assert_eq!(seq("SELECT seq FROM api_calls WHERE id = 'c2'"), 3);
    }

    #[test]
    fn migration_moves_client_timings_into_client_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.db");
        let mut conn = open_connection(&path, false).unwrap();
        let outbox = MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE client_calls"))
            .unwrap();
        migrate(&mut conn, &MIGRATIONS[..outbox]).unwrap();
        conn.execute_batch(
            "INSERT INTO client_timings VALUES ('r1', 'm1', 1234, 200), ('r2', NULL, 5, 404);",
        )
        .unwrap();
        drop(conn);
        let store = AuditStore::open(&path).unwrap();
        let conn = open_connection(&path, true).unwrap();
        let d: i64 = conn
            .query_row(
                "SELECT duration_us FROM client_calls WHERE id = 'r1' AND request_id = 'r1' AND command_id = 'm1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(d, 1234);
        // Not a write of the chained tables: the sequence and the chain are untouched.
        assert_eq!(store.last_seq().unwrap(), 0);
        assert!(store.verify(&[]).unwrap().ok());
    }

    /// An insert as a store at schema 2 (before the sequence) wrote it.
    fn insert_call_v2(conn: &Connection, id: &str, c: &ApiCall) {
        conn.execute(
            "INSERT INTO api_calls (id, time_us, user, cluster, namespace, resource, subresource, name, \
             api_group, api_version, verb, method, path, query, status, duration_us, bytes_in, bytes_out, \
             user_agent, source_ip, kubectl_command, kubectl_session, access_method, decision, reason) \
             VALUES (?, ?, ?, ?, '', 'pods', '', '', '', 'v1', 'list', 'GET', '/', '', 200, 1, 0, 0, '', '', '', '', 'cli', 'allow', '')",
            rusqlite::params![id, c.time_us, c.user, c.cluster],
        )
        .unwrap();
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_failing_store_holds_records_and_writes_them_when_it_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        let (sink, writer) = store.start_writer(16).unwrap();
        sink.record_call(call("alice", 200, None));
        assert!(sink.flush(Duration::from_secs(5)));
        assert!(sink.healthy());
        // Break the store under the writer (another connection renames a table it writes).
        let other = open_connection(&path, false).unwrap();
        other
            .execute_batch("ALTER TABLE sequence RENAME TO sequence_away")
            .unwrap();
        for _ in 0..5 {
            sink.record_call(call("bob", 200, None));
        }
        wait_until("the writer reports the failure", || !sink.healthy());
        let status = sink.stats().status();
        assert!(status.pending >= 1 && status.delayed >= 1, "{status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("sequence"),
            "{status:?}"
        );
        sink.record_call(call("carol", 200, None));
        other
            .execute_batch("ALTER TABLE sequence_away RENAME TO sequence")
            .unwrap();
        assert!(sink.flush(Duration::from_secs(10)));
        let status = sink.stats().status();
        assert!(status.healthy, "{status:?}");
        assert_eq!((status.written, status.pending, status.failed), (7, 0, 0));
        assert!(status.delayed <= 6, "{status:?}");
        drop(sink);
        writer.close();
        assert_eq!(store.list_calls(&Filter::default()).unwrap().len(), 7);
        assert!(store.verify(&[]).unwrap().ok());
    }

    #[test]
    fn a_best_effort_writer_counts_what_its_full_hold_cannot_take() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        let config = WriterConfig {
            hold_max: 2,
            ..Default::default()
        };
        let (sink, writer) = store.start_writer_with(16, config).unwrap();
        let other = open_connection(&path, false).unwrap();
        other
            .execute_batch("ALTER TABLE sequence RENAME TO sequence_away")
            .unwrap();
        sink.record_call(call("alice", 200, None));
        sink.record_call(call("alice", 200, None));
        wait_until("the writer holds two records", || {
            sink.stats().status().pending == 2
        });
        for _ in 0..3 {
            sink.record_call(call("bob", 200, None));
        }
        wait_until("the overflow is counted", || {
            sink.stats().status().failed == 3
        });
        other
            .execute_batch("ALTER TABLE sequence_away RENAME TO sequence")
            .unwrap();
        assert!(sink.flush(Duration::from_secs(10)));
        drop(sink);
        let status = writer.close().status();
        assert_eq!(
            (status.written, status.failed, status.pending),
            (2, 3, 0),
            "{status:?}"
        );
    }

    #[test]
    fn a_store_still_failing_at_close_spills_held_records_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        let config = WriterConfig {
            close_grace: Duration::from_millis(300),
            ..Default::default()
        };
        let (sink, writer) = store.start_writer_with(16, config).unwrap();
        let other = open_connection(&path, false).unwrap();
        other
            .execute_batch("ALTER TABLE sequence RENAME TO sequence_away")
            .unwrap();
        let calls: Vec<ApiCall> = (0..3).map(|_| call("alice", 200, None)).collect();
        for c in &calls {
            sink.record_call(c.clone());
        }
        drop(sink);
        let stats = writer.close().status();
        assert_eq!(
            (stats.spilled, stats.failed, stats.written),
            (3, 0, 0),
            "{stats:?}"
        );
        let spilled: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("unwritten"))
            .collect();
        assert_eq!(spilled.len(), 1);
        let text = std::fs::read_to_string(spilled[0].path()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["call"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            ids,
            calls.iter().map(|c| c.id.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn writer_commits_everything_before_close_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let (sink, writer) = store.start_writer(4).unwrap();
        let cmd = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            ended_us: Some(now_us()),
            user: "alice".into(),
            cluster: "dev".into(),
            argv: vec!["kubectl".into(), "get".into(), "po".into()],
            command_line: "kubectl get po".into(),
            ..Default::default()
        };
        sink.record_command(cmd.clone());
        for i in 0..100 {
            sink.record_call(call(
                if i % 2 == 0 { "alice" } else { "bob" },
                200 + (i % 3) * 100,
                Some(cmd.id),
            ));
        }
        drop(sink);
        let stats = writer.close();
        assert_eq!(stats.written.load(Ordering::Relaxed), 101);
        let all = store.list_calls(&Filter::default()).unwrap();
        assert_eq!(all.len(), 100);
        // A call is shown under a command only when both are the same user's.
        for row in &all {
            let expected = (row.call.user == "alice").then_some("kubectl get po");
            assert_eq!(row.command_line.as_deref(), expected);
        }
        let alice = store
            .list_calls(&Filter {
                users: vec!["alice".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(alice.len(), 50);
        let limited = store
            .list_calls(&Filter {
                limit: Some(7),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(limited.len(), 7);
        assert_eq!(store.command(cmd.id).unwrap().unwrap().argv, cmd.argv);
    }

    #[test]
    fn repeated_commands_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let mut cmd = Command {
            id: Uuid::now_v7(),
            started_us: 1,
            ended_us: Some(2),
            user: "alice".into(),
            ..Default::default()
        };
        store.upsert_commands(&[cmd.clone()]).unwrap();
        cmd.exit_code = Some(3);
        store.upsert_commands(&[cmd.clone(), cmd.clone()]).unwrap();
        let batch = store.outbox_batch("alice", 10).unwrap();
        assert_eq!(batch.commands.len(), 1);
        assert_eq!(batch.commands[0].exit_code, Some(3));
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        AuditStore::open(&path)
            .unwrap()
            .upsert_commands(&[Command {
                id: Uuid::now_v7(),
                ended_us: Some(1),
                user: "alice".into(),
                ..Default::default()
            }])
            .unwrap();
        let again = AuditStore::open(&path).unwrap();
        assert_eq!(again.pending_count("alice").unwrap(), 1);
    }
}
