//! `ztk audit tail`: follow the audit trail as records are written, one line each, for
//! piping into a log shipper. Local store: polled by write sequence; `--remote`: the gateway's
//! tail endpoint (a long poll), with the query API's access rule.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};

use super::FilterArgs;
use crate::audit::format::k8s_event;
use crate::audit::model::format_time_us;
use crate::audit::{AuditStore, Filter, Record, SeqBatch, Sequenced};
use crate::client::api::GatewayApi;
use crate::client::config::Paths;
use crate::client::token::require_session;
use crate::protocol::{AuditTail, MAX_TAIL_WAIT_MS};
use crate::sinks::format::{is_open_stream, record_json, record_time_us, summary};

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format (default: table on a terminal, ndjson otherwise). `k8s-audit` writes one
    /// audit.k8s.io/v1 Event per line, as the Kubernetes log backend does (API calls only).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<TailFormat>,
    /// Follow the gateway's authoritative log instead of the local one.
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailFormat {
    /// One JSON object per record, with `kind` (call or command) and `seq`.
    Ndjson,
    /// One audit.k8s.io/v1 Event per line (API calls only).
    K8sAudit,
    /// One readable line per record.
    Table,
}

const POLL: Duration = Duration::from_millis(250);
const BATCH: usize = 1000;

pub fn run(args: TailArgs) -> Result<i32> {
    let filter = args.filter.to_filter()?;
    let format = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        TailFormat::Table
    } else {
        TailFormat::Ndjson
    });
    // With --since the tail starts with the past records that match; otherwise at the end.
    let from_start = filter.since_us.is_some();
    crate::cli::block_on(async move {
        let follow = async {
            if args.remote {
                follow_remote(filter, format, from_start).await
            } else {
                follow_local(filter, format, from_start).await
            }
        };
        tokio::select! {
            result = follow => result,
            _ = tokio::signal::ctrl_c() => Ok(0),
        }
    })
}

/// Writes one batch; false when the reader has gone (`| head`): the tail ends quietly.
fn write_batch(batch: &SeqBatch, format: TailFormat) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    for record in &batch.records {
        if is_open_stream(record) {
            continue;
        }
        let written = write_record(&mut out, record, format).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("could not write the output"),
        }
    }
    Ok(true)
}

fn write_record(
    out: &mut impl Write,
    record: &Sequenced,
    format: TailFormat,
) -> std::io::Result<()> {
    match format {
        TailFormat::Ndjson => {
            serde_json::to_writer(&mut *out, &record_json(record))?;
            out.write_all(b"\n")
        }
        TailFormat::K8sAudit => match &record.record {
            Record::Call(row) => {
                serde_json::to_writer(&mut *out, &k8s_event(row))?;
                out.write_all(b"\n")
            }
            Record::Command(_) => Ok(()),
        },
        TailFormat::Table => {
            let mut time = format_time_us(record_time_us(record));
            time.truncate(19);
            writeln!(
                out,
                "{} {:>8} {}",
                time.replace('T', " "),
                record.seq,
                summary(record)
            )
        }
    }
}

async fn follow_local(filter: Filter, format: TailFormat, from_start: bool) -> Result<i32> {
    let paths = Paths::from_env()?;
    let store = AuditStore::open(&paths.audit_db())?;
    let mut after = if from_start { 0 } else { store.last_seq()? };
    loop {
        let (s, f) = (store.clone(), filter.clone());
        let batch =
            tokio::task::spawn_blocking(move || s.records_after(after, &f, BATCH)).await??;
        if !write_batch(&batch, format)? {
            return Ok(0);
        }
        let caught_up = batch.records.len() < BATCH;
        after = batch.through;
        if caught_up {
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn follow_remote(filter: Filter, format: TailFormat, from_start: bool) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (config, token) = require_session(&paths)?;
    let api = GatewayApi::new(&config.gateway, &config.roots()?)?
        .with_timeout(Duration::from_millis(MAX_TAIL_WAIT_MS) + Duration::from_secs(15));
    let mut after: Option<i64> = from_start.then_some(0);
    loop {
        let query = AuditTail {
            filter: filter.clone(),
            after_seq: after,
            wait_ms: MAX_TAIL_WAIT_MS,
            limit: BATCH,
        };
        let batch = api
            .tail(&token, &query)
            .await
            .context("the gateway's audit tail failed")?;
        if !write_batch(&batch, format)? {
            return Ok(0);
        }
        after = Some(batch.through);
    }
}
