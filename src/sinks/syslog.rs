//! The syslog sink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or over
//! TLS (RFC 5425, the same framing).
//!
//! Syslog has no acknowledgement. Each batch goes over its own connection, which ztk then
//! half-closes (TLS: `close_notify`, then FIN) and waits for the receiver to close in turn: a
//! receiver closes only after it has read everything up to the end of the stream, so its close
//! acknowledges the whole batch. A receiver that dies mid-batch makes the batch fail and be
//! resent; the messages it had already accepted arrive twice (the protocol cannot avoid it).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::audit::Sequenced;

use super::config::SyslogTls;
use super::format::syslog_message;
use super::SinkError;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct SyslogSink {
    address: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    app_name: String,
    enterprise_number: u32,
    hostname: String,
}

impl SyslogSink {
    pub fn new(
        address: &str,
        tls: Option<&SyslogTls>,
        app_name: &str,
        enterprise_number: u32,
    ) -> Result<SyslogSink, SinkError> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let roots = match &t.ca_file {
                    Some(path) => crate::tls::Roots::Pem(
                        crate::tls::read_file(path).map_err(|e| SinkError(e.to_string()))?,
                    ),
                    None => crate::tls::Roots::System,
                };
                let config = crate::tls::client_config(&roots, None)
                    .map_err(|e| SinkError(e.to_string()))?;
                let host = address
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(address);
                let name = t.server_name.clone().unwrap_or_else(|| host.to_string());
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| SinkError(format!("{name:?} is not a TLS server name")))?;
                Some((
                    tokio_rustls::TlsConnector::from(Arc::new(config)),
                    server_name,
                ))
            }
        };
        Ok(SyslogSink {
            address: address.to_string(),
            tls,
            app_name: app_name.to_string(),
            enterprise_number,
            hostname: crate::fsutil::hostname(),
        })
    }

    pub async fn deliver(&mut self, records: &[Sequenced]) -> Result<(), SinkError> {
        let mut payload = Vec::with_capacity(records.len() * 1024);
        for r in records {
            let msg = syslog_message(r, &self.hostname, &self.app_name, self.enterprise_number);
            payload.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            payload.extend_from_slice(msg.as_bytes());
        }
        let address = self.address.clone();
        let exchange = async {
            let tcp = TcpStream::connect(&address)
                .await
                .map_err(|e| SinkError(format!("cannot connect to {address}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => send_and_await_close(tcp, &payload).await,
                Some((connector, name)) => {
                    let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                        SinkError(format!("TLS handshake with {address} failed: {e}"))
                    })?;
                    send_and_await_close(stream, &payload).await
                }
            }
            .map_err(|e| SinkError(format!("{address}: {e}")))
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
            SinkError(format!(
                "{}: no acknowledgement within {TIMEOUT:?}",
                self.address
            ))
        })?
    }
}

/// Writes the batch, ends our side, and waits for the receiver to end its side.
async fn send_and_await_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    payload: &[u8],
) -> Result<(), String> {
    stream
        .write_all(payload)
        .await
        .map_err(|e| format!("sending failed: {e}"))?;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("closing the stream failed: {e}"))?;
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return Ok(()),
            // Receivers never answer; anything they send is ignored until they close.
            Ok(_) => continue,
            // A TCP close without TLS close_notify: the receiver still read everything first.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "the receiver did not close cleanly ({e}); resending the batch"
                ))
            }
        }
    }
}
