//! The zero-trust gateway: authenticates every Kubernetes request, authorizes it in one place,
//! forwards it to the cluster with the gateway's own credential, and writes the authoritative
//! audit record of every call, denied ones included.

pub mod access;
pub mod api;
pub mod audit;
pub mod authz;
pub mod bindings;
pub mod clusters;
pub mod commits;
pub mod config;
pub mod ingest;
pub mod rbac;
pub mod users;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::audit::{ApiCall, AuditSink, AuditStore, AuditWriter};
use crate::body::{self, Body};
use crate::protocol::{self, COMMAND_ID_HEADER, REQUEST_ID_HEADER};
use crate::request_info::RequestInfo;
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
    pub users: UserStore,
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
    /// Roles and bindings, read by every request without touching the database; replaced
    /// whole when the bindings table changes.
    policy: RwLock<Arc<Policy>>,
    /// Open relayed exchanges (watches, logs, exec…), so that a revoked session's streams
    /// can be closed: id -> (session id, cancel switch).
    streams: Mutex<HashMap<u64, (String, tokio::sync::watch::Sender<bool>)>>,
    next_stream: AtomicU64,
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
    let users = UserStore::open(&config.db_path())?;
    let policy = Policy::new(&config.roles, users.list_bindings()?);
    let audit_store = AuditStore::open(&config.audit_path())?;
    let writer_config = crate::audit::store::WriterConfig {
        wait_when_full: config.audit_mode == config::AuditMode::FailClosed,
        ..Default::default()
    };
    let (audit, writer) = audit_store.start_writer_with(8192, writer_config)?;
    let audit_key = Arc::new(crate::audit::chain::SigningKey::load_or_create(
        &config.audit_key_path(),
    )?);
    let clusters = clusters::connect(config).await?;
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
        users,
        clusters,
        audit,
        ingestor: Arc::new(crate::audit::ingest::Ingestor::new(audit_store.clone())),
        audit_store,
        session_ttl_us: config.session_ttl_us,
        admin_groups: config.admin_groups.clone(),
        max_sessions_per_user: config.max_sessions_per_user,
        audit_mode: config.audit_mode,
        audit_key: audit_key.clone(),
        policy: RwLock::new(Arc::new(policy)),
        streams: Mutex::new(HashMap::new()),
        next_stream: AtomicU64::new(0),
    });
    let watcher = tokio::spawn(gateway.clone().watch());
    let checkpoints = tokio::spawn(audit::checkpoint_loop(
        gateway.audit_store.clone(),
        audit_key,
        config.audit_checkpoint_interval,
    ));
    let handler_gateway = gateway.clone();
    let server = tokio::spawn(crate::serve::serve_tls(
        listener,
        server_tls,
        move |req, peer| {
            let gateway = handler_gateway.clone();
            async move { gateway.handle(req, peer.addr).await }
        },
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
    })
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

/// Replaces any `Impersonate-*` header with the acting user and all their groups.
fn impersonation_headers(headers: &mut HeaderMap, acting: &Identity) -> Result<(), String> {
    let client_sent: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in client_sent {
        headers.remove(name);
    }
    let value = |v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| format!("ztk: {v:?} cannot be sent as an impersonation header"))
    };
    headers.insert("impersonate-user", value(&acting.user)?);
    for group in &acting.groups {
        headers.append("impersonate-group", value(group)?);
    }
    Ok(())
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
        loop {
            ticks.tick().await;
            let gw = self.clone();
            let check_streams = last_stream_check.elapsed() >= STREAM_CHECK;
            if check_streams {
                last_stream_check = std::time::Instant::now();
            }
            let seen = version;
            let result = tokio::task::spawn_blocking(move || {
                let now = gw.users.data_version()?;
                if Some(now) != seen {
                    gw.reload_policy()?;
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
        let current = self.policy();
        if current.bindings() != bindings.as_slice() {
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
            self.kube(req, peer).await
        } else if path.starts_with("/ztk/") {
            api::handle(self, req).await
        } else if path == "/healthz" {
            Response::new(body::full("ok"))
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
        match self.users.authenticate(token) {
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

    async fn kube(self: Arc<Self>, mut req: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let uri = req.uri().clone();
        let rest = &uri.path()[protocol::KUBE_PREFIX.len()..];
        let (cluster_name, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let query = uri.query();
        let headers = req.headers();
        let info = RequestInfo::parse(req.method().as_str(), path, query);
        let mut call = ApiCall::begin(req.method(), &uri, path, &info, headers, peer.ip());
        call.cluster = cluster_name.to_string();
        let start = std::time::Instant::now();

        let session = match self.authenticate(headers) {
            Ok(session) => session,
            Err(message) => {
                return self.refuse(
                    call,
                    start,
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "unauthenticated",
                    &message,
                );
            }
        };
        call.user = session.user.clone();
        let Some(cluster) = self.clusters.get(cluster_name).cloned() else {
            let message = format!(
                "ztk: the gateway has no cluster {cluster_name:?}; `ztk status` lists the clusters you can use"
            );
            return self.refuse(
                call,
                start,
                StatusCode::NOT_FOUND,
                "NotFound",
                "deny",
                &message,
            );
        };
        let impersonation = Impersonation::from_headers(headers);
        let who = Identity {
            user: session.user.clone(),
            groups: session.groups.clone(),
        };
        let policy = self.policy();
        let acting =
            match authz::authorize(&policy, &who, cluster_name, &info, impersonation.as_ref()) {
                Decision::Allow { identity, note } => {
                    if let Some(note) = note {
                        call.reason = note;
                    }
                    identity
                }
                Decision::Deny(reason) => {
                    let message = format!("ztk: forbidden: {reason}");
                    return self.refuse(
                        call,
                        start,
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        "deny",
                        &message,
                    );
                }
            };
        if self.audit_mode == config::AuditMode::FailClosed && !self.audit.healthy() {
            let (code, reason) = (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
            return self.refuse(call, start, code, reason, "unavailable", audit::AUDIT_DOWN);
        }

        // The client's token and ztk's own headers stay here; the cluster gets the gateway's.
        let headers = req.headers_mut();
        headers.remove(COMMAND_ID_HEADER);
        headers.remove(REQUEST_ID_HEADER);
        if cluster.impersonate {
            // The cluster sees the user (or whom they may impersonate), never the client's
            // own headers, so its RBAC applies on top of ztk's.
            if let Err(message) = impersonation_headers(headers, &acting) {
                return self.refuse(
                    call,
                    start,
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "deny",
                    &message,
                );
            }
        }
        let path_and_query = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let sink = self.audit.clone();
        // Exchanges that can stay open (watches, followed logs, exec…) are tracked until their
        // final outcome, so that a revocation closes them; short calls end on their own.
        let (stream, cancel) = if crate::relay::stays_open(&req, &path_and_query) {
            let (id, cancel) = self.open_stream(&session.id);
            (Some(id), Some(cancel))
        } else {
            (None, None)
        };
        let gateway = self.clone();
        crate::relay::relay(
            &cluster.upstream,
            req,
            &path_and_query,
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

    /// Answers with a Kubernetes Status and audits the refusal.
    fn refuse(
        &self,
        mut call: ApiCall,
        start: std::time::Instant,
        status: StatusCode,
        reason: &str,
        decision: &str,
        message: &str,
    ) -> Response<Body> {
        let resp = body::refusal(status, reason, message);
        call.refuse(status.as_u16(), decision, message, start.elapsed());
        self.audit.record_call(call);
        resp
    }

    pub fn cluster_infos(&self) -> Vec<protocol::ClusterInfo> {
        self.clusters
            .keys()
            .map(|name| protocol::ClusterInfo { name: name.clone() })
            .collect()
    }
}
