//! The wire contract between the ztk client and the gateway: header names, API paths and
//! JSON bodies. Both sides use these types, so they cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::audit::{ApiCall, Command, Cursor, Filter};

/// Sent by the client on every relayed call: the ztk command the call belongs to.
pub const COMMAND_ID_HEADER: &str = "ztk-command-id";
/// Sent by the client on every relayed call: the client's record id of the call.
pub const REQUEST_ID_HEADER: &str = "ztk-request-id";
/// kubectl's own command headers (KEP-859).
pub const KUBECTL_COMMAND_HEADER: &str = "kubectl-command";
pub const KUBECTL_SESSION_HEADER: &str = "kubectl-session";

/// Kubernetes API calls for cluster NAME go under `/k8s/NAME/`.
pub const KUBE_PREFIX: &str = "/k8s/";
pub const LOGIN_PATH: &str = "/ztk/v1/login";
/// `GET`: the gateway's single sign-on settings for `ztk login --sso` (`OidcInfo`).
pub const OIDC_PATH: &str = "/ztk/v1/oidc";
/// `POST`: an ID token from the OpenID provider for a session (`OidcLoginRequest`).
pub const LOGIN_OIDC_PATH: &str = "/ztk/v1/login/oidc";
pub const SESSION_PATH: &str = "/ztk/v1/session";
/// `POST`: a batch of the client's audit records (see `IngestBatch`).
pub const INGEST_PATH: &str = "/ztk/v1/audit/ingest";
pub const AUDIT_QUERY_PATH: &str = "/ztk/v1/audit/query";
/// Long-poll for records written after a sequence number (`ztk audit tail --remote`).
pub const AUDIT_TAIL_PATH: &str = "/ztk/v1/audit/tail";
/// `POST`: latency and activity statistics (`audit::stats::StatsQuery` → `Stats`).
pub const AUDIT_STATS_PATH: &str = "/ztk/v1/audit/stats";
/// Longest a tail request waits for new records before answering with none.
pub const MAX_TAIL_WAIT_MS: u64 = 30_000;
/// The gateway verifies its audit chain (administrators only).
pub const AUDIT_VERIFY_PATH: &str = "/ztk/v1/audit/verify";
/// The gateway's audit writer: mode, health and counts (administrators only).
pub const AUDIT_HEALTH_PATH: &str = "/ztk/v1/audit/health";

/// Largest page the audit query API returns.
pub const MAX_PAGE: usize = 5000;
pub const CAN_I_PATH: &str = "/ztk/v1/access/can-i";
pub const WHO_CAN_PATH: &str = "/ztk/v1/access/who-can";
pub const ACCESS_LIST_PATH: &str = "/ztk/v1/access/list";

/// Largest JSON body the gateway API reads.
pub const MAX_API_BODY: usize = 8 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// This client's current session token, if it has one: a new login replaces that session
    /// (revoked once the password is verified) instead of adding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
}

/// The answer to a login and to `GET /ztk/v1/session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user: String,
    pub groups: Vec<String>,
    /// Microseconds since the epoch.
    pub expires_us: i64,
    pub clusters: Vec<ClusterInfo>,
    /// Present only in the login answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user's role bindings (directly and through groups).
    #[serde(default)]
    pub roles: Vec<RoleGrant>,
    /// How many sessions the user has open (this one included), and the most allowed (0: no
    /// limit).
    #[serde(default)]
    pub open_sessions: u32,
    #[serde(default)]
    pub max_sessions: u32,
    /// How the session was made: `password`, `sso-code`, `sso-device`.
    #[serde(default)]
    pub method: String,
}

/// The gateway's single sign-on, as `ztk login --sso` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcInfo {
    pub issuer: String,
    /// The client id the CLI signs in with (a public client, PKCE).
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Whether the gateway also takes passwords.
    pub password_login: bool,
}

/// An ID token the CLI got from the provider, for a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcLoginRequest {
    pub id_token: String,
    /// The nonce the CLI sent in its authorization request (the code flow).
    #[serde(default)]
    pub nonce: Option<String>,
    /// `code` or `device`.
    pub flow: String,
    /// The client's previous session, ended by this login.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// One binding as the client shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGrant {
    pub role: String,
    /// `user alice` or `group dev`.
    pub subject: String,
    /// None: every cluster.
    pub cluster: Option<String>,
    /// None: every namespace.
    pub namespace: Option<String>,
}

/// `ztk access can-i` and `who-can`: a request to decide, as `kubectl auth can-i` names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessQuery {
    pub verb: String,
    /// `pods`, `pods/exec`, `deployments.apps`, `deploy`, or a non-resource URL (`/version`).
    pub resource: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub cluster: String,
    /// Ask for another user (can-i --as); only for administrators.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanIAnswer {
    pub allowed: bool,
    pub user: String,
    /// What was decided, in the gateway's naming (`list pods`).
    pub request: String,
    /// The granting binding, or the denial reason.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoCanAnswer {
    pub request: String,
    /// The bindings that grant the request.
    pub bindings: Vec<RoleGrant>,
    /// Known users granted it, directly or through a group.
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessListQuery {
    /// Another user's rules; only for administrators.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessListAnswer {
    pub user: String,
    pub groups: Vec<String>,
    pub rules: Vec<EffectiveRule>,
}

/// One rule the user has, with where it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectiveRule {
    pub grant: RoleGrant,
    pub rule: String,
}

/// The version of `IngestBatch` this ztk sends and accepts.
pub const INGEST_VERSION: u32 = 2;
/// Content type of a JSON batch.
pub const INGEST_JSON: &str = "application/json";
/// Content type of a compact batch: `IngestBatch` in postcard (version first, as a varint).
pub const INGEST_COMPACT: &str = "application/vnd.ztk.batch+postcard";
/// Largest batch body the gateway reads.
pub const MAX_INGEST_BODY: usize = 16 << 20;
/// Most records (calls and commands) in one batch.
pub const MAX_INGEST_RECORDS: usize = 20_000;

/// `POST /ztk/v1/audit/ingest`: records of the authenticated user, stored in one transaction.
/// Every record has a client-made UUIDv7 id, so sending a batch again stores nothing twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestBatch {
    /// Must be `INGEST_VERSION`; first, so any encoding can be checked before the rest.
    pub version: u32,
    /// Made by the client per batch, for logs and the acknowledgement.
    pub batch_id: uuid::Uuid,
    pub commands: Vec<Command>,
    pub calls: Vec<ApiCall>,
}

/// A batch ready to send: its body, that body's content type, and how many records it holds
/// (what the acknowledgement must confirm).
#[derive(Debug)]
pub struct EncodedBatch {
    pub payload: Vec<u8>,
    pub content_type: &'static str,
    pub records: usize,
}

impl IngestBatch {
    pub fn records(&self) -> usize {
        self.commands.len() + self.calls.len()
    }

    /// The batch as sent: JSON, or the compact encoding. A batch with a command field the
    /// compact encoding does not carry (`Command::reason`) goes as JSON whatever `json` says.
    pub fn encode(&self, json: bool) -> Result<EncodedBatch, String> {
        let (payload, content_type) = if json || !self.fits_compact() {
            (
                serde_json::to_vec(self).map_err(|e| e.to_string())?,
                INGEST_JSON,
            )
        } else {
            (
                self.to_compact().map_err(|e| e.to_string())?,
                INGEST_COMPACT,
            )
        };
        Ok(EncodedBatch {
            payload,
            content_type,
            records: self.records(),
        })
    }

    /// Whether the compact encoding carries every field of the batch: it has the commands'
    /// fields of version 2 only (see `CompactCommand`).
    pub fn fits_compact(&self) -> bool {
        self.commands.iter().all(|c| c.reason.is_empty())
    }

    /// The compact encoding; an error for a batch that does not fit it (`fits_compact`).
    pub fn to_compact(&self) -> Result<Vec<u8>, postcard::Error> {
        if !self.fits_compact() {
            return Err(postcard::Error::SerdeSerCustom);
        }
        // A command without a reason serializes as exactly the fields of `CompactCommand`
        // (the reason is skipped when empty).
        // Sized for the usual record (about 250 bytes) up front: grown by doubling, a batch's
        // buffer was copied a dozen times, each time into freshly mapped pages.
        let estimate = 256 * (self.calls.len() + self.commands.len()) + 64;
        postcard::to_extend(self, Vec::with_capacity(estimate))
    }

    /// Reads a compact batch, checking its version before decoding the rest.
    pub fn from_compact(bytes: &[u8]) -> Result<IngestBatch, String> {
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| format!("not a compact batch: {e}"))?;
        if version != INGEST_VERSION {
            return Err(format!(
                "batch version {version} is not supported (this gateway reads version {INGEST_VERSION}); upgrade ztk"
            ));
        }
        let batch: CompactBatch =
            postcard::from_bytes(bytes).map_err(|e| format!("malformed compact batch: {e}"))?;
        Ok(IngestBatch {
            version: batch.version,
            batch_id: batch.batch_id,
            commands: batch.commands.into_iter().map(Command::from).collect(),
            calls: batch.calls,
        })
    }
}

/// `IngestBatch` as the compact encoding lays it out.
#[derive(Deserialize)]
struct CompactBatch {
    version: u32,
    batch_id: uuid::Uuid,
    commands: Vec<CompactCommand>,
    calls: Vec<ApiCall>,
}

/// A command in the compact encoding: the fields of batch version 2, in their order. Postcard
/// is positional, so a field added to `Command` later is not in it (a batch that sets one goes
/// as JSON, which names its fields, see `IngestBatch::encode`): clients and gateways of either
/// side of the change keep reading each other's compact batches.
#[derive(Deserialize)]
struct CompactCommand {
    id: uuid::Uuid,
    started_us: i64,
    ended_us: Option<i64>,
    user: String,
    cluster: String,
    argv: Vec<String>,
    command_line: String,
    exit_code: Option<i32>,
    api_calls: i64,
    access_method: crate::audit::AccessMethod,
    cwd: String,
    host: String,
}

impl From<CompactCommand> for Command {
    fn from(c: CompactCommand) -> Command {
        Command {
            id: c.id,
            started_us: c.started_us,
            ended_us: c.ended_us,
            user: c.user,
            cluster: c.cluster,
            argv: c.argv,
            command_line: c.command_line,
            exit_code: c.exit_code,
            api_calls: c.api_calls,
            access_method: c.access_method,
            cwd: c.cwd,
            host: c.host,
            reason: String::new(),
        }
    }
}

/// The gateway's acknowledgement: the batch is stored (now or by an earlier attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestAck {
    pub batch_id: uuid::Uuid,
    /// Records in the batch, all of them stored.
    pub accepted: usize,
    /// Rows this attempt wrote: 0 when the batch had been stored before.
    pub written: usize,
}

/// Which listing of the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// One row per command, with its call count, statuses and duration.
    #[default]
    Commands,
    /// One row per API call.
    Calls,
}

/// `POST /ztk/v1/audit/query`: one page of the gateway's audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditQuery {
    pub view: View,
    pub filter: Filter,
    /// Continue after this row (the `next` of the previous page).
    #[serde(default)]
    pub after: Option<Cursor>,
    /// Rows per page (at most `MAX_PAGE`).
    pub limit: usize,
}

/// `POST /ztk/v1/audit/tail`: the records matching `filter` written after `after_seq`, in
/// write order. The gateway answers as soon as there are some, or after `wait_ms` with none.
/// Without `after_seq` it answers at once with no records and the current end (`through`),
/// where a follower starts. The answer is an `audit::SeqBatch`; continue from its `through`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditTail {
    pub filter: Filter,
    #[serde(default)]
    pub after_seq: Option<i64>,
    #[serde(default)]
    pub wait_ms: u64,
    /// Most records per answer (at most `MAX_PAGE`).
    pub limit: usize,
}

/// The gateway's audit writer, for `ztk audit verify --remote` and monitoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditHealth {
    /// `best-effort` or `fail-closed`.
    pub audit_mode: String,
    pub writer: crate::audit::store::WriterStatus,
    /// Hex of the Ed25519 key that signs the chain's checkpoints: pin it.
    pub public_key: String,
}

/// The gateway's verification of its own store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerifyAnswer {
    pub report: crate::audit::chain::Report,
    pub health: AuditHealth,
}
