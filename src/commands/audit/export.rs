//! `ztk audit export`: the whole filtered trail, streamed, written atomically.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{check_view, emit, local_store, remote_rows, FilterArgs};
use crate::audit::format::{Emitter, Format};
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

pub fn run(args: ExportArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let format = args.format.unwrap_or(Format::Csv);
    if matches!(format, Format::Table | Format::Wide) {
        return Err(UsageError(
            "export writes csv, json, ndjson or k8s-audit; for a table use `ztk audit list`".into(),
        )
        .into());
    }
    check_view(args.view, format)?;
    let _ = args.csv;
    // Write next to the destination and rename at the end: an interrupted export leaves nothing.
    let (sink, temp): (Box<dyn Write>, Option<(tempfile::NamedTempFile, PathBuf)>) =
        match &args.output {
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let tmp = tempfile::NamedTempFile::new_in(dir)
                    .with_context(|| format!("cannot write in {}", dir.display()))?;
                let file = tmp.reopen()?;
                (
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, file)),
                    Some((tmp, path.clone())),
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
    let mut out = Emitter::new(format, sink);
    let bar = progress_bar();
    if args.remote {
        crate::cli::block_on(async {
            remote_rows(args.view, filter, args.limit, &mut out, |n| {
                if let Some(bar) = &bar {
                    bar.set_position(n);
                }
            })
            .await?;
            Ok(0)
        })?;
    } else {
        let store = local_store()?;
        if let Some(bar) = &bar {
            let total = match args.view {
                View::Calls => store.count_calls(&filter)?,
                View::Commands => store.count_commands(&filter)?,
            };
            bar.set_length(args.limit.map_or(total, |l| total.min(l as u64)));
        }
        let tick = |out: &Emitter<Box<dyn Write>>| {
            if let Some(bar) = &bar {
                if out.rows() % 4096 == 0 {
                    bar.set_position(out.rows());
                }
            }
        };
        match args.view {
            View::Calls => store.for_each_call(&filter, None, args.limit, |row| {
                emit(&mut out, |e| e.call(&row))?;
                tick(&out);
                Ok(())
            })?,
            View::Commands => store.for_each_command(&filter, None, args.limit, |row| {
                emit(&mut out, |e| e.command(&row))?;
                tick(&out);
                Ok(())
            })?,
        }
    }
    let rows = out.rows();
    let mut sink = out.finish(args.view == View::Commands)?;
    sink.flush()?;
    drop(sink);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some((tmp, path)) = temp {
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("exported {rows} rows to {}", path.display());
    }
    Ok(0)
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
