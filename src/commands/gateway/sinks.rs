//! `ztk gateway sinks status`: how far each SIEM sink has delivered, read from the gateway's
//! audit store on the gateway host (the gateway need not run).

use anyhow::Result;
use clap::Subcommand;

use super::ConfigArg;
use crate::audit::model::{format_time_us, now_us};
use crate::gateway::config::GatewayConfig;
use crate::sinks::cursor::{CursorRow, Cursors};
use crate::sinks::format::{is_open_stream, record_time_us};

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SinksCommand {
    /// Show each sink's lag (records and age), last success and last error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: StatusFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Lag is counted up to this many records ("10000+" beyond).
const LAG_COUNT_MAX: usize = 10_000;

#[derive(Debug, serde::Serialize)]
struct SinkStatus {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    target: String,
    filter: String,
    /// The last write sequence number the receiver acknowledged.
    cursor: i64,
    /// Records waiting (at most LAG_COUNT_MAX are counted).
    lag_records: usize,
    lag_capped: bool,
    /// Age of the oldest waiting record, in seconds.
    lag_age_s: Option<f64>,
    delivered: i64,
    last_success: Option<String>,
    /// The last error, even if a success followed (`failing` says whether it still applies).
    last_error: Option<String>,
    last_error_at: Option<String>,
    /// The last attempt failed: no success since the last error.
    failing: bool,
    /// The gateway delivering it now (its lease is current), when one is.
    delivered_by: Option<String>,
}

pub fn run(command: SinksCommand) -> Result<i32> {
    let SinksCommand::Status { config, output } = command;
    let cfg = GatewayConfig::load(&config.config)?;
    let store = cfg.open_audit_store()?;
    let rows = Cursors::new(&store).all()?;
    let mut statuses = Vec::new();
    for sink in &cfg.sinks {
        let row = rows
            .iter()
            .find(|r| r.name == sink.name)
            .cloned()
            .unwrap_or(CursorRow {
                name: sink.name.clone(),
                seq: 0,
                delivered: 0,
                last_success_us: None,
                last_error: None,
                last_error_us: None,
                lease_owner: None,
                lease_until_us: None,
            });
        let pending = store.records_after(row.seq, &sink.filter, LAG_COUNT_MAX + 1)?;
        let waiting: Vec<_> = pending
            .records
            .iter()
            .filter(|r| !is_open_stream(r))
            .collect();
        let lag_age_s = waiting
            .iter()
            .map(|r| record_time_us(r))
            .min()
            .map(|t| ((now_us() - t).max(0) as f64) / 1e6);
        // An error older than the last success has been overcome.
        let failing = match (row.last_error_us, row.last_success_us) {
            (Some(e), Some(s)) => e >= s,
            (Some(_), None) => true,
            _ => false,
        };
        statuses.push(SinkStatus {
            name: sink.name.clone(),
            kind: sink.kind.type_name().into(),
            target: sink.kind.target(),
            filter: sink.filter_text.clone(),
            cursor: row.seq,
            lag_records: waiting.len().min(LAG_COUNT_MAX),
            lag_capped: waiting.len() > LAG_COUNT_MAX,
            lag_age_s,
            delivered: row.delivered,
            last_success: row.last_success_us.map(format_time_us),
            last_error: row.last_error.clone(),
            last_error_at: row.last_error_us.map(format_time_us),
            failing,
            delivered_by: row
                .lease_owner
                .clone()
                .filter(|_| row.lease_until_us.is_some_and(|u| u > now_us())),
        });
    }
    match output {
        StatusFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&statuses)?);
        }
        StatusFormat::Table => {
            if statuses.is_empty() {
                println!(
                    "no sinks: add [[sinks]] tables to {} (see the README)",
                    cfg.path.display()
                );
                return Ok(0);
            }
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec![
                "NAME",
                "TYPE",
                "TARGET",
                "LAG",
                "OLDEST WAITING",
                "DELIVERED",
                "LAST SUCCESS",
                "LAST ERROR",
                "DELIVERED BY",
            ]);
            for s in &statuses {
                table.add_row(vec![
                    s.name.clone(),
                    s.kind.clone(),
                    s.target.clone(),
                    format!("{}{}", s.lag_records, if s.lag_capped { "+" } else { "" }),
                    s.lag_age_s
                        .map(|a| crate::audit::format::format_duration_us((a * 1e6) as i64))
                        .unwrap_or_else(|| "-".into()),
                    s.delivered.to_string(),
                    s.last_success.clone().unwrap_or_else(|| "never".into()),
                    match (&s.last_error, &s.last_error_at) {
                        // A receiver's answer may be quoted in the error: shown escaped.
                        (Some(e), Some(at)) if s.failing => {
                            format!("{at} {}", crate::audit::format::printable(e))
                        }
                        (Some(_), Some(at)) => format!("{at} (recovered)"),
                        _ => "-".into(),
                    },
                    s.delivered_by.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(0)
}
