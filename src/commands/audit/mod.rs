//! `ztk audit`: read the audit trail — the local store, or the gateway's with `--remote`.
//!
//! One file per subcommand; this one holds what they share: the filter flags, the store, the
//! output format defaults and paging through the gateway's log.

pub(crate) mod export;
mod list;
mod push;
mod seed;
mod show;
mod stats;
mod status;
mod tail;
mod tui;
mod verify;

pub use list::{list, ListArgs};
pub use verify::{pinned_key, verify_store};

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::audit::filter::{self, Filter};
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

// Deferred: a run builds the arguments of the subcommand it runs, not of every one. clap
// allocates each argument, and building them all cost every `ztk` process (`ztk credential`
// before each kubectl command included) 78 of the 289 page faults of `ztk --version`; deferring
// these leaves saves 33. Only leaf subcommands: the `help` subcommand's tree is copied before
// deferred parts are built.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum AuditCommand {
    /// List commands (default) or API calls, newest first.
    List(list::ListArgs),
    /// Show one command with all its API calls.
    Show(show::ShowArgs),
    /// Write the whole filtered audit trail to a file or standard output (CSV by default).
    Export(export::ExportArgs),
    /// Ship the local records the gateway has not acknowledged yet, now.
    Push(push::PushArgs),
    /// Show the local outbox: pending records, the oldest, the last success and the last error.
    Status(status::StatusArgs),
    /// Browse the audit trail interactively: a live, filterable, full-screen view.
    Tui(tui::TuiArgs),
    /// Follow new records as they are written, one line each (for log shippers).
    Tail(tail::TailArgs),
    /// Latency and activity: calls, errors and duration percentiles per cluster, user, verb,
    /// resource or namespace, optionally over time.
    Stats(stats::StatsArgs),
    /// Check that no record was changed, inserted or deleted outside ztk (exit code 1 if one was).
    Verify(verify::VerifyArgs),
    /// Fill the local store with N synthetic records (for benchmarks).
    #[command(hide = true)]
    Seed(seed::SeedArgs),
}

// The audit filters. Repeat one to match any of its values; different filters must all match.
// (Not a doc comment: clap would take it as the about of every subcommand that flattens it.)
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
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (key, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("min-duration", &self.min_duration),
        ] {
            if let Some(v) = value {
                pairs.push((key, v.as_str()));
            }
        }
        let lists: [(&str, &Vec<String>); 8] = [
            ("user", &self.user),
            ("cluster", &self.cluster),
            ("namespace", &self.namespace),
            ("resource", &self.resource),
            ("verb", &self.verb),
            ("status", &self.status),
            ("access-method", &self.access_method),
            ("command", &self.command),
        ];
        for (key, values) in lists {
            pairs.extend(values.iter().map(|v| (key, v.as_str())));
        }
        Filter::from_flags(pairs)
    }
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        AuditCommand::List(args) => list::run(args),
        AuditCommand::Show(args) => show::run(args),
        AuditCommand::Export(args) => export::run(args),
        AuditCommand::Push(args) => push::run(args),
        AuditCommand::Status(args) => status::run(args),
        AuditCommand::Tui(args) => tui::run(args),
        AuditCommand::Tail(args) => tail::run(args),
        AuditCommand::Stats(args) => stats::run(args),
        AuditCommand::Verify(args) => verify::run(args),
        AuditCommand::Seed(args) => seed::run(args),
    }
}

pub(crate) fn local_store() -> Result<AuditStore> {
    let paths = Paths::from_env()?;
    Ok(AuditStore::open(&paths.audit_db())?)
}

pub(crate) fn default_format(asked: Option<Format>) -> Format {
    asked.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Ndjson
    })
}

pub(crate) fn check_view(view: View, format: Format) -> Result<()> {
    if view == View::Commands && format == Format::K8sAudit {
        return Err(UsageError("k8s-audit describes API calls; add --view calls".into()).into());
    }
    Ok(())
}

pub(crate) fn emit<W: Write>(
    out: &mut Emitter<W>,
    f: impl FnOnce(&mut Emitter<W>) -> Result<(), crate::audit::format::FormatError>,
) -> Result<(), crate::audit::store::StoreError> {
    // A closed pipe (`| head`) ends the listing; the store error type carries it out.
    f(out).map_err(|e| crate::audit::store::StoreError::Output(e.to_string()))
}

/// Pages through the gateway's log, writing every row; `progress` hears the running count.
pub(crate) async fn remote_rows<W: Write>(
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
pub(crate) async fn remote_pages<T: serde::de::DeserializeOwned>(
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
