//! The subset of the kubeconfig format ztk reads (the gateway's cluster credentials) and writes
//! (the kubeconfigs handed to kubectl).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {path} is not valid YAML: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub current_context: String,
}

fn api_version() -> String {
    "v1".into()
}
fn kind() -> String {
    "Config".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the gateway needs to reach a cluster: its server, CA and credential, resolved to bytes.
#[derive(Debug, Clone)]
pub struct ResolvedCluster {
    pub server: String,
    pub ca_pem: Option<Vec<u8>>,
    pub bearer_token: Option<String>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

impl Kubeconfig {
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|source| KubeconfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Resolves `context` (or the current context) to a server and credential. File references
    /// are relative to the kubeconfig's directory, as kubectl treats them.
    pub fn resolve(
        &self,
        path: &Path,
        context: Option<&str>,
    ) -> Result<ResolvedCluster, KubeconfigError> {
        let invalid = |message: String| KubeconfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let ctx_name = context.unwrap_or(&self.current_context);
        if ctx_name.is_empty() {
            return Err(invalid(
                "no context given and no current-context set; set `context` in the gateway config"
                    .into(),
            ));
        }
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| invalid(format!("context {ctx_name:?} not found")))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                invalid(format!(
                    "cluster {:?} of context {ctx_name:?} not found",
                    ctx.context.cluster
                ))
            })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .map(|u| u.user.clone())
            .unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new("."));
        let read = |file: &str| -> Result<Vec<u8>, KubeconfigError> {
            let p = base.join(file);
            std::fs::read(&p).map_err(|source| KubeconfigError::Read { path: p, source })
        };
        let decode = |field: &str, data: &str| -> Result<Vec<u8>, KubeconfigError> {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| invalid(format!("{field} is not valid base64: {e}")))
        };
        let c = &cluster.cluster;
        if c.insecure_skip_tls_verify {
            return Err(invalid(format!(
                "cluster {:?} sets insecure-skip-tls-verify; ztk always verifies TLS, give certificate-authority instead",
                cluster.name
            )));
        }
        if user.exec.is_some() {
            return Err(invalid(format!(
                "user {:?} uses an exec plugin; the gateway needs a static credential (token or client certificate)",
                ctx.context.user
            )));
        }
        let ca_pem = match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(data), _) => Some(decode("certificate-authority-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let bearer_token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => Some(String::from_utf8_lossy(&read(file)?).trim().to_string()),
            (None, None) => None,
        };
        let client_cert_pem = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(data), _) => Some(decode("client-certificate-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let client_key_pem = match (&user.client_key_data, &user.client_key) {
            (Some(data), _) => Some(decode("client-key-data", data)?),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            return Err(invalid(format!("user {:?} has a client certificate without its key, or a key without its certificate", ctx.context.user)));
        }
        if !c.server.starts_with("https://") && !c.server.starts_with("http://") {
            return Err(invalid(format!(
                "cluster {:?} server {:?} is not an http(s) URL",
                cluster.name, c.server
            )));
        }
        Ok(ResolvedCluster {
            server: c.server.clone(),
            ca_pem,
            bearer_token,
            client_cert_pem,
            client_key_pem,
        })
    }
}

/// A kubeconfig with one cluster, one user and one context, as ztk hands to kubectl.
pub fn single(
    context: &str,
    server: &str,
    ca_pem: &str,
    user: User,
    namespace: Option<String>,
) -> Kubeconfig {
    Kubeconfig {
        api_version: api_version(),
        kind: kind(),
        clusters: vec![NamedCluster {
            name: context.into(),
            cluster: Cluster {
                server: server.into(),
                certificate_authority_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(ca_pem),
                ),
                ..Default::default()
            },
        }],
        users: vec![NamedUser {
            name: context.into(),
            user,
        }],
        contexts: vec![NamedContext {
            name: context.into(),
            context: Context {
                cluster: context.into(),
                user: context.into(),
                namespace,
            },
        }],
        current_context: context.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_context_with_files_relative_to_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        std::fs::write(dir.path().join("tok"), "secret\n").unwrap();
        let yaml = r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.pem}
users:
- name: u1
  user: {tokenFile: tok}
contexts:
- name: a
  context: {cluster: c1, user: u1}
"#;
        let path = dir.path().join("config");
        std::fs::write(&path, yaml).unwrap();
        let kc = Kubeconfig::load(&path).unwrap();
        let r = kc.resolve(&path, None).unwrap();
        assert_eq!(r.server, "https://10.0.0.1:6443");
        assert_eq!(r.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(r.bearer_token.as_deref(), Some("secret"));
        let err = kc.resolve(&path, Some("nope")).unwrap_err().to_string();
        assert!(err.contains("context \"nope\" not found"), "{err}");
    }
}
