//! `ztk audit status`: the local outbox — what waits to be shipped, and how shipping went.

use anyhow::Result;

use super::local_store;
use crate::audit::model::format_time_us;
use crate::audit::outbox::OutboxStatus;
use crate::client::config::{ClientConfig, Paths};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON (one object per user) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let config = ClientConfig::load(&paths)?;
    let store = local_store()?;
    let login = config.as_ref().map(|c| c.user.as_str());
    let all = store.outbox_status(login)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    println!("Local audit store: {}", store.path().display());
    if let Some(config) = &config {
        println!(
            "Audit mode: {}",
            match config.audit.mode {
                crate::client::config::AuditMode::BestEffort => "best-effort",
                crate::client::config::AuditMode::FailClosed => "fail-closed",
            }
        );
        let retention = [
            config
                .audit
                .retention_max_age
                .as_deref()
                .map(|a| format!("older than {a}")),
            config
                .audit
                .retention_max_size
                .as_deref()
                .map(|s| format!("beyond {s}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        println!(
            "Retention: {}",
            if retention.is_empty() {
                "keep everything".to_string()
            } else {
                format!("drop shipped records {}", retention.join(", or "))
            }
        );
    }
    for s in &all {
        print_user(s, login);
    }
    Ok(0)
}

fn print_user(s: &OutboxStatus, login: Option<&str>) {
    let who = if s.user.is_empty() {
        "(no user)"
    } else {
        &s.user
    };
    let note = if Some(s.user.as_str()) == login {
        ""
    } else {
        " (not logged in: ships after `ztk login` as this user)"
    };
    println!("\n{}{note}", crate::audit::format::printable(who));
    println!(
        "  pending:        {} ({} calls, {} commands)",
        s.pending(),
        s.pending_calls,
        s.pending_commands
    );
    let time = |t: Option<i64>| t.map_or("never".to_string(), format_time_us);
    if s.pending() > 0 {
        println!("  oldest pending: {}", time(s.oldest_pending_us));
    }
    println!("  last success:   {}", time(s.last_success_us));
    match (&s.last_error, s.last_error_us) {
        (Some(err), Some(at)) => println!(
            "  last error:     {} at {}",
            crate::audit::format::printable(err),
            format_time_us(at)
        ),
        _ => println!("  last error:     none"),
    }
}
