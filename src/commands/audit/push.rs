//! `ztk audit push`: ship the local outbox to the gateway now.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, Result};

use super::local_store;
use crate::client::config::Paths;
use crate::client::shipper::Shipper;
use crate::client::token::require_session;

/// A backlog at least this large gets a progress bar (on a terminal).
const BAR_FROM: u64 = 5_000;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Send JSON batches instead of the compact encoding.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PushArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (config, token) = require_session(&paths)?;
    let store = local_store()?;
    let pending = store.pending_count(&config.user)?;
    if pending == 0 {
        println!(
            "Nothing to ship: every record of {} is at the gateway.",
            config.user
        );
        return Ok(0);
    }
    let bar = (pending >= BAR_FROM && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(pending);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut shipper = Shipper::new(store.clone(), &config, &token)?;
    shipper.json = args.json;
    let started = Instant::now();
    let result = crate::cli::block_on(async {
        shipper
            .ship_all(|done| {
                if let Some(bar) = &bar {
                    // More may arrive while shipping: the bar grows with it.
                    if done > bar.length().unwrap_or(0) {
                        bar.set_length(done);
                    }
                    bar.set_position(done);
                }
            })
            .await
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let shipped = result.with_context(|| {
        format!(
            "shipping to {} stopped; what was not acknowledged stays in the outbox (`ztk audit status`)",
            config.gateway
        )
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Shipped {} records in {} batches to {} in {:.2}s ({:.0} records/s); {} pending.",
        shipped.records,
        shipped.batches,
        config.gateway,
        secs,
        shipped.records as f64 / secs.max(1e-9),
        store.pending_count(&config.user)?
    );
    Ok(0)
}
