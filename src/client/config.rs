//! Where the client keeps things, and what it remembers between runs.
//!
//! `ZTK_CONFIG_DIR` and `ZTK_DATA_DIR` override the platform directories (XDG on Linux), which
//! keeps tests and the demo away from the user's real files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    pub fn from_env() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "ztk");
        let config_dir = match std::env::var_os("ZTK_CONFIG_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => dirs
                .as_ref()
                .map(|d| d.config_dir().to_path_buf())
                .context("cannot find a home directory for the config; set ZTK_CONFIG_DIR")?,
        };
        let data_dir = match std::env::var_os("ZTK_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => dirs
                .as_ref()
                .map(|d| d.data_dir().to_path_buf())
                .context("cannot find a home directory for data; set ZTK_DATA_DIR")?,
        };
        Ok(Paths {
            config_dir,
            data_dir,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The gateway's CA, copied at login so the original file may move.
    pub fn ca_file(&self) -> PathBuf {
        self.config_dir.join("gateway-ca.pem")
    }

    pub fn audit_db(&self) -> PathBuf {
        self.data_dir.join("audit.db")
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("session-token")
    }
}

/// What `ztk login` remembers. Holds no secret: the token lives in the keyring (or a 0600 file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    pub gateway: String,
    pub user: String,
    /// A CA file to trust for the gateway; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cluster: Option<String>,
    /// Where the token is: "keyring" or "file".
    #[serde(default)]
    pub token_store: String,
    /// Session expiry, µs since the epoch.
    #[serde(default)]
    pub expires_us: i64,
    /// Clusters the gateway offered at login.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// `[audit]`: what the local audit store does when it cannot write, and how long it keeps
    /// shipped records. Written by the user; kept by `ztk login`.
    #[serde(default, skip_serializing_if = "AuditSettings::is_default")]
    pub audit: AuditSettings,
}

/// The client's `[audit]` settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `best-effort` (default): when the local store cannot be written, warn and go on.
    /// `fail-closed`: refuse to run kubectl (and the proxy refuses calls) instead.
    #[serde(default)]
    pub mode: AuditMode,
    /// Drop shipped records older than this (`30d`, `12h`). Unshipped records are never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_max_age: Option<String>,
    /// Drop the oldest shipped records while the store is larger than this (`500MB`, `2GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_max_size: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    #[default]
    BestEffort,
    FailClosed,
}

impl AuditSettings {
    fn is_default(&self) -> bool {
        *self == AuditSettings::default()
    }

    /// The retention policy, or a message naming the bad setting.
    pub fn retention(&self) -> Result<crate::audit::outbox::Retention> {
        let max_age_us = self
            .retention_max_age
            .as_deref()
            .map(|s| {
                crate::audit::filter::parse_duration_us(s).map_err(|_| {
                    anyhow::anyhow!(
                        "[audit] retention_max_age = {s:?} is not a duration (30d, 12h)"
                    )
                })
            })
            .transpose()?;
        let max_bytes = self
            .retention_max_size
            .as_deref()
            .map(|s| {
                parse_size(s).with_context(|| {
                    format!("[audit] retention_max_size = {s:?} is not a size (500MB, 2GB)")
                })
            })
            .transpose()?;
        Ok(crate::audit::outbox::Retention {
            max_age_us,
            max_bytes,
        })
    }
}

/// `500MB`, `2GB`, `64KiB`, `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().context("no number")?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => anyhow::bail!("unknown unit {other:?}"),
    };
    n.checked_mul(scale).context("too large")
}

impl ClientConfig {
    /// The saved config, or None before the first login.
    pub fn load(paths: &Paths) -> Result<Option<ClientConfig>> {
        let path = paths.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let config = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid ztk config; fix it or run `ztk login` again",
                path.display()
            )
        })?;
        Ok(Some(config))
    }

    /// The saved config, or an error telling the user to log in.
    pub fn require(paths: &Paths) -> Result<ClientConfig> {
        Self::load(paths)?.context("not logged in; run `ztk login --gateway URL --user NAME` first")
    }

    pub fn save(&self, paths: &Paths) -> Result<()> {
        crate::fsutil::create_private_dir(&paths.config_dir)
            .with_context(|| format!("cannot create {}", paths.config_dir.display()))?;
        let text = toml::to_string(self).context("cannot encode the config")?;
        let path = paths.config_file();
        crate::fsutil::write_private(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn roots(&self) -> Result<crate::tls::Roots> {
        Ok(match &self.ca_file {
            Some(path) => crate::tls::Roots::Pem(read_ca(path)?),
            None => crate::tls::Roots::System,
        })
    }

    /// The cluster to use: the one asked for, else the default, else the only one offered.
    pub fn pick_cluster(&self, asked: Option<&str>) -> Result<String> {
        if let Some(name) = asked {
            return Ok(name.to_string());
        }
        if let Some(name) = &self.default_cluster {
            return Ok(name.clone());
        }
        match self.clusters.as_slice() {
            [only] => Ok(only.clone()),
            [] => anyhow::bail!(
                "the gateway offers no clusters to {}; ask its administrator",
                self.user
            ),
            many => anyhow::bail!(
                "several clusters are offered ({}); choose one with --cluster NAME",
                many.join(", ")
            ),
        }
    }
}

pub fn read_ca(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    crate::tls::parse_certs(&pem, &path.display().to_string())?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_settings_read_from_toml() {
        let config: ClientConfig = toml::from_str(
            "gateway = \"https://g\"\nuser = \"a\"\n[audit]\nmode = \"fail-closed\"\nretention_max_age = \"30d\"\nretention_max_size = \"2MB\"\n",
        )
        .unwrap();
        assert_eq!(config.audit.mode, AuditMode::FailClosed);
        let r = config.audit.retention().unwrap();
        assert_eq!(r.max_age_us, Some(30 * 86_400_000_000));
        assert_eq!(r.max_bytes, Some(2_000_000));
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert!(parse_size("lots").is_err());
        let bad = AuditSettings {
            retention_max_age: Some("forever".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad.retention().unwrap_err()).contains("retention_max_age"));
        // Round trip: the default settings are not written at all.
        let text = toml::to_string(&ClientConfig::default()).unwrap();
        assert!(!text.contains("[audit]"), "{text}");
        let text = toml::to_string(&config).unwrap();
        assert_eq!(
            toml::from_str::<ClientConfig>(&text).unwrap().audit,
            config.audit
        );
    }
}
