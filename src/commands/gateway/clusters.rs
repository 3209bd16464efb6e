//! `ztk gateway clusters status`: how the gateway reaches each cluster and how that went lately,
//! from the status the running gateway writes to its data dir (run on the gateway host).

use anyhow::Result;
use clap::Subcommand;

use super::sinks::StatusFormat;
use super::ConfigArg;
use crate::gateway::clusters::{ClusterStatus, ReachInfo, StatusFile};
use crate::gateway::config::GatewayConfig;

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ClustersCommand {
    /// Show each cluster: how it is reached, its credential's kind and expiry (never its value),
    /// the last call it answered and the last error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: StatusFormat,
    },
}

#[derive(Debug, serde::Serialize)]
struct Report {
    /// Whether a gateway with this data dir is running (its status file is current).
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// When the running gateway last wrote the status.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    clusters: Vec<ClusterStatus>,
}

pub fn run(command: ClustersCommand) -> Result<i32> {
    let ClustersCommand::Status { config, output } = command;
    let cfg = GatewayConfig::load(&config.config)?;
    let path = StatusFile::path(&cfg.data_dir);
    let file: Option<StatusFile> = match std::fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw).ok(),
        Err(_) => None,
    };
    let running = file.as_ref().is_some_and(|f| process_alive(f.pid));
    // The config's clusters, in its order; what the gateway wrote where it knows them.
    let clusters: Vec<ClusterStatus> = cfg
        .clusters
        .iter()
        .map(|c| {
            file.as_ref()
                .filter(|_| running)
                .and_then(|f| f.clusters.iter().find(|s| s.name == c.name).cloned())
                .unwrap_or_else(|| ClusterStatus {
                    name: c.name.clone(),
                    reach: ReachInfo {
                        source: c.source(),
                        impersonate: c.impersonate,
                        ..Default::default()
                    },
                    ..Default::default()
                })
        })
        .collect();
    let report = Report {
        running,
        pid: file.as_ref().filter(|_| running).map(|f| f.pid),
        updated: file.as_ref().map(|f| f.updated.clone()),
        clusters,
    };
    match output {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        StatusFormat::Table => print_table(&report, &cfg),
    }
    Ok(0)
}

fn print_table(report: &Report, cfg: &GatewayConfig) {
    let shown = |s: &str| crate::audit::format::printable(s).into_owned();
    match (report.running, &report.updated) {
        (true, Some(at)) => println!(
            "gateway {} running (pid {}), status as of {at}",
            cfg.path.display(),
            report.pid.unwrap_or_default()
        ),
        (false, Some(at)) => println!(
            "gateway {} is not running (last status {at}); showing its config",
            cfg.path.display()
        ),
        (false, None) | (true, None) => println!(
            "gateway {} has not run yet; showing its config",
            cfg.path.display()
        ),
    }
    if report.clusters.is_empty() {
        println!("no clusters: add [[clusters]] to {}", cfg.path.display());
        return;
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(vec![
        "NAME",
        "STATE",
        "REACHED",
        "CREDENTIAL",
        "EXPIRES",
        "IN FLIGHT",
        "LAST SUCCESS",
        "LAST ERROR",
    ]);
    for c in &report.clusters {
        let failing = match (&c.last_error_time, &c.last_success) {
            (Some(err), Some(ok)) => err >= ok,
            (Some(_), None) => true,
            _ => false,
        };
        let state = if !report.running {
            "-"
        } else if c.agent.as_ref().is_some_and(|a| !a.connected) {
            "agent not connected"
        } else if failing {
            "failing"
        } else if c.last_success.is_some() {
            "ok"
        } else {
            "no calls yet"
        };
        let mut reached = vec![if c.reach.server.is_empty() {
            c.reach.source.clone()
        } else {
            format!("{} ({})", c.reach.server, c.reach.source)
        }];
        if let Some(proxy) = &c.reach.proxy {
            reached.push(format!("via proxy {proxy}"));
        }
        if let Some(name) = &c.reach.tls_server_name {
            reached.push(format!("tls-server-name {name}"));
        }
        if c.reach.insecure {
            reached.push("TLS NOT VERIFIED (allow_insecure)".into());
        }
        if c.reach.impersonate {
            reached.push("impersonates users".into());
        }
        if let Some(agent) = c.agent.as_ref().filter(|_| report.running) {
            if agent.connected {
                let mut line = format!(
                    "agent {} at {} connected since {}",
                    agent.version.as_deref().unwrap_or("?"),
                    agent.address.as_deref().unwrap_or("?"),
                    agent.since.as_deref().unwrap_or("?")
                );
                if let Some(host) = &agent.host {
                    line.push_str(&format!(" (host {host})"));
                }
                if let Some(rtt) = agent.rtt_ms {
                    line.push_str(&format!(", ping {rtt} ms"));
                }
                if agent.tunnels > 1 {
                    line.push_str(&format!(", {} tunnels", agent.tunnels));
                }
                reached.push(line);
            } else {
                reached.push(match &agent.since {
                    Some(at) => format!("agent disconnected since {at}"),
                    None => "agent never connected".into(),
                });
            }
        }
        let mut credential = if c.credential.kind.is_empty() {
            "-".to_string()
        } else {
            c.credential.kind.clone()
        };
        if let Some(err) = &c.credential.last_error {
            credential.push_str(&format!("; last refresh failed: {err}"));
        }
        table.add_row(vec![
            c.name.clone(),
            state.to_string(),
            shown(&reached.join(", ")),
            shown(&credential),
            c.credential.expires.clone().unwrap_or_else(|| "-".into()),
            if report.running {
                c.in_flight.to_string()
            } else {
                "-".into()
            },
            c.last_success.clone().unwrap_or_else(|| "never".into()),
            match (&c.last_error, &c.last_error_time) {
                (Some(e), Some(at)) if failing => format!("{at} {}", shown(e)),
                (Some(_), Some(at)) => format!("{at} (recovered)"),
                _ => "-".into(),
            },
        ]);
    }
    println!("{table}");
}

/// Whether `pid` is a live process (signal 0 checks without sending anything).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
