//! The TLS accept loop shared by the gateway, the loopback proxy and the sandbox.
//!
//! One port serves HTTP/2 (ordinary kubectl requests, chosen by ALPN) and HTTP/1.1 with
//! upgrades (exec, attach, port-forward open a fresh connection without ALPN).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// For the audit record's source IP.
    pub addr: SocketAddr,
    /// Whether the client presented a certificate that the server's client verifier accepted
    /// (only servers configured with client authentication ask for one).
    pub verified_client_cert: bool,
}

/// What a server allows each client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long an HTTP/1.1 client may take to send a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (None: never).
    pub idle_timeout: Option<Duration>,
    /// At most this many connections at once from one address (0: no limit).
    pub max_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_per_address: 0,
        }
    }
}

/// Serves `handler` on every TLS connection accepted from `listener`, until the task is dropped.
pub async fn serve_tls<F, Fut>(listener: TcpListener, tls: Arc<rustls::ServerConfig>, handler: F)
where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_tls_with(listener, tls, Limits::default(), handler).await
}

/// Connections open per client address, for `Limits::max_per_address`.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted in `PerAddress` until dropped.
struct AddressSlot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// A connection's requests in flight and when the last one ended, for the idle timeout.
struct Activity {
    since: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `since` when a request last started or ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A request in flight on its connection, from its arrival until its response body is done
/// (or the request is dropped unanswered).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Another protocol on the same port, chosen by ALPN in the client's hello, with a TLS config
/// of its own (the agents' tunnel: a client certificate required). Its connections are handed
/// over after the handshake; no HTTP server runs on them here.
#[derive(Clone)]
pub struct SideDoor {
    pub alpn: &'static [u8],
    pub tls: Arc<rustls::ServerConfig>,
    #[allow(clippy::type_complexity)]
    pub handler: Arc<
        dyn Fn(
                tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
                SocketAddr,
            ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
            + Send
            + Sync,
    >,
}

/// Like `serve_tls`, with limits on each connection: the time to send headers, the time a
/// connection may sit idle, and the connections open at once from one address (past it a new
/// connection is closed at once).
pub async fn serve_tls_with<F, Fut>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    handler: F,
) where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_tls_routed(listener, tls, limits, handler, None).await
}

/// A TLS connection accepted by the main config, or by the side door's.
enum Accepted {
    Main(tokio_rustls::server::TlsStream<tokio::net::TcpStream>),
    Side(tokio_rustls::server::TlsStream<tokio::net::TcpStream>),
}

/// Accepts one TLS connection: with the main config, or the side door's when the client
/// asks for its ALPN protocol.
async fn accept(
    acceptor: &TlsAcceptor,
    side: Option<&SideDoor>,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<Accepted> {
    let Some(side) = side else {
        return acceptor.accept(tcp).await.map(Accepted::Main);
    };
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let wants_side = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == side.alpn));
    if wants_side {
        start
            .into_stream(side.tls.clone())
            .await
            .map(Accepted::Side)
    } else {
        start
            .into_stream(acceptor.config().clone())
            .await
            .map(Accepted::Main)
    }
}

/// `serve_tls_with`, with a [`SideDoor`].
pub async fn serve_tls_routed<F, Fut>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    handler: F,
    side: Option<SideDoor>,
) where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let per_address = Arc::new(PerAddress::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per_address.take(peer.ip(), limits.max_per_address) else {
            tracing::debug!(
                "refused a connection from {}: {} open from that address already",
                peer.ip(),
                limits.max_per_address
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let side = side.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let accepted =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(&acceptor, side.as_ref(), tcp));
            let stream = match accepted.await {
                Ok(Ok(Accepted::Main(stream))) => stream,
                Ok(Ok(Accepted::Side(side_stream))) => {
                    if let Some(side) = side {
                        (side.handler)(side_stream, peer).await;
                    }
                    return;
                }
                Ok(Err(err)) => {
                    tracing::debug!("TLS handshake with {peer} failed: {err}");
                    return;
                }
                Err(_) => return,
            };
            let addr = peer;
            let peer = Peer {
                addr,
                verified_client_cert: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty()),
            };
            let activity = Arc::new(Activity {
                since: Instant::now(),
                in_flight: AtomicUsize::new(0),
                last_ms: AtomicU64::new(0),
            });
            let tracked = activity.clone();
            let track = limits.idle_timeout.is_some();
            let service = service_fn(move |req| {
                let handler = handler.clone();
                let peer = peer.clone();
                // Only a server with an idle timeout follows its requests (a box per response).
                let in_flight = track.then(|| InFlight::new(tracked.clone()));
                async move {
                    let resp = handler(req, peer).await;
                    Ok::<_, Infallible>(match in_flight {
                        Some(in_flight) => resp.map(|inner| {
                            crate::body::boxed(Tracked {
                                inner,
                                _in_flight: in_flight,
                            })
                        }),
                        None => resp,
                    })
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let Some(idle_timeout) = limits.idle_timeout else {
                if let Err(err) = conn.await {
                    tracing::debug!("connection from {addr} ended: {err}");
                }
                return;
            };
            let check = (idle_timeout / 4).max(Duration::from_millis(100));
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!("connection from {addr} ended: {err}");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(check) => {
                        if activity.idle_for() >= idle_timeout {
                            tracing::debug!("closing the idle connection from {addr}");
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The `Sec-WebSocket-Accept` answer to a WebSocket key (RFC 6455 §4.2.2: base64(SHA-1(key +
/// GUID))).
pub fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let digest = sha1::Sha1::new()
        .chain_update(key)
        .chain_update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}
