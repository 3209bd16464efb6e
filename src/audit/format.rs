//! Every output format of the audit trail, streamed row by row: a table for people (`table`,
//! `wide`), JSON, NDJSON, CSV for spreadsheets, and `k8s-audit` (an `audit.k8s.io/v1`
//! `EventList`) for tools that read Kubernetes audit logs.

use std::fmt::Write as _;
use std::io::Write;

use clap::ValueEnum;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::json;

use super::model::{format_time_us, CallRow, CommandRow, REFUSED};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// A table with every field.
    Wide,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header row (cells that a spreadsheet would run as formulas are
    /// prefixed with `'`).
    Csv,
    /// A Kubernetes audit.k8s.io/v1 EventList (API calls only), ztk's fields as annotations.
    K8sAudit,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("could not write the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not write CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("could not encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes rows in one format as they come. Tables are the exception: they need every row to
/// size their columns, so they are only for bounded listings.
pub struct Emitter<W: Write> {
    format: Format,
    out: Option<W>,
    csv: Option<csv::Writer<W>>,
    table: Option<Table>,
    rows: u64,
}

const CALL_HEADER: &[&str] = &[
    "time",
    "user",
    "cluster",
    "namespace",
    "resource",
    "subresource",
    "name",
    "api_group",
    "api_version",
    "verb",
    "method",
    "path",
    "query",
    "status",
    "duration_us",
    "client_duration_us",
    "gateway_duration_us",
    "bytes_in",
    "bytes_out",
    "user_agent",
    "source_ip",
    "access_method",
    "decision",
    "reason",
    "kubectl_command",
    "kubectl_session",
    "command_id",
    "request_id",
    "command_line",
    "id",
];

const COMMAND_HEADER: &[&str] = &[
    "started",
    "ended",
    "user",
    "cluster",
    "command_line",
    "exit_code",
    "calls",
    "statuses",
    "duration_us",
    "access_method",
    "cwd",
    "host",
    "id",
    // Columns added later go last, so that existing positions never move.
    "reason",
];

impl<W: Write> Emitter<W> {
    pub fn new(format: Format, out: W) -> Emitter<W> {
        let (out, csv) = match format {
            Format::Csv => (None, Some(csv::WriterBuilder::new().from_writer(out))),
            _ => (Some(out), None),
        };
        Emitter {
            format,
            out,
            csv,
            table: None,
            rows: 0,
        }
    }

    fn out(&mut self) -> &mut W {
        self.out.as_mut().expect("non-CSV output")
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn json_item(&mut self, value: &serde_json::Value) -> Result<(), FormatError> {
        let first = self.rows == 0;
        match self.format {
            Format::Json => {
                self.out().write_all(if first { b"[\n" } else { b",\n" })?;
                serde_json::to_writer(self.out(), value)?;
            }
            Format::K8sAudit => {
                if first {
                    self.out().write_all(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#)?;
                } else {
                    self.out().write_all(b",")?;
                }
                self.out().write_all(b"\n")?;
                serde_json::to_writer(self.out(), value)?;
            }
            _ => {
                serde_json::to_writer(self.out(), value)?;
                self.out().write_all(b"\n")?;
            }
        }
        Ok(())
    }

    pub fn call(&mut self, row: &CallRow) -> Result<(), FormatError> {
        match self.format {
            Format::Table | Format::Wide => {
                let wide = self.format == Format::Wide;
                let table = self.table.get_or_insert_with(|| call_table(wide));
                table.add_row(call_cells(row, wide));
            }
            Format::Json | Format::Ndjson => self.json_item(&serde_json::to_value(row)?)?,
            Format::K8sAudit => self.json_item(&k8s_event(row))?,
            Format::Csv => {
                let csv = self.csv.as_mut().expect("csv writer");
                if self.rows == 0 {
                    csv.write_record(CALL_HEADER)?;
                }
                csv.write_record(call_record(row).iter().map(|c| neutralize(c).into_owned()))?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    pub fn command(&mut self, row: &CommandRow) -> Result<(), FormatError> {
        match self.format {
            Format::Table | Format::Wide => {
                let wide = self.format == Format::Wide;
                let table = self.table.get_or_insert_with(|| command_table(wide));
                table.add_row(command_cells(row, wide));
            }
            Format::Json | Format::Ndjson => self.json_item(&serde_json::to_value(row)?)?,
            // Commands have no Kubernetes audit form; the caller refuses the combination.
            Format::K8sAudit => {}
            Format::Csv => {
                let csv = self.csv.as_mut().expect("csv writer");
                if self.rows == 0 {
                    csv.write_record(COMMAND_HEADER)?;
                }
                csv.write_record(
                    command_record(row)
                        .iter()
                        .map(|c| neutralize(c).into_owned()),
                )?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Closes the document (JSON array, EventList, CSV header for an empty set) and flushes.
    /// `commands` says which header an empty CSV or table gets.
    pub fn finish(mut self, commands: bool) -> Result<W, FormatError> {
        match self.format {
            Format::Table | Format::Wide => {
                let wide = self.format == Format::Wide;
                let table = self.table.take().unwrap_or_else(|| {
                    if commands {
                        command_table(wide)
                    } else {
                        call_table(wide)
                    }
                });
                writeln!(self.out(), "{table}")?;
            }
            Format::Json => {
                let end: &[u8] = if self.rows == 0 { b"[]\n" } else { b"\n]\n" };
                self.out().write_all(end)?;
            }
            Format::K8sAudit => {
                let end: &[u8] = if self.rows == 0 {
                    br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[]}
"#
                } else {
                    b"\n]}\n"
                };
                self.out().write_all(end)?;
            }
            Format::Ndjson => {}
            Format::Csv => {
                let mut csv = self.csv.take().expect("csv writer");
                if self.rows == 0 {
                    csv.write_record(if commands {
                        COMMAND_HEADER
                    } else {
                        CALL_HEADER
                    })?;
                }
                csv.flush()?;
                return csv
                    .into_inner()
                    .map_err(|e| FormatError::Io(e.into_error()));
            }
        }
        let mut out = self.out.take().expect("output");
        out.flush()?;
        Ok(out)
    }
}

/// Human form of a duration in microseconds: `850µs`, `12.3ms`, `1.20s`.
pub fn format_duration_us(us: i64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A record's text made safe to show on a terminal: C0 controls (newline and tab included), DEL,
/// C1 controls (U+0080–U+009F) and the Unicode bidi overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069) become visible escapes (`\n`, `\x1b`, `\u{9b}`, `\u{202e}`), so a record can
/// neither drive the terminal (clear it, recolour it, write the clipboard with OSC 52) nor
/// reorder or break the line it is shown on. Every output for people goes through it; machine
/// formats (JSON, NDJSON, CSV, the sinks' encodings) keep the exact data.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.contains(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// `printable` for a value that is already owned.
fn shown(text: String) -> String {
    match printable(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// Cells that spreadsheets would evaluate as formulas get a leading `'` (OWASP CSV injection).
pub fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn call_record(row: &CallRow) -> Vec<String> {
    let c = &row.call;
    vec![
        format_time_us(c.time_us),
        c.user.clone(),
        c.cluster.clone(),
        c.namespace.clone(),
        c.resource.clone(),
        c.subresource.clone(),
        c.name.clone(),
        c.api_group.clone(),
        c.api_version.clone(),
        c.verb.clone(),
        c.method.clone(),
        c.path.clone(),
        c.query.clone(),
        c.status.to_string(),
        c.duration_us.to_string(),
        opt(row.client_duration_us),
        opt(row.gateway_duration_us),
        c.bytes_in.to_string(),
        c.bytes_out.to_string(),
        c.user_agent.clone(),
        c.source_ip.clone(),
        c.access_method.as_str().to_string(),
        c.decision.clone(),
        c.reason.clone(),
        c.kubectl_command.clone(),
        c.kubectl_session.clone(),
        opt(c.command_id),
        opt(c.request_id),
        row.command_line.clone().unwrap_or_default(),
        c.id.to_string(),
    ]
}

fn command_record(row: &CommandRow) -> Vec<String> {
    let c = &row.command;
    vec![
        format_time_us(c.started_us),
        c.ended_us.map(format_time_us).unwrap_or_default(),
        c.user.clone(),
        c.cluster.clone(),
        c.command_line.clone(),
        opt(c.exit_code),
        row.calls.to_string(),
        row.status_summary(),
        opt(row.duration_us),
        c.access_method.as_str().to_string(),
        c.cwd.clone(),
        c.host.clone(),
        c.id.to_string(),
        c.reason.clone(),
    ]
}

/// The last 8 characters of an id: the random part of a UUIDv7 (its start is a timestamp
/// shared by everything from the same minute).
pub fn short_id(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}

fn short_time(us: i64) -> String {
    let mut t = format_time_us(us);
    t.truncate(19);
    t.replace('T', " ")
}

fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

fn call_table(wide: bool) -> Table {
    let mut header = vec![
        "Date",
        "User",
        "Cluster",
        "Namespace",
        "Resource",
        "Verb",
        "Access Method",
        "Status",
        "Duration",
        "Command",
    ];
    if wide {
        header.extend([
            "Client",
            "Gateway",
            "Bytes In",
            "Bytes Out",
            "Source IP",
            "User Agent",
            "Decision",
            "Request ID",
        ]);
    }
    new_table(header)
}

fn call_cells(row: &CallRow, wide: bool) -> Vec<String> {
    let c = &row.call;
    let resource = if c.name.is_empty() {
        c.resource_label()
    } else {
        format!("{}/{}", c.resource_label(), c.name)
    };
    let mut cells = vec![
        short_time(c.time_us),
        c.user.clone(),
        c.cluster.clone(),
        c.namespace.clone(),
        resource,
        c.verb.clone(),
        c.access_method.as_str().to_string(),
        if c.status == 0 {
            "-".to_string()
        } else {
            c.status.to_string()
        },
        format_duration_us(c.duration_us),
        row.command_line
            .clone()
            .unwrap_or_else(|| c.kubectl_command.clone()),
    ];
    if wide {
        cells.extend([
            row.client_duration_us
                .map(format_duration_us)
                .unwrap_or_default(),
            row.gateway_duration_us
                .map(format_duration_us)
                .unwrap_or_default(),
            c.bytes_in.to_string(),
            c.bytes_out.to_string(),
            c.source_ip.clone(),
            c.user_agent.clone(),
            if c.reason.is_empty() {
                c.decision.clone()
            } else {
                format!("{}: {}", c.decision, c.reason)
            },
            opt(c.request_id),
        ]);
    }
    cells.into_iter().map(shown).collect()
}

fn command_table(wide: bool) -> Table {
    let mut header = vec![
        "ID", "Date", "User", "Cluster", "Command", "Calls", "Statuses", "Duration", "Exit",
    ];
    if wide {
        header.extend(["Access Method", "Host", "Directory", "Reason"]);
    }
    new_table(header)
}

fn command_cells(row: &CommandRow, wide: bool) -> Vec<String> {
    let c = &row.command;
    let id = c.id.to_string();
    let mut cells = vec![
        if wide { id } else { short_id(&id).to_string() },
        short_time(c.started_us),
        c.user.clone(),
        c.cluster.clone(),
        c.command_line.clone(),
        row.calls.to_string(),
        row.status_summary(),
        row.duration_us
            .map(format_duration_us)
            .unwrap_or_else(|| if c.refused() { "-" } else { "running" }.into()),
        match c.exit_code {
            Some(e) => e.to_string(),
            None if c.refused() => REFUSED.into(),
            None => "-".into(),
        },
    ];
    if wide {
        cells.extend([
            c.access_method.as_str().to_string(),
            c.host.clone(),
            c.cwd.clone(),
            c.reason.clone(),
        ]);
    }
    cells.into_iter().map(shown).collect()
}

/// One call as a Kubernetes audit event (`audit.k8s.io/v1`, level Metadata, stage
/// ResponseComplete), with ztk's own fields as `ztk.dev/…` annotations.
pub fn k8s_event(row: &CallRow) -> serde_json::Value {
    let c = &row.call;
    let uri = if c.query.is_empty() {
        c.path.clone()
    } else {
        format!("{}?{}", c.path, c.query)
    };
    let mut object_ref = serde_json::Map::new();
    for (key, value) in [
        ("resource", &c.resource),
        ("namespace", &c.namespace),
        ("name", &c.name),
        ("apiGroup", &c.api_group),
        ("apiVersion", &c.api_version),
        ("subresource", &c.subresource),
    ] {
        if !value.is_empty() {
            object_ref.insert(key.into(), json!(value));
        }
    }
    let mut annotations = serde_json::Map::new();
    let mut note = |key: &str, value: String| {
        if !value.is_empty() {
            annotations.insert(format!("ztk.dev/{key}"), json!(value));
        }
    };
    note("cluster", c.cluster.clone());
    note("access-method", c.access_method.as_str().into());
    note("decision", c.decision.clone());
    note("reason", c.reason.clone());
    note("command", row.command_line.clone().unwrap_or_default());
    note("command-id", opt(c.command_id));
    note("request-id", opt(c.request_id));
    note("kubectl-command", c.kubectl_command.clone());
    note("kubectl-session", c.kubectl_session.clone());
    note("duration-us", c.duration_us.to_string());
    note("client-duration-us", opt(row.client_duration_us));
    note("gateway-duration-us", opt(row.gateway_duration_us));
    note("bytes-in", c.bytes_in.to_string());
    note("bytes-out", c.bytes_out.to_string());
    note("method", c.method.clone());
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": c.id.to_string(),
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": c.verb,
        "user": {"username": c.user},
        "sourceIPs": [c.source_ip],
        "userAgent": c.user_agent,
        "responseStatus": {"metadata": {}, "code": c.status},
        "requestReceivedTimestamp": format_time_us(c.time_us),
        "stageTimestamp": format_time_us(c.time_us + c.duration_us),
        "annotations": annotations,
    });
    if !object_ref.is_empty() {
        event["objectRef"] = serde_json::Value::Object(object_ref);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ApiCall;

    fn row() -> CallRow {
        CallRow {
            call: ApiCall {
                user: "=cmd|' /C calc'!A0".into(),
                resource: "pods".into(),
                verb: "list".into(),
                status: 200,
                ..Default::default()
            },
            command_line: Some("kubectl get po, \"quoted\"\nnext".into()),
            client_duration_us: Some(5),
            gateway_duration_us: None,
        }
    }

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        assert!(matches!(
            printable("kubectl get pods -l 'a in (b)' ünï ✓ \\x"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("\x1b[2J\x1b]52;c;aGVsbG8=\x07"),
            r"\x1b[2J\x1b]52;c;aGVsbG8=\x07"
        );
        assert_eq!(
            printable("a\0b\x7fc\u{9b}d\u{85}"),
            r"a\x00b\x7fc\u{9b}d\u{85}"
        );
        assert_eq!(printable("one\ntwo\tthree\r"), r"one\ntwo\tthree\r");
        assert_eq!(
            printable("\u{202a}\u{202e}txt.exe\u{2066}\u{2069}"),
            r"\u{202a}\u{202e}txt.exe\u{2066}\u{2069}"
        );
        // Every character that is left is printable.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!printable(&all).contains(|c: char| c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)));
    }

    #[test]
    fn tables_escape_control_characters_and_machine_formats_keep_them() {
        let hostile = "kubectl get po \x1b[2J \x1b]52;c;aGVsbG8=\x07";
        let mut call = row();
        call.command_line = Some(hostile.into());
        call.call.user_agent = "ua\u{202e}".into();
        call.call.reason = "a\nb".into();
        call.call.decision = "deny".into();
        let command = CommandRow {
            command: crate::audit::Command {
                command_line: hostile.into(),
                cwd: "/tmp/\x1b]0;x\x07".into(),
                host: "h\x1b[31m".into(),
                reason: "refused: \x1b[8mhidden".into(),
                ..Default::default()
            },
            calls: 0,
            statuses: Default::default(),
            duration_us: None,
        };
        for format in [Format::Table, Format::Wide] {
            let mut e = Emitter::new(format, Vec::new());
            e.call(&call).unwrap();
            let calls = String::from_utf8(e.finish(false).unwrap()).unwrap();
            let mut e = Emitter::new(format, Vec::new());
            e.command(&command).unwrap();
            let commands = String::from_utf8(e.finish(true).unwrap()).unwrap();
            for text in [&calls, &commands] {
                assert!(!text.contains(['\x1b', '\x07', '\u{202e}']), "{text:?}");
                assert!(text.contains(r"\x1b[2J"), "{text}");
            }
            if format == Format::Wide {
                assert!(calls.contains(r"ua\u{202e}") && calls.contains(r"deny: a\nb"));
                assert!(commands.contains(r"h\x1b[31m") && commands.contains(r"\x07"));
                assert!(commands.contains(r"refused: \x1b[8mhidden"), "{commands}");
            }
            // Refused, not running.
            assert!(
                commands.contains("refused") && !commands.contains("running"),
                "{commands}"
            );
        }
        let mut e = Emitter::new(Format::Ndjson, Vec::new());
        e.call(&call).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&e.finish(false).unwrap()).unwrap();
        assert_eq!(json["command_line"], hostile);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration_us(850), "850µs");
        assert_eq!(format_duration_us(12_345), "12.3ms");
        assert_eq!(format_duration_us(1_204_000), "1.20s");
    }

    #[test]
    fn csv_quotes_and_neutralizes() {
        let mut e = Emitter::new(Format::Csv, Vec::new());
        e.call(&row()).unwrap();
        let out = String::from_utf8(e.finish(false).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        let header = reader.headers().unwrap().clone();
        let record = reader.records().next().unwrap().unwrap();
        let get = |name: &str| {
            record
                .get(header.iter().position(|h| h == name).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(get("user"), "'=cmd|' /C calc'!A0");
        assert_eq!(get("command_line"), "kubectl get po, \"quoted\"\nnext");
        assert_eq!(get("client_duration_us"), "5");
    }

    #[test]
    fn command_csv_adds_the_reason_last() {
        let row = CommandRow {
            command: crate::audit::Command {
                command_line: "kubectl config view --raw".into(),
                reason: "refused: kubectl config is not allowed in the web shell".into(),
                ..Default::default()
            },
            calls: 0,
            statuses: Default::default(),
            duration_us: None,
        };
        let mut e = Emitter::new(Format::Csv, Vec::new());
        e.command(&row).unwrap();
        let out = String::from_utf8(e.finish(true).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        // The columns before it keep their places.
        assert_eq!(
            header,
            [
                "started",
                "ended",
                "user",
                "cluster",
                "command_line",
                "exit_code",
                "calls",
                "statuses",
                "duration_us",
                "access_method",
                "cwd",
                "host",
                "id",
                "reason"
            ]
        );
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[13], row.command.reason);
        assert_eq!(&record[5], "");
        let mut e = Emitter::new(Format::Ndjson, Vec::new());
        e.command(&row).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&e.finish(true).unwrap()).unwrap();
        assert_eq!(json["reason"], row.command.reason.as_str());
    }

    #[test]
    fn empty_documents_are_valid() {
        for (format, want) in [(Format::Json, "[]\n"), (Format::Ndjson, "")] {
            let out = Emitter::new(format, Vec::new()).finish(false).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let out = Emitter::new(Format::K8sAudit, Vec::new())
            .finish(false)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "EventList");
        let out = Emitter::new(Format::Csv, Vec::new()).finish(true).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("started,ended"));
    }

    #[test]
    fn json_and_event_lists_parse() {
        for format in [Format::Json, Format::K8sAudit] {
            let mut e = Emitter::new(format, Vec::new());
            e.call(&row()).unwrap();
            e.call(&row()).unwrap();
            let out = e.finish(false).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let items = if format == Format::Json {
                v.as_array().unwrap().clone()
            } else {
                v["items"].as_array().unwrap().clone()
            };
            assert_eq!(items.len(), 2);
        }
        let event = k8s_event(&row());
        assert_eq!(event["objectRef"]["resource"], "pods");
        assert_eq!(
            event["annotations"]["ztk.dev/command"],
            "kubectl get po, \"quoted\"\nnext"
        );
        assert_eq!(event["responseStatus"]["code"], 200);
    }
}
