//! Noticing commits to a SQLite database without a query or a system call.
//!
//! In WAL mode every commit, by any connection in any process, rewrites the wal-index header at
//! the start of the database's `-shm` file (<https://www.sqlite.org/walformat.html>), which
//! SQLite maps into the memory of every process using the database. Its transaction counter,
//! frame count, checksums and salts change with each commit, so a header equal to an earlier
//! copy means nothing was committed in between. `PRAGMA data_version` answers the same
//! question, but it runs a statement in a read transaction (two `fcntl` locks): on the
//! gateway's request path that was 7 % of its CPU (`perf record` at 16 concurrent calls).

use std::ffi::c_void;

use rusqlite::{ffi, Connection};

/// Both copies of the wal-index header (2 × 48 bytes), as words.
pub type Header = [u64; 12];

/// SQLite's own mapping of a connection's wal-index header.
pub struct WalHeader {
    words: *const u64,
}

// The pointer is only read from, and the mapping it points into lives as long as the connection
// it came from (see `WalHeader::of`).
unsafe impl Send for WalHeader {}
unsafe impl Sync for WalHeader {}

impl WalHeader {
    /// The header as SQLite maps it for `conn`, or None where SQLite does not share it (not in
    /// WAL mode yet, or a VFS without shared memory): callers then ask `PRAGMA data_version`.
    ///
    /// # Safety
    /// The result must not be read after `conn` is closed: SQLite unmaps the header then.
    pub unsafe fn of(conn: &Connection) -> Option<WalHeader> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
        );
        if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
            return None;
        }
        let methods = &*(*file).pMethods;
        if methods.iVersion < 2 {
            return None;
        }
        let map = methods.xShmMap?;
        let mut region: *mut c_void = std::ptr::null_mut();
        // Region 0 (SQLite's wal-index regions are 32 KiB), without creating it: a database
        // whose wal-index does not exist yet has no header to watch.
        if map(file, 0, 32 * 1024, 0, &mut region) != ffi::SQLITE_OK || region.is_null() {
            return None;
        }
        Some(WalHeader {
            words: region.cast::<u64>().cast_const(),
        })
    }

    /// The header now. Writers update it while this reads: a torn copy differs from every
    /// earlier one, which only costs the caller a query.
    pub fn read(&self) -> Header {
        let mut out = [0u64; 12];
        for (i, word) in out.iter_mut().enumerate() {
            // Volatile: other processes write this memory behind the compiler's back.
            *word = unsafe { std::ptr::read_volatile(self.words.add(i)) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_from_any_connection_changes_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = crate::audit::store::open_connection(&path, false).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let header = unsafe { WalHeader::of(&conn) }.expect("a WAL database shares its header");
        let before = header.read();
        assert_eq!(header.read(), before, "no commit, no change");
        // A read changes nothing.
        let _: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(header.read(), before);
        // This connection's commit, another connection's, and another process's.
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let mine = header.read();
        assert_ne!(mine, before);
        let other = crate::audit::store::open_connection(&path, false).unwrap();
        other.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let theirs = header.read();
        assert_ne!(theirs, mine);
        let status = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg("INSERT INTO t VALUES (3);")
            .status()
            .expect("the sqlite3 CLI (Debian package sqlite3) runs");
        assert!(status.success());
        assert_ne!(header.read(), theirs);
    }

    #[test]
    fn a_database_not_in_wal_mode_has_no_header() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(unsafe { WalHeader::of(&conn) }.is_none());
    }
}
