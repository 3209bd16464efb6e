//! An OpenID provider as both the gateway and the CLI talk to it: discovery
//! (`/.well-known/openid-configuration`), its signing keys (JWKS, cached and fetched again when a
//! token names a key not seen yet, at most every 10 s), and form posts to its token and device
//! endpoints. `https://` issuers only, except on a loopback address (a provider on the same host).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwt::{self, Expect, Jwks, TokenError};

/// How long one request to the provider may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The keys are fetched again for an unknown `kid` at most this often.
const KEYS_REFRESH: Duration = Duration::from_secs(10);
/// The most a provider's answer may hold.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the issuer {0:?} is not an https:// URL (http:// only on a loopback address)")]
    Insecure(String),
    #[error("cannot reach the OpenID provider at {url}: {reason}; is it up, and is `[oidc] issuer` right?")]
    Unreachable { url: String, reason: String },
    #[error("the OpenID provider answered {status} to {url}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error(
        "the OpenID provider's answer from {url} is not what OpenID Connect defines: {reason}"
    )]
    Invalid { url: String, reason: String },
    #[error("the ID token was refused: {0}")]
    Token(#[from] TokenError),
    #[error("cannot read the CA file for the OpenID provider: {0}")]
    Ca(#[from] crate::tls::TlsError),
}

/// Whether `url` may be used: https, or http to a loopback address.
pub fn check_url(url: &str) -> Result<(), OidcError> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|_| OidcError::Insecure(url.to_string()))?;
    match parsed.scheme_str() {
        Some("https") if parsed.host().is_some() => Ok(()),
        Some("http") => {
            let host = parsed
                .host()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(OidcError::Insecure(url.to_string()))
            }
        }
        _ => Err(OidcError::Insecure(url.to_string())),
    }
}

/// HTTP to the provider (TLS verified: the system's CAs, or `ca_pem`).
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Http {
    pub fn new(ca_pem: Option<Vec<u8>>) -> Result<Http, OidcError> {
        let roots = match ca_pem {
            Some(pem) => crate::tls::Roots::Pem(pem),
            None => crate::tls::Roots::System,
        };
        let tls = crate::tls::client_config(&roots, None)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Value), OidcError> {
        let url = req.uri().to_string();
        check_url(&url)?;
        let unreachable = |reason: String| OidcError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(crate::relay::error_chain(&e)))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            TIMEOUT,
            http_body_util::Limited::new(resp.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| unreachable("the answer did not arrive in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
        let value = serde_json::from_slice(&body).map_err(|_| {
            if status.is_success() {
                OidcError::Invalid {
                    url: url.clone(),
                    reason: "not JSON".into(),
                }
            } else {
                OidcError::Status {
                    url: url.clone(),
                    status,
                    body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                }
            }
        })?;
        Ok((status, value))
    }

    /// GETs a JSON document (200 only).
    pub async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let req = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| OidcError::Insecure(format!("{url}: {e}")))?;
        let (status, value) = self.send(req).await?;
        if status != StatusCode::OK {
            return Err(OidcError::Status {
                url: url.to_string(),
                status,
                body: value.to_string(),
            });
        }
        Ok(value)
    }

    /// POSTs a form; the status and the JSON answer (errors are JSON too in OAuth).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(StatusCode, Value), OidcError> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some((id, secret)) = basic {
            use base64::Engine as _;
            // RFC 6749 2.3.1: each part form-encoded, then Basic.
            let pair = format!("{}:{}", form_encode(id), form_encode(secret));
            req = req.header(
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OidcError::Insecure(format!("{url}: {e}")))?;
        self.send(req).await
    }
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
pub fn form_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// What discovery says (the parts ztk uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// A discovered provider, with its keys.
pub struct Provider {
    pub meta: Metadata,
    pub http: Http,
    keys: RwLock<Arc<Jwks>>,
    fetched: Mutex<Option<Instant>>,
}

impl Provider {
    /// Discovery of `issuer` (its metadata must name the same issuer), and its keys.
    pub async fn discover(issuer: &str, http: Http) -> Result<Provider, OidcError> {
        check_url(issuer)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = http.get_json(&url).await?;
        let meta: Metadata = serde_json::from_value(doc).map_err(|e| OidcError::Invalid {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if meta.issuer != issuer {
            return Err(OidcError::Invalid {
                url,
                reason: format!(
                    "it names the issuer {:?}, not {issuer:?} (set `[oidc] issuer` to exactly what the provider says)",
                    meta.issuer
                ),
            });
        }
        for endpoint in [
            Some(&meta.authorization_endpoint),
            Some(&meta.token_endpoint),
            Some(&meta.jwks_uri),
            meta.device_authorization_endpoint.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            check_url(endpoint)?;
        }
        let provider = Provider {
            meta,
            http,
            keys: RwLock::default(),
            fetched: Mutex::default(),
        };
        provider.fetch_keys().await?;
        Ok(provider)
    }

    async fn fetch_keys(&self) -> Result<(), OidcError> {
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let doc = self.http.get_json(&self.meta.jwks_uri).await?;
        let keys: Jwks = serde_json::from_value(doc).map_err(|e| OidcError::Invalid {
            url: self.meta.jwks_uri.clone(),
            reason: e.to_string(),
        })?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    fn keys(&self) -> Arc<Jwks> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Verifies an ID token; a key not seen yet (the provider rotated) fetches the keys again,
    /// at most every 10 s.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, OidcError> {
        match jwt::verify(token, &self.keys(), expect) {
            Err(TokenError::UnknownKey(kid)) => {
                let due = self
                    .fetched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|at| at.elapsed() >= KEYS_REFRESH);
                if !due {
                    return Err(TokenError::UnknownKey(kid).into());
                }
                self.fetch_keys().await?;
                Ok(jwt::verify(token, &self.keys(), expect)?)
            }
            other => Ok(other?),
        }
    }
}

/// PKCE (RFC 7636): a random verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = random_token(32);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `bytes` random bytes, base64url.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The authorization request URL of the code flow.
pub fn authorization_url(
    meta: &Metadata,
    client_id: &str,
    redirect_uri: &str,
    scopes: &str,
    state: &str,
    nonce: &str,
    challenge: &str,
) -> String {
    let sep = if meta.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let q = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scopes),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", form_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    format!("{}{sep}{q}", meta.authorization_endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://idp.example.com").is_ok());
        assert!(check_url("http://127.0.0.1:5556/dex").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(check_url("http://localhost:8080").is_ok());
        assert!(check_url("http://idp.example.com").is_err());
        assert!(check_url("http://10.0.0.1").is_err());
        assert!(check_url("ftp://idp.example.com").is_err());
    }

    #[test]
    fn pkce_is_s256_of_the_verifier() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let (verifier, challenge) = pkce();
        assert!(verifier.len() >= 43);
        assert_eq!(
            challenge,
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()))
        );
    }
}
