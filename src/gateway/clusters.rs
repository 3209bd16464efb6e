//! Reaching the clusters: each configured cluster becomes a relay `Upstream` holding the
//! gateway's own credential for it. The sandbox is started in-process on a loopback TLS port
//! and reached exactly like a real cluster, so both take the same path.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;

use super::config::{ClusterKind, GatewayConfig};
use crate::relay::Upstream;
use crate::tls::{self, Roots};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("gateway config {config}: cluster {name:?}: {message}")]
    Setup {
        config: String,
        name: String,
        message: String,
    },
}

pub struct Cluster {
    pub name: String,
    /// Where it is, for `ztk status` and errors.
    pub description: String,
    pub upstream: Upstream,
    /// Send `Impersonate-User`/`Impersonate-Group` for the user (config `impersonate = true`).
    pub impersonate: bool,
}

pub async fn connect(
    config: &GatewayConfig,
) -> Result<BTreeMap<String, Arc<Cluster>>, ClusterError> {
    let mut out = BTreeMap::new();
    for c in &config.clusters {
        let fail = |message: String| ClusterError::Setup {
            config: config.path.display().to_string(),
            name: c.name.clone(),
            message,
        };
        let mut cluster = match &c.kind {
            ClusterKind::Kubeconfig { path, context } => {
                let kc =
                    crate::kubeconfig::Kubeconfig::load(path).map_err(|e| fail(e.to_string()))?;
                let resolved = kc
                    .resolve(path, context.as_deref())
                    .map_err(|e| fail(e.to_string()))?;
                let roots = match resolved.ca_pem {
                    Some(pem) => Roots::Pem(pem),
                    None => Roots::System,
                };
                let client_cert = resolved
                    .client_cert_pem
                    .as_deref()
                    .zip(resolved.client_key_pem.as_deref());
                let tls =
                    tls::client_config(&roots, client_cert).map_err(|e| fail(e.to_string()))?;
                let auth = match resolved.bearer_token {
                    Some(token) => Some(
                        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                            fail("the token holds characters not allowed in a header".into())
                        })?,
                    ),
                    None => None,
                };
                let upstream = Upstream::new(
                    format!("cluster {} at {}", c.name, resolved.server),
                    &resolved.server,
                    tls,
                    auth,
                )
                .map_err(|e| fail(e.to_string()))?;
                Cluster {
                    name: c.name.clone(),
                    description: resolved.server.clone(),
                    upstream,
                    impersonate: false,
                }
            }
            ClusterKind::Sandbox => start_sandbox(&c.name)
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        cluster.impersonate = c.impersonate;
        out.insert(c.name.clone(), Arc::new(cluster));
    }
    Ok(out)
}

/// Starts the built-in sandbox on 127.0.0.1 with its own CA and bearer token.
async fn start_sandbox(name: &str) -> anyhow::Result<Cluster> {
    let server = crate::sandbox::server::start(([127, 0, 0, 1], 0).into()).await?;
    let client_tls = tls::client_config(&Roots::Pem(server.ca_pem.clone().into_bytes()), None)?;
    let upstream = Upstream::new(
        format!("the sandbox cluster {name}"),
        &server.url(),
        client_tls,
        Some(HeaderValue::from_str(&format!("Bearer {}", server.token))?),
    )?;
    Ok(Cluster {
        name: name.to_string(),
        description: format!("built-in sandbox ({})", server.url()),
        upstream,
        impersonate: false,
    })
}
