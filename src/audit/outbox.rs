//! The client's durable outbox and its local retention.
//!
//! Nothing is copied into a separate queue: every record already carries the store's write
//! sequence number (`seq`, taken in the transaction that writes it, so seq order is commit
//! order). Per user, the `outbox` table remembers up to which `seq` the gateway acknowledged;
//! everything of that user written later is pending. A record that is written again (a command's
//! end, a stream's final record) takes a new `seq` and so ships again, as an update the gateway
//! applies idempotently. Shipping is therefore "read the next batch above the mark, send it,
//! move the mark to the batch's last `seq` when the gateway answers 200": a crash anywhere
//! re-sends at most one batch, which the gateway stores once.

use rusqlite::{params, OptionalExtension};

use super::model::{ApiCall, Command};
use super::store::{
    call_from_row, command_from_row, AuditStore, StoreError, CALL_COLUMNS, COMMAND_COLUMNS,
    COMMAND_COLUMN_COUNT,
};

/// The next records of one user to ship, oldest write first.
#[derive(Debug, Default)]
pub struct OutboxBatch {
    pub commands: Vec<Command>,
    pub calls: Vec<ApiCall>,
    /// The `seq` of the last record in the batch: the mark to store once it is acknowledged.
    pub through_seq: i64,
}

impl OutboxBatch {
    pub fn len(&self) -> usize {
        self.commands.len() + self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `ztk audit status` shows for one user's records.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutboxStatus {
    pub user: String,
    pub pending_calls: u64,
    pub pending_commands: u64,
    /// The time of the oldest pending record (µs since the epoch).
    pub oldest_pending_us: Option<i64>,
    pub shipped_seq: i64,
    pub last_attempt_us: Option<i64>,
    pub last_success_us: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_us: Option<i64>,
}

impl OutboxStatus {
    pub fn pending(&self) -> u64 {
        self.pending_calls + self.pending_commands
    }
}

/// Local retention: drop *shipped* records older than `max_age_us`, and the oldest shipped
/// records while the store uses more than `max_bytes`. Unshipped records are never dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub max_age_us: Option<i64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Pruned {
    pub calls: u64,
    pub commands: u64,
}

/// Rows deleted per step when trimming to size: the store is measured again before more is
/// dropped than needed (each step is one transaction and one prune of the chain).
const SIZE_STEP: i64 = 20_000;

impl AuditStore {
    /// The next (at most `max`) records of `user` not yet acknowledged by the gateway.
    pub fn outbox_batch(&self, user: &str, max: usize) -> Result<OutboxBatch, StoreError> {
        self.outbox_batch_after(user, None, max)
    }

    /// Like `outbox_batch`, after `after` instead of the stored mark (to read the next batch
    /// while one is in flight).
    pub fn outbox_batch_after(
        &self,
        user: &str,
        after: Option<i64>,
        max: usize,
    ) -> Result<OutboxBatch, StoreError> {
        // A write connection: the shipper's acknowledgement then takes the same one back.
        let conn = self.connect(false)?;
        // `+user`: walk the seq index above the mark (the pending records) rather than every
        // record of the user through the user index and a sort.
        let mark = match after {
            Some(seq) => seq,
            None => shipped_seq(&conn, user).map_err(|e| self.err(e))?,
        };
        let mut calls: Vec<ApiCall> = Vec::with_capacity(max);
        let mut call_seqs: Vec<i64> = Vec::with_capacity(max);
        {
            let sql = format!(
                "SELECT {CALL_COLUMNS}, c.seq FROM api_calls c WHERE c.seq > ? AND +c.user = ? \
                 ORDER BY c.seq LIMIT ?"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let mut rows = stmt
                .query(params![mark, user, max as i64])
                .map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                call_seqs.push(r.get(27).map_err(|e| self.err(e))?);
                let mut call =
                    call_from_row(&crate::db::Row::Sqlite(r)).map_err(|e| self.db_err(e))?;
                // Records stored before the limits existed ship within them too.
                call.fit();
                calls.push(call);
            }
        }
        // With a full list of calls, only the commands written before its last call can be
        // among the `max` lowest: reading `max` commands would read ten times what is used.
        let below = match call_seqs.last() {
            Some(seq) if calls.len() == max => *seq,
            _ => i64::MAX,
        };
        let mut commands: Vec<Command> = Vec::new();
        let mut command_seqs: Vec<i64> = Vec::new();
        {
            let sql = format!(
                "SELECT {COMMAND_COLUMNS}, seq FROM commands WHERE seq > ? AND seq < ? AND +user = ? \
                 ORDER BY seq LIMIT ?"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let mut rows = stmt
                .query(params![mark, below, user, max as i64])
                .map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                command_seqs.push(r.get(COMMAND_COLUMN_COUNT).map_err(|e| self.err(e))?);
                let mut command =
                    command_from_row(&crate::db::Row::Sqlite(r)).map_err(|e| self.db_err(e))?;
                command.fit();
                commands.push(command);
            }
        }
        // The `max` lowest seqs of both lists together: then every record of the user up to
        // the last one taken is in the batch, and the mark may move there.
        let (mut taken_calls, mut taken_commands, mut through_seq) = (0, 0, 0);
        while taken_calls + taken_commands < max {
            match (call_seqs.get(taken_calls), command_seqs.get(taken_commands)) {
                (Some(&a), Some(&b)) if a < b => (through_seq, taken_calls) = (a, taken_calls + 1),
                (Some(&a), None) => (through_seq, taken_calls) = (a, taken_calls + 1),
                (_, Some(&b)) => (through_seq, taken_commands) = (b, taken_commands + 1),
                (None, None) => break,
            }
        }
        calls.truncate(taken_calls);
        commands.truncate(taken_commands);
        let batch = OutboxBatch {
            calls,
            commands,
            through_seq,
        };
        Ok(batch)
    }

    /// Records that the gateway acknowledged every record of `user` up to `through_seq`.
    pub fn ack_shipped(&self, user: &str, through_seq: i64, at_us: i64) -> Result<(), StoreError> {
        let conn = self.connect(false)?;
        // max(): two shippers (a `ztk kubectl` and the proxy) may acknowledge out of order.
        conn.execute(
            "INSERT INTO outbox (user, shipped_seq, last_attempt_us, last_success_us) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT(user) DO UPDATE SET shipped_seq = max(shipped_seq, excluded.shipped_seq), \
             last_attempt_us = excluded.last_attempt_us, last_success_us = excluded.last_success_us",
            params![user, through_seq, at_us],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remembers a failed shipping attempt, for `ztk audit status`.
    pub fn note_ship_error(&self, user: &str, error: &str, at_us: i64) -> Result<(), StoreError> {
        let conn = self.connect(false)?;
        conn.execute(
            "INSERT INTO outbox (user, last_attempt_us, last_error, last_error_us) VALUES (?1, ?3, ?2, ?3) \
             ON CONFLICT(user) DO UPDATE SET last_attempt_us = excluded.last_attempt_us, \
             last_error = excluded.last_error, last_error_us = excluded.last_error_us",
            params![user, error, at_us],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// How many records of `user` wait to be shipped (fast: one index range per table).
    pub fn pending_count(&self, user: &str) -> Result<u64, StoreError> {
        let conn = self.connect(true)?;
        let mark = shipped_seq(&conn, user).map_err(|e| self.err(e))?;
        let count = |table: &str| -> Result<u64, StoreError> {
            conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE seq > ? AND +user = ?"),
                params![mark, user],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
        };
        Ok(count("api_calls")? + count("commands")?)
    }

    /// The outbox of every user with records or shipping history in this store, and of `user`
    /// (the one logged in) even when it has neither.
    pub fn outbox_status(&self, user: Option<&str>) -> Result<Vec<OutboxStatus>, StoreError> {
        let conn = self.connect(true)?;
        let mut by_user: std::collections::BTreeMap<String, OutboxStatus> = Default::default();
        if let Some(user) = user {
            by_user.insert(
                user.to_string(),
                OutboxStatus {
                    user: user.to_string(),
                    ..Default::default()
                },
            );
        }
        {
            let mut stmt = conn
                .prepare(
                    "SELECT user, shipped_seq, last_attempt_us, last_success_us, last_error, last_error_us FROM outbox",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(OutboxStatus {
                        user: r.get(0)?,
                        shipped_seq: r.get(1)?,
                        last_attempt_us: r.get(2)?,
                        last_success_us: r.get(3)?,
                        last_error: r.get(4)?,
                        last_error_us: r.get(5)?,
                        ..Default::default()
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let row = row.map_err(|e| self.err(e))?;
                by_user.insert(row.user.clone(), row);
            }
        }
        for (table, time) in [("api_calls", "time_us"), ("commands", "started_us")] {
            let sql = format!(
                "SELECT r.user, COUNT(*), MIN(r.{time}) FROM {table} r LEFT JOIN outbox o ON o.user = r.user \
                 WHERE r.seq > COALESCE(o.shipped_seq, 0) GROUP BY r.user"
            );
            let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (user, n, oldest) = row.map_err(|e| self.err(e))?;
                let entry = by_user.entry(user.clone()).or_insert_with(|| OutboxStatus {
                    user,
                    ..Default::default()
                });
                if table == "api_calls" {
                    entry.pending_calls = n as u64;
                } else {
                    entry.pending_commands = n as u64;
                }
                entry.oldest_pending_us =
                    Some(entry.oldest_pending_us.map_or(oldest, |o| o.min(oldest)));
            }
        }
        Ok(by_user.into_values().collect())
    }

    /// Applies the retention policy; returns what was dropped. Only records whose user's
    /// outbox mark has passed them (acknowledged by the gateway) are candidates; each deletion
    /// is recorded by the hash chain (`prune_before`) in its transaction.
    pub fn apply_retention(&self, policy: &Retention, now_us: i64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        if policy.max_age_us.is_none() && policy.max_bytes.is_none() {
            return Ok(pruned);
        }
        if let Some(age) = policy.max_age_us {
            let (calls, commands) = self.delete_shipped_before(now_us - age, i64::MAX)?;
            pruned.calls += calls;
            pruned.commands += commands;
        }
        if let Some(max_bytes) = policy.max_bytes {
            let conn = self.connect(true)?;
            while used_bytes(&conn).map_err(|e| self.err(e))? > max_bytes {
                // The time of the SIZE_STEP-th oldest shipped call: drop everything shipped before it.
                let cutoff: Option<i64> = conn
                    .query_row(
                        "SELECT c.time_us FROM api_calls c JOIN outbox o ON o.user = c.user \
                         WHERE c.seq <= o.shipped_seq ORDER BY c.time_us LIMIT 1 OFFSET ?",
                        [SIZE_STEP],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.err(e))?;
                let cutoff = cutoff.map_or(i64::MAX, |t| t + 1);
                let (calls, commands) = self.delete_shipped_before(cutoff, SIZE_STEP)?;
                pruned.calls += calls;
                pruned.commands += commands;
                if calls + commands == 0 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// THE one way records leave a store: shipped calls and commands that started before
    /// `cutoff_us` (at most `limit` of each), deleted in one transaction with the chain's record
    /// of the prune, so `ztk audit verify` tells this apart from tampering.
    fn delete_shipped_before(&self, cutoff_us: i64, limit: i64) -> Result<(u64, u64), StoreError> {
        let conn = self.connect(true)?;
        let any: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM api_calls c JOIN outbox o ON o.user = c.user \
                 WHERE c.time_us < ?1 AND c.seq <= o.shipped_seq) \
                 OR EXISTS (SELECT 1 FROM commands m JOIN outbox o ON o.user = m.user \
                 WHERE m.started_us < ?1 AND m.seq <= o.shipped_seq)",
                [cutoff_us],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !any {
            return Ok((0, 0));
        }
        // Everything deleted is at or below some user's mark, so below the highest mark + 1.
        let upto: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(shipped_seq), 0) + 1 FROM outbox",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        drop(conn);
        let (deleted, _) = self.prune_before(upto, |tx| delete_shipped(tx, cutoff_us, limit))?;
        Ok(deleted)
    }
}

fn shipped_seq(conn: &rusqlite::Connection, user: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row(
            "SELECT shipped_seq FROM outbox WHERE user = ?",
            [user],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Bytes in use by the store's pages (freed pages are reused, so this is what grows).
fn used_bytes(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// The DELETE statements of retention (run inside `prune_before`): shipped calls and commands
/// that started before `cutoff_us`, at most `limit` of each.
fn delete_shipped(
    tx: &rusqlite::Transaction,
    cutoff_us: i64,
    limit: i64,
) -> rusqlite::Result<(u64, u64)> {
    let calls = tx.execute(
        "DELETE FROM api_calls WHERE id IN (SELECT c.id FROM api_calls c JOIN outbox o ON o.user = c.user \
         WHERE c.time_us < ?1 AND c.seq <= o.shipped_seq LIMIT ?2)",
        params![cutoff_us, limit],
    )?;
    // A command goes only once none of its calls is left.
    let commands = tx.execute(
        "DELETE FROM commands WHERE id IN (SELECT m.id FROM commands m JOIN outbox o ON o.user = m.user \
         WHERE m.started_us < ?1 AND m.seq <= o.shipped_seq \
         AND NOT EXISTS (SELECT 1 FROM api_calls c WHERE c.command_id = m.id) LIMIT ?2)",
        params![cutoff_us, limit],
    )?;
    Ok((calls as u64, commands as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::now_us;
    use std::time::Duration;
    use uuid::Uuid;

    fn call(user: &str, time_us: i64, command_id: Option<Uuid>) -> ApiCall {
        ApiCall {
            id: Uuid::now_v7(),
            time_us,
            user: user.into(),
            cluster: "dev".into(),
            verb: "list".into(),
            method: "GET".into(),
            status: 200,
            command_id,
            decision: "allow".into(),
            ..Default::default()
        }
    }

    fn write(store: &AuditStore, calls: Vec<ApiCall>, commands: Vec<Command>) {
        let (sink, writer) = store.start_writer(64).unwrap();
        for c in commands {
            sink.record_command(c);
        }
        for c in calls {
            sink.record_call(c);
        }
        assert!(sink.flush(Duration::from_secs(5)));
        drop(sink);
        writer.close();
    }

    #[test]
    fn batches_follow_the_write_order_and_the_mark_moves_only_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let cmd = Command {
            id: Uuid::now_v7(),
            started_us: now_us(),
            user: "alice".into(),
            argv: vec!["kubectl".into()],
            ..Default::default()
        };
        let calls: Vec<_> = (0..5)
            .map(|_| call("alice", now_us(), Some(cmd.id)))
            .collect();
        write(&store, calls.clone(), vec![cmd.clone()]);
        write(&store, vec![call("bob", now_us(), None)], vec![]);
        assert_eq!(store.pending_count("alice").unwrap(), 6);

        let first = store.outbox_batch("alice", 4).unwrap();
        assert_eq!(first.commands, vec![cmd.clone()]);
        assert_eq!(first.calls.len(), 3);
        // Not acknowledged: the same batch again.
        let again = store.outbox_batch("alice", 4).unwrap();
        assert_eq!(again.through_seq, first.through_seq);
        store.ack_shipped("alice", first.through_seq, 1).unwrap();
        let second = store.outbox_batch("alice", 4).unwrap();
        assert_eq!(
            second.calls.iter().map(|c| c.id).collect::<Vec<_>>(),
            calls[3..].iter().map(|c| c.id).collect::<Vec<_>>()
        );
        store.ack_shipped("alice", second.through_seq, 2).unwrap();
        assert!(store.outbox_batch("alice", 4).unwrap().is_empty());
        // An older acknowledgement (another shipper) never moves the mark back.
        store.ack_shipped("alice", first.through_seq, 3).unwrap();
        assert!(store.outbox_batch("alice", 4).unwrap().is_empty());

        // The command's end is a new write: it ships again.
        let mut ended = cmd.clone();
        ended.ended_us = Some(now_us());
        ended.exit_code = Some(0);
        write(&store, vec![], vec![ended.clone()]);
        assert_eq!(
            store.outbox_batch("alice", 4).unwrap().commands,
            vec![ended]
        );

        store.note_ship_error("alice", "gateway down", 4).unwrap();
        let status = store.outbox_status(Some("carol")).unwrap();
        let users: Vec<_> = status.iter().map(|s| s.user.as_str()).collect();
        assert_eq!(users, ["alice", "bob", "carol"]);
        assert_eq!(status[0].pending(), 1);
        assert_eq!(status[0].last_error.as_deref(), Some("gateway down"));
        assert_eq!(status[0].last_success_us, Some(3));
        assert_eq!(status[1].pending_calls, 1);
        assert_eq!(status[2].pending(), 0);
    }

    /// Commands and calls written in turns: a batch of any size is the oldest writes of both
    /// kinds together, whether its calls fill it or not.
    #[test]
    fn a_batch_takes_the_oldest_writes_of_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let mut order = Vec::new();
        for (i, kind) in "cCccCcccCCc".chars().enumerate() {
            let id = if kind == 'C' {
                let cmd = Command {
                    id: Uuid::now_v7(),
                    started_us: now_us(),
                    user: "alice".into(),
                    argv: vec!["kubectl".into(), i.to_string()],
                    ..Default::default()
                };
                write(&store, vec![], vec![cmd.clone()]);
                cmd.id
            } else {
                let c = call("alice", now_us(), None);
                write(&store, vec![c.clone()], vec![]);
                c.id
            };
            order.push((kind, id));
        }
        for max in 1..=order.len() + 1 {
            let batch = store.outbox_batch("alice", max).unwrap();
            let expected = &order[..max.min(order.len())];
            let ids = |k: char| -> Vec<Uuid> {
                expected
                    .iter()
                    .filter(|(kind, _)| *kind == k)
                    .map(|(_, id)| *id)
                    .collect()
            };
            assert_eq!(
                batch.calls.iter().map(|c| c.id).collect::<Vec<_>>(),
                ids('c'),
                "calls of a batch of {max}"
            );
            assert_eq!(
                batch.commands.iter().map(|c| c.id).collect::<Vec<_>>(),
                ids('C'),
                "commands of a batch of {max}"
            );
        }
        let all = store.outbox_batch("alice", order.len()).unwrap();
        store.ack_shipped("alice", all.through_seq, 1).unwrap();
        assert!(store.outbox_batch("alice", 1).unwrap().is_empty());
    }

    #[test]
    fn retention_never_drops_unshipped_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let day = 86_400_000_000i64;
        let now = now_us();
        let old: Vec<_> = (0..10)
            .map(|i| call("alice", now - 40 * day + i, None))
            .collect();
        write(&store, old.clone(), vec![]);
        let batch = store.outbox_batch("alice", 5).unwrap();
        store.ack_shipped("alice", batch.through_seq, now).unwrap();
        let recent = call("alice", now, None);
        write(&store, vec![recent], vec![]);
        let policy = Retention {
            max_age_us: Some(30 * day),
            max_bytes: None,
        };
        let pruned = store.apply_retention(&policy, now).unwrap();
        assert_eq!(pruned.calls, 5, "only the five shipped old calls go");
        assert_eq!(store.pending_count("alice").unwrap(), 6);
        // Size: even a limit of one byte drops only what is shipped.
        let batch = store.outbox_batch("alice", 3).unwrap();
        store.ack_shipped("alice", batch.through_seq, now).unwrap();
        let pruned = store
            .apply_retention(
                &Retention {
                    max_age_us: None,
                    max_bytes: Some(1),
                },
                now,
            )
            .unwrap();
        assert_eq!(pruned.calls, 3);
        assert_eq!(store.pending_count("alice").unwrap(), 3);
        assert_eq!(
            store.count_calls(&crate::audit::Filter::default()).unwrap(),
            3
        );
    }
}
