//! `ztk gateway migrate`: a single gateway's SQLite data (users, sessions, bindings, and the
//! whole audit trail with its chain, checkpoints, clients' records and sink cursors) copied
//! into PostgreSQL, so that several gateways can share it.
//!
//! Rows are copied as they are, `seq` and hashes included: the chain hashes values the same
//! way on both backends, so the copy verifies. Rows already in the target are skipped, so a
//! second run copies only what the source gained meanwhile (stop the gateway for the last
//! run). A target holding another trail is refused. Rollups are derived data: made anew.

use std::path::Path;

use crate::audit::AuditStore;
use crate::db::copy::copy_table;
use crate::db::{Db, DbError, PgUrl};
use crate::gateway::config::GatewayConfig;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no SQLite data to copy: {0} does not exist (run this on the gateway host, with the config of the gateway whose data_dir holds gateway.db and audit.db)")]
    NoSource(String),
    #[error("{target} already holds another audit trail (its entry at seq {seq} differs from this gateway's): copy into an empty database")]
    OtherTrail { target: String, seq: i64 },
    #[error("{what}: {source}")]
    Db {
        what: String,
        #[source]
        source: DbError,
    },
    #[error(transparent)]
    Store(#[from] crate::audit::store::StoreError),
    #[error(transparent)]
    Users(#[from] crate::gateway::users::UserError),
}

/// The tables copied, in order, with their columns and the column read in order.
const TABLES: &[(&str, &[&str], &str)] = &[
    (
        "users",
        &["name", "password_hash", "groups", "created_us"],
        "name",
    ),
    (
        "sessions",
        &[
            "id",
            "token_hash",
            "\"user\"",
            "created_us",
            "expires_us",
            "revoked_us",
            "method",
            "subject",
            "groups",
        ],
        "id",
    ),
    (
        "bindings",
        &[
            "role",
            "subject_kind",
            "subject",
            "cluster",
            "namespace",
            "created_us",
        ],
        "role, subject_kind, subject, cluster, namespace",
    ),
    (
        "agent_ca",
        &["id", "cert_pem", "key_pem", "created_us"],
        "id",
    ),
    (
        "agent_tokens",
        &[
            "token_hash",
            "cluster",
            "created_us",
            "expires_us",
            "used_us",
            "used_by",
        ],
        "token_hash",
    ),
    (
        "agent_certs",
        &[
            "fingerprint",
            "cluster",
            "issued_us",
            "expires_us",
            "revoked_us",
            "origin",
        ],
        "fingerprint",
    ),
];

/// A call's content columns, in `api_calls` and in `client_calls` alike.
const CALL_COLUMNS: [&str; 27] = [
    "id",
    "time_us",
    "\"user\"",
    "cluster",
    "namespace",
    "resource",
    "subresource",
    "name",
    "api_group",
    "api_version",
    "verb",
    "method",
    "path",
    "query",
    "status",
    "duration_us",
    "bytes_in",
    "bytes_out",
    "user_agent",
    "source_ip",
    "kubectl_command",
    "kubectl_session",
    "command_id",
    "request_id",
    "access_method",
    "decision",
    "reason",
];

/// The audit store's tables copied, in order (the chain first, then what it journals).
fn audit_tables() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let with = |extra: &[&'static str]| [&CALL_COLUMNS[..], extra].concat();
    vec![
        (
            "chain",
            vec![
                "seq",
                "kind",
                "record_id",
                "content_hash",
                "prev_hash",
                "entry_hash",
            ],
            "seq",
        ),
        (
            "chain_prunes",
            vec![
                "seq",
                "upto",
                "anchor_seq",
                "anchor_hash",
                "survivors",
                "digest",
            ],
            "seq",
        ),
        (
            "chain_checkpoints",
            vec!["seq", "head", "time_us", "public_key", "signature"],
            "seq",
        ),
        ("api_calls", with(&["seq"]), "seq"),
        (
            "commands",
            vec![
                "id",
                "started_us",
                "ended_us",
                "\"user\"",
                "cluster",
                "argv",
                "command_line",
                "exit_code",
                "api_calls",
                "access_method",
                "cwd",
                "host",
                "shipped_us",
                "seq",
                "reason",
            ],
            "seq",
        ),
        ("client_calls", with(&["reconciled"]), "id"),
        (
            "sink_cursors",
            vec![
                "name",
                "seq",
                "delivered",
                "last_success_us",
                "last_error",
                "last_error_us",
                "updated_us",
            ],
            "name",
        ),
    ]
}

/// How many rows of a table were copied (rows already there are not counted).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    pub table: &'static str,
    pub rows: u64,
}

/// Copies `cfg`'s SQLite data into the PostgreSQL database at `url` (creating its schema).
/// Returns the rows copied per table and the target's audit store, for verifying.
pub fn to_postgres(
    cfg: &GatewayConfig,
    url: PgUrl,
    progress: &mut dyn FnMut(&Copied),
) -> Result<(Vec<Copied>, AuditStore), MigrateError> {
    for path in [cfg.db_path(), cfg.audit_path()] {
        if !path.exists() {
            return Err(MigrateError::NoSource(path.display().to_string()));
        }
    }
    // Opening them migrates them to this ztk's schema, as the gateway would at its start.
    crate::gateway::users::UserStore::open(&cfg.db_path())?;
    AuditStore::open(&cfg.audit_path())?;
    crate::gateway::users::UserStore::open_postgres(url.clone())?;
    let target = AuditStore::open_postgres(url.clone(), &cfg.data_dir.join("audit"))?;
    let db_err = |what: String| move |source| MigrateError::Db { what, source };
    let mut to = url
        .connect()
        .map_err(db_err(format!("connecting to {url}")))?;
    let mut to = Db::Postgres(&mut to);
    let mut copied = Vec::new();
    let user_tables: Vec<_> = TABLES
        .iter()
        .map(|(t, c, o)| (*t, c.to_vec(), *o))
        .collect();
    for (file, tables, audit) in [
        (cfg.db_path(), user_tables, false),
        (cfg.audit_path(), audit_tables(), true),
    ] {
        let conn = open(&file)?;
        let mut from = Db::Sqlite(&conn);
        if audit {
            same_trail(&mut from, &mut to, &url)?;
        }
        for (table, columns, order) in tables {
            let rows = copy_table(&mut from, &mut to, table, &columns, order)
                .map_err(db_err(format!("copying {table} into {url}")))?;
            let c = Copied { table, rows };
            progress(&c);
            copied.push(c);
        }
        if audit {
            finish_audit(&mut from, &mut to)
                .map_err(db_err(format!("finishing the audit trail in {url}")))?;
        }
    }
    // Rollups of the gateway's own calls, from the write sequence.
    target.roll_up()?;
    Ok((copied, target))
}

fn open(path: &Path) -> Result<rusqlite::Connection, MigrateError> {
    crate::audit::store::open_connection(path, true).map_err(|e| MigrateError::Db {
        what: format!("opening {}", path.display()),
        source: e.into(),
    })
}

/// Refuses a target whose chain is not a beginning of the source's (another trail).
fn same_trail(from: &mut Db, to: &mut Db, url: &PgUrl) -> Result<(), MigrateError> {
    let err = |source| MigrateError::Db {
        what: format!("reading the chain of {url}"),
        source,
    };
    let Some((seq, hash)) = crate::audit::chain::head(to).map_err(err)? else {
        return Ok(());
    };
    let theirs: Option<Vec<u8>> = from
        .query_row(
            "SELECT entry_hash FROM chain WHERE seq = ?",
            crate::args![seq],
            |r| r.get(0),
        )
        .map_err(err)?;
    if theirs.as_deref() != Some(&hash[..]) {
        return Err(MigrateError::OtherTrail {
            target: url.to_string(),
            seq,
        });
    }
    Ok(())
}

/// The sequence moved to the source's last number, and the rollups made anew.
fn finish_audit(from: &mut Db, to: &mut Db) -> Result<(), DbError> {
    let last: i64 = from
        .query_row("SELECT last FROM sequence WHERE id = 1", &[], |r| r.get(0))?
        .unwrap_or(0);
    to.transaction(true, |tx| {
        tx.execute(
            "UPDATE sequence SET last = CASE WHEN last < ? THEN ? ELSE last END WHERE id = 1",
            crate::args![last, last],
        )?;
        tx.execute("DELETE FROM call_rollups", &[])?;
        tx.execute("DELETE FROM call_rollups_by", &[])?;
        tx.execute(
            "UPDATE rollup_state SET through_seq = 0, by_through = 0 WHERE id = 1",
            &[],
        )?;
        crate::audit::stats::roll_up_stored_client_calls(tx)
    })
}
