//! The relay engine: forwards one HTTP request to an upstream and streams the answer back.
//!
//! Both hops use it: the local proxy relays kubectl's calls to the gateway, and the gateway
//! relays them to the cluster. Bodies are streamed in both directions and counted on the way;
//! upgrades (exec, attach, port-forward over WebSocket or SPDY) are spliced as raw bytes after
//! the `101`, so neither protocol's frames are parsed. When the exchange ends (the response body
//! finished, the client went away, or the upgraded stream closed), the caller's `done` callback
//! receives the outcome — that is where audit records are made, off the request path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::body::{self, Body, BodyError};

pub mod dial;
mod pool;

pub use dial::{Dialer, OpenFuture, Opener, Proxy};

/// The HTTP client type of the relay's connections (TLS over [`Dialer`]).
pub type HttpsClient = Client<HttpsConnector<Dialer>, Body>;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid upstream URL {0:?}: use https://host[:port][/path]")]
    BadUrl(String),
    #[error("invalid tls-server-name {0:?}")]
    BadServerName(String),
    #[error(transparent)]
    Proxy(#[from] dial::ProxyError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Where requests are relayed to, with the credential to present there.
pub struct Upstream {
    /// For error messages: "the gateway at https://…", "cluster dev".
    label: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix prepended to every relayed path (no trailing slash).
    prefix: String,
    /// `scheme://authority/`: what the connectors dial.
    origin: Uri,
    /// The clients and pool; replaced when the credential's client certificate changes.
    transport: std::sync::RwLock<Arc<Transport>>,
    /// How to build a transport again (a cluster's trust, server name, proxy).
    reach: Reach,
    auth: Auth,
    health: Arc<Health>,
    /// A cluster reached with the gateway's own credential: its 401 is about that credential,
    /// not the user's session, and must not reach the client as one (kubectl would tell the user
    /// to log in).
    answers_for_credential: bool,
}

/// The connections to one upstream.
struct Transport {
    /// HTTP/2 when the upstream offers it, else HTTP/1.1: for long-lived responses (watches,
    /// followed logs), so that a thousand open watches share one connection.
    streams_client: HttpsClient,
    /// HTTP/1.1 only, kept-alive connections for short requests (an HTTP/1.1 exchange costs
    /// less CPU and latency than an HTTP/2 stream).
    short: Arc<pool::Pool>,
    /// HTTP/1.1 only, hyper-util's pooled client: for upgrades (which cannot ride on HTTP/2)
    /// and for other callers' requests to the same server.
    h1_client: HttpsClient,
    /// The credential's client certificate these connections present.
    cert_generation: u64,
}

/// What a transport is built from.
#[derive(Clone, Default)]
pub struct Reach {
    /// How the server is trusted; `None`: the TLS config given to [`Upstream::new`].
    pub trust: Option<crate::tls::ServerTrust>,
    /// A static client certificate and key (PEM), when the credential brings none.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// `tls-server-name`: the name sent (SNI) and verified instead of the URL's host.
    pub server_name: Option<String>,
    pub proxy: Option<Proxy>,
    /// Connections come from here instead of TCP (an agent's tunnel; the URL is then `http:`,
    /// the tunnel being TLS already).
    pub opener: Option<Arc<dyn Opener>>,
}

enum Auth {
    /// Replaces whatever `Authorization` the client sent.
    Fixed(Option<HeaderValue>),
    /// A cluster credential that can change (token file, exec plugin).
    Cluster(Arc<crate::cluster_auth::ClusterAuth>),
}

/// How calls to an upstream have gone lately, for `ztk gateway clusters status`.
#[derive(Default)]
pub struct Health {
    /// Microseconds since the epoch of the last answer (any status but 401 and 5xx).
    last_ok_us: AtomicI64,
    last_error: Mutex<Option<(i64, String)>>,
    /// Exchanges relayed now (an open watch or exec counts until it ends).
    in_flight: AtomicI64,
}

impl Health {
    fn ok(&self) {
        self.last_ok_us
            .store(crate::audit::model::now_us(), Ordering::Relaxed);
    }

    pub fn failed(&self, message: &str) {
        let now = crate::audit::model::now_us();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, message.into()));
    }

    /// Exchanges in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed).max(0) as u64
    }

    /// The last answer and the last failure, in microseconds since the epoch.
    pub fn snapshot(&self) -> (Option<i64>, Option<(i64, String)>) {
        let ok = self.last_ok_us.load(Ordering::Relaxed);
        let err = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ((ok > 0).then_some(ok), err)
    }
}

/// One exchange counted in its upstream's `Health::in_flight` while it lives.
struct InFlight(Arc<Health>);

impl InFlight {
    fn new(health: Arc<Health>) -> InFlight {
        health.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(health)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The credential and connections for one exchange.
struct Prepared {
    transport: Arc<Transport>,
    authorization: Option<HeaderValue>,
    generation: u64,
}

impl Upstream {
    /// An upstream reached with one TLS config and a fixed credential (the gateway, as the
    /// local proxy reaches it; tests).
    pub fn new(
        label: impl Into<String>,
        base: &str,
        tls: rustls::ClientConfig,
        authorization: Option<HeaderValue>,
    ) -> Result<Upstream, RelayError> {
        Upstream::build(
            label.into(),
            base,
            Some(tls),
            Reach::default(),
            Auth::Fixed(authorization),
        )
    }

    /// A cluster: trusted and reached as `reach` says, with `auth`'s credential, kept current.
    pub fn cluster(
        label: impl Into<String>,
        base: &str,
        reach: Reach,
        auth: Arc<crate::cluster_auth::ClusterAuth>,
    ) -> Result<Upstream, RelayError> {
        let auth = if auth.is_dynamic() {
            Auth::Cluster(auth)
        } else {
            Auth::Fixed(auth.fixed_authorization())
        };
        Ok(Upstream::build(label.into(), base, None, reach, auth)?.with_own_credential())
    }

    /// A cluster reached only through `opener` (an agent's tunnel), with no credential of the
    /// gateway's: the agent adds the cluster's.
    pub fn through(
        label: impl Into<String>,
        host: &str,
        opener: Arc<dyn Opener>,
    ) -> Result<Upstream, RelayError> {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let reach = Reach {
            opener: Some(opener),
            ..Reach::default()
        };
        Ok(Upstream::build(
            label.into(),
            &format!("http://{host}"),
            Some(tls),
            reach,
            Auth::Fixed(None),
        )?
        .with_own_credential())
    }

    /// Marks the upstream as a cluster reached with the gateway's own credential: a 401 from it
    /// is answered `503` naming the cluster (see `answers_for_credential`).
    pub fn with_own_credential(mut self) -> Upstream {
        self.answers_for_credential = true;
        self
    }

    fn build(
        label: String,
        base: &str,
        tls: Option<rustls::ClientConfig>,
        reach: Reach,
        auth: Auth,
    ) -> Result<Upstream, RelayError> {
        let uri: Uri = base
            .parse()
            .map_err(|_| RelayError::BadUrl(base.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| RelayError::BadUrl(base.to_string()))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| RelayError::BadUrl(base.to_string()))?;
        if scheme != http::uri::Scheme::HTTPS && scheme != http::uri::Scheme::HTTP {
            return Err(RelayError::BadUrl(base.to_string()));
        }
        if let Some(name) = &reach.server_name {
            rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| RelayError::BadServerName(name.clone()))?;
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| RelayError::BadUrl(base.to_string()))?;
        let tls = match tls {
            Some(tls) => tls,
            None => reach.tls_config(None)?,
        };
        let transport = Transport::new(&origin, &reach, tls, 0);
        Ok(Upstream {
            label,
            scheme,
            authority,
            prefix,
            origin,
            transport: std::sync::RwLock::new(Arc::new(transport)),
            reach,
            auth,
            health: Arc::new(Health::default()),
            answers_for_credential: false,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// How calls to this upstream have gone.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The HTTP/1.1 client with its pool of connections to this upstream, for other requests to
    /// the same server: they reuse a connection the relay already opened instead of a new TLS
    /// handshake.
    pub fn h1_client(&self) -> HttpsClient {
        self.current_transport().h1_client.clone()
    }

    fn current_transport(&self) -> Arc<Transport> {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The credential to present and the connections to use, refreshing the credential when
    /// it is due; the error names the upstream.
    async fn prepare(&self) -> Result<Prepared, String> {
        let cluster_auth = match &self.auth {
            Auth::Fixed(authorization) => {
                return Ok(Prepared {
                    transport: self.current_transport(),
                    authorization: authorization.clone(),
                    generation: 0,
                })
            }
            Auth::Cluster(auth) => auth.clone(),
        };
        let presented = cluster_auth
            .current()
            .await
            .map_err(|e| format!("{} has no usable credential: {e}", self.label))?;
        let mut transport = self.current_transport();
        if transport.cert_generation != presented.cert_generation {
            // New client certificate: new connections (the old ones finish what they carry).
            let mut slot = self.transport.write().unwrap_or_else(|e| e.into_inner());
            if slot.cert_generation != presented.cert_generation {
                let tls = self
                    .reach
                    .tls_config(presented.client_cert.as_deref())
                    .map_err(|e| format!("{}: {e}", self.label))?;
                *slot = Arc::new(Transport::new(
                    &self.origin,
                    &self.reach,
                    tls,
                    presented.cert_generation,
                ));
            }
            transport = slot.clone();
        }
        Ok(Prepared {
            transport,
            authorization: presented.authorization,
            generation: presented.generation,
        })
    }

    fn rejected(&self, generation: u64) {
        if let Auth::Cluster(auth) = &self.auth {
            auth.rejected(generation);
        }
    }
}

impl Transport {
    fn new(origin: &Uri, reach: &Reach, tls: rustls::ClientConfig, cert_generation: u64) -> Self {
        let connector = |http2: bool| connector(tls.clone(), http2, reach);
        // Through a tunnel there is no ALPN to offer HTTP/2: long-lived exchanges speak it
        // outright on one stream (the agent's server detects it), so a thousand watches share
        // one stream as they would share one TLS connection.
        let streams_client = if reach.opener.is_some() {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .http2_only(true)
                .build(connector(false))
        } else {
            build_client(connector(true))
        };
        Transport {
            short: Arc::new(pool::Pool::new(connector(false), origin.clone())),
            streams_client,
            h1_client: build_client(connector(false)),
            cert_generation,
        }
    }
}

impl Reach {
    /// The TLS config for this trust, with `cert` (from the credential) or the static one.
    fn tls_config(
        &self,
        cert: Option<&(Vec<u8>, Vec<u8>)>,
    ) -> Result<rustls::ClientConfig, RelayError> {
        let trust = self
            .trust
            .clone()
            .unwrap_or(crate::tls::ServerTrust::Verify(crate::tls::Roots::System));
        let cert = cert.or(self.client_cert.as_ref());
        Ok(crate::tls::cluster_client_config(
            &trust,
            cert.map(|(c, k)| (c.as_slice(), k.as_slice())),
        )?)
    }
}

fn connector(tls: rustls::ClientConfig, http2: bool, reach: &Reach) -> HttpsConnector<Dialer> {
    let dialer = match &reach.opener {
        Some(opener) => Dialer::through(opener.clone()),
        None => Dialer::new(reach.proxy.clone()),
    };
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = reach
        .server_name
        .as_ref()
        .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok())
    {
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let builder = builder.enable_http1();
    if http2 {
        builder.enable_http2().wrap_connector(dialer)
    } else {
        builder.wrap_connector(dialer)
    }
}

fn build_client(connector: HttpsConnector<Dialer>) -> HttpsClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// How a relayed exchange ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The status sent to the client.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From the start of `relay` to the end of the response body or upgraded stream.
    pub duration: Duration,
    /// Why the exchange failed or ended early.
    pub error: Option<String>,
    /// True for the report made when an upgraded stream opens (status 101, bytes and time so
    /// far): a stream may stay open for hours, and its record must be visible meanwhile.
    pub open: bool,
}

/// Headers that belong to one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Whether an exchange may stay open long after its request: an upgrade (exec, attach,
/// port-forward), or what the request's parse calls long-lived (a watch, followed logs). The
/// gateway tracks these for revocation.
pub fn stays_open<B>(req: &Request<B>, long_lived: bool) -> bool {
    is_upgrade(req) || long_lived
}

/// Removes the headers that belong to the client's connection (those named in `Connection`
/// and the hop-by-hop ones), keeping an upgrade's `Connection: Upgrade`. Each hop calls this
/// before it reads any header, so that a client cannot have a header it was authorized with
/// (an `Impersonate-User`, say) removed after authorization by naming it in `Connection`.
pub fn drop_hop_by_hop<B>(req: &mut Request<B>) {
    let upgrade = is_upgrade(req);
    strip_hop_by_hop(req.headers_mut(), upgrade);
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        if keep_upgrade && name == header::CONNECTION {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Set to `true` to close a relayed stream (response body or upgraded connection) early: the
/// gateway does this when the session behind an open watch or exec is revoked.
pub type Cancel = tokio::sync::watch::Receiver<bool>;

/// Why a cancelled stream ended, as the audit record says.
pub const CANCELLED: &str = "closed by the gateway: the session is no longer valid";

/// Resolves when `cancel` turns true; never, if its sender goes away first.
async fn cancelled(mut cancel: Cancel) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Relays `req` to `upstream` at `path_and_query` (relative to the upstream's prefix), adding
/// `extra` headers. `long_lived` (a watch, followed logs: from the request's one parse) sends it
/// over the HTTP/2 client, where such streams share a connection. Calls `done` exactly once
/// with the final outcome, when the exchange is over; for an upgraded stream (exec, attach, port-forward) it is called once before that, with
/// `open: true`, when the stream starts. With `cancel`, the stream ends when it fires.
pub async fn relay<F>(
    upstream: &Upstream,
    mut req: Request<Body>,
    path_and_query: &str,
    long_lived: bool,
    extra: HeaderMap,
    cancel: Option<Cancel>,
    done: F,
) -> Response<Body>
where
    F: FnMut(Outcome) + Send + Sync + 'static,
{
    // Counted until the final outcome, or until the exchange is dropped without one (the
    // client went away while the upstream was still answering).
    let mut in_flight = Some(InFlight::new(upstream.health.clone()));
    let mut inner = done;
    let mut done = move |outcome: Outcome| {
        if !outcome.open {
            in_flight.take();
        }
        inner(outcome)
    };
    let start = Instant::now();
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    let bytes_in = Arc::new(AtomicU64::new(0));
    let body = BodyExt::boxed(Counted {
        inner: body,
        count: bytes_in.clone(),
        on_end: None,
    });

    // Short exchanges go over `upstream.short`, which takes the origin form (path and query);
    // hyper-util's clients take the absolute form.
    let short = !upgrade && !long_lived;
    let target = if short {
        format!("{}{}", upstream.prefix, path_and_query)
    } else {
        format!(
            "{}://{}{}{}",
            upstream.scheme, upstream.authority, upstream.prefix, path_and_query
        )
    };
    parts.uri = match target.parse() {
        Ok(uri) => uri,
        Err(_) => {
            let msg = format!("invalid request path {path_and_query:?}");
            done(outcome(400, &bytes_in, 0, start, Some(msg.clone())));
            return body::refusal(StatusCode::BAD_REQUEST, "BadRequest", &msg);
        }
    };
    // The credential (refreshed if due) and the connections that present it.
    let prepared = match upstream.prepare().await {
        Ok(prepared) => prepared,
        Err(msg) => {
            upstream.health.failed(&msg);
            done(outcome(503, &bytes_in, 0, start, Some(msg.clone())));
            return body::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("ztk: {msg}"),
            );
        }
    };
    // The client picks HTTP/2 or HTTP/1.1 per connection; the request itself must not insist.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    if let Some(auth) = &prepared.authorization {
        parts.headers.insert(header::AUTHORIZATION, auth.clone());
    }
    for (name, value) in extra.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }

    // Nothing borrowed from `upstream` may live across an await (it would tie the future's
    // Send-ness to a lifetime); the pool and the clients are cheap shared handles.
    let label = upstream.label.clone();
    let req = Request::from_parts(parts, body);
    let transport = prepared.transport;
    let sent = if short {
        let pool = transport.short.clone();
        match pool.send(req).await {
            Ok((resp, lease)) => Ok((resp, Some(lease))),
            Err(err) => Err(failure(&label, &*err)),
        }
    } else {
        let client = if upgrade {
            transport.h1_client.clone()
        } else {
            transport.streams_client.clone()
        };
        match client.request(req).await {
            Ok(resp) => Ok((resp, None)),
            Err(err) => Err(failure(&label, &err)),
        }
    };
    let (mut resp, lease) = match sent {
        Ok(sent) => sent,
        Err((msg, unreachable)) => {
            upstream.health.failed(&msg);
            // Not reached at all: unavailable; reached, then lost: a bad gateway.
            let status = if unreachable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            done(outcome(
                status.as_u16(),
                &bytes_in,
                0,
                start,
                Some(msg.clone()),
            ));
            return body::refusal(status, "ServiceUnavailable", &format!("ztk: {msg}"));
        }
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        // The upstream refused the credential itself: refresh it before the next call.
        upstream.rejected(prepared.generation);
        let msg = format!("{label} refused the gateway's credential (401 Unauthorized)");
        upstream.health.failed(&msg);
        if upstream.answers_for_credential {
            drop(resp);
            done(outcome(503, &bytes_in, 0, start, Some(msg.clone())));
            return body::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("ztk: {msg}; an administrator must renew it (`ztk gateway clusters status` shows the cluster's state)"),
            );
        }
    } else {
        upstream.health.ok();
    }

    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            let mut opened = outcome(101, &bytes_in, 0, start, None);
            opened.open = true;
            done(opened);
            tokio::spawn(async move {
                let to_upstream = Arc::new(AtomicU64::new(0));
                let to_client = Arc::new(AtomicU64::new(0));
                let spliced = splice(
                    client_upgrade,
                    upstream_upgrade,
                    to_upstream.clone(),
                    to_client.clone(),
                );
                let result = match cancel {
                    Some(cancel) => tokio::select! {
                        r = spliced => r,
                        _ = cancelled(cancel) => Err(CANCELLED.to_string()),
                    },
                    None => spliced.await,
                };
                done(Outcome {
                    status: 101,
                    bytes_in: bytes_in.load(Ordering::Relaxed)
                        + to_upstream.load(Ordering::Relaxed),
                    bytes_out: to_client.load(Ordering::Relaxed),
                    duration: start.elapsed(),
                    error: result.err().map(|e| format!("upgraded stream failed: {e}")),
                    open: false,
                });
            });
            return Response::from_parts(parts, body::empty());
        }
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let status = status.as_u16();
    let on_end: EndFn = Box::new(move |bytes_out, error| {
        // A response read to its end leaves its connection ready for the next request.
        if let (Some(lease), None) = (lease, &error) {
            lease.give_back();
        }
        done(outcome(status, &bytes_in, bytes_out, start, error));
    });
    let mut inner = body::boxed(body);
    if let Some(cancel) = cancel {
        inner = BodyExt::boxed(Cancellable {
            inner,
            cancel: Mutex::new(Box::pin(cancelled(cancel))),
        });
    }
    let body = BodyExt::boxed(Counted {
        inner,
        count: Arc::new(AtomicU64::new(0)),
        on_end: Some(Mutex::new(Some(on_end))),
    });
    Response::from_parts(parts, body)
}

/// Copies bytes both ways between the two upgraded connections until both sides close,
/// counting them as they pass (so that a stream that ends badly still reports its bytes).
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    to_upstream: Arc<AtomicU64>,
    to_client: Arc<AtomicU64>,
) -> Result<(), String> {
    let client = client
        .await
        .map_err(|e| format!("client upgrade failed: {e}"))?;
    let upstream = upstream
        .await
        .map_err(|e| format!("upstream upgrade failed: {e}"))?;
    let mut client = CountingIo::new(TokioIo::new(client), to_upstream);
    let mut upstream = CountingIo::new(TokioIo::new(upstream), to_client);
    // Upstream first: each round reads what the upstream sent (its last bytes, its end of
    // stream) before writing the client's bytes to it, so that an upstream that ended its
    // stream and then went away is seen to have ended, not to have failed.
    match tokio::io::copy_bidirectional(&mut upstream, &mut client).await {
        Ok(_) => Ok(()),
        // Peers (kubectl, and servers too) often drop the TCP connection without TLS
        // close_notify once a stream is over: that is how such streams end, not a failure. The
        // copy stopped at the truncation: end the other side's stream properly (close_notify,
        // then a FIN) rather than drop its connection too, which would reach the next hop as
        // another truncation, or as a reset when that hop's own close was on its way here.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut upstream).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
            })
            .await;
            Ok(())
        }
        // A client that drops its connection while bytes are still in flight to it (the
        // server's close frame) makes its kernel answer with a reset: the same end, seen from
        // here as ECONNRESET or EPIPE.
        Err(e) if is_reset(&e) && client.reset => Ok(()),
        // The same from the other side: an upstream that has ended its stream and then closes
        // while the client's last bytes (the reply to its close frame) are on their way to it.
        // Everything it sent was delivered; an upstream that resets before its end is a failure.
        Err(e) if is_reset(&e) && upstream.reset && upstream.ended => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// How long `splice` waits to end a stream properly (a peer that does not read can hold it up).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// An upgraded connection that counts the bytes read from it and notes whether it ended its
/// stream and whether it was reset (so `splice` can tell how the stream ended).
struct CountingIo<T> {
    inner: T,
    read: Arc<AtomicU64>,
    /// The peer ended its stream (a read returned end of stream).
    ended: bool,
    reset: bool,
}

impl<T> CountingIo<T> {
    fn new(inner: T, read: Arc<AtomicU64>) -> Self {
        CountingIo {
            inner,
            read,
            ended: false,
            reset: false,
        }
    }

    fn note_reset<R>(&mut self, poll: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        if let Poll::Ready(Err(e)) = &poll {
            self.reset |= is_reset(e);
        }
        poll
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let (before, room) = (buf.filled().len(), buf.remaining());
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        if matches!(poll, Poll::Ready(Ok(()))) && n == 0 && room > 0 {
            self.ended = true;
        }
        self.note_reset(poll)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_reset(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_reset(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note_reset(poll)
    }
}

fn outcome(
    status: u16,
    bytes_in: &AtomicU64,
    bytes_out: u64,
    start: Instant,
    error: Option<String>,
) -> Outcome {
    Outcome {
        status,
        bytes_in: bytes_in.load(Ordering::Relaxed),
        bytes_out,
        duration: start.elapsed(),
        error,
        open: false,
    }
}

/// Why a request got no answer from `label`, and whether no connection could be made at all.
fn failure(label: &str, err: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut cause = Some(err);
    let mut unreachable = false;
    while let Some(e) = cause {
        if e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
            || e.downcast_ref::<pool::ConnectError>().is_some()
        {
            unreachable = true;
        }
        cause = e.source();
    }
    (failure_message(label, err), unreachable)
}

/// Why a request got no answer from `label`, for the client and the record. An upstream that
/// closed the connection after the request went out may have carried it out: a client must
/// check before sending it again, not take it for unreachable.
pub(crate) fn failure_message(label: &str, err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_incomplete_message())
        {
            return format!(
                "{label} closed the connection before answering ({}); the request may have been carried out: check before sending it again",
                error_chain(err)
            );
        }
        cause = e.source();
    }
    format!("cannot reach {label}: {}", error_chain(err))
}

/// Every cause of an error on one line: hyper's top-level messages alone say little.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

type EndFn = Box<dyn FnOnce(u64, Option<String>) + Send>;

/// A body that fails with `CANCELLED` when its cancel signal fires, so hyper ends the stream.
struct Cancellable {
    inner: Body,
    // A Mutex only to make the body Sync; `get_mut` never locks.
    cancel: Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl HttpBody for Cancellable {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let fired = match self.cancel.get_mut() {
            Ok(fut) => fut.as_mut().poll(cx).is_ready(),
            Err(_) => false,
        };
        if fired {
            return Poll::Ready(Some(Err(BodyError::new(CANCELLED))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that counts the bytes passing through and reports once when it ends, fails, or is
/// dropped early (a client that goes away from a watch).
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    // A Mutex only to make the body Sync; it is never contended.
    on_end: Option<Mutex<Option<EndFn>>>,
}

impl Counted {
    fn finish(&mut self, error: Option<String>) {
        if let Some(slot) = self.on_end.take() {
            if let Some(f) = slot.into_inner().ok().flatten() {
                f(self.count.load(Ordering::Relaxed), error);
            }
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(err))) => {
                let msg = format!("body failed: {err}");
                self.finish(Some(msg));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.on_end.is_some() {
            let ended = self.inner.is_end_stream();
            self.finish((!ended).then(|| "client closed the stream".to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers upgrades with 101 and echoes the upgraded bytes.
    async fn echo_upstream(ca: &crate::tls::Ca) -> std::net::SocketAddr {
        let leaf = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        let tls =
            crate::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::serve::serve_tls(
            listener,
            tls,
            |mut req, _| async move {
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let mut io = TokioIo::new(on.await.unwrap());
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(header::UPGRADE, "echo")
                    .header(header::CONNECTION, "upgrade")
                    .body(body::empty())
                    .unwrap()
            },
        ));
        addr
    }

    /// A relaying hop (as the gateway runs it) in front of the upstream at `upstream_addr`, and
    /// a client upgraded through it: the client's raw connection, the hop's cancel switch and
    /// the outcomes it reports. With `zero_linger`, closing the client sends a reset.
    struct Through {
        io: TokioIo<hyper::upgrade::Upgraded>,
        cancel: tokio::sync::watch::Sender<bool>,
        outcomes: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    }

    async fn upgrade_through_a_hop(
        ca: &crate::tls::Ca,
        upstream_addr: std::net::SocketAddr,
        zero_linger: bool,
    ) -> Through {
        crate::tls::install_crypto_provider();
        let roots = crate::tls::Roots::Pem(ca.cert_pem().into_bytes());
        let upstream = Arc::new(
            Upstream::new(
                "test upstream",
                &format!("https://{upstream_addr}"),
                crate::tls::client_config(&roots, None).unwrap(),
                None,
            )
            .unwrap(),
        );
        let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
        let (done_tx, outcomes) = tokio::sync::mpsc::unbounded_channel();

        let leaf = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        let tls =
            crate::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        tokio::spawn(crate::serve::serve_tls(listener, tls, move |req, _| {
            let (upstream, cancel, done_tx) =
                (upstream.clone(), cancel_rx.clone(), done_tx.clone());
            async move {
                relay(
                    &upstream,
                    req.map(body::boxed),
                    "/exec",
                    false,
                    HeaderMap::new(),
                    Some(cancel),
                    move |outcome| {
                        let _ = done_tx.send(outcome);
                    },
                )
                .await
            }
        }));

        // The client: an HTTP/1.1 upgrade over TLS, then raw bytes.
        let tcp = tokio::net::TcpStream::connect(front).await.unwrap();
        if zero_linger {
            tcp.set_zero_linger().unwrap();
        }
        let mut client_tls = crate::tls::client_config(&roots, None).unwrap();
        client_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
        let stream = connector
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        let req = Request::builder()
            .uri("/exec")
            .header(header::HOST, "127.0.0.1")
            .header(header::UPGRADE, "echo")
            .header(header::CONNECTION, "upgrade")
            .body(body::empty())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        Through {
            io: TokioIo::new(hyper::upgrade::on(resp).await.unwrap()),
            cancel,
            outcomes,
        }
    }

    /// The hop's final outcome (after the one that reported the stream open).
    async fn final_outcome(
        outcomes: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    ) -> Outcome {
        tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let outcome = outcomes.recv().await.unwrap();
                if !outcome.open {
                    return outcome;
                }
            }
        })
        .await
        .unwrap()
    }

    /// A client that resets its connection once it has its answer (kubectl, with bytes still
    /// in flight to it) ends the stream normally: no error in the record.
    #[tokio::test]
    async fn a_client_reset_ends_an_upgraded_stream_without_error() {
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let upstream_addr = echo_upstream(&ca).await;
        let Through {
            mut io,
            mut outcomes,
            ..
        } = upgrade_through_a_hop(&ca, upstream_addr, true).await;
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        // Bytes still on their way to the client when it goes.
        io.write_all(b"more").await.unwrap();
        drop(io);
        let outcome = final_outcome(&mut outcomes).await;
        assert_eq!(outcome.status, 101);
        assert_eq!(outcome.error, None, "{outcome:?}");
    }

    /// How `scripted_upstream` ends the stream after sending `bye`.
    #[derive(Clone, Copy)]
    enum Ending {
        /// Ends its stream (TLS close_notify, a FIN), then resets the connection once the
        /// client's reply has reached it: a server that closes while the reply to its close
        /// frame is in flight.
        EndThenReset,
        /// Resets the connection once the client's reply has reached it: a server that fails
        /// mid-stream.
        Reset,
        /// Closes the TCP connection without TLS close_notify, as many servers do.
        Truncate,
    }

    /// An upstream that answers an upgrade with 101, sends `bye` and ends as `ending` says;
    /// `ended` fires once it has.
    async fn scripted_upstream(
        ca: &crate::tls::Ca,
        ending: Ending,
        ended: tokio::sync::oneshot::Sender<()>,
    ) -> std::net::SocketAddr {
        let leaf = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        let tls =
            crate::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(tls)
                .accept(tcp)
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(tls.read_u8().await.unwrap());
            }
            tls.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nbye",
            )
            .await
            .unwrap();
            match ending {
                Ending::Truncate => drop(tls.into_inner().0),
                Ending::EndThenReset | Ending::Reset => {
                    if matches!(ending, Ending::EndThenReset) {
                        tls.shutdown().await.unwrap();
                    }
                    let mut reply = [0u8; 3];
                    tls.read_exact(&mut reply).await.unwrap();
                    tls.get_ref().0.set_zero_linger().unwrap();
                    drop(tls);
                }
            }
            let _ = ended.send(());
        });
        addr
    }

    /// An upstream that has ended its stream and then resets the connection (the client's last
    /// bytes were still on their way) ends the stream normally; everything it sent arrived.
    #[tokio::test]
    async fn an_upstream_reset_after_its_end_ends_an_upgraded_stream_without_error() {
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        let upstream_addr = scripted_upstream(&ca, Ending::EndThenReset, reset_tx).await;
        let Through {
            mut io,
            mut outcomes,
            ..
        } = upgrade_through_a_hop(&ca, upstream_addr, false).await;
        let mut answer = Vec::new();
        io.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"bye");
        io.write_all(b"ack").await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), reset_rx)
            .await
            .unwrap()
            .unwrap();
        // The client ends its side too: the hop's close_notify to the upstream meets the reset.
        io.shutdown().await.unwrap();
        drop(io);
        let outcome = final_outcome(&mut outcomes).await;
        assert_eq!(outcome.status, 101);
        assert_eq!(outcome.error, None, "{outcome:?}");
        assert_eq!(outcome.bytes_out, 3);
    }

    /// An upstream that resets the connection before it has ended its stream failed: the
    /// record says so.
    #[tokio::test]
    async fn an_upstream_reset_before_its_end_is_recorded_as_a_failure() {
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        let upstream_addr = scripted_upstream(&ca, Ending::Reset, reset_tx).await;
        let Through {
            mut io,
            mut outcomes,
            ..
        } = upgrade_through_a_hop(&ca, upstream_addr, false).await;
        let mut answer = [0u8; 3];
        io.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"bye");
        io.write_all(b"ack").await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), reset_rx)
            .await
            .unwrap()
            .unwrap();
        let outcome = final_outcome(&mut outcomes).await;
        assert!(
            outcome
                .error
                .as_deref()
                .is_some_and(|e| e.contains("reset")),
            "{outcome:?}"
        );
    }

    /// An upstream that drops its connection without TLS close_notify ends the stream: the hop
    /// ends the client's stream properly (close_notify, not a truncation or a reset of its own)
    /// and records no error.
    #[tokio::test]
    async fn an_upstream_that_closes_without_close_notify_ends_the_stream_properly() {
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let upstream_addr = scripted_upstream(&ca, Ending::Truncate, ended_tx).await;
        let Through {
            mut io,
            mut outcomes,
            ..
        } = upgrade_through_a_hop(&ca, upstream_addr, false).await;
        tokio::time::timeout(Duration::from_secs(3), ended_rx)
            .await
            .unwrap()
            .unwrap();
        let mut answer = Vec::new();
        io.read_to_end(&mut answer)
            .await
            .expect("the stream ends with close_notify");
        assert_eq!(answer, b"bye");
        let outcome = final_outcome(&mut outcomes).await;
        assert_eq!(outcome.error, None, "{outcome:?}");
        assert_eq!(outcome.bytes_out, 3);
    }

    /// An exec-like upgraded stream is cut when its cancel switch flips, and reported so.
    #[tokio::test]
    async fn cancel_closes_an_upgraded_stream() {
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let upstream_addr = echo_upstream(&ca).await;
        let Through {
            mut io,
            cancel,
            mut outcomes,
        } = upgrade_through_a_hop(&ca, upstream_addr, false).await;
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        cancel.send(true).unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            let mut rest = Vec::new();
            let _ = io.read_to_end(&mut rest).await;
        })
        .await;
        assert!(closed.is_ok(), "the upgraded stream stayed open");
        // The stream reports its opening first; the final outcome follows.
        let outcome = final_outcome(&mut outcomes).await;
        assert_eq!(outcome.status, 101);
        assert!(
            outcome
                .error
                .as_deref()
                .is_some_and(|e| e.contains(CANCELLED)),
            "{outcome:?}"
        );
    }
}
