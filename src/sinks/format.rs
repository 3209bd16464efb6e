//! How sinks write a record: one JSON object (files, NDJSON webhooks, HEC events, `audit tail`),
//! an RFC 5424 syslog message, and the one-line summary people read.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::audit::format::printable;
use crate::audit::model::{format_time_us, STREAM_OPEN};
use crate::audit::{Record, Sequenced};

/// The record as one JSON object: its row fields, `kind` (`call` or `command`) and `seq`.
pub fn record_json(record: &Sequenced) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}

/// Whether this is the provisional record of a stream that is still open. Its final record
/// replaces it later with a new sequence number, so followers skip it and deliver that one.
pub fn is_open_stream(record: &Sequenced) -> bool {
    matches!(&record.record, Record::Call(c) if c.call.reason == STREAM_OPEN)
}

/// When the record happened: a call's arrival, a command's end (or start while it runs).
pub fn record_time_us(record: &Sequenced) -> i64 {
    match &record.record {
        Record::Call(c) => c.call.time_us,
        Record::Command(c) => c.command.ended_us.unwrap_or(c.command.started_us),
    }
}

/// `alice delete pods/web-1 -n prod on cluster dev: 200`, or for a command
/// `alice ran "kubectl get pods" on cluster dev: exit 0`. Always one line, escaped for a
/// terminal (`audit::format::printable`).
pub fn summary(record: &Sequenced) -> String {
    let line = match &record.record {
        Record::Call(row) => {
            let c = &row.call;
            let mut s = format!("{} {} {}", c.user, c.verb, c.resource_label());
            if !c.name.is_empty() {
                let _ = write!(s, "/{}", c.name);
            }
            if !c.namespace.is_empty() {
                let _ = write!(s, " -n {}", c.namespace);
            }
            let _ = write!(s, " on cluster {}: {}", c.cluster, c.status);
            if c.decision != "allow" {
                let _ = write!(s, " ({})", c.decision);
            }
            s
        }
        Record::Command(row) => {
            let c = &row.command;
            let end = match (c.ended_us, c.exit_code) {
                (_, Some(code)) if c.reason.is_empty() => format!("exit {code}"),
                (_, Some(code)) => format!("exit {code} ({})", c.reason),
                (_, None) if !c.reason.is_empty() => c.reason.clone(),
                (Some(_), None) => "ended".to_string(),
                (None, None) => "running".to_string(),
            };
            format!(
                "{} ran {:?} on cluster {}: {end}",
                c.user, c.command_line, c.cluster
            )
        }
    };
    // One line, and nothing in it that a terminal would act on.
    printable(&line).into_owned()
}

/// Facility `authpriv` (10): security and authorization messages.
const FACILITY: u8 = 10;
/// Longest structured-data value: keeps every message far below receivers' limits (8 KiB is
/// rsyslog's default).
const MAX_SD_VALUE: usize = 1024;

/// The record as an RFC 5424 message (without framing): the fields in one SD-ELEMENT
/// `[ztk@PEN …]`, the summary as MSG.
pub fn syslog_message(record: &Sequenced, hostname: &str, app_name: &str, pen: u32) -> String {
    let (time_us, msgid, severity, params) = match &record.record {
        Record::Call(row) => {
            let c = &row.call;
            let severity = if c.decision != "allow" || c.status >= 400 || c.status == 0 {
                5 // notice
            } else {
                6 // informational
            };
            let params: Vec<(&str, String)> = vec![
                ("seq", record.seq.to_string()),
                ("id", c.id.to_string()),
                ("user", c.user.clone()),
                ("cluster", c.cluster.clone()),
                ("namespace", c.namespace.clone()),
                ("verb", c.verb.clone()),
                ("apiGroup", c.api_group.clone()),
                ("apiVersion", c.api_version.clone()),
                ("resource", c.resource.clone()),
                ("subresource", c.subresource.clone()),
                ("name", c.name.clone()),
                ("method", c.method.clone()),
                ("path", c.path.clone()),
                ("query", c.query.clone()),
                ("status", c.status.to_string()),
                ("decision", c.decision.clone()),
                ("reason", c.reason.clone()),
                ("durationUs", c.duration_us.to_string()),
                ("bytesIn", c.bytes_in.to_string()),
                ("bytesOut", c.bytes_out.to_string()),
                ("sourceIp", c.source_ip.clone()),
                ("userAgent", c.user_agent.clone()),
                ("accessMethod", c.access_method.as_str().to_string()),
                ("commandId", opt(c.command_id)),
                ("requestId", opt(c.request_id)),
                ("command", row.command_line.clone().unwrap_or_default()),
            ];
            (c.time_us, "call", severity, params)
        }
        Record::Command(row) => {
            let c = &row.command;
            let severity = if c.exit_code.unwrap_or(0) != 0 || !c.reason.is_empty() {
                5
            } else {
                6
            };
            let params: Vec<(&str, String)> = vec![
                ("seq", record.seq.to_string()),
                ("id", c.id.to_string()),
                ("user", c.user.clone()),
                ("cluster", c.cluster.clone()),
                ("command", c.command_line.clone()),
                ("started", format_time_us(c.started_us)),
                ("ended", c.ended_us.map(format_time_us).unwrap_or_default()),
                ("exitCode", opt(c.exit_code)),
                ("calls", row.calls.to_string()),
                ("statuses", row.status_summary()),
                ("accessMethod", c.access_method.as_str().to_string()),
                ("host", c.host.clone()),
                ("cwd", c.cwd.clone()),
                ("reason", c.reason.clone()),
            ];
            (record_time_us(record), "command", severity, params)
        }
    };
    let mut sd = format!("[ztk@{pen}");
    for (name, value) in params {
        if value.is_empty() {
            continue;
        }
        let _ = write!(sd, " {name}=\"{}\"", sd_escape(&value));
    }
    sd.push(']');
    format!(
        "<{}>1 {} {} {} - {} {} {}",
        FACILITY * 8 + severity,
        format_time_us(time_us),
        header_field(hostname, 255),
        header_field(app_name, 48),
        msgid,
        sd,
        summary(record)
    )
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash inside PARAM-VALUE. Control
/// characters become spaces so that a message stays one line for receivers that split on them.
pub fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_SD_VALUE) + 8);
    for (i, c) in value.chars().enumerate() {
        if i >= MAX_SD_VALUE {
            out.push('…');
            break;
        }
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// HOSTNAME and APP-NAME are PRINTUSASCII without spaces; `-` stands for nothing.
fn header_field(value: &str, max: usize) -> String {
    let v: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// A Splunk HEC event: `time` in seconds, the record as `event`.
pub fn hec_event(
    record: &Sequenced,
    host: &str,
    source: &str,
    sourcetype: &str,
    index: Option<&str>,
) -> Value {
    let mut event = json!({
        "time": record_time_us(record) as f64 / 1e6,
        "host": host,
        "source": source,
        "sourcetype": sourcetype,
        "event": record_json(record),
    });
    if let Some(index) = index {
        event["index"] = json!(index);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ApiCall, CallRow, Command, CommandRow};

    fn call() -> Sequenced {
        Sequenced {
            seq: 7,
            record: Record::Call(CallRow {
                call: ApiCall {
                    user: "alice".into(),
                    verb: "delete".into(),
                    resource: "pods".into(),
                    name: "web-1".into(),
                    namespace: "prod".into(),
                    cluster: "dev".into(),
                    status: 200,
                    decision: "allow".into(),
                    user_agent: "kubectl/v1.33 \"x\" [y]".into(),
                    time_us: 1_700_000_000_000_000,
                    ..Default::default()
                },
                command_line: Some("kubectl delete pod web-1\nnext".into()),
                client_duration_us: None,
                gateway_duration_us: Some(5),
            }),
        }
    }

    #[test]
    fn summaries_read_like_the_issue() {
        assert_eq!(
            summary(&call()),
            "alice delete pods/web-1 -n prod on cluster dev: 200"
        );
        let cmd = Sequenced {
            seq: 8,
            record: Record::Command(CommandRow {
                command: Command {
                    user: "bob".into(),
                    cluster: "dev".into(),
                    command_line: "kubectl get po".into(),
                    exit_code: Some(1),
                    ended_us: Some(2),
                    ..Default::default()
                },
                calls: 1,
                statuses: Default::default(),
                duration_us: Some(1),
            }),
        };
        assert_eq!(
            summary(&cmd),
            "bob ran \"kubectl get po\" on cluster dev: exit 1"
        );
        assert!(record_json(&cmd).get("reason").is_none());
        let Record::Command(mut row) = cmd.record else {
            unreachable!()
        };
        row.command.reason = "killed: output limit".into();
        row.command.exit_code = Some(137);
        let killed = Sequenced {
            seq: 9,
            record: Record::Command(row.clone()),
        };
        assert_eq!(
            summary(&killed),
            "bob ran \"kubectl get po\" on cluster dev: exit 137 (killed: output limit)"
        );
        row.command.command_line = "kubectl config view --raw".into();
        row.command.reason = "refused: kubectl config is not allowed\nin the web shell".into();
        row.command.exit_code = None;
        let refused = Sequenced {
            seq: 10,
            record: Record::Command(row),
        };
        assert_eq!(
            summary(&refused),
            r#"bob ran "kubectl config view --raw" on cluster dev: refused: kubectl config is not allowed\nin the web shell"#
        );
        let m = syslog_message(&refused, "gw", "ztk", 32473);
        assert!(
            m.starts_with("<85>1 "),
            "a refused command is a notice: {m}"
        );
        assert!(
            m.contains(r#"reason="refused: kubectl config is not allowed in the web shell""#),
            "{m}"
        );
        assert_eq!(
            record_json(&refused)["reason"],
            "refused: kubectl config is not allowed\nin the web shell"
        );
    }

    #[test]
    fn summaries_are_one_line_without_terminal_controls() {
        let mut record = call();
        let Record::Call(row) = &mut record.record else {
            unreachable!()
        };
        row.call.name = "web\x1b[2J\x1b]52;c;aGVsbG8=\x07".into();
        row.call.user = "eve\u{202e}".into();
        let line = summary(&record);
        assert_eq!(
            line,
            r"eve\u{202e} delete pods/web\x1b[2J\x1b]52;c;aGVsbG8=\x07 -n prod on cluster dev: 200"
        );
    }

    #[test]
    fn syslog_messages_escape_structured_data() {
        let m = syslog_message(&call(), "gw host", "ztk", 32473);
        assert!(
            m.starts_with(
                "<86>1 2023-11-14T22:13:20.000000Z gwhost ztk - call [ztk@32473 seq=\"7\""
            ),
            "{m}"
        );
        assert!(m.contains(r#"userAgent="kubectl/v1.33 \"x\" [y\]""#), "{m}");
        assert!(
            m.contains(r#"command="kubectl delete pod web-1 next""#),
            "{m}"
        );
        assert!(m.ends_with("] alice delete pods/web-1 -n prod on cluster dev: 200"));
        assert!(!m.contains('\n'));
        assert_eq!(sd_escape(r"a\b]c"), r"a\\b\]c");
    }

    #[test]
    fn json_records_round_trip_with_kind_and_seq() {
        let v = record_json(&call());
        assert_eq!(v["kind"], "call");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["user"], "alice");
        let back: Sequenced = serde_json::from_value(v).unwrap();
        assert_eq!(back, call());
        let e = hec_event(&call(), "h", "ztk", "ztk:audit", None);
        assert_eq!(e["time"], 1_700_000_000.0);
        assert_eq!(e["event"]["verb"], "delete");
    }
}
