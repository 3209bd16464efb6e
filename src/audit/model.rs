//! The audit records. One API-call type and one command type serve the client and the gateway,
//! the store, the filters, every output format and the ingest API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::net::IpAddr;

use http::HeaderMap;

use crate::audit::redact::redact_query;
use crate::protocol;
use crate::relay::Outcome;
use crate::request_info::RequestInfo;

/// How a user reached the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessMethod {
    /// kubectl or ztk in a terminal.
    #[default]
    Cli,
    /// The web console.
    Browser,
    /// Any other client (client libraries, k9s, scripts).
    Api,
}

impl AccessMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMethod::Cli => "cli",
            AccessMethod::Browser => "browser",
            AccessMethod::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<AccessMethod> {
        match s {
            "cli" => Some(AccessMethod::Cli),
            "browser" => Some(AccessMethod::Browser),
            "api" => Some(AccessMethod::Api),
            _ => None,
        }
    }

    /// kubectl identifies itself in User-Agent (`kubectl/v1.32.4 (linux/amd64) kubernetes/…`,
    /// and the dispatcher as `kubectl-dispatcher/…`).
    pub fn from_user_agent(user_agent: &str) -> AccessMethod {
        if user_agent.starts_with("kubectl") || user_agent.starts_with("ztk") {
            AccessMethod::Cli
        } else {
            AccessMethod::Api
        }
    }
}

/// The reason of the record written when an upgraded stream opens; the final record (same id)
/// replaces it when the stream ends.
pub const STREAM_OPEN: &str = "stream open";

/// The reason of the record a fail-closed local proxy commits before it forwards a call; the
/// final record (same id) replaces it when the call ends.
pub const IN_PROGRESS: &str = "in progress";

/// One Kubernetes API call, as seen by the side that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApiCall {
    /// Record id (UUIDv7, so ids sort by time).
    pub id: Uuid,
    /// When the request arrived, in microseconds since the Unix epoch.
    pub time_us: i64,
    pub user: String,
    pub cluster: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub api_group: String,
    pub api_version: String,
    /// The apiserver's verb (RequestInfo rules).
    pub verb: String,
    pub method: String,
    pub path: String,
    /// The query string, with secret-looking values redacted.
    pub query: String,
    /// HTTP status sent to the client (0 when the connection failed before an answer).
    pub status: u16,
    /// Time from request to the end of the response body, as measured by this side.
    pub duration_us: i64,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    pub user_agent: String,
    pub source_ip: String,
    /// The `Kubectl-Command` header (`kubectl get`), when kubectl sent it.
    pub kubectl_command: String,
    /// The `Kubectl-Session` header: one random id per kubectl process.
    pub kubectl_session: String,
    /// The ztk command this call belongs to.
    pub command_id: Option<Uuid>,
    /// The client's id of this call (equal to `id` in the client's own store).
    pub request_id: Option<Uuid>,
    pub access_method: AccessMethod,
    /// `allow`, or why the call was not forwarded (`deny`, `unauthenticated`, `error`).
    pub decision: String,
    /// Details: the denial reason or the relay error.
    pub reason: String,
}

impl ApiCall {
    /// Starts the record of a call as it arrived at this hop: who sent what, named by the
    /// apiserver's rules. The caller fills in user and cluster, then `finish` or `refuse`.
    pub fn begin(
        method: &http::Method,
        path: &str,
        query: Option<&str>,
        info: &RequestInfo,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> ApiCall {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let user_agent = header(http::header::USER_AGENT.as_str()).to_string();
        let mut call = ApiCall {
            id: Uuid::now_v7(),
            time_us: now_us(),
            method: method.to_string(),
            path: path.to_string(),
            query: redact_query(query.unwrap_or("")),
            access_method: AccessMethod::from_user_agent(&user_agent),
            user_agent,
            source_ip: peer.to_string(),
            kubectl_command: header(protocol::KUBECTL_COMMAND_HEADER).to_string(),
            kubectl_session: header(protocol::KUBECTL_SESSION_HEADER).to_string(),
            command_id: Uuid::parse_str(header(protocol::COMMAND_ID_HEADER)).ok(),
            request_id: Uuid::parse_str(header(protocol::REQUEST_ID_HEADER)).ok(),
            decision: "allow".into(),
            ..Default::default()
        };
        call.set_request_info(info);
        call
    }

    /// Completes the record with how the relayed exchange ended and returns it for the sink: a
    /// copy while an upgraded stream is still open (its final record replaces it, same id), the
    /// record itself once the exchange is over.
    pub fn finished(&mut self, outcome: Outcome) -> ApiCall {
        self.status = outcome.status;
        self.duration_us = outcome.duration.as_micros() as i64;
        self.bytes_in = outcome.bytes_in;
        self.bytes_out = outcome.bytes_out;
        if outcome.open {
            self.reason = STREAM_OPEN.into();
            return self.clone();
        }
        if let Some(error) = outcome.error {
            self.reason = error;
        } else if self.reason == STREAM_OPEN {
            self.reason.clear();
        }
        std::mem::take(self)
    }

    /// Completes the record of a call this hop refused to relay.
    pub fn refuse(&mut self, status: u16, decision: &str, reason: &str, took: std::time::Duration) {
        self.status = status;
        self.decision = decision.into();
        self.reason = reason.into();
        self.duration_us = took.as_micros() as i64;
    }

    /// Fills the naming fields from a parsed request.
    pub fn set_request_info(&mut self, info: &RequestInfo) {
        self.verb = info.verb.clone();
        self.api_group = info.api_group.clone();
        self.api_version = info.api_version.clone();
        self.namespace = info.namespace.clone();
        self.resource = info.resource.clone();
        self.subresource = info.subresource.clone();
        self.name = info.name.clone();
    }

    /// `pods`, `pods/log`, or the path for non-resource requests.
    pub fn resource_label(&self) -> String {
        match (self.resource.is_empty(), self.subresource.is_empty()) {
            (true, _) => self.path.clone(),
            (false, true) => self.resource.clone(),
            (false, false) => format!("{}/{}", self.resource, self.subresource),
        }
    }
}

/// One command (a kubectl run) that caused API calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Command {
    pub id: Uuid,
    pub started_us: i64,
    pub ended_us: Option<i64>,
    pub user: String,
    pub cluster: String,
    /// argv with secret values redacted.
    pub argv: Vec<String>,
    /// argv joined for display and substring search.
    pub command_line: String,
    pub exit_code: Option<i32>,
    pub api_calls: i64,
    pub access_method: AccessMethod,
    pub cwd: String,
    pub host: String,
}

/// An API call with the command line that caused it, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRow {
    #[serde(flatten)]
    pub call: ApiCall,
    pub command_line: Option<String>,
    /// The end-to-end duration measured by the client, where the client saw the call.
    pub client_duration_us: Option<i64>,
    /// The duration measured at the gateway, where the gateway saw the call.
    pub gateway_duration_us: Option<i64>,
}

/// A command with a summary of its calls, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRow {
    #[serde(flatten)]
    pub command: Command,
    /// API calls this store holds for the command.
    pub calls: i64,
    /// Calls per status class: `{"2xx": 12, "4xx": 1}` (`"err"` for calls with no answer).
    pub statuses: std::collections::BTreeMap<String, i64>,
    /// From start to end of the command (None while it runs).
    pub duration_us: Option<i64>,
}

impl CommandRow {
    /// `2xx:12 4xx:1`
    pub fn status_summary(&self) -> String {
        self.statuses
            .iter()
            .map(|(class, n)| format!("{class}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A position in a newest-first listing: the last row returned. Pages continue strictly after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub time_us: i64,
    pub id: String,
}

/// One page of a listing, and where the next one starts (None when this was the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// RFC 3339 UTC with microseconds, the form Kubernetes audit events use.
pub fn format_time_us(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(open: bool, error: Option<&str>) -> Outcome {
        Outcome {
            status: 101,
            bytes_in: 10,
            bytes_out: 20,
            duration: std::time::Duration::from_millis(3),
            error: error.map(str::to_string),
            open,
        }
    }

    #[test]
    fn an_open_stream_is_recorded_as_a_copy_and_its_final_record_replaces_it() {
        let mut call = ApiCall {
            id: Uuid::now_v7(),
            user: "alice".into(),
            ..Default::default()
        };
        let opened = call.finished(outcome(true, None));
        assert_eq!(opened.reason, STREAM_OPEN);
        assert_eq!((opened.status, opened.bytes_out), (101, 20));
        // The call stays whole for its final record.
        assert_eq!(call.user, "alice");
        assert_eq!(call.id, opened.id);

        let last = call.finished(outcome(false, None));
        assert_eq!(last.id, opened.id);
        assert_eq!(last.user, "alice");
        assert_eq!(last.reason, "", "the open marker is cleared at the end");
        assert_eq!(last.duration_us, 3000);

        let mut failed = ApiCall::default();
        let last = failed.finished(outcome(false, Some("upgraded stream failed: reset")));
        assert_eq!(last.reason, "upgraded stream failed: reset");
    }
}
