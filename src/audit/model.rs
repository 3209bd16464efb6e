//! The audit records. One API-call type and one command type serve the client and the gateway,
//! the store, the filters, every output format and the ingest API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::fmt::Write as _;
use std::net::IpAddr;

use http::HeaderMap;

use crate::audit::redact::redact_query;
use crate::protocol;
use crate::relay::Outcome;
use crate::request_info::{Ambiguity, ParsedRequest, RequestInfo};

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
    /// Adds `text` to the record's reason (after what it already says).
    pub fn note(&mut self, text: &str) {
        if !self.reason.is_empty() {
            self.reason.push_str("; ");
        }
        self.reason.push_str(text);
    }

    /// Starts the record of a call from the hop's one parse of it: the canonical request, or,
    /// for a request refused as ambiguous, the request as it was sent (named leniently).
    pub fn begin_parsed(
        method: &http::Method,
        raw_path: &str,
        raw_query: Option<&str>,
        parsed: &Result<ParsedRequest, Ambiguity>,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> ApiCall {
        match parsed {
            Ok(p) => Self::begin(method, &p.path, p.query.as_deref(), &p.info, headers, peer),
            Err(_) => {
                let info = RequestInfo::parse(method.as_str(), raw_path, raw_query);
                Self::begin(method, raw_path, raw_query, &info, headers, peer)
            }
        }
    }

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
    /// Why the command did not run or was stopped (`refused: …`, a limit that killed it);
    /// empty when it ran normally. Absent from the records of older clients and gateways.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Bounds of a record's fields, the same on both sides: the gateway's ingest refuses a record
/// beyond them (`audit::ingest::check_command`, `check_call`), and the client cuts its own
/// records to them (`Command::fit`, `ApiCall::fit`), so that what it ships is always accepted.
pub mod limits {
    /// Arguments in a command's argv.
    pub const MAX_ARGS: usize = 1024;
    /// Bytes of a command's argv, all arguments together.
    pub const MAX_ARGV_BYTES: usize = 64 * 1024;
    /// Bytes of a command line or a query string.
    pub const MAX_LONG_FIELD_BYTES: usize = 64 * 1024;
    /// Bytes of every other text field: path, cwd, host, user agent, reason, names.
    pub const MAX_FIELD_BYTES: usize = 8 * 1024;
}

use limits::{MAX_FIELD_BYTES, MAX_LONG_FIELD_BYTES};

/// Names every text field of a record with its limit, once for reading (`for_each_text`: the
/// ingest checks) and once for writing (`fit`).
macro_rules! text_fields {
    ($ty:ident { $($field:ident: $max:expr),* $(,)? }) => {
        impl $ty {
            /// Calls `f` with each text field's name, value and limit in bytes, until it fails.
            pub fn for_each_text<E>(
                &self,
                mut f: impl FnMut(&'static str, &str, usize) -> Result<(), E>,
            ) -> Result<(), E> {
                $( f(stringify!($field), &self.$field, $max)?; )*
                Ok(())
            }

            fn for_each_text_mut(&mut self, mut f: impl FnMut(&mut String, usize)) {
                $( f(&mut self.$field, $max); )*
            }
        }
    };
}

text_fields!(ApiCall {
    user: MAX_FIELD_BYTES,
    cluster: MAX_FIELD_BYTES,
    namespace: MAX_FIELD_BYTES,
    resource: MAX_FIELD_BYTES,
    subresource: MAX_FIELD_BYTES,
    name: MAX_FIELD_BYTES,
    api_group: MAX_FIELD_BYTES,
    api_version: MAX_FIELD_BYTES,
    verb: MAX_FIELD_BYTES,
    method: MAX_FIELD_BYTES,
    path: MAX_FIELD_BYTES,
    query: MAX_LONG_FIELD_BYTES,
    user_agent: MAX_FIELD_BYTES,
    source_ip: MAX_FIELD_BYTES,
    kubectl_command: MAX_FIELD_BYTES,
    kubectl_session: MAX_FIELD_BYTES,
    decision: MAX_FIELD_BYTES,
    reason: MAX_FIELD_BYTES,
});

text_fields!(Command {
    user: MAX_FIELD_BYTES,
    cluster: MAX_FIELD_BYTES,
    command_line: MAX_LONG_FIELD_BYTES,
    cwd: MAX_FIELD_BYTES,
    host: MAX_FIELD_BYTES,
    reason: MAX_FIELD_BYTES,
});

impl ApiCall {
    /// Cuts every field to its limit (`limits`), marking what was cut, and replaces NUL
    /// characters, which the gateway refuses: the client's own records always ship.
    pub fn fit(&mut self) {
        self.for_each_text_mut(fit_text);
    }
}

/// How the reason of a command that was refused, and so never ran, begins (`refused: kubectl
/// config is not allowed in the web shell`).
pub const REFUSED: &str = "refused";

impl Command {
    /// Whether the command was refused and never ran: no exit code, and a reason that says so.
    pub fn refused(&self) -> bool {
        self.exit_code.is_none() && self.reason.starts_with(REFUSED)
    }

    /// Cuts argv, the command line and every other field to their limits (`limits`), marking
    /// what was cut, and replaces NUL characters, which the gateway refuses.
    pub fn fit(&mut self) {
        use limits::{MAX_ARGS, MAX_ARGV_BYTES};
        self.for_each_text_mut(fit_text);
        for arg in &mut self.argv {
            fit_text(arg, usize::MAX);
        }
        if self.argv.len() > MAX_ARGS {
            let dropped = self.argv.len() - (MAX_ARGS - 1);
            self.argv.truncate(MAX_ARGS - 1);
            self.argv.push(format!("…[truncated {dropped} arguments]"));
        }
        let total: usize = self.argv.iter().map(String::len).sum();
        if total > MAX_ARGV_BYTES {
            // Keep the arguments that fit; cut the one that does not, marked with what was
            // dropped in all; drop the rest.
            let budget = MAX_ARGV_BYTES - MARKER_ROOM;
            let mut used = 0;
            let mut keep = self.argv.len();
            for (i, arg) in self.argv.iter_mut().enumerate() {
                if used + arg.len() > budget {
                    let cut = floor_char_boundary(arg, budget - used);
                    arg.truncate(cut);
                    used += cut;
                    let _ = write!(arg, "…[truncated {} bytes]", total - used);
                    keep = i + 1;
                    break;
                }
                used += arg.len();
            }
            self.argv.truncate(keep);
        }
    }
}

/// Room for the marker `…[truncated N bytes]`, whatever N.
const MARKER_ROOM: usize = "…[truncated  bytes]".len() + 20;

/// Cuts `text` to at most `max` bytes (on a character boundary) with a marker that says how
/// many bytes were dropped; NUL characters become U+FFFD.
fn fit_text(text: &mut String, max: usize) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{fffd}");
    }
    if text.len() <= max {
        return;
    }
    let total = text.len();
    let keep = floor_char_boundary(text, max.saturating_sub(MARKER_ROOM));
    text.truncate(keep);
    let _ = write!(text, "…[truncated {} bytes]", total - keep);
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
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
    fn fit_cuts_a_record_to_the_limits_with_a_visible_marker() {
        use super::limits::*;
        use crate::audit::ingest::{check_call, check_command};
        let mut cmd = Command {
            id: Uuid::now_v7(),
            argv: (0..2000).map(|i| format!("arg{i}")).collect(),
            command_line: "é".repeat(MAX_LONG_FIELD_BYTES),
            cwd: "/tmp/\0x".into(),
            host: "h".repeat(MAX_FIELD_BYTES + 1),
            reason: "r".repeat(MAX_FIELD_BYTES + 1),
            ..Default::default()
        };
        assert!(check_command(&cmd).is_err());
        cmd.fit();
        check_command(&cmd).unwrap();
        assert_eq!(cmd.argv.len(), MAX_ARGS);
        assert_eq!(cmd.argv[MAX_ARGS - 2], "arg1022");
        assert_eq!(cmd.argv[MAX_ARGS - 1], "…[truncated 977 arguments]");
        assert!(
            cmd.command_line.ends_with(" bytes]") && cmd.command_line.len() <= MAX_LONG_FIELD_BYTES
        );
        assert!(cmd.command_line.starts_with("éé"));
        assert_eq!(cmd.cwd, "/tmp/\u{fffd}x");
        assert!(
            cmd.host.ends_with("…[truncated 42 bytes]") && cmd.host.len() <= MAX_FIELD_BYTES,
            "{}",
            &cmd.host[8000..]
        );
        assert!(
            cmd.reason.ends_with("…[truncated 42 bytes]") && cmd.reason.len() <= MAX_FIELD_BYTES
        );

        // Bytes: the argument that crosses the limit is cut, the rest dropped, all counted.
        let mut cmd = Command {
            id: Uuid::now_v7(),
            argv: vec![
                "kubectl".into(),
                "x".repeat(40_000),
                "y".repeat(40_000),
                "z".into(),
            ],
            ..Default::default()
        };
        cmd.fit();
        check_command(&cmd).unwrap();
        assert_eq!(cmd.argv.len(), 3);
        assert_eq!(cmd.argv[1].len(), 40_000);
        let total: usize = cmd.argv.iter().map(String::len).sum();
        assert!(total <= MAX_ARGV_BYTES, "{total}");
        let kept = cmd.argv[2].split('…').next().unwrap().len();
        assert!(cmd.argv[2].ends_with(&format!("…[truncated {} bytes]", 40_001 - kept)));

        // A record within the limits is left as it is.
        let mut small = Command {
            argv: vec!["kubectl".into(), "get".into()],
            command_line: "kubectl get".into(),
            ..Default::default()
        };
        let before = small.clone();
        small.fit();
        assert_eq!(small, before);

        let mut call = ApiCall {
            id: Uuid::now_v7(),
            path: "/api/v1/namespaces/default/pods/".to_string() + &"p".repeat(10_000),
            query: "labelSelector=".to_string() + &"a".repeat(70_000),
            user_agent: "ua\0".into(),
            ..Default::default()
        };
        assert!(check_call(&call).is_err());
        call.fit();
        check_call(&call).unwrap();
        assert!(call.path.starts_with("/api/v1/namespaces/default/pods/ppp"));
        assert!(call.path.contains("…[truncated "));
        assert!(call.query.len() <= MAX_LONG_FIELD_BYTES);
    }

    #[test]
    fn a_command_reason_is_left_out_when_empty_and_may_be_absent() {
        let cmd = Command {
            id: Uuid::now_v7(),
            command_line: "kubectl get po".into(),
            exit_code: Some(0),
            ..Default::default()
        };
        let json = serde_json::to_value(&cmd).unwrap();
        assert!(json.get("reason").is_none(), "{json}");
        // A record of a ztk from before the field reads (here, JSON without it).
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), cmd);
        assert!(!cmd.refused());

        let refused = Command {
            command_line: "kubectl config view --raw".into(),
            exit_code: None,
            reason: "refused: kubectl config is not allowed in the web shell".into(),
            ..cmd.clone()
        };
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(json["reason"], refused.reason.as_str());
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), refused);
        assert!(refused.refused());
        // Stopped after it ran: it has an exit code, and was not refused.
        let killed = Command {
            exit_code: Some(137),
            reason: "killed: output limit".into(),
            ..cmd
        };
        assert!(!killed.refused());
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
