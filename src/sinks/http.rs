//! The HTTPS sinks: a webhook (an `audit.k8s.io/v1` `EventList`, as the Kubernetes audit
//! webhook backend and Falco's k8saudit plugin read, or NDJSON) and Splunk's HTTP Event
//! Collector. A 2xx answer acknowledges the batch.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::audit::format::{Emitter, Format};
use crate::audit::{Record, Sequenced};
use crate::body::{self, Body};

use super::config::{HttpTls, Secret, WebhookFormat};
use super::format::{hec_event, record_json};
use super::SinkError;

const TIMEOUT: Duration = Duration::from_secs(30);

pub enum Payload {
    Webhook(WebhookFormat),
    Hec {
        host: String,
        source: String,
        sourcetype: String,
        index: Option<String>,
    },
}

pub struct HttpSink {
    url: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// The whole Authorization header value (`Bearer …`, `Splunk …`).
    authorization: Option<Secret>,
    /// The token itself, to scrub from anything the receiver echoes into an error.
    token: Option<Secret>,
    payload: Payload,
}

impl HttpSink {
    pub fn new(
        url: &str,
        tls: &HttpTls,
        token: Option<&Secret>,
        payload: Payload,
    ) -> Result<HttpSink, SinkError> {
        let tls_err = |e: crate::tls::TlsError| SinkError(e.to_string());
        let roots = match &tls.ca_file {
            Some(path) => crate::tls::Roots::Pem(crate::tls::read_file(path).map_err(tls_err)?),
            None => crate::tls::Roots::System,
        };
        let client_cert = match &tls.client_cert {
            Some((cert, key)) => Some((
                crate::tls::read_file(cert).map_err(tls_err)?,
                crate::tls::read_file(key).map_err(tls_err)?,
            )),
            None => None,
        };
        let config = crate::tls::client_config(
            &roots,
            client_cert
                .as_ref()
                .map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(tls_err)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        // Headers and body may leave in two writes: without this the body waits for the
        // receiver's delayed ACK.
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let scheme = match payload {
            Payload::Webhook(_) => "Bearer",
            Payload::Hec { .. } => "Splunk",
        };
        Ok(HttpSink {
            url: url.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            authorization: token.map(|t| Secret::new(format!("{scheme} {}", t.expose()))),
            token: token.cloned(),
            payload,
        })
    }

    fn body(&self, records: &[Sequenced]) -> Result<Option<(Vec<u8>, &'static str)>, SinkError> {
        let encode =
            |e: &dyn std::fmt::Display| SinkError(format!("could not encode a batch: {e}"));
        match &self.payload {
            Payload::Webhook(WebhookFormat::K8sAudit) => {
                // Commands have no audit.k8s.io form; a batch of only commands sends nothing.
                let mut emitter = Emitter::new(Format::K8sAudit, Vec::new());
                for r in records {
                    if let Record::Call(row) = &r.record {
                        emitter.call(row).map_err(|e| encode(&e))?;
                    }
                }
                if emitter.rows() == 0 {
                    return Ok(None);
                }
                let body = emitter.finish(false).map_err(|e| encode(&e))?;
                Ok(Some((body, "application/json")))
            }
            Payload::Webhook(WebhookFormat::Ndjson) => {
                let mut body = Vec::new();
                for r in records {
                    serde_json::to_writer(&mut body, &record_json(r)).map_err(|e| encode(&e))?;
                    body.push(b'\n');
                }
                Ok(Some((body, "application/x-ndjson")))
            }
            Payload::Hec {
                host,
                source,
                sourcetype,
                index,
            } => {
                // HEC takes several events in one body, one JSON object after another.
                let mut body = Vec::new();
                for r in records {
                    let event = hec_event(r, host, source, sourcetype, index.as_deref());
                    serde_json::to_writer(&mut body, &event).map_err(|e| encode(&e))?;
                    body.push(b'\n');
                }
                Ok(Some((body, "application/json")))
            }
        }
    }

    pub async fn deliver(&mut self, records: &[Sequenced]) -> Result<(), SinkError> {
        let Some((payload, content_type)) = self.body(records)? else {
            return Ok(());
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("ztk/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.authorization {
            let mut value = http::HeaderValue::from_str(auth.expose())
                .map_err(|_| SinkError("the token cannot be sent in a header".into()))?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let req = builder
            .body(body::full(payload))
            .map_err(|_| SinkError(format!("invalid URL {}", self.url)))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                SinkError(format!(
                    "POST {} failed: {}",
                    self.url,
                    crate::relay::error_chain(&e)
                ))
            })?;
            let status = resp.status();
            let bytes: Bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| SinkError(format!("reading the answer of {} failed: {e}", self.url)))?
                .to_bytes();
            Ok::<_, SinkError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| SinkError(format!("{} did not answer within {TIMEOUT:?}", self.url)))??;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(SinkError(self.scrub(format!(
                "{} answered {status}: {}",
                self.url,
                text.trim()
            ))));
        }
        if let Payload::Hec { .. } = self.payload {
            // HEC answers {"text":"Success","code":0}; any other code is a refusal.
            if let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if let Some(code) = answer.get("code").and_then(|c| c.as_i64()) {
                    if code != 0 {
                        return Err(SinkError(
                            self.scrub(format!("{} refused the events: {answer}", self.url)),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the token from text a receiver sent back.
    fn scrub(&self, text: String) -> String {
        match &self.token {
            Some(t) if !t.expose().is_empty() => text.replace(t.expose(), "<redacted>"),
            _ => text,
        }
    }
}
