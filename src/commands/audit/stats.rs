//! `ztk audit stats`: latency and activity per cluster, user, verb, resource or namespace —
//! calls, calls per minute, errors by status class, duration percentiles at the gateway and
//! as the clients measured them — optionally as a series over time. The same numbers as the
//! console's insights page (`audit::stats`).

use std::io::Write;

use anyhow::{Context, Result};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use super::{local_store, FilterArgs};
use crate::audit::format::{format_duration_us, neutralize};
use crate::audit::model::{format_time_us, now_us};
use crate::audit::stats::{By, GroupStats, Stats, StatsQuery};
use crate::cli::UsageError;
use crate::client::api::GatewayApi;
use crate::client::config::Paths;
use crate::client::token::require_session;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Group by this field.
    #[arg(long, value_enum, default_value = "cluster")]
    by: By,
    /// Also show a series: one point per interval and group (1m, 15m, 1h, 1d; needs --since).
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// List this many of the slowest calls.
    #[arg(long, default_value_t = 0, value_name = "N")]
    slowest: usize,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: StatsFormat,
    /// The gateway's authoritative log instead of the local one.
    #[arg(long)]
    remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatsFormat {
    /// Tables for people.
    Table,
    /// The whole answer as one JSON object.
    Json,
    /// CSV: the series with --interval, the groups otherwise.
    Csv,
}

pub fn run(args: StatsArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let interval_us = match &args.interval {
        Some(i) => crate::audit::filter::parse_duration_us(i)?,
        None => 0,
    };
    let query = StatsQuery {
        filter,
        by: args.by,
        interval_us,
        slowest: args.slowest,
    };
    query
        .check(now_us())
        .map_err(|message| UsageError(message.replace("add since", "add --since")))?;
    let stats = if args.remote {
        crate::cli::block_on(async {
            let paths = Paths::from_env()?;
            let (config, token) = require_session(&paths)?;
            let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
            api.stats(&token, &query)
                .await
                .context("the gateway's audit statistics failed")
        })?
    } else {
        local_store()?.stats(&query)?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.output {
        StatsFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &stats)?;
            writeln!(out)?;
        }
        StatsFormat::Csv => write_csv(&mut out, &stats)?,
        StatsFormat::Table => write_tables(&mut out, &stats)?,
    }
    Ok(0)
}

fn dur(us: Option<i64>) -> String {
    us.map_or("–".into(), format_duration_us)
}

fn statuses(g: &GroupStats) -> String {
    g.statuses
        .iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn table(header: Vec<&str>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

fn write_tables(out: &mut impl Write, stats: &Stats) -> Result<()> {
    let range = format!(
        "{} to {}",
        stats
            .since_us
            .map_or("the first record".into(), format_time_us),
        format_time_us(stats.until_us)
    );
    writeln!(out, "Calls from {range}, by {}:", stats.by.as_str())?;
    let mut t = table(vec![
        stats.by.as_str(),
        "Calls",
        "/min",
        "Statuses",
        "p50",
        "p95",
        "p99",
        "Max",
        "Client p50",
        "Client p99",
        "Client calls",
    ]);
    for g in stats.groups.iter().chain(std::iter::once(&stats.total)) {
        t.add_row(vec![
            crate::audit::format::printable(&g.key).into_owned(),
            g.calls.to_string(),
            format!("{:.1}", g.per_minute),
            statuses(g),
            dur(g.p50_us),
            dur(g.p95_us),
            dur(g.p99_us),
            dur(g.max_us),
            dur(g.client_p50_us),
            dur(g.client_p99_us),
            g.client_calls.to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    if !stats.series.is_empty() {
        writeln!(out, "\nEvery {}:", format_duration_us(stats.interval_us))?;
        let mut t = table(vec![
            "From",
            stats.by.as_str(),
            "Calls",
            "Errors",
            "p50",
            "p95",
            "p99",
        ]);
        for p in &stats.series {
            t.add_row(vec![
                format_time_us(p.start_us),
                crate::audit::format::printable(&p.key).into_owned(),
                p.calls.to_string(),
                p.errors.to_string(),
                dur(p.p50_us),
                dur(p.p95_us),
                dur(p.p99_us),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    if !stats.slowest.is_empty() {
        writeln!(out, "\nSlowest calls:")?;
        let mut t = table(vec![
            "Date", "User", "Cluster", "Verb", "Resource", "Status", "Duration", "Id",
        ]);
        for r in &stats.slowest {
            let c = &r.call;
            t.add_row(vec![
                format_time_us(c.time_us),
                crate::audit::format::printable(&c.user).into_owned(),
                crate::audit::format::printable(&c.cluster).into_owned(),
                c.verb.clone(),
                crate::audit::format::printable(&c.resource_label()).into_owned(),
                c.status.to_string(),
                format_duration_us(c.duration_us),
                c.id.to_string(),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, stats: &Stats) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let us = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    if stats.interval_us > 0 {
        w.write_record([
            "start",
            stats.by.as_str(),
            "calls",
            "errors",
            "p50_us",
            "p95_us",
            "p99_us",
        ])?;
        for p in &stats.series {
            w.write_record([
                format_time_us(p.start_us),
                neutralize(&p.key).into_owned(),
                p.calls.to_string(),
                p.errors.to_string(),
                us(p.p50_us),
                us(p.p95_us),
                us(p.p99_us),
            ])?;
        }
    } else {
        w.write_record([
            stats.by.as_str(),
            "calls",
            "per_minute",
            "2xx",
            "3xx",
            "4xx",
            "5xx",
            "err",
            "p50_us",
            "p95_us",
            "p99_us",
            "max_us",
            "client_calls",
            "client_p50_us",
            "client_p95_us",
            "client_p99_us",
        ])?;
        for g in &stats.groups {
            let n = |c: &str| g.statuses.get(c).copied().unwrap_or(0).to_string();
            w.write_record([
                neutralize(&g.key).into_owned(),
                g.calls.to_string(),
                format!("{:.3}", g.per_minute),
                n("2xx"),
                n("3xx"),
                n("4xx"),
                n("5xx"),
                n("err"),
                us(g.p50_us),
                us(g.p95_us),
                us(g.p99_us),
                us(g.max_us),
                g.client_calls.to_string(),
                us(g.client_p50_us),
                us(g.client_p95_us),
                us(g.client_p99_us),
            ])?;
        }
    }
    w.flush()?;
    Ok(())
}
