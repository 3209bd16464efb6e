//! The credentials `ztk credential` hands to kubectl and the persistent proxy accepts.
//!
//! A credential is opaque to kubectl: `ztk2_<cluster>_<command>_<expiry>_<mac>`, where
//! `<cluster>` is the cluster's name in lowercase hex (any name, with no separator in it),
//! `<command>` the id of the command the plugin recorded (or `-` for clients that are not
//! kubectl), `<expiry>` microseconds since the epoch, and `<mac>` an HMAC-SHA256 over everything
//! before it, keyed by a per-user 0600 file. Because the credential names its cluster, the proxy
//! can route a request whose path lost the kubeconfig's `/k8s/CLUSTER` prefix (`kubectl get
//! --raw`, clients that build URLs from the host alone) without any state but that key: the
//! plugin never has to talk to the proxy, and the user's gateway session token never reaches
//! kubectl.
//!
//! The first format, `ztk1_<command>_<expiry>_<mac>` (the MAC over command, expiry and cluster),
//! does not name its cluster: it is still accepted on `/k8s/CLUSTER/` paths (clients that got one
//! before an upgrade keep working until it expires), and the plugin still issues it to a running
//! proxy from before this format (see `ProxyFiles::accepts_current`).

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
    /// The cluster the credential was issued for: where its calls go.
    pub cluster: String,
    pub format: Format,
}

/// The credential formats, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ztk1_…`: does not name its cluster; valid only with the cluster in the path.
    V1,
    /// `ztk2_…`: names its cluster.
    V2,
}

impl Format {
    pub fn prefix(self) -> &'static str {
        match self {
            Format::V1 => "ztk1",
            Format::V2 => "ztk2",
        }
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not issued with this key, altered, expired, for another cluster (`ztk1`, which cannot
    /// tell), or not a ztk credential at all.
    Invalid,
    /// A valid-looking `ztk1` credential on a path that does not name the cluster: it cannot say
    /// where to go. Its MAC is not checked (nothing could check it without a cluster).
    NoCluster,
}

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
        self.issue_as(Format::V2, command_id, cluster, expires_us)
    }

    /// `issue` in a given format: `V1` for a running proxy that predates `V2`.
    pub fn issue_as(
        &self,
        format: Format,
        command_id: Option<Uuid>,
        cluster: &str,
        expires_us: i64,
    ) -> String {
        let command = command_id.map_or_else(|| "-".to_string(), |id| id.simple().to_string());
        match format {
            Format::V1 => {
                let mac = self.mac_v1(&command, expires_us, cluster);
                format!("ztk1_{command}_{expires_us}_{mac}")
            }
            Format::V2 => {
                let signed = format!("ztk2_{}_{command}_{expires_us}", hex::encode(cluster));
                let mac = hex::encode(self.mac(&[signed.as_bytes()]));
                format!("{signed}_{mac}")
            }
        }
    }

    /// Checks a credential presented at time `now_us` on a path naming `path_cluster`
    /// (`/k8s/NAME/…`), or none. A `ztk2` credential is checked on its own: the caller compares
    /// its cluster with the path's. A `ztk1` credential needs the path's cluster to be checked
    /// at all, and is then valid only for it.
    pub fn verify(
        &self,
        credential: &str,
        path_cluster: Option<&str>,
        now_us: i64,
    ) -> Result<Verified, Rejected> {
        if let Some(rest) = credential.strip_prefix("ztk2_") {
            return self.verify_v2(credential, rest, now_us);
        }
        if credential.starts_with("ztk1_") {
            let cluster = path_cluster.ok_or(Rejected::NoCluster)?;
            return self.verify_v1(credential, cluster, now_us);
        }
        Err(Rejected::Invalid)
    }

    fn verify_v2(&self, credential: &str, rest: &str, now_us: i64) -> Result<Verified, Rejected> {
        let (signed, mac) = credential.rsplit_once('_').ok_or(Rejected::Invalid)?;
        let mut parts = rest.split('_');
        let (Some(cluster), Some(command), Some(expires), Some(_mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Rejected::Invalid);
        };
        let expected = self.mac(&[signed.as_bytes()]);
        if !mac_matches(mac, &expected) {
            return Err(Rejected::Invalid);
        }
        // Signed by us from here on: what follows only reads what `issue_as` wrote.
        let cluster = hex::decode(cluster)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .filter(|c| !c.is_empty())
            .ok_or(Rejected::Invalid)?;
        let (command_id, expires_us) = command_and_expiry(command, expires, now_us)?;
        Ok(Verified {
            command_id,
            expires_us,
            cluster,
            format: Format::V2,
        })
    }

    fn verify_v1(
        &self,
        credential: &str,
        cluster: &str,
        now_us: i64,
    ) -> Result<Verified, Rejected> {
        let mut parts = credential.split('_').skip(1);
        let (Some(command), Some(expires), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejected::Invalid);
        };
        let expires_us: i64 = expires.parse().map_err(|_| Rejected::Invalid)?;
        let expected = self.mac_v1(command, expires_us, cluster);
        if !constant_time_eq(mac.as_bytes(), expected.as_bytes()) {
            return Err(Rejected::Invalid);
        }
        let (command_id, expires_us) = command_and_expiry(command, expires, now_us)?;
        Ok(Verified {
            command_id,
            expires_us,
            cluster: cluster.to_string(),
            format: Format::V1,
        })
    }

    /// The `ztk1` MAC: over command, expiry and cluster, one per line, as hex.
    fn mac_v1(&self, command: &str, expires_us: i64, cluster: &str) -> String {
        hex::encode(self.mac(&[format!("{command}\n{expires_us}\n{cluster}").as_bytes()]))
    }

    /// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in self.0.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        let mut inner = Sha256::new().chain_update(ipad);
        for part in parts {
            inner.update(part);
        }
        let inner = inner.finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }
}

/// Whether `presented` is the lowercase hex of `expected`, in time independent of where they
/// differ.
fn mac_matches(presented: &str, expected: &[u8; 32]) -> bool {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(expected, &mut hex).expect("64 bytes hold 32 in hex");
    constant_time_eq(presented.as_bytes(), &hex)
}

/// The command id (`-` for none) and the expiry of a credential whose MAC matched; expired
/// ones are refused.
fn command_and_expiry(
    command: &str,
    expires: &str,
    now_us: i64,
) -> Result<(Option<Uuid>, i64), Rejected> {
    let expires_us: i64 = expires.parse().map_err(|_| Rejected::Invalid)?;
    if expires_us <= now_us {
        return Err(Rejected::Invalid);
    }
    let command_id = match command {
        "-" => None,
        id => Some(Uuid::parse_str(id).map_err(|_| Rejected::Invalid)?),
    };
    Ok((command_id, expires_us))
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

    fn keys() -> (
        tempfile::TempDir,
        CredentialKey,
        CredentialKey,
        CredentialKey,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::load_or_create(&dir.path().join("k")).unwrap();
        let again = CredentialKey::load_or_create(&dir.path().join("k")).unwrap();
        let other = CredentialKey::load_or_create(&dir.path().join("other")).unwrap();
        (dir, key, again, other)
    }

    #[test]
    fn credentials_name_their_cluster_and_verify_only_with_their_key_and_lifetime() {
        let (dir, key, again, other) = keys();
        let id = Uuid::now_v7();
        let cred = key.issue(Some(id), "dev", 1_000);
        assert!(cred.starts_with("ztk2_646576_"), "{cred}");
        let verified = Verified {
            command_id: Some(id),
            expires_us: 1_000,
            cluster: "dev".into(),
            format: Format::V2,
        };
        // Checked on its own, with or without a cluster in the path: the caller compares them.
        assert_eq!(again.verify(&cred, None, 999), Ok(verified.clone()));
        assert_eq!(key.verify(&cred, Some("prod"), 999), Ok(verified));
        assert_eq!(key.verify(&cred, None, 1_000), Err(Rejected::Invalid));
        assert_eq!(other.verify(&cred, None, 999), Err(Rejected::Invalid));
        let anonymous = key.issue(None, "dev", 1_000);
        assert_eq!(key.verify(&anonymous, None, 1).unwrap().command_id, None);
        for garbage in ["garbage", "", "ztk2_", "ztk2____", "ztk3_64_-_1000_00"] {
            assert_eq!(
                key.verify(garbage, None, 1),
                Err(Rejected::Invalid),
                "{garbage}"
            );
        }
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

    #[test]
    fn any_cluster_name_round_trips() {
        let (_dir, key, _, _) = keys();
        for cluster in [
            "a",
            "prod-eu-1",
            "with_underscore",
            "Ünï code/slash?",
            "a\nb",
            "-",
        ] {
            let cred = key.issue(None, cluster, 1_000);
            assert_eq!(cred.split('_').count(), 5, "{cred}");
            assert!(
                cred.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{cred}"
            );
            assert_eq!(key.verify(&cred, None, 1).unwrap().cluster, cluster);
        }
    }

    #[test]
    fn any_change_to_a_credential_is_refused() {
        let (_dir, key, _, _) = keys();
        let id = Uuid::now_v7();
        let cred = key.issue(Some(id), "dev", 1_000);
        // Another cluster, command or expiry with the original MAC.
        let swaps = [
            (hex::encode("dev"), hex::encode("prod")),
            (id.simple().to_string(), Uuid::now_v7().simple().to_string()),
            (id.simple().to_string(), "-".to_string()),
            ("_1000_".to_string(), "_9999_".to_string()),
        ];
        for (from, to) in swaps {
            let tampered = cred.replacen(&from, &to, 1);
            assert_ne!(tampered, cred);
            assert_eq!(
                key.verify(&tampered, None, 1),
                Err(Rejected::Invalid),
                "{tampered}"
            );
        }
        // Every single character changed, dropped or added.
        for i in 0..cred.len() {
            let mut bytes = cred.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let flipped = String::from_utf8(bytes).unwrap();
            assert!(key.verify(&flipped, None, 1).is_err(), "{flipped}");
            let mut dropped = cred.clone();
            dropped.remove(i);
            assert!(key.verify(&dropped, None, 1).is_err(), "{dropped}");
        }
        assert!(key.verify(&format!("{cred}0"), None, 1).is_err());
        assert!(key.verify(&format!("{cred}_00"), None, 1).is_err());
        // The same fields under the old prefix: the formats' MACs differ.
        let relabelled = cred.replacen("ztk2_", "ztk1_", 1);
        assert!(key.verify(&relabelled, Some("dev"), 1).is_err());
    }

    #[test]
    fn old_credentials_verify_only_with_the_cluster_in_the_path() {
        let (_dir, key, _, other) = keys();
        let id = Uuid::now_v7();
        let old = key.issue_as(Format::V1, Some(id), "dev", 1_000);
        assert!(
            old.starts_with("ztk1_") && old.split('_').count() == 4,
            "{old}"
        );
        assert_eq!(
            key.verify(&old, Some("dev"), 999),
            Ok(Verified {
                command_id: Some(id),
                expires_us: 1_000,
                cluster: "dev".into(),
                format: Format::V1,
            })
        );
        assert_eq!(key.verify(&old, Some("prod"), 999), Err(Rejected::Invalid));
        assert_eq!(key.verify(&old, None, 999), Err(Rejected::NoCluster));
        assert_eq!(key.verify(&old, Some("dev"), 1_000), Err(Rejected::Invalid));
        assert_eq!(other.verify(&old, Some("dev"), 999), Err(Rejected::Invalid));
        // Known answers (HMAC-SHA256 computed independently, with Python's hmac): `ztk1` as
        // the releases before `ztk2` issued it, and `ztk2`.
        let fixed = CredentialKey([7u8; 32]);
        let v1 = "ztk1_-_1000_d88bda63c81a8b6efb019207294f627b13eef9de18f6f4b2f1f9971701bbeb77";
        let v2 =
            "ztk2_646576_-_1000_831d28e141ddc0be3e390053654c0cbfae2c2f343d56e28d742ed859ced2e108";
        assert_eq!(fixed.issue_as(Format::V1, None, "dev", 1_000), v1);
        assert_eq!(fixed.issue(None, "dev", 1_000), v2);
        assert_eq!(fixed.verify(v1, Some("dev"), 1).unwrap().format, Format::V1);
        assert_eq!(fixed.verify(v2, None, 1).unwrap().cluster, "dev");
    }
}
