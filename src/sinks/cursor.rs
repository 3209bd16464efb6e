//! Each sink's durable cursor, in the `sink_cursors` table of the gateway's audit store (the
//! same file as the records, so the write sequence and the cursors are backed up together).
//! A cursor is the last write sequence number whose records the receiver acknowledged.

use crate::args;
use crate::audit::store::{AuditStore, StoreError};

/// One sink's row: where it is and how its last attempts went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CursorRow {
    pub name: String,
    pub seq: i64,
    /// Records delivered since the cursor was created.
    pub delivered: i64,
    pub last_success_us: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_us: Option<i64>,
    /// The gateway delivering the sink, and until when its lease holds.
    pub lease_owner: Option<String>,
    pub lease_until_us: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Cursors {
    store: AuditStore,
}

impl Cursors {
    /// The cursors of the audit store `store`.
    pub fn new(store: &AuditStore) -> Cursors {
        Cursors {
            store: store.clone(),
        }
    }

    /// The sink's cursor; 0 (the beginning of the store) for a sink never seen before.
    pub fn load(&self, name: &str) -> Result<i64, StoreError> {
        self.store.with_db(true, |db| {
            db.query_row(
                "SELECT seq FROM sink_cursors WHERE name = ?",
                args![name],
                |r| r.get(0),
            )
            .map(|s| s.unwrap_or(0))
        })
    }

    /// Moves the cursor to `seq` after the receiver acknowledged `delivered` records (0 when
    /// only filtered-out records were passed over). Never backwards.
    pub fn advance(
        &self,
        name: &str,
        seq: i64,
        delivered: i64,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let success = (delivered > 0).then_some(now_us);
        self.store.with_db(false, |db| {
            db.execute(
                "INSERT INTO sink_cursors (name, seq, delivered, last_success_us, updated_us) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(name) DO UPDATE SET \
                 seq = CASE WHEN excluded.seq > sink_cursors.seq THEN excluded.seq ELSE sink_cursors.seq END, \
                 delivered = sink_cursors.delivered + excluded.delivered, \
                 last_success_us = COALESCE(excluded.last_success_us, sink_cursors.last_success_us), \
                 updated_us = excluded.updated_us",
                args![name, seq, delivered, success, now_us],
            )
            .map(|_| ())
        })
    }

    /// Records a failed attempt (the message must hold no secret: sinks scrub their tokens).
    pub fn failed(&self, name: &str, message: &str, now_us: i64) -> Result<(), StoreError> {
        self.store.with_db(false, |db| {
            db.execute(
                "INSERT INTO sink_cursors (name, seq, last_error, last_error_us, updated_us) VALUES (?1, 0, ?2, ?3, ?3) \
                 ON CONFLICT(name) DO UPDATE SET last_error = excluded.last_error, last_error_us = excluded.last_error_us, \
                 updated_us = excluded.updated_us",
                args![name, message, now_us],
            )
            .map(|_| ())
        })
    }

    /// Takes or renews the lease on delivering sink `name` for `owner` (a gateway) until
    /// `until_us`: granted when no one holds it, `owner` already does, or the holder's lease
    /// ran out (it stopped or died). Several gateways share one database; each sink is
    /// delivered by one of them at a time, and another takes over from the durable cursor when
    /// the holder's lease expires. True when `owner` holds it now.
    pub fn lease(
        &self,
        name: &str,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> Result<bool, StoreError> {
        self.store.with_db(false, |db| {
            db.execute(
                "INSERT INTO sink_cursors (name, seq, updated_us, lease_owner, lease_until_us) VALUES (?1, 0, ?3, ?2, ?4) \
                 ON CONFLICT(name) DO UPDATE SET lease_owner = excluded.lease_owner, \
                 lease_until_us = excluded.lease_until_us \
                 WHERE sink_cursors.lease_owner IS NULL OR sink_cursors.lease_owner = excluded.lease_owner \
                 OR sink_cursors.lease_until_us IS NULL OR sink_cursors.lease_until_us <= ?3",
                args![name, owner, now_us, until_us],
            )
            .map(|n| n == 1)
        })
    }

    /// Gives the lease up (a gateway stopping): another gateway takes over at once.
    pub fn release(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.store.with_db(false, |db| {
            db.execute(
                "UPDATE sink_cursors SET lease_owner = NULL, lease_until_us = NULL \
                 WHERE name = ? AND lease_owner = ?",
                args![name, owner],
            )
            .map(|_| ())
        })
    }

    pub fn all(&self) -> Result<Vec<CursorRow>, StoreError> {
        let mut rows = self.store.with_db(true, |db| {
            db.query_vec(
                "SELECT name, seq, delivered, last_success_us, last_error, last_error_us, \
                 lease_owner, lease_until_us FROM sink_cursors",
                &[],
                |r| {
                    Ok(CursorRow {
                        name: r.get(0)?,
                        seq: r.get(1)?,
                        delivered: r.get(2)?,
                        last_success_us: r.get(3)?,
                        last_error: r.get(4)?,
                        last_error_us: r.get(5)?,
                        lease_owner: r.get(6)?,
                        lease_until_us: r.get(7)?,
                    })
                },
            )
        })?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditStore;

    #[test]
    fn cursors_only_move_forward_and_keep_the_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
        let c = Cursors::new(&store);
        assert_eq!(c.load("s").unwrap(), 0);
        c.failed("s", "connection refused", 5).unwrap();
        assert_eq!(c.load("s").unwrap(), 0);
        c.advance("s", 10, 3, 6).unwrap();
        c.advance("s", 4, 0, 7).unwrap();
        assert_eq!(c.load("s").unwrap(), 10);
        let rows = c.all().unwrap();
        assert_eq!(rows[0].delivered, 3);
        assert_eq!(rows[0].last_success_us, Some(6));
        assert_eq!(rows[0].last_error.as_deref(), Some("connection refused"));
    }
}
