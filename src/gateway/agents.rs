//! The gateway's side of `ztk agent`: enrollment, the agents' certificates, and the tunnels.
//!
//! - **Enrollment**: `ztk gateway agent token CLUSTER` stores the hash of a one-time token;
//!   the agent trades it (`POST /ztk/v1/agents/enroll`, with a CSR for its own key) for a
//!   client certificate `CN=ztk-agent:CLUSTER` signed by the agent CA. The token is taken by
//!   one `UPDATE … WHERE used_us IS NULL`, so a second use fails whichever gateway sees it.
//! - **The agent CA** lives in the gateway's database (`agent_ca`, made once by whoever needs
//!   it first), so every gateway sharing a PostgreSQL database trusts the same agents. Each
//!   certificate issued is recorded by fingerprint (`agent_certs`); a tunnel is accepted only
//!   for a recorded, unrevoked certificate, and `ztk gateway agent revoke` closes the cluster's
//!   open tunnels within a second (the change is seen like a binding's).
//! - **Tunnels**: an agent dials the HTTPS port with ALPN `ztk-tunnel/1` and its certificate
//!   (`serve::SideDoor`); the gateway becomes the HTTP/2 client on that connection, asks the
//!   agent's `Hello`, pings it every `[agents] keepalive` (round trip in the status, a silent
//!   tunnel closed), renews its
//!   certificate when two thirds of its life are gone, and opens one stream per relayed
//!   connection ([`AgentOpener`], the cluster upstream's dialer). A cluster with no tunnel
//!   answers `503` at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::users::{hash_token, UserError, UserStore};
use crate::agent::protocol::{self as wire, EnrollRequest, EnrollResponse, Hello, Refused};
use crate::args;
use crate::audit::model::now_us;
use crate::body::{self, Body};
use crate::db::{DbError, Dialect};

/// How long opening a stream may wait (the agent's stream limit, a stalled tunnel).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] UserError),
    #[error("the agent CA in the database is unusable: {0}")]
    Ca(String),
    #[error("could not issue the agent's certificate: {0}")]
    Issue(String),
}

/// One certificate issued to an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentCert {
    pub fingerprint: String,
    pub cluster: String,
    pub issued_us: i64,
    pub expires_us: i64,
    pub revoked_us: Option<i64>,
    /// The address it was issued to (enrollment) or "renewal".
    pub origin: String,
}

/// A token not used yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingToken {
    pub cluster: String,
    pub created_us: i64,
    pub expires_us: i64,
}

/// Takes `cluster`'s agent lock for the rest of the transaction: enrollments, renewals and
/// revocations of one cluster take turns, so a revocation sees every certificate recorded
/// before it and none is recorded after it began. (SQLite's write transactions are alone
/// already.)
fn cluster_lock(db: &mut crate::db::Db, cluster: &str) -> Result<(), DbError> {
    if db.dialect() == Dialect::Postgres {
        db.execute(
            "SELECT pg_advisory_xact_lock(hashtext(?))",
            args![format!("agent:{cluster}")],
        )?;
    }
    Ok(())
}

fn insert_cert(db: &mut crate::db::Db, cert: &AgentCert) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO agent_certs (fingerprint, cluster, issued_us, expires_us, origin) VALUES (?, ?, ?, ?, ?)",
        args![cert.fingerprint, cert.cluster, cert.issued_us, cert.expires_us, cert.origin],
    )
    .map(drop)
}

/// The columns `cert_row` reads.
const CERT_COLUMNS: &str = "fingerprint, cluster, issued_us, expires_us, revoked_us, origin";

fn cert_row(r: &crate::db::Row<'_>) -> Result<AgentCert, crate::db::DbError> {
    Ok(AgentCert {
        fingerprint: r.get(0)?,
        cluster: r.get(1)?,
        issued_us: r.get(2)?,
        expires_us: r.get(3)?,
        revoked_us: r.get(4)?,
        origin: r.get(5)?,
    })
}

/// The database side: tokens, the CA, certificates (tables made by the user store's
/// migrations: `agent_ca`, `agent_tokens`, `agent_certs`).
impl UserStore {
    /// Stores a new one-time enrollment token for `cluster`, valid for `ttl`; returns it.
    pub fn create_agent_token(&self, cluster: &str, ttl: Duration) -> Result<String, UserError> {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!(
            "ztkagent_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let now = now_us();
        let expires = now.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64);
        self.with_db(|db| {
            db.execute(
                "INSERT INTO agent_tokens (token_hash, cluster, created_us, expires_us) VALUES (?, ?, ?, ?)",
                args![hash_token(&token), cluster, now, expires],
            )
        })?;
        Ok(token)
    }

    /// Takes `token` for `cluster` and records the certificate `issue` makes, in one
    /// transaction (no token used up without a certificate, none recorded after a revocation
    /// of the cluster began): `Ok(Err(why))` when the token is unknown, used or expired.
    pub fn enroll_agent(
        &self,
        cluster: &str,
        token: &str,
        address: &str,
        issue: impl FnOnce() -> Result<(String, AgentCert), AgentError>,
    ) -> Result<Result<(String, AgentCert), &'static str>, UserError> {
        let hash = hash_token(token);
        let now = now_us();
        self.with_db(|db| {
            db.transaction(true, |tx| {
                cluster_lock(tx, cluster)?;
                let taken = tx.execute(
                    "UPDATE agent_tokens SET used_us = ?, used_by = ? WHERE token_hash = ? AND cluster = ? \
                     AND used_us IS NULL AND expires_us > ?",
                    args![now, address, hash, cluster, now],
                )?;
                if taken == 1 {
                    let (pem, record) = issue().map_err(|e| DbError::Invalid(e.to_string()))?;
                    insert_cert(tx, &record)?;
                    return Ok(Ok((pem, record)));
                }
                let row: Option<(Option<i64>, i64, String)> = tx.query_row(
                    "SELECT used_us, expires_us, cluster FROM agent_tokens WHERE token_hash = ?",
                    args![hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                Ok(Err(match row {
                    Some((Some(_), _, c)) if c == cluster => "the enrollment token was used already (each token enrolls one agent once): make a new one with `ztk gateway agent token`",
                    Some((None, expires, c)) if c == cluster && expires <= now => "the enrollment token has expired: make a new one with `ztk gateway agent token`",
                    // Made for another cluster, or none: the answer does not tell which
                    // clusters exist.
                    _ => "unknown enrollment token for this cluster",
                }))
            })
        })
    }

    /// Records `renewed`, a certificate for the key of the one with fingerprint `presented`,
    /// only while that one is not revoked (in one transaction with the check, taking turns with
    /// revocations of the cluster); whether it was recorded.
    fn record_renewal(&self, presented: &str, renewed: &AgentCert) -> Result<bool, UserError> {
        self.with_db(|db| {
            db.transaction(true, |tx| {
                cluster_lock(tx, &renewed.cluster)?;
                let revoked: Option<Option<i64>> = tx.query_row(
                    "SELECT revoked_us FROM agent_certs WHERE fingerprint = ?",
                    args![presented],
                    |r| r.get(0),
                )?;
                if revoked != Some(None) {
                    return Ok(false);
                }
                insert_cert(tx, renewed)?;
                Ok(true)
            })
        })
    }

    pub fn agent_cert(&self, fingerprint: &str) -> Result<Option<AgentCert>, UserError> {
        self.with_db(|db| {
            db.query_row(
                &format!("SELECT {CERT_COLUMNS} FROM agent_certs WHERE fingerprint = ?"),
                args![fingerprint],
                cert_row,
            )
        })
    }

    /// Every certificate issued, newest first, and the tokens not used yet.
    pub fn list_agents(&self) -> Result<(Vec<AgentCert>, Vec<PendingToken>), UserError> {
        let now = now_us();
        self.with_db(|db| {
            let certs = db.query_vec(
                &format!("SELECT {CERT_COLUMNS} FROM agent_certs ORDER BY issued_us DESC"),
                &[],
                cert_row,
            )?;
            let tokens = db.query_vec(
                "SELECT cluster, created_us, expires_us FROM agent_tokens WHERE used_us IS NULL AND expires_us > ? \
                 ORDER BY created_us",
                args![now],
                |r| {
                    Ok(PendingToken {
                        cluster: r.get(0)?,
                        created_us: r.get(1)?,
                        expires_us: r.get(2)?,
                    })
                },
            )?;
            Ok((certs, tokens))
        })
    }

    /// Revokes every certificate of `cluster`'s agents and its unused tokens; every gateway
    /// closes the cluster's tunnels within a second. Returns the certificates revoked.
    pub fn revoke_agents(&self, cluster: &str) -> Result<u64, UserError> {
        let now = now_us();
        let revoke = |tx: &mut crate::db::Db| {
            cluster_lock(tx, cluster)?;
            let n = tx.execute(
                "UPDATE agent_certs SET revoked_us = ? WHERE cluster = ? AND revoked_us IS NULL",
                args![now, cluster],
            )?;
            tx.execute(
                "DELETE FROM agent_tokens WHERE cluster = ? AND used_us IS NULL",
                args![cluster],
            )?;
            Ok(n)
        };
        // Announced to every gateway (PostgreSQL: in the change's own transaction).
        self.with_change(|db| match db.dialect() {
            Dialect::Sqlite => db.transaction(true, revoke),
            Dialect::Postgres => revoke(db),
        })
    }

    /// Of these fingerprints, the revoked (or unknown) ones.
    fn revoked_agent_certs(&self, fingerprints: &[String]) -> Result<Vec<String>, UserError> {
        let mut out = Vec::new();
        for fp in fingerprints {
            match self.agent_cert(fp)? {
                Some(cert) if cert.revoked_us.is_none() => {}
                _ => out.push(fp.clone()),
            }
        }
        Ok(out)
    }

    /// The agent CA (certificate and key, PEM), made and stored by the first caller.
    pub fn agent_ca(&self) -> Result<(String, String), AgentError> {
        let read = |store: &UserStore| {
            store.with_db(|db| {
                db.query_row(
                    "SELECT cert_pem, key_pem FROM agent_ca WHERE id = 1",
                    &[],
                    |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
                )
            })
        };
        if let Some(found) = read(self)? {
            return Ok(found);
        }
        let ca =
            crate::tls::Ca::generate("ztk agent CA").map_err(|e| AgentError::Ca(e.to_string()))?;
        let (cert, key) = (ca.cert_pem(), ca.key_pem());
        self.with_db(|db| {
            db.execute(
                "INSERT INTO agent_ca (id, cert_pem, key_pem, created_us) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                args![cert, key, now_us()],
            )
            .map(drop)
        })?;
        read(self)?.ok_or_else(|| AgentError::Ca("the agent CA could not be stored".into()))
    }
}

/// Hex SHA-256 of a certificate's DER: how agent certificates are recorded.
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The agent CA, ready to sign.
pub struct AgentCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl AgentCa {
    pub fn load(users: &UserStore) -> Result<AgentCa, AgentError> {
        let (cert_pem, key_pem) = users.agent_ca()?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| AgentError::Ca(e.to_string()))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| AgentError::Ca(e.to_string()))?;
        Ok(AgentCa { issuer, cert_pem })
    }

    /// A client certificate for `cluster`'s agent, for `public_key`, valid for `ttl`.
    fn issue(
        &self,
        public_key: &impl PublicKeyData,
        cluster: &str,
        ttl: Duration,
        origin: &str,
    ) -> Result<(String, AgentCert), AgentError> {
        let fail = |e: rcgen::Error| AgentError::Issue(e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{}{cluster}", wire::AGENT_CN_PREFIX),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial: [u8; 16] = rand::random();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::days(30));
        let cert = params.signed_by(public_key, &self.issuer).map_err(fail)?;
        let issued_us = now_us();
        let record = AgentCert {
            fingerprint: cert_fingerprint(cert.der()),
            cluster: cluster.to_string(),
            issued_us,
            expires_us: issued_us.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64),
            revoked_us: None,
            origin: origin.to_string(),
        };
        Ok((cert.pem(), record))
    }

    /// The TLS config of the tunnel's door: the gateway's own certificate (`server`'s), and a
    /// client certificate signed by this CA required.
    pub fn tunnel_tls(
        &self,
        server: &rustls::ServerConfig,
    ) -> Result<Arc<rustls::ServerConfig>, AgentError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::parse_certs(self.cert_pem.as_bytes(), "agent CA")
            .map_err(|e| AgentError::Ca(e.to_string()))?
        {
            roots.add(cert).map_err(|e| AgentError::Ca(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| AgentError::Ca(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(server.cert_resolver.clone());
        config.alpn_protocols = vec![wire::TUNNEL_ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// One agent's open tunnel.
pub struct Tunnel {
    id: u64,
    pub cluster: String,
    fingerprint: String,
    sender: h2::client::SendRequest<Bytes>,
    pub since_us: i64,
    pub hello: Hello,
    pub address: SocketAddr,
    /// The last ping's round trip, microseconds (-1: none yet).
    rtt_us: AtomicI64,
    /// Streams open on it now.
    streams: Arc<AtomicI64>,
    /// Set once it answered GOAWAY or failed: no new streams.
    closing: AtomicBool,
    close: tokio::sync::watch::Sender<bool>,
}

/// What `ztk gateway clusters status` shows of an agent cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub connected: bool,
    /// RFC 3339: since when the oldest open tunnel is up, or when the last one closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Tunnels open (several agents of one cluster may be connected).
    pub tunnels: usize,
    /// Streams open across them (kept-alive connections included).
    pub streams: u64,
}

/// The agent side of the gateway: the CA, and the tunnels by cluster.
pub struct Agents {
    users: Arc<UserStore>,
    ca: AgentCa,
    /// The clusters configured with `agent = true`.
    clusters: Vec<String>,
    certificate_ttl: Duration,
    /// How often each tunnel is pinged; one unanswered for as long is closed.
    keepalive: Duration,
    tunnels: Mutex<HashMap<String, Vec<Arc<Tunnel>>>>,
    /// When each cluster's last tunnel closed (microseconds).
    last_closed: Mutex<HashMap<String, i64>>,
    next_id: AtomicU64,
}

impl Agents {
    pub fn new(
        users: Arc<UserStore>,
        clusters: Vec<String>,
        certificate_ttl: Duration,
        keepalive: Duration,
    ) -> Result<Agents, AgentError> {
        let ca = AgentCa::load(&users)?;
        Ok(Agents {
            users,
            ca,
            clusters,
            certificate_ttl,
            keepalive,
            tunnels: Mutex::new(HashMap::new()),
            last_closed: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn ca(&self) -> &AgentCa {
        &self.ca
    }

    fn knows(&self, cluster: &str) -> bool {
        self.clusters.iter().any(|c| c == cluster)
    }

    /// The cluster's status line.
    pub fn status(&self, cluster: &str) -> AgentStatus {
        let tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
        let open: Vec<Arc<Tunnel>> = tunnels.get(cluster).cloned().unwrap_or_default();
        drop(tunnels);
        let Some(first) = open.iter().min_by_key(|t| t.since_us) else {
            let closed = self
                .last_closed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(cluster)
                .copied();
            return AgentStatus {
                since: closed.map(super::clusters::rfc3339_us),
                ..AgentStatus::default()
            };
        };
        let rtt = first.rtt_us.load(Ordering::Relaxed);
        AgentStatus {
            connected: true,
            since: Some(super::clusters::rfc3339_us(first.since_us)),
            version: Some(first.hello.version.clone()),
            address: Some(first.address.to_string()),
            host: Some(first.hello.host.clone()).filter(|h| !h.is_empty()),
            rtt_ms: (rtt >= 0).then(|| (rtt as f64 / 1000.0 * 100.0).round() / 100.0),
            tunnels: open.len(),
            streams: open
                .iter()
                .map(|t| t.streams.load(Ordering::Relaxed).max(0) as u64)
                .sum(),
        }
    }

    /// The Kubernetes version the newest tunnel's agent reported.
    pub fn kubernetes_version(&self, cluster: &str) -> Option<String> {
        let tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
        tunnels
            .get(cluster)?
            .iter()
            .max_by_key(|t| t.since_us)
            .and_then(|t| t.hello.kubernetes.clone())
    }

    /// Opens a stream to `cluster`'s agent: on the open tunnel with the fewest streams.
    async fn open(&self, cluster: &str) -> Result<crate::tunnel::Stream, String> {
        let not_connected = || {
            format!("the agent of cluster {cluster} is not connected to this gateway (`ztk gateway clusters status` shows since when; start `ztk agent` next to the cluster)")
        };
        for _ in 0..3 {
            let (tunnel, open) = {
                let tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
                let open: Vec<Arc<Tunnel>> = tunnels
                    .get(cluster)
                    .into_iter()
                    .flatten()
                    .filter(|t| !t.closing.load(Ordering::Relaxed))
                    .cloned()
                    .collect();
                // A tunnel at the agent's stream limit would queue the stream: not chosen.
                let free = open
                    .iter()
                    .filter(|t| {
                        let streams = t.streams.load(Ordering::Relaxed).max(0) as usize;
                        streams < t.sender.current_max_send_streams()
                    })
                    .min_by_key(|t| t.streams.load(Ordering::Relaxed))
                    .cloned();
                (free, open.len())
            };
            let Some(tunnel) = tunnel else {
                if open > 0 {
                    return Err(format!(
                        "the agent of cluster {cluster} has as many streams open as it accepts; try again when some calls have ended"
                    ));
                }
                return Err(not_connected());
            };
            let guard = StreamGuard::new(tunnel.streams.clone());
            match tokio::time::timeout(
                OPEN_TIMEOUT,
                crate::tunnel::open(&tunnel.sender, Some(Box::new(guard))),
            )
            .await
            {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(err)) => {
                    // GOAWAY or a dead connection: take the next tunnel.
                    tracing::debug!(cluster, "tunnel {} refused a stream: {err}", tunnel.id);
                    tunnel.closing.store(true, Ordering::Relaxed);
                }
                Err(_) => {
                    return Err(format!(
                        "the agent of cluster {cluster} did not accept a stream within {}s",
                        OPEN_TIMEOUT.as_secs()
                    ))
                }
            }
        }
        Err(not_connected())
    }

    fn register(&self, tunnel: Arc<Tunnel>) {
        let mut tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
        tunnels
            .entry(tunnel.cluster.clone())
            .or_default()
            .push(tunnel);
    }

    fn unregister(&self, tunnel: &Tunnel) {
        let mut tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = tunnels.get_mut(&tunnel.cluster) {
            list.retain(|t| t.id != tunnel.id);
            if list.is_empty() {
                tunnels.remove(&tunnel.cluster);
            }
        }
        self.last_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tunnel.cluster.clone(), now_us());
    }

    /// Closes the tunnels whose certificate was revoked since they opened (run when the
    /// database changed: blocking).
    pub fn close_revoked(&self) -> Result<(), UserError> {
        let open: Vec<Arc<Tunnel>> = {
            let tunnels = self.tunnels.lock().unwrap_or_else(|e| e.into_inner());
            tunnels.values().flatten().cloned().collect()
        };
        if open.is_empty() {
            return Ok(());
        }
        let fingerprints: Vec<String> = open.iter().map(|t| t.fingerprint.clone()).collect();
        let revoked = self.users.revoked_agent_certs(&fingerprints)?;
        for tunnel in open.iter().filter(|t| revoked.contains(&t.fingerprint)) {
            tracing::warn!(cluster = %tunnel.cluster, address = %tunnel.address, "agent revoked: tunnel closed");
            tunnel.closing.store(true, Ordering::Relaxed);
            let _ = tunnel.close.send(true);
        }
        Ok(())
    }

    /// `POST /ztk/v1/agents/enroll`.
    pub async fn enroll(self: Arc<Self>, req: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let refuse = |code: StatusCode, reason: &str, message: &str| {
            body::status_response(code, reason, &format!("ztk: {message}"))
        };
        let bytes = match body::read_limited(req.into_body(), wire::MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("could not read the enrollment: {e}"),
                )
            }
        };
        let enroll: EnrollRequest = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid enrollment: {e}"),
                )
            }
        };
        let csr = match rcgen::CertificateSigningRequestParams::from_pem(&enroll.csr) {
            Ok(csr) => csr,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("the certificate signing request is invalid: {e}"),
                )
            }
        };
        let now = now_us();
        let this = self.clone();
        let address = peer.ip().to_string();
        let throttle = super::throttle::LoginThrottle::new(self.users.clone());
        let (cluster, token) = (enroll.cluster.clone(), enroll.token);
        let outcome = tokio::task::spawn_blocking(move || {
            // Throttled by address only: a cluster's name is no secret, and a key per cluster
            // would let anyone keep its agents from enrolling.
            if let Some(wait) = throttle.wait_address(peer.ip(), now)? {
                return Ok::<_, AgentError>(Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many failed enrollments; try again in {}s",
                        wait.as_secs() + 1
                    ),
                )));
            }
            let enrolled = if this.knows(&cluster) {
                this.users.enroll_agent(&cluster, &token, &address, || {
                    this.ca
                        .issue(&csr.public_key, &cluster, this.certificate_ttl, &address)
                })?
            } else {
                // Answered as an unknown token (the gateway's log says why).
                tracing::warn!(
                    cluster = %crate::audit::format::printable(&cluster),
                    "an enrollment names a cluster that is not an agent cluster here (`agent = true`)"
                );
                Err("unknown enrollment token for this cluster")
            };
            match enrolled {
                Ok(issued) => Ok(Ok(issued)),
                Err(why) => {
                    throttle.failed_address(peer.ip(), now)?;
                    Ok(Err((StatusCode::UNAUTHORIZED, why.to_string())))
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(Ok((pem, record)))) => {
                tracing::info!(cluster = %record.cluster, address = %peer.ip(), version = %crate::audit::format::printable(&enroll.version), "agent enrolled");
                let answer = EnrollResponse {
                    certificate: pem,
                    expires: super::clusters::rfc3339_us(record.expires_us),
                };
                body::json_response(
                    StatusCode::OK,
                    &serde_json::to_value(answer).unwrap_or_default(),
                )
            }
            Ok(Ok(Err((code, message)))) => {
                tracing::warn!(cluster = %crate::audit::format::printable(&enroll.cluster), address = %peer.ip(), "agent enrollment refused: {message}");
                let reason = if code == StatusCode::UNAUTHORIZED {
                    "Unauthorized"
                } else {
                    "TooManyRequests"
                };
                refuse(code, reason, &message)
            }
            Ok(Err(err)) => super::api::internal(err),
            Err(err) => super::api::internal(err),
        }
    }

    /// Serves one agent's tunnel until it closes.
    pub async fn serve_tunnel(
        self: Arc<Self>,
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        address: SocketAddr,
    ) {
        let Some(der) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
        else {
            return;
        };
        let fingerprint = cert_fingerprint(&der);
        let users = self.users.clone();
        let fp = fingerprint.clone();
        let record = match tokio::task::spawn_blocking(move || users.agent_cert(&fp)).await {
            Ok(Ok(record)) => record,
            Ok(Err(err)) => {
                tracing::error!("could not look up an agent's certificate: {err}");
                return;
            }
            Err(_) => return,
        };
        let handshake = crate::tunnel::client_builder().handshake::<_, Bytes>(tls);
        let (sender, mut conn) = match tokio::time::timeout(OPEN_TIMEOUT, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(err)) => {
                tracing::debug!(%address, "tunnel handshake failed: {err}");
                return;
            }
            Err(_) => return,
        };
        let refusal = match &record {
            Some(r) if r.revoked_us.is_some() => Some(Refused {
                revoked: true,
                message: format!(
                    "this agent's certificate was revoked (`ztk gateway agent revoke {}`); enroll again with a new token",
                    r.cluster
                ),
            }),
            Some(r) if !self.knows(&r.cluster) => Some(Refused {
                revoked: false,
                message: format!(
                    "cluster {} is not an agent cluster of this gateway (`agent = true`)",
                    r.cluster
                ),
            }),
            Some(_) => None,
            None => Some(Refused {
                revoked: true,
                message: "this gateway's database never issued this agent's certificate; enroll again with a new token".into(),
            }),
        };
        let record = match (record, refusal) {
            (Some(record), None) => record,
            (_, Some(refused)) => {
                tracing::warn!(%address, "refused an agent: {}", refused.message);
                // Told on the tunnel itself, so the agent can say why and stop.
                let told = crate::tunnel::call(
                    &sender,
                    http::Method::PUT,
                    wire::REFUSED_PATH,
                    Bytes::from(serde_json::to_vec(&refused).unwrap_or_default()),
                    wire::MAX_BODY,
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    tokio::select! {
                        _ = told => {}
                        _ = &mut conn => {}
                    }
                })
                .await;
                return;
            }
            (None, None) => return,
        };
        let mut ping = conn.ping_pong();
        let (close, mut closed) = tokio::sync::watch::channel(false);
        let driver = tokio::spawn(async move {
            tokio::select! {
                result = &mut conn => {
                    if let Err(err) = result {
                        tracing::debug!("tunnel ended: {err}");
                    }
                }
                _ = closed.wait_for(|c| *c) => {}
            }
        });
        let hello = match tokio::time::timeout(
            OPEN_TIMEOUT,
            crate::tunnel::call(
                &sender,
                http::Method::GET,
                wire::HELLO_PATH,
                Bytes::new(),
                wire::MAX_BODY,
            ),
        )
        .await
        {
            Ok(Ok((StatusCode::OK, body))) => {
                serde_json::from_slice::<Hello>(&body).unwrap_or_default()
            }
            other => {
                tracing::warn!(cluster = %record.cluster, %address, "the agent did not say hello: {other:?}");
                driver.abort();
                return;
            }
        };
        if hello.cluster != record.cluster {
            tracing::warn!(cluster = %record.cluster, %address, "the agent says it serves cluster {:?}, its certificate another: closed", crate::audit::format::printable(&hello.cluster));
            driver.abort();
            return;
        }
        let tunnel = Arc::new(Tunnel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            cluster: record.cluster.clone(),
            fingerprint: fingerprint.clone(),
            sender,
            since_us: now_us(),
            hello,
            address,
            rtt_us: AtomicI64::new(-1),
            streams: Arc::new(AtomicI64::new(0)),
            closing: AtomicBool::new(false),
            close,
        });
        tracing::info!(cluster = %tunnel.cluster, %address, version = %crate::audit::format::printable(&tunnel.hello.version), "agent connected");
        self.register(tunnel.clone());
        // Checked again once registered: a revocation committed after the first check closes
        // the tunnels registered when it is noticed, and this one may have registered after.
        let users = self.users.clone();
        let fp = fingerprint.clone();
        if !matches!(
            tokio::task::spawn_blocking(move || users.agent_cert(&fp)).await,
            Ok(Ok(Some(AgentCert {
                revoked_us: None,
                ..
            })))
        ) {
            tracing::warn!(cluster = %tunnel.cluster, %address, "the agent was revoked while it connected: tunnel closed");
            let _ = tunnel.close.send(true);
        }
        let mut driver = driver;
        // Renewal is due when two thirds of the presented certificate's life are gone.
        let mut renew_at_us = record.issued_us + (record.expires_us - record.issued_us) * 2 / 3;
        // A renewed certificate made but not yet taken by the agent: sent again, not remade.
        let mut pending: Option<(String, AgentCert)> = None;
        let mut next_ping = tokio::time::Instant::now();
        loop {
            let now = now_us();
            if now >= renew_at_us {
                let renewed = tokio::time::timeout(
                    crate::tunnel::ACCEPT_TIMEOUT,
                    self.renew(&tunnel, &der, &mut pending),
                )
                .await;
                renew_at_us = match renewed {
                    Ok(Some(renewed)) => {
                        renewed.issued_us + (renewed.expires_us - renewed.issued_us) * 2 / 3
                    }
                    // Tried again in a minute.
                    _ => now + 60_000_000,
                };
            }
            let renew_in = Duration::from_micros((renew_at_us - now_us()).max(0) as u64);
            let wake = next_ping.min(tokio::time::Instant::now() + renew_in);
            tokio::select! {
                _ = &mut driver => break,
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() < next_ping {
                        continue;
                    }
                    next_ping = tokio::time::Instant::now() + self.keepalive;
                    let Some(ping) = ping.as_mut() else { continue };
                    let start = std::time::Instant::now();
                    match tokio::time::timeout(self.keepalive, ping.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => tunnel.rtt_us.store(start.elapsed().as_micros() as i64, Ordering::Relaxed),
                        _ => {
                            tracing::warn!(cluster = %tunnel.cluster, %address, "the agent did not answer a ping: tunnel closed");
                            let _ = tunnel.close.send(true);
                        }
                    }
                }
            }
        }
        self.unregister(&tunnel);
        tracing::info!(cluster = %tunnel.cluster, %address, "agent disconnected");
    }

    /// Sends the agent a renewed certificate for the key of `der` (the one it presented): the
    /// one in `pending`, or a new one recorded while `der`'s is not revoked; the new record,
    /// once the agent took it.
    async fn renew(
        &self,
        tunnel: &Tunnel,
        der: &[u8],
        pending: &mut Option<(String, AgentCert)>,
    ) -> Option<AgentCert> {
        let now = now_us();
        if pending.as_ref().is_some_and(|(_, r)| r.expires_us <= now) {
            *pending = None;
        }
        if pending.is_none() {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let spki = rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw).ok()?;
            let issued = self
                .ca
                .issue(&spki, &tunnel.cluster, self.certificate_ttl, "renewal");
            let (pem, record) = match issued {
                Ok(issued) => issued,
                Err(err) => {
                    tracing::error!(cluster = %tunnel.cluster, "could not renew the agent's certificate: {err}");
                    return None;
                }
            };
            let users = self.users.clone();
            let (presented, stored) = (tunnel.fingerprint.clone(), record.clone());
            match tokio::task::spawn_blocking(move || users.record_renewal(&presented, &stored))
                .await
            {
                Ok(Ok(true)) => *pending = Some((pem, record)),
                Ok(Ok(false)) => {
                    tracing::warn!(cluster = %tunnel.cluster, "not renewed: the agent's certificate was revoked; tunnel closed");
                    let _ = tunnel.close.send(true);
                    return None;
                }
                Ok(Err(err)) => {
                    tracing::error!(cluster = %tunnel.cluster, "could not record the agent's renewed certificate: {err}");
                    return None;
                }
                Err(_) => return None,
            }
        }
        let (pem, _) = pending.as_ref()?;
        match crate::tunnel::call(
            &tunnel.sender,
            http::Method::PUT,
            wire::CERTIFICATE_PATH,
            Bytes::from(pem.clone()),
            wire::MAX_BODY,
        )
        .await
        {
            Ok((status, _)) if status.is_success() => {
                tracing::info!(cluster = %tunnel.cluster, "agent certificate renewed");
                pending.take().map(|(_, record)| record)
            }
            other => {
                tracing::warn!(cluster = %tunnel.cluster, "the agent did not take its renewed certificate: {other:?}");
                None
            }
        }
    }
}

/// Counts a stream open on a tunnel until it is dropped.
struct StreamGuard(Arc<AtomicI64>);

impl StreamGuard {
    fn new(count: Arc<AtomicI64>) -> StreamGuard {
        count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(count)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The dialer of an agent cluster's upstream: each connection is a stream of its tunnel.
pub struct AgentOpener {
    pub agents: Arc<Agents>,
    pub cluster: String,
}

impl crate::relay::Opener for AgentOpener {
    fn open(&self) -> crate::relay::OpenFuture {
        let agents = self.agents.clone();
        let cluster = self.cluster.clone();
        Box::pin(async move {
            match agents.open(&cluster).await {
                Ok(stream) => Ok(Box::new(stream) as Box<dyn crate::relay::dial::Io>),
                Err(message) => Err(message.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An opener whose every connection is an in-memory pipe to a server that keeps the
    /// request head it read and answers 200.
    struct Capture(tokio::sync::mpsc::UnboundedSender<String>);

    impl crate::relay::Opener for Capture {
        fn open(&self) -> crate::relay::OpenFuture {
            let heads = self.0.clone();
            Box::pin(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (ours, mut theirs) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if theirs.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                    let _ = theirs
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
                Ok(Box::new(ours) as Box<dyn crate::relay::dial::Io>)
            })
        }
    }

    /// What the gateway sends into a tunnel: never the user's token (the agent adds the
    /// cluster's credential), and exactly the headers it decided to forward.
    #[tokio::test]
    async fn the_users_token_never_enters_a_tunnel() {
        let (tx, mut heads) = tokio::sync::mpsc::unbounded_channel();
        let upstream = crate::relay::Upstream::through(
            "cluster edge",
            "edge.agent.ztk",
            Arc::new(Capture(tx)),
        )
        .unwrap();
        let req = http::Request::get("/k8s/edge/api/v1/pods")
            .header("authorization", "Bearer ztk_the-users-session-token")
            .header("impersonate-user", "mallory")
            .body(crate::body::empty())
            .unwrap();
        let mut extra = http::HeaderMap::new();
        extra.insert("impersonate-user", http::HeaderValue::from_static("alice"));
        let resp =
            crate::relay::relay(&upstream, req, "/api/v1/pods", false, extra, None, |_| {}).await;
        assert_eq!(resp.status(), 200);
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /api/v1/pods http/1.1\r\n"), "{head}");
        assert!(!head.contains("authorization"), "{head}");
        assert!(!head.contains("ztk_the-users-session-token"), "{head}");
        assert!(head.contains("impersonate-user: alice\r\n"), "{head}");
        assert!(!head.contains("mallory"), "{head}");
    }

    fn stores() -> Vec<(&'static str, UserStore, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = UserStore::open(&dir.path().join("gateway.db")).unwrap();
        let url = crate::db::PgUrl::parse(&crate::db::testing::database(), None).unwrap();
        let postgres = UserStore::open_postgres(url).unwrap();
        vec![
            ("sqlite", sqlite, dir),
            ("postgres", postgres, tempfile::tempdir().unwrap()),
        ]
    }

    /// On both backends: a token enrolls once, for its cluster only, until it expires; the CA
    /// is made once; certificates are recorded, listed and revoked by cluster.
    #[test]
    fn tokens_are_taken_once_and_certificates_revoked_by_cluster() {
        for (backend, store, _dir) in stores() {
            let ca = AgentCa::load(&store).unwrap();
            let key = KeyPair::generate().unwrap();
            let issue = || ca.issue(&key, "edge", Duration::from_secs(3600), "10.0.0.1");
            let token = store
                .create_agent_token("edge", Duration::from_secs(60))
                .unwrap();
            let refused = |cluster: &str, token: &str| {
                store
                    .enroll_agent(cluster, token, "a", issue)
                    .unwrap()
                    .unwrap_err()
            };
            assert_eq!(
                refused("other", &token),
                "unknown enrollment token for this cluster",
                "{backend}"
            );
            assert_eq!(
                refused("edge", "ztkagent_nope"),
                "unknown enrollment token for this cluster"
            );
            // A certificate that cannot be made leaves the token unused.
            let failed =
                store.enroll_agent("edge", &token, "a", || Err(AgentError::Issue("no".into())));
            assert!(failed.is_err(), "{backend}");
            let (pem, record) = store
                .enroll_agent("edge", &token, "a", issue)
                .unwrap()
                .unwrap();
            assert!(
                refused("edge", &token).contains("used already"),
                "{backend}"
            );
            let expired = store
                .create_agent_token("edge", Duration::from_micros(1))
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
            assert!(refused("edge", &expired).contains("expired"), "{backend}");

            // One CA, whoever asks first.
            assert_eq!(AgentCa::load(&store).unwrap().cert_pem, ca.cert_pem);
            let der = crate::tls::parse_certs(pem.as_bytes(), "cert").unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
            assert_eq!(cert.subject().to_string(), "CN=ztk-agent:edge", "{backend}");
            assert_eq!(cert_fingerprint(der[0].as_ref()), record.fingerprint);
            let found = store.agent_cert(&record.fingerprint).unwrap().unwrap();
            assert_eq!((found.cluster.as_str(), found.revoked_us), ("edge", None));
            // Renewed while valid: recorded.
            let (_, renewed) = issue().unwrap();
            assert!(store.record_renewal(&record.fingerprint, &renewed).unwrap());
            let (certs, tokens) = store.list_agents().unwrap();
            assert_eq!(certs.len(), 2, "{backend}");
            assert!(tokens.is_empty(), "used and expired tokens are not pending");

            store
                .create_agent_token("edge", Duration::from_secs(60))
                .unwrap();
            assert_eq!(store.revoke_agents("other").unwrap(), 0);
            assert_eq!(store.revoke_agents("edge").unwrap(), 2, "{backend}");
            assert!(store
                .agent_cert(&record.fingerprint)
                .unwrap()
                .unwrap()
                .revoked_us
                .is_some());
            // A renewal of a revoked certificate is not recorded.
            let (_, late) = issue().unwrap();
            assert!(!store.record_renewal(&record.fingerprint, &late).unwrap());
            assert!(store.agent_cert(&late.fingerprint).unwrap().is_none());
            assert_eq!(
                store
                    .revoked_agent_certs(&[record.fingerprint.clone(), "unknown".into()])
                    .unwrap()
                    .len(),
                2
            );
            let (_, tokens) = store.list_agents().unwrap();
            assert!(tokens.is_empty(), "a revocation drops the unused tokens");
        }
    }
}
