//! The gateway's side of shipping: storing a client's batch of records in one transaction.
//!
//! Records are keyed by their client-made UUIDv7 ids, so a batch sent again stores nothing
//! twice: an existing call is left alone unless the stored one is a placeholder (a fail-closed
//! proxy's "in progress" record, a stream's open record) and the new one comes later; an
//! existing command is updated only when its end changed or it gains a reason. A record
//! whose id already belongs to another user's record refuses the whole batch.

use std::sync::Mutex;

use uuid::Uuid;

use super::chain::{self, Kind};
use super::model::{limits, ApiCall, Command, IN_PROGRESS, STREAM_OPEN};
use super::store::{
    call_params, lock_sequence, upsert_command_row, AuditStore, CallText, StoreError, WriterConn,
    UPDATE_COMMAND_REASON,
};
use crate::args;
use crate::db::{Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The id belongs to another user's record. Who that is stays unsaid: ids are the only
    /// thing a client may guess, and the answer must not tell it whose records they are.
    #[error("{kind} {id} is already in use by another user's record")]
    Foreign { kind: &'static str, id: Uuid },
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A database error, before the store's location is added to it.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A record the gateway does not store: a field holds a NUL character or exceeds its limit
/// (`model::limits`). Messages name the record and the field, never its content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRecord {
    #[error("{kind} {id}: {field} holds a NUL character, which no record may hold")]
    Nul {
        kind: &'static str,
        id: Uuid,
        field: String,
    },
    #[error(
        "{kind} {id}: {field} is {len} bytes, more than the limit of {max}; ztk clients cut \
         their records to the limits, so upgrade this one"
    )]
    TooLong {
        kind: &'static str,
        id: Uuid,
        field: String,
        len: usize,
        max: usize,
    },
    #[error(
        "{kind} {id}: argv has {count} arguments, more than the limit of {max}; ztk clients \
         cut their records to the limits, so upgrade this one"
    )]
    TooManyArgs {
        kind: &'static str,
        id: Uuid,
        count: usize,
        max: usize,
    },
}

fn check_text(
    kind: &'static str,
    id: Uuid,
    field: &str,
    value: &str,
    max: usize,
) -> Result<(), InvalidRecord> {
    if value.len() > max {
        return Err(InvalidRecord::TooLong {
            kind,
            id,
            field: field.to_string(),
            len: value.len(),
            max,
        });
    }
    if value.contains('\0') {
        return Err(InvalidRecord::Nul {
            kind,
            id,
            field: field.to_string(),
        });
    }
    Ok(())
}

/// Checks a client's command: no NUL anywhere, every field within its limit.
pub fn check_command(c: &Command) -> Result<(), InvalidRecord> {
    let kind = "command";
    c.for_each_text(|field, value, max| check_text(kind, c.id, field, value, max))?;
    if c.argv.len() > limits::MAX_ARGS {
        return Err(InvalidRecord::TooManyArgs {
            kind,
            id: c.id,
            count: c.argv.len(),
            max: limits::MAX_ARGS,
        });
    }
    let mut total = 0;
    for (i, arg) in c.argv.iter().enumerate() {
        check_text(kind, c.id, &format!("argv[{i}]"), arg, usize::MAX)?;
        total += arg.len();
    }
    if total > limits::MAX_ARGV_BYTES {
        return Err(InvalidRecord::TooLong {
            kind,
            id: c.id,
            field: "argv".into(),
            len: total,
            max: limits::MAX_ARGV_BYTES,
        });
    }
    Ok(())
}

/// Checks a client's call: no NUL anywhere, every field within its limit.
pub fn check_call(c: &ApiCall) -> Result<(), InvalidRecord> {
    c.for_each_text(|field, value, max| check_text("call", c.id, field, value, max))
}

/// How many rows a batch wrote (new records, or records brought up to date).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub calls: usize,
    pub commands: usize,
}

/// Stores client batches through one long-lived connection (opening one per batch would cost
/// more than a small batch's inserts).
pub struct Ingestor {
    store: AuditStore,
    /// SQLite: the one connection (its writes take turns anyway).
    conn: Mutex<Option<WriterConn>>,
    /// PostgreSQL: connections back from use; batches are stored side by side, each on its own.
    idle: Mutex<Vec<WriterConn>>,
}

/// PostgreSQL connections the ingest keeps for the next batches.
const IDLE_CONNECTIONS: usize = 4;

impl Ingestor {
    pub fn new(store: AuditStore) -> Ingestor {
        Ingestor {
            store,
            conn: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Stores one batch of `user`'s records: all of it, or (on any error) nothing.
    pub fn ingest(
        &self,
        user: &str,
        commands: &[Command],
        calls: &[ApiCall],
    ) -> Result<Ingested, IngestError> {
        // Every record is checked before anything is written.
        commands.iter().try_for_each(check_command)?;
        calls.iter().try_for_each(check_call)?;
        if self.store.dialect() == crate::db::Dialect::Postgres {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => self.store.ingest_connection()?,
            };
            let result = conn
                .db()
                .transaction(true, |tx| write(tx, user, commands, calls));
            return match result {
                Ok(done) => {
                    let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() < IDLE_CONNECTIONS {
                        idle.push(conn);
                    }
                    Ok(done)
                }
                // A connection that failed is not trusted again.
                Err(IngestError::Db(e)) => Err(IngestError::Store(self.store.db_err(e))),
                Err(e) => Err(e),
            };
        }
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.store.ingest_connection()?);
        }
        let conn = guard.as_mut().expect("opened above");
        let result = conn
            .db()
            .transaction(true, |tx| write(tx, user, commands, calls));
        match result {
            Ok(done) => Ok(done),
            Err(IngestError::Db(e)) => {
                // A connection that failed (disk full, file replaced, server gone) is not
                // trusted again.
                *guard = None;
                Err(IngestError::Store(self.store.db_err(e)))
            }
            Err(e) => Err(e),
        }
    }
}

/// A command from a client: inserted, or brought forward — only by its own user, and only when
/// something changed (RETURNING then gives no row). Records of one command may arrive out of
/// order (two batches in flight, stored side by side; a retry), so an update only moves a
/// command forward: its end to a later one, never back to none; an exit code once set is kept
/// unless a record brings another; its call count only up; a reason once set is kept.
static UPSERT_COMMAND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO commands (id, started_us, ended_us, \"user\", cluster, argv, command_line, exit_code, \
         api_calls, access_method, cwd, host, reason, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT(id) DO UPDATE SET \
         ended_us = CASE WHEN excluded.ended_us IS NULL THEN commands.ended_us \
             WHEN commands.ended_us IS NULL OR excluded.ended_us > commands.ended_us THEN excluded.ended_us \
             ELSE commands.ended_us END, \
         exit_code = COALESCE(excluded.exit_code, commands.exit_code), \
         api_calls = CASE WHEN excluded.api_calls > commands.api_calls THEN excluded.api_calls \
             ELSE commands.api_calls END, \
         {}, seq = excluded.seq \
         WHERE commands.user = excluded.user AND ( \
         (excluded.ended_us IS NOT NULL AND (commands.ended_us IS NULL OR excluded.ended_us > commands.ended_us)) \
         OR (excluded.exit_code IS NOT NULL AND commands.exit_code IS DISTINCT FROM excluded.exit_code) \
         OR excluded.api_calls > commands.api_calls \
         OR (excluded.reason != '' AND commands.reason != excluded.reason)) \
         RETURNING {}",
        UPDATE_COMMAND_REASON,
        chain::COMMAND_FIELDS
    )
});

/// The columns of a client's call, in the order `call_values` binds them.
const CLIENT_CALL_COLUMNS: &str = "id, time_us, \"user\", cluster, namespace, resource, subresource, name, \
     api_group, api_version, verb, method, path, query, status, duration_us, bytes_in, bytes_out, \
     user_agent, source_ip, kubectl_command, kubectl_session, command_id, request_id, access_method, \
     decision, reason";
const CLIENT_CALL_WIDTH: usize = 27;

/// Client calls per statement: one multi-row insert (a round trip to PostgreSQL) for many.
const CALLS_PER_STATEMENT: usize = 256;

/// Clients' calls: inserted, or a placeholder (an open stream, a call in progress) replaced by
/// a later record of the same user; returns the ids of the rows written (none for a record
/// already there, or another user's).
fn upsert_client_calls_sql(rows: usize, returning: bool) -> String {
    let one = format!("({})", vec!["?"; CLIENT_CALL_WIDTH].join(","));
    let (open, progress) = (rows * CLIENT_CALL_WIDTH + 1, rows * CLIENT_CALL_WIDTH + 2);
    format!(
        "INSERT INTO client_calls ({CLIENT_CALL_COLUMNS}) VALUES {} \
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, duration_us = excluded.duration_us, \
         bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, decision = excluded.decision, \
         reason = excluded.reason \
         WHERE client_calls.user = excluded.user AND ( \
         (client_calls.reason = ?{progress} AND excluded.reason != ?{progress}) OR \
         (client_calls.reason = ?{open} AND excluded.reason NOT IN (?{open}, ?{progress}))){}",
        vec![one.as_str(); rows].join(","),
        if returning { " RETURNING id" } else { "" }
    )
}

/// The columns' types of `CLIENT_CALL_COLUMNS` (PostgreSQL), for `COPY`.
fn client_call_types() -> Vec<crate::db::PgType> {
    use crate::db::PgType as T;
    let mut t = vec![T::TEXT, T::INT8];
    t.extend([T::TEXT; 12]);
    t.extend([T::INT8; 4]);
    t.extend([T::TEXT; 9]);
    t
}

/// PostgreSQL: calls (ids distinct) copied into a temporary table, then upserted from it in one
/// statement; whether each was written.
fn copy_client_calls(tx: &mut Db, calls: &[&ApiCall]) -> Result<Vec<bool>, DbError> {
    use crate::db::Param;
    let texts: Vec<CallText> = calls.iter().map(|c| CallText::of(c)).collect();
    let mut params: Vec<&dyn Param> = Vec::with_capacity(calls.len() * CLIENT_CALL_WIDTH);
    for (c, text) in calls.iter().zip(&texts) {
        params.extend(call_params(c, text));
    }
    // Emptied by each commit (and gone with the connection).
    tx.batch(
        "CREATE TEMP TABLE IF NOT EXISTS ingest_calls (LIKE client_calls INCLUDING DEFAULTS) \
         ON COMMIT DELETE ROWS; DELETE FROM ingest_calls",
    )?;
    let Db::Postgres(conn) = tx else {
        return Err(DbError::Invalid("COPY is PostgreSQL's".into()));
    };
    conn.copy_in(
        &format!("ingest_calls ({CLIENT_CALL_COLUMNS})"),
        &client_call_types(),
        &params,
    )?;
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO client_calls ({CLIENT_CALL_COLUMNS}) SELECT {CLIENT_CALL_COLUMNS} FROM ingest_calls \
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, duration_us = excluded.duration_us, \
             bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, decision = excluded.decision, \
             reason = excluded.reason \
             WHERE client_calls.user = excluded.user AND ( \
             (client_calls.reason = ?2 AND excluded.reason != ?2) OR \
             (client_calls.reason = ?1 AND excluded.reason NOT IN (?1, ?2))) \
             RETURNING id"
        )
    });
    let mut written = std::collections::HashSet::with_capacity(calls.len());
    tx.query_each(&UPSERT, crate::args![STREAM_OPEN, IN_PROGRESS], &mut |r| {
        written.insert(r.text(0)?);
        Ok(())
    })?;
    Ok(texts.iter().map(|t| written.contains(t.id())).collect())
}

/// Calls copied at once at most (a client's batch is 2,000 records).
const COPY_ROWS: usize = 10_000;

/// Calls a batch holds at least for `COPY` to be worth its two extra statements.
const COPY_FROM: usize = 64;

/// Stores `calls` (ids distinct) in one statement; whether each was written.
fn upsert_client_calls(tx: &mut Db, calls: &[&ApiCall]) -> Result<Vec<bool>, DbError> {
    use crate::db::Param;
    let texts: Vec<CallText> = calls.iter().map(|c| CallText::of(c)).collect();
    let mut params: Vec<&dyn Param> = Vec::with_capacity(calls.len() * CLIENT_CALL_WIDTH + 2);
    for (c, text) in calls.iter().zip(&texts) {
        params.extend(call_params(c, text));
    }
    params.push(&STREAM_OPEN);
    params.push(&IN_PROGRESS);
    let mut written = std::collections::HashSet::with_capacity(calls.len());
    // One call: the count of rows changed says it (SQLite, one statement per call).
    static ONE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| upsert_client_calls_sql(1, false));
    if calls.len() == 1 {
        return Ok(vec![tx.execute(&ONE, &params)? > 0]);
    }
    static FULL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| upsert_client_calls_sql(CALLS_PER_STATEMENT, true));
    let sql: std::borrow::Cow<str> = match calls.len() {
        CALLS_PER_STATEMENT => FULL.as_str().into(),
        n => upsert_client_calls_sql(n, true).into(),
    };
    tx.query_each(&sql, &params, &mut |r| {
        written.insert(r.text(0)?);
        Ok(())
    })?;
    Ok(texts.iter().map(|t| written.contains(t.id())).collect())
}

/// Of the records of `table` with these ids, one that belongs to another user than `user`.
fn foreign(tx: &mut Db, table: &str, ids: &[Uuid], user: &str) -> Result<Option<Uuid>, DbError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let marks = vec!["?"; ids.len()].join(",");
    let mut params: Vec<&dyn crate::db::Param> =
        ids.iter().map(|v| v as &dyn crate::db::Param).collect();
    params.push(&user);
    let found = tx.query_row(
        &format!("SELECT id FROM {table} WHERE id IN ({marks}) AND \"user\" <> ? LIMIT 1"),
        &params,
        |r| r.text(0),
    )?;
    Ok(found.map(|id| Uuid::parse_str(&id).unwrap_or_default()))
}

/// PostgreSQL: `commands` (ids distinct) in one upsert, row i offered number `after + i + 1`;
/// the content hash of each row written, by id.
fn upsert_commands_together(
    tx: &mut Db,
    commands: &[Command],
    after: i64,
) -> Result<std::collections::HashMap<String, chain::Hash>, DbError> {
    use crate::db::Param;
    let owned: Vec<_> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.id.to_string(),
                serde_json::to_string(&c.argv).unwrap_or_else(|_| "[]".into()),
                c.access_method.as_str(),
                after + i as i64 + 1,
            )
        })
        .collect();
    let mut params: Vec<&dyn Param> = Vec::with_capacity(commands.len() * 14);
    for (c, o) in commands.iter().zip(&owned) {
        params.extend([
            &o.0 as &dyn Param,
            &c.started_us,
            &c.ended_us,
            &c.user,
            &c.cluster,
            &o.1,
            &c.command_line,
            &c.exit_code,
            &c.api_calls,
            &o.2,
            &c.cwd,
            &c.host,
            &c.reason,
            &o.3,
        ]);
    }
    let sql = UPSERT_COMMAND.replacen(
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        &format!(
            "VALUES {}",
            vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; commands.len()].join(",")
        ),
        1,
    );
    let mut written = std::collections::HashMap::with_capacity(commands.len());
    tx.query_each(&sql, &params, &mut |row| {
        written.insert(row.text(0)?, chain::content_hash(Kind::Command, row, 0)?);
        Ok(())
    })?;
    Ok(written)
}

/// One batch, inside the transaction `tx`.
fn write(
    tx: &mut Db,
    user: &str,
    commands: &[Command],
    calls: &[ApiCall],
) -> Result<Ingested, IngestError> {
    let mut done = Ingested::default();
    // The clients' calls first: they take no number of the sequence, so concurrent batches
    // (PostgreSQL) store them side by side; the sequence is held only for the commands after.
    // The calls this batch stored (not those it left alone): rolled up below, once each.
    let mut stored = Vec::new();
    // PostgreSQL: many calls per statement (a round trip each); SQLite takes them one by one
    // from its prepared statement faster than it parses a statement of many.
    let per_statement = match tx.dialect() {
        crate::db::Dialect::Postgres => COPY_ROWS,
        crate::db::Dialect::Sqlite => 1,
    };
    let mut chunk: Vec<&ApiCall> = Vec::with_capacity(per_statement);
    let mut ids = std::collections::HashSet::new();
    let mut rest = calls.iter().peekable();
    while rest.peek().is_some() {
        // One statement may not write a row twice: a repeated id starts the next one.
        chunk.clear();
        ids.clear();
        while let Some(c) = rest.peek() {
            if chunk.len() == per_statement || !ids.insert(c.id) {
                break;
            }
            chunk.push(c);
            rest.next();
        }
        let written = if chunk.len() >= COPY_FROM {
            copy_client_calls(tx, &chunk)?
        } else {
            upsert_client_calls(tx, &chunk)?
        };
        let mut left = Vec::new();
        for (c, written) in chunk.iter().zip(written) {
            if written {
                done.calls += 1;
                stored.push(*c);
            } else {
                left.push(c.id);
            }
        }
        // Left alone: already stored, or another user's (which refuses the whole batch).
        if let Some(id) = foreign(tx, "client_calls", &left, user)? {
            return Err(IngestError::Foreign { kind: "call", id });
        }
    }
    super::stats::roll_up_client_calls(tx, stored)?;
    if commands.is_empty() {
        return Ok(done);
    }
    // Commands are the store's own chained records: each one written takes the next number of
    // the write sequence and a journal entry; one left unchanged takes neither (the chain's
    // verify counts on every number taken being journaled).
    let mut seq = lock_sequence(tx)?;
    let mut journal = chain::Appender::default();
    if tx.dialect() == crate::db::Dialect::Postgres {
        // Many commands per statement (a round trip each). Each row is offered the number
        // after the previous one; a row left unchanged leaves its number unused (a gap, which
        // followers of the sequence and the chain pass over).
        let mut rest = commands;
        // The numbers offered so far; `seq` is the last one a written row took.
        let mut offered = seq;
        while !rest.is_empty() {
            let mut n = 0;
            let mut ids = std::collections::HashSet::new();
            while n < rest.len() && n < CALLS_PER_STATEMENT && ids.insert(rest[n].id) {
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let written = upsert_commands_together(tx, chunk, offered)?;
            let mut left = Vec::new();
            for (i, cmd) in chunk.iter().enumerate() {
                match written.get(&cmd.id.to_string()) {
                    Some(content) => {
                        seq = offered + i as i64 + 1;
                        journal.defer(tx, seq, Kind::Command, &cmd.id.to_string(), content)?;
                        done.commands += 1;
                    }
                    None => left.push(cmd.id),
                }
            }
            offered += chunk.len() as i64;
            if let Some(id) = foreign(tx, "commands", &left, user)? {
                return Err(IngestError::Foreign {
                    kind: "command",
                    id,
                });
            }
        }
    } else {
        for cmd in commands {
            let id = cmd.id.to_string();
            match upsert_command_row(tx, &UPSERT_COMMAND, &id, cmd, seq + 1)? {
                Some(content) => {
                    seq += 1;
                    journal.defer(tx, seq, Kind::Command, &id, &content)?;
                    done.commands += 1;
                }
                None => {
                    if let Some(id) = foreign(tx, "commands", &[cmd.id], user)? {
                        return Err(IngestError::Foreign {
                            kind: "command",
                            id,
                        });
                    }
                }
            }
        }
    }
    if done.commands > 0 {
        journal.flush(tx)?;
        tx.execute("UPDATE sequence SET last = ? WHERE id = 1", args![seq])?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::now_us;

    fn call(user: &str) -> ApiCall {
        ApiCall {
            id: Uuid::now_v7(),
            time_us: now_us(),
            user: user.into(),
            cluster: "dev".into(),
            method: "GET".into(),
            verb: "list".into(),
            status: 200,
            decision: "allow".into(),
            ..Default::default()
        }
    }

    fn count(store: &AuditStore, table: &str) -> i64 {
        let conn = store.connect(true).unwrap();
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn nul_characters_and_fields_beyond_their_limits_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("gw.db")).unwrap();
        let ingestor = Ingestor::new(store.clone());
        let mut nul = call("alice");
        nul.user_agent = "secret\0agent".into();
        let err = ingestor
            .ingest("alice", &[], &[call("alice"), nul.clone()])
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            IngestError::Invalid(InvalidRecord::Nul { .. })
        ));
        assert!(
            text.contains(&nul.id.to_string()) && text.contains("user_agent"),
            "{text}"
        );
        assert!(
            !text.contains("secret"),
            "the content is not echoed: {text}"
        );
        assert_eq!(
            count(&store, "client_calls"),
            0,
            "nothing of the batch was stored"
        );

        let cmd = |argv: Vec<String>| Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv,
            ..Default::default()
        };
        let with_nul = cmd(vec!["kubectl".into(), "get\0".into()]);
        let err = check_command(&with_nul).unwrap_err().to_string();
        assert!(err.contains("argv[1]") && err.contains("NUL"), "{err}");
        let many = cmd(vec!["a".into(); limits::MAX_ARGS + 1]);
        let err = check_command(&many).unwrap_err().to_string();
        assert!(
            err.contains("1025 arguments") && err.contains("1024"),
            "{err}"
        );
        let big = cmd(vec!["x".repeat(40_000), "y".repeat(40_000)]);
        let err = check_command(&big).unwrap_err().to_string();
        assert!(
            err.contains("argv is 80000 bytes") && err.contains("65536"),
            "{err}"
        );
        let mut long_cwd = cmd(vec!["kubectl".into()]);
        long_cwd.cwd = "d".repeat(limits::MAX_FIELD_BYTES + 1);
        let err = check_command(&long_cwd).unwrap_err().to_string();
        assert!(
            err.contains("cwd is 8193 bytes") && err.contains("8192"),
            "{err}"
        );
        let mut long_reason = cmd(vec!["kubectl".into()]);
        long_reason.reason = "r".repeat(limits::MAX_FIELD_BYTES + 1);
        let err = check_command(&long_reason).unwrap_err().to_string();
        assert!(err.contains("reason is 8193 bytes"), "{err}");
        long_reason.reason = "refused\0".into();
        let err = check_command(&long_reason).unwrap_err().to_string();
        assert!(err.contains("reason") && err.contains("NUL"), "{err}");
        let mut long_path = call("alice");
        long_path.path = "/".repeat(limits::MAX_FIELD_BYTES + 1);
        let err = check_call(&long_path).unwrap_err().to_string();
        assert!(err.contains("path is 8193 bytes"), "{err}");
        let mut long_query = call("alice");
        long_query.query = "q".repeat(limits::MAX_LONG_FIELD_BYTES);
        check_call(&long_query).unwrap();
        long_query.query.push('q');
        assert!(check_call(&long_query).is_err());
        // At the limits exactly: accepted.
        let mut edge = cmd(vec!["a".into(); limits::MAX_ARGS]);
        edge.host = "h".repeat(limits::MAX_FIELD_BYTES);
        edge.command_line = "c".repeat(limits::MAX_LONG_FIELD_BYTES);
        check_command(&edge).unwrap();
    }

    #[test]
    fn a_repeated_batch_stores_nothing_twice_and_a_foreign_id_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("gw.db")).unwrap();
        let ingestor = Ingestor::new(store.clone());
        let cmd = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv: vec!["kubectl".into()],
            ..Default::default()
        };
        let mut open = call("alice");
        open.status = 101;
        open.reason = STREAM_OPEN.into();
        let calls = vec![call("alice"), open.clone()];
        let first = ingestor
            .ingest("alice", std::slice::from_ref(&cmd), &calls)
            .unwrap();
        assert_eq!(
            first,
            Ingested {
                calls: 2,
                commands: 1
            }
        );
        let seq = store.last_seq().unwrap();
        let again = ingestor
            .ingest("alice", std::slice::from_ref(&cmd), &calls)
            .unwrap();
        assert_eq!(again, Ingested::default());
        assert_eq!(count(&store, "client_calls"), 2);
        assert_eq!(count(&store, "commands"), 1);

        // The final record of the stream replaces its open record; the command's end updates it.
        let mut closed = open.clone();
        closed.reason.clear();
        closed.bytes_out = 10;
        let mut ended = cmd.clone();
        ended.ended_us = Some(now_us());
        let update = ingestor.ingest("alice", &[ended], &[closed]).unwrap();
        assert_eq!(
            update,
            Ingested {
                calls: 1,
                commands: 1
            }
        );
        assert!(store.last_seq().unwrap() > seq);
        assert_eq!(count(&store, "client_calls"), 2);

        // A fail-closed proxy's placeholder is replaced by the stream's open record, then by the
        // final one; never the other way round.
        let mut pending = call("alice");
        pending.reason = IN_PROGRESS.into();
        ingestor.ingest("alice", &[], &[pending.clone()]).unwrap();
        let mut opened = pending.clone();
        opened.reason = STREAM_OPEN.into();
        let mut done = pending.clone();
        done.reason.clear();
        assert_eq!(
            ingestor
                .ingest("alice", &[], &[opened.clone()])
                .unwrap()
                .calls,
            1
        );
        assert_eq!(ingestor.ingest("alice", &[], &[done]).unwrap().calls, 1);
        assert_eq!(
            ingestor
                .ingest("alice", &[], &[opened, pending.clone()])
                .unwrap()
                .calls,
            0
        );
        let conn = store.connect(true).unwrap();
        let reason: String = conn
            .query_row(
                "SELECT reason FROM client_calls WHERE id = ?",
                [pending.id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(reason, "");
        drop(conn);

        // Bob re-using Alice's ids: refused, and his new record in the same batch is not kept.
        let bobs = call("bob");
        let mut stolen = calls[0].clone();
        stolen.user = "bob".into();
        let err = ingestor.ingest("bob", &[], &[bobs, stolen]).unwrap_err();
        assert!(
            matches!(err, IngestError::Foreign { kind: "call", .. }),
            "{err}"
        );
        // Whose record it is stays unsaid.
        assert!(
            err.to_string().contains("another user's record") && !err.to_string().contains("alice"),
            "{err}"
        );
        let mut cmd_stolen = cmd.clone();
        cmd_stolen.user = "bob".into();
        cmd_stolen.exit_code = Some(9);
        let err = ingestor.ingest("bob", &[cmd_stolen], &[]).unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::Foreign {
                    kind: "command",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(count(&store, "client_calls"), 3);
        assert_eq!(store.command(cmd.id).unwrap().unwrap().exit_code, None);
        // Every command written was journaled: the gateway's chain still verifies.
        assert!(store.verify(&[]).unwrap().ok());
    }

    #[test]
    fn a_later_record_of_a_command_may_give_it_a_reason_but_not_take_it_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("gw.db")).unwrap();
        let ingestor = Ingestor::new(store.clone());
        let started = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv: vec!["kubectl".into(), "logs".into(), "-f".into()],
            ..Default::default()
        };
        let written = |c: &Command| {
            ingestor
                .ingest("alice", std::slice::from_ref(c), &[])
                .unwrap()
                .commands
        };
        assert_eq!(written(&started), 1);
        let killed = Command {
            ended_us: Some(now_us()),
            exit_code: Some(137),
            reason: "killed: output limit".into(),
            ..started.clone()
        };
        assert_eq!(written(&killed), 1);
        assert_eq!(written(&killed), 0, "nothing changed");
        // A record without the reason (sent again, or by a client that knows no reasons)
        // changes nothing.
        let plain = Command {
            reason: String::new(),
            ..killed.clone()
        };
        assert_eq!(written(&plain), 0);
        assert_eq!(store.command(started.id).unwrap().unwrap(), killed);
        // Only its owner may set it.
        let err = ingestor
            .ingest(
                "bob",
                &[Command {
                    user: "bob".into(),
                    reason: "refused: forged".into(),
                    ..killed.clone()
                }],
                &[],
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::Foreign {
                    kind: "command",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            store.command(started.id).unwrap().unwrap().reason,
            killed.reason
        );
        assert!(store.verify(&[]).unwrap().ok());
    }
}
