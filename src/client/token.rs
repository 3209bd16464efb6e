//! Where the session token is kept: the OS keyring, or a 0600 file when no keyring works
//! (or when `ZTK_TOKEN_STORE=file` asks for it).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::config::{ClientConfig, Paths};

const SERVICE: &str = "ztk";

pub enum TokenStore {
    Keyring { account: String },
    File(PathBuf),
}

fn env_choice() -> Option<String> {
    std::env::var("ZTK_TOKEN_STORE")
        .ok()
        .filter(|v| !v.is_empty())
}

impl TokenStore {
    fn keyring(config: &ClientConfig) -> TokenStore {
        TokenStore::Keyring {
            account: format!("{}@{}", config.user, config.gateway),
        }
    }

    /// The store holding the token of `config`'s session.
    pub fn for_config(paths: &Paths, config: &ClientConfig) -> TokenStore {
        let choice = env_choice().unwrap_or_else(|| config.token_store.clone());
        if choice == "keyring" {
            Self::keyring(config)
        } else {
            TokenStore::File(paths.token_file())
        }
    }

    /// Saves a new token: in the keyring when one works, else in a file with a warning.
    /// Returns the store's name for the config.
    pub fn save_new(paths: &Paths, config: &ClientConfig, token: &str) -> Result<&'static str> {
        match env_choice().as_deref() {
            Some("file") => {
                TokenStore::File(paths.token_file()).set(token)?;
                return Ok("file");
            }
            Some("keyring") => {
                Self::keyring(config).set(token)?;
                return Ok("keyring");
            }
            Some(other) => {
                anyhow::bail!("ZTK_TOKEN_STORE={other:?} is not valid; use keyring or file")
            }
            None => {}
        }
        let keyring = Self::keyring(config);
        // A keyring that accepts a secret but cannot give it back (no daemon, locked) is no store.
        let works =
            keyring.set(token).is_ok() && keyring.get().ok().flatten().as_deref() == Some(token);
        if works {
            let _ = std::fs::remove_file(paths.token_file());
            return Ok("keyring");
        }
        let file = paths.token_file();
        eprintln!(
            "ztk: warning: no OS keyring is available; keeping the session token in {} (mode 0600)",
            file.display()
        );
        TokenStore::File(file).set(token)?;
        Ok("file")
    }

    pub fn get(&self) -> Result<Option<String>> {
        match self {
            TokenStore::Keyring { account } => {
                let entry =
                    keyring::Entry::new(SERVICE, account).context("cannot open the OS keyring")?;
                match entry.get_password() {
                    Ok(token) => Ok(Some(token)),
                    Err(keyring::Error::NoEntry) => Ok(None),
                    Err(e) => Err(e).context("cannot read the session token from the OS keyring"),
                }
            }
            TokenStore::File(path) => match std::fs::read_to_string(path) {
                Ok(token) => Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            },
        }
    }

    pub fn set(&self, token: &str) -> Result<()> {
        match self {
            TokenStore::Keyring { account } => keyring::Entry::new(SERVICE, account)
                .and_then(|e| e.set_password(token))
                .context("cannot store the session token in the OS keyring"),
            TokenStore::File(path) => crate::fsutil::write_private(path, token.as_bytes())
                .with_context(|| format!("cannot write {}", path.display())),
        }
    }

    pub fn delete(&self) -> Result<()> {
        match self {
            TokenStore::Keyring { account } => {
                match keyring::Entry::new(SERVICE, account).and_then(|e| e.delete_credential()) {
                    Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                    Err(e) => Err(e).context("cannot remove the session token from the OS keyring"),
                }
            }
            TokenStore::File(path) => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
            },
        }
    }
}

/// The saved config and its token, or an error telling the user to log in.
pub fn require_session(paths: &Paths) -> Result<(ClientConfig, String)> {
    let config = ClientConfig::require(paths)?;
    let token = TokenStore::for_config(paths, &config)
        .get()?
        .with_context(|| {
            format!(
                "no session token for {} at {}; run `ztk login`",
                config.user, config.gateway
            )
        })?;
    if config.expires_us > 0 && config.expires_us <= crate::audit::model::now_us() {
        anyhow::bail!(
            "your session at {} expired at {}; run `ztk login`",
            config.gateway,
            crate::audit::model::format_time_us(config.expires_us)
        );
    }
    Ok((config, token))
}
