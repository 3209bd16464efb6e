//! Where the client keeps things, and what it remembers between runs.
//!
//! `ZTK_CONFIG_DIR` and `ZTK_DATA_DIR` override the platform directories (XDG on Linux), which
//! keeps tests and the demo away from the user's real files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
