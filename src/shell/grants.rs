//! The credential a web-shell command's kubectl uses: minted for one command, bound to the web
//! session that typed it, accepted only on the shell's own loopback port, and forgotten when the
//! command ends. Nothing is stored: the gateway that runs the command is the one kubectl calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rand::RngCore as _;
use uuid::Uuid;

use crate::gateway::users::hash_token;

/// Tokens of the web shell start with this (they are never valid anywhere else).
pub const TOKEN_PREFIX: &str = "ztks_";

/// What a shell credential stands for.
#[derive(Debug)]
pub struct Grant {
    /// The hash of the web session's token: the credential is valid only while it is.
    pub parent: String,
    pub user: String,
    /// The one cluster the command was started for.
    pub cluster: String,
    pub command: Uuid,
    /// The browser's address, recorded as the source of the command's calls.
    pub source_ip: String,
    /// API calls made with the credential (the command record's count).
    calls: AtomicI64,
}

impl Grant {
    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> i64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The credentials of the commands running now, by token hash.
#[derive(Default)]
pub struct Grants {
    by_hash: Mutex<HashMap<String, Arc<Grant>>>,
}

/// A minted credential; dropping it revokes the token.
pub struct Minted {
    pub token: String,
    pub grant: Arc<Grant>,
    hash: String,
    grants: Arc<Grants>,
}

impl Drop for Minted {
    fn drop(&mut self) {
        self.grants
            .by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.hash);
    }
}

impl Grants {
    pub fn mint(
        self: &Arc<Self>,
        parent_token: &str,
        user: &str,
        cluster: &str,
        command: Uuid,
        source_ip: &str,
    ) -> Minted {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let hash = hash_token(&token);
        let grant = Arc::new(Grant {
            parent: hash_token(parent_token),
            user: user.to_string(),
            cluster: cluster.to_string(),
            command,
            source_ip: source_ip.to_string(),
            calls: AtomicI64::new(0),
        });
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash.clone(), grant.clone());
        Minted {
            token,
            grant,
            hash,
            grants: self.clone(),
        }
    }

    /// The grant of a token, while its command runs.
    pub fn get(&self, token: &str) -> Option<Arc<Grant>> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash_token(token))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_until_its_command_ends() {
        let grants = Arc::new(Grants::default());
        let id = Uuid::now_v7();
        let minted = grants.mint("ztk_parent", "alice", "dev", id, "10.0.0.1");
        assert!(minted.token.starts_with(TOKEN_PREFIX));
        let grant = grants.get(&minted.token).unwrap();
        assert_eq!((grant.user.as_str(), grant.command), ("alice", id));
        assert_eq!(grant.parent, hash_token("ztk_parent"));
        assert!(grants.get("ztk_parent").is_none());
        let token = minted.token.clone();
        drop(minted);
        assert!(grants.get(&token).is_none());
        assert!(grants.is_empty());
    }
}
