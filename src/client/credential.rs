//! The credentials `ztk credential` hands to kubectl and the persistent proxy accepts.
//!
//! A credential is opaque to kubectl: `ztk1_<command>_<expiry>_<mac>`, where `<command>` is the
//! id of the command the plugin recorded (or `-` for clients that are not kubectl) and `<mac>`
//! an HMAC-SHA256 over the command, expiry and cluster with a per-user key kept in a 0600 file.
//! The proxy checks it without any shared state but that key, so the plugin never has to talk
//! to the proxy, and the user's gateway session token never reaches kubectl.

use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the credential key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the credential key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the credential key {0} is damaged; delete it (credentials issued so far stop working)"
    )]
    Damaged(String),
}

/// The per-user secret that signs credentials.
#[derive(Clone)]
pub struct CredentialKey([u8; 32]);

/// What a valid credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The command recorded by the plugin, or None for a client that is not kubectl.
    pub command_id: Option<Uuid>,
    pub expires_us: i64,
}

const PREFIX: &str = "ztk1";

impl CredentialKey {
    /// Loads the key, creating it (0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<CredentialKey, CredentialError> {
        match std::fs::read(path) {
            Ok(raw) => Self::parse(&raw, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                if let Some(dir) = path.parent() {
                    crate::fsutil::create_private_dir(dir).map_err(|source| {
                        CredentialError::Write {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                }
                // Two plugins racing: create exclusively, and whoever loses reads the winner's key.
                match create_new_private(path, hex::encode(key).as_bytes()) {
                    Ok(()) => Ok(CredentialKey(key)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let raw = std::fs::read(path).map_err(|source| CredentialError::Read {
                            path: path.display().to_string(),
                            source,
                        })?;
                        Self::parse(&raw, path)
                    }
                    Err(source) => Err(CredentialError::Write {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            Err(source) => Err(CredentialError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn parse(raw: &[u8], path: &Path) -> Result<CredentialKey, CredentialError> {
        let damaged = || CredentialError::Damaged(path.display().to_string());
        let bytes = hex::decode(String::from_utf8_lossy(raw).trim()).map_err(|_| damaged())?;
        Ok(CredentialKey(bytes.try_into().map_err(|_| damaged())?))
    }

    /// A credential for `cluster`, tied to `command_id`, valid until `expires_us`.
    pub fn issue(&self, command_id: Option<Uuid>, cluster: &str, expires_us: i64) -> String {
        let command = command_id.map_or_else(|| "-".to_string(), |id| id.simple().to_string());
        let mac = self.mac(&command, expires_us, cluster);
        format!("{PREFIX}_{command}_{expires_us}_{mac}")
    }

    /// Checks a credential presented for `cluster` at time `now_us`.
    pub fn verify(&self, credential: &str, cluster: &str, now_us: i64) -> Option<Verified> {
        let mut parts = credential.split('_');
        if parts.next()? != PREFIX {
            return None;
        }
        let command = parts.next()?;
        let expires = parts.next()?;
        let mac = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let expires_us: i64 = expires.parse().ok()?;
        let expected = self.mac(command, expires_us, cluster);
        if !constant_time_eq(mac.as_bytes(), expected.as_bytes()) || expires_us <= now_us {
            return None;
        }
        let command_id = match command {
            "-" => None,
            id => Some(Uuid::parse_str(id).ok()?),
        };
        Some(Verified {
            command_id,
            expires_us,
        })
    }

    /// HMAC-SHA256 (RFC 2104) over the credential's fields.
    fn mac(&self, command: &str, expires_us: i64, cluster: &str) -> String {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in self.0.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(format!("{command}\n{expires_us}\n{cluster}"))
            .finalize();
        let outer = Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        hex::encode(outer)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn create_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_verify_only_for_their_cluster_key_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::load_or_create(&dir.path().join("k")).unwrap();
        let again = CredentialKey::load_or_create(&dir.path().join("k")).unwrap();
        let other = CredentialKey::load_or_create(&dir.path().join("other")).unwrap();
        let id = Uuid::now_v7();
        let cred = key.issue(Some(id), "dev", 1_000);
        assert_eq!(
            again.verify(&cred, "dev", 999),
            Some(Verified {
                command_id: Some(id),
                expires_us: 1_000
            })
        );
        assert_eq!(key.verify(&cred, "prod", 999), None);
        assert_eq!(key.verify(&cred, "dev", 1_000), None);
        assert_eq!(other.verify(&cred, "dev", 999), None);
        let tampered = cred.replace(
            &id.simple().to_string(),
            &Uuid::now_v7().simple().to_string(),
        );
        assert_eq!(key.verify(&tampered, "dev", 999), None);
        let anonymous = key.issue(None, "dev", 1_000);
        assert_eq!(key.verify(&anonymous, "dev", 1).unwrap().command_id, None);
        assert_eq!(key.verify("garbage", "dev", 1), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
