//! `ztk gateway migrate --to postgresql://...`: copies a gateway's SQLite data into PostgreSQL
//! (`gateway::migrate`), then verifies the copied audit trail.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::ConfigArg;
use crate::db::PgUrl;
use crate::gateway::config::GatewayConfig;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The PostgreSQL database to copy into: postgresql://USER@HOST:5432/DB?sslmode=verify-full
    /// (its password from --password-file, PGPASSFILE or ZTK_DATABASE_URL, never the command
    /// line, which every user of the host can read).
    #[arg(
        long,
        env = "ZTK_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    to: String,
    /// A file holding the database password (its first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Print what was copied and the verification as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: MigrateArgs) -> Result<i32> {
    let cfg = GatewayConfig::load(&args.config.config)?;
    let from_env = std::env::var("ZTK_DATABASE_URL").is_ok_and(|v| v == args.to);
    let url = PgUrl::parse(&args.to, args.password_file.as_deref())
        .context("invalid --to (or ZTK_DATABASE_URL)")?;
    if !from_env && url.has_own_password() {
        return Err(crate::cli::UsageError(
            "--to holds a password, which the process list shows to every user of this host: \
             give it with --password-file FILE, PGPASSFILE, or the whole URL in ZTK_DATABASE_URL"
                .into(),
        )
        .into());
    }
    let (copied, store) = crate::gateway::migrate::to_postgres(&cfg, url.clone(), &mut |c| {
        if !args.json {
            println!("{:<18} {:>10} rows copied", c.table, c.rows);
        }
    })
    .with_context(|| format!("could not copy {} into {url}", cfg.data_dir.display()))?;
    // The copy is checked as the gateways will check it: the chain and this gateway's key.
    let key_path = cfg.audit_key_path();
    let key = if key_path.exists() {
        Some(crate::audit::chain::SigningKey::load_or_create(&key_path)?)
    } else {
        None
    };
    let pinned: Vec<&[u8]> = key.as_ref().map(|k| k.public_key()).into_iter().collect();
    let report = store
        .verify(&pinned)
        .with_context(|| format!("could not verify the copy in {url}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "to": url.to_string(),
                "copied": copied,
                "verify": report,
            }))?
        );
    } else if report.ok() {
        println!(
            "OK: {url} holds {} audit records whose chain of {} entries verifies; \
             set `database = \"{url}\"` in {} (and on every gateway sharing it)",
            report.calls + report.commands,
            report.entries,
            cfg.path.display()
        );
    } else {
        println!(
            "FAILED: the copy in {url} does not verify ({} problems); `ztk gateway audit verify` on the source shows whether it did before",
            report.problem_count
        );
    }
    Ok(if report.ok() { 0 } else { 1 })
}
