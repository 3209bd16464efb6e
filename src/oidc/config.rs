//! `[oidc]` in gateway.toml: the OpenID provider the gateway trusts for single sign-on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sinks::config::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    /// The client id `ztk login --sso` uses (a public client with PKCE); default `client_id`.
    #[serde(default)]
    cli_client_id: Option<String>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    username_claim: String,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default)]
    groups_prefix: String,
    #[serde(default)]
    allowed_domains: Vec<String>,
    #[serde(default)]
    extra_audiences: Vec<String>,
    /// A PEM file with the CA of the provider's certificate (default: the system's CAs).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// The console's callback as registered at the provider (default:
    /// `https://HOST/oidc/callback` for the host the browser used).
    #[serde(default)]
    redirect_url: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups"]
        .map(String::from)
        .to_vec()
}

fn default_username_claim() -> String {
    "email".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// The validated `[oidc]` section.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub cli_client_id: String,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub groups_claim: String,
    pub groups_prefix: String,
    /// Lowercase domains; empty: any.
    pub allowed_domains: Vec<String>,
    pub extra_audiences: Vec<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub redirect_url: Option<String>,
}

impl OidcConfig {
    /// Every client id an ID token may be for.
    pub fn audiences(&self) -> Vec<String> {
        let mut all = vec![self.client_id.clone(), self.cli_client_id.clone()];
        all.extend(self.extra_audiences.iter().cloned());
        all.dedup();
        all
    }

    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }
}

impl RawOidc {
    /// Validates the section; relative paths are below `base` (the config's directory).
    pub fn validate(self, base: &Path) -> Result<OidcConfig, String> {
        let issuer = self.issuer.trim_end_matches('/').to_string();
        super::provider::check_url(&issuer).map_err(|e| format!("key `oidc.issuer`: {e}"))?;
        if self.client_id.is_empty() {
            return Err("key `oidc.client_id`: empty".into());
        }
        let secret =
            match (self.client_secret, self.client_secret_file) {
                (Some(_), Some(_)) => return Err(
                    "keys `oidc.client_secret` and `oidc.client_secret_file`: give one, not both"
                        .into(),
                ),
                (Some(s), None) => Some(Secret::new(s)),
                (None, Some(file)) => {
                    let path = base.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        format!(
                            "key `oidc.client_secret_file`: cannot read {}: {e}",
                            path.display()
                        )
                    })?;
                    Some(Secret::new(text.trim().to_string()))
                }
                (None, None) => None,
            };
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("key `oidc.scopes`: must include \"openid\"".into());
        }
        for (key, value) in [
            ("username_claim", &self.username_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if value.is_empty() {
                return Err(format!("key `oidc.{key}`: empty"));
            }
        }
        let ca_pem = match self.ca_file {
            Some(file) => {
                let path = base.join(file);
                Some(std::fs::read(&path).map_err(|e| {
                    format!("key `oidc.ca_file`: cannot read {}: {e}", path.display())
                })?)
            }
            None => None,
        };
        if let Some(url) = &self.redirect_url {
            if !url.starts_with("https://") || !url.ends_with("/oidc/callback") {
                return Err(format!(
                    "key `oidc.redirect_url`: {url:?} must be https://GATEWAY/oidc/callback"
                ));
            }
        }
        Ok(OidcConfig {
            issuer,
            cli_client_id: self.cli_client_id.unwrap_or_else(|| self.client_id.clone()),
            client_id: self.client_id,
            client_secret: secret,
            scopes: self.scopes,
            username_claim: self.username_claim,
            groups_claim: self.groups_claim,
            groups_prefix: self.groups_prefix,
            allowed_domains: self
                .allowed_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            extra_audiences: self.extra_audiences,
            ca_pem,
            redirect_url: self.redirect_url,
        })
    }
}
