//! The gateway's TOML configuration. A bad config fails at start with the file, the key and
//! the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::rbac::{builtin_roles, Role, Rule};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read gateway config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gateway config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default = "default_ttl")]
    session_ttl: String,
    /// Open sessions a user may hold at once; 0 for no limit.
    #[serde(default = "default_max_sessions")]
    max_sessions_per_user: u32,
    #[serde(default)]
    clusters: Vec<RawCluster>,
    #[serde(default = "default_admin_groups")]
    admin_groups: Vec<String>,
    /// Custom roles, beside the built-in view, edit, admin and cluster-admin.
    #[serde(default)]
    roles: Vec<RawRole>,
    /// Where the audit trail is streamed (SIEMs, files).
    #[serde(default)]
    sinks: Vec<crate::sinks::config::RawSink>,
    /// "best-effort" (default), "fail-closed" or "strict".
    #[serde(default)]
    audit_mode: Option<String>,
    /// How often the gateway signs the audit chain's head.
    #[serde(default = "default_checkpoint_interval")]
    audit_checkpoint_interval: String,
    /// The checkpoint keys (hex Ed25519 public keys) of the other gateways sharing `database`:
    /// verify accepts checkpoints signed by these and this gateway's own key.
    #[serde(default)]
    audit_checkpoint_keys: Vec<String>,
    /// How old a client's record must be before a missing gateway record of it is recovered.
    #[serde(default = "default_reconcile_after")]
    audit_reconcile_after: String,
    /// Threads that relay requests; 0 (the default): one per core.
    #[serde(default)]
    worker_threads: usize,
    /// `[limits]`: what one client may hold or send.
    #[serde(default)]
    limits: RawLimits,
    /// `[shell]`: kubectl in the browser.
    #[serde(default)]
    shell: crate::shell::config::RawShell,
    /// `[oidc]`: single sign-on.
    #[serde(default)]
    oidc: Option<crate::oidc::config::RawOidc>,
    /// Whether users may sign in with a password (false: SSO only).
    #[serde(default = "default_true")]
    password_login: bool,
    /// `postgresql://USER@HOST:5432/DB?sslmode=verify-full`: the database several gateways
    /// share (else SQLite files in `data_dir`). `ZTK_DATABASE_URL` sets it too.
    #[serde(default)]
    database: Option<String>,
    /// A file holding the database password (its first line), when the URL has none.
    #[serde(default)]
    database_password_file: Option<PathBuf>,
    /// `[agents]`: clusters reached through `ztk agent`.
    #[serde(default)]
    agents: RawAgents,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    /// How long an agent's client certificate is valid; it is renewed over the tunnel once
    /// two thirds of that have passed.
    #[serde(default = "default_agent_certificate_ttl")]
    certificate_ttl: String,
    /// How often the gateway pings each agent's tunnel; a ping unanswered for as long closes
    /// it (a link that died silently, a NAT that forgot the connection).
    #[serde(default = "default_agent_keepalive")]
    keepalive: String,
}

impl Default for RawAgents {
    fn default() -> Self {
        RawAgents {
            certificate_ttl: default_agent_certificate_ttl(),
            keepalive: default_agent_keepalive(),
        }
    }
}

fn default_agent_keepalive() -> String {
    "15s".into()
}

fn default_agent_certificate_ttl() -> String {
    "30d".into()
}

fn default_reconcile_after() -> String {
    "30s".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    header_read_timeout: String,
    idle_timeout: String,
    max_connections_per_address: usize,
    ingest_records_per_minute: u64,
    ingest_bytes_per_minute: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let limits = Limits::default();
        RawLimits {
            header_read_timeout: "10s".into(),
            idle_timeout: "2m".into(),
            max_connections_per_address: limits.max_connections_per_address,
            ingest_records_per_minute: limits.ingest_records_per_minute,
            ingest_bytes_per_minute: limits.ingest_bytes_per_minute,
        }
    }
}

/// `[limits]`: what one client may hold or send, so that no user can starve the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: std::time::Duration,
    /// A connection with no request in flight this long is closed. Longer than the clients'
    /// own idle close (90 s), so that a client is not caught reusing a connection being closed.
    pub idle_timeout: std::time::Duration,
    /// Connections open at once from one address (0: no limit).
    pub max_connections_per_address: usize,
    /// Audit records one user may ship per minute (0: no limit); past it `429`.
    pub ingest_records_per_minute: u64,
    /// Bytes of batches one user may ship per minute (0: no limit); past it `429`.
    pub ingest_bytes_per_minute: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(120),
            max_connections_per_address: 512,
            ingest_records_per_minute: 300_000,
            ingest_bytes_per_minute: 128 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: Option<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// Checks `[[roles]]` tables (of the config, or of a file `ztk gateway role apply` stores):
/// names well-formed and new (not built in, not in `taken`, not twice), rules valid.
fn validate_roles(raw: Vec<RawRole>, taken: &[String]) -> Result<Vec<Role>, String> {
    let builtin: Vec<String> = builtin_roles().into_iter().map(|r| r.name).collect();
    let mut roles: Vec<Role> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("roles[{i}]");
        let name = r
            .name
            .ok_or_else(|| format!("key `{key}.name` is missing"))?;
        if !valid_name(&name) {
            return Err(format!(
                "key `{key}.name`: {name:?} must be lowercase letters, digits, '-', '.', '_'"
            ));
        }
        if builtin.contains(&name) {
            return Err(format!(
                "key `{key}.name`: {name:?} is a built-in role; choose another name"
            ));
        }
        if taken.contains(&name) {
            return Err(format!(
                "key `{key}.name`: {name:?} is defined in the gateway's config; change it there, or choose another name"
            ));
        }
        if roles.iter().any(|other| other.name == name) {
            return Err(format!("key `{key}.name`: role {name:?} is defined twice"));
        }
        if r.rules.is_empty() {
            return Err(format!(
                "key `{key}.rules` ({name}): a role needs at least one `[[roles.rules]]`"
            ));
        }
        for (j, rule) in r.rules.iter().enumerate() {
            rule.validate()
                .map_err(|m| format!("key `{key}.rules[{j}]` ({name}): {m}"))?;
        }
        roles.push(Role {
            name,
            rules: r.rules,
            builtin: false,
        });
    }
    Ok(roles)
}

/// The roles of a file for `ztk gateway role apply`: `[[roles]]` tables as in gateway.toml,
/// none named like a built-in role or one of `config_roles`.
pub fn parse_role_file(text: &str, config_roles: &[Role]) -> Result<Vec<Role>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RoleFile {
        #[serde(default)]
        roles: Vec<RawRole>,
    }
    let file: RoleFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    if file.roles.is_empty() {
        return Err(
            "the file defines no role: add `[[roles]]` tables with a name and `[[roles.rules]]`"
                .into(),
        );
    }
    let taken: Vec<String> = config_roles.iter().map(|r| r.name.clone()).collect();
    validate_roles(file.roles, &taken)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Extra names for a generated certificate.
    #[serde(default)]
    hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    #[serde(default)]
    sandbox: bool,
    /// Inside a pod: the pod's service account and `KUBERNETES_SERVICE_HOST`/`_PORT`.
    #[serde(default)]
    incluster: bool,
    /// Accept the kubeconfig's `insecure-skip-tls-verify` (warned about at start).
    #[serde(default)]
    allow_insecure: bool,
    /// Reached through `ztk agent`, which dials the gateway from the cluster's side.
    #[serde(default)]
    agent: bool,
    /// Act on the cluster as the user: send `Impersonate-User`/`Impersonate-Group` so the
    /// cluster's own RBAC applies too (the gateway's credential needs the impersonate verb).
    #[serde(default)]
    impersonate: bool,
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_admin_groups() -> Vec<String> {
    vec!["ztk-admins".into()]
}
fn default_ttl() -> String {
    "8h".into()
}
fn default_checkpoint_interval() -> String {
    "1m".into()
}
fn default_max_sessions() -> u32 {
    10
}

/// A validated gateway configuration, paths made absolute.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsSource,
    pub session_ttl_us: i64,
    /// 0: no limit.
    pub max_sessions_per_user: u32,
    pub clusters: Vec<ClusterConfig>,
    /// Members of these groups read everyone's audit records through the query API.
    pub admin_groups: Vec<String>,
    /// Custom roles from the config (the built-in ones are not listed here).
    pub roles: Vec<Role>,
    /// `[[sinks]]`: where the audit trail is streamed.
    pub sinks: Vec<crate::sinks::config::SinkConfig>,
    /// What the gateway does when it cannot write its audit records.
    pub audit_mode: AuditMode,
    /// How often the audit chain's head is signed.
    pub audit_checkpoint_interval: std::time::Duration,
    /// The other gateways' checkpoint public keys (`audit_checkpoint_keys`).
    pub audit_checkpoint_keys: Vec<Vec<u8>>,
    /// A client's record older than this whose gateway record is missing is recovered.
    pub audit_reconcile_after: std::time::Duration,
    /// Threads of the async runtime that relays requests (`worker_threads`).
    pub worker_threads: usize,
    pub limits: Limits,
    /// `[shell]`: kubectl in the browser.
    pub shell: crate::shell::ShellConfig,
    /// `[oidc]`: single sign-on.
    pub oidc: Option<crate::oidc::config::OidcConfig>,
    pub password_login: bool,
    /// `[agents] certificate_ttl`.
    pub agent_certificate_ttl: std::time::Duration,
    /// `[agents] keepalive`.
    pub agent_keepalive: std::time::Duration,
    /// The PostgreSQL database several gateways share; None: SQLite files in `data_dir`.
    pub database: Option<crate::db::PgUrl>,
}

/// `audit_mode`: what the gateway does while it cannot persist audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// Keep serving; hold the records and retry, and count and report any that are lost.
    #[default]
    BestEffort,
    /// Refuse requests (503) until the store takes writes again; nothing is dropped.
    FailClosed,
    /// `fail-closed`, and each call's record (`in progress`) is committed before the call is
    /// forwarded (the final record replaces it): even a `kill -9` of the gateway leaves a
    /// record of every call the cluster may have executed. Concurrent calls share commits.
    Strict,
}

/// One relay thread per core, as nginx's `worker_processes auto`. One thread alone (a
/// current-thread runtime) spends the least CPU per call, but on a loaded machine the kernel
/// shares the cores per thread: on two cores shared with the load and the upstream, a second
/// relay thread cut what the gateway adds at c=64 by 15–25 % (BENCHMARKS.md, round 8).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1)
}

impl AuditMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::BestEffort => "best-effort",
            AuditMode::FailClosed => "fail-closed",
            AuditMode::Strict => "strict",
        }
    }

    /// Whether requests are refused while the store does not take writes.
    pub fn fail_closed(self) -> bool {
        matches!(self, AuditMode::FailClosed | AuditMode::Strict)
    }
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generate a CA and server certificate into the data dir (for these extra names).
    Generated {
        hosts: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub kind: ClusterKind,
    pub impersonate: bool,
}

impl ClusterConfig {
    /// How the cluster is reached, from the config alone (before the gateway starts).
    pub fn source(&self) -> String {
        match &self.kind {
            ClusterKind::Kubeconfig {
                path,
                context,
                allow_insecure,
            } => format!(
                "kubeconfig {}{}{}",
                path.display(),
                match context {
                    Some(c) => format!(" context {c}"),
                    None => String::new(),
                },
                if *allow_insecure {
                    " (allow_insecure)"
                } else {
                    ""
                }
            ),
            ClusterKind::InCluster => "in-cluster service account".into(),
            ClusterKind::Sandbox => "built-in sandbox".into(),
            ClusterKind::Agent => "ztk agent (tunnel)".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ClusterKind {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
        allow_insecure: bool,
    },
    /// The service account of the pod the gateway runs in.
    InCluster,
    Sandbox,
    /// Reached through the tunnel of `ztk agent`.
    Agent,
}

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(format!(
                "key `listen`: {:?} is not an address like 127.0.0.1:8443",
                raw.listen
            ))
        })?;
        let data_dir = raw
            .data_dir
            .as_deref()
            .map(resolve)
            .ok_or_else(|| invalid("key `data_dir` is missing: set the directory for the gateway's database and certificates".into()))?;
        let session_ttl_us = crate::audit::filter::parse_duration_us(&raw.session_ttl)
            .ok()
            .filter(|us| *us > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "key `session_ttl`: {:?} is not a duration like 8h or 30m",
                    raw.session_ttl
                ))
            })?;
        let tls = match raw.tls {
            None => TlsSource::Generated { hosts: Vec::new() },
            Some(RawTls {
                cert: Some(cert),
                key: Some(key),
                ..
            }) => TlsSource::Files {
                cert: resolve(&cert),
                key: resolve(&key),
            },
            Some(RawTls {
                cert: None,
                key: None,
                hosts,
            }) => TlsSource::Generated { hosts },
            Some(_) => {
                return Err(invalid(
                    "key `tls`: give both `cert` and `key`, or neither to generate them".into(),
                ))
            }
        };
        let mut clusters: Vec<ClusterConfig> = Vec::new();
        for (i, c) in raw.clusters.into_iter().enumerate() {
            let key = format!("clusters[{i}]");
            let name = c
                .name
                .ok_or_else(|| invalid(format!("key `{key}.name` is missing")))?;
            if !valid_name(&name) {
                return Err(invalid(format!(
                    "key `{key}.name`: {name:?} must be lowercase letters, digits and '-' (like a Kubernetes name)"
                )));
            }
            if clusters.iter().any(|other| other.name == name) {
                return Err(invalid(format!(
                    "key `{key}.name`: cluster {name:?} is defined twice"
                )));
            }
            let sources = [c.kubeconfig.is_some(), c.sandbox, c.incluster, c.agent];
            if sources.iter().filter(|set| **set).count() != 1 {
                return Err(invalid(format!(
                    "key `{key}` ({name}): set exactly one of `kubeconfig = \"PATH\"`, `incluster = true`, `agent = true` or `sandbox = true`"
                )));
            }
            if c.context.is_some() && c.kubeconfig.is_none() {
                return Err(invalid(format!(
                    "key `{key}.context` ({name}): `context` picks a context of `kubeconfig`; set one"
                )));
            }
            if c.allow_insecure && c.kubeconfig.is_none() {
                return Err(invalid(format!(
                    "key `{key}.allow_insecure` ({name}): only a `kubeconfig` cluster can skip TLS verification"
                )));
            }
            let kind = match c.kubeconfig {
                Some(kc) => ClusterKind::Kubeconfig {
                    path: resolve(&kc),
                    context: c.context,
                    allow_insecure: c.allow_insecure,
                },
                None if c.incluster => ClusterKind::InCluster,
                None if c.agent => ClusterKind::Agent,
                None => ClusterKind::Sandbox,
            };
            clusters.push(ClusterConfig {
                name,
                kind,
                impersonate: c.impersonate,
            });
        }
        let roles = validate_roles(raw.roles, &[]).map_err(invalid)?;
        let sinks = crate::sinks::config::validate(raw.sinks, &resolve).map_err(invalid)?;
        let audit_mode = match raw.audit_mode.as_deref() {
            None | Some("best-effort") => AuditMode::BestEffort,
            Some("fail-closed") => AuditMode::FailClosed,
            Some("strict") => AuditMode::Strict,
            Some(other) => {
                let known = "\"best-effort\", \"fail-closed\" or \"strict\"";
                return Err(invalid(format!(
                    "key `audit_mode`: {other:?} is not {known}"
                )));
            }
        };
        let mut audit_checkpoint_keys = Vec::new();
        for (i, key) in raw.audit_checkpoint_keys.iter().enumerate() {
            match hex::decode(key.trim()) {
                Ok(bytes) if bytes.len() == 32 => audit_checkpoint_keys.push(bytes),
                _ => {
                    return Err(invalid(format!(
                        "key `audit_checkpoint_keys[{i}]`: {key:?} is not an Ed25519 public key in hex (64 digits, as `ztk gateway audit verify` prints it)"
                    )))
                }
            }
        }
        let audit_checkpoint_interval =
            crate::audit::filter::parse_duration_us(&raw.audit_checkpoint_interval)
                .ok()
                .filter(|us| *us >= 1_000)
                .map(|us| std::time::Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    invalid(format!(
                        "key `audit_checkpoint_interval`: {:?} is not a duration like 1m or 10s",
                        raw.audit_checkpoint_interval
                    ))
                })?;
        let audit_reconcile_after =
            crate::audit::filter::parse_duration_us(&raw.audit_reconcile_after)
                .ok()
                .filter(|us| *us >= 1_000_000)
                .map(|us| std::time::Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    let value = &raw.audit_reconcile_after;
                    invalid(format!(
                        "key `audit_reconcile_after`: {value:?} is not a duration of at least 1s"
                    ))
                })?;
        let duration = |key: &str, value: &str| {
            crate::audit::filter::parse_duration_us(value)
                .ok()
                .filter(|us| *us >= 1_000)
                .map(|us| std::time::Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    invalid(format!(
                        "key `limits.{key}`: {value:?} is not a duration like 10s or 2m"
                    ))
                })
        };
        let limits = Limits {
            header_read_timeout: duration("header_read_timeout", &raw.limits.header_read_timeout)?,
            idle_timeout: duration("idle_timeout", &raw.limits.idle_timeout)?,
            max_connections_per_address: raw.limits.max_connections_per_address,
            ingest_records_per_minute: raw.limits.ingest_records_per_minute,
            ingest_bytes_per_minute: raw.limits.ingest_bytes_per_minute,
        };
        // A batch ztk's client sends (2,000 records, well under 4 MiB) must fit in a minute's
        // allowance, or it would wait forever.
        if limits.ingest_records_per_minute != 0 && limits.ingest_records_per_minute < 2_000 {
            return Err(invalid(
                "key `limits.ingest_records_per_minute`: at least 2000 (one client batch), or 0 for no limit".into(),
            ));
        }
        if limits.ingest_bytes_per_minute != 0 && limits.ingest_bytes_per_minute < 4 << 20 {
            return Err(invalid(
                "key `limits.ingest_bytes_per_minute`: at least 4194304 (4 MiB), or 0 for no limit"
                    .into(),
            ));
        }
        let shell = raw
            .shell
            .validate(path.parent().unwrap_or(std::path::Path::new(".")))
            .map_err(invalid)?;
        let oidc = match raw.oidc {
            Some(o) => Some(
                o.validate(path.parent().unwrap_or(std::path::Path::new(".")))
                    .map_err(invalid)?,
            ),
            None => None,
        };
        if !raw.password_login && oidc.is_none() {
            return Err(invalid(
                "key `password_login = false` needs `[oidc]`: nobody could sign in".into(),
            ));
        }
        // The environment's URL wins over the file's (a secret store may inject it).
        let database_url = std::env::var("ZTK_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or(raw.database);
        let database = match database_url {
            None => {
                if raw.database_password_file.is_some() {
                    return Err(invalid(
                        "key `database_password_file`: set `database` (a postgresql:// URL) too"
                            .into(),
                    ));
                }
                None
            }
            Some(url) => {
                let file = raw.database_password_file.as_deref().map(resolve);
                // The parser's messages never quote the URL, so no password reaches them.
                Some(
                    crate::db::PgUrl::parse(&url, file.as_deref())
                        .map_err(|e| invalid(format!("key `database`: {e}")))?,
                )
            }
        };
        let agent_certificate_ttl =
            crate::audit::filter::parse_duration_us(&raw.agents.certificate_ttl)
                .ok()
                .filter(|us| *us >= 10_000_000)
                .map(|us| std::time::Duration::from_micros(us as u64))
                .ok_or_else(|| {
                    invalid(format!(
                "key `agents.certificate_ttl`: {:?} is not a duration of at least 10s, like 30d",
                raw.agents.certificate_ttl
            ))
                })?;
        let agent_keepalive = crate::audit::filter::parse_duration_us(&raw.agents.keepalive)
            .ok()
            .filter(|us| (1_000_000..=3_600_000_000).contains(us))
            .map(|us| std::time::Duration::from_micros(us as u64))
            .ok_or_else(|| {
                invalid(format!(
                    "key `agents.keepalive`: {:?} is not a duration from 1s to 1h, like 15s",
                    raw.agents.keepalive
                ))
            })?;
        Ok(GatewayConfig {
            agent_certificate_ttl,
            agent_keepalive,
            shell,
            oidc,
            database,
            password_login: raw.password_login,
            limits,
            path: path.to_path_buf(),
            listen,
            data_dir,
            tls,
            session_ttl_us,
            max_sessions_per_user: raw.max_sessions_per_user,
            clusters,
            admin_groups: raw.admin_groups,
            roles,
            sinks,
            audit_mode,
            audit_checkpoint_interval,
            audit_checkpoint_keys,
            audit_reconcile_after,
            worker_threads: match raw.worker_threads {
                0 => default_worker_threads(),
                n => n,
            },
        })
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("gateway.db")
    }

    /// The users, sessions and bindings: in PostgreSQL when `database` is set, else in
    /// `gateway.db`.
    pub fn open_user_store(
        &self,
    ) -> Result<crate::gateway::users::UserStore, crate::gateway::users::UserError> {
        match &self.database {
            Some(url) => crate::gateway::users::UserStore::open_postgres(url.clone()),
            None => crate::gateway::users::UserStore::open(&self.db_path()),
        }
    }

    /// The audit trail: in PostgreSQL when `database` is set (records it cannot take when the
    /// writer must stop are spilled into `data_dir`), else in `audit.db`.
    pub fn open_audit_store(
        &self,
    ) -> Result<crate::audit::AuditStore, crate::audit::store::StoreError> {
        match &self.database {
            Some(url) => {
                crate::audit::AuditStore::open_postgres(url.clone(), &self.data_dir.join("audit"))
            }
            None => crate::audit::AuditStore::open(&self.audit_path()),
        }
    }

    /// Where the gateway's data is, for messages: the database URL (without its password) or
    /// the data directory.
    pub fn database_location(&self) -> String {
        match &self.database {
            Some(url) => url.to_string(),
            None => self.data_dir.display().to_string(),
        }
    }

    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit.db")
    }

    /// The Ed25519 key (PKCS#8, 0600) that signs the audit chain's checkpoints.
    pub fn audit_key_path(&self) -> PathBuf {
        self.data_dir.join("audit-signing-key.p8")
    }
}

/// Cluster and user names: DNS-label-like, so they are safe in URLs and context names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        })
        && !name.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(Path::new("/etc/ztk/gateway.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("data_dir = \"data\"\n[[clusters]]\nname = \"sandbox\"\nsandbox = true\n")
            .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.data_dir, PathBuf::from("/etc/ztk/data"));
        assert_eq!(c.session_ttl_us, 8 * 3_600_000_000);
        assert!(matches!(c.tls, TlsSource::Generated { .. }));
        assert!(matches!(c.clusters[0].kind, ClusterKind::Sandbox));
        assert!(!c.clusters[0].impersonate);
        assert_eq!(c.max_sessions_per_user, 10);
        assert_eq!(c.agent_certificate_ttl.as_secs(), 30 * 86_400);
        let agent = parse("data_dir = \"d\"\n[agents]\ncertificate_ttl = \"7d\"\n[[clusters]]\nname = \"edge\"\nagent = true\n")
            .unwrap();
        assert!(matches!(agent.clusters[0].kind, ClusterKind::Agent));
        assert_eq!(agent.agent_certificate_ttl.as_secs(), 7 * 86_400);
        assert!(c.roles.is_empty());
        assert_eq!(c.audit_mode, AuditMode::BestEffort);
        assert_eq!(
            c.audit_checkpoint_interval,
            std::time::Duration::from_secs(60)
        );
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.worker_threads, cores);
        assert_eq!(
            parse("data_dir = \"d\"\nworker_threads = 3")
                .unwrap()
                .worker_threads,
            3
        );
        assert!(parse("data_dir = \"d\"\nworker_threads = -1").is_err());
        let c = parse(
            "data_dir = \"d\"\naudit_mode = \"fail-closed\"\naudit_checkpoint_interval = \"5s\"",
        )
        .unwrap();
        assert_eq!(c.audit_mode, AuditMode::FailClosed);
        assert_eq!(
            c.audit_checkpoint_interval,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn custom_roles_and_impersonating_clusters() {
        let c = parse(
            "data_dir = \"d\"\nmax_sessions_per_user = 2\n[[clusters]]\nname = \"prod\"\nsandbox = true\nimpersonate = true\n\
             [[roles]]\nname = \"pod-reader\"\n[[roles.rules]]\napi_groups = [\"\"]\nresources = [\"pods\", \"pods/log\"]\nverbs = [\"get\", \"list\"]\n",
        )
        .unwrap();
        assert!(c.clusters[0].impersonate);
        assert_eq!(c.max_sessions_per_user, 2);
        assert_eq!(c.roles[0].name, "pod-reader");
        assert_eq!(c.roles[0].rules[0].resources, vec!["pods", "pods/log"]);
    }

    #[test]
    fn sinks_of_every_type() {
        let c = parse(
            r#"data_dir = "d"
[[sinks]]
name = "archive"
type = "file"
path = "audit/ztk.jsonl"
max_size = "10MiB"
max_files = 3
[[sinks]]
name = "rsyslog"
type = "syslog"
address = "logs.example.com:6514"
tls = { ca_file = "ca.pem" }
filter = "verb:create,update,patch,delete"
[[sinks]]
name = "falco"
type = "webhook"
url = "https://falco:9765/k8s-audit"
token = "s3cret-bearer"
batch_size = 50
max_wait = "250ms"
[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "https://splunk:8088/services/collector/event"
token = "hec-s3cret"
filter = "cluster:prod"
"#,
        )
        .unwrap();
        use crate::sinks::config::{SinkKind, WebhookFormat};
        assert_eq!(c.sinks.len(), 4);
        match &c.sinks[0].kind {
            SinkKind::File {
                path,
                max_size,
                max_files,
            } => {
                assert_eq!(path, Path::new("/etc/ztk/audit/ztk.jsonl"));
                assert_eq!(*max_size, 10 << 20);
                assert_eq!(*max_files, 3);
            }
            other => panic!("{other:?}"),
        }
        match &c.sinks[1].kind {
            SinkKind::Syslog {
                tls: Some(tls),
                enterprise_number,
                ..
            } => {
                assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/ztk/ca.pem")));
                assert_eq!(*enterprise_number, 32473);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.sinks[1].filter.verbs,
            ["create", "update", "patch", "delete"]
        );
        assert!(matches!(
            c.sinks[2].kind,
            SinkKind::Webhook {
                format: WebhookFormat::K8sAudit,
                ..
            }
        ));
        assert_eq!(c.sinks[2].batch_size, 50);
        assert_eq!(c.sinks[2].max_wait, std::time::Duration::from_millis(250));
        assert_eq!(c.sinks[3].filter.clusters, ["prod"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let cases = [
            ("data_dir = 1", "data_dir"),
            ("listen = \"nope\"\ndata_dir = \"d\"", "`listen`"),
            ("data_dir = \"d\"\nsession_ttl = \"forever\"", "`session_ttl`"),
            ("data_dir = \"d\"\n[[clusters]]\nname = \"x\"", "`clusters[0]` (x)"),
            ("data_dir = \"d\"\n[[clusters]]\nname = \"Bad Name\"\nsandbox = true", "clusters[0].name"),
            ("data_dir = \"d\"\n[[clusters]]\nname = \"a\"\nsandbox = true\n[[clusters]]\nname = \"a\"\nsandbox = true", "defined twice"),
            ("data_dir = \"d\"\nbogus = 1", "bogus"),
            ("data_dir = \"d\"\n[[clusters]]\nname = \"e\"\nagent = true\nsandbox = true", "`agent = true`"),
            ("data_dir = \"d\"\n[agents]\ncertificate_ttl = \"1s\"", "`agents.certificate_ttl`"),
            ("data_dir = \"d\"\n[agents]\nttl = \"1d\"", "ttl"),
            ("data_dir = \"d\"\n[agents]\nkeepalive = \"0s\"", "`agents.keepalive`"),
            ("data_dir = \"d\"\naudit_mode = \"fail-open\"", "`audit_mode`"),
            ("data_dir = \"d\"\naudit_checkpoint_interval = \"often\"", "`audit_checkpoint_interval`"),
            ("data_dir = \"d\"\n[tls]\ncert = \"c\"", "`tls`"),
            ("", "data_dir"),
            ("data_dir = \"d\"\n[[roles]]\nname = \"view\"\n[[roles.rules]]\nverbs = [\"get\"]\napi_groups = [\"\"]\nresources = [\"pods\"]", "built-in"),
            ("data_dir = \"d\"\n[[roles]]\nname = \"r\"", "roles[0].rules"),
            ("data_dir = \"d\"\n[[roles]]\nname = \"r\"\n[[roles.rules]]\nverbs = [\"get\"]\nresources = [\"pods\"]", "api_groups"),
            ("data_dir = \"d\"\n[[roles]]\nname = \"r\"\n[[roles.rules]]\nverb = [\"get\"]", "verb"),
            ("data_dir = \"d\"\n[[sinks]]\ntype = \"file\"\npath = \"a\"", "sinks[0].name"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"kafka\"", "`sinks[0].type` (s)"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"", "`sinks[0].path` (s) is missing"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"a\"\nurl = \"https://x\"", "`sinks[0].url` (s): a file sink has no such key"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"a\"\nfilter = \"colour:red\"", "`sinks[0].filter` (s): unknown filter"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"a\"\nmax_size = \"huge\"", "`sinks[0].max_size` (s)"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"nohost\"", "`sinks[0].address` (s)"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"webhook\"\nurl = \"http://x/\"", "must be an https:// URL"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"webhook\"\nurl = \"https://x/\"\nformat = \"xml\"", "`sinks[0].format` (s)"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"webhook\"\nurl = \"https://x/\"\nclient_cert = \"c\"", "client_key"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"splunk_hec\"\nurl = \"https://x/\"", "`sinks[0].token` (s) is missing"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"a\"\nbatch_size = 0", "`sinks[0].batch_size` (s)"),
            ("data_dir = \"d\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"a\"\n[[sinks]]\nname = \"s\"\ntype = \"file\"\npath = \"b\"", "sink \"s\" is defined twice"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("/etc/ztk/gateway.toml"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
