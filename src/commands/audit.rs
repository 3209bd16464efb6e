//! `ztk audit`: read the local audit log.

use std::io::Write;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

use crate::audit::filter::{self, Filter, StatusMatch};
use crate::audit::{render, AuditStore};
use crate::client::config::Paths;

/// Browse the audit trail: every API call with the command that caused it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List recorded API calls, newest first.
    List(ListArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
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
    /// Only this verb (get, list, watch, create, update, patch, delete, ...).
    #[arg(long, value_name = "VERB")]
    pub verb: Vec<String>,
    /// Only this HTTP status (404) or class (4xx).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Only this access method: cli, browser or api.
    #[arg(long, value_name = "METHOD")]
    pub access_method: Vec<String>,
    /// Only calls whose command line contains this text.
    #[arg(long, value_name = "TEXT")]
    pub command: Vec<String>,
    /// Only calls that took at least this long (250ms, 2s).
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
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
            limit: Some(self.limit),
        })
    }
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        AuditCommand::List(list_args) => {
            let paths = Paths::from_env()?;
            let store = AuditStore::open(&paths.audit_db())?;
            list(&store, &list_args)
        }
    }
}

/// Prints the calls of `store` that match the arguments.
pub fn list(store: &AuditStore, args: &ListArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let rows = store.list_calls(&filter)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.output {
        Output::Table => writeln!(out, "{}", render::calls_table(&rows))?,
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Output::Ndjson => {
            for row in &rows {
                serde_json::to_writer(&mut out, row)?;
                writeln!(out)?;
            }
        }
    }
    Ok(0)
}
