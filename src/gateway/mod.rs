//! The zero-trust gateway: authenticates every Kubernetes request, authorizes it in one place,
//! forwards it to the cluster with the gateway's own credential, and writes the authoritative
//! audit record of every call, denied ones included.

pub mod access;
pub mod agents;
pub mod api;
pub mod audit;
pub mod authz;
pub mod bindings;
pub mod clusters;
pub mod commits;
pub mod config;
pub mod ingest;
pub mod migrate;
pub mod owners;
pub mod rbac;
pub mod throttle;
pub mod users;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::audit::{ApiCall, AuditSink, AuditStore, AuditWriter};
use crate::body::{self, Body};
use crate::protocol::{self, COMMAND_ID_HEADER, REQUEST_ID_HEADER};
use crate::request_info::ParsedRequest;
use crate::tls;
use authz::{Decision, Impersonation};
use clusters::Cluster;
use config::{GatewayConfig, TlsSource};
use rbac::{Identity, Policy};
use users::{Session, TokenRejection, UserStore};

/// How often the gateway looks for binding changes made by other processes.
const POLICY_POLL: Duration = Duration::from_millis(250);
/// How often open streams are checked against revocations and expiry.
const STREAM_CHECK: Duration = Duration::from_secs(1);

pub struct Gateway {
    pub users: Arc<UserStore>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub audit: AuditSink,
    pub audit_store: AuditStore,
    /// Stores the clients' shipped batches (`ingest`).
    pub ingestor: Arc<crate::audit::ingest::Ingestor>,
    pub session_ttl_us: i64,
    /// Members of these groups may read everyone's audit records.
    pub admin_groups: Vec<String>,
    pub max_sessions_per_user: u32,
    /// Whether requests are refused while the audit store does not take writes.
    pub audit_mode: config::AuditMode,
    /// Signs the audit chain's checkpoints.
    pub audit_key: Arc<crate::audit::chain::SigningKey>,
    /// The public keys checkpoints may be signed with: this gateway's and the other gateways'
    /// on the same database (`audit_checkpoint_keys`).
    pub audit_keys: Vec<Vec<u8>>,
    /// Roles and bindings, read by every request without touching the database; replaced
    /// whole when the bindings table changes.
    policy: RwLock<Arc<Policy>>,
    /// The custom roles of the config, and the stored ones the policy was last made with.
    config_roles: Vec<rbac::Role>,
    stored_roles: Mutex<Vec<rbac::Role>>,
    /// Open relayed exchanges (watches, logs, exec…), so that a revoked session's streams
    /// can be closed: id -> (session id, cancel switch).
    streams: Mutex<HashMap<u64, (String, tokio::sync::watch::Sender<bool>)>>,
    next_stream: AtomicU64,
    /// Who each command id belongs to (`Ztk-Command-Id` is taken only from its owner).
    pub command_owners: owners::CommandOwners,
    /// Failed logins per user name and source address.
    pub login_throttle: throttle::LoginThrottle,
    /// What each user may still ship this minute.
    pub ingest_quota: throttle::IngestQuota,
    /// The web console's state (cached suggestions).
    pub console: crate::console::State,
    /// The web shell: its settings, open shells and the running commands' credentials.
    pub shell: Arc<crate::shell::State>,
    /// Single sign-on (`[oidc]`), if configured.
    pub sso: Option<Arc<crate::oidc::sso::Sso>>,
    /// Whether users may sign in with a password (`password_login`).
    pub password_login: bool,
    /// Agent clusters' enrollment and tunnels, when the config has any (`agent = true`).
    pub agents: Option<Arc<agents::Agents>>,
}

/// Where a Kubernetes request came in: the gateway's port (session tokens) or the web shell's
/// loopback port (only the credentials of running web-shell commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Network,
    Shell,
}

/// A started gateway: its address and CA, and the handles that keep it running.
pub struct Running {
    pub addr: SocketAddr,
    pub ca_file: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
    pub gateway: Arc<Gateway>,
    writer: AuditWriter,
    server: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
    checkpoints: tokio::task::JoinHandle<()>,
    cluster_status: tokio::task::JoinHandle<()>,
    rollups: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    shell_port: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Serves until the task ends (it does not on its own).
    pub async fn wait(self) {
        let _ = self.server.await;
    }

    /// Stops accepting, flushes queued audit records, signs the final head, and returns the
    /// writer's counts (for the shutdown summary).
    pub async fn shutdown(self) -> crate::audit::store::WriterStatus {
        self.server.abort();
        self.watcher.abort();
        self.checkpoints.abort();
        self.cluster_status.abort();
        self.rollups.abort();
        self.reconciler.abort();
        if let Some(shell) = &self.shell_port {
            shell.abort();
        }
        let (store, key) = (
            self.gateway.audit_store.clone(),
            self.gateway.audit_key.clone(),
        );
        // Connections still open (a watch, a kept-alive client) hold audit sinks, so the writer
        // cannot see its channel close: flush what is queued, then wait for the close only a
        // little, rather than forever.
        let flush = self.gateway.audit.clone();
        drop(self.gateway);
        let writer = self.writer;
        let stats = writer.stats().clone();
        // Waiting is blocking work: off the runtime's threads (one alone with `worker_threads = 1`).
        let finish = move || {
            if !flush.flush(Duration::from_secs(10)) {
                eprintln!("ztk gateway: the audit writer did not confirm its last records");
            }
            drop(flush);
            let (done, closed) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                writer.close();
                let _ = done.send(());
            });
            if closed.recv_timeout(Duration::from_secs(3)).is_err() {
                tracing::info!(
                    "connections still open at shutdown; their queued records are flushed"
                );
            }
            if let Err(err) = store.checkpoint(&key) {
                tracing::error!("could not sign the final audit checkpoint: {err}");
            }
            stats.status()
        };
        match tokio::task::spawn_blocking(finish).await {
            Ok(status) => status,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}

/// Starts the gateway described by `config`.
pub async fn start(config: &GatewayConfig) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    crate::fsutil::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let (server_tls, ca_file) = load_tls(config)?;
    let ca_fingerprint = match &ca_file {
        Some(path) => Some(tls::fingerprint(&std::fs::read_to_string(path)?)?),
        None => None,
    };
    let users = Arc::new(config.open_user_store()?);
    let stored_roles = users.list_roles()?;
    let policy = Policy::new(
        &[config.roles.clone(), stored_roles.clone()].concat(),
        users.list_bindings()?,
    );
    let audit_store = config.open_audit_store()?;
    let writer_config = crate::audit::store::WriterConfig {
        wait_when_full: config.audit_mode.fail_closed(),
        ..Default::default()
    };
    let (audit, writer) = audit_store.start_writer_with(8192, writer_config)?;
    let audit_key = Arc::new(crate::audit::chain::SigningKey::load_or_create(
        &config.audit_key_path(),
    )?);
    let command_owners = owners::CommandOwners::default();
    let since = crate::audit::model::now_us() - owners::KEEP_US;
    for (id, user, used_us) in audit_store.command_owners_since(since, 100_000)? {
        command_owners.claim(id, &user, used_us);
    }
    let agent_clusters: Vec<String> = config
        .clusters
        .iter()
        .filter(|c| matches!(c.kind, config::ClusterKind::Agent))
        .map(|c| c.name.clone())
        .collect();
    let agents = if agent_clusters.is_empty() {
        None
    } else {
        let users = users.clone();
        let (ttl, keepalive) = (config.agent_certificate_ttl, config.agent_keepalive);
        Some(Arc::new(
            tokio::task::spawn_blocking(move || {
                agents::Agents::new(users, agent_clusters, ttl, keepalive)
            })
            .await??,
        ))
    };
    let clusters = clusters::connect(config, agents.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (key `listen` in {}); is another gateway running there?",
                config.listen,
                config.path.display()
            )
        })?;
    let addr = listener.local_addr()?;
    let gateway = Arc::new(Gateway {
        users: users.clone(),
        clusters,
        audit,
        ingestor: Arc::new(crate::audit::ingest::Ingestor::new(audit_store.clone())),
        audit_store,
        session_ttl_us: config.session_ttl_us,
        admin_groups: config.admin_groups.clone(),
        max_sessions_per_user: config.max_sessions_per_user,
        audit_mode: config.audit_mode,
        audit_keys: std::iter::once(audit_key.public_key().to_vec())
            .chain(config.audit_checkpoint_keys.iter().cloned())
            .collect(),
        audit_key: audit_key.clone(),
        policy: RwLock::new(Arc::new(policy)),
        config_roles: config.roles.clone(),
        stored_roles: Mutex::new(stored_roles),
        streams: Mutex::new(HashMap::new()),
        next_stream: AtomicU64::new(0),
        command_owners,
        login_throttle: throttle::LoginThrottle::new(users.clone()),
        ingest_quota: throttle::IngestQuota::new(
            config.limits.ingest_records_per_minute,
            config.limits.ingest_bytes_per_minute,
        ),
        console: crate::console::State::default(),
        shell: Arc::new(crate::shell::State::new(
            config.shell.clone(),
            &config.data_dir,
        )),
        sso: match &config.oidc {
            Some(oidc) => Some(Arc::new(crate::oidc::sso::Sso::new(
                oidc.clone(),
                users.clone(),
            )?)),
            None => None,
        },
        password_login: config.password_login,
        agents: agents.clone(),
    });
    if let Some(sso) = gateway.sso.clone() {
        // Discovered now so that a wrong issuer shows in the log at start; a provider that is
        // down is tried again when someone signs in (password sign-in keeps working).
        tokio::spawn(async move {
            let _ = sso.provider().await;
        });
    }
    let shell_port = match &gateway.shell.kubectl {
        Ok(kubectl) => {
            tracing::info!(kubectl = %kubectl.display(), "web shell on");
            Some(start_shell_port(gateway.clone(), config).await?)
        }
        Err(why) => {
            tracing::info!("web shell off: {why}");
            None
        }
    };
    let watcher = tokio::spawn(gateway.clone().watch());
    let checkpoints = tokio::spawn(audit::checkpoint_loop(
        gateway.audit_store.clone(),
        audit_key,
        config.audit_checkpoint_interval,
    ));
    let rollups = tokio::spawn(audit::rollup_loop(gateway.audit_store.clone()));
    let reconciler = tokio::spawn(audit::reconcile_loop(
        gateway.audit_store.clone(),
        gateway.audit.clone(),
        config.audit_reconcile_after,
    ));
    clusters::probe_all(&gateway.clusters);
    let cluster_status =
        clusters::write_status_loop(gateway.clusters.clone(), config.data_dir.clone());
    let handler_gateway = gateway.clone();
    let limits = crate::serve::Limits {
        header_read_timeout: config.limits.header_read_timeout,
        idle_timeout: Some(config.limits.idle_timeout),
        max_per_address: config.limits.max_connections_per_address,
    };
    let side_door = match &agents {
        Some(agents) => {
            let tunnels = agents.clone();
            Some(crate::serve::SideDoor {
                alpn: crate::agent::protocol::TUNNEL_ALPN,
                tls: agents.ca().tunnel_tls(&server_tls)?,
                handler: Arc::new(move |stream, addr| {
                    Box::pin(tunnels.clone().serve_tunnel(stream, addr))
                }),
            })
        }
        None => None,
    };
    let server = tokio::spawn(crate::serve::serve_tls_routed(
        listener,
        server_tls,
        limits,
        move |req, peer| {
            let gateway = handler_gateway.clone();
            async move { gateway.handle(req, peer.addr).await }
        },
        side_door,
    ));
    Ok(Running {
        addr,
        ca_file,
        ca_fingerprint,
        gateway,
        writer,
        server,
        watcher,
        checkpoints,
        cluster_status,
        rollups,
        reconciler,
        shell_port,
    })
}

/// The web shell's loopback port: kubectl run by the shell calls back here, with a TLS
/// identity made for this process (its CA goes into each command's kubeconfig) and only the
/// credentials of running shell commands accepted.
async fn start_shell_port(
    gateway: Arc<Gateway>,
    config: &GatewayConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    let ca = tls::Ca::generate("ztk web shell CA")?;
    let leaf = ca.issue_server(&["127.0.0.1".to_string()])?;
    let server_tls = tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot open the web shell's loopback port")?;
    gateway.shell.set_port(crate::shell::ShellPort {
        port: listener.local_addr()?.port(),
        ca_pem: ca.cert_pem(),
    });
    let limits = crate::serve::Limits {
        header_read_timeout: config.limits.header_read_timeout,
        idle_timeout: Some(config.limits.idle_timeout),
        max_per_address: 0,
    };
    Ok(tokio::spawn(crate::serve::serve_tls_with(
        listener,
        server_tls,
        limits,
        move |req, peer| {
            let gateway = gateway.clone();
            async move {
                let req = req.map(body::boxed);
                if req.uri().path().starts_with(protocol::KUBE_PREFIX) {
                    gateway.kube(req, peer.addr, Via::Shell).await
                } else {
                    body::status_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "ztk: the web shell's port serves only its commands' Kubernetes calls",
                    )
                }
            }
        },
    )))
}

/// Loads the configured certificate, or makes (once) a CA and a server certificate in data_dir.
fn load_tls(
    config: &GatewayConfig,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Option<PathBuf>)> {
    match &config.tls {
        TlsSource::Files { cert, key } => {
            let server = tls::server_config(&tls::read_file(cert)?, &tls::read_file(key)?)?;
            Ok((server, None))
        }
        TlsSource::Generated { hosts } => {
            let dir = &config.data_dir;
            let (ca_path, cert_path, key_path) = (
                dir.join("ca.pem"),
                dir.join("server.pem"),
                dir.join("server-key.pem"),
            );
            if !cert_path.exists() || !key_path.exists() || !ca_path.exists() {
                let ca = tls::Ca::generate("ztk gateway CA")?;
                let mut names = vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "::1".to_string(),
                ];
                let ip = config.listen.ip();
                if !ip.is_unspecified() && !ip.is_loopback() {
                    names.push(ip.to_string());
                }
                let host = crate::fsutil::hostname().to_ascii_lowercase();
                if !host.is_empty() {
                    names.push(host);
                }
                names.extend(hosts.iter().cloned());
                names.dedup();
                let leaf = ca.issue_server(&names)?;
                tls::write_private(&dir.join("ca-key.pem"), ca.key_pem().as_bytes())?;
                tls::write_private(&key_path, leaf.key_pem.as_bytes())?;
                crate::fsutil::write_atomic(
                    &cert_path,
                    format!("{}{}", leaf.cert_pem, ca.cert_pem()).as_bytes(),
                    0o644,
                )?;
                crate::fsutil::write_atomic(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
            }
            let server =
                tls::server_config(&tls::read_file(&cert_path)?, &tls::read_file(&key_path)?)?;
            Ok((server, Some(ca_path)))
        }
    }
}

/// What `admit` lets through: the record so far, the cluster, the parsed request, and the
/// impersonation to forward.
struct Admitted {
    call: ApiCall,
    cluster: Arc<Cluster>,
    parsed: ParsedRequest,
    session_id: String,
    forward_impersonation: Option<Impersonation>,
}

/// Why the gateway answers a Kubernetes request itself: the status, the audit decision and
/// the message (a Kubernetes `Status` for the client, the reason in the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub decision: &'static str,
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`; the audit decision follows from it (401: unauthenticated,
    /// 503: unavailable, any other: deny).
    fn new(status: StatusCode, message: String) -> Refusal {
        let decision = match status {
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "deny",
        };
        Refusal {
            status,
            decision,
            message,
        }
    }

    /// The `reason` of the Kubernetes `Status` (`Forbidden`, `BadRequest`, …).
    pub fn reason(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::FORBIDDEN => "Forbidden",
            _ => "ServiceUnavailable",
        }
    }
}

/// `admit`'s answer for a refused request: the record so far and the refusal.
fn refused(
    call: ApiCall,
    status: StatusCode,
    message: String,
) -> Result<Admitted, Box<(ApiCall, Refusal)>> {
    Err(Box::new((call, Refusal::new(status, message))))
}

/// Rewrites the headers of an admitted request for the cluster: the client's token and ztk's
/// own headers stay here (the relay sets the cluster's credential), and every `Impersonate-*`
/// header is replaced by the authorized impersonation, rebuilt from its parsed values.
fn rewrite(headers: &mut HeaderMap, impersonation: &Option<Impersonation>) {
    headers.remove(COMMAND_ID_HEADER);
    headers.remove(REQUEST_ID_HEADER);
    let client_sent: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in client_sent {
        headers.remove(name);
    }
    if let Some(imp) = impersonation {
        imp.write_headers(headers);
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Gateway {
    /// The current roles and bindings.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Background upkeep: reloads the bindings when another process changed the database
    /// (`PRAGMA data_version`, polled every 250 ms: no query on the request path), and closes
    /// open streams whose session was revoked or expired.
    async fn watch(self: Arc<Self>) {
        let mut version = self.users.data_version().ok();
        let mut ticks = tokio::time::interval(POLICY_POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stream_check = std::time::Instant::now();
        let mut last_forget = std::time::Instant::now();
        loop {
            ticks.tick().await;
            let gw = self.clone();
            let check_streams = last_stream_check.elapsed() >= STREAM_CHECK;
            if check_streams {
                last_stream_check = std::time::Instant::now();
            }
            if last_forget.elapsed() >= Duration::from_secs(60) {
                last_forget = std::time::Instant::now();
                self.command_owners
                    .forget_before(crate::audit::model::now_us() - owners::KEEP_US);
                let gw = self.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(err) = gw.login_throttle.forget_old(crate::audit::model::now_us()) {
                        tracing::warn!("could not forget old failed logins: {err}");
                    }
                });
            }
            let seen = version;
            let result = tokio::task::spawn_blocking(move || {
                let now = gw.users.data_version()?;
                if Some(now) != seen {
                    gw.reload_policy()?;
                    if let Some(agents) = &gw.agents {
                        agents.close_revoked()?;
                    }
                }
                if check_streams {
                    gw.close_invalid_streams()?;
                }
                Ok::<_, users::UserError>(now)
            })
            .await;
            match result {
                Ok(Ok(now)) => version = Some(now),
                Ok(Err(err)) => tracing::error!("gateway upkeep failed: {err}"),
                Err(err) => tracing::error!("gateway upkeep panicked: {err}"),
            }
        }
    }

    fn reload_policy(&self) -> Result<(), users::UserError> {
        let bindings = self.users.list_bindings()?;
        let roles = self.users.list_roles()?;
        let current = self.policy();
        let mut stored = self.stored_roles.lock().unwrap_or_else(|e| e.into_inner());
        if *stored != roles {
            tracing::info!(roles = roles.len(), "stored roles reloaded");
            let next = Arc::new(Policy::new(
                &[self.config_roles.clone(), roles.clone()].concat(),
                bindings,
            ));
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = next;
            *stored = roles;
        } else if current.bindings() != bindings.as_slice() {
            tracing::info!(bindings = bindings.len(), "role bindings reloaded");
            let next = Arc::new(current.with_bindings(bindings));
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = next;
        }
        Ok(())
    }

    fn close_invalid_streams(&self) -> Result<(), users::UserError> {
        let mut ids: Vec<String> = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            streams
                .values()
                .map(|(session, _)| session.clone())
                .collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort();
        ids.dedup();
        let invalid = self.users.invalid_sessions(&ids)?;
        if invalid.is_empty() {
            return Ok(());
        }
        // Refused from now on, before their streams end (another gateway's revocation can be
        // read here before its change notice arrives).
        self.users.forget_sessions(&invalid);
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for (session, cancel) in streams.values() {
            if invalid.contains(session) {
                let _ = cancel.send(true);
            }
        }
        tracing::info!(
            sessions = invalid.len(),
            "closed streams of invalid sessions"
        );
        Ok(())
    }

    /// Registers an open exchange of `session`; returns its id and its cancel signal.
    fn open_stream(&self, session: &str) -> (u64, crate::relay::Cancel) {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (session.to_string(), tx));
        (id, rx)
    }

    fn close_stream(&self, id: u64) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// How many relayed exchanges are open (for tests and diagnostics).
    pub fn open_streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let req = req.map(body::boxed);
        let path = req.uri().path();
        if path.starts_with(protocol::KUBE_PREFIX) {
            self.kube(req, peer, Via::Network).await
        } else if path == crate::agent::protocol::ENROLL_PATH {
            match (&self.agents, req.method()) {
                (Some(agents), &http::Method::POST) => agents.clone().enroll(req, peer).await,
                (Some(_), _) => body::status_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "method not allowed",
                ),
                (None, _) => body::status_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "ztk: this gateway has no agent cluster (`agent = true` in its config)",
                ),
            }
        } else if path.starts_with("/ztk/") {
            api::handle(self, req, peer).await
        } else if path == "/healthz" {
            Response::new(body::full("ok"))
        } else if crate::console::serves(path) {
            crate::console::handle(self, req, peer).await
        } else {
            body::status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "ztk gateway: unknown path; kubectl reaches clusters through `ztk kubectl`",
            )
        }
    }

    /// Authenticates a bearer token, with the 401 message kubectl will show on failure.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Session, String> {
        let Some(token) = bearer(headers) else {
            return Err("ztk: no session token; run `ztk login`".into());
        };
        Self::session_or_message(self.users.authenticate(token))
    }

    /// Authenticates a web-shell command's credential: valid while the command runs and its
    /// web session is valid; the session is the web session (so that revoking it closes the
    /// command's streams too).
    fn authenticate_shell(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Session, Arc<crate::shell::grants::Grant>), String> {
        let grant = bearer(headers)
            .and_then(|token| self.shell.grants.get(token))
            .ok_or("ztk: not a running web-shell command's credential")?;
        let session = Self::session_or_message(self.users.authenticate_hash(grant.parent.clone()))?;
        Ok((session, grant))
    }

    fn session_or_message(
        looked_up: Result<Result<Session, TokenRejection>, users::UserError>,
    ) -> Result<Session, String> {
        match looked_up {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(TokenRejection::Unknown)) => {
                Err("ztk: the session token is not valid; run `ztk login`".into())
            }
            Ok(Err(TokenRejection::Expired)) => {
                Err("ztk: your session has expired; run `ztk login`".into())
            }
            Ok(Err(TokenRejection::Revoked)) => {
                Err("ztk: your session was revoked; run `ztk login`".into())
            }
            Err(err) => {
                tracing::error!("session lookup failed: {err}");
                Err("ztk: the gateway could not check the session; try again, or ask the administrator".into())
            }
        }
    }

    /// A Kubernetes request, in phases (as a proxy's request passes filter, upstream choice,
    /// rewrite and log): `admit` authenticates, parses once and authorizes; `rewrite` builds
    /// the upstream request from what was authorized; the relay forwards it; the record is
    /// written exactly once, when the exchange ends or when it is refused.
    async fn kube(
        self: Arc<Self>,
        mut req: Request<Body>,
        peer: SocketAddr,
        via: Via,
    ) -> Response<Body> {
        let start = std::time::Instant::now();
        // Before any header is read: a header named in `Connection` is not forwarded, so it
        // must not be authorized either.
        crate::relay::drop_hop_by_hop(&mut req);
        let admitted = match self.admit(&req, peer, via) {
            Ok(admitted) => admitted,
            Err(refused) => {
                let (mut call, refusal) = *refused;
                let resp = body::refusal(refusal.status, refusal.reason(), &refusal.message);
                call.refuse(
                    refusal.status.as_u16(),
                    refusal.decision,
                    &refusal.message,
                    start.elapsed(),
                );
                self.audit.record_call(call);
                return resp;
            }
        };
        let Admitted {
            mut call,
            cluster,
            parsed,
            session_id,
            forward_impersonation,
        } = admitted;
        if self.audit_mode == config::AuditMode::Strict {
            // The record is on disk before the cluster sees the call.
            let mut intent = call.clone();
            intent.reason = crate::audit::model::IN_PROGRESS.into();
            if !self.audit.record_call_committed(intent).await {
                let message = audit::AUDIT_DOWN.to_string();
                let resp = body::refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    &message,
                );
                call.refuse(503, "unavailable", &message, start.elapsed());
                self.audit.record_call(call);
                return resp;
            }
        }
        rewrite(req.headers_mut(), &forward_impersonation);
        let path_and_query = parsed.path_and_query();
        let sink = self.audit.clone();
        // Exchanges that can stay open (watches, followed logs, exec…) are tracked until their
        // final outcome, so that a revocation closes them; short calls end on their own. The
        // request's one parse says which.
        let (stream, cancel) = if crate::relay::stays_open(&req, parsed.long_lived) {
            let (id, cancel) = self.open_stream(&session_id);
            (Some(id), Some(cancel))
        } else {
            (None, None)
        };
        let gateway = self.clone();
        crate::relay::relay(
            &cluster.upstream,
            req,
            &path_and_query,
            parsed.long_lived,
            HeaderMap::new(),
            cancel,
            move |outcome| {
                // The record of an opening stream is replaced (same id) by the final one.
                if let (false, Some(stream)) = (outcome.open, stream) {
                    gateway.close_stream(stream);
                }
                sink.record_call(call.finished(outcome));
            },
        )
        .await
    }

    /// Authenticates, parses and authorizes a Kubernetes request: what may be forwarded, or
    /// the refusal with the record of the call so far.
    fn admit(
        &self,
        req: &Request<Body>,
        peer: SocketAddr,
        via: Via,
    ) -> Result<Admitted, Box<(ApiCall, Refusal)>> {
        let uri = req.uri();
        let rest = &uri.path()[protocol::KUBE_PREFIX.len()..];
        let (cluster_name, raw_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let headers = req.headers();
        let method = req.method();
        let parsed = ParsedRequest::parse(method.as_str(), raw_path, uri.query());
        let mut call =
            ApiCall::begin_parsed(method, raw_path, uri.query(), &parsed, headers, peer.ip());
        call.cluster = cluster_name.to_string();
        // A command id from a client is taken only when it is the caller's (below).
        let claimed_command = call.command_id.take();

        let (session, shell_grant) = match via {
            Via::Network => match self.authenticate(headers) {
                Ok(session) => (session, None),
                Err(message) => return refused(call, StatusCode::UNAUTHORIZED, message),
            },
            Via::Shell => match self.authenticate_shell(headers) {
                Ok((session, grant)) => (session, Some(grant)),
                Err(message) => return refused(call, StatusCode::UNAUTHORIZED, message),
            },
        };
        call.user = session.user.clone();
        if let Some(grant) = shell_grant {
            // A web-shell command's call: linked to its command, from the browser's address.
            call.command_id = Some(grant.command);
            call.access_method = crate::audit::AccessMethod::Browser;
            call.source_ip = grant.source_ip.clone();
            grant.count_call();
            if grant.cluster != cluster_name {
                let message = format!(
                    "ztk: this web-shell command may call only cluster {:?}",
                    grant.cluster
                );
                return refused(call, StatusCode::FORBIDDEN, message);
            }
        } else if let Some(command) = claimed_command {
            match self
                .command_owners
                .claim(command, &session.user, call.time_us)
            {
                owners::Claim::Accepted => call.command_id = Some(command),
                owners::Claim::Foreign => {
                    tracing::warn!(user = %session.user, %command, "refused a command id that belongs to another user");
                    call.note(&format!("the client's command id {command} belongs to another user's command and was not linked"));
                }
            }
        }
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(ambiguity) => {
                let message = format!("ztk: refused an ambiguous request: {ambiguity}");
                return refused(call, StatusCode::BAD_REQUEST, message);
            }
        };
        let Some(cluster) = self.clusters.get(cluster_name).cloned() else {
            let message = format!(
                "ztk: the gateway has no cluster {cluster_name:?}; `ztk status` lists the clusters you can use"
            );
            return refused(call, StatusCode::NOT_FOUND, message);
        };
        let impersonation = match Impersonation::from_headers(headers) {
            Ok(impersonation) => impersonation,
            Err(message) => {
                return refused(call, StatusCode::BAD_REQUEST, format!("ztk: {message}"))
            }
        };
        let who = Identity {
            user: session.user.clone(),
            groups: session.groups.clone(),
        };
        let policy = self.policy();
        let acting = match authz::authorize(
            &policy,
            &who,
            cluster_name,
            &parsed.info,
            impersonation.as_ref(),
        ) {
            Decision::Allow { identity, note } => {
                if let Some(note) = note {
                    call.note(&note);
                }
                identity
            }
            Decision::Deny(reason) => {
                let message = format!("ztk: forbidden: {reason}");
                return refused(call, StatusCode::FORBIDDEN, message);
            }
        };
        if self.audit_mode.fail_closed() && !self.audit.healthy() {
            return refused(
                call,
                StatusCode::SERVICE_UNAVAILABLE,
                audit::AUDIT_DOWN.to_string(),
            );
        }
        // What the cluster sees: the acting identity on an impersonating cluster (so that its
        // RBAC applies on top of ztk's), else exactly the impersonation that was authorized.
        let forward_impersonation = if cluster.impersonate {
            Some(Impersonation {
                user: Some(acting.user.clone()),
                groups: acting.groups.clone(),
                ..Default::default()
            })
        } else {
            impersonation
        };
        if let Some(imp) = &forward_impersonation {
            if let Err(message) = imp.check_sendable() {
                return refused(call, StatusCode::BAD_REQUEST, format!("ztk: {message}"));
            }
        }
        Ok(Admitted {
            call,
            cluster,
            parsed,
            session_id: session.id,
            forward_impersonation,
        })
    }

    pub fn cluster_infos(&self) -> Vec<protocol::ClusterInfo> {
        self.clusters
            .keys()
            .map(|name| protocol::ClusterInfo { name: name.clone() })
            .collect()
    }
}
