//! `ztk gateway agent`: enrollment tokens for `ztk agent`, the agents' certificates, and their
//! revocation (run on the gateway host; with PostgreSQL, on any gateway of the database).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::ConfigArg;
use crate::cli::UsageError;
use crate::gateway::config::{ClusterKind, GatewayConfig};

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AgentCommand {
    /// Print a one-time enrollment token for CLUSTER's agent (`ztk agent --token-file`).
    Token {
        /// The cluster (`agent = true` in the config).
        cluster: String,
        /// How long the token may be used.
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        ttl: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke every certificate of CLUSTER's agents (and its unused tokens): their tunnels
    /// close within a second and are refused from then on. Enroll again with a new token.
    Revoke {
        cluster: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the certificates issued to agents and the tokens not used yet.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn agent_cluster(cfg: &GatewayConfig, cluster: &str) -> Result<()> {
    match cfg.clusters.iter().find(|c| c.name == cluster) {
        Some(c) if matches!(c.kind, ClusterKind::Agent) => Ok(()),
        Some(_) => Err(UsageError(format!(
            "cluster {cluster:?} is not reached through an agent: set `agent = true` on it in {}",
            cfg.path.display()
        ))
        .into()),
        None => {
            Err(UsageError(format!("{} has no cluster {cluster:?}", cfg.path.display())).into())
        }
    }
}

fn time(us: i64) -> String {
    crate::gateway::clusters::rfc3339_us(us)
}

pub fn run(command: AgentCommand) -> Result<i32> {
    match command {
        AgentCommand::Token {
            cluster,
            ttl,
            config,
        } => {
            let cfg = GatewayConfig::load(&config.config)?;
            agent_cluster(&cfg, &cluster)?;
            let ttl = crate::audit::filter::parse_duration_us(&ttl)
                .ok()
                .filter(|us| *us >= 1_000_000)
                .map(|us| Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    UsageError(format!("--ttl {ttl:?} is not a duration like 1h or 30m"))
                })?;
            let store = cfg.open_user_store()?;
            // Made now if missing, so that the first gateway to start trusts it.
            store.agent_ca().context("cannot prepare the agent CA")?;
            let token = store.create_agent_token(&cluster, ttl)?;
            eprintln!(
                "ztk: one-time enrollment token for cluster {cluster}, valid for {}s; give it to `ztk agent --cluster {cluster} --token-file FILE`:",
                ttl.as_secs()
            );
            println!("{token}");
            Ok(0)
        }
        AgentCommand::Revoke { cluster, config } => {
            let cfg = GatewayConfig::load(&config.config)?;
            agent_cluster(&cfg, &cluster)?;
            let store = cfg.open_user_store()?;
            let n = store.revoke_agents(&cluster)?;
            println!("revoked {n} certificate(s) of cluster {cluster}'s agents; their tunnels close within a second");
            Ok(0)
        }
        AgentCommand::List { json, config } => {
            let cfg = GatewayConfig::load(&config.config)?;
            let store = cfg.open_user_store()?;
            let (certs, tokens) = store.list_agents()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "certificates": certs,
                        "tokens": tokens,
                    }))?
                );
                return Ok(0);
            }
            let now = crate::audit::model::now_us();
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec![
                "CLUSTER",
                "CERTIFICATE",
                "ISSUED",
                "TO",
                "EXPIRES",
                "STATE",
            ]);
            for c in &certs {
                let state = match c.revoked_us {
                    Some(at) => format!("revoked {}", time(at)),
                    None if c.expires_us <= now => "expired".into(),
                    None => "valid".into(),
                };
                table.add_row(vec![
                    c.cluster.clone(),
                    c.fingerprint[..16].to_string(),
                    time(c.issued_us),
                    crate::audit::format::printable(&c.origin).into_owned(),
                    time(c.expires_us),
                    state,
                ]);
            }
            for t in &tokens {
                table.add_row(vec![
                    t.cluster.clone(),
                    "(token not used yet)".into(),
                    time(t.created_us),
                    "-".into(),
                    time(t.expires_us),
                    "pending".into(),
                ]);
            }
            println!("{table}");
            Ok(0)
        }
    }
}
