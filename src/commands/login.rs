//! `ztk login`: exchange a name and password for a session token at the gateway.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::audit::model::format_time_us;
use crate::client::api::{normalize_url, GatewayApi};
use crate::client::config::{read_ca, ClientConfig, Paths};
use crate::client::token::TokenStore;
use crate::tls::Roots;

/// Log in to a ztk gateway (with a password, or with single sign-on: --sso); the session token
/// goes to the OS keyring.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sign in with the gateway's OpenID provider (single sign-on) in a browser.
    #[arg(long)]
    sso: bool,
    /// With --sso: the device flow, for hosts without a browser (prints a URL and a code to
    /// enter on any device).
    #[arg(long, requires = "sso")]
    device: bool,
    /// With --sso: print the URL instead of opening a browser.
    #[arg(long, requires = "sso")]
    no_browser: bool,
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
        .clone()
        .or_else(|| previous.as_ref().map(|p| p.gateway.clone()))
        .context("which gateway? pass --gateway https://HOST:PORT")?;
    let gateway = normalize_url(&gateway)?;

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
    let api = GatewayApi::new(&gateway, &roots)?;
    if args.sso {
        return sso(args, &paths, previous, gateway, ca_file, api).await;
    }
    let user = args
        .user
        .or_else(|| previous.as_ref().map(|p| p.user.clone()))
        .context("which user? pass --user NAME (or sign in with --sso)")?;
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
    let session = api
        .login(&user, &password, replaces)
        .await
        .context("login failed")?;
    save(&paths, previous, gateway, ca_file, args.cluster, session)
}

/// `ztk login --sso`: a still-valid session is kept; else the code flow (or the device flow)
/// at the gateway's provider, and the ID token for a gateway session.
async fn sso(
    args: Args,
    paths: &Paths,
    previous: Option<ClientConfig>,
    gateway: String,
    ca_file: Option<PathBuf>,
    api: GatewayApi,
) -> Result<i32> {
    use crate::oidc::client;
    let current = previous
        .as_ref()
        .filter(|p| p.gateway == gateway)
        .and_then(|p| TokenStore::for_config(paths, p).get().ok().flatten());
    if let Some(token) = &current {
        if let Ok(session) = api.session(token).await {
            if session.method.starts_with("sso") {
                println!(
                    "Already signed in to {gateway} as {} until {} (single sign-on); kept that session. `ztk logout` first to sign in again.",
                    session.user,
                    format_time_us(session.expires_us)
                );
                return Ok(0);
            }
        }
    }
    let info = api.oidc_info().await.context("cannot sign in with SSO")?;
    let signed = if args.device {
        client::device_flow(&info, |p| {
            match p.complete {
                Some(complete) => println!(
                    "To sign in, open {complete}\n(or open {} and enter the code {}).",
                    p.verification_uri, p.user_code
                ),
                None => println!(
                    "To sign in, open {} and enter the code {}",
                    p.verification_uri, p.user_code
                ),
            }
            println!(
                "Waiting for you to finish (the code expires in {} min)…",
                p.expires_in.div_ceil(60)
            );
        })
        .await
    } else {
        client::code_flow(
            &info,
            args.no_browser,
            std::time::Duration::from_secs(300),
            |url, opened| {
                if opened {
                    println!("Opened your browser to sign in. If it did not open, go to:\n{url}");
                } else {
                    println!("To sign in, open this URL in a browser on this machine:\n{url}");
                }
                println!("Waiting for you to finish (up to 5 min)…");
            },
        )
        .await
    }
    .context("single sign-on failed")?;
    let session = api
        .login_oidc(&crate::protocol::OidcLoginRequest {
            id_token: signed.id_token,
            nonce: signed.nonce,
            flow: if args.device { "device" } else { "code" }.into(),
            replaces: current,
        })
        .await
        .context("the gateway refused the sign-in")?;
    save(paths, previous, gateway, ca_file, args.cluster, session)
}

/// Keeps a new session: the token in the keyring (or the 0600 file), the login in the config.
fn save(
    paths: &Paths,
    previous: Option<ClientConfig>,
    gateway: String,
    ca_file: Option<PathBuf>,
    cluster: Option<String>,
    session: crate::protocol::SessionInfo,
) -> Result<i32> {
    let paths = paths.clone();
    let token = session
        .token
        .clone()
        .context("the gateway sent no session token")?;
    let clusters: Vec<String> = session.clusters.iter().map(|c| c.name.clone()).collect();
    if let Some(name) = &cluster {
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
        default_cluster: cluster.or_else(|| {
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
