//! `ztk audit list`: one page of commands or calls, newest first.

use anyhow::Result;

use super::{check_view, default_format, emit, local_store, remote_rows, FilterArgs};
use crate::audit::format::{Emitter, Format};
use crate::audit::AuditStore;
use crate::protocol::View;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Commands (one row per command) or calls (one row per API call).
    #[arg(long, value_enum, default_value = "commands")]
    pub view: View,
    /// Output format (default: table on a terminal, ndjson otherwise).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Query the gateway's authoritative log instead of the local one.
    #[arg(long)]
    pub remote: bool,
}

pub fn run(args: ListArgs) -> Result<i32> {
    if args.remote {
        return crate::cli::block_on(list_remote(args));
    }
    let store = local_store()?;
    list(&store, &args)
}

/// Prints the rows of `store` that match the arguments.
pub fn list(store: &AuditStore, args: &ListArgs) -> Result<i32> {
    let mut filter = args.filter.to_filter()?;
    let format = default_format(args.output);
    check_view(args.view, format)?;
    filter.limit = Some(args.limit);
    let mut out = Emitter::new(format, std::io::BufWriter::new(std::io::stdout().lock()));
    match args.view {
        View::Calls => store.for_each_call(&filter, None, filter.limit, |row| {
            emit(&mut out, |e| e.call(&row))
        })?,
        View::Commands => store.for_each_command(&filter, None, filter.limit, |row| {
            emit(&mut out, |e| e.command(&row))
        })?,
    }
    drop(out.finish(args.view == View::Commands)?);
    Ok(0)
}

async fn list_remote(args: ListArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let format = default_format(args.output);
    check_view(args.view, format)?;
    let mut out = Emitter::new(format, std::io::BufWriter::new(std::io::stdout().lock()));
    remote_rows(args.view, filter, Some(args.limit), &mut out, |_| {}).await?;
    drop(out.finish(args.view == View::Commands)?);
    Ok(0)
}
