//! The file sink: JSON lines, rotated by size, a fixed number of old files kept.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::audit::Sequenced;

use super::format::record_json;
use super::SinkError;

pub struct FileSink {
    state: Option<FileState>,
}

struct FileState {
    path: PathBuf,
    max_size: u64,
    max_files: usize,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    pub fn new(path: &Path, max_size: u64, max_files: usize) -> FileSink {
        FileSink {
            state: Some(FileState {
                path: path.to_path_buf(),
                max_size,
                max_files,
                file: None,
                size: 0,
            }),
        }
    }

    /// Appends the batch and syncs it to disk: the acknowledgement is `fdatasync` returning.
    pub async fn deliver(&mut self, records: &[Sequenced]) -> Result<(), SinkError> {
        let mut lines = Vec::with_capacity(records.len());
        for r in records {
            let mut line = serde_json::to_vec(&record_json(r))
                .map_err(|e| SinkError(format!("could not encode a record: {e}")))?;
            line.push(b'\n');
            lines.push(line);
        }
        let mut state = self
            .state
            .take()
            .ok_or_else(|| SinkError("the file sink was lost in an earlier failure".into()))?;
        // File writes and fsync block: keep them off the async workers.
        let (state, result) = tokio::task::spawn_blocking(move || {
            let result = state.append(&lines);
            (state, result)
        })
        .await
        .map_err(|e| SinkError(format!("the file writer failed: {e}")))?;
        self.state = Some(state);
        result
    }
}

impl FileState {
    /// Writes whole lines, rotating before a line would take the file past `max_size` (a
    /// single line larger than that gets a file of its own).
    fn append(&mut self, lines: &[Vec<u8>]) -> Result<(), SinkError> {
        let path = self.path.clone();
        let io =
            |what: &str, e: std::io::Error| SinkError(format!("{what} {}: {e}", path.display()));
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                crate::fsutil::create_private_dir(dir)
                    .map_err(|e| io("cannot create the directory of", e))?;
            }
            let file = open_append(&self.path).map_err(|e| io("cannot open", e))?;
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        // Where the synced part of the live file ends: a failure cuts back to it.
        let mut synced = self.size;
        for line in lines {
            if self.size > 0 && self.size + line.len() as u64 > self.max_size {
                let file = self.file.as_mut().expect("opened above");
                if let Err(e) = file.sync_data() {
                    return Err(self.cut(synced, io("cannot write", e)));
                }
                self.rotate().map_err(|e| io("cannot rotate", e))?;
                synced = 0;
            }
            let file = self.file.as_mut().expect("opened above");
            if let Err(e) = file.write_all(line) {
                return Err(self.cut(synced, io("cannot write", e)));
            }
            self.size += line.len() as u64;
        }
        let file = self.file.as_mut().expect("opened above");
        if let Err(e) = file.sync_data() {
            return Err(self.cut(synced, io("cannot write", e)));
        }
        Ok(())
    }

    /// Cuts a partial batch off the live file so it stays whole lines; the batch is retried
    /// (records already in rotated files then appear twice: at least once).
    fn cut(&mut self, synced: u64, err: SinkError) -> SinkError {
        if let Some(file) = self.file.take() {
            let _ = file.set_len(synced);
        }
        err
    }

    /// `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, …; the oldest beyond `max_files` goes.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    crate::fsutil::private_options()
        .create(true)
        .append(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ApiCall, CallRow, Record};

    fn record(seq: i64) -> Sequenced {
        Sequenced {
            seq,
            record: Record::Call(CallRow {
                call: ApiCall {
                    user: "alice".into(),
                    path: "x".repeat(300),
                    ..Default::default()
                },
                command_line: None,
                client_duration_us: None,
                gateway_duration_us: None,
            }),
        }
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/audit.jsonl");
        let mut sink = FileSink::new(&path, 2048, 2);
        // Batches of 4 (about 1.4 KiB): rotation happens inside a batch, between records.
        for first in (1..=20).step_by(4) {
            let batch: Vec<_> = (first..first + 4).map(record).collect();
            sink.deliver(&batch).await.unwrap();
        }
        let read = |p: &Path| -> Vec<i64> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_i64()
                        .unwrap()
                })
                .collect()
        };
        let live = read(&path);
        let one = read(&dir.path().join("out/audit.jsonl.1"));
        let two = read(&dir.path().join("out/audit.jsonl.2"));
        assert!(!dir.path().join("out/audit.jsonl.3").exists());
        for p in [&path, &dir.path().join("out/audit.jsonl.1")] {
            assert!(std::fs::metadata(p).unwrap().len() <= 2048);
        }
        // The newest records, in order, across the kept files.
        let mut all = two.clone();
        all.extend(&one);
        all.extend(&live);
        assert_eq!(*all.last().unwrap(), 20);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        assert!(all.len() < 20, "older files were dropped: {all:?}");
    }
}
