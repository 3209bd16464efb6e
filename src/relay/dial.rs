//! Opening the connection under the relay's TLS: TCP directly, or through a cluster's
//! `proxy-url` (an HTTP proxy's `CONNECT`, or SOCKS5), as kubectl does; or a stream of an
//! agent's tunnel (an [`Opener`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::pool::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy-url {0:?}: use http://[user:password@]host:port or socks5://[user:password@]host:port")]
    BadUrl(String),
    #[error("{0} is not a proxy ztk can use: give http://[user:password@]host:port or socks5://host:port, or put the cluster's host in NO_PROXY")]
    BadEnv(String),
    #[error("the proxy {proxy} refused CONNECT to {target}: {status}")]
    Refused {
        proxy: String,
        target: String,
        status: String,
    },
    #[error("the SOCKS5 proxy {proxy} {message}")]
    Socks { proxy: String, message: String },
    #[error("the proxy {proxy} sent an invalid answer")]
    Garbled { proxy: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ProxyKind {
    /// `http://`: `CONNECT host:port`.
    Connect,
    /// `socks5://` and `socks5h://`: the proxy resolves names in both cases.
    Socks5,
}

/// A proxy from a kubeconfig's `proxy-url`.
#[derive(Clone)]
pub struct Proxy {
    kind: ProxyKind,
    /// The proxy itself, as the connector dials it (`http://host:port`).
    address: Uri,
    /// For messages: the URL without credentials.
    shown: String,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Proxy {
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let bad = || ProxyError::BadUrl(strip_credentials(url));
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let kind = match scheme {
            "http" => ProxyKind::Connect,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            _ => return Err(bad()),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, rest),
        };
        let credentials = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(user), decode(pass))
        });
        let default_port = if kind == ProxyKind::Connect { 80 } else { 1080 };
        let address: Uri = format!("http://{hostport}").parse().map_err(|_| bad())?;
        let host = address.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let port = address.port_u16().unwrap_or(default_port);
        let address: Uri = format!("http://{host}:{port}").parse().map_err(|_| bad())?;
        Ok(Proxy {
            kind,
            shown: format!("{scheme}://{host}:{port}"),
            address,
            credentials,
        })
    }
}

/// The proxy for `server` from the environment, as kubectl (Go's `ProxyFromEnvironment`)
/// chooses it when a cluster has no `proxy-url`: `HTTPS_PROXY` (or `https_proxy`) for an
/// `https://` server (a value without a scheme is `http://`), unless `NO_PROXY` (or
/// `no_proxy`) names the server or the server is `localhost` or a loopback address. Returns the
/// proxy and the variable it came from.
pub fn proxy_from_env(server: &str) -> Result<Option<(Proxy, &'static str)>, ProxyError> {
    proxy_from(server, |name| std::env::var(name).ok())
}

fn proxy_from(
    server: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<(Proxy, &'static str)>, ProxyError> {
    let any = |names: [&'static str; 2]| {
        names
            .into_iter()
            .find_map(|n| var(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
    };
    let Ok(uri) = server.parse::<Uri>() else {
        return Ok(None);
    };
    // Only for https servers: a plain http:// server would need a forwarding proxy, not CONNECT.
    if uri.scheme_str() != Some("https") {
        return Ok(None);
    }
    let Some((name, value)) = any(["HTTPS_PROXY", "https_proxy"]) else {
        return Ok(None);
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(443);
    let no_proxy = any(["NO_PROXY", "no_proxy"])
        .map(|(_, v)| v)
        .unwrap_or_default();
    if !use_proxy(&host, port, &no_proxy) {
        return Ok(None);
    }
    let value = value.trim();
    let url = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let proxy = Proxy::parse(&url)
        .map_err(|_| ProxyError::BadEnv(format!("{name}={}", strip_credentials(&url))))?;
    Ok(Some((proxy, name)))
}

/// Whether a connection to `host:port` goes through the environment's proxy, by the rules of
/// Go's `golang.org/x/net/http/httpproxy`: never to localhost or a loopback address; not when
/// `no_proxy` has `*`, the address, a CIDR range holding it, or the domain (`example.com`
/// covers it and its subdomains, `.example.com` and `*.example.com` the subdomains), each
/// optionally with a port.
fn use_proxy(host: &str, port: u16, no_proxy: &str) -> bool {
    use std::net::IpAddr;
    let ip: Option<IpAddr> = host.parse().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    for entry in no_proxy.split(',') {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return false;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            if let (Some(ip), Ok(net), Ok(bits)) = (ip, net.parse::<IpAddr>(), bits.parse()) {
                if in_cidr(ip, net, bits) {
                    return false;
                }
            }
            continue;
        }
        // `host:port`, `[v6]:port`, or a bare host or address.
        let (entry_host, entry_port) = match entry.rsplit_once(':') {
            Some((h, p))
                if !h.is_empty()
                    && p.parse::<u16>().is_ok()
                    && (!h.contains(':') || h.ends_with(']')) =>
            {
                (h.trim_matches(['[', ']']), p.parse::<u16>().ok())
            }
            _ => (entry.trim_matches(['[', ']']), None),
        };
        if entry_port.is_some_and(|p| p != port) {
            continue;
        }
        match (entry_host.parse::<IpAddr>(), ip) {
            (Ok(entry_ip), Some(ip)) => {
                if entry_ip == ip {
                    return false;
                }
            }
            (Ok(_), None) => {}
            (Err(_), _) => {
                let domain = entry_host.strip_prefix('*').unwrap_or(entry_host);
                let (suffix, exact) = match domain.strip_prefix('.') {
                    Some(_) => (domain.to_string(), None),
                    None => (format!(".{domain}"), Some(domain)),
                };
                if host.ends_with(&suffix) || exact == Some(host) {
                    return false;
                }
            }
        }
    }
    true
}

fn in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u32) -> bool {
    use std::net::IpAddr;
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || (ip >> shift) == (net >> shift)
}

fn strip_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_string(),
    }
}

/// A byte stream that is not a TCP connection (an agent tunnel's stream).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What an [`Opener`] returns.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Box<dyn Io>, BoxError>> + Send>>;

/// Opens connections some other way than TCP: the gateway's side of an agent's tunnel. An
/// error means the upstream cannot be reached now (answered `503` at once).
pub trait Opener: Send + Sync {
    fn open(&self) -> OpenFuture;
}

/// A connection the relay speaks HTTP on.
pub enum Conn {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Tcp(s) => s.connected(),
            Conn::Other(_) => Connected::new(),
        }
    }
}

/// The connector under the relay's TLS: plain TCP, or through a proxy, or an [`Opener`].
#[derive(Clone)]
pub struct Dialer {
    tcp: HttpConnector,
    proxy: Option<Arc<Proxy>>,
    opener: Option<Arc<dyn Opener>>,
}

impl Dialer {
    pub fn new(proxy: Option<Proxy>) -> Dialer {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        Dialer {
            tcp,
            proxy: proxy.map(Arc::new),
            opener: None,
        }
    }

    /// A dialer whose every connection comes from `opener` (no TCP at all).
    pub fn through(opener: Arc<dyn Opener>) -> Dialer {
        Dialer {
            opener: Some(opener),
            ..Dialer::new(None)
        }
    }

    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Dialer {
        self.tcp.set_connect_timeout(Some(timeout));
        self
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<Conn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        if let Some(opener) = &self.opener {
            let opened = opener.open();
            return Box::pin(async move { Ok(TokioIo::new(Conn::Other(opened.await?))) });
        }
        let mut tcp = self.tcp.clone();
        let proxy = self.proxy.clone();
        Box::pin(async move {
            let Some(proxy) = proxy else {
                return Ok(TokioIo::new(Conn::Tcp(
                    tcp.call(target).await?.into_inner(),
                )));
            };
            let host = target.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = target.port_u16().unwrap_or(match target.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let stream = tcp.call(proxy.address.clone()).await?.into_inner();
            let stream = match proxy.kind {
                ProxyKind::Connect => connect_tunnel(stream, &proxy, host, port).await?,
                ProxyKind::Socks5 => socks5(stream, &proxy, host, port).await?,
            };
            Ok(TokioIo::new(Conn::Tcp(stream)))
        })
    }
}

/// `CONNECT host:port`, then the stream is the tunnel.
async fn connect_tunnel(
    mut stream: TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, BoxError> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read the answer's head byte by byte: whatever follows it belongs to the tunnel.
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).await? == 0 {
            return Err(ProxyError::Garbled {
                proxy: proxy.shown.clone(),
            }
            .into());
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ProxyError::Garbled {
            proxy: proxy.shown.clone(),
        }
        .into());
    }
    if !code.starts_with('2') || code.len() != 3 {
        return Err(ProxyError::Refused {
            proxy: proxy.shown.clone(),
            target: authority,
            status: crate::audit::format::printable(status_line.trim()).into_owned(),
        }
        .into());
    }
    Ok(stream)
}

/// RFC 1928 (and 1929 for a user name and password): CONNECT by domain name or address.
async fn socks5(
    mut stream: TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, BoxError> {
    let fail = |message: &str| ProxyError::Socks {
        proxy: proxy.shown.clone(),
        message: message.to_string(),
    };
    let method = if proxy.credentials.is_some() { 2 } else { 0 };
    stream.write_all(&[5, 1, method]).await?;
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).await?;
    if answer[0] != 5 || answer[1] != method {
        return Err(fail("accepts none of the authentication methods ztk offered").into());
    }
    if let Some((user, pass)) = &proxy.credentials {
        if user.len() > 255 || pass.len() > 255 {
            return Err(fail("user name or password is longer than 255 bytes").into());
        }
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user.as_bytes());
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass.as_bytes());
        stream.write_all(&auth).await?;
        stream.read_exact(&mut answer).await?;
        if answer[1] != 0 {
            return Err(fail("refused the user name and password").into());
        }
    }
    let mut request = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            if host.len() > 255 {
                return Err(fail("cannot take a host name longer than 255 bytes").into());
            }
            request.push(3);
            request.push(host.len() as u8);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != 5 {
        return Err(fail("sent an invalid answer").into());
    }
    if reply[1] != 0 {
        let reason = match reply[1] {
            1 => "general failure",
            2 => "connection not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unknown error",
        };
        return Err(fail(&format!("could not connect to {host}:{port}: {reason}")).into());
    }
    // The bound address that follows the reply: skip it.
    let skip = match reply[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            len[0] as usize
        }
        _ => return Err(fail("sent an invalid address type").into()),
    };
    let mut rest = vec![0u8; skip + 2];
    stream.read_exact(&mut rest).await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls_and_never_shows_their_password() {
        let p = Proxy::parse("http://alice:s%40cret@proxy.corp:3128").unwrap();
        assert_eq!(p.kind, ProxyKind::Connect);
        assert_eq!(p.shown, "http://proxy.corp:3128");
        assert_eq!(
            p.credentials,
            Some(("alice".to_string(), "s@cret".to_string()))
        );
        assert_eq!(format!("{p:?}"), "http://proxy.corp:3128");
        let s = Proxy::parse("socks5://127.0.0.1").unwrap();
        assert_eq!(s.kind, ProxyKind::Socks5);
        assert_eq!(s.address.port_u16(), Some(1080));
        let err = Proxy::parse("https://u:pw@p:1").unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
        assert!(Proxy::parse("http://").is_err());
    }

    #[test]
    fn the_environments_proxy_follows_gos_rules() {
        let env = |https: &str, no: &str| {
            let (https, no) = (https.to_string(), no.to_string());
            move |name: &str| match name {
                "https_proxy" => Some(https.clone()),
                "NO_PROXY" => Some(no.clone()),
                _ => None,
            }
        };
        fn shown(server: &str, vars: impl Fn(&str) -> Option<String>) -> Option<String> {
            proxy_from(server, vars)
                .unwrap()
                .map(|(p, name)| format!("{p:?} {name}"))
        }
        // No scheme: http://; upper case wins over lower case; an empty value is no proxy.
        assert_eq!(
            shown("https://api.corp:6443", env("proxy.corp:3128", "")).as_deref(),
            Some("http://proxy.corp:3128 https_proxy")
        );
        let upper = |name: &str| match name {
            "HTTPS_PROXY" => Some("socks5://s:1080".to_string()),
            "https_proxy" => Some("http://lower:1".to_string()),
            _ => None,
        };
        assert_eq!(
            shown("https://api.corp", upper).as_deref(),
            Some("socks5://s:1080 HTTPS_PROXY")
        );
        assert_eq!(shown("https://api.corp", env(" ", "")), None);
        // Never for loopback or localhost, nor for a plain http:// server.
        for server in [
            "https://127.0.0.1:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
            "http://api.corp:8080",
        ] {
            assert_eq!(shown(server, env("p:3128", "")), None, "{server}");
        }
        // NO_PROXY: domains (with subdomains), leading dot or star (subdomains only), addresses,
        // CIDR ranges, ports, `*`, case and spaces.
        let bypassed = |server: &str, no: &str| shown(server, env("p:3128", no)).is_none();
        assert!(bypassed("https://api.corp", "corp"));
        assert!(bypassed("https://a.b.corp", "other, B.Corp "));
        assert!(bypassed("https://corp", "corp"));
        assert!(!bypassed("https://corp", ".corp"));
        assert!(bypassed("https://x.corp", ".corp"));
        assert!(bypassed("https://x.corp", "*.corp"));
        assert!(!bypassed("https://notcorp", "corp"));
        assert!(bypassed("https://10.1.2.3:6443", "10.0.0.0/8"));
        assert!(!bypassed("https://11.1.2.3:6443", "10.0.0.0/8"));
        assert!(bypassed("https://10.1.2.3:6443", "10.1.2.3"));
        assert!(bypassed("https://[fd00::5]:6443", "fd00::/8"));
        assert!(bypassed("https://[fd00::5]:6443", "[fd00::5]:6443"));
        assert!(!bypassed("https://[fd00::5]:6443", "[fd00::5]:443"));
        assert!(bypassed("https://api.corp:6443", "api.corp:6443"));
        assert!(!bypassed("https://api.corp:6443", "api.corp:443"));
        assert!(bypassed("https://api.corp", "api.corp:443"));
        assert!(bypassed("https://anything", "*"));
        // A value ztk cannot use names the variable, never the password.
        let err = proxy_from("https://api.corp", env("https://u:pw@p:1", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("https_proxy=https://p:1") && !err.contains("pw"),
            "{err}"
        );
    }
}
