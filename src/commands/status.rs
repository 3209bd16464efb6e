//! `ztk status`: who you are, where, until when, your roles, and which clusters you can use.

use anyhow::Result;

use crate::audit::model::{format_time_us, now_us};
use crate::client::api::GatewayApi;
use crate::client::config::{ClientConfig, Paths};
use crate::client::token::TokenStore;

/// Show the current login: user, gateway, session expiry, your roles and clusters.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let Some(mut config) = ClientConfig::load(&paths)? else {
        println!("Not logged in. Run `ztk login --gateway URL --user NAME`.");
        return Ok(1);
    };
    println!("Gateway:  {}", config.gateway);
    println!("User:     {}", config.user);
    let token = TokenStore::for_config(&paths, &config).get()?;
    let Some(token) = token else {
        println!("Session:  none (run `ztk login`)");
        return Ok(1);
    };
    let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
    match api.session(&token).await {
        Ok(session) => {
            config.clusters = session.clusters.iter().map(|c| c.name.clone()).collect();
            config.expires_us = session.expires_us;
            config.save(&paths)?;
            if !session.groups.is_empty() {
                println!("Groups:   {}", session.groups.join(", "));
            }
            println!(
                "Session:  valid until {}{}",
                format_time_us(session.expires_us),
                match session.method.as_str() {
                    "sso-code" => " (single sign-on)",
                    "sso-device" => " (single sign-on, device flow)",
                    _ => "",
                }
            );
            let limit = match session.max_sessions {
                0 => String::new(),
                n => format!(" of {n} allowed"),
            };
            println!(
                "Sessions: {} open{limit} (`ztk gateway session revoke` ends them all)",
                session.open_sessions
            );
            if session.roles.is_empty() {
                println!(
                    "Roles:    none (every request is denied until an administrator binds a role)"
                );
            }
            for (i, grant) in session.roles.iter().enumerate() {
                println!(
                    "{}{} on cluster {}, namespace {} (via {})",
                    if i == 0 { "Roles:    " } else { "          " },
                    grant.role,
                    grant.cluster.as_deref().unwrap_or("*"),
                    grant.namespace.as_deref().unwrap_or("*"),
                    grant.subject
                );
            }
        }
        Err(crate::client::api::ApiError::Status { code: 401, message }) => {
            println!("Session:  not valid: {message}");
            return Ok(1);
        }
        Err(err) => {
            let state = if config.expires_us > now_us() {
                "valid"
            } else {
                "expired"
            };
            println!(
                "Session:  {state} until {} (gateway not reachable: {err})",
                format_time_us(config.expires_us)
            );
        }
    }
    let default = config.default_cluster.clone().unwrap_or_default();
    let clusters: Vec<String> = config
        .clusters
        .iter()
        .map(|c| {
            if *c == default {
                format!("{c} (default)")
            } else {
                c.clone()
            }
        })
        .collect();
    println!("Clusters: {}", clusters.join(", "));
    Ok(0)
}
