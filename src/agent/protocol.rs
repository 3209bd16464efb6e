//! The wire contract between `ztk agent` and the gateway: only names and bodies, no logic.
//!
//! 1. Enrollment (once): the agent `POST`s an [`EnrollRequest`] (its one-time token and a CSR)
//!    to [`ENROLL_PATH`] over ordinary HTTPS and gets an [`EnrollResponse`]: a client
//!    certificate for `CN=ztk-agent:CLUSTER`, signed by the gateway's agent CA.
//! 2. The tunnel: the agent dials the gateway's HTTPS port with ALPN [`TUNNEL_ALPN`] and its
//!    client certificate. Over that TLS connection the roles turn: the gateway is the HTTP/2
//!    client and the agent the server. Each stream the gateway opens is a request to one of the
//!    paths below; a [`STREAM_PATH`] stream is answered `200` at once and then carries the bytes
//!    of one HTTP/1.1 connection to the cluster (requests, responses, upgrades) both ways.

use serde::{Deserialize, Serialize};

/// The ALPN protocol of the tunnel: a connection offering it is an agent's.
pub const TUNNEL_ALPN: &[u8] = b"ztk-tunnel/1";
/// `POST`: trade an enrollment token for a client certificate (`EnrollRequest`).
pub const ENROLL_PATH: &str = "/ztk/v1/agents/enroll";
/// On the tunnel: one HTTP/1.1 connection to the cluster.
pub const STREAM_PATH: &str = "/ztk/tunnel/v1/stream";
/// On the tunnel: the agent describes itself (`Hello`).
pub const HELLO_PATH: &str = "/ztk/tunnel/v1/hello";
/// On the tunnel: a renewed client certificate (PEM body) for the agent to keep.
pub const CERTIFICATE_PATH: &str = "/ztk/tunnel/v1/certificate";
/// On the tunnel: the gateway refuses this agent (`Refused`) and closes the tunnel.
pub const REFUSED_PATH: &str = "/ztk/tunnel/v1/refused";
/// The common name of an agent's certificate: this prefix and the cluster's name.
pub const AGENT_CN_PREFIX: &str = "ztk-agent:";
/// Largest enrollment or certificate body read.
pub const MAX_BODY: usize = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub cluster: String,
    /// The one-time token `ztk gateway agent token` printed.
    pub token: String,
    /// A PKCS#10 certificate signing request (PEM) for the agent's own key.
    pub csr: String,
    /// The agent's version, for the gateway's log.
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's client certificate (PEM).
    pub certificate: String,
    /// RFC 3339.
    pub expires: String,
}

/// What the agent says of itself when a tunnel opens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hello {
    pub version: String,
    pub cluster: String,
    /// How the agent reaches its cluster ("kubeconfig FILE", "in-cluster service account").
    pub reaches: String,
    /// The agent's host name.
    pub host: String,
    /// The cluster's `gitVersion`, when the agent could ask it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

/// Why a gateway refused an agent's tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub message: String,
    /// The certificate will never be accepted again: the agent forgets it and stops.
    pub revoked: bool,
}
