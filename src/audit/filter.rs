//! The one audit filter, shared by `ztk audit list`, the gateway's query API and the TUI.
//!
//! Repeated values of one kind OR together; different kinds AND. Everything becomes bound SQL
//! parameters, never text formatted into the query.

use crate::db::{Dialect, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{now_us, AccessMethod};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error(
        "invalid time {0:?}: use RFC 3339 (2026-01-31T12:00:00Z; without an offset, UTC) or a duration ago (15m, 24h, 7d)"
    )]
    Time(String),
    #[error("invalid duration {0:?}: use a number with a unit (250ms, 2s, 5m, 1h, 7d)")]
    Duration(String),
    #[error("invalid status {0:?}: use an HTTP code (404) or a class (2xx, 4xx, 5xx)")]
    Status(String),
    #[error("invalid access method {0:?}: use cli, browser or api")]
    AccessMethod(String),
    #[error("unknown filter {0:?}: use {KEYS} (or quote text that holds a colon); as flags or URL parameters: since, until, user, cluster, namespace, resource, verb, status, access-method, command, min-duration, id")]
    UnknownKey(String),
    #[error("{0:?} has no value: write it as {0}VALUE, several values separated by commas")]
    EmptyValue(String),
    #[error("unbalanced quote in the filter: close it with another \"")]
    Quote,
    #[error("invalid command id {0:?}: use the full UUID (`ztk audit show` accepts parts)")]
    CommandId(String),
    #[error("{0} is given more than once: give it one value (a time range is since and until)")]
    Repeated(&'static str),
    #[error(
        "too many values for {field}: {count}, at most {MAX_VALUES_PER_FIELD} per filter; \
         narrow the filter or split the query"
    )]
    TooManyValues { field: &'static str, count: usize },
    #[error(
        "too many filter values: {0} in all, at most {MAX_VALUES}; narrow the filter or split \
         the query"
    )]
    TooManyInAll(usize),
}

/// Values one filter field may hold (each is an SQL term: a thousand made SQLite refuse the
/// query as too deep).
pub const MAX_VALUES_PER_FIELD: usize = 100;
/// Values all the fields of one filter may hold together.
pub const MAX_VALUES: usize = 500;

/// The keys of the compact filter language, for messages and help.
pub const KEYS: &str =
    "user: cluster: ns: resource: verb: status: method: cmd: since: until: min: id:";

/// The filter's keys as `ztk audit list`'s flags name them (`--access-method`), which are also
/// the web console's URL parameters (`Filter::from_flags`). `id` is a command id.
pub const FLAG_KEYS: &[&str] = &[
    "since",
    "until",
    "user",
    "cluster",
    "namespace",
    "resource",
    "verb",
    "status",
    "access-method",
    "command",
    "min-duration",
    "id",
];

/// A status code or a class of codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusMatch {
    Code(u16),
    /// The first digit: 4 for `4xx`.
    Class(u16),
}

impl StatusMatch {
    pub fn parse(s: &str) -> Result<StatusMatch, FilterError> {
        let err = || FilterError::Status(s.to_string());
        let lower = s.trim().to_ascii_lowercase();
        if let Some(digit) = lower.strip_suffix("xx") {
            let class: u16 = digit.parse().map_err(|_| err())?;
            return if (1..=5).contains(&class) {
                Ok(StatusMatch::Class(class))
            } else {
                Err(err())
            };
        }
        let code: u16 = lower.parse().map_err(|_| err())?;
        if (100..=599).contains(&code) {
            Ok(StatusMatch::Code(code))
        } else {
            Err(err())
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only records at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Only records before this time (µs since the epoch).
    pub until_us: Option<i64>,
    pub users: Vec<String>,
    pub clusters: Vec<String>,
    pub namespaces: Vec<String>,
    /// `pods` matches every pods call; `pods/log` only that subresource.
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub statuses: Vec<StatusMatch>,
    pub access_methods: Vec<AccessMethod>,
    /// Substrings of the command line.
    pub commands: Vec<String>,
    pub min_duration_us: Option<i64>,
    pub command_id: Option<Uuid>,
    pub limit: Option<usize>,
}

impl Filter {
    /// Parses the compact filter language shared by the TUI's filter bar and the gateway's sink
    /// configuration: `user:alice ns:prod verb:delete,patch status:4xx since:1h some text`.
    ///
    /// `key:value` pairs, commas for several values of one key; bare words (or a quoted phrase)
    /// match the command line. Values of one key OR together, different keys AND, exactly as
    /// the flags of `ztk audit list`.
    pub fn parse_query(query: &str) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        let mut text: Vec<String> = Vec::new();
        for Token {
            text: token,
            quoted_key,
        } in tokenize(query)?
        {
            let pair = match token.split_once(':') {
                Some((k, v)) if !quoted_key => Some((k.to_ascii_lowercase(), v.to_string())),
                _ => None,
            };
            let Some((key, value)) = pair else {
                text.push(token);
                continue;
            };
            let value = value.as_str();
            if value.is_empty() {
                return Err(FilterError::EmptyValue(format!("{key}:")));
            }
            let values = || {
                value
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            match key.as_str() {
                "user" | "u" => f.users.extend(values()),
                "cluster" | "c" => f.clusters.extend(values()),
                "ns" | "namespace" | "n" => f.namespaces.extend(values()),
                "resource" | "res" | "r" => f.resources.extend(values()),
                "verb" | "v" => f.verbs.extend(values().map(|v| v.to_ascii_lowercase())),
                "status" | "s" => {
                    for v in values() {
                        f.statuses.push(StatusMatch::parse(&v)?);
                    }
                }
                "method" | "access" | "via" => {
                    for v in values() {
                        f.access_methods
                            .push(parse_access_method(&v.to_ascii_lowercase())?);
                    }
                }
                "cmd" | "command" => f.commands.push(value.to_string()),
                "since" => f.since_us = Some(parse_time_us(value)?),
                "until" => f.until_us = Some(parse_time_us(value)?),
                "min" | "took" => f.min_duration_us = Some(parse_duration_us(value)?),
                "id" => {
                    f.command_id = Some(
                        Uuid::parse_str(value)
                            .map_err(|_| FilterError::CommandId(value.to_string()))?,
                    )
                }
                _ => return Err(FilterError::UnknownKey(format!("{key}:"))),
            }
        }
        if !text.is_empty() {
            f.commands.push(text.join(" "));
        }
        f.check()?;
        Ok(f)
    }

    /// Builds a filter from `(flag, value)` pairs named as `ztk audit list`'s flags (without the
    /// dashes): the flags themselves and the web console's URL query
    /// (`?view=calls&namespace=prod&verb=delete&since=24h`) are read here, so a field added
    /// once is a flag and a URL parameter. A repeated key ORs its values, and so do commas in
    /// one value (except `command`, whose text may hold commas); empty values are ignored (an
    /// empty form field). Keys not in `FLAG_KEYS` are refused.
    pub fn from_flags<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                if FLAG_KEYS.contains(&key) {
                    continue;
                }
                return Err(FilterError::UnknownKey(key.to_string()));
            }
            let values = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
            match key {
                "user" => f.users.extend(values().map(str::to_string)),
                "cluster" => f.clusters.extend(values().map(str::to_string)),
                "namespace" => f.namespaces.extend(values().map(str::to_string)),
                "resource" => f.resources.extend(values().map(str::to_string)),
                "verb" => f.verbs.extend(values().map(|v| v.to_ascii_lowercase())),
                "status" => {
                    for v in values() {
                        f.statuses.push(StatusMatch::parse(v)?);
                    }
                }
                "access-method" => {
                    for v in values() {
                        f.access_methods
                            .push(parse_access_method(&v.to_ascii_lowercase())?);
                    }
                }
                "command" => f.commands.push(value.to_string()),
                "since" => once(&mut f.since_us, "since", parse_time_us(value)?)?,
                "until" => once(&mut f.until_us, "until", parse_time_us(value)?)?,
                "min-duration" => once(
                    &mut f.min_duration_us,
                    "min-duration",
                    parse_duration_us(value)?,
                )?,
                "id" => once(
                    &mut f.command_id,
                    "id",
                    Uuid::parse_str(value)
                        .map_err(|_| FilterError::CommandId(value.to_string()))?,
                )?,
                _ => return Err(FilterError::UnknownKey(key.to_string())),
            }
        }
        f.check()?;
        Ok(f)
    }

    /// Checks the number of values (`MAX_VALUES_PER_FIELD`, `MAX_VALUES`): wherever a filter
    /// is built from a user's input (flags, the filter language, the gateway's API).
    pub fn check(&self) -> Result<(), FilterError> {
        let counts = [
            ("user", self.users.len()),
            ("cluster", self.clusters.len()),
            ("namespace", self.namespaces.len()),
            ("resource", self.resources.len()),
            ("verb", self.verbs.len()),
            ("status", self.statuses.len()),
            ("access method", self.access_methods.len()),
            ("command", self.commands.len()),
        ];
        for (field, count) in counts {
            if count > MAX_VALUES_PER_FIELD {
                return Err(FilterError::TooManyValues { field, count });
            }
        }
        let all: usize = counts.iter().map(|(_, n)| n).sum();
        if all > MAX_VALUES {
            return Err(FilterError::TooManyInAll(all));
        }
        Ok(())
    }

    /// The filter in the compact language; `parse_query` reads it back to the same filter
    /// (times become absolute).
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut list = |key: &str, values: &[String]| {
            if !values.is_empty() {
                parts.push(format!("{key}:{}", quote(&values.join(","))));
            }
        };
        list("user", &self.users);
        list("cluster", &self.clusters);
        list("ns", &self.namespaces);
        list("resource", &self.resources);
        list("verb", &self.verbs);
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|s| match s {
                StatusMatch::Code(c) => c.to_string(),
                StatusMatch::Class(c) => format!("{c}xx"),
            })
            .collect();
        list("status", &statuses);
        let methods: Vec<String> = self
            .access_methods
            .iter()
            .map(|m| m.as_str().to_string())
            .collect();
        list("method", &methods);
        for c in &self.commands {
            parts.push(format!("cmd:{}", quote(c)));
        }
        if let Some(t) = self.since_us {
            parts.push(format!("since:{}", super::model::format_time_us(t)));
        }
        if let Some(t) = self.until_us {
            parts.push(format!("until:{}", super::model::format_time_us(t)));
        }
        if let Some(d) = self.min_duration_us {
            parts.push(format!("min:{d}us"));
        }
        if let Some(id) = self.command_id {
            parts.push(format!("id:{id}"));
        }
        parts.join(" ")
    }

    /// Whether any filter applies to individual calls (not to whole commands).
    fn has_call_filters(&self) -> bool {
        !(self.namespaces.is_empty()
            && self.resources.is_empty()
            && self.verbs.is_empty()
            && self.statuses.is_empty())
    }

    /// The WHERE clause over `api_calls c LEFT JOIN commands cmd`, with its parameters.
    pub fn call_clause(&self) -> (String, Vec<Value>) {
        self.call_clause_for(Dialect::Sqlite)
    }

    /// [`Filter::call_clause`] in `dialect`'s SQL.
    pub fn call_clause_for(&self, dialect: Dialect) -> (String, Vec<Value>) {
        let (mut sql, mut params) = self.record_level(
            dialect,
            &RecordColumns {
                time: "c.time_us",
                user: "c.user",
                cluster: "c.cluster",
                access_method: "c.access_method",
                duration: "c.duration_us",
                command_id: "c.command_id",
            },
        );
        self.call_level(&mut sql, &mut params, "c");
        (join(sql), params)
    }

    /// The WHERE clause over `commands cmd`: command-level filters apply to the command, and
    /// call-level ones (namespace, resource, verb, status) select commands with a matching call.
    pub fn command_clause(&self) -> (String, Vec<Value>) {
        self.command_clause_for(Dialect::Sqlite)
    }

    /// [`Filter::command_clause`] in `dialect`'s SQL.
    pub fn command_clause_for(&self, dialect: Dialect) -> (String, Vec<Value>) {
        let (mut sql, mut params) = self.record_level(
            dialect,
            &RecordColumns {
                time: "cmd.started_us",
                user: "cmd.user",
                cluster: "cmd.cluster",
                access_method: "cmd.access_method",
                duration: "(cmd.ended_us - cmd.started_us)",
                command_id: "cmd.id",
            },
        );
        if self.has_call_filters() {
            let mut inner = vec!["a.command_id = cmd.id AND a.user = cmd.user".to_string()];
            self.call_level(&mut inner, &mut params, "a");
            sql.push(format!(
                // A command's calls are few: reach them by command id, never by scanning every
                // call with this verb or status (SQLite would otherwise pick those indexes).
                "EXISTS (SELECT 1 FROM api_calls a{} WHERE {})",
                dialect.indexed_by("api_calls_command"),
                inner.join(" AND ")
            ));
        }
        (join(sql), params)
    }

    /// Conditions that apply to a whole record (call or command), over the given columns.
    fn record_level(&self, dialect: Dialect, cols: &RecordColumns) -> (Vec<String>, Vec<Value>) {
        let mut sql = Vec::new();
        let mut params = Vec::new();
        if let Some(since) = self.since_us {
            sql.push(format!("{} >= ?", cols.time));
            params.push(Value::Integer(since));
        }
        if let Some(until) = self.until_us {
            sql.push(format!("{} < ?", cols.time));
            params.push(Value::Integer(until));
        }
        any_of(
            &mut sql,
            &mut params,
            &format!("{} = ?", cols.user),
            &self.users,
        );
        any_of(
            &mut sql,
            &mut params,
            &format!("{} = ?", cols.cluster),
            &self.clusters,
        );
        let methods: Vec<String> = self
            .access_methods
            .iter()
            .map(|m| m.as_str().to_string())
            .collect();
        any_of(
            &mut sql,
            &mut params,
            &format!("{} = ?", cols.access_method),
            &methods,
        );
        any_of(
            &mut sql,
            &mut params,
            &dialect.contains("cmd.command_line"),
            &self.commands,
        );
        if let Some(min) = self.min_duration_us {
            sql.push(format!("{} >= ?", cols.duration));
            params.push(Value::Integer(min));
        }
        if let Some(id) = self.command_id {
            sql.push(format!("{} = ?", cols.command_id));
            params.push(Value::Text(id.to_string()));
        }
        (sql, params)
    }

    /// Conditions on single calls, over the api_calls alias `t`.
    fn call_level(&self, sql: &mut Vec<String>, params: &mut Vec<Value>, t: &str) {
        any_of(sql, params, &format!("{t}.namespace = ?"), &self.namespaces);
        any_of(sql, params, &format!("{t}.verb = ?"), &self.verbs);
        if !self.resources.is_empty() {
            let mut parts = Vec::new();
            for r in &self.resources {
                match r.split_once('/') {
                    Some((res, sub)) => {
                        parts.push(format!("({t}.resource = ? AND {t}.subresource = ?)"));
                        params.push(Value::Text(res.to_string()));
                        params.push(Value::Text(sub.to_string()));
                    }
                    None => {
                        parts.push(format!("{t}.resource = ?"));
                        params.push(Value::Text(r.clone()));
                    }
                }
            }
            sql.push(format!("({})", parts.join(" OR ")));
        }
        if !self.statuses.is_empty() {
            let mut parts = Vec::new();
            for s in &self.statuses {
                match *s {
                    StatusMatch::Code(code) => {
                        parts.push(format!("{t}.status = ?"));
                        params.push(Value::Integer(code.into()));
                    }
                    StatusMatch::Class(class) => {
                        parts.push(format!("({t}.status >= ? AND {t}.status < ?)"));
                        params.push(Value::Integer(i64::from(class) * 100));
                        params.push(Value::Integer(i64::from(class) * 100 + 100));
                    }
                }
            }
            sql.push(format!("({})", parts.join(" OR ")));
        }
    }
}

/// Where a view keeps the fields every record has.
struct RecordColumns {
    time: &'static str,
    user: &'static str,
    cluster: &'static str,
    access_method: &'static str,
    duration: &'static str,
    command_id: &'static str,
}

fn join(sql: Vec<String>) -> String {
    if sql.is_empty() {
        "1 = 1".to_string()
    } else {
        sql.join(" AND ")
    }
}

fn any_of(sql: &mut Vec<String>, params: &mut Vec<Value>, expr: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let parts: Vec<&str> = values.iter().map(|_| expr).collect();
    sql.push(format!("({})", parts.join(" OR ")));
    params.extend(values.iter().map(|v| Value::Text(v.clone())));
}

struct Token {
    text: String,
    /// The colon (if any) came from inside quotes, so the token is text, not `key:value`.
    quoted_key: bool,
}

/// Splits on whitespace; double quotes group words (`cmd:"get pods"`, `"a:b"`), `\"` is a quote.
fn tokenize(query: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = query.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(tokens);
        }
        let mut text = String::new();
        let mut in_quotes = false;
        let mut quoted_key = false;
        let mut seen_colon = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_quotes && chars.peek() == Some(&'"') => {
                    text.push(chars.next().unwrap_or('"'))
                }
                '"' => in_quotes = !in_quotes,
                c if c.is_whitespace() && !in_quotes => break,
                ':' if !seen_colon => {
                    seen_colon = true;
                    quoted_key = in_quotes;
                    text.push(':');
                }
                c => text.push(c),
            }
        }
        if in_quotes {
            return Err(FilterError::Quote);
        }
        tokens.push(Token { text, quoted_key });
    }
}

fn quote(value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == ':') {
        format!("\"{}\"", value.replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

/// Parses `15m`, `250ms`, `2s`, `24h`, `7d` into microseconds.
pub fn parse_duration_us(s: &str) -> Result<i64, FilterError> {
    let err = || FilterError::Duration(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        "d" => 86400e6,
        "w" => 7.0 * 86400e6,
        _ => return Err(err()),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(err());
    }
    Ok((n * scale) as i64)
}

/// Sets a key that takes one value; a second one is ambiguous, so refused.
fn once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), FilterError> {
    if slot.is_some() {
        return Err(FilterError::Repeated(key));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses an RFC 3339 time, or a duration meaning that long before now.
pub fn parse_time_us(s: &str) -> Result<i64, FilterError> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000) as i64);
    }
    // A time without an offset (what a browser's date-time field sends): UTC.
    let local_forms = [
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]"),
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    ];
    for form in local_forms {
        if let Ok(t) = time::PrimitiveDateTime::parse(s.trim(), &form) {
            return Ok((t.assume_utc().unix_timestamp_nanos() / 1_000) as i64);
        }
    }
    parse_duration_us(s)
        .map(|ago| now_us() - ago)
        .map_err(|_| FilterError::Time(s.to_string()))
}

pub fn parse_access_method(s: &str) -> Result<AccessMethod, FilterError> {
    AccessMethod::parse(s).ok_or_else(|| FilterError::AccessMethod(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_several_values_but_one_time_range() {
        let f = Filter::from_flags([
            ("verb", "get, list"),
            ("verb", "watch"),
            ("access-method", "cli,API"),
            ("since", ""),
            ("since", "2026-12-06T10:00"),
            ("until", "1h"),
        ])
        .unwrap();
        assert_eq!(f.verbs, ["get", "list", "watch"]);
        assert_eq!(f.access_methods, [AccessMethod::Cli, AccessMethod::Api]);
        assert_eq!(f.since_us, Some(1_796_551_200_000_000));
        for key in ["since", "until", "min-duration"] {
            let err = Filter::from_flags([(key, "1h"), (key, "2h")]).unwrap_err();
            assert_eq!(err, FilterError::Repeated(key));
        }
        let id = "6f1c0e52-8a4e-4a43-9d1b-2f3c4d5e6f70";
        assert_eq!(
            Filter::from_flags([("id", id), ("id", id)]).unwrap_err(),
            FilterError::Repeated("id")
        );
    }

    #[test]
    fn the_number_of_values_is_bounded() {
        let values = |n: usize| (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>();
        let mut f = Filter {
            users: values(MAX_VALUES_PER_FIELD),
            ..Default::default()
        };
        assert_eq!(f.check(), Ok(()));
        f.namespaces = values(MAX_VALUES_PER_FIELD + 1);
        let err = f.check().unwrap_err();
        assert_eq!(
            err,
            FilterError::TooManyValues {
                field: "namespace",
                count: 101
            }
        );
        assert!(err.to_string().contains("at most 100"), "{err}");
        let f = Filter {
            users: values(100),
            clusters: values(100),
            namespaces: values(100),
            resources: values(100),
            verbs: values(100),
            commands: values(1),
            ..Default::default()
        };
        assert_eq!(f.check(), Err(FilterError::TooManyInAll(501)));
        let query = format!("user:{}", values(101).join(","));
        assert!(matches!(
            Filter::parse_query(&query),
            Err(FilterError::TooManyValues { field: "user", .. })
        ));
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(StatusMatch::parse("404"), Ok(StatusMatch::Code(404)));
        assert_eq!(StatusMatch::parse("4xx"), Ok(StatusMatch::Class(4)));
        assert!(StatusMatch::parse("9xx").is_err());
        assert!(StatusMatch::parse("abc").is_err());
        assert!(StatusMatch::parse("1000").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_us("250ms"), Ok(250_000));
        assert_eq!(parse_duration_us("15m"), Ok(900_000_000));
        assert_eq!(parse_duration_us("7d"), Ok(7 * 86_400_000_000));
        assert!(parse_duration_us("7").is_err());
        assert!(parse_duration_us("x1h").is_err());
        assert!(parse_duration_us("1y").is_err());
    }

    #[test]
    fn times_parse_both_forms() {
        assert_eq!(parse_time_us("1970-01-01T00:00:01Z"), Ok(1_000_000));
        let ago = parse_time_us("1h").unwrap();
        assert!((now_us() - ago - 3_600_000_000).abs() < 5_000_000);
        assert!(matches!(
            parse_time_us("yesterday"),
            Err(FilterError::Time(_))
        ));
    }

    #[test]
    fn compact_queries_parse() {
        let f = Filter::parse_query(
            "user:alice ns:prod verb:delete,Patch status:4xx since:1h some text",
        )
        .unwrap();
        assert_eq!(f.users, ["alice"]);
        assert_eq!(f.namespaces, ["prod"]);
        assert_eq!(f.verbs, ["delete", "patch"]);
        assert_eq!(f.statuses, [StatusMatch::Class(4)]);
        assert!(f.since_us.is_some());
        assert_eq!(f.commands, ["some text"]);
        let f = Filter::parse_query(r#"cmd:"get pods -A" "a:b" method:cli min:2s"#).unwrap();
        assert_eq!(f.commands, ["get pods -A", "a:b"]);
        assert_eq!(f.access_methods, [AccessMethod::Cli]);
        assert_eq!(f.min_duration_us, Some(2_000_000));
        assert_eq!(Filter::parse_query("  ").unwrap(), Filter::default());
    }

    #[test]
    fn compact_query_errors_name_the_problem() {
        assert_eq!(
            Filter::parse_query("colour:red"),
            Err(FilterError::UnknownKey("colour:".into()))
        );
        assert_eq!(
            Filter::parse_query("user:"),
            Err(FilterError::EmptyValue("user:".into()))
        );
        assert_eq!(Filter::parse_query("cmd:\"get"), Err(FilterError::Quote));
        assert!(matches!(
            Filter::parse_query("status:7xx"),
            Err(FilterError::Status(_))
        ));
        assert!(matches!(
            Filter::parse_query("since:soon"),
            Err(FilterError::Time(_))
        ));
        assert!(matches!(
            Filter::parse_query("id:abc"),
            Err(FilterError::CommandId(_))
        ));
    }

    #[test]
    fn compact_queries_round_trip() {
        let f = Filter {
            users: vec!["alice".into(), "bob".into()],
            clusters: vec!["dev".into()],
            namespaces: vec!["kube-system".into()],
            resources: vec!["pods/log".into()],
            verbs: vec!["delete".into()],
            statuses: vec![StatusMatch::Code(404), StatusMatch::Class(5)],
            access_methods: vec![AccessMethod::Browser],
            commands: vec!["say \"hi\": now".into()],
            since_us: Some(1_700_000_000_000_000),
            until_us: Some(1_800_000_000_000_000),
            min_duration_us: Some(250_000),
            command_id: Some(Uuid::now_v7()),
            limit: None,
        };
        assert_eq!(Filter::parse_query(&f.to_query()).unwrap(), f);
    }

    #[test]
    fn clause_binds_every_value() {
        let f = Filter {
            users: vec!["alice".into(), "bob".into()],
            resources: vec!["pods/log".into()],
            statuses: vec![StatusMatch::Class(4)],
            ..Default::default()
        };
        let (sql, params) = f.call_clause();
        assert_eq!(params.len(), 6);
        assert_eq!(sql, "(c.user = ? OR c.user = ?) AND ((c.resource = ? AND c.subresource = ?)) AND ((c.status >= ? AND c.status < ?))");
        let (sql, params) = f.command_clause();
        assert_eq!(sql, "(cmd.user = ? OR cmd.user = ?) AND EXISTS (SELECT 1 FROM api_calls a INDEXED BY api_calls_command WHERE a.command_id = cmd.id AND a.user = cmd.user AND ((a.resource = ? AND a.subresource = ?)) AND ((a.status >= ? AND a.status < ?)))");
        assert_eq!(params.len(), 6);
        assert!(!sql.contains("alice"));
    }
}
