//! `ztk gateway`: run the gateway and manage its users and sessions.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::gateway::config::GatewayConfig;
use crate::gateway::users::UserStore;

/// Run the zero-trust gateway and manage its users and sessions.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: GatewayCommand,
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Serve the gateway: authenticate, authorize, relay and audit every Kubernetes request.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage the users who may log in.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage login sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Read the gateway's own audit log (run on the gateway host).
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        list: Box<super::audit::ListArgs>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The gateway's TOML config file.
    #[arg(long, short = 'c', env = "ZTK_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        /// The user name (lowercase letters, digits, '-', '.', '_').
        name: String,
        /// A group the user belongs to (repeatable).
        #[arg(long = "group", short = 'g', value_name = "GROUP")]
        groups: Vec<String>,
        /// Read the password from standard input (the first line). Required: passwords never go in argv.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the users.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a user and revoke their sessions.
    Remove {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Revoke every open session of a user; their next request is refused.
    Revoke {
        user: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn open_users(config: &ConfigArg) -> Result<UserStore> {
    let cfg = GatewayConfig::load(&config.config)?;
    Ok(UserStore::open(&cfg.db_path())?)
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        GatewayCommand::Serve { config } => {
            let cfg = GatewayConfig::load(&config.config)?;
            crate::cli::block_on(serve(cfg))
        }
        GatewayCommand::User(UserCommand::Add {
            name,
            groups,
            password_stdin: _,
            config,
        }) => {
            let store = open_users(&config)?;
            let password = read_password_stdin()?;
            store.add_user(&name, &groups, &password)?;
            println!("user {name} added");
            Ok(0)
        }
        GatewayCommand::User(UserCommand::List { config }) => {
            let store = open_users(&config)?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec!["NAME", "GROUPS", "CREATED"]);
            for user in store.list_users()? {
                let mut created = crate::audit::model::format_time_us(user.created_us);
                created.truncate(19);
                table.add_row(vec![
                    user.name,
                    user.groups.join(","),
                    created.replace('T', " "),
                ]);
            }
            println!("{table}");
            Ok(0)
        }
        GatewayCommand::User(UserCommand::Remove { name, config }) => {
            open_users(&config)?.remove_user(&name)?;
            println!("user {name} removed; their sessions are revoked");
            Ok(0)
        }
        GatewayCommand::Session(SessionCommand::Revoke { user, config }) => {
            let n = open_users(&config)?.revoke_user(&user)?;
            println!("revoked {n} session(s) of {user}");
            Ok(0)
        }
        GatewayCommand::Audit { config, list } => {
            if list.remote {
                return Err(crate::cli::UsageError(
                    "`ztk gateway audit` reads the gateway's own store; drop --remote".into(),
                )
                .into());
            }
            let cfg = GatewayConfig::load(&config.config)?;
            let store = crate::audit::AuditStore::open(&cfg.audit_path())?;
            super::audit::list(&store, &list)
        }
    }
}

/// Reads a password from the first line of standard input.
pub fn read_password_stdin() -> Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let password = input.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        anyhow::bail!("standard input held no password (give it on the first line)");
    }
    Ok(password)
}

async fn serve(cfg: GatewayConfig) -> Result<i32> {
    let running = crate::gateway::start(&cfg).await?;
    if let (Some(ca), Some(fp)) = (&running.ca_file, &running.ca_fingerprint) {
        println!(
            "ztk gateway: CA certificate {} (SHA-256 {fp})",
            ca.display()
        );
        println!("ztk gateway: clients log in with `ztk login --gateway https://{} --ca-file {} --user NAME`", running.addr, ca.display());
    }
    for cluster in running.gateway.clusters.values() {
        println!(
            "ztk gateway: cluster {} -> {}",
            cluster.name, cluster.description
        );
    }
    println!("ztk gateway: listening on https://{}", running.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = shutdown_signal() => {}
    }
    println!("ztk gateway: shutting down; flushing audit records");
    running.shutdown();
    Ok(0)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
