//! The wire contract between the ztk client and the gateway: header names, API paths and
//! JSON bodies. Both sides use these types, so they cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::audit::Command;

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
pub const SESSION_PATH: &str = "/ztk/v1/session";
pub const COMMANDS_PATH: &str = "/ztk/v1/commands";

/// Largest JSON body the gateway API reads.
pub const MAX_API_BODY: usize = 8 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IngestCommands {
    pub commands: Vec<Command>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IngestAck {
    pub accepted: usize,
}
