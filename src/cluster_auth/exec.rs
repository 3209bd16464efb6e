//! Running a kubeconfig's exec credential plugin (`client.authentication.k8s.io/v1` and
//! `v1beta1`), as client-go does: the command with its `args` and `env` added to the
//! gateway's environment, `KUBERNETES_EXEC_INFO` describing the call (never interactive on a
//! server), the `ExecCredential` read from its standard output.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::kubeconfig::{ExecConfig, ResolvedCluster};

/// A plugin that has not answered after this long is killed.
const TIMEOUT: Duration = Duration::from_secs(60);
/// More standard output than any credential needs.
const MAX_OUTPUT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the exec plugin {command:?} was not found{hint}")]
    NotFound { command: String, hint: String },
    #[error("the exec plugin {command:?} could not be started: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the exec plugin {command:?} exited with {status}{stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the exec plugin {command:?} did not answer within {}s and was stopped", TIMEOUT.as_secs())]
    Timeout { command: String },
    #[error("the exec plugin {command:?} printed no valid ExecCredential: {reason}")]
    BadOutput { command: String, reason: String },
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub token: Option<String>,
    /// PEM certificate and key.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    pub expires: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct ExecPlugin {
    config: ExecConfig,
    /// The kubeconfig's directory: a command with a `/` in it is relative to it.
    dir: PathBuf,
    /// `spec.cluster` for `provideClusterInfo: true`.
    cluster: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential {
    api_version: Option<String>,
    kind: Option<String>,
    status: Option<ExecStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    expiration_timestamp: Option<String>,
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

impl ExecPlugin {
    pub fn new(config: ExecConfig, dir: &Path, cluster: &ResolvedCluster) -> ExecPlugin {
        let mut info = serde_json::json!({ "server": cluster.server });
        if let Some(name) = &cluster.tls_server_name {
            info["tls-server-name"] = name.clone().into();
        }
        if cluster.insecure {
            info["insecure-skip-tls-verify"] = true.into();
        }
        if let Some(ca) = &cluster.ca_pem {
            info["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD.encode(ca).into();
        }
        if let Some(proxy) = &cluster.proxy_url {
            info["proxy-url"] = proxy.clone().into();
        }
        ExecPlugin {
            config,
            dir: dir.to_path_buf(),
            cluster: info,
        }
    }

    pub fn command(&self) -> &str {
        &self.config.command
    }

    /// The `KUBERNETES_EXEC_INFO` the plugin gets.
    fn exec_info(&self) -> String {
        let mut spec = serde_json::json!({ "interactive": false });
        if self.config.provide_cluster_info {
            spec["cluster"] = self.cluster.clone();
        }
        serde_json::json!({
            "apiVersion": self.config.api_version,
            "kind": "ExecCredential",
            "spec": spec,
        })
        .to_string()
    }

    pub async fn run(&self) -> Result<ExecOutput, ExecError> {
        let name = self.config.command.clone();
        let program = if name.contains('/') && Path::new(&name).is_relative() {
            self.dir.join(&name)
        } else {
            PathBuf::from(&name)
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&self.config.args)
            .envs(self.config.env.iter().map(|e| (&e.name, &e.value)))
            .env("KUBERNETES_EXEC_INFO", self.exec_info())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                let hint = match &self.config.install_hint {
                    Some(hint) if !hint.trim().is_empty() => {
                        format!("; {}", crate::audit::format::printable(hint.trim()))
                    }
                    _ => "; install it on the gateway host (on its PATH) or give its full path"
                        .into(),
                };
                ExecError::NotFound {
                    command: name.clone(),
                    hint,
                }
            } else {
                ExecError::Spawn {
                    command: name.clone(),
                    source,
                }
            }
        })?;
        let output = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(ExecError::Spawn {
                    command: name,
                    source,
                })
            }
            Err(_) => return Err(ExecError::Timeout { command: name }),
        };
        let stderr = stderr_tail(&output.stderr);
        if !output.status.success() {
            let status = match output.status.code() {
                Some(code) => format!("status {code}"),
                None => "a signal".to_string(),
            };
            return Err(ExecError::Failed {
                command: name,
                status,
                stderr: if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                },
            });
        }
        if !stderr.is_empty() {
            tracing::info!(plugin = %name, "exec plugin said: {stderr}");
        }
        self.parse(&output.stdout)
    }

    fn parse(&self, stdout: &[u8]) -> Result<ExecOutput, ExecError> {
        let bad = |reason: String| ExecError::BadOutput {
            command: self.config.command.clone(),
            reason,
        };
        if stdout.len() > MAX_OUTPUT {
            return Err(bad(format!("more than {MAX_OUTPUT} bytes")));
        }
        let cred: ExecCredential = serde_json::from_slice(stdout)
            .map_err(|e| bad(format!("not JSON of an ExecCredential ({e})")))?;
        if cred.kind.as_deref() != Some("ExecCredential") {
            return Err(bad(format!("kind is {:?}, not ExecCredential", cred.kind)));
        }
        if cred.api_version.as_deref() != Some(self.config.api_version.as_str()) {
            return Err(bad(format!(
                "apiVersion {:?}, but the kubeconfig asks for {:?}",
                cred.api_version, self.config.api_version
            )));
        }
        let status = cred.status.ok_or_else(|| bad("no status".into()))?;
        let expires = match status.expiration_timestamp.as_deref() {
            None | Some("") => None,
            Some(ts) => Some(
                time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        bad(format!("expirationTimestamp {ts:?} is not RFC 3339 ({e})"))
                    })?,
            ),
        };
        let token = status.token.filter(|t| !t.is_empty());
        if let Some(token) = &token {
            if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(bad(
                    "the token holds characters not allowed in a header".into()
                ));
            }
        }
        let client_cert = match (status.client_certificate_data, status.client_key_data) {
            (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
                crate::tls::parse_certs(cert.as_bytes(), "clientCertificateData")
                    .map_err(|e| bad(e.to_string()))?;
                crate::tls::parse_key(key.as_bytes(), "clientKeyData")
                    .map_err(|e| bad(e.to_string()))?;
                Some((cert.into_bytes(), key.into_bytes()))
            }
            (None, None) => None,
            (Some(c), Some(k)) if c.is_empty() && k.is_empty() => None,
            _ => {
                return Err(bad(
                    "clientCertificateData and clientKeyData must be given together".into(),
                ))
            }
        };
        if token.is_none() && client_cert.is_none() {
            return Err(bad(
                "status has neither a token nor clientCertificateData and clientKeyData".into(),
            ));
        }
        Ok(ExecOutput {
            token,
            client_cert,
            expires,
        })
    }
}

/// The end of a plugin's standard error, on one line, control characters escaped.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let tail = if text.len() > 2048 {
        let mut start = text.len() - 2048;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        &text[start..]
    } else {
        text
    };
    crate::audit::format::printable(&tail.replace('\n', " | ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(api_version: &str) -> ExecPlugin {
        ExecPlugin {
            config: ExecConfig {
                api_version: api_version.into(),
                command: "p".into(),
                ..Default::default()
            },
            dir: PathBuf::from("/"),
            cluster: serde_json::json!({"server": "https://x"}),
        }
    }

    #[test]
    fn reads_tokens_certificates_and_expiry_and_names_what_is_wrong() {
        let v1 = plugin("client.authentication.k8s.io/v1");
        let out = v1
            .parse(br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"abc","expirationTimestamp":"2030-01-02T03:04:05Z"}}"#)
            .unwrap();
        assert_eq!(out.token.as_deref(), Some("abc"));
        assert_eq!(out.expires.unwrap().year(), 2030);
        let wrong = v1
            .parse(br#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"abc"}}"#)
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("the kubeconfig asks for"), "{wrong}");
        let empty = v1
            .parse(br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(empty.contains("neither a token"), "{empty}");
        let garbage = v1.parse(b"Enter password:").unwrap_err().to_string();
        assert!(garbage.contains("not JSON"), "{garbage}");
        let half = v1
            .parse(br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(half.contains("together"), "{half}");
    }

    #[test]
    fn exec_info_says_not_interactive_and_carries_the_cluster_only_when_asked() {
        let mut p = plugin("client.authentication.k8s.io/v1beta1");
        let info: serde_json::Value = serde_json::from_str(&p.exec_info()).unwrap();
        assert_eq!(info["spec"]["interactive"], false);
        assert!(info["spec"].get("cluster").is_none());
        p.config.provide_cluster_info = true;
        let info: serde_json::Value = serde_json::from_str(&p.exec_info()).unwrap();
        assert_eq!(info["spec"]["cluster"]["server"], "https://x");
        assert_eq!(info["apiVersion"], "client.authentication.k8s.io/v1beta1");
    }

    #[test]
    fn stderr_is_one_printable_line() {
        assert_eq!(stderr_tail(b"bad\n\x1b[31mred\n"), "bad | \\x1b[31mred");
    }
}
