//! `ztk audit`: read the audit trail — the local store, or the gateway's with `--remote`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use uuid::Uuid;

use crate::audit::filter::{self, Filter, StatusMatch};
use crate::audit::format::{Emitter, Format};
use crate::audit::{AuditStore, CallRow, CommandRow, Cursor};
use crate::cli::UsageError;
use crate::client::api::GatewayApi;
use crate::client::config::Paths;
use crate::client::token::require_session;
use crate::protocol::{AuditQuery, View, MAX_PAGE};

/// Browse the audit trail: every command, and every API call it caused.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List commands (default) or API calls, newest first.
    List(ListArgs),
    /// Show one command with all its API calls.
    Show(ShowArgs),
    /// Write the whole filtered audit trail to a file or standard output (CSV by default).
    Export(ExportArgs),
    /// Fill the local store with N synthetic records (for benchmarks).
    #[command(hide = true)]
    Seed(SeedArgs),
}

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

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The command's ID, or any unique part of it (`ztk audit list` shows the last 8 characters).
    id: String,
    /// Output format for the calls (default: table on a terminal, ndjson otherwise).
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
    /// Read the gateway's log (needs the full ID).
    #[arg(long)]
    remote: bool,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
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

#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// How many API-call records to add (plus one command per ten calls).
    #[arg(long)]
    count: u64,
    /// The store to fill (default: the local store).
    #[arg(long, value_name = "DB")]
    db: Option<PathBuf>,
}

/// The audit filters. Repeat one to match any of its values; different filters must all match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records before this time: RFC 3339, or a duration ago.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this user's records.
    #[arg(long, value_name = "USER")]
    pub user: Vec<String>,
    /// Only this cluster's records.
    #[arg(long, value_name = "NAME")]
    pub cluster: Vec<String>,
    /// Only this namespace.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Vec<String>,
    /// Only this resource (pods), or subresource (pods/log).
    #[arg(long, value_name = "RESOURCE")]
    pub resource: Vec<String>,
    /// Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...).
    #[arg(long, value_name = "VERB")]
    pub verb: Vec<String>,
    /// Only this HTTP status (404) or class (4xx).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Only this access method: cli, browser or api.
    #[arg(long, value_name = "METHOD")]
    pub access_method: Vec<String>,
    /// Only commands whose command line contains this text.
    #[arg(long, value_name = "TEXT")]
    pub command: Vec<String>,
    /// Only calls (or commands) that took at least this long (250ms, 2s).
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> Result<Filter, filter::FilterError> {
        Ok(Filter {
            since_us: self
                .since
                .as_deref()
                .map(filter::parse_time_us)
                .transpose()?,
            until_us: self
                .until
                .as_deref()
                .map(filter::parse_time_us)
                .transpose()?,
            users: self.user.clone(),
            clusters: self.cluster.clone(),
            namespaces: self.namespace.clone(),
            resources: self.resource.clone(),
            verbs: self.verb.clone(),
            statuses: self
                .status
                .iter()
                .map(|s| StatusMatch::parse(s))
                .collect::<Result<_, _>>()?,
            access_methods: self
                .access_method
                .iter()
                .map(|m| filter::parse_access_method(m))
                .collect::<Result<_, _>>()?,
            commands: self.command.clone(),
            min_duration_us: self
                .min_duration
                .as_deref()
                .map(filter::parse_duration_us)
                .transpose()?,
            command_id: None,
            limit: None,
        })
    }
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        AuditCommand::List(list_args) => {
            if list_args.remote {
                return crate::cli::block_on(list_remote(list_args));
            }
            let store = local_store()?;
            list(&store, &list_args)
        }
        AuditCommand::Show(show) => show_command(show),
        AuditCommand::Export(export) => export_rows(export),
        AuditCommand::Seed(seed) => {
            let store = match seed.db {
                Some(path) => AuditStore::open(&path)?,
                None => local_store()?,
            };
            let started = std::time::Instant::now();
            let n = crate::audit::seed::seed(&store, seed.count)?;
            eprintln!(
                "seeded {n} calls in {:.2?} into {}",
                started.elapsed(),
                store.path().display()
            );
            Ok(0)
        }
    }
}

fn local_store() -> Result<AuditStore> {
    let paths = Paths::from_env()?;
    Ok(AuditStore::open(&paths.audit_db())?)
}

fn default_format(asked: Option<Format>) -> Format {
    asked.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Ndjson
    })
}

fn check_view(view: View, format: Format) -> Result<()> {
    if view == View::Commands && format == Format::K8sAudit {
        return Err(UsageError("k8s-audit describes API calls; add --view calls".into()).into());
    }
    Ok(())
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

fn emit<W: Write>(
    out: &mut Emitter<W>,
    f: impl FnOnce(&mut Emitter<W>) -> Result<(), crate::audit::format::FormatError>,
) -> Result<(), crate::audit::store::StoreError> {
    // A closed pipe (`| head`) ends the listing; the store error type carries it out.
    f(out).map_err(|e| crate::audit::store::StoreError::Output(e.to_string()))
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

/// Pages through the gateway's log, writing every row; `progress` hears the running count.
async fn remote_rows<W: Write>(
    view: View,
    filter: Filter,
    limit: Option<usize>,
    out: &mut Emitter<W>,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    match view {
        View::Calls => {
            remote_pages::<CallRow>(view, filter, limit, |rows| {
                for row in rows {
                    out.call(row)?;
                }
                progress(out.rows());
                Ok(())
            })
            .await
        }
        View::Commands => {
            remote_pages::<CommandRow>(view, filter, limit, |rows| {
                for row in rows {
                    out.command(row)?;
                }
                progress(out.rows());
                Ok(())
            })
            .await
        }
    }
}

/// Fetches pages of the gateway's log (keyset pagination) until `limit` rows or the end.
async fn remote_pages<T: serde::de::DeserializeOwned>(
    view: View,
    filter: Filter,
    limit: Option<usize>,
    mut f: impl FnMut(&[T]) -> Result<()>,
) -> Result<()> {
    let paths = Paths::from_env()?;
    let (config, token) = require_session(&paths)?;
    let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
    let mut remaining = limit.unwrap_or(usize::MAX);
    let mut after: Option<Cursor> = None;
    while remaining > 0 {
        let query = AuditQuery {
            view,
            filter: filter.clone(),
            after: after.take(),
            limit: remaining.min(MAX_PAGE),
        };
        let page = api
            .query::<T>(&token, &query)
            .await
            .context("the gateway's audit query failed")?;
        f(&page.items)?;
        remaining -= page.items.len().min(remaining);
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    Ok(())
}

fn show_command(args: ShowArgs) -> Result<i32> {
    let format = default_format(args.output);
    let (command, calls) = if args.remote {
        let id = Uuid::parse_str(&args.id).map_err(|_| {
            UsageError(format!(
                "{:?} is not a full command ID; --remote needs the whole ID",
                args.id
            ))
        })?;
        crate::cli::block_on(async move {
            let filter = Filter {
                command_id: Some(id),
                ..Default::default()
            };
            let mut commands: Vec<CommandRow> = Vec::new();
            remote_pages(
                View::Commands,
                filter.clone(),
                Some(1),
                |rows: &[CommandRow]| {
                    commands.extend_from_slice(rows);
                    Ok(())
                },
            )
            .await?;
            let mut calls: Vec<CallRow> = Vec::new();
            remote_pages(View::Calls, filter, None, |rows: &[CallRow]| {
                calls.extend_from_slice(rows);
                Ok(())
            })
            .await?;
            let command = commands
                .into_iter()
                .next()
                .with_context(|| format!("the gateway has no command {id}"))?;
            Ok((command, calls))
        })?
    } else {
        let store = local_store()?;
        let found = store.find_command(&args.id)?;
        let command = match found.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!(
                "no command {:?} in the local audit log; `ztk audit list` shows the IDs",
                args.id
            ),
            _ => {
                return Err(UsageError(format!(
                    "the ID prefix {:?} matches several commands; give more of it",
                    args.id
                ))
                .into())
            }
        };
        let filter = Filter {
            command_id: Some(command.id),
            ..Default::default()
        };
        let row = store
            .list_commands(&filter)?
            .into_iter()
            .next()
            .context("the command vanished")?;
        let calls = store.list_calls(&filter)?;
        (row, calls)
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut lock,
                &serde_json::json!({"command": command, "calls": calls}),
            )?;
            writeln!(lock)?;
        }
        Format::Table | Format::Wide => {
            let c = &command.command;
            writeln!(lock, "Command:   {}", c.command_line)?;
            writeln!(lock, "ID:        {}", c.id)?;
            writeln!(lock, "User:      {}", c.user)?;
            writeln!(lock, "Cluster:   {}", c.cluster)?;
            writeln!(
                lock,
                "Started:   {}",
                crate::audit::model::format_time_us(c.started_us)
            )?;
            if let Some(end) = c.ended_us {
                writeln!(
                    lock,
                    "Ended:     {}",
                    crate::audit::model::format_time_us(end)
                )?;
            }
            writeln!(
                lock,
                "Exit code: {}",
                c.exit_code
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into())
            )?;
            writeln!(
                lock,
                "Calls:     {} ({})",
                command.calls,
                command.status_summary()
            )?;
            writeln!(lock, "Host:      {}  Directory: {}", c.host, c.cwd)?;
            let mut out = Emitter::new(format, &mut lock);
            for call in calls.iter().rev() {
                out.call(call)?;
            }
            out.finish(false)?;
        }
        other => {
            let mut out = Emitter::new(other, &mut lock);
            for call in calls.iter().rev() {
                out.call(call)?;
            }
            out.finish(false)?;
        }
    }
    Ok(0)
}

fn export_rows(args: ExportArgs) -> Result<i32> {
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
