//! kubectl in the browser: the web console's shell (`/shell`). A line typed there is checked
//! (`line`), then the gateway host's kubectl runs it as a confined child (`confine`, `run`) on a
//! pseudo-terminal (`pty`), with a credential minted for that one command (`grants`) that is
//! accepted only on the shell's own loopback port. kubectl's calls therefore take the normal
//! Kubernetes path (authorization, audit, revocation, fail-closed), linked to the command's
//! record (access method `browser`). `session` carries one browser tab's terminal over a
//! WebSocket.

pub mod config;
pub mod confine;
pub mod grants;
pub mod line;
pub mod pty;
pub mod run;
pub mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

pub use config::ShellConfig;

use crate::gateway::rbac::{Identity, Policy};

/// The web shell's state in a gateway.
pub struct State {
    pub config: ShellConfig,
    /// The kubectl found at start, or why the shell is off.
    pub kubectl: Result<PathBuf, String>,
    pub grants: Arc<grants::Grants>,
    /// Where the commands' private directories are made.
    pub dir: PathBuf,
    port: OnceLock<ShellPort>,
    open: Mutex<HashMap<String, usize>>,
}

/// The loopback port kubectl calls back on, and the CA its kubeconfig trusts.
#[derive(Debug, Clone)]
pub struct ShellPort {
    pub port: u16,
    pub ca_pem: String,
}

/// A shell's place among the open ones; dropping it frees the place.
pub struct Place {
    state: Arc<State>,
    user: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.state.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl State {
    pub fn new(config: ShellConfig, data_dir: &std::path::Path) -> State {
        let kubectl = if config.enabled {
            config::find_kubectl(config.kubectl.as_deref())
        } else {
            Err("the web shell is turned off (shell.enabled = false in gateway.toml)".into())
        };
        State {
            config,
            kubectl,
            grants: Arc::default(),
            dir: data_dir.join("shell"),
            port: OnceLock::new(),
            open: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.kubectl.is_ok()
    }

    pub fn set_port(&self, port: ShellPort) {
        let _ = self.port.set(port);
    }

    pub fn port(&self) -> Option<&ShellPort> {
        self.port.get()
    }

    /// Takes a place for a new shell of `user`, or says which limit is reached.
    pub fn open(self: &Arc<Self>, user: &str) -> Result<Place, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        if total >= self.config.max_total {
            return Err(format!(
                "the gateway has {total} web shells open, its limit (shell.max_total); try again later"
            ));
        }
        let mine = open.get(user).copied().unwrap_or(0);
        if mine >= self.config.max_per_user {
            return Err(format!(
                "you have {mine} web shells open, the limit per user (shell.max_per_user); close one first"
            ));
        }
        *open.entry(user.to_string()).or_default() += 1;
        Ok(Place {
            state: self.clone(),
            user: user.to_string(),
        })
    }

    /// Shells open now (all users).
    pub fn open_count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The clusters `who` may reach (some binding covers them), each with the namespace the shell
/// starts in: the one namespace their bindings there name, else `default`.
pub fn reachable(policy: &Policy, who: &Identity, clusters: &[String]) -> Vec<(String, String)> {
    clusters
        .iter()
        .filter_map(|cluster| {
            let bindings: Vec<_> = policy
                .bindings_of(who)
                .filter(|b| b.cluster.as_deref().is_none_or(|c| c == cluster))
                .collect();
            if bindings.is_empty() {
                return None;
            }
            let namespace = if bindings.iter().any(|b| b.namespace.is_none()) {
                "default".to_string()
            } else {
                bindings[0]
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into())
            };
            Some((cluster.clone(), namespace))
        })
        .collect()
}

/// Whether `ns` is a valid namespace name (an RFC 1123 label).
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}
