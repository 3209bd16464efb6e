//! Tamper evidence for an audit store: an append-only journal that chains every write.
//!
//! Records are not immutable (a stream's open record is replaced by its final one, a command
//! row is updated at its end), so the chain is not over the rows themselves but over a journal
//! (`chain` table): every insert or update of a record appends one entry, in the writing
//! transaction, numbered by the write's `seq`:
//!
//! ```text
//! entry_hash = SHA-256("ztk-chain-v1" ‖ prev entry_hash ‖ seq ‖ kind ‖ record id ‖ content hash)
//! ```
//!
//! The content hash covers an explicit list of content columns ([`CALL_FIELDS`],
//! [`COMMAND_FIELDS`]) in a length-prefixed encoding; bookkeeping columns (`shipped_us`, `seq`)
//! are left out so shipping never changes a hash. [`verify`] checks that (1) the entries link,
//! (2) every row's content matches the latest entry of its record, at the row's `seq`, and
//! (3) every record whose latest entry is in the journal still has its row. An edit, a
//! deletion or an insertion made behind ztk's back (the sqlite3 CLI) breaks one of these.
//!
//! Retention deletes old records: [`record_prune`], called in the deleting transaction, keeps
//! the journal entries of the rows that survive, drops the rest, and appends a `prune` entry
//! that commits to where the chain was cut (the anchor) and to the survivors, so the shortened
//! chain still verifies and a silent deletion does not.
//!
//! Anyone who can write the file can rebuild the whole journal, so the gateway also signs
//! periodic checkpoints of the head with an Ed25519 key ([`SigningKey`], [`checkpoint`]);
//! [`verify`] checks them against the pinned public keys (one per gateway).

use std::path::Path;

use ring::signature::{self, Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use crate::args;
use crate::db::{Db, DbError, Param, Row, ValueRef};

pub type Hash = [u8; 32];

/// The `prev_hash` of the first entry.
pub const GENESIS: Hash = [0; 32];

/// The hashed content of an API call, in this order. Never `*`: columns added later for
/// bookkeeping must not change the hash of records already written.
pub const CALL_FIELDS: &str =
    "id, time_us, \"user\", cluster, namespace, resource, subresource, name, \
    api_group, api_version, verb, method, path, query, status, duration_us, bytes_in, bytes_out, \
    user_agent, source_ip, kubectl_command, kubectl_session, command_id, request_id, \
    access_method, decision, reason";
const CALL_FIELD_COUNT: usize = 27;

/// The hashed content of a command (without `shipped_us`, which shipping sets).
///
/// Fields added later are hashed only when set: the first `COMMAND_FIELDS_V1` (12) always
/// are, and the hash goes on to the last later field that holds anything but empty text
/// (`reason`), with the field count in the hash's prefix saying how many were hashed (12 or
/// 13). A record without them hashes exactly as it did before they existed, so the records
/// already written keep their hash and old stores still verify; a value set later, or a set
/// value edited or emptied behind ztk's back, changes the hash.
pub const COMMAND_FIELDS: &str =
    "id, started_us, ended_us, \"user\", cluster, argv, command_line, \
    exit_code, api_calls, access_method, cwd, host, reason";
const COMMAND_FIELD_COUNT: usize = 13;
/// How many of [`COMMAND_FIELDS`] are always hashed (the fields of the first chained stores);
/// the ones after them were added later.
const COMMAND_FIELDS_V1: usize = 12;

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call,
    Command,
    /// Retention removed records written before a point (see [`record_prune`]).
    Prune,
}

impl Kind {
    /// The kind's name, as a bindable value.
    fn name(&self) -> &&'static str {
        match self {
            Kind::Call => &"call",
            Kind::Command => &"command",
            Kind::Prune => &"prune",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Command => "command",
            Kind::Prune => "prune",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Call => "api_calls",
            Kind::Command => "commands",
            Kind::Prune => "chain_prunes",
        }
    }

    fn fields(self) -> (&'static str, usize) {
        match self {
            Kind::Call => (CALL_FIELDS, CALL_FIELD_COUNT),
            Kind::Command => (COMMAND_FIELDS, COMMAND_FIELD_COUNT),
            Kind::Prune => ("", 0),
        }
    }

    /// How many of the kind's fields are always hashed; the rest were added later and are
    /// hashed only when set (see [`COMMAND_FIELDS`]).
    fn fixed_fields(self) -> usize {
        match self {
            Kind::Call => CALL_FIELD_COUNT,
            Kind::Command => COMMAND_FIELDS_V1,
            Kind::Prune => 0,
        }
    }
}

/// The journal's tables (a migration of the store).
pub const MIGRATION: &str = r#"
-- Tamper evidence (src/audit/chain.rs): one entry per write, each hashing the one before.
CREATE TABLE chain (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    content_hash BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    entry_hash BLOB NOT NULL
);
-- Where retention cut the chain, and what it kept before the cut.
CREATE TABLE chain_prunes (
    seq INTEGER PRIMARY KEY,
    upto INTEGER NOT NULL,
    anchor_seq INTEGER NOT NULL,
    anchor_hash BLOB NOT NULL,
    survivors INTEGER NOT NULL,
    digest BLOB NOT NULL
);
-- Signed heads (the gateway signs them periodically).
CREATE TABLE chain_checkpoints (
    seq INTEGER PRIMARY KEY,
    head BLOB NOT NULL,
    time_us INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature BLOB NOT NULL
);
"#;

fn put_bytes(h: &mut Sha256, tag: u8, bytes: &[u8]) {
    h.update([tag]);
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn put_value(h: &mut Sha256, v: ValueRef) {
    match v {
        ValueRef::Null => h.update([0]),
        ValueRef::Integer(i) => {
            h.update([1]);
            h.update(i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            h.update([2]);
            h.update(f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => put_bytes(h, 3, t),
        ValueRef::Blob(b) => put_bytes(h, 4, b),
    }
}

/// The content hash of a record: columns `first..first + n` of `row`, selected in the order of
/// [`CALL_FIELDS`] or [`COMMAND_FIELDS`]. Values are hashed as SQLite holds them (type tag,
/// length, bytes), so the writer and `verify` cannot disagree on a conversion.
pub fn content_hash(kind: Kind, row: &Row, first: usize) -> Result<Hash, DbError> {
    let (_, n) = kind.fields();
    let fixed = kind.fixed_fields();
    let mut hashed = fixed;
    for i in fixed..n {
        if is_set(row.get_ref(first + i)?) {
            hashed = i + 1;
        }
    }
    let mut h = record_hasher(kind, hashed);
    for i in first..first + hashed {
        put_value(&mut h, row.get_ref(i)?);
    }
    Ok(h.finalize().into())
}

/// Whether a field added later holds something, and so is hashed: anything but empty text (the
/// value of the column's default, which every record written before the field existed has).
fn is_set(v: ValueRef) -> bool {
    !matches!(v, ValueRef::Text(b""))
}

/// A content hash's prefix: format version, kind, and the number of fields hashed.
fn record_hasher(kind: Kind, fields: usize) -> Sha256 {
    let mut h = Sha256::new();
    h.update(b"ztk-record-v1\0");
    put_bytes(&mut h, 3, kind.as_str().as_bytes());
    h.update((fields as u64).to_be_bytes());
    h
}

/// [`content_hash`] of a record about to be written, from the values bound to its columns (in
/// the order of [`CALL_FIELDS`] or [`COMMAND_FIELDS`]), without reading the row back.
pub fn values_hash(kind: Kind, values: &[&dyn Param]) -> Result<Hash, DbError> {
    let (_, n) = kind.fields();
    if values.len() != n {
        return Err(DbError::Invalid(format!(
            "{} values to hash for a {}, which has {n} fields",
            values.len(),
            kind.as_str()
        )));
    }
    let fixed = kind.fixed_fields();
    let mut hashed = fixed;
    for (i, v) in values.iter().enumerate().skip(fixed) {
        if is_set(v.value()) {
            hashed = i + 1;
        }
    }
    let mut h = record_hasher(kind, hashed);
    for v in &values[..hashed] {
        put_value(&mut h, v.value());
    }
    Ok(h.finalize().into())
}

/// The hash that links an entry to the one before it.
pub fn entry_hash(prev: &Hash, seq: i64, kind: &str, record_id: &str, content: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(b"ztk-chain-v1\0");
    h.update(prev);
    h.update(seq.to_be_bytes());
    put_bytes(&mut h, 3, kind.as_bytes());
    put_bytes(&mut h, 3, record_id.as_bytes());
    h.update(content);
    h.finalize().into()
}

fn blob_hash(v: Vec<u8>) -> Hash {
    let mut out = [0; 32];
    if v.len() == 32 {
        out.copy_from_slice(&v);
    }
    out
}

/// The last entry: (seq, entry_hash).
pub fn head(db: &mut Db) -> Result<Option<(i64, Hash)>, DbError> {
    db.query_row(
        "SELECT seq, entry_hash FROM chain ORDER BY seq DESC LIMIT 1",
        &[],
        |r| Ok((r.get(0)?, blob_hash(r.get(1)?))),
    )
}

/// Appends the entry of a write. Call inside the writing transaction, with the `seq` the write
/// took: the write lock is held, so the head read here is the one this entry follows.
pub fn append(
    db: &mut Db,
    seq: i64,
    kind: Kind,
    record_id: &str,
    content: &Hash,
) -> Result<Hash, DbError> {
    Appender::default().append(db, seq, kind, record_id, content)
}

/// Appends the entries of one write transaction, reading the head once: the transaction holds
/// the write lock, so no other writer moves it meanwhile. Use one per transaction.
#[derive(Default)]
pub struct Appender {
    prev: Option<Hash>,
    /// Entries made by `defer`, written by `flush`.
    deferred: Vec<(i64, Kind, String, Hash, Hash, Hash)>,
}

/// Deferred entries per insert statement.
const ENTRIES_PER_STATEMENT: usize = 256;

impl Appender {
    pub fn append(
        &mut self,
        db: &mut Db,
        seq: i64,
        kind: Kind,
        record_id: &str,
        content: &Hash,
    ) -> Result<Hash, DbError> {
        let (prev, hash) = self.link(db, seq, kind, record_id, content)?;
        db.execute(
            "INSERT INTO chain (seq, kind, record_id, content_hash, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?)",
            args![seq, kind.as_str(), record_id, &content[..], &prev[..], &hash[..]],
        )?;
        Ok(hash)
    }

    /// The entry after the last one (the head, read once per transaction): its `prev_hash` and
    /// its own hash, which becomes the last one.
    fn link(
        &mut self,
        db: &mut Db,
        seq: i64,
        kind: Kind,
        record_id: &str,
        content: &Hash,
    ) -> Result<(Hash, Hash), DbError> {
        let prev = match self.prev {
            Some(prev) => prev,
            None => head(db)?.map(|(_, h)| h).unwrap_or(GENESIS),
        };
        let hash = entry_hash(&prev, seq, kind.as_str(), record_id, content);
        self.prev = Some(hash);
        Ok((prev, hash))
    }

    /// `append`, with the entry written by `flush` (many in one statement: one round trip to
    /// PostgreSQL instead of one per record). Call `flush` before the transaction commits.
    pub fn defer(
        &mut self,
        db: &mut Db,
        seq: i64,
        kind: Kind,
        record_id: &str,
        content: &Hash,
    ) -> Result<Hash, DbError> {
        let (prev, hash) = self.link(db, seq, kind, record_id, content)?;
        self.deferred
            .push((seq, kind, record_id.to_string(), *content, prev, hash));
        Ok(hash)
    }

    /// Writes the entries `defer` made.
    pub fn flush(&mut self, db: &mut Db) -> Result<(), DbError> {
        for chunk in self.deferred.chunks(ENTRIES_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO chain (seq, kind, record_id, content_hash, prev_hash, entry_hash) VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut params: Vec<&dyn Param> = Vec::with_capacity(chunk.len() * 6);
            for (seq, kind, id, content, prev, hash) in chunk {
                params.extend([
                    seq as &dyn Param,
                    kind.name() as &dyn Param,
                    id as &dyn Param,
                    content as &dyn Param,
                    prev as &dyn Param,
                    hash as &dyn Param,
                ]);
            }
            db.execute(&sql, &params)?;
        }
        self.deferred.clear();
        Ok(())
    }
}

/// Journals the records of a store that predates the chain, in `seq` order. Runs once, inside
/// the transaction of the migration that creates the chain (never later: re-journaling a store
/// on demand would bless whatever was edited in it).
pub fn adopt_existing(conn: &rusqlite::Connection) -> Result<(), DbError> {
    let mut db = Db::Sqlite(conn);
    let mut rows: Vec<(i64, Kind, String, Hash)> = Vec::new();
    for kind in [Kind::Call, Kind::Command] {
        // The fields added later than the chain have no column yet (their migrations come
        // after this one): unset in every record, as empty text is.
        let fields: Vec<&str> = kind.fields().0.split(", ").map(str::trim).collect();
        let fixed = kind.fixed_fields();
        let fields = fields[..fixed]
            .iter()
            .copied()
            .chain(fields[fixed..].iter().map(|_| "''"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT seq, {fields} FROM {} WHERE seq IS NOT NULL",
            kind.table()
        );
        db.query_each(&sql, &[], &mut |row| {
            let id = match row.get_ref(1)? {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => String::new(),
            };
            rows.push((row.get(0)?, kind, id, content_hash(kind, row, 1)?));
            Ok(())
        })?;
    }
    rows.sort_by_key(|r| r.0);
    let mut journal = Appender::default();
    for (seq, kind, id, content) in rows {
        journal.append(&mut db, seq, kind, &id, &content)?;
    }
    Ok(())
}

/// What a prune recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    /// The prune's own entry.
    pub seq: i64,
    /// Records written before this seq may be gone.
    pub upto: i64,
    /// The last entry before `upto` when the chain was cut, and its hash.
    pub anchor_seq: i64,
    pub anchor_hash: Hash,
    /// Entries before `upto` kept because their rows were kept, and a digest of them.
    pub survivors: i64,
    pub digest: Hash,
}

fn prune_content(p: &Prune) -> Hash {
    let mut h = Sha256::new();
    h.update(b"ztk-prune-v1\0");
    h.update(p.upto.to_be_bytes());
    h.update(p.anchor_seq.to_be_bytes());
    h.update(p.anchor_hash);
    h.update(p.survivors.to_be_bytes());
    h.update(p.digest);
    h.finalize().into()
}

/// Records that the records written before `upto` which are no longer in the store were
/// removed on purpose (retention). Call in the transaction that deleted them, after the
/// deletion; `seq` is a number that transaction took from the store's sequence for this write.
/// Rows before `upto` that were kept (not yet shipped, say) keep their entries. Deleting
/// records without this is what `verify` reports as tampering.
pub fn record_prune(db: &mut Db, seq: i64, upto: i64) -> Result<Prune, DbError> {
    let (anchor_seq, anchor_hash) = db
        .query_row(
            "SELECT seq, entry_hash FROM chain WHERE seq < ? ORDER BY seq DESC LIMIT 1",
            args![upto],
            |r| Ok((r.get::<i64>(0)?, blob_hash(r.get(1)?))),
        )?
        .unwrap_or((0, GENESIS));
    db.execute(
        "DELETE FROM chain WHERE seq < ?1 \
         AND seq NOT IN (SELECT seq FROM api_calls WHERE seq < ?1) \
         AND seq NOT IN (SELECT seq FROM commands WHERE seq < ?1)",
        args![upto],
    )?;
    db.execute("DELETE FROM chain_prunes WHERE seq < ?", args![upto])?;
    let (survivors, digest) = survivor_digest(db, upto)?;
    let prune = Prune {
        seq,
        upto,
        anchor_seq,
        anchor_hash,
        survivors,
        digest,
    };
    db.execute(
        "INSERT INTO chain_prunes (seq, upto, anchor_seq, anchor_hash, survivors, digest) VALUES (?, ?, ?, ?, ?, ?)",
        args![seq, upto, anchor_seq, &anchor_hash[..], survivors, &digest[..]],
    )?;
    append(
        db,
        seq,
        Kind::Prune,
        &upto.to_string(),
        &prune_content(&prune),
    )?;
    Ok(prune)
}

/// SHA-256 over (seq, entry_hash) of the entries before `upto`, in order, and their count.
fn survivor_digest(db: &mut Db, upto: i64) -> Result<(i64, Hash), DbError> {
    let mut h = Sha256::new();
    h.update(b"ztk-survivors-v1\0");
    let mut n = 0;
    db.query_each(
        "SELECT seq, entry_hash FROM chain WHERE seq < ? ORDER BY seq",
        args![upto],
        &mut |row| {
            h.update(row.get::<i64>(0)?.to_be_bytes());
            h.update(blob_hash(row.get(1)?));
            n += 1;
            Ok(())
        },
    )?;
    Ok((n, h.finalize().into()))
}

/// One thing found wrong, located at a record or an entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Where in write order (the record's or the entry's seq); problems are reported in order.
    pub seq: Option<i64>,
    /// `call`, `command`, `prune`, `checkpoint` or `chain`.
    pub kind: String,
    /// The record's id (or the entry's).
    pub id: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind.as_str(), self.seq) {
            ("chain", Some(seq)) => write!(f, "seq {seq}: {}", self.message),
            (kind, Some(seq)) => write!(f, "{kind} {} (seq {seq}) {}", self.id, self.message),
            (kind, None) => write!(f, "{kind} {} {}", self.id, self.message),
        }
    }
}

/// A signed head.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// Hex of the head's entry hash.
    pub head: String,
    pub time_us: i64,
    /// Hex of the Ed25519 public key that signed it.
    pub public_key: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub entries: u64,
    pub calls: u64,
    pub commands: u64,
    /// The last entry: seq and hex hash.
    pub head_seq: Option<i64>,
    pub head: Option<String>,
    /// Records before this seq were removed by retention (recorded prunes).
    pub pruned_before: Option<i64>,
    pub checkpoints: u64,
    pub valid_checkpoints: u64,
    pub last_valid_checkpoint: Option<Checkpoint>,
    /// The first problems in write order (at most [`MAX_PROBLEMS`]) and how many there were.
    pub problems: Vec<Problem>,
    pub problem_count: u64,
}

pub const MAX_PROBLEMS: usize = 100;

impl Report {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, seq: Option<i64>, kind: &str, id: &str, message: String) {
        self.problem_count += 1;
        self.problems.push(Problem {
            seq,
            kind: kind.into(),
            id: id.into(),
            message,
        });
        // Keep the earliest: sort, cut, go on (bounded memory on a badly damaged store).
        if self.problems.len() > 2 * MAX_PROBLEMS {
            self.sort_problems();
        }
    }

    fn sort_problems(&mut self) {
        self.problems.sort_by_key(|p| p.seq.unwrap_or(i64::MAX));
        self.problems.truncate(MAX_PROBLEMS);
    }
}

fn text_of(v: ValueRef) -> String {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => "(null)".into(),
    }
}

/// Walks the whole chain of the store on `conn` (a read transaction is taken, so concurrent
/// writes do not disturb it). `pinned` are the public keys checkpoints must be signed with (each
/// gateway on one database signs with its own); with none, any key is accepted and reported.
pub fn verify(db: &mut Db, pinned: &[&[u8]]) -> Result<Report, DbError> {
    db.transaction(false, |tx| verify_in(tx, pinned))
}

fn verify_in(tx: &mut Db, pinned: &[&[u8]]) -> Result<Report, DbError> {
    let mut report = Report::default();

    // Where the chain starts: the latest recorded prune, if any.
    let prune = tx
        .query_row(
            "SELECT seq, upto, anchor_seq, anchor_hash, survivors, digest FROM chain_prunes ORDER BY seq DESC LIMIT 1",
            &[],
            |r| {
                Ok(Prune {
                    seq: r.get(0)?,
                    upto: r.get(1)?,
                    anchor_seq: r.get(2)?,
                    anchor_hash: blob_hash(r.get(3)?),
                    survivors: r.get(4)?,
                    digest: blob_hash(r.get(5)?),
                })
            },
        )?;
    let start = prune.as_ref().map(|p| p.upto).unwrap_or(i64::MIN);
    report.pruned_before = prune.as_ref().map(|p| p.upto);

    // (1) The entries link, and prune entries match what they recorded.
    {
        let sql = "SELECT j.seq, j.kind, j.record_id, j.content_hash, j.prev_hash, j.entry_hash, \
             p.upto, p.anchor_seq, p.anchor_hash, p.survivors, p.digest \
             FROM chain j LEFT JOIN chain_prunes p ON p.seq = j.seq ORDER BY j.seq";
        let mut running = prune.as_ref().map(|p| p.anchor_hash).unwrap_or(GENESIS);
        let mut survivors = Sha256::new();
        survivors.update(b"ztk-survivors-v1\0");
        let mut survivor_count = 0i64;
        tx.query_each(sql, &[], &mut |row| {
            report.entries += 1;
            let seq: i64 = row.get(0)?;
            let kind = text_of(row.get_ref(1)?);
            let id = text_of(row.get_ref(2)?);
            let content = blob_hash(row.get(3)?);
            let prev = blob_hash(row.get(4)?);
            let stored = blob_hash(row.get(5)?);
            if entry_hash(&prev, seq, &kind, &id, &content) != stored {
                report.problem(
                    Some(seq),
                    "chain",
                    &id,
                    format!("the journal entry of {kind} {id} was altered"),
                );
            }
            if seq < start {
                survivors.update(seq.to_be_bytes());
                survivors.update(stored);
                survivor_count += 1;
            } else {
                if prev != running {
                    report.problem(
                        Some(seq),
                        "chain",
                        &id,
                        format!("the chain is broken before {kind} {id}: an entry before it was deleted, inserted or altered"),
                    );
                }
                running = stored;
            }
            report.head_seq = Some(seq);
            report.head = Some(hex::encode(stored));
            if kind == Kind::Prune.as_str() {
                match row.get::<Option<i64>>(6)? {
                    None => report.problem(
                        Some(seq),
                        "prune",
                        &id,
                        "has lost its record (chain_prunes)".into(),
                    ),
                    Some(upto) => {
                        let p = Prune {
                            seq,
                            upto,
                            anchor_seq: row.get(7)?,
                            anchor_hash: blob_hash(row.get(8)?),
                            survivors: row.get(9)?,
                            digest: blob_hash(row.get(10)?),
                        };
                        if prune_content(&p) != content || upto.to_string() != id {
                            report.problem(
                                Some(seq),
                                "prune",
                                &id,
                                "was altered (its record no longer matches its journal entry)"
                                    .into(),
                            );
                        }
                    }
                }
            }
            Ok(())
        })?;
        if let Some(p) = &prune {
            if survivor_count != p.survivors || <[u8; 32]>::from(survivors.finalize()) != p.digest {
                report.problem(
                    Some(p.upto - 1),
                    "chain",
                    &p.upto.to_string(),
                    format!("the entries kept before the prune at seq {} were changed, added or deleted", p.upto),
                );
            }
            let has_entry = tx
                .query_row(
                    "SELECT 1 FROM chain WHERE seq = ? AND kind = 'prune'",
                    args![p.seq],
                    |_| Ok(()),
                )?
                .is_some();
            if !has_entry {
                report.problem(
                    Some(p.seq),
                    "prune",
                    &p.upto.to_string(),
                    "has no journal entry: it was inserted outside ztk".into(),
                );
            }
        }
        // Every write takes a seq and journals: a sequence ahead of the head means the last
        // entries (and their records) were removed.
        let last: i64 = tx
            .query_row("SELECT last FROM sequence WHERE id = 1", &[], |r| r.get(0))?
            .unwrap_or(0);
        let head_seq = report.head_seq.unwrap_or(0);
        if last > head_seq {
            report.problem(
                Some(head_seq + 1),
                "chain",
                &(head_seq + 1).to_string(),
                format!("the chain ends at seq {head_seq} but {last} writes were made: the last entries were deleted"),
            );
        }
    }

    // (2) Every row matches the latest entry of its record, and (3) every such entry's row exists.
    for kind in [Kind::Call, Kind::Command] {
        let table = kind.table();
        let fields: String = kind
            .fields()
            .0
            .split(", ")
            .map(|f| format!("r.{}", f.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        // Each record's latest entry is computed here, once, rather than indexed on every
        // write: verify is rare, writes are not.
        let latest = "WITH latest AS (SELECT record_id, MAX(seq) AS seq FROM chain WHERE kind = ?1 GROUP BY record_id)";
        let sql = format!(
            "{latest} SELECT r.seq, j.kind, j.record_id, j.content_hash, l.seq, {fields} \
             FROM {table} r LEFT JOIN chain j ON j.seq = r.seq LEFT JOIN latest l ON l.record_id = r.id"
        );
        let name = kind.as_str();
        tx.query_each(&sql, args![name], &mut |row| {
            match kind {
                Kind::Call => report.calls += 1,
                _ => report.commands += 1,
            }
            let seq: Option<i64> = row.get(0)?;
            let id = text_of(row.get_ref(5)?);
            let entry_kind: Option<String> = row.get(1)?;
            let entry_id: Option<String> = row.get(2)?;
            let latest: Option<i64> = row.get(4)?;
            let Some(seq) = seq else {
                report.problem(
                    None,
                    name,
                    &id,
                    "has no sequence number: it was inserted outside ztk".into(),
                );
                return Ok(());
            };
            if entry_kind.as_deref() != Some(name) || entry_id.as_deref() != Some(id.as_str()) {
                let message = match latest {
                    Some(latest) => {
                        format!("was renumbered outside ztk (its last write was seq {latest})")
                    }
                    None => "has no journal entry: it was inserted outside ztk".into(),
                };
                report.problem(Some(seq), name, &id, message);
                return Ok(());
            }
            if latest != Some(seq) {
                report.problem(
                    Some(seq),
                    name,
                    &id,
                    format!("is an older version of a record written again at seq {}: it was restored outside ztk", latest.unwrap_or(0)),
                );
                return Ok(());
            }
            if content_hash(kind, row, 5)? != blob_hash(row.get(3)?) {
                report.problem(
                    Some(seq),
                    name,
                    &id,
                    "was changed after it was written: its content does not match the hash in the chain".into(),
                );
            }
            Ok(())
        })?;
        let sql = format!(
            "{latest} SELECT l.seq, l.record_id FROM latest l \
             WHERE NOT EXISTS (SELECT 1 FROM {table} r WHERE r.id = l.record_id) ORDER BY l.seq"
        );
        tx.query_each(&sql, args![name], &mut |row| {
            let seq: i64 = row.get(0)?;
            let id = text_of(row.get_ref(1)?);
            report.problem(
                Some(seq),
                name,
                &id,
                "was deleted outside ztk (its journal entry remains)".into(),
            );
            Ok(())
        })?;
    }

    // Signed checkpoints: valid signature by the pinned key, and the chain still has that head.
    {
        let sql = "SELECT k.seq, k.head, k.time_us, k.public_key, k.signature, j.entry_hash \
             FROM chain_checkpoints k LEFT JOIN chain j ON j.seq = k.seq ORDER BY k.seq";
        tx.query_each(sql, &[], &mut |row| {
            report.checkpoints += 1;
            let seq: i64 = row.get(0)?;
            let head = blob_hash(row.get(1)?);
            let time_us: i64 = row.get(2)?;
            let key: Vec<u8> = row.get(3)?;
            let sig: Vec<u8> = row.get(4)?;
            let entry: Option<Vec<u8>> = row.get(5)?;
            let id = seq.to_string();
            if !pinned.is_empty() && !pinned.contains(&key.as_slice()) {
                report.problem(
                    Some(seq),
                    "checkpoint",
                    &id,
                    format!(
                        "is signed by key {}, not by the pinned key (or one of them)",
                        hex::encode(&key)
                    ),
                );
                return Ok(());
            }
            let message = checkpoint_message(seq, &head, time_us);
            if signature::UnparsedPublicKey::new(&signature::ED25519, &key)
                .verify(&message, &sig)
                .is_err()
            {
                report.problem(
                    Some(seq),
                    "checkpoint",
                    &id,
                    "has an invalid signature".into(),
                );
                return Ok(());
            }
            let expected = match entry {
                Some(e) => Some(blob_hash(e)),
                None if prune.as_ref().is_some_and(|p| p.anchor_seq == seq) => {
                    prune.as_ref().map(|p| p.anchor_hash)
                }
                None if seq < start => None, // pruned by retention
                None => {
                    let what = if report.head_seq.is_none_or(|h| seq > h) {
                        "shows the chain was cut short: entries up to this signed head were deleted"
                    } else {
                        "signed an entry that was deleted"
                    };
                    report.problem(Some(seq), "checkpoint", &id, what.into());
                    return Ok(());
                }
            };
            if expected.is_some_and(|e| e != head) {
                report.problem(
                    Some(seq),
                    "checkpoint",
                    &id,
                    "signed a head the chain no longer has: entries up to it were rewritten".into(),
                );
                return Ok(());
            }
            report.valid_checkpoints += 1;
            report.last_valid_checkpoint = Some(Checkpoint {
                seq,
                head: hex::encode(head),
                time_us,
                public_key: hex::encode(&key),
            });
            Ok(())
        })?;
    }
    report.sort_problems();
    Ok(report)
}

fn checkpoint_message(seq: i64, head: &Hash, time_us: i64) -> Vec<u8> {
    let mut m = b"ztk-checkpoint-v1\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time_us.to_be_bytes());
    m
}

/// The Ed25519 key a gateway signs checkpoints with (PKCS#8, a 0600 file in its data dir).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit signing key {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("audit signing key {path} is not an Ed25519 PKCS#8 key; restore it from a backup (or move it away to start a new key, which auditors must then pin again)")]
    Invalid { path: std::path::PathBuf },
    #[error("could not generate an audit signing key")]
    Generate,
}

impl SigningKey {
    /// Loads the key at `path`, or makes one there (0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
                crate::fsutil::write_private(path, doc.as_ref()).map_err(io)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| KeyError::Invalid {
            path: path.to_path_buf(),
        })?;
        Ok(SigningKey { pair })
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

/// Signs the current head if it moved since the last checkpoint; returns the new checkpoint.
pub fn checkpoint(
    db: &mut Db,
    key: &SigningKey,
    time_us: i64,
) -> Result<Option<Checkpoint>, DbError> {
    db.transaction(true, |tx| {
        let Some((seq, head)) = head(tx)? else {
            return Ok(None);
        };
        let last: Option<i64> = tx
            .query_row("SELECT MAX(seq) FROM chain_checkpoints", &[], |r| r.get(0))?
            .flatten();
        if last.is_some_and(|l| l >= seq) {
            return Ok(None);
        }
        let sig = key.pair.sign(&checkpoint_message(seq, &head, time_us));
        // Another gateway may sign the same head at the same moment: one checkpoint stays.
        let inserted = tx.execute(
            "INSERT INTO chain_checkpoints (seq, head, time_us, public_key, signature) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (seq) DO NOTHING",
            args![seq, &head[..], time_us, key.public_key(), sig.as_ref()],
        )?;
        Ok((inserted == 1).then(|| Checkpoint {
            seq,
            head: hex::encode(head),
            time_us,
            public_key: hex::encode(key.public_key()),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::{now_us, ApiCall, Command};
    use crate::audit::store::{open_connection, AuditStore};
    use std::time::Duration;
    use uuid::Uuid;

    fn call(user: &str) -> ApiCall {
        ApiCall {
            id: Uuid::now_v7(),
            time_us: now_us(),
            user: user.into(),
            cluster: "dev".into(),
            resource: "pods".into(),
            verb: "list".into(),
            status: 200,
            decision: "allow".into(),
            ..Default::default()
        }
    }

    /// A store with an open stream replaced by its final record, a command updated at its end,
    /// and a shipped command: all legitimate rewrites.
    fn populated() -> (tempfile::TempDir, AuditStore, Vec<ApiCall>, Command) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let (sink, writer) = store.start_writer(8).unwrap();
        let mut cmd = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv: vec!["kubectl".into(), "get".into(), "po".into()],
            command_line: "kubectl get po".into(),
            ..Default::default()
        };
        sink.record_command(cmd.clone());
        let mut calls: Vec<ApiCall> = (0..10)
            .map(|i| call(if i % 2 == 0 { "alice" } else { "bob" }))
            .collect();
        for c in &calls {
            sink.record_call(c.clone());
        }
        assert!(sink.flush(Duration::from_secs(5)));
        calls[3].status = 101;
        calls[3].reason = "stream open".into();
        sink.record_call(calls[3].clone());
        calls[3].status = 200;
        calls[3].reason.clear();
        sink.record_call(calls[3].clone());
        cmd.ended_us = Some(now_us());
        cmd.exit_code = Some(0);
        cmd.api_calls = 10;
        sink.record_command(cmd.clone());
        drop(sink);
        writer.close();
        // Shipping (the outbox's mark) never touches a record.
        let last = store.last_seq().unwrap();
        store.ack_shipped(&cmd.user, last, now_us()).unwrap();
        (dir, store, calls, cmd)
    }

    fn raw(store: &AuditStore) -> rusqlite::Connection {
        open_connection(store.path(), false).unwrap()
    }

    #[test]
    fn an_untouched_store_verifies_after_legitimate_rewrites() {
        let (_dir, store, _, _) = populated();
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.calls, report.commands), (10, 1));
        assert_eq!(report.entries, 14);
        assert_eq!(report.head_seq, Some(14));
        assert_eq!(store.last_seq().unwrap(), 14);
    }

    #[test]
    fn an_edited_row_is_reported() {
        let (_dir, store, calls, _) = populated();
        raw(&store)
            .execute(
                "UPDATE api_calls SET verb = 'get' WHERE id = ?",
                [calls[5].id.to_string()],
            )
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        let p = &report.problems[0];
        assert_eq!(
            (p.kind.as_str(), p.id.clone()),
            ("call", calls[5].id.to_string())
        );
        assert!(p.message.contains("was changed"), "{p}");
    }

    #[test]
    fn a_shipping_mark_is_not_an_edit_but_a_command_edit_is() {
        let (_dir, store, _, cmd) = populated();
        let conn = raw(&store);
        conn.execute("UPDATE commands SET shipped_us = NULL", [])
            .unwrap();
        assert!(store.verify(&[]).unwrap().ok());
        conn.execute("UPDATE commands SET command_line = 'kubectl version'", [])
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problems[0].id, cmd.id.to_string());
        assert_eq!(report.problems[0].kind, "command");
    }

    #[test]
    fn a_deleted_row_is_reported() {
        let (_dir, store, calls, _) = populated();
        raw(&store)
            .execute(
                "DELETE FROM api_calls WHERE id = ?",
                [calls[7].id.to_string()],
            )
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].id, calls[7].id.to_string());
        assert!(report.problems[0].message.contains("deleted"));
    }

    #[test]
    fn an_inserted_row_is_reported_with_or_without_a_seq() {
        let (_dir, store, calls, _) = populated();
        let conn = raw(&store);
        for (id, seq) in [("forged-1", Some(99)), ("forged-2", None)] {
            conn.execute(
                "INSERT INTO api_calls SELECT ?, time_us, user, cluster, namespace, resource, subresource, name, \
                 api_group, api_version, verb, method, path, query, status, duration_us, bytes_in, bytes_out, \
                 user_agent, source_ip, kubectl_command, kubectl_session, command_id, request_id, access_method, \
                 decision, reason, ? FROM api_calls WHERE id = ?",
                rusqlite::params![id, seq, calls[0].id.to_string()],
            )
            .unwrap();
        }
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problem_count, 2, "{:?}", report.problems);
        assert_eq!(report.problems[0].id, "forged-1");
        assert!(report.problems[0].message.contains("inserted outside ztk"));
        assert_eq!(report.problems[1].id, "forged-2");
    }

    #[test]
    fn a_restored_old_version_and_a_cut_tail_are_reported() {
        let (_dir, store, calls, _) = populated();
        let conn = raw(&store);
        // Point the replaced stream record back at its first version (seq 5).
        conn.execute(
            "UPDATE api_calls SET seq = 5 WHERE id = ?",
            [calls[3].id.to_string()],
        )
        .unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(
            report.problems[0].message.contains("older version"),
            "{:?}",
            report.problems
        );
        let (_dir, store, _, _) = populated();
        let conn = raw(&store);
        // Remove the last write altogether: row and journal entry.
        conn.execute_batch("DELETE FROM commands; DELETE FROM chain WHERE seq = 14;")
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(!report.ok());
        assert!(report
            .problems
            .iter()
            .any(|p| p.message.contains("last entries were deleted")));
    }

    #[test]
    fn a_rebuilt_journal_entry_breaks_the_links() {
        let (_dir, store, calls, _) = populated();
        let conn = raw(&store);
        conn.execute(
            "DELETE FROM api_calls WHERE id = ?",
            [calls[1].id.to_string()],
        )
        .unwrap();
        conn.execute(
            "DELETE FROM chain WHERE record_id = ?",
            [calls[1].id.to_string()],
        )
        .unwrap();
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        assert!(report.problems[0].message.contains("chain is broken"));
    }

    #[test]
    fn a_recorded_prune_verifies_and_keeps_survivors() {
        let (_dir, store, calls, cmd) = populated();
        // Retention: delete the calls written before seq 9 except one kept (say unshipped).
        let keep = calls[2].id.to_string();
        let (deleted, prune) = store
            .prune_before(9, |tx| {
                tx.execute("DELETE FROM api_calls WHERE seq < 9 AND id != ?", [&keep])
            })
            .unwrap();
        assert_eq!(deleted, 5);
        assert_eq!(prune.survivors, 1);
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.pruned_before, Some(9));
        // Writes after a prune extend the chain; a second prune cuts further.
        store
            .upsert_commands(&[Command {
                id: Uuid::now_v7(),
                ..cmd.clone()
            }])
            .unwrap();
        store
            .prune_before(13, |tx| {
                tx.execute("DELETE FROM api_calls WHERE seq < 13", [])
            })
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        // The kept row is gone now (the caller deleted it), so its entry went with the prune.
        // A survivor deleted without a prune is reported.
        let conn = raw(&store);
        let n = conn
            .execute("DELETE FROM commands WHERE id = ?", [cmd.id.to_string()])
            .unwrap();
        assert_eq!(n, 1);
        let report = store.verify(&[]).unwrap();
        assert_eq!(report.problems[0].id, cmd.id.to_string());
        assert!(report.problems[0].message.contains("deleted"));
    }

    #[test]
    fn deleting_old_records_without_recording_a_prune_is_reported() {
        let (_dir, store, calls, _) = populated();
        let conn = raw(&store);
        conn.execute_batch("DELETE FROM api_calls WHERE seq < 9; DELETE FROM chain WHERE seq < 9;")
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(!report.ok());
        assert!(
            report.problems[0].message.contains("chain is broken"),
            "{:?}",
            report.problems
        );
        let _ = calls;
    }

    #[test]
    fn checkpoints_pin_the_head() {
        let (dir, store, calls, _) = populated();
        let key = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let again = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let cp = store.checkpoint(&key).unwrap().unwrap();
        assert_eq!(cp.seq, 14);
        assert!(
            store.checkpoint(&key).unwrap().is_none(),
            "head did not move"
        );
        let report = store.verify(&[key.public_key()]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.last_valid_checkpoint.unwrap().seq, 14);
        // Someone rewrites a record and rebuilds the whole journal after it: the links hold,
        // the signed head does not.
        let conn = raw(&store);
        conn.execute(
            "UPDATE api_calls SET verb = 'delete' WHERE id = ?",
            [calls[9].id.to_string()],
        )
        .unwrap();
        rebuild_journal(&store);
        let report = store.verify(&[key.public_key()]).unwrap();
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].kind, "checkpoint");
        // A checkpoint signed by another key is not accepted under the pinned one.
        let other = SigningKey::load_or_create(&dir.path().join("other")).unwrap();
        let report = store.verify(&[other.public_key()]).unwrap();
        assert!(report
            .problems
            .iter()
            .any(|p| p.message.contains("not by the pinned key")));
    }

    /// What an attacker with the file can do: recompute every entry from the rows.
    fn rebuild_journal(store: &AuditStore) {
        let conn = raw(store);
        conn.execute("DELETE FROM chain", []).unwrap();
        adopt_existing(&conn).unwrap();
    }

    /// A command as `golden_command` describes it, and its content hash by the rule of the
    /// stores written before `reason` existed (12 fields), computed outside ztk:
    /// SHA-256("ztk-record-v1\0" ‖ text "command" ‖ u64 12 ‖ each field as tag, length, bytes).
    const GOLDEN_V1: &str = "10d9c769662a98c20f1734f6f29e1a01bbaf63e2c745b4fdb2826ad19a558b57";
    /// The same command with the reason `killed: output limit`: 13 fields.
    const GOLDEN_WITH_REASON: &str =
        "8dad5cab680ec584dc4971930ba9e49fcf4b9a01b62a076574597ed01ae09234";

    fn golden_command() -> Command {
        Command {
            id: Uuid::parse_str("0190c0de-0000-7000-8000-000000000001").unwrap(),
            started_us: 1_700_000_000_000_000,
            ended_us: Some(1_700_000_001_000_000),
            user: "alice".into(),
            cluster: "dev".into(),
            argv: vec!["kubectl".into(), "get".into(), "po".into()],
            command_line: "kubectl get po".into(),
            exit_code: Some(0),
            api_calls: 3,
            access_method: crate::audit::AccessMethod::Cli,
            cwd: "/home/alice".into(),
            host: "alice-laptop".into(),
            reason: String::new(),
        }
    }

    fn latest_content(store: &AuditStore, id: Uuid) -> String {
        let hash: Vec<u8> = raw(store)
            .query_row(
                "SELECT content_hash FROM chain WHERE record_id = ? ORDER BY seq DESC LIMIT 1",
                [id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        hex::encode(hash)
    }

    #[test]
    fn a_command_without_a_reason_hashes_as_before_the_reason_existed() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let cmd = golden_command();
        store.upsert_commands(std::slice::from_ref(&cmd)).unwrap();
        assert_eq!(latest_content(&store, cmd.id), GOLDEN_V1);
        // The hash of the values about to be written follows the same rule.
        let argv = serde_json::to_string(&cmd.argv).unwrap();
        let id = cmd.id.to_string();
        let values: [&dyn Param; 13] = [
            &id,
            &cmd.started_us,
            &cmd.ended_us,
            &cmd.user,
            &cmd.cluster,
            &argv,
            &cmd.command_line,
            &cmd.exit_code,
            &cmd.api_calls,
            &"cli",
            &cmd.cwd,
            &cmd.host,
            &cmd.reason,
        ];
        let hash = values_hash(Kind::Command, &values).unwrap();
        assert_eq!(hex::encode(hash), GOLDEN_V1);
        // A reason, once set, is hashed: a 13th field.
        let killed = Command {
            reason: "killed: output limit".into(),
            ..cmd.clone()
        };
        store
            .upsert_commands(std::slice::from_ref(&killed))
            .unwrap();
        assert_eq!(latest_content(&store, cmd.id), GOLDEN_WITH_REASON);
        let mut values = values;
        values[12] = &killed.reason;
        let hash = values_hash(Kind::Command, &values).unwrap();
        assert_eq!(hex::encode(hash), GOLDEN_WITH_REASON);
        // A later write without a reason keeps it (the row, so the hash, stays the same).
        store.upsert_commands(std::slice::from_ref(&cmd)).unwrap();
        assert_eq!(latest_content(&store, cmd.id), GOLDEN_WITH_REASON);
        assert_eq!(
            store.command(cmd.id).unwrap().unwrap().reason,
            "killed: output limit"
        );
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
    }

    #[test]
    fn a_store_written_before_the_reason_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = open_connection(&path, false).unwrap();
        let migrations = crate::audit::store::MIGRATIONS;
        let before = migrations
            .iter()
            .position(|m| m.contains("ADD COLUMN reason"))
            .unwrap();
        crate::audit::store::migrate(&mut conn, &migrations[..before]).unwrap();
        // The command as the ztk before `reason` wrote it: its row and its journal entry.
        let cmd = golden_command();
        conn.execute(
            "INSERT INTO commands (id, started_us, ended_us, user, cluster, argv, command_line, \
             exit_code, api_calls, access_method, cwd, host, seq) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'cli', ?, ?, 1)",
            rusqlite::params![
                cmd.id.to_string(),
                cmd.started_us,
                cmd.ended_us,
                cmd.user,
                cmd.cluster,
                serde_json::to_string(&cmd.argv).unwrap(),
                cmd.command_line,
                cmd.exit_code,
                cmd.api_calls,
                cmd.cwd,
                cmd.host,
            ],
        )
        .unwrap();
        conn.execute("UPDATE sequence SET last = 1", []).unwrap();
        let golden: Hash = hex::decode(GOLDEN_V1).unwrap().try_into().unwrap();
        append(
            &mut Db::Sqlite(&conn),
            1,
            Kind::Command,
            &cmd.id.to_string(),
            &golden,
        )
        .unwrap();
        drop(conn);
        // This ztk adds the column and reads the record as it was.
        let store = AuditStore::open(&path).unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.entries, report.commands), (1, 1));
        assert_eq!(store.command(cmd.id).unwrap().unwrap(), cmd);
    }

    #[test]
    fn a_reason_set_changed_or_cleared_outside_ztk_is_reported() {
        let (_dir, store, _, cmd) = populated();
        let conn = raw(&store);
        let edited = |sql: &str| {
            conn.execute(sql, []).unwrap();
            let report = store.verify(&[]).unwrap();
            (
                report
                    .problems
                    .first()
                    .map(|p| (p.kind.clone(), p.id.clone())),
                report.problem_count,
            )
        };
        let changed = (Some(("command".to_string(), cmd.id.to_string())), 1);
        // Given to a command that had none.
        assert_eq!(
            edited("UPDATE commands SET reason = 'refused: made up'"),
            changed
        );
        assert_eq!(edited("UPDATE commands SET reason = ''"), (None, 0));
        // Changed or cleared after ztk wrote it.
        store
            .upsert_commands(&[Command {
                reason: "killed: time limit".into(),
                ..cmd.clone()
            }])
            .unwrap();
        assert!(store.verify(&[]).unwrap().ok());
        assert_eq!(
            edited("UPDATE commands SET reason = 'killed: time limits'"),
            changed
        );
        assert_eq!(edited("UPDATE commands SET reason = ''"), changed);
        assert_eq!(
            edited("UPDATE commands SET reason = 'killed: time limit'"),
            (None, 0)
        );
    }

    #[test]
    fn a_store_from_before_the_chain_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = open_connection(&path, false).unwrap();
        crate::audit::store::migrate(&mut conn, &crate::audit::store::MIGRATIONS[..3]).unwrap();
        conn.execute_batch(
            "INSERT INTO commands (id, started_us, user, cluster, argv, command_line, api_calls, access_method, cwd, host, seq) \
             VALUES ('m1', 20, 'a', 'c', '[]', 'kubectl get po', 1, 'cli', '/', 'h', 1); \
             UPDATE sequence SET last = 1;",
        )
        .unwrap();
        drop(conn);
        let store = AuditStore::open(&path).unwrap();
        store
            .upsert_commands(&[Command {
                id: Uuid::now_v7(),
                ..Default::default()
            }])
            .unwrap();
        let report = store.verify(&[]).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.entries, report.commands), (2, 2));
        // Opening again adopts nothing twice, and an emptied journal is not rebuilt.
        AuditStore::open(&path).unwrap();
        assert_eq!(store.verify(&[]).unwrap().entries, 2);
        raw(&store).execute("DELETE FROM chain", []).unwrap();
        AuditStore::open(&path).unwrap();
        let report = store.verify(&[]).unwrap();
        assert_eq!(
            (report.entries, report.problem_count),
            (0, 3),
            "{:?}",
            report.problems
        );
    }
}
