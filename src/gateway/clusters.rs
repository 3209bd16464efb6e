//! Reaching the clusters: each configured cluster becomes a relay `Upstream` holding the
//! gateway's own credential for it (kept current by `cluster_auth`). The sandbox is started
//! in-process on a loopback TLS port and reached exactly like a real cluster, so both take the
//! same path.
//!
//! Only a config that cannot work stops the gateway (an unreadable kubeconfig, a missing
//! context, `insecure-skip-tls-verify` without `allow_insecure`, an interactive-only exec
//! plugin). A cluster that cannot be reached, or whose credential cannot be had, is logged at
//! start and its calls are answered `503` naming the cluster and the error, until it works.
//! Each cluster's state is written to `DATA_DIR/clusters.json` for
//! `ztk gateway clusters status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::config::{ClusterKind, GatewayConfig};
use crate::cluster_auth::{AuthStatus, ClusterAuth, ExecPlugin};
use crate::kubeconfig::CredentialSource;
use crate::relay::{Reach, Upstream};
use crate::tls::{self, Roots, ServerTrust};

/// Where a pod's service account is mounted.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The status file, in the data dir.
const STATUS_FILE: &str = "clusters.json";

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
    pub auth: Arc<ClusterAuth>,
    /// What the status shows of how it is reached.
    pub reach: ReachInfo,
    /// The cluster's version, from the probe at start.
    pub version: Mutex<Option<String>>,
    /// An agent cluster: the tunnels it is reached through.
    pub agents: Option<Arc<super::agents::Agents>>,
}

/// How a cluster is reached, for the status (no secret in it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReachInfo {
    /// The config's source: "kubeconfig FILE context C", "in-cluster service account", ...
    pub source: String,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// TLS verification off (`insecure-skip-tls-verify` with `allow_insecure = true`).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub impersonate: bool,
}

pub async fn connect(
    config: &GatewayConfig,
    agents: Option<&Arc<super::agents::Agents>>,
) -> Result<BTreeMap<String, Arc<Cluster>>, ClusterError> {
    let mut out = BTreeMap::new();
    for c in &config.clusters {
        let fail = |message: String| ClusterError::Setup {
            config: config.path.display().to_string(),
            name: c.name.clone(),
            message,
        };
        let mut cluster = match &c.kind {
            ClusterKind::Kubeconfig {
                path,
                context,
                allow_insecure,
            } => {
                let kc =
                    crate::kubeconfig::Kubeconfig::load(path).map_err(|e| fail(e.to_string()))?;
                let resolved = kc
                    .resolve(path, context.as_deref(), *allow_insecure)
                    .map_err(|e| fail(e.to_string()))?;
                from_kubeconfig(&c.name, c.source(), resolved).map_err(fail)?
            }
            ClusterKind::InCluster => in_cluster(&c.name).map_err(fail)?,
            ClusterKind::Sandbox => start_sandbox(&c.name)
                .await
                .map_err(|e| fail(e.to_string()))?,
            ClusterKind::Agent => {
                let agents = agents
                    .ok_or_else(|| fail("agent clusters need the agent CA".into()))?
                    .clone();
                through_agent(&c.name, agents).map_err(fail)?
            }
        };
        cluster.impersonate = c.impersonate;
        cluster.reach.impersonate = c.impersonate;
        out.insert(c.name.clone(), Arc::new(cluster));
    }
    Ok(out)
}

pub(crate) fn from_kubeconfig(
    name: &str,
    source: String,
    resolved: crate::kubeconfig::ResolvedCluster,
) -> Result<Cluster, String> {
    let trust = if resolved.insecure {
        ServerTrust::Insecure
    } else {
        match &resolved.ca_pem {
            Some(pem) => ServerTrust::Verify(Roots::Pem(pem.clone())),
            None => ServerTrust::Verify(Roots::System),
        }
    };
    // The kubeconfig's proxy-url, else the environment's HTTPS_PROXY / NO_PROXY as kubectl reads them.
    let (proxy, shown_proxy) = match &resolved.proxy_url {
        Some(url) => {
            let proxy = crate::relay::Proxy::parse(url).map_err(|e| e.to_string())?;
            let shown = format!("{proxy:?}");
            (Some(proxy), Some(shown))
        }
        None => {
            match crate::relay::dial::proxy_from_env(&resolved.server).map_err(|e| e.to_string())? {
                Some((proxy, var)) => {
                    let shown = format!("{proxy:?} (from {var})");
                    (Some(proxy), Some(shown))
                }
                None => (None, None),
            }
        }
    };
    let kind = resolved.credential.kind(resolved.client_cert.is_some());
    let auth = match &resolved.credential {
        CredentialSource::None => ClusterAuth::fixed(kind, None),
        CredentialSource::Token(token) => ClusterAuth::fixed(
            kind,
            Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token holds characters not allowed in a header")?,
            ),
        ),
        CredentialSource::TokenFile(path) => ClusterAuth::token_file(kind, path.clone()),
        CredentialSource::Exec { config, dir } => {
            ClusterAuth::exec(kind, ExecPlugin::new(config.clone(), dir, &resolved))
        }
    };
    if let Some((cert, _)) = &resolved.client_cert {
        // Fails early on a certificate that cannot be used at all.
        tls::parse_certs(cert, "client certificate").map_err(|e| e.to_string())?;
    }
    let reach = Reach {
        trust: Some(trust),
        client_cert: resolved.client_cert.clone(),
        server_name: resolved.tls_server_name.clone(),
        proxy: proxy.clone(),
        opener: None,
    };
    let auth = Arc::new(auth);
    let upstream = Upstream::cluster(
        format!("cluster {name} at {}", resolved.server),
        &resolved.server,
        reach,
        auth.clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Cluster {
        name: name.to_string(),
        description: resolved.server.clone(),
        upstream,
        impersonate: false,
        auth,
        reach: ReachInfo {
            source,
            server: resolved.server,
            proxy: shown_proxy,
            tls_server_name: resolved.tls_server_name,
            insecure: resolved.insecure,
            impersonate: false,
        },
        version: Mutex::new(None),
        agents: None,
    })
}

/// The pod's service account, as client-go's `rest.InClusterConfig` reads it; the token is read
/// again when it rotates.
pub(crate) fn in_cluster(name: &str) -> Result<Cluster, String> {
    let dir = std::env::var_os("ZTK_SERVICEACCOUNT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
    let (host, port) = match (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) {
        (Ok(host), Ok(port)) if !host.is_empty() && !port.is_empty() => (host, port),
        _ => {
            return Err(
                "`incluster = true`, but KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: is the gateway running in a pod? Elsewhere give a kubeconfig"
                    .into(),
            )
        }
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let server = format!("https://{host}:{port}");
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| {
        format!(
            "`incluster = true`: cannot read the service account's CA {}: {e}",
            ca_path.display()
        )
    })?;
    let token_path = dir.join("token");
    let resolved = crate::kubeconfig::ResolvedCluster {
        server,
        ca_pem: Some(ca),
        insecure: false,
        tls_server_name: None,
        proxy_url: None,
        credential: CredentialSource::TokenFile(token_path.clone()),
        client_cert: None,
    };
    let mut cluster = from_kubeconfig(name, "in-cluster service account".into(), resolved)?;
    cluster.description = format!("{} (in-cluster)", cluster.description);
    Ok(cluster)
}

/// A cluster reached through its agent's tunnel: no address, no credential on the gateway.
fn through_agent(name: &str, agents: Arc<super::agents::Agents>) -> Result<Cluster, String> {
    let opener = Arc::new(super::agents::AgentOpener {
        agents: agents.clone(),
        cluster: name.to_string(),
    });
    let upstream = Upstream::through(
        format!("cluster {name} (through its agent)"),
        &format!("{name}.agent.ztk"),
        opener,
    )
    .map_err(|e| e.to_string())?;
    Ok(Cluster {
        name: name.to_string(),
        description: "through its agent (ztk agent)".into(),
        upstream,
        impersonate: false,
        auth: Arc::new(ClusterAuth::fixed("the agent's", None)),
        reach: ReachInfo {
            source: "ztk agent (tunnel)".into(),
            server: "(the agent's cluster)".into(),
            ..Default::default()
        },
        version: Mutex::new(None),
        agents: Some(agents),
    })
}

/// Starts the built-in sandbox on 127.0.0.1 with its own CA and bearer token.
async fn start_sandbox(name: &str) -> anyhow::Result<Cluster> {
    let server = crate::sandbox::server::start(([127, 0, 0, 1], 0).into()).await?;
    let client_tls = tls::client_config(&Roots::Pem(server.ca_pem.clone().into_bytes()), None)?;
    let authorization = HeaderValue::from_str(&format!("Bearer {}", server.token))?;
    let upstream = Upstream::new(
        format!("the sandbox cluster {name}"),
        &server.url(),
        client_tls,
        Some(authorization.clone()),
    )?
    .with_own_credential();
    Ok(Cluster {
        name: name.to_string(),
        description: format!("built-in sandbox ({})", server.url()),
        upstream,
        impersonate: false,
        auth: Arc::new(ClusterAuth::fixed("token", Some(authorization))),
        reach: ReachInfo {
            source: "built-in sandbox".into(),
            server: server.url(),
            ..Default::default()
        },
        version: Mutex::new(None),
        agents: None,
    })
}

/// Asks each cluster for its version, in the background: reachable or not, the gateway serves;
/// the log and the status say which.
pub fn probe_all(clusters: &BTreeMap<String, Arc<Cluster>>) {
    for cluster in clusters.values() {
        if cluster.agents.is_some() {
            // Reported by its agent when it connects.
            continue;
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            match probe(&cluster).await {
                Ok(version) => {
                    tracing::info!(cluster = %cluster.name, "reachable: Kubernetes {version}");
                    *cluster.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
                }
                Err(err) => {
                    tracing::warn!(
                        cluster = %cluster.name,
                        "not reachable at start, its calls are answered 503 until it is: {err}"
                    );
                    eprintln!(
                        "ztk gateway: cluster {} is not reachable: {err}",
                        cluster.name
                    );
                }
            }
        });
    }
}

/// `GET /version` with the gateway's credential.
pub(crate) async fn probe(cluster: &Cluster) -> Result<String, String> {
    let req = http::Request::get("/version")
        .body(crate::body::empty())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        crate::relay::relay(
            &cluster.upstream,
            req,
            "/version",
            false,
            http::HeaderMap::new(),
            None,
            |_| {},
        ),
    )
    .await
    .map_err(|_| "no answer to GET /version within 30s".to_string())?;
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .map_err(|_| "GET /version: the body did not arrive within 30s".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        let message = value["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                crate::audit::format::printable(&String::from_utf8_lossy(
                    &body[..body.len().min(200)],
                ))
                .into_owned()
            });
        return Err(format!("GET /version answered {status}: {message}"));
    }
    Ok(value["gitVersion"]
        .as_str()
        .unwrap_or("(unknown version)")
        .to_string())
}

/// One cluster in `clusters.json` and `ztk gateway clusters status -o json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    #[serde(flatten)]
    pub reach: ReachInfo,
    pub credential: AuthStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// RFC 3339: the last call the cluster answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<String>,
    /// Calls relayed now (open watches and exec sessions included).
    #[serde(default)]
    pub in_flight: u64,
    /// An agent cluster's tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<super::agents::AgentStatus>,
}

/// `DATA_DIR/clusters.json`, written by the running gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusFile {
    pub pid: u32,
    pub updated: String,
    pub clusters: Vec<ClusterStatus>,
}

impl StatusFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(STATUS_FILE)
    }
}

pub(crate) fn rfc3339_us(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Cluster {
    pub fn status(&self) -> ClusterStatus {
        let (ok, err) = self.upstream.health().snapshot();
        let mut credential = self.auth.status();
        // A credential error already shows as the cluster's last error.
        if credential.last_error.is_some() && err.is_some() {
            credential.last_error = None;
        }
        let agent = self.agents.as_ref().map(|a| a.status(&self.name));
        let reported = self
            .agents
            .as_ref()
            .and_then(|a| a.kubernetes_version(&self.name));
        ClusterStatus {
            name: self.name.clone(),
            reach: self.reach.clone(),
            credential,
            in_flight: self.upstream.health().in_flight(),
            agent,
            version: reported.or_else(|| {
                self.version
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }),
            last_success: ok.map(rfc3339_us),
            last_error_time: err.as_ref().map(|(at, _)| rfc3339_us(*at)),
            last_error: err.map(|(_, message)| message),
        }
    }
}

/// Writes the clusters' status to the data dir when it changes (at most every second), and
/// every 30 seconds regardless, so that a reader sees the gateway alive.
pub fn write_status_loop(
    clusters: BTreeMap<String, Arc<Cluster>>,
    data_dir: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = StatusFile::path(&data_dir);
        let mut last: Option<Vec<ClusterStatus>> = None;
        let mut last_write = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now: Vec<ClusterStatus> = clusters.values().map(|c| c.status()).collect();
            let changed = last
                .as_ref()
                .is_none_or(|l| serde_json::to_string(l).ok() != serde_json::to_string(&now).ok());
            if !changed && last_write.elapsed() < Duration::from_secs(30) {
                continue;
            }
            let file = StatusFile {
                pid: std::process::id(),
                updated: rfc3339_us(crate::audit::model::now_us()),
                clusters: now.clone(),
            };
            let text = serde_json::to_vec_pretty(&file).unwrap_or_default();
            if let Err(err) = crate::fsutil::write_private(&path, &text) {
                tracing::warn!("cannot write {}: {err}", path.display());
            }
            last = Some(now);
            last_write = std::time::Instant::now();
        }
    })
}
