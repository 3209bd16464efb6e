//! `ztk agent`: reaches a cluster that accepts no inbound connection. Next to (or inside) the
//! cluster, it dials out to each gateway it is given and keeps one TLS connection to each (the
//! tunnel, `protocol`), over which the gateway opens a stream per relayed connection; the
//! agent relays each with the same relay engine and the cluster's credential (kubeconfig with
//! exec plugins and token files, or the pod's service account), exactly as a gateway would.
//! It makes no decision and never sees a user's token: authorization and audit stay on the
//! gateway.
//!
//! Identity: the first start trades a one-time enrollment token for a client certificate
//! (`identity`); it is kept 0600 in the data dir and replaced when a gateway sends a renewed
//! one. Reconnects back off exponentially (0.25 s doubling to 30 s, each wait a random 50–100 %
//! of its step); SIGTERM drains (GOAWAY: open calls finish, new ones go to another agent or
//! gateway) for up to 10 s.

pub mod identity;
pub mod protocol;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::gateway::clusters::Cluster;
use crate::relay::dial::Conn;
use crate::tls::Roots;
use identity::Identity;
use protocol::Hello;

/// The agent's version, as the gateway shows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long open calls may take to finish when the agent stops.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid gateway URL {0:?}: use https://HOST[:PORT]")]
    BadUrl(String),
    #[error("cannot read the gateway's CA {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster {cluster}: {message}")]
    Cluster { cluster: String, message: String },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("the gateway refused this agent: {0}")]
    Refused(String),
}

/// How the agent reaches its cluster.
#[derive(Debug, Clone)]
pub enum ClusterSource {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://HOST:PORT` of each gateway.
    pub gateways: Vec<String>,
    /// The gateways' CA (PEM).
    pub ca_file: PathBuf,
    pub cluster: String,
    /// The one-time enrollment token (read only when the agent has no certificate yet).
    pub token_file: Option<PathBuf>,
    pub source: ClusterSource,
    /// Where the key and certificate are kept.
    pub data_dir: PathBuf,
    /// How often each gateway is pinged; one that does not answer for as long is left, and
    /// dialled again.
    pub keepalive: Duration,
    /// An HTTP (CONNECT) or SOCKS5 proxy to reach the gateways through.
    pub proxy: Option<crate::relay::Proxy>,
}

/// One gateway's address.
#[derive(Debug, Clone)]
pub struct GatewayAddr {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// An HTTP (CONNECT) or SOCKS5 proxy on the way out (`--proxy`).
    pub proxy: Option<crate::relay::Proxy>,
}

impl GatewayAddr {
    pub fn parse(url: &str) -> Result<GatewayAddr, AgentError> {
        let bad = || AgentError::BadUrl(url.to_string());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?.trim_matches(['[', ']']);
        if !matches!(uri.path(), "" | "/") {
            return Err(bad());
        }
        Ok(GatewayAddr {
            url: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(443),
            proxy: None,
        })
    }

    fn server_name(&self) -> Result<rustls::pki_types::ServerName<'static>, AgentError> {
        rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| AgentError::BadUrl(self.url.clone()))
    }

    /// A TCP connection, then TLS with `tls` (10 s for both).
    async fn connect(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<tokio_rustls::client::TlsStream<Conn>, String> {
        let name = self.server_name().map_err(|e| e.to_string())?;
        let dial = async {
            let conn = match &self.proxy {
                None => {
                    let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
                    let _ = tcp.set_nodelay(true);
                    Conn::Tcp(tcp)
                }
                // The relay's own dialer: HTTP CONNECT or SOCKS5, as for a cluster's proxy-url.
                Some(proxy) => {
                    let host = if self.host.contains(':') {
                        format!("[{}]", self.host)
                    } else {
                        self.host.clone()
                    };
                    let target: http::Uri = format!("https://{host}:{}", self.port)
                        .parse()
                        .map_err(|_| format!("invalid gateway address {}", self.url))?;
                    let mut dialer = crate::relay::Dialer::new(Some(proxy.clone()));
                    tower_service::Service::call(&mut dialer, target)
                        .await
                        .map_err(|e| {
                            format!("cannot reach {} through proxy {proxy:?}: {e}", self.url)
                        })?
                        .into_inner()
                }
            };
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, conn)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", self.url))
        };
        tokio::time::timeout(Duration::from_secs(10), dial)
            .await
            .map_err(|_| format!("{} did not answer within 10s", self.url))?
    }
}

/// The agent's state shared by its tunnels.
struct Shared {
    cluster: Arc<Cluster>,
    identity: RwLock<Identity>,
    identity_dir: PathBuf,
    ca_pem: Vec<u8>,
    hello: RwLock<Hello>,
    /// Set when a gateway refuses the agent for good: the agent stops.
    refused: tokio::sync::watch::Sender<Option<String>>,
    keepalive: Duration,
}

impl Shared {
    fn tunnel_tls(&self) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        let identity = self
            .identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut tls = crate::tls::client_config(
            &Roots::Pem(self.ca_pem.clone()),
            Some((identity.cert_pem.as_bytes(), identity.key_pem.as_bytes())),
        )?;
        tls.alpn_protocols = vec![protocol::TUNNEL_ALPN.to_vec()];
        Ok(Arc::new(tls))
    }
}

/// Builds the cluster's upstream from the agent's source (the gateway's own code for it).
fn cluster(name: &str, source: &ClusterSource) -> Result<Cluster, AgentError> {
    let fail = |message: String| AgentError::Cluster {
        cluster: name.to_string(),
        message,
    };
    match source {
        ClusterSource::Kubeconfig { path, context } => {
            let kc = crate::kubeconfig::Kubeconfig::load(path).map_err(|e| fail(e.to_string()))?;
            let resolved = kc
                .resolve(path, context.as_deref(), false)
                .map_err(|e| fail(e.to_string()))?;
            crate::gateway::clusters::from_kubeconfig(
                name,
                format!("kubeconfig {}", path.display()),
                resolved,
            )
            .map_err(fail)
        }
        ClusterSource::InCluster => crate::gateway::clusters::in_cluster(name).map_err(fail),
    }
}

/// Runs the agent until `shutdown` resolves, then drains. Enrollment failures end it with an
/// error; gateways that cannot be reached are tried again forever.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let gateways = config
        .gateways
        .iter()
        .map(|g| {
            GatewayAddr::parse(g).map(|mut g| {
                g.proxy = config.proxy.clone();
                g
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ca_pem = std::fs::read(&config.ca_file).map_err(|source| AgentError::Ca {
        path: config.ca_file.clone(),
        source,
    })?;
    crate::tls::parse_certs(&ca_pem, "gateway CA")?;
    let cluster = Arc::new(cluster(&config.cluster, &config.source)?);
    let identity_dir = identity::dir(&config.data_dir, &config.cluster);
    let identity = match Identity::load(&identity_dir)? {
        Some(identity) => identity,
        None => {
            identity::enroll(
                &gateways,
                &ca_pem,
                &config.cluster,
                config.token_file.as_deref(),
                &identity_dir,
            )
            .await?
        }
    };
    tracing::info!(cluster = %config.cluster, expires = %identity.expires(), "agent identity loaded");
    let reaches = match &config.source {
        ClusterSource::Kubeconfig { path, .. } => format!("kubeconfig {}", path.display()),
        ClusterSource::InCluster => "in-cluster service account".into(),
    };
    let shared = Arc::new(Shared {
        cluster,
        identity: RwLock::new(identity),
        identity_dir,
        ca_pem,
        hello: RwLock::new(Hello {
            version: VERSION.into(),
            cluster: config.cluster.clone(),
            reaches,
            host: crate::fsutil::hostname(),
            kubernetes: None,
        }),
        refused: tokio::sync::watch::channel(None).0,
        keepalive: config.keepalive,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut refused = shared.refused.subscribe();
    let mut tasks = Vec::new();
    for gateway in gateways {
        tasks.push(tokio::spawn(tunnel_loop(
            shared.clone(),
            gateway,
            stopped.clone(),
        )));
    }
    let refusal = tokio::select! {
        _ = shutdown => None,
        seen = refused.wait_for(Option::is_some) => seen.ok().and_then(|r| r.clone()),
    };
    tracing::info!("stopping: draining the tunnels");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    match refusal {
        Some(message) => Err(AgentError::Refused(message)),
        None => Ok(()),
    }
}

/// Resolves once the agent is told to stop.
async fn stop_signal(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Keeps a tunnel to one gateway open until `stopped`.
async fn tunnel_loop(
    shared: Arc<Shared>,
    gateway: GatewayAddr,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stopped.borrow() {
            return;
        }
        let (refused_here, refusal) = tokio::sync::watch::channel(None);
        let served = tunnel_once(&shared, &gateway, stopped.clone(), Arc::new(refused_here)).await;
        let refused = refusal.borrow().clone();
        match served {
            // Refused by this gateway only (its config, say, mid-update): the others' tunnels
            // stay; this one is tried again after the longest wait.
            _ if refused.is_some() => {
                tracing::error!(
                    gateway = %gateway.url,
                    "refused: {}; trying again in about {}s",
                    refused.unwrap_or_default(),
                    MAX_BACKOFF.as_secs()
                );
                backoff = MAX_BACKOFF;
            }
            Ok(()) => {
                tracing::info!(gateway = %gateway.url, "tunnel closed");
                backoff = FIRST_BACKOFF;
            }
            Err(err) if *stopped.borrow() => {
                tracing::info!(gateway = %gateway.url, "tunnel closed while stopping: {err}")
            }
            Err(err) => tracing::warn!(gateway = %gateway.url, "tunnel failed: {err}"),
        }
        if *stopped.borrow() {
            return;
        }
        let wait = backoff.mul_f64(rand::random::<f64>() * 0.5 + 0.5);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_signal(&mut stopped) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One tunnel: connect, serve the gateway's streams until the connection ends (`Ok`) or
/// the agent stops (drained).
async fn tunnel_once(
    shared: &Arc<Shared>,
    gateway: &GatewayAddr,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    refused_here: Arc<tokio::sync::watch::Sender<Option<String>>>,
) -> Result<(), String> {
    let tls = shared.tunnel_tls().map_err(|e| e.to_string())?;
    let stream = gateway.connect(tls).await?;
    if stream.get_ref().1.alpn_protocol() != Some(protocol::TUNNEL_ALPN) {
        return Err(format!(
            "{} does not offer the agent tunnel: is it a ztk gateway with `agent = true` clusters?",
            gateway.url
        ));
    }
    // Ask the cluster's version for the hello (the gateway shows it).
    if let Ok(Ok(version)) = tokio::time::timeout(
        Duration::from_secs(5),
        crate::gateway::clusters::probe(&shared.cluster),
    )
    .await
    {
        shared
            .hello
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .kubernetes = Some(version);
    }
    let mut conn = crate::tunnel::server_builder()
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| {
            format!(
                "the tunnel's HTTP/2 handshake with {} failed: {e}",
                gateway.url
            )
        })?;
    tracing::info!(gateway = %gateway.url, cluster = %shared.cluster.name, "tunnel open");
    let mut ping = conn.ping_pong();
    let mut next_ping = tokio::time::Instant::now() + shared.keepalive;
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let deadline = draining.unwrap_or(next_ping);
        tokio::select! {
            accepted = conn.accept() => match accepted {
                None => return Ok(()),
                Some(Err(err)) => return Err(format!("the tunnel to {} broke: {err}", gateway.url)),
                Some(Ok((req, respond))) => {
                    tokio::spawn(serve_stream(shared.clone(), req, respond, stopped.clone(), refused_here.clone()));
                }
            },
            _ = stop_signal(&mut stopped), if draining.is_none() => {
                conn.graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + DRAIN);
            }
            _ = tokio::time::sleep_until(deadline) => {
                if draining.is_some() {
                    return Ok(());
                }
                next_ping = tokio::time::Instant::now() + shared.keepalive;
                if let Some(ping) = ping.as_mut() {
                    // The pong arrives through `accept` driving the connection: wait for it
                    // beside it.
                    let pinged = ping.ping(h2::Ping::opaque());
                    tokio::pin!(pinged);
                    let limit = tokio::time::sleep(shared.keepalive);
                    tokio::pin!(limit);
                    loop {
                        tokio::select! {
                            result = &mut pinged => {
                                if let Err(err) = result {
                                    return Err(format!("{} did not answer a ping: {err}", gateway.url));
                                }
                                break;
                            }
                            accepted = conn.accept() => match accepted {
                                None => return Ok(()),
                                Some(Err(err)) => return Err(format!("the tunnel to {} broke: {err}", gateway.url)),
                                Some(Ok((req, respond))) => {
                                    tokio::spawn(serve_stream(shared.clone(), req, respond, stopped.clone(), refused_here.clone()));
                                }
                            },
                            _ = &mut limit => {
                                return Err(format!("{} did not answer a ping within {}s", gateway.url, shared.keepalive.as_secs()));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One stream the gateway opened.
async fn serve_stream(
    shared: Arc<Shared>,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    refused_here: Arc<tokio::sync::watch::Sender<Option<String>>>,
) {
    let answer = |status: StatusCode| {
        Response::builder()
            .status(status)
            .body(())
            .expect("a status answer")
    };
    match (req.method().clone(), req.uri().path()) {
        (http::Method::POST, protocol::STREAM_PATH) => {
            let Ok(send) = respond.send_response(answer(StatusCode::OK), false) else {
                return;
            };
            let stream = crate::tunnel::Stream::accepted(send, req.into_body());
            let cluster = shared.cluster.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let cluster = cluster.clone();
                    async move { Ok::<_, std::convert::Infallible>(relay(&cluster, req).await) }
                });
            // HTTP/1.1 (short calls, upgrades) or HTTP/2 (the gateway's watches and followed
            // logs, many on one stream), told apart by the HTTP/2 preface.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(crate::tunnel::MAX_STREAMS);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Draining: an idle kept-alive connection closes now, a busy one after its answer.
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop_signal(&mut stopped) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!("a tunnel stream ended: {err}");
            }
        }
        (http::Method::PUT, protocol::REFUSED_PATH) => {
            let body = crate::tunnel::read_all(req.into_body(), protocol::MAX_BODY).await;
            let refused: protocol::Refused = body
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(protocol::Refused {
                    message: "(no reason given)".into(),
                    revoked: false,
                });
            let _ = respond.send_response(answer(StatusCode::NO_CONTENT), true);
            let mut message = crate::audit::format::printable(&refused.message).into_owned();
            if !refused.revoked {
                let _ = refused_here.send(Some(message));
                return;
            }
            // Revoked: useless from now on, with every gateway (they share the database); the
            // next start enrolls with a new token.
            match identity::forget(&shared.identity_dir) {
                Ok(()) => message.push_str(&format!(
                    " (the agent's certificate was removed from {}: start it again with a new --token-file)",
                    shared.identity_dir.display()
                )),
                Err(err) => message.push_str(&format!(" ({err})")),
            }
            tracing::error!("{message}");
            let _ = shared.refused.send(Some(message));
        }
        (http::Method::GET, protocol::HELLO_PATH) => {
            let hello = shared
                .hello
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let body = serde_json::to_vec(&hello).unwrap_or_default();
            if let Ok(mut send) = respond.send_response(answer(StatusCode::OK), false) {
                let _ = send.send_data(Bytes::from(body), true);
            }
        }
        (http::Method::PUT, protocol::CERTIFICATE_PATH) => {
            let status = match crate::tunnel::read_all(req.into_body(), protocol::MAX_BODY).await {
                Ok(pem) => match take_renewed(&shared, &pem) {
                    Ok(()) => StatusCode::NO_CONTENT,
                    Err(err) => {
                        tracing::error!("refused a renewed certificate: {err}");
                        StatusCode::BAD_REQUEST
                    }
                },
                Err(_) => StatusCode::BAD_REQUEST,
            };
            let _ = respond.send_response(answer(status), true);
        }
        _ => {
            let _ = respond.send_response(answer(StatusCode::NOT_FOUND), true);
        }
    }
}

/// Keeps a renewed certificate for the next connections (it must be for the agent's key).
fn take_renewed(shared: &Shared, pem: &[u8]) -> Result<(), identity::IdentityError> {
    let current = shared
        .identity
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let renewed = current.renewed(pem)?;
    renewed.save(&shared.identity_dir)?;
    tracing::info!(expires = %renewed.expires(), "certificate renewed");
    *shared.identity.write().unwrap_or_else(|e| e.into_inner()) = renewed;
    Ok(())
}

/// Relays one request of the gateway's to the cluster, with the cluster's credential.
async fn relay(
    cluster: &Cluster,
    req: http::Request<hyper::body::Incoming>,
) -> Response<crate::body::Body> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    // Only to choose the connection kind (a watch shares HTTP/2 with the others); what may be
    // done was decided by the gateway.
    let long_lived = crate::request_info::ParsedRequest::parse(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
    )
    .map(|p| p.long_lived)
    .unwrap_or(false);
    let mut req = req.map(crate::body::boxed);
    crate::relay::drop_hop_by_hop(&mut req);
    crate::relay::relay(
        &cluster.upstream,
        req,
        &path_and_query,
        long_lived,
        http::HeaderMap::new(),
        None,
        |_| {},
    )
    .await
}
