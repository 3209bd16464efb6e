//! Each sink's durable cursor, in the `sink_cursors` table of the gateway's audit store (the
//! same file as the records, so the write sequence and the cursors are backed up together).
//! A cursor is the last write sequence number whose records the receiver acknowledged.

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use crate::audit::store::{open_connection, StoreError};

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
}

#[derive(Debug, Clone)]
pub struct Cursors {
    path: PathBuf,
}

impl Cursors {
    /// Cursors in the audit store at `path` (opened, and so migrated, by `AuditStore::open`).
    pub fn new(path: &Path) -> Cursors {
        Cursors {
            path: path.to_path_buf(),
        }
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The sink's cursor; 0 (the beginning of the store) for a sink never seen before.
    pub fn load(&self, name: &str) -> Result<i64, StoreError> {
        let conn = open_connection(&self.path, true).map_err(|e| self.err(e))?;
        conn.query_row("SELECT seq FROM sink_cursors WHERE name = ?", [name], |r| {
            r.get(0)
        })
        .optional()
        .map(|s| s.unwrap_or(0))
        .map_err(|e| self.err(e))
    }

    /// Moves the cursor to `seq` after the receiver acknowledged `delivered` records (0 when
    /// only filtered-out records were passed over).
    pub fn advance(
        &self,
        name: &str,
        seq: i64,
        delivered: i64,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let conn = open_connection(&self.path, false).map_err(|e| self.err(e))?;
        let success = (delivered > 0).then_some(now_us);
        conn.execute(
            "INSERT INTO sink_cursors (name, seq, delivered, last_success_us, updated_us) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(name) DO UPDATE SET seq = MAX(seq, excluded.seq), delivered = delivered + excluded.delivered, \
             last_success_us = COALESCE(excluded.last_success_us, last_success_us), updated_us = excluded.updated_us",
            params![name, seq, delivered, success, now_us],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Records a failed attempt (the message must hold no secret: sinks scrub their tokens).
    pub fn failed(&self, name: &str, message: &str, now_us: i64) -> Result<(), StoreError> {
        let conn = open_connection(&self.path, false).map_err(|e| self.err(e))?;
        conn.execute(
            "INSERT INTO sink_cursors (name, seq, last_error, last_error_us, updated_us) VALUES (?1, 0, ?2, ?3, ?3) \
             ON CONFLICT(name) DO UPDATE SET last_error = excluded.last_error, last_error_us = excluded.last_error_us, \
             updated_us = excluded.updated_us",
            params![name, message, now_us],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    pub fn all(&self) -> Result<Vec<CursorRow>, StoreError> {
        let conn = open_connection(&self.path, true).map_err(|e| self.err(e))?;
        let mut stmt = conn
            .prepare(
                "SELECT name, seq, delivered, last_success_us, last_error, last_error_us \
                 FROM sink_cursors ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CursorRow {
                    name: r.get(0)?,
                    seq: r.get(1)?,
                    delivered: r.get(2)?,
                    last_success_us: r.get(3)?,
                    last_error: r.get(4)?,
                    last_error_us: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditStore;

    #[test]
    fn cursors_only_move_forward_and_keep_the_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        AuditStore::open(&path).unwrap();
        let c = Cursors::new(&path);
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
