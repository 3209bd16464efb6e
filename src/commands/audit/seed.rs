//! `ztk audit seed` (hidden): synthetic records for benchmarks.

use std::path::PathBuf;

use anyhow::Result;

use super::local_store;
use crate::audit::AuditStore;
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// How many API-call records to add (plus one command per ten calls).
    #[arg(long)]
    count: u64,
    /// The store to fill (default: the local store).
    #[arg(long, value_name = "DB")]
    db: Option<PathBuf>,
    /// Make every record this user's (default: a mix of eight users).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
}

pub fn run(seed: SeedArgs) -> Result<i32> {
    let store = match seed.db {
        Some(path) => AuditStore::open(&path)?,
        None => local_store()?,
    };
    let started = std::time::Instant::now();
    let n = crate::audit::seed::seed_for(&store, seed.count, seed.user.as_deref())?;
    eprintln!(
        "seeded {n} calls in {:.2?} into {}",
        started.elapsed(),
        store.path().display()
    );
    Ok(0)
}
