//! `ztk audit export`: the whole filtered trail, streamed, written atomically. The TUI's export
//! key calls the same `write_export`, so both produce the same file for the same filter.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{check_view, emit, local_store, remote_rows, FilterArgs};
use crate::audit::format::{Emitter, Format};
use crate::audit::{AuditStore, Filter};
use crate::cli::UsageError;
use crate::protocol::View;
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Export CSV (the default).
    #[arg(long, conflicts_with = "format")]
    csv: bool,
    /// Export in another format instead of CSV.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write to this file (atomically: nothing partial is left on error) instead of standard output.
    #[arg(long = "output", short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Commands or calls.
    #[arg(long, value_enum, default_value = "calls")]
    view: View,
    /// At most this many rows (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Export the gateway's authoritative log instead of the local one.
    #[arg(long)]
    remote: bool,
}

/// Where an export reads from.
pub enum ExportFrom<'a> {
    Local(&'a AuditStore),
    /// The gateway, with the session of the logged-in user.
    Remote,
}

/// One export: which rows, in which format, to which file (standard output when None).
pub struct ExportJob {
    pub view: View,
    pub filter: Filter,
    pub format: Format,
    pub limit: Option<usize>,
    pub output: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let format = args.format.unwrap_or(Format::Csv);
    let _ = args.csv;
    let job = ExportJob {
        view: args.view,
        filter,
        format,
        limit: args.limit,
        output: args.output,
    };
    check_job(&job)?;
    let bar = progress_bar();
    let store = if args.remote {
        None
    } else {
        Some(local_store()?)
    };
    let from = match &store {
        Some(store) => ExportFrom::Local(store),
        None => ExportFrom::Remote,
    };
    if let (Some(bar), Some(store)) = (&bar, &store) {
        let total = match job.view {
            View::Calls => store.count_calls(&job.filter)?,
            View::Commands => store.count_commands(&job.filter)?,
        };
        bar.set_length(job.limit.map_or(total, |l| total.min(l as u64)));
    }
    let rows = write_export(&job, from, |n| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &job.output {
        eprintln!("exported {rows} rows to {}", path.display());
    }
    Ok(0)
}

/// Refuses format/view combinations an export cannot write.
pub fn check_job(job: &ExportJob) -> Result<()> {
    if matches!(job.format, Format::Table | Format::Wide) {
        return Err(UsageError(
            "export writes csv, json, ndjson or k8s-audit; for a table use `ztk audit list`".into(),
        )
        .into());
    }
    check_view(job.view, job.format)
}

/// Writes every row of `job` (streamed, never held in memory) and returns how many. A file is
/// written next to its destination and renamed at the end: an interrupted export leaves nothing.
/// `progress` hears the running row count now and then.
pub fn write_export(
    job: &ExportJob,
    from: ExportFrom<'_>,
    progress: impl FnMut(u64),
) -> Result<u64> {
    check_job(job)?;
    let (sink, temp): (Box<dyn Write>, Option<(tempfile::NamedTempFile, &Path)>) = match &job.output
    {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let file = tmp.reopen()?;
            (
                Box::new(std::io::BufWriter::with_capacity(1 << 16, file)),
                Some((tmp, path.as_path())),
            )
        }
        None => (
            Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout().lock(),
            )),
            None,
        ),
    };
    let mut out = Emitter::new(job.format, sink);
    let mut progress = progress;
    match from {
        ExportFrom::Remote => {
            let filter = job.filter.clone();
            crate::cli::block_on(async {
                remote_rows(job.view, filter, job.limit, &mut out, &mut progress).await
            })?;
        }
        ExportFrom::Local(store) => {
            let mut tick = |out: &Emitter<Box<dyn Write>>| {
                if out.rows() % 4096 == 0 {
                    progress(out.rows());
                }
            };
            match job.view {
                View::Calls => store.for_each_call(&job.filter, None, job.limit, |row| {
                    emit(&mut out, |e| e.call(&row))?;
                    tick(&out);
                    Ok(())
                })?,
                View::Commands => store.for_each_command(&job.filter, None, job.limit, |row| {
                    emit(&mut out, |e| e.command(&row))?;
                    tick(&out);
                    Ok(())
                })?,
            }
        }
    }
    let rows = out.rows();
    progress(rows);
    let mut sink = out.finish(job.view == View::Commands)?;
    sink.flush()?;
    drop(sink);
    if let Some((tmp, path)) = temp {
        tmp.as_file().sync_all()?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(rows)
}

/// A progress bar on a terminal's stderr; nothing when stderr is piped.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
