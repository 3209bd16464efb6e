//! Calls to the gateway's own API (login, session, command ingest).

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body;
use crate::protocol::{self, EncodedBatch, IngestAck, IngestBatch, LoginRequest, SessionInfo};
use crate::tls::Roots;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid gateway URL {0:?}: use https://host[:port]")]
    BadUrl(String),
    #[error("cannot reach the gateway at {url}: {message}{hint}")]
    Unreachable {
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error("the gateway answered {code}: {message}")]
    Status { code: u16, message: String },
    #[error("the gateway asked to wait {retry_after:?} (429): {message}")]
    Throttled {
        retry_after: Duration,
        message: String,
    },
    #[error("the gateway's answer was not understood: {0}")]
    Invalid(String),
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

pub struct GatewayApi {
    base: String,
    client: crate::relay::HttpsClient,
    timeout: Duration,
}

/// Checks and normalises a gateway URL (https only: kubectl credentials and session tokens
/// never travel in clear text).
pub fn normalize_url(url: &str) -> Result<String, ApiError> {
    let trimmed = url.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| ApiError::BadUrl(url.to_string()))?;
    if uri.scheme_str() != Some("https") || uri.authority().is_none() {
        return Err(ApiError::BadUrl(url.to_string()));
    }
    Ok(trimmed.to_string())
}

impl GatewayApi {
    pub fn new(base: &str, roots: &Roots) -> Result<GatewayApi, ApiError> {
        let base = normalize_url(base)?;
        let tls = crate::tls::client_config(roots, None)?;
        // With TCP_NODELAY: a request's headers and body can leave in two writes; with Nagle's
        // algorithm the second waits for the gateway's delayed ACK (40 ms on Linux) — seen on
        // every `ztk kubectl` exit, shipping its records.
        let http = crate::relay::Dialer::new(None).connect_timeout(Duration::from_secs(5));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(GatewayApi {
            base,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(15),
        })
    }

    /// Talks to the gateway at `base` over `client`'s connections (see `Upstream::h1_client`).
    pub fn with_client(
        base: &str,
        client: crate::relay::HttpsClient,
    ) -> Result<GatewayApi, ApiError> {
        Ok(GatewayApi {
            base: normalize_url(base)?,
            client,
            timeout: Duration::from_secs(15),
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> GatewayApi {
        self.timeout = timeout;
        self
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        payload: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        self.call_typed(method, path, token, payload, "application/json")
            .await
    }

    async fn call_typed<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        payload: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req_body = match payload {
            Some(bytes) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                body::full(bytes)
            }
            None => body::empty(),
        };
        let req = builder
            .body(req_body)
            .map_err(|_| ApiError::BadUrl(url.clone()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let message = crate::relay::error_chain(&e);
                let hint = if message.contains("UnknownIssuer") || message.contains("certificate") {
                    "; if the gateway uses its own CA, pass --ca-file with the CA file it printed at start"
                } else {
                    "; check the URL and that the gateway is running"
                };
                ApiError::Unreachable { url: self.base.clone(), message, hint }
            })?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes: Bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ApiError::Invalid(e.to_string()))?
                .to_bytes();
            Ok::<_, ApiError>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ApiError::Timeout(self.timeout))??;
        if status != StatusCode::OK {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(ApiError::Throttled {
                    retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                    message,
                });
            }
            return Err(ApiError::Status {
                code: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid(e.to_string()))
    }

    /// Logs in; `replaces` (this client's current token) is revoked by the gateway once the
    /// password is verified, so that logging in again does not pile up sessions.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        replaces: Option<String>,
    ) -> Result<SessionInfo, ApiError> {
        let payload = serde_json::to_vec(&LoginRequest {
            user: user.to_string(),
            password: password.to_string(),
            replaces,
        })
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.call(Method::POST, protocol::LOGIN_PATH, None, Some(payload))
            .await
    }

    /// The gateway's single sign-on settings (404 when it has none).
    pub async fn oidc_info(&self) -> Result<protocol::OidcInfo, ApiError> {
        self.call(Method::GET, protocol::OIDC_PATH, None, None)
            .await
    }

    /// Logs in with an ID token from the gateway's OpenID provider.
    pub async fn login_oidc(
        &self,
        request: &protocol::OidcLoginRequest,
    ) -> Result<SessionInfo, ApiError> {
        let payload = serde_json::to_vec(request).map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.call(Method::POST, protocol::LOGIN_OIDC_PATH, None, Some(payload))
            .await
    }

    pub async fn session(&self, token: &str) -> Result<SessionInfo, ApiError> {
        self.call(Method::GET, protocol::SESSION_PATH, Some(token), None)
            .await
    }

    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        self.call::<serde_json::Value>(Method::DELETE, protocol::SESSION_PATH, Some(token), None)
            .await
            .map(|_| ())
    }

    /// The gateway verifies its audit chain (administrators only).
    pub async fn audit_verify(&self, token: &str) -> Result<protocol::AuditVerifyAnswer, ApiError> {
        self.call(Method::POST, protocol::AUDIT_VERIFY_PATH, Some(token), None)
            .await
    }

    /// The gateway's audit writer status (administrators only).
    pub async fn audit_health(&self, token: &str) -> Result<protocol::AuditHealth, ApiError> {
        self.call(Method::GET, protocol::AUDIT_HEALTH_PATH, Some(token), None)
            .await
    }

    /// One page of the gateway's audit trail.
    pub async fn query<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        query: &protocol::AuditQuery,
    ) -> Result<crate::audit::Page<T>, ApiError> {
        let payload = serde_json::to_vec(query).map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.call(
            Method::POST,
            protocol::AUDIT_QUERY_PATH,
            Some(token),
            Some(payload),
        )
        .await
    }

    /// Latency and activity statistics of the gateway's audit trail.
    pub async fn stats(
        &self,
        token: &str,
        query: &crate::audit::stats::StatsQuery,
    ) -> Result<crate::audit::stats::Stats, ApiError> {
        self.post(protocol::AUDIT_STATS_PATH, token, query).await
    }

    /// Records written after a sequence number (a long poll; see `protocol::AuditTail`).
    pub async fn tail(
        &self,
        token: &str,
        query: &protocol::AuditTail,
    ) -> Result<crate::audit::SeqBatch, ApiError> {
        let payload = serde_json::to_vec(query).map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.call(
            Method::POST,
            protocol::AUDIT_TAIL_PATH,
            Some(token),
            Some(payload),
        )
        .await
    }

    /// Sends a batch of audit records (compact encoding unless `json`).
    pub async fn ingest(
        &self,
        token: &str,
        batch: &IngestBatch,
        json: bool,
    ) -> Result<IngestAck, ApiError> {
        let encoded = batch.encode(json).map_err(ApiError::Invalid)?;
        self.ingest_encoded(token, encoded).await
    }

    /// Sends a batch encoded beforehand (`IngestBatch::encode`), and checks that the gateway
    /// took all of it.
    pub async fn ingest_encoded(
        &self,
        token: &str,
        batch: EncodedBatch,
    ) -> Result<IngestAck, ApiError> {
        let ack: IngestAck = self
            .call_typed(
                Method::POST,
                protocol::INGEST_PATH,
                Some(token),
                Some(batch.payload),
                batch.content_type,
            )
            .await?;
        if ack.accepted != batch.records {
            return Err(ApiError::Invalid(format!(
                "the gateway acknowledged {} of {} records",
                ack.accepted, batch.records
            )));
        }
        Ok(ack)
    }

    async fn post<Q: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        query: &Q,
    ) -> Result<T, ApiError> {
        let payload = serde_json::to_vec(query).map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.call(Method::POST, path, Some(token), Some(payload))
            .await
    }

    pub async fn can_i(
        &self,
        token: &str,
        query: &protocol::AccessQuery,
    ) -> Result<protocol::CanIAnswer, ApiError> {
        self.post(protocol::CAN_I_PATH, token, query).await
    }

    pub async fn who_can(
        &self,
        token: &str,
        query: &protocol::AccessQuery,
    ) -> Result<protocol::WhoCanAnswer, ApiError> {
        self.post(protocol::WHO_CAN_PATH, token, query).await
    }

    pub async fn access_list(
        &self,
        token: &str,
        query: &protocol::AccessListQuery,
    ) -> Result<protocol::AccessListAnswer, ApiError> {
        self.post(protocol::ACCESS_LIST_PATH, token, query).await
    }
}
