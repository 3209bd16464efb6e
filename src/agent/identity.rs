//! The agent's identity: its own key (made here, never sent) and the client certificate a
//! gateway issued for it, kept 0600 in `DATA_DIR/agent/CLUSTER/` (0700).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::protocol::{self, EnrollRequest, EnrollResponse};
use super::GatewayAddr;
use crate::tls::Roots;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the agent's identity in {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's identity in {dir} is damaged ({message}); remove the directory and enroll again with a new token")]
    Damaged { dir: PathBuf, message: String },
    #[error("the agent has no certificate yet: give it an enrollment token with --token-file (made by `ztk gateway agent token CLUSTER`)")]
    NoToken,
    #[error("cannot read the enrollment token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enrollment refused by {gateway}: {message}")]
    Refused { gateway: String, message: String },
    #[error("no gateway could enroll the agent ({0}); it tries again at its next start")]
    Unreachable(String),
    #[error("the renewed certificate is not for this agent's key")]
    OtherKey,
    #[error("{0}")]
    Key(String),
}

#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where `cluster`'s identity is kept.
pub fn dir(data_dir: &Path, cluster: &str) -> PathBuf {
    data_dir.join("agent").join(cluster)
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        dir: dir.to_path_buf(),
        source,
    }
}

impl Identity {
    /// The identity kept in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() && !key.exists() {
            return Ok(None);
        }
        let identity = Identity {
            cert_pem: std::fs::read_to_string(&cert).map_err(io(dir))?,
            key_pem: std::fs::read_to_string(&key).map_err(io(dir))?,
        };
        let damaged = |message: String| IdentityError::Damaged {
            dir: dir.to_path_buf(),
            message,
        };
        crate::tls::parse_certs(identity.cert_pem.as_bytes(), "agent certificate")
            .map_err(|e| damaged(e.to_string()))?;
        crate::tls::parse_key(identity.key_pem.as_bytes(), "agent key")
            .map_err(|e| damaged(e.to_string()))?;
        Ok(Some(identity))
    }

    /// Writes the key and certificate, 0600 (the key first: a certificate alone is useless).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        crate::fsutil::create_private_dir(dir).map_err(io(dir))?;
        crate::fsutil::write_private(&dir.join("key.pem"), self.key_pem.as_bytes())
            .map_err(io(dir))?;
        crate::fsutil::write_private(&dir.join("cert.pem"), self.cert_pem.as_bytes())
            .map_err(io(dir))
    }

    /// When the certificate expires (RFC 3339).
    pub fn expires(&self) -> String {
        let der = crate::tls::parse_certs(self.cert_pem.as_bytes(), "agent certificate")
            .ok()
            .and_then(|c| c.into_iter().next());
        der.and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            Some(crate::gateway::clusters::rfc3339_us(
                cert.validity().not_after.timestamp() * 1_000_000,
            ))
        })
        .unwrap_or_else(|| "unknown".into())
    }

    /// This identity with a renewed certificate `pem`, which must be for the same key.
    pub fn renewed(&self, pem: &[u8]) -> Result<Identity, IdentityError> {
        let certs = crate::tls::parse_certs(pem, "renewed certificate")
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref())
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(IdentityError::OtherKey);
        }
        Ok(Identity {
            cert_pem: String::from_utf8_lossy(pem).into_owned(),
            key_pem: self.key_pem.clone(),
        })
    }
}

/// Removes a revoked identity.
pub fn forget(dir: &Path) -> Result<(), IdentityError> {
    for file in ["cert.pem", "key.pem"] {
        match std::fs::remove_file(dir.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(dir)(e)),
        }
    }
    Ok(())
}

/// Makes a key, trades the token for a certificate at the first gateway that answers, and
/// keeps both in `dir`.
pub async fn enroll(
    gateways: &[GatewayAddr],
    ca_pem: &[u8],
    cluster: &str,
    token_file: Option<&Path>,
    dir: &Path,
) -> Result<Identity, IdentityError> {
    let path = token_file.ok_or(IdentityError::NoToken)?;
    let token = std::fs::read_to_string(path).map_err(|source| IdentityError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let token = token.trim().to_string();
    let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{}{cluster}", protocol::AGENT_CN_PREFIX),
    );
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    let request = EnrollRequest {
        cluster: cluster.to_string(),
        token,
        csr,
        version: super::VERSION.into(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| IdentityError::Key(e.to_string()))?;
    let mut tls = crate::tls::client_config(&Roots::Pem(ca_pem.to_vec()), None)
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let mut failures = Vec::new();
    for gateway in gateways {
        match post(gateway, tls.clone(), body.clone()).await {
            Ok((status, answer)) if status == http::StatusCode::OK => {
                let answer: EnrollResponse =
                    serde_json::from_slice(&answer).map_err(|e| IdentityError::Refused {
                        gateway: gateway.url.clone(),
                        message: format!("unreadable answer: {e}"),
                    })?;
                // Kept only if it is for this agent's key.
                let identity = Identity {
                    cert_pem: String::new(),
                    key_pem: key.serialize_pem(),
                }
                .renewed(answer.certificate.as_bytes())?;
                identity.save(dir)?;
                tracing::info!(gateway = %gateway.url, cluster, expires = %answer.expires, "enrolled");
                return Ok(identity);
            }
            Ok((status, answer)) => {
                let value: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                let message = value["message"]
                    .as_str()
                    .map(|m| crate::audit::format::printable(m).into_owned())
                    .unwrap_or_else(|| status.to_string());
                // The token or the request is wrong: wrong with every gateway (they share the
                // database). Else (busy, throttled, not set up for agents yet) try the next.
                if matches!(status.as_u16(), 400 | 401 | 403) {
                    return Err(IdentityError::Refused {
                        gateway: gateway.url.clone(),
                        message,
                    });
                }
                failures.push(format!("{}: {status}: {message}", gateway.url));
            }
            Err(err) => failures.push(err),
        }
    }
    Err(IdentityError::Unreachable(failures.join("; ")))
}

/// `POST` the enrollment over one HTTP/1.1 connection.
async fn post(
    gateway: &GatewayAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> Result<(http::StatusCode, bytes::Bytes), String> {
    let stream = gateway.connect(tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(protocol::ENROLL_PATH)
        .header(
            http::header::HOST,
            format!("{}:{}", gateway.host, gateway.port),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::body::full(body))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{}: {e}", gateway.url))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", gateway.url))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("{} did not answer the enrollment within 30s", gateway.url))?
}
