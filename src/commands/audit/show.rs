//! `ztk audit show ID`: one command with all its API calls.

use std::io::Write;

use anyhow::{Context, Result};
use uuid::Uuid;

use super::{default_format, local_store, remote_pages};
use crate::audit::filter::Filter;
use crate::audit::format::{printable, Emitter, Format};
use crate::audit::{CallRow, CommandRow};
use crate::cli::UsageError;
use crate::protocol::View;
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The command's ID, or any unique part of it (`ztk audit list` shows the last 8 characters).
    id: String,
    /// Output format for the calls (default: table on a terminal, ndjson otherwise).
    #[arg(long, short = 'o', value_enum)]
    output: Option<Format>,
    /// Read the gateway's log (needs the full ID).
    #[arg(long)]
    remote: bool,
}

pub fn run(args: ShowArgs) -> Result<i32> {
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
            writeln!(lock, "Command:   {}", printable(&c.command_line))?;
            writeln!(lock, "ID:        {}", c.id)?;
            writeln!(lock, "User:      {}", printable(&c.user))?;
            writeln!(lock, "Cluster:   {}", printable(&c.cluster))?;
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
            if !c.reason.is_empty() {
                writeln!(lock, "Reason:    {}", printable(&c.reason))?;
            }
            writeln!(
                lock,
                "Calls:     {} ({})",
                command.calls,
                command.status_summary()
            )?;
            writeln!(
                lock,
                "Host:      {}  Directory: {}",
                printable(&c.host),
                printable(&c.cwd)
            )?;
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
