//! Serving the sandbox on a loopback TLS port, as a real cluster would be served: its own CA,
//! and clients authenticate with a bearer token or a client certificate signed by its CA.

use std::net::SocketAddr;

use base64::Engine;
use http::{header, HeaderValue};
use rand::RngCore;

use super::Sandbox;
use crate::body;
use crate::tls::{self, CertKey};

/// A running sandbox server and the credentials to reach it.
pub struct SandboxServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub token: String,
    /// A client certificate (CN `ztk-gateway`) that the server accepts instead of the token.
    pub client: CertKey,
    pub task: tokio::task::JoinHandle<()>,
}

impl SandboxServer {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig for this server, authenticating with the token or the client certificate.
    pub fn kubeconfig(
        &self,
        context: &str,
        use_client_cert: bool,
    ) -> crate::kubeconfig::Kubeconfig {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = if use_client_cert {
            crate::kubeconfig::User {
                client_certificate_data: Some(b64(&self.client.cert_pem)),
                client_key_data: Some(b64(&self.client.key_pem)),
                ..Default::default()
            }
        } else {
            crate::kubeconfig::User {
                token: Some(self.token.clone()),
                ..Default::default()
            }
        };
        crate::kubeconfig::single(context, &self.url(), &self.ca_pem, user, None)
    }
}

/// How the sandbox presents itself over TLS.
#[derive(Debug, Clone, Default)]
pub struct ServeTls {
    /// Names and addresses in its certificate (default: 127.0.0.1 and localhost).
    pub names: Vec<String>,
    /// One self-signed CA:TRUE certificate as the server certificate, and in the kubeconfig as
    /// `certificate-authority-data` (as many lab clusters and appliances do).
    pub self_signed: bool,
}

/// Starts a fresh sandbox on `listen` (e.g. 127.0.0.1:0).
pub async fn start(listen: SocketAddr) -> anyhow::Result<SandboxServer> {
    start_with(listen, ServeTls::default()).await
}

/// Starts a fresh sandbox on `listen` with `tls`'s certificate.
pub async fn start_with(listen: SocketAddr, tls_opts: ServeTls) -> anyhow::Result<SandboxServer> {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let sandbox = Sandbox::new(token.clone());
    let ca = tls::Ca::generate("ztk sandbox CA")?;
    let names = if tls_opts.names.is_empty() {
        vec!["127.0.0.1".to_string(), "localhost".to_string()]
    } else {
        tls_opts.names.clone()
    };
    let (leaf, server_ca_pem) = if tls_opts.self_signed {
        let own = tls::self_signed_ca_server(&names)?;
        let pem = own.cert_pem.clone();
        (own, pem)
    } else {
        (ca.issue_server(&names)?, ca.cert_pem())
    };
    let client = ca.issue_client("ztk-gateway")?;
    let server_tls = tls::server_config_with_client_ca(
        leaf.cert_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
    let task = tokio::spawn(crate::serve::serve_tls(
        listener,
        server_tls,
        move |req, peer| {
            let sandbox = sandbox.clone();
            let bearer = bearer.clone();
            async move {
                let mut req = req.map(body::boxed);
                // rustls verified the certificate against the sandbox CA: that is as good as the token.
                if peer.verified_client_cert {
                    req.headers_mut().insert(header::AUTHORIZATION, bearer);
                }
                sandbox.handle(req).await
            }
        },
    ));
    Ok(SandboxServer {
        addr,
        ca_pem: server_ca_pem,
        token,
        client,
        task,
    })
}
