//! `ztk gateway`: run the gateway and manage its users, sessions, roles and bindings.

mod agent;
mod clusters;
mod migrate;
mod sinks;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::cli::UsageError;
use crate::gateway::config::{valid_name, GatewayConfig};
use crate::gateway::rbac::{Binding, Policy, Subject};
use crate::gateway::users::UserStore;

/// Run the zero-trust gateway and manage its users, sessions, roles and bindings.
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
    /// Manage roles and role bindings; changes take effect in a running gateway within a second.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Inspect how the gateway reaches its clusters (run on the gateway host).
    #[command(subcommand)]
    Clusters(clusters::ClustersCommand),
    /// Enroll and revoke the agents of clusters reached through `ztk agent`.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Inspect the SIEM sinks that stream the audit trail (run on the gateway host).
    #[command(subcommand)]
    Sinks(sinks::SinksCommand),
    /// Read the gateway's own audit log (run on the gateway host); `verify` checks its chain.
    Audit(AuditArgs),
    /// Copy this gateway's SQLite data (users, sessions, bindings, the audit trail with its
    /// chain) into PostgreSQL, for several gateways to share; safe to run again.
    Migrate(migrate::MigrateArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// The gateway's TOML config file.
    #[arg(
        long,
        short = 'c',
        env = "ZTK_GATEWAY_CONFIG",
        value_name = "FILE",
        required = true
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    list: Box<super::audit::ListArgs>,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum AuditCommand {
    /// Check the gateway's audit chain and signed checkpoints (exit code 1 if a record was
    /// changed, inserted or deleted outside ztk); prints the checkpoint public key to pin.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The gateway's TOML config file.
    #[arg(long, short = 'c', env = "ZTK_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
#[command(defer = true)]
enum SessionCommand {
    /// Revoke every open session of a user; their next request is refused.
    Revoke {
        user: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, clap::Args)]
struct BindingArgs {
    /// The role: view, edit, admin, cluster-admin, or a custom role from the config.
    role: String,
    /// The user to bind.
    #[arg(
        long,
        value_name = "USER",
        required_unless_present = "group",
        conflicts_with = "group"
    )]
    user: Option<String>,
    /// The group to bind (every user in it).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Only on this cluster (default: every cluster).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Only in this namespace (default: every namespace and cluster-scoped resources).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum RoleCommand {
    /// Give a role to a user or a group, on one cluster or all, in one namespace or all.
    Bind(BindingArgs),
    /// Remove a binding (the same arguments as it was bound with).
    Unbind(BindingArgs),
    /// Store the custom roles of a file (`[[roles]]` tables as in gateway.toml), replacing
    /// stored roles of the same names; running gateways use them within a second.
    Apply {
        /// The TOML file with the `[[roles]]`.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a stored custom role (its bindings stay, and grant nothing until it is back).
    Delete {
        /// The role's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the roles (built-in, from the config, stored) and the bindings.
    List {
        /// Also print every rule of every role.
        #[arg(long)]
        rules: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The custom roles: the config's and the stored ones.
fn all_roles(cfg: &GatewayConfig, store: &UserStore) -> Result<Vec<crate::gateway::rbac::Role>> {
    Ok([cfg.roles.clone(), store.list_roles()?].concat())
}

/// Checks a binding against the config: the role, the cluster and the names must exist or be
/// well-formed, so a typo never lands in the store.
fn binding_of(args: &BindingArgs, cfg: &GatewayConfig, store: &UserStore) -> Result<Binding> {
    let policy = Policy::new(&all_roles(cfg, store)?, Vec::new());
    if policy.role(&args.role).is_none() {
        let names: Vec<&str> = policy.roles().map(|r| r.name.as_str()).collect();
        return Err(UsageError(format!(
            "no role {:?}; the roles are: {}",
            args.role,
            names.join(", ")
        ))
        .into());
    }
    let subject = match (&args.user, &args.group) {
        (Some(user), None) => {
            if !valid_name(user) {
                return Err(UsageError(format!("invalid user name {user:?}")).into());
            }
            Subject::User(user.clone())
        }
        (None, Some(group)) => {
            if group.trim().is_empty() || group.chars().any(|c| c.is_control()) {
                return Err(UsageError(format!("invalid group name {group:?}")).into());
            }
            Subject::Group(group.clone())
        }
        _ => return Err(UsageError("give exactly one of --user or --group".into()).into()),
    };
    if let Some(cluster) = &args.cluster {
        if !cfg.clusters.iter().any(|c| &c.name == cluster) {
            let names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
            return Err(UsageError(format!(
                "no cluster {cluster:?} in {}; the clusters are: {}",
                cfg.path.display(),
                names.join(", ")
            ))
            .into());
        }
    }
    if let Some(ns) = &args.namespace {
        let ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !ok {
            return Err(UsageError(format!(
                "invalid namespace {ns:?}: lowercase letters, digits and '-'"
            ))
            .into());
        }
    }
    Ok(Binding {
        role: args.role.clone(),
        subject,
        cluster: args.cluster.clone(),
        namespace: args.namespace.clone(),
    })
}

fn describe_binding(b: &Binding) -> String {
    format!("role {} for {} ({})", b.role, b.subject, b.scope())
}

fn open_users(config: &ConfigArg) -> Result<UserStore> {
    let cfg = GatewayConfig::load(&config.config)?;
    Ok(cfg.open_user_store()?)
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        GatewayCommand::Agent(command) => agent::run(command),
        GatewayCommand::Serve { config } => {
            let cfg = GatewayConfig::load(&config.config)?;
            crate::cli::block_on_workers(cfg.worker_threads, serve(cfg))
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
        GatewayCommand::Role(RoleCommand::Bind(args)) => {
            let cfg = GatewayConfig::load(&args.config.config)?;
            let store = cfg.open_user_store()?;
            let binding = binding_of(&args, &cfg, &store)?;
            if store.add_binding(&binding)? {
                println!("bound {}", describe_binding(&binding));
            } else {
                println!("already bound: {}", describe_binding(&binding));
            }
            Ok(0)
        }
        GatewayCommand::Role(RoleCommand::Unbind(args)) => {
            let cfg = GatewayConfig::load(&args.config.config)?;
            let store = cfg.open_user_store()?;
            let binding = binding_of(&args, &cfg, &store)?;
            if store.remove_binding(&binding)? {
                println!("unbound {}", describe_binding(&binding));
                Ok(0)
            } else {
                anyhow::bail!(
                    "no such binding: {}; `ztk gateway role list` shows the bindings",
                    describe_binding(&binding)
                )
            }
        }
        GatewayCommand::Role(RoleCommand::List { rules, config }) => {
            let cfg = GatewayConfig::load(&config.config)?;
            let store = cfg.open_user_store()?;
            let stored: Vec<String> = store.list_roles()?.into_iter().map(|r| r.name).collect();
            let policy = Policy::new(&all_roles(&cfg, &store)?, store.list_bindings()?);
            println!("ROLES");
            for role in policy.roles() {
                let origin = if role.builtin {
                    "built-in"
                } else if stored.contains(&role.name) {
                    "stored"
                } else {
                    "config"
                };
                println!("  {} ({origin}, {} rules)", role.name, role.rules.len());
                if rules {
                    for rule in &role.rules {
                        println!("    {rule}");
                    }
                }
            }
            println!("\nBINDINGS");
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec!["ROLE", "SUBJECT", "CLUSTER", "NAMESPACE"]);
            for b in policy.bindings() {
                let mut role = b.role.clone();
                if policy.role(&b.role).is_none() {
                    role.push_str(" (unknown role: grants nothing)");
                }
                table.add_row(vec![
                    role,
                    b.subject.to_string(),
                    b.cluster.clone().unwrap_or_else(|| "*".into()),
                    b.namespace.clone().unwrap_or_else(|| "*".into()),
                ]);
            }
            if policy.bindings().is_empty() {
                println!("  none: every request is denied (deny by default)");
            } else {
                println!("{table}");
            }
            Ok(0)
        }
        GatewayCommand::Role(RoleCommand::Apply { file, config }) => {
            let cfg = GatewayConfig::load(&config.config)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let roles = crate::gateway::config::parse_role_file(&text, &cfg.roles)
                .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
            let store = cfg.open_user_store()?;
            for role in &roles {
                if store.put_role(role)? {
                    println!("stored role {} ({} rules)", role.name, role.rules.len());
                } else {
                    println!("role {} unchanged", role.name);
                }
            }
            Ok(0)
        }
        GatewayCommand::Role(RoleCommand::Delete { name, config }) => {
            let cfg = GatewayConfig::load(&config.config)?;
            let store = cfg.open_user_store()?;
            if store.remove_role(&name)? {
                println!("deleted role {name}");
                Ok(0)
            } else if cfg.roles.iter().any(|r| r.name == name) {
                Err(UsageError(format!(
                    "role {name:?} is defined in {}, not stored: remove it there",
                    cfg.path.display()
                ))
                .into())
            } else {
                anyhow::bail!("no stored role {name:?}; `ztk gateway role list` shows the roles")
            }
        }
        GatewayCommand::Sinks(command) => sinks::run(command),
        GatewayCommand::Migrate(args) => migrate::run(args),
        GatewayCommand::Clusters(command) => clusters::run(command),
        GatewayCommand::Audit(AuditArgs {
            command: Some(AuditCommand::Verify { json, config }),
            ..
        }) => {
            let cfg = GatewayConfig::load(&config.config)?;
            let store = cfg.open_audit_store()?;
            // The key pins the checkpoints; reading it never creates one.
            let key_path = cfg.audit_key_path();
            let pinned = if key_path.exists() {
                let key = crate::audit::chain::SigningKey::load_or_create(&key_path)?;
                Some(key.public_key().to_vec())
            } else {
                None
            };
            // With several gateways on one database, each signs with its own key: theirs are
            // in `audit_checkpoint_keys`.
            let mut keys: Vec<&[u8]> = pinned.as_deref().into_iter().collect();
            keys.extend(cfg.audit_checkpoint_keys.iter().map(Vec::as_slice));
            let code = super::audit::verify_store(&store, &keys, json)?;
            if !json {
                match &pinned {
                    Some(key) => println!(
                        "checkpoint key: {} ({})",
                        hex::encode(key),
                        key_path.display()
                    ),
                    None => println!(
                        "no checkpoint key yet ({} is made at the gateway's first start)",
                        key_path.display()
                    ),
                }
                for key in &cfg.audit_checkpoint_keys {
                    println!(
                        "checkpoint key: {} (audit_checkpoint_keys)",
                        hex::encode(key)
                    );
                }
            }
            Ok(code)
        }
        GatewayCommand::Audit(AuditArgs {
            command: None,
            config,
            list,
        }) => {
            if list.remote {
                return Err(crate::cli::UsageError(
                    "`ztk gateway audit` reads the gateway's own store; drop --remote".into(),
                )
                .into());
            }
            let config = config.ok_or_else(|| {
                crate::cli::UsageError("give the gateway's config with --config FILE".into())
            })?;
            let cfg = GatewayConfig::load(&config)?;
            let store = cfg.open_audit_store()?;
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
            "ztk gateway: cluster {} -> {} ({})",
            cluster.name, cluster.description, cluster.reach.source
        );
        if cluster.reach.insecure {
            println!(
                "ztk gateway: WARNING: cluster {} is reached WITHOUT TLS verification (insecure-skip-tls-verify, allowed by allow_insecure = true); anyone on the path can read and change its traffic",
                cluster.name
            );
        }
    }
    let sinks = crate::sinks::start(&running.gateway.audit_store, &cfg.sinks)
        .with_context(|| format!("cannot start the sinks of {}", cfg.path.display()))?;
    for sink in &cfg.sinks {
        println!(
            "ztk gateway: sink {} ({}) -> {}",
            sink.name,
            sink.kind.type_name(),
            sink.kind.target()
        );
    }
    println!(
        "ztk gateway: audit_mode {}; audit checkpoints signed by Ed25519 key {}",
        cfg.audit_mode.as_str(),
        hex::encode(running.gateway.audit_key.public_key())
    );
    println!("ztk gateway: listening on https://{}", running.addr);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = shutdown_signal() => {}
    }
    println!("ztk gateway: shutting down; flushing audit records");
    sinks.stop().await;
    let status = running.shutdown().await;
    println!("ztk gateway: audit writer: {status}");
    Ok(if status.failed > 0 || status.spilled > 0 {
        1
    } else {
        0
    })
}

pub(crate) async fn shutdown_signal() {
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
