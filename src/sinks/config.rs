//! `[[sinks]]` in the gateway config: where the audit trail is streamed. Parsed by
//! `gateway::config`, which reports every problem with the file, the key and the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::Filter;

/// A secret from the config (a bearer or HEC token). Its `Debug` and `Display` never show it,
/// so it cannot reach a log line, an error message or `sinks status` by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    filter: Option<String>,
    batch_size: Option<usize>,
    max_wait: Option<String>,
    // file
    path: Option<PathBuf>,
    max_size: Option<RawSize>,
    max_files: Option<usize>,
    // syslog
    address: Option<String>,
    tls: Option<RawSyslogTls>,
    app_name: Option<String>,
    enterprise_number: Option<u32>,
    // webhook and splunk_hec
    url: Option<String>,
    format: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    source: Option<String>,
    sourcetype: Option<String>,
    index: Option<String>,
    host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawSyslogTls {
    On(bool),
    Table(RawTlsTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsTable {
    ca_file: Option<PathBuf>,
    /// The name to verify the receiver's certificate for (default: the host of `address`).
    server_name: Option<String>,
}

/// One validated sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub filter: Filter,
    /// The filter as written, for `sinks status`.
    pub filter_text: String,
    /// Most records per delivery.
    pub batch_size: usize,
    /// How long a partial batch may wait for more records before it is sent.
    pub max_wait: Duration,
    pub kind: SinkKind,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    File {
        path: PathBuf,
        /// Rotate before the file would grow past this many bytes.
        max_size: u64,
        /// Rotated files kept beside the live one (`PATH.1` newest … `PATH.N`).
        max_files: usize,
    },
    Syslog {
        /// host:port
        address: String,
        tls: Option<SyslogTls>,
        app_name: String,
        /// The private enterprise number in the structured data's SD-ID (`ztk@PEN`).
        enterprise_number: u32,
    },
    Webhook {
        url: String,
        format: WebhookFormat,
        token: Option<Secret>,
        tls: HttpTls,
    },
    SplunkHec {
        url: String,
        token: Secret,
        tls: HttpTls,
        source: String,
        sourcetype: String,
        index: Option<String>,
        host: String,
    },
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::File { .. } => "file",
            SinkKind::Syslog { .. } => "syslog",
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::SplunkHec { .. } => "splunk_hec",
        }
    }

    /// Where the sink delivers, for status output (never a token).
    pub fn target(&self) -> String {
        match self {
            SinkKind::File { path, .. } => path.display().to_string(),
            SinkKind::Syslog { address, tls, .. } => {
                format!("{}://{address}", if tls.is_some() { "tls" } else { "tcp" })
            }
            SinkKind::Webhook { url, .. } | SinkKind::SplunkHec { url, .. } => url.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyslogTls {
    /// None: the system trust store.
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpTls {
    /// None: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// An `audit.k8s.io/v1` `EventList` per batch (API calls only).
    K8sAudit,
    /// One JSON object per line, calls and commands.
    Ndjson,
}

const DEFAULT_BATCH: usize = 100;
const MAX_BATCH: usize = 5000;
const DEFAULT_MAX_SIZE: u64 = 100 << 20;
const DEFAULT_MAX_FILES: usize = 5;
/// The IANA example enterprise number (RFC 5612), used until ztk has its own.
pub const DEFAULT_ENTERPRISE_NUMBER: u32 = 32473;

/// Validates the `[[sinks]]` tables; `resolve` makes config-relative paths absolute. Errors
/// are `key `sinks[N].KEY` (NAME): reason`; the caller adds the file.
pub(crate) fn validate(
    raw: Vec<RawSink>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<SinkConfig>, String> {
    let mut sinks: Vec<SinkConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("sinks[{i}]");
        let name = r
            .name
            .clone()
            .ok_or_else(|| format!("key `{key}.name` is missing"))?;
        if !crate::gateway::config::valid_name(&name) {
            return Err(format!(
                "key `{key}.name`: {name:?} must be lowercase letters, digits, '-', '.', '_'"
            ));
        }
        if sinks.iter().any(|s| s.name == name) {
            return Err(format!("key `{key}.name`: sink {name:?} is defined twice"));
        }
        let at = |k: &str| format!("key `{key}.{k}` ({name})");
        let kind_name = r.kind.clone().ok_or_else(|| {
            format!("key `{key}.type` ({name}) is missing: use syslog, webhook, splunk_hec or file")
        })?;
        let filter_text = r.filter.clone().unwrap_or_default();
        let filter =
            Filter::parse_query(&filter_text).map_err(|e| format!("{}: {e}", at("filter")))?;
        if filter.limit.is_some() {
            return Err(format!("{}: a sink filter takes no limit", at("filter")));
        }
        let batch_size = r.batch_size.unwrap_or(DEFAULT_BATCH);
        if batch_size == 0 || batch_size > MAX_BATCH {
            return Err(format!(
                "{}: {batch_size} is not between 1 and {MAX_BATCH}",
                at("batch_size")
            ));
        }
        let max_wait = match &r.max_wait {
            None => Duration::from_secs(1),
            Some(text) => crate::audit::filter::parse_duration_us(text)
                .map(|us| Duration::from_micros(us as u64))
                .map_err(|_| {
                    format!(
                        "{}: {text:?} is not a duration like 500ms or 5s",
                        at("max_wait")
                    )
                })?,
        };
        // Keys of one type given to another are mistakes worth naming.
        let given: Vec<(&str, bool)> = vec![
            ("path", r.path.is_some()),
            ("max_size", r.max_size.is_some()),
            ("max_files", r.max_files.is_some()),
            ("address", r.address.is_some()),
            ("tls", r.tls.is_some()),
            ("app_name", r.app_name.is_some()),
            ("enterprise_number", r.enterprise_number.is_some()),
            ("url", r.url.is_some()),
            ("format", r.format.is_some()),
            ("token", r.token.is_some()),
            ("ca_file", r.ca_file.is_some()),
            ("client_cert", r.client_cert.is_some()),
            ("client_key", r.client_key.is_some()),
            ("source", r.source.is_some()),
            ("sourcetype", r.sourcetype.is_some()),
            ("index", r.index.is_some()),
            ("host", r.host.is_some()),
        ];
        let allowed: &[&str] = match kind_name.as_str() {
            "file" => &["path", "max_size", "max_files"],
            "syslog" => &["address", "tls", "app_name", "enterprise_number"],
            "webhook" => &[
                "url",
                "format",
                "token",
                "ca_file",
                "client_cert",
                "client_key",
            ],
            "splunk_hec" => &[
                "url",
                "token",
                "ca_file",
                "client_cert",
                "client_key",
                "source",
                "sourcetype",
                "index",
                "host",
            ],
            other => {
                return Err(format!(
                    "{}: {other:?} is not a sink type: use syslog, webhook, splunk_hec or file",
                    at("type")
                ))
            }
        };
        if let Some((k, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            return Err(format!(
                "{}: a {kind_name} sink has no such key; its keys are {}",
                at(k),
                allowed.join(", ")
            ));
        }
        let http_tls = |r: &RawSink| -> Result<HttpTls, String> {
            let client_cert = match (&r.client_cert, &r.client_key) {
                (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "{}: give both `client_cert` and `client_key` for mutual TLS",
                        at("client_cert")
                    ))
                }
            };
            Ok(HttpTls {
                ca_file: r.ca_file.as_deref().map(resolve),
                client_cert,
            })
        };
        let https_url = |r: &RawSink| -> Result<String, String> {
            let url = r
                .url
                .clone()
                .ok_or_else(|| format!("{} is missing", at("url")))?;
            let uri: http::Uri = url
                .parse()
                .map_err(|_| format!("{}: {url:?} is not a URL", at("url")))?;
            if uri.scheme_str() != Some("https") || uri.authority().is_none() {
                return Err(format!(
                    "{}: {url:?} must be an https:// URL (audit records and tokens never travel in clear text)",
                    at("url")
                ));
            }
            Ok(url)
        };
        let token = |r: &RawSink| -> Result<Option<Secret>, String> {
            match &r.token {
                None => Ok(None),
                Some(t) if t.trim().is_empty() || t.chars().any(|c| c.is_control()) => {
                    Err(format!(
                        "{}: the token is empty or holds control characters",
                        at("token")
                    ))
                }
                Some(t) => Ok(Some(Secret::new(t.trim().to_string()))),
            }
        };
        let kind = match kind_name.as_str() {
            "file" => {
                let path = r
                    .path
                    .as_deref()
                    .map(resolve)
                    .ok_or_else(|| format!("{} is missing", at("path")))?;
                let max_size = match &r.max_size {
                    None => DEFAULT_MAX_SIZE,
                    Some(RawSize::Bytes(n)) => *n,
                    Some(RawSize::Text(t)) => parse_size(t).ok_or_else(|| {
                        format!(
                            "{}: {t:?} is not a size like 100MiB, 10MB or 500000",
                            at("max_size")
                        )
                    })?,
                };
                if max_size < 1024 {
                    return Err(format!("{}: rotate at 1 KiB or more", at("max_size")));
                }
                SinkKind::File {
                    path,
                    max_size,
                    max_files: r.max_files.unwrap_or(DEFAULT_MAX_FILES),
                }
            }
            "syslog" => {
                let address = r
                    .address
                    .clone()
                    .ok_or_else(|| format!("{} is missing", at("address")))?;
                match address.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                    _ => return Err(format!("{}: {address:?} is not host:port", at("address"))),
                }
                let tls = match &r.tls {
                    None | Some(RawSyslogTls::On(false)) => None,
                    Some(RawSyslogTls::On(true)) => Some(SyslogTls {
                        ca_file: None,
                        server_name: None,
                    }),
                    Some(RawSyslogTls::Table(t)) => Some(SyslogTls {
                        ca_file: t.ca_file.as_deref().map(resolve),
                        server_name: t.server_name.clone(),
                    }),
                };
                let app_name = r.app_name.clone().unwrap_or_else(|| "ztk".into());
                if app_name.is_empty()
                    || app_name.len() > 48
                    || !app_name.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(format!(
                        "{}: 1 to 48 printable ASCII characters, no spaces (RFC 5424 APP-NAME)",
                        at("app_name")
                    ));
                }
                SinkKind::Syslog {
                    address,
                    tls,
                    app_name,
                    enterprise_number: r.enterprise_number.unwrap_or(DEFAULT_ENTERPRISE_NUMBER),
                }
            }
            "webhook" => {
                let url = https_url(&r)?;
                let format = match r.format.as_deref() {
                    None | Some("k8s-audit") => WebhookFormat::K8sAudit,
                    Some("ndjson") => WebhookFormat::Ndjson,
                    Some(other) => {
                        return Err(format!(
                            "{}: {other:?} is not a format: use k8s-audit or ndjson",
                            at("format")
                        ))
                    }
                };
                SinkKind::Webhook {
                    url,
                    format,
                    token: token(&r)?,
                    tls: http_tls(&r)?,
                }
            }
            _ => {
                let url = https_url(&r)?;
                let token = token(&r)?.ok_or_else(|| {
                    format!(
                        "{} is missing: Splunk HEC needs the collector's token",
                        at("token")
                    )
                })?;
                SinkKind::SplunkHec {
                    url,
                    token,
                    tls: http_tls(&r)?,
                    source: r.source.clone().unwrap_or_else(|| "ztk".into()),
                    sourcetype: r.sourcetype.clone().unwrap_or_else(|| "ztk:audit".into()),
                    index: r.index.clone(),
                    host: r.host.clone().unwrap_or_else(crate::fsutil::hostname),
                }
            }
        };
        sinks.push(SinkConfig {
            name,
            filter,
            filter_text,
            batch_size,
            max_wait,
            kind,
        });
    }
    Ok(sinks)
}

/// `100MiB`, `10MB`, `64KiB`, `1GiB`, `500000`.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("100MiB"), Some(100 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("1PB"), None);
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
