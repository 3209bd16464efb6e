//! `ztk audit verify`: walk the audit chain of the local store (or, with `--remote`, have the
//! gateway walk its own) and report the first record changed, inserted or deleted outside ztk.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::local_store;
use crate::audit::chain::Report;
use crate::audit::format::printable;
use crate::audit::model::format_time_us;
use crate::audit::AuditStore;
use crate::cli::UsageError;
use crate::client::api::GatewayApi;
use crate::client::config::Paths;
use crate::client::token::require_session;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Have the gateway verify its authoritative store (administrators only).
    #[arg(long, conflicts_with_all = ["db", "public_key"])]
    pub remote: bool,
    /// Verify this store file instead of the local one (a copy of a gateway's audit.db, say).
    #[arg(long, value_name = "DB")]
    pub db: Option<PathBuf>,
    /// Accept only checkpoints signed by this Ed25519 public key (hex, as the gateway prints it).
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> Result<i32> {
    if args.remote {
        return crate::cli::block_on(remote(args.json));
    }
    let store = match &args.db {
        Some(path) => {
            if !path.is_file() {
                return Err(UsageError(format!("no audit store at {}", path.display())).into());
            }
            AuditStore::open(path)?
        }
        None => local_store()?,
    };
    let pinned = pinned_key(args.public_key.as_deref())?;
    let pinned: Vec<&[u8]> = pinned.as_deref().into_iter().collect();
    verify_store(&store, &pinned, args.json)
}

/// Parses `--public-key` (64 hex digits).
pub fn pinned_key(hex_key: Option<&str>) -> Result<Option<Vec<u8>>> {
    let Some(text) = hex_key else {
        return Ok(None);
    };
    match hex::decode(text.trim()) {
        Ok(bytes) if bytes.len() == 32 => Ok(Some(bytes)),
        _ => Err(UsageError(format!(
            "--public-key {text:?} is not an Ed25519 public key (64 hex digits, as the gateway prints it)"
        ))
        .into()),
    }
}

/// Verifies `store` and prints the report; 0 when intact, 1 when tampered.
pub fn verify_store(store: &AuditStore, pinned: &[&[u8]], json: bool) -> Result<i32> {
    let report = store
        .verify(pinned)
        .with_context(|| format!("could not verify {}", store.location()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&store.location(), &report);
    }
    Ok(if report.ok() { 0 } else { 1 })
}

fn print_report(what: &str, r: &Report) {
    let head = match (&r.head_seq, &r.head) {
        (Some(seq), Some(hash)) => format!("head seq {seq} sha256:{hash}"),
        _ => "empty chain".into(),
    };
    let pruned = r
        .pruned_before
        .map(|s| format!("; records before seq {s} pruned by retention"))
        .unwrap_or_default();
    if r.ok() {
        println!(
            "OK: {what}: {} records ({} calls, {} commands) match their chain of {} entries; {head}{pruned}",
            r.calls + r.commands,
            r.calls,
            r.commands,
            r.entries
        );
    } else {
        let first = &r.problems[0];
        // A problem names records of the store that failed: their ids may hold anything.
        println!("TAMPERED: {what}: {}", printable(&first.to_string()));
        println!(
            "{} problem(s) in {} records ({} calls, {} commands), {} chain entries; {head}{pruned}",
            r.problem_count,
            r.calls + r.commands,
            r.calls,
            r.commands,
            r.entries
        );
        for p in r.problems.iter().skip(1) {
            println!("  {}", printable(&p.to_string()));
        }
        if r.problem_count > r.problems.len() as u64 {
            println!(
                "  ... and {} more",
                r.problem_count - r.problems.len() as u64
            );
        }
    }
    if r.checkpoints > 0 {
        let last = match &r.last_valid_checkpoint {
            Some(cp) => format!(
                "; last valid: seq {} signed {} by key {}",
                cp.seq,
                format_time_us(cp.time_us),
                cp.public_key
            ),
            None => String::new(),
        };
        println!(
            "checkpoints: {} signed, {} valid{last}",
            r.checkpoints, r.valid_checkpoints
        );
    }
}

async fn remote(json: bool) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (config, token) = require_session(&paths)?;
    let api = GatewayApi::new(&config.gateway, &config.roots()?)?
        .with_timeout(std::time::Duration::from_secs(600));
    let answer = api
        .audit_verify(&token)
        .await
        .context("the gateway could not verify its audit store")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_report(&format!("gateway {}", config.gateway), &answer.report);
        println!(
            "gateway audit writer ({}): {}",
            answer.health.audit_mode, answer.health.writer
        );
        println!(
            "gateway checkpoint key: {} (pin it: --public-key)",
            answer.health.public_key
        );
    }
    Ok(if answer.report.ok() { 0 } else { 1 })
}
