//! The loopback HTTPS proxy between kubectl (or any Kubernetes client) and the gateway.
//!
//! One engine serves both ways of using ztk:
//! - `ztk kubectl` starts one for a single kubectl run ([`Access::Run`]): kubectl presents a
//!   per-run secret and every call belongs to that run's command.
//! - `ztk proxy` is the persistent one behind the generated kubeconfig ([`Access::Issued`]):
//!   clients present credentials issued by `ztk credential`, which name the cluster and the
//!   command the plugin recorded. The cluster comes from the credential: a path under the
//!   kubeconfig's server (`/k8s/NAME/...`) must name the same cluster, and any other path
//!   (`kubectl get --raw /metrics` drops the server's path, and so do clients that build URLs
//!   from the host alone) goes to the credential's cluster.
//!
//! Either way the proxy checks the credential, tags each call with its command id and a request
//! id, relays it to the gateway with the user's session token (which no client ever sees), and
//! records it in the local audit store when it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::audit::model::now_us;
use crate::audit::{ApiCall, AuditSink};
use crate::body::{self, Body};
use crate::client::config::{ClientConfig, Paths};
use crate::client::credential::{constant_time_eq, CredentialKey, Rejected};
use crate::protocol::{COMMAND_ID_HEADER, KUBE_PREFIX, REQUEST_ID_HEADER};
use crate::relay::Upstream;
use crate::request_info::ParsedRequest;
use crate::tls;

/// Who may use the proxy, and where their calls go.
pub enum Access {
    /// One `ztk kubectl` run: its per-run secret, command, cluster and upstream.
    Run {
        secret: String,
        command_id: Uuid,
        user: String,
        cluster: String,
        upstream: Box<Upstream>,
    },
    /// The persistent proxy: credentials from `ztk credential` (each names its cluster, where
    /// its calls go), the session from the saved login.
    Issued {
        key: CredentialKey,
        session: Box<SessionSource>,
    },
}

/// What the proxy needs to relay and record calls.
pub struct ProxyContext {
    pub access: Access,
    pub sink: AuditSink,
    /// Calls relayed so far.
    pub calls: AtomicI64,
    /// Calls whose audit record is not yet handed to the sink.
    pub in_flight: AtomicI64,
    /// Signalled whenever a call finishes.
    pub finished: tokio::sync::Notify,
    /// Per command: calls finished since the command record was last updated (persistent proxy).
    pub activity: Mutex<HashMap<Uuid, i64>>,
    /// `[audit] mode = "fail-closed"`: refuse calls while the local store cannot be written.
    pub fail_closed: bool,
}

impl ProxyContext {
    pub fn new(access: Access, sink: AuditSink) -> ProxyContext {
        ProxyContext {
            access,
            sink,
            calls: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            finished: tokio::sync::Notify::new(),
            activity: Mutex::new(HashMap::new()),
            fail_closed: false,
        }
    }

    pub fn with_fail_closed(mut self, fail_closed: bool) -> ProxyContext {
        self.fail_closed = fail_closed;
        self
    }

    /// Waits until every call's record is handed over, or `timeout` passes (a stream kubectl
    /// left open is recorded when it closes).
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let notified = self.finished.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    /// Takes the per-command call counts gathered since the last call.
    pub fn take_activity(&self) -> HashMap<Uuid, i64> {
        std::mem::take(&mut *self.activity.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The saved login, reloaded when `ztk login` rewrites it, with one upstream per cluster.
pub struct SessionSource {
    paths: Paths,
    state: Mutex<Option<Loaded>>,
}

struct Loaded {
    stamp: Option<SystemTime>,
    config: ClientConfig,
    token: String,
    upstreams: HashMap<String, Arc<Upstream>>,
    /// When the login file was last looked at, and for which credential.
    checked: (Instant, String),
}

/// How long calls that present the credential the login was last checked for skip looking at
/// the login file again (a `stat` per call, on the request path). Every kubectl run presents a
/// credential of its own, and a new login changes every credential the plugin issues, so a
/// login switch counts at once for new clients and within this for clients already running.
const LOGIN_RECHECK: Duration = Duration::from_secs(1);

impl SessionSource {
    pub fn new(paths: Paths) -> SessionSource {
        SessionSource {
            paths,
            state: Mutex::new(None),
        }
    }

    fn stamp(&self) -> Option<SystemTime> {
        std::fs::metadata(self.paths.config_file())
            .and_then(|m| m.modified())
            .ok()
    }

    /// The user and the upstream for `cluster`, from the current login, for a call presenting
    /// `credential`.
    async fn upstream(
        &self,
        cluster: &str,
        credential: &str,
    ) -> Result<(String, Arc<Upstream>), String> {
        if let Some(found) = self.current(cluster, credential)? {
            return Ok(found);
        }
        // Reading the token can block (the OS keyring over D-Bus): off the runtime's thread, so
        // that its other tasks (open watches, exec streams) move on meanwhile.
        let stamp = self.stamp();
        let paths = self.paths.clone();
        let (config, token) =
            tokio::task::spawn_blocking(move || crate::client::token::require_session(&paths))
                .await
                .map_err(|e| format!("reading the login failed: {e}"))?
                .map_err(|e| format!("{e:#}"))?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = Some(Loaded {
            stamp,
            config,
            token,
            upstreams: HashMap::new(),
            checked: (Instant::now(), credential.to_string()),
        });
        Self::upstream_of(state.as_mut().expect("set above"), cluster)
    }

    /// `upstream` from the login already read, unless it must be read again (never read, or
    /// its file changed since).
    fn current(
        &self,
        cluster: &str,
        credential: &str,
    ) -> Result<Option<(String, Arc<Upstream>)>, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(loaded) = state.as_mut() else {
            return Ok(None);
        };
        let recent = loaded.checked.1 == credential && loaded.checked.0.elapsed() < LOGIN_RECHECK;
        if !recent {
            if loaded.stamp != self.stamp() {
                return Ok(None);
            }
            loaded.checked = (Instant::now(), credential.to_string());
        }
        Self::upstream_of(loaded, cluster).map(Some)
    }

    fn upstream_of(loaded: &mut Loaded, cluster: &str) -> Result<(String, Arc<Upstream>), String> {
        let user = loaded.config.user.clone();
        if let Some(upstream) = loaded.upstreams.get(cluster) {
            return Ok((user, upstream.clone()));
        }
        let upstream = gateway_upstream(&loaded.config, &loaded.token, cluster)
            .map_err(|e| format!("{e:#}"))?;
        let upstream = Arc::new(upstream);
        loaded
            .upstreams
            .insert(cluster.to_string(), upstream.clone());
        Ok((user, upstream))
    }

    /// The logged-in user, for records of refused calls.
    fn user(&self) -> String {
        crate::client::config::ClientConfig::load(&self.paths)
            .ok()
            .flatten()
            .map(|c| c.user)
            .unwrap_or_default()
    }

    /// The current login and token (for shipping command records).
    pub fn session(&self) -> Option<(ClientConfig, String)> {
        crate::client::token::require_session(&self.paths).ok()
    }
}

/// The gateway as an upstream for `cluster`, authenticated with the session token.
pub fn gateway_upstream(config: &ClientConfig, token: &str, cluster: &str) -> Result<Upstream> {
    let roots = config.roots()?;
    Ok(Upstream::new(
        format!("the gateway at {}", config.gateway),
        &format!("{}/k8s/{}", config.gateway, cluster),
        crate::tls::client_config(&roots, None)?,
        Some(
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the stored session token is malformed; run `ztk login`")?,
        ),
    )?)
}

pub struct LocalProxy {
    pub addr: SocketAddr,
    /// The proxy's CA, for the kubeconfig's `certificate-authority-data`.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl LocalProxy {
    /// Starts serving on an ephemeral loopback port with a fresh CA (one `ztk kubectl` run).
    pub async fn start(ctx: Arc<ProxyContext>) -> Result<LocalProxy> {
        let ca = tls::Ca::generate("ztk local proxy CA")?;
        let leaf = ca.issue_server(&["127.0.0.1".into(), "localhost".into()])?;
        let server_tls = tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the local proxy")?;
        Ok(Self::serve(ctx, listener, server_tls, ca.cert_pem()))
    }

    /// Serves on `listener` with a given TLS identity (the persistent proxy's, kept on disk).
    pub fn serve(
        ctx: Arc<ProxyContext>,
        listener: TcpListener,
        server_tls: Arc<rustls::ServerConfig>,
        ca_pem: String,
    ) -> LocalProxy {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let task = tokio::spawn(crate::serve::serve_tls(
            listener,
            server_tls,
            move |req, peer| {
                let ctx = ctx.clone();
                async move { handle(ctx, req, peer.addr).await }
            },
        ));
        LocalProxy { addr, ca_pem, task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Where a request to the persistent proxy goes, as its path says.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/k8s/NAME/rest?query`: cluster NAME (the credential's, or refused), `/rest?query`.
    Prefixed(&'a str, String),
    /// Any other path (`/api/...`, `/readyz`, `/metrics`): the credential's cluster.
    Bare,
    /// `/k8s/` with no name after it.
    NoName,
}

/// Splits `/k8s/NAME/rest?query` into the cluster and `/rest?query`.
fn route(path_and_query: &str) -> Route<'_> {
    let Some(rest) = path_and_query.strip_prefix(KUBE_PREFIX) else {
        return Route::Bare;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (cluster, tail) = rest.split_at(end);
    if cluster.is_empty() {
        return Route::NoName;
    }
    let tail = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Route::Prefixed(cluster, tail)
}

/// Whether `name` can stand as one segment of a URL path as it is (RFC 3986 unreserved
/// characters, and not a dot segment).
fn is_path_segment(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The cluster of a refused call that named none and presented no valid credential: the
/// record must name one (the gateway's ingest requires it), and none can be trusted.
const NO_CLUSTER: &str = "-";

async fn handle(
    ctx: Arc<ProxyContext>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if ctx.fail_closed && !ctx.sink.healthy() {
        let message = "ztk: the local audit store cannot be written (see `ztk audit status`); in fail-closed mode ([audit] mode in config.toml) calls are refused until it can";
        return body::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        );
    }
    let mut req = req.map(body::boxed);
    crate::relay::drop_hop_by_hop(&mut req);
    // ztk's own headers are set by the proxy alone: a client must not claim another command.
    req.headers_mut().remove(COMMAND_ID_HEADER);
    req.headers_mut().remove(REQUEST_ID_HEADER);
    let start = std::time::Instant::now();
    let uri = req.uri().clone();
    let full = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    // The cluster the path names, if any; `ztk kubectl`'s proxy serves one cluster at its root.
    let (path_cluster, path_and_query, no_name) = match &ctx.access {
        Access::Run { cluster, .. } => (Some(cluster.clone()), full, false),
        Access::Issued { .. } => match route(&full) {
            Route::Prefixed(cluster, rest) => (Some(cluster.to_string()), rest, false),
            Route::Bare => (None, full, false),
            Route::NoName => (None, full, true),
        },
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query.as_str(), None),
    };
    // Parsed once: the record names, and the gateway receives, the canonical request.
    let parsed = ParsedRequest::parse(req.method().as_str(), path, query);
    let mut call =
        ApiCall::begin_parsed(req.method(), path, query, &parsed, req.headers(), peer.ip());
    // Within the gateway's limits (a long path or query is cut, marked): the record ships.
    call.fit();
    call.cluster = path_cluster.clone().unwrap_or_else(|| NO_CLUSTER.into());
    call.request_id = Some(call.id);
    call.command_id = None;
    let id = call.id;
    let presented = crate::gateway::bearer(req.headers()).map(str::to_string);

    let (user, upstream, command_id) = match &ctx.access {
        Access::Run {
            secret,
            command_id,
            user,
            ..
        } => {
            call.user = user.clone();
            if !presented.is_some_and(|t| constant_time_eq(t.as_bytes(), secret.as_bytes())) {
                let message =
                    "ztk: this local proxy serves only the kubectl that ztk started for it";
                call.refuse(401, "unauthenticated", message, start.elapsed());
                ctx.sink.record_call(call);
                return body::refusal(StatusCode::UNAUTHORIZED, "Unauthorized", message);
            }
            (user.clone(), None, Some(*command_id))
        }
        Access::Issued { key, session } => {
            let credential = presented.as_deref().unwrap_or_default();
            let verified = key.verify(credential, path_cluster.as_deref(), now_us());
            let verified = match verified {
                Ok(verified) => verified,
                Err(rejected) => {
                    call.user = session.user();
                    let message = match rejected {
                        Rejected::Invalid => "ztk: no valid ztk credential; use a kubeconfig from `ztk kubeconfig` (its exec plugin `ztk credential` supplies one)",
                        // 401: client-go runs the exec plugin again for its next request.
                        Rejected::NoCluster => "ztk: this credential is from an older `ztk credential` and does not name its cluster, so it serves only paths under the kubeconfig's server (/k8s/CLUSTER/...); run the command again (kubectl then gets a new credential)",
                    };
                    call.refuse(401, "unauthenticated", message, start.elapsed());
                    ctx.sink.record_call(call);
                    return body::refusal(StatusCode::UNAUTHORIZED, "Unauthorized", message);
                }
            };
            let cluster = verified.cluster;
            // A credential serves its own cluster only, whatever the path asks for.
            if path_cluster.as_ref().is_some_and(|named| *named != cluster) {
                call.user = session.user();
                let named = path_cluster.as_deref().unwrap_or_default();
                let message = format!("ztk: this credential is for cluster {cluster:?}, not {named:?}; use the kubeconfig context of cluster {named:?} (ztk-{named})");
                call.refuse(403, "deny", &message, start.elapsed());
                ctx.sink.record_call(call);
                return body::refusal(StatusCode::FORBIDDEN, "Forbidden", &message);
            }
            call.cluster = cluster.clone();
            if no_name {
                call.user = session.user();
                let message = "ztk: no cluster named after /k8s/ in the path";
                call.refuse(404, "deny", message, start.elapsed());
                ctx.sink.record_call(call);
                return body::refusal(StatusCode::NOT_FOUND, "NotFound", message);
            }
            // The name goes into the gateway's path (`/k8s/NAME/`): one plain segment only.
            if !is_path_segment(&cluster) {
                call.user = session.user();
                let message = format!("ztk: the credential names the cluster {cluster:?}, which is no cluster name (letters, digits, '-', '.', '_', '~'); check the kubeconfig's `ztk credential --cluster` argument");
                call.refuse(400, "deny", &message, start.elapsed());
                ctx.sink.record_call(call);
                return body::refusal(StatusCode::BAD_REQUEST, "BadRequest", &message);
            }
            match session.upstream(&cluster, credential).await {
                Ok((user, upstream)) => (user, Some(upstream), verified.command_id),
                Err(err) => {
                    call.user = session.user();
                    let message = format!("ztk: {err}");
                    call.refuse(401, "unauthenticated", &message, start.elapsed());
                    ctx.sink.record_call(call);
                    return body::refusal(StatusCode::UNAUTHORIZED, "Unauthorized", &message);
                }
            }
        }
    };
    call.user = user;
    call.command_id = command_id;
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(ambiguity) => {
            let message = format!("ztk: refused an ambiguous request: {ambiguity}");
            call.refuse(400, "deny", &message, start.elapsed());
            ctx.sink.record_call(call);
            return body::refusal(StatusCode::BAD_REQUEST, "BadRequest", &message);
        }
    };
    if ctx.fail_closed {
        // Fail-closed: the call's record is on disk before the call goes anywhere (the final
        // record replaces it); a store that cannot take it refuses the call.
        let mut pending = call.clone();
        pending.reason = crate::audit::model::IN_PROGRESS.into();
        if !ctx.sink.record_call_committed(pending).await {
            let message = "ztk: the local audit store cannot be written (see `ztk audit status`); in fail-closed mode ([audit] mode in config.toml) calls are refused until it can";
            return body::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                message,
            );
        }
    }
    ctx.calls.fetch_add(1, Ordering::Relaxed);
    ctx.in_flight.fetch_add(1, Ordering::AcqRel);

    let mut extra = HeaderMap::new();
    if let Some(cmd) = command_id {
        if let Ok(v) = HeaderValue::from_str(&cmd.to_string()) {
            extra.insert(COMMAND_ID_HEADER, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        extra.insert(REQUEST_ID_HEADER, v);
    }
    let done_ctx = ctx.clone();
    let done = move |outcome: crate::relay::Outcome| {
        let last = !outcome.open;
        done_ctx.sink.record_call(call.finished(outcome));
        if !last {
            return;
        }
        if let (Some(cmd), Access::Issued { .. }) = (command_id, &done_ctx.access) {
            *done_ctx
                .activity
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(cmd)
                .or_default() += 1;
        }
        done_ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
        done_ctx.finished.notify_waiters();
    };
    let upstream: &Upstream = match (&ctx.access, &upstream) {
        (_, Some(upstream)) => upstream,
        (Access::Run { upstream, .. }, None) => upstream,
        (Access::Issued { .. }, None) => unreachable!("issued access always resolves an upstream"),
    };
    let path_and_query = parsed.path_and_query();
    crate::relay::relay(
        upstream,
        req,
        &path_and_query,
        parsed.long_lived,
        extra,
        None,
        done,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::{route, Route};

    #[test]
    fn routes_by_the_cluster_in_the_path_or_the_credential() {
        assert_eq!(
            route("/k8s/dev/api/v1/pods?watch=1"),
            Route::Prefixed("dev", "/api/v1/pods?watch=1".to_string())
        );
        assert_eq!(route("/k8s/dev"), Route::Prefixed("dev", "/".to_string()));
        assert_eq!(
            route("/k8s/dev?timeout=5s"),
            Route::Prefixed("dev", "/?timeout=5s".to_string())
        );
        // What `kubectl get --raw` and host-only clients send: the credential's cluster.
        for bare in [
            "/api/v1/pods",
            "/readyz",
            "/metrics",
            "/version?timeout=5s",
            "/",
            "/k8s",
        ] {
            assert_eq!(route(bare), Route::Bare, "{bare}");
        }
        assert_eq!(route("/k8s//api"), Route::NoName);
        assert_eq!(route("/k8s/?x"), Route::NoName);
    }

    #[test]
    fn only_plain_segments_name_a_cluster_upstream() {
        for ok in ["dev", "prod-eu-1", "a.b", "with_underscore", "~x"] {
            assert!(super::is_path_segment(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a?b", "a%2Fb", "a b", "é", "a#b"] {
            assert!(!super::is_path_segment(bad), "{bad}");
        }
    }
}
