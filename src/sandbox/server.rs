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

/// Starts a fresh sandbox on `listen` (e.g. 127.0.0.1:0).
pub async fn start(listen: SocketAddr) -> anyhow::Result<SandboxServer> {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let sandbox = Sandbox::new(token.clone());
    let ca = tls::Ca::generate("ztk sandbox CA")?;
    let leaf = ca.issue_server(&["127.0.0.1".into(), "localhost".into()])?;
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
        ca_pem: ca.cert_pem(),
        token,
        client,
        task,
    })
}
