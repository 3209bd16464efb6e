//! `ztk login`: exchange a name and password for a session token at the gateway.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::audit::model::format_time_us;
use crate::client::api::{normalize_url, GatewayApi};
use crate::client::config::{read_ca, ClientConfig, Paths};
use crate::client::token::TokenStore;
use crate::tls::Roots;

/// Log in to a ztk gateway; the session token goes to the OS keyring.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's URL, e.g. https://ztk.example.com:8443 (default: the last one used).
    #[arg(long, env = "ZTK_GATEWAY", value_name = "URL")]
    gateway: Option<String>,
    /// Your user name at the gateway (default: the last one used).
    #[arg(long, short = 'u', value_name = "NAME")]
    user: Option<String>,
    /// Read the password from standard input (first line) instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// A PEM file with the CA that signed the gateway's certificate (default: the system's CAs).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// The cluster `ztk kubectl` uses when --cluster is not given.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
}

pub async fn run(args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let previous = ClientConfig::load(&paths).ok().flatten();
    let gateway = args
        .gateway
        .or_else(|| previous.as_ref().map(|p| p.gateway.clone()))
        .context("which gateway? pass --gateway https://HOST:PORT")?;
    let gateway = normalize_url(&gateway)?;
    let user = args
        .user
        .or_else(|| previous.as_ref().map(|p| p.user.clone()))
        .context("which user? pass --user NAME")?;

    // A new CA file is copied into the config dir; otherwise keep the one used before for this gateway.
    let ca_file = match &args.ca_file {
        Some(path) => {
            let pem = read_ca(path)?;
            crate::fsutil::create_private_dir(&paths.config_dir)?;
            crate::fsutil::write_atomic(&paths.ca_file(), &pem, 0o644)
                .with_context(|| format!("cannot write {}", paths.ca_file().display()))?;
            Some(paths.ca_file())
        }
        None => previous
            .as_ref()
            .filter(|p| p.gateway == gateway)
            .and_then(|p| p.ca_file.clone()),
    };
    let roots = match &ca_file {
        Some(path) => Roots::Pem(read_ca(path)?),
        None => Roots::System,
    };
    let password = if args.password_stdin {
        super::gateway::read_password_stdin()?
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {user} at {gateway}: "))
            .context("cannot read the password")?
    } else {
        anyhow::bail!("no terminal to ask for the password; pass --password-stdin and pipe it in");
    };

    // This client's current session (same gateway and user) is replaced, not kept beside.
    let replaces = previous
        .as_ref()
        .filter(|p| p.gateway == gateway && p.user == user)
        .and_then(|p| TokenStore::for_config(&paths, p).get().ok().flatten());
    let api = GatewayApi::new(&gateway, &roots)?;
    let session = api
        .login(&user, &password, replaces)
        .await
        .context("login failed")?;
    let token = session
        .token
        .clone()
        .context("the gateway sent no session token")?;
    let clusters: Vec<String> = session.clusters.iter().map(|c| c.name.clone()).collect();
    if let Some(name) = &args.cluster {
        if !clusters.contains(name) {
            anyhow::bail!(
                "the gateway offers no cluster {name:?}; it offers: {}",
                clusters.join(", ")
            );
        }
    }
    // Settings the user wrote survive a new login.
    let audit = previous
        .as_ref()
        .map(|p| p.audit.clone())
        .unwrap_or_default();
    let mut config = ClientConfig {
        audit,
        gateway: gateway.clone(),
        user: session.user.clone(),
        ca_file,
        default_cluster: args.cluster.or_else(|| {
            previous
                .and_then(|p| p.default_cluster)
                .filter(|c| clusters.contains(c))
        }),
        token_store: String::new(),
        expires_us: session.expires_us,
        clusters,
    };
    config.token_store = TokenStore::save_new(&paths, &config, &token)?.to_string();
    config.save(&paths)?;
    println!(
        "Logged in to {gateway} as {}{}.",
        session.user,
        if session.groups.is_empty() {
            String::new()
        } else {
            format!(" (groups: {})", session.groups.join(", "))
        }
    );
    println!("Session expires at {}.", format_time_us(session.expires_us));
    println!("Clusters: {}", config.clusters.join(", "));
    println!("Try: ztk kubectl get pods -A");
    Ok(0)
}
