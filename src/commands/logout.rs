//! `ztk logout`: end the session at the gateway and forget the token.

use anyhow::Result;

use crate::client::api::GatewayApi;
use crate::client::config::{ClientConfig, Paths};
use crate::client::token::TokenStore;

/// Log out: revoke the session at the gateway and remove the stored token.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<i32> {
    let paths = Paths::from_env()?;
    let Some(mut config) = ClientConfig::load(&paths)? else {
        println!("Not logged in.");
        return Ok(0);
    };
    let store = TokenStore::for_config(&paths, &config);
    if let Some(token) = store.get()? {
        let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
        if let Err(err) = api.logout(&token).await {
            eprintln!("ztk: warning: the gateway did not confirm the logout ({err}); the token is removed here anyway");
        }
    }
    store.delete()?;
    config.expires_us = 0;
    config.save(&paths)?;
    println!("Logged out of {} ({}).", config.gateway, config.user);
    Ok(0)
}
