//! Kept-alive HTTP/1.1 connections to one upstream, for the relay's short exchanges.
//!
//! hyper-util's pooled client did more per call than a relayed request needs: it cloned its
//! connector for every request, raced a new connection against every checkout (so wrk's 16
//! connections made the gateway open 22 to the sandbox), and spawned a task per response to
//! put its connection back. Here a connection goes back the moment its response
//! body ends, and a new one is opened only when none is idle. Like hyper-util, it sends a
//! request again when the connection it took was closed before the request went out; unlike it,
//! also a request without a body that was written to a connection the upstream was closing
//! (which hyper-util answered with "connection closed before message completed").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use tower_service::Service;

use super::dial::Dialer;

use crate::body::Body;

/// Idle connections are closed after this long (what hyper-util's client was configured with):
/// an upstream that closes them first would otherwise fail the next request sent on one.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A safe request sent on a connection idle at least this long keeps a copy to send again if
/// the upstream closed the connection meanwhile (under load, connections are reused sooner).
const RESEND_AFTER_IDLE: Duration = Duration::from_millis(50);
/// Idle connections beyond this many are closed as they come back.
const MAX_IDLE: usize = 256;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No connection to the upstream could be made (so the request never went out). It reads as
/// the connector's error, causes included.
#[derive(Debug)]
pub struct ConnectError(BoxError);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

pub struct Pool {
    connector: HttpsConnector<Dialer>,
    /// `scheme://authority`: what the connector dials.
    origin: Uri,
    host: HeaderValue,
    /// The most recently used at the back: it is taken first, and the front ages out.
    idle: Mutex<VecDeque<Idle>>,
    reaping: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection lent to one exchange, to give back once its response has ended.
pub struct Lease {
    pool: Arc<Pool>,
    sender: SendRequest<Body>,
}

impl Pool {
    pub fn new(connector: HttpsConnector<Dialer>, origin: Uri) -> Pool {
        Pool {
            host: host_header(&origin),
            connector,
            origin,
            idle: Mutex::new(VecDeque::new()),
            reaping: AtomicBool::new(false),
        }
    }

    /// Sends `req` (its URI in origin form: path and query) over an idle connection, or a new
    /// one when none is idle or the idle ones turn out to be closed.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), BoxError> {
        req.headers_mut().insert(header::HOST, self.host.clone());
        loop {
            let (mut sender, idle_for) = match self.checkout() {
                Some((sender, since)) => (sender, Some(since.elapsed())),
                None => (self.connect().await?, None),
            };
            // An upstream may close a connection that sat idle just as a request is written to
            // it; the request is then lost without an answer. One that is safe to send twice
            // (no body, a method that reads) keeps a copy for that case, which is rare enough
            // that connections reused at once skip the copy.
            let copy = match idle_for {
                Some(idle) if idle >= RESEND_AFTER_IDLE => resendable_copy(&req),
                _ => None,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool = self.clone();
                    return Ok((resp, Lease { pool, sender }));
                }
                Err(mut err) => match (err.take_message(), copy) {
                    // Nothing was sent on a kept-alive connection that the upstream closed
                    // meanwhile: the request goes out again on another.
                    (Some(unsent), _) if idle_for.is_some() => req = unsent,
                    (None, Some(copy)) if err.error().is_incomplete_message() => req = copy,
                    _ => return Err(err.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open, and since when it is idle.
    fn checkout(&self) -> Option<(SendRequest<Body>, Instant)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { sender, since }) = idle.pop_back() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some((sender, since));
            }
        }
        None
    }

    fn put(self: &Arc<Self>, sender: SendRequest<Body>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        expire(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: now });
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, BoxError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(ConnectError)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(ConnectError)?;
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("upstream connection ended: {err}");
            }
        });
        self.reap();
        Ok(sender)
    }

    /// Closes idle connections as they age, while the pool is in use.
    fn reap(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 3).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                expire(&mut idle, Instant::now());
            }
        });
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// The Host header for `origin`: its port only when not the scheme's default, as clients write
/// it (a front proxy that routes by host may not match `name:443`).
fn host_header(origin: &Uri) -> HeaderValue {
    let host = origin.host().unwrap_or_default();
    let default_port = if origin.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    let value = match origin.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

/// A copy of `req` to send again if the connection it went out on turns out closed: only for
/// requests without a body and with a method that only reads.
fn resendable_copy(req: &Request<Body>) -> Option<Request<Body>> {
    use http_body::Body as _;
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

fn expire(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

impl Lease {
    /// The response has ended: the connection may carry the next request.
    pub fn give_back(self) {
        let Lease { pool, mut sender } = self;
        if sender.is_ready() {
            pool.put(sender);
        } else if !sender.is_closed() {
            // The connection itself has not yet seen the exchange end (a poll behind the
            // body, on another thread): it comes back once it has.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.put(sender);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A plain-HTTP upstream that answers every request with its own connection's number,
    /// and closes each connection after `per_connection` requests.
    async fn upstream(per_connection: usize) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let served = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let host = req.headers()[header::HOST].to_str().unwrap().to_string();
                            let mut resp = Response::new(format!("{n} {} {host}", req.uri()));
                            if served >= per_connection {
                                resp.headers_mut()
                                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (origin_of(addr), accepted)
    }

    fn origin_of(addr: std::net::SocketAddr) -> Uri {
        format!("http://{addr}").parse().unwrap()
    }

    fn pool(origin: Uri) -> Arc<Pool> {
        let http = Dialer::new(None);
        // Plain HTTP here: the TLS settings only have to be valid.
        let ca = crate::tls::Ca::generate("test CA").unwrap();
        let roots = crate::tls::Roots::Pem(ca.cert_pem().into_bytes());
        let tls = crate::tls::client_config(&roots, None).unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Arc::new(Pool::new(connector, origin))
    }

    async fn get(pool: &Arc<Pool>, path: &str) -> String {
        let req = Request::builder()
            .uri(path)
            .body(crate::body::empty())
            .unwrap();
        let (resp, lease) = pool.send(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        lease.give_back();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_carries_the_next_request_once_its_response_has_ended() {
        let (origin, accepted) = upstream(usize::MAX).await;
        let pool = pool(origin.clone());
        let host = origin.authority().unwrap().as_str().to_string();
        for i in 0..5 {
            let answer = get(&pool, &format!("/api/{i}?x=y")).await;
            assert_eq!(answer, format!("0 /api/{i}?x=y {host}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Two at once need two connections, and both stay for what comes next.
        let (a, b) = tokio::join!(get(&pool, "/a"), get(&pool, "/b"));
        assert!(a.ends_with(&format!("/a {host}")) && b.ends_with(&format!("/b {host}")));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        for _ in 0..50 {
            if pool.idle_count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[test]
    fn the_host_header_names_the_port_only_when_it_is_not_the_default() {
        let host = |origin: &str| host_header(&origin.parse().unwrap());
        assert_eq!(host("https://k8s.example.com:443/"), "k8s.example.com");
        assert_eq!(host("https://k8s.example.com/"), "k8s.example.com");
        assert_eq!(
            host("https://k8s.example.com:6443/"),
            "k8s.example.com:6443"
        );
        assert_eq!(host("http://10.0.0.1:80/"), "10.0.0.1");
        assert_eq!(host("http://[::1]:8080/"), "[::1]:8080");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        // Each connection answers one request and closes.
        let (origin, accepted) = upstream(1).await;
        let pool = pool(origin);
        for i in 0..3 {
            let answer = get(&pool, "/x").await;
            assert!(answer.starts_with(&format!("{i} ")), "{answer}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// An upstream that answers one request per connection with keep-alive, then closes the
    /// connection anyway (as servers do with idle connections): the next request must not fail.
    #[tokio::test]
    async fn a_kept_alive_connection_closed_by_the_upstream_is_replaced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = origin_of(listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        let pool = pool(origin);
        // Right after the close, then after a pause.
        assert_eq!(get(&pool, "/a").await, "ok");
        assert_eq!(get(&pool, "/b").await, "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&pool, "/c").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// The upstream closes an idle connection after the pool took it back but before the pool
    /// noticed: a request without a body that finds it closed goes out again on a new one.
    #[tokio::test]
    async fn a_request_that_finds_its_connection_closed_goes_out_on_another() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = origin_of(listener.local_addr().unwrap());
        let (close, closing) = std::sync::mpsc::channel::<()>();
        // A blocking server on its own thread, so that it closes while the test's runtime
        // (one thread) is held up and cannot see the close before sending on the connection.
        std::thread::spawn(move || {
            for (n, tcp) in listener.incoming().enumerate() {
                let mut tcp = tcp.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let read = tcp.read(&mut buf).unwrap();
                    if read == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..read]);
                }
                let body = format!("connection {n}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(answer.as_bytes()).unwrap();
                let _ = closing.recv();
                drop(tcp);
            }
        });
        let pool = pool(origin);
        assert_eq!(get(&pool, "/a").await, "connection 0");
        assert_eq!(pool.idle_count(), 1);
        close.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(get(&pool, "/b").await, "connection 1");

        // A request with a body is not sent twice: it fails, and the next one gets through.
        close.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let post = Request::builder()
            .method(http::Method::POST)
            .uri("/c")
            .body(crate::body::full("x"))
            .unwrap();
        let err = pool.send(post).await.err().unwrap();
        assert!(
            crate::relay::error_chain(&*err).contains("connection closed"),
            "{err}"
        );
        let told = crate::relay::failure_message("cluster dev", &*err);
        assert!(
            told.starts_with("cluster dev closed the connection before answering")
                && told.contains("check before sending it again"),
            "{told}"
        );
        assert_eq!(get(&pool, "/d").await, "connection 2");
        close.send(()).unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = origin_of(listener.local_addr().unwrap());
        drop(listener);
        let req = Request::builder()
            .uri("/x")
            .body(crate::body::empty())
            .unwrap();
        let err = pool(origin).send(req).await.err().unwrap();
        assert!(
            crate::relay::error_chain(&*err).contains("refused"),
            "{err}"
        );
    }
}
